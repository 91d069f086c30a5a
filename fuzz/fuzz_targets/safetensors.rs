//! Arbitrary bytes as a `.safetensors` file: reading the header, every tensor and the model
//! configuration must return errors, never panic, hang or allocate what the header claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwkv_wgpu::model::source::{FileBytes, SafetensorsFile};

mod exercise;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = SafetensorsFile::from_bytes("fuzz".into(), FileBytes::Owned(data.to_vec())) {
        exercise::source(&file);
    }
});
