//! rwkv-wgpu: RWKV language models on any GPU through WebGPU (wgpu): Vulkan, Metal, DX12 and GL.
//!
//! Weights and the recurrent state stay on the GPU; each token's forward pass is one command
//! buffer of WGSL kernels, submitted once.
//!
//! ```no_run
//! use std::sync::Arc;
//! use rwkv_wgpu::gpu::{Gpu, GpuOptions};
//! use rwkv_wgpu::model::{LoadOptions, Model};
//! use rwkv_wgpu::runtime::{Engine, EngineOptions, Sampler, SamplerOptions, Session};
//! use rwkv_wgpu::tokenizer::Tokenizer;
//!
//! # fn main() -> rwkv_wgpu::Result<()> {
//! let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
//! let model = Model::load(gpu, "rwkv7-g1-0.1b.pth".as_ref(), &LoadOptions::default())?;
//! let engine = Engine::new(Arc::new(model), EngineOptions::default())?;
//! let tokenizer = Tokenizer::world()?;
//! let mut session = Session::new(&engine)?;
//! let mut sampler = Sampler::new(SamplerOptions::default())?; // greedy
//!
//! // The prompt is read as matrix-matrix work, in chunks of EngineOptions::chunk tokens.
//! let mut logits = session.feed(&tokenizer.encode("The Eiffel tower is in the city of")?)?;
//! for _ in 0..10 {
//!     let token = sampler.sample(&logits)?;
//!     print!("{}", tokenizer.decode(&[token])?);
//!     logits = session.feed(&[token])?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Modules, by concern: [`gpu`] (device, pipelines, buffers), [`kernels`] (one per WGSL
//! family, each with a CPU reference), [`model`] (files, validation, the RWKV-7 layer),
//! [`runtime`] (the engine, sessions, batching, states, generation and sampling), [`grammar`]
//! (constrained decoding: JSON schemas, grammars, regular expressions), [`tokenizer`] (World and
//! Hugging Face). [`runtime::generate`](runtime::Session::generate) streams text with
//! stop strings and cancellation; [`runtime::Engine::step`] advances many sequences in one step.

pub mod error;
pub mod gpu;
pub mod grammar;
pub mod kernels;
pub mod model;
pub mod npy;
pub mod quant;
pub mod runtime;
#[cfg(not(target_arch = "wasm32"))]
pub mod server;
pub mod tokenizer;

pub use error::{Error, Result};
