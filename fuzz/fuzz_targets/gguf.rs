//! Arbitrary bytes as a GGUF file: the header, the metadata, every tensor (quantized blocks
//! decoded), the RWKV layout mapping and the tokenizer must return errors, never panic, hang or
//! allocate what the header claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwkv_wgpu::model::source::{self, FileBytes};

mod exercise;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = source::from_bytes("fuzz.gguf", FileBytes::Owned(data.to_vec())) {
        exercise::source(file.as_ref());
        let _ = file.tokenizer();
    }
});
