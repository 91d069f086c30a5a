//! Arbitrary bytes as a PyTorch `.pth` checkpoint (zip + pickle): reading it, every tensor and the
//! model configuration must return errors, never panic, hang or allocate what the file claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwkv_wgpu::model::source::{FileBytes, PthFile};

mod exercise;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = PthFile::from_bytes("fuzz".into(), FileBytes::Owned(data.to_vec())) {
        exercise::source(&file);
    }
});
