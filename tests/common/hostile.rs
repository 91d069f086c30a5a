//! What the hostile-file tests share: scratch files and the error a load must end in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rwkv_wgpu::model::config::ModelConfig;
use rwkv_wgpu::model::source;
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::Error;

pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile_files");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

pub fn write_bytes(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Opening, checking and loading the file onto the GPU must fail; this is how.
pub fn load_error(path: &Path) -> Error {
    load_error_with(path, &LoadOptions::default())
}

pub fn load_error_with(path: &Path, options: &LoadOptions) -> Error {
    let source = match source::open(path) {
        Ok(source) => source,
        Err(e) => return e,
    };
    match ModelConfig::from_source(source.as_ref()) {
        Err(e) => e,
        Ok(_) => {
            let gpu = Arc::new(super::default_gpu());
            match Model::from_source(gpu, source.as_ref(), options) {
                Err(e) => e,
                Ok(_) => panic!("{} loaded but should not have", path.display()),
            }
        }
    }
}

/// The error is one line and mentions every fragment.
pub fn expect(error: &Error, fragments: &[&str]) {
    let message = error.to_string();
    assert!(!message.contains('\n'), "multi-line error: {message}");
    for fragment in fragments {
        assert!(message.contains(fragment), "error {message:?} should mention {fragment:?}");
    }
}
