//! rwkv-wgpu: RWKV language models on any GPU through WebGPU.

pub mod error;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod npy;
pub mod runtime;
pub mod tokenizer;

pub use error::{Error, Result};
