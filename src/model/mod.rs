//! Model files, configuration and the layer definitions of each RWKV version.
//!
//! [`Model::load`] opens a `.safetensors` or `.pth` file, detects the version, checks every
//! tensor and uploads the weights to the GPU once. Running it is the job of
//! [`crate::runtime::Session`].

pub mod config;
pub mod embedding;
pub mod loader;
pub mod reference;
pub mod source;
pub mod synthetic;
pub mod v7;

use std::path::Path;
use std::sync::Arc;

use self::config::{detect_version, V7Config, Version};
use self::embedding::Embedding;
use self::loader::{Loader, Store};
use self::source::TensorSource;
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Every weight of an RWKV-7 model except the embedding table, in a [`Store`].
pub struct V7Weights<S: Store> {
    /// `blocks.0.ln0`, applied to the embedding row.
    pub ln0: S::Vector,
    pub blocks: Vec<v7::Block<S>>,
    pub ln_out: S::Vector,
    /// [V, C]
    pub head: S::Matrix,
}

impl<S: Store> V7Weights<S> {
    pub fn load(source: &dyn TensorSource, config: &V7Config, store: &S) -> Result<Self> {
        let loader = Loader::new(source, store);
        let blocks =
            (0..config.layers).map(|layer| v7::Block::load(&loader, config, layer)).collect::<Result<_>>()?;
        Ok(V7Weights {
            ln0: loader.norm("blocks.0.ln0", config.embd)?,
            blocks,
            ln_out: loader.norm("ln_out", config.embd)?,
            head: loader.matrix("head.weight", config.vocab, config.embd)?,
        })
    }
}

/// Options for loading a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {}

/// A loaded model: its shape, its weights on the GPU and its embedding table in host memory.
pub struct Model {
    pub gpu: Arc<Gpu>,
    pub version: Version,
    pub config: V7Config,
    pub weights: V7Weights<Gpu>,
    pub embedding: Embedding,
    /// The file format it came from ("safetensors", "pth").
    pub format: &'static str,
    /// The dtype of `head.weight` in the file (what most of the file is stored as).
    pub file_dtype: String,
}

/// The RWKV-7 shape of a source, or a clear error if the file holds another version.
pub fn v7_config(source: &dyn TensorSource) -> Result<(Version, V7Config)> {
    let version = detect_version(source)?;
    if version != Version::V7 {
        return Err(Error::UnsupportedModel(format!(
            "{} checkpoint: this engine runs RWKV-7 (x070) models so far",
            version.name()
        )));
    }
    Ok((version, V7Config::from_source(source)?))
}

impl Model {
    /// Opens `path` and loads it onto `gpu`.
    pub fn load(gpu: Arc<Gpu>, path: &Path, options: &LoadOptions) -> Result<Model> {
        let source = source::open(path)?;
        Self::from_source(gpu, source.as_ref(), options)
    }

    /// Loads a model from any tensor source (a file, or a synthetic model made in memory).
    pub fn from_source(gpu: Arc<Gpu>, source: &dyn TensorSource, _options: &LoadOptions) -> Result<Model> {
        let (version, config) = v7_config(source)?;
        let weights =
            gpu.scoped("uploading the weights", || V7Weights::load(source, &config, gpu.as_ref()))?;
        let embedding = Embedding::load(source, config.vocab, config.embd)?;
        let file_dtype =
            source.meta("head.weight").map_or_else(|| "?".into(), |(dtype, _)| dtype.to_string());
        Ok(Model { gpu, version, config, weights, embedding, format: source.format(), file_dtype })
    }

    /// Bytes of GPU memory the weights occupy.
    pub fn weight_bytes(&self) -> u64 {
        gpu_bytes(&self.config)
    }
}

/// Bytes of GPU memory an RWKV-7 model's weights take: matrices in f16 (rows padded to 4),
/// vectors in f32. The embedding stays in host memory.
pub fn gpu_bytes(config: &V7Config) -> u64 {
    let c = config.embd as u64;
    let f16_matrix = |rows: u64, cols: u64| rows * cols.div_ceil(4) * 4 * 2;
    let f32_vector = |len: u64| len.div_ceil(4) * 4 * 4;
    let l = &config.lora;
    let lora = |rank: usize| f16_matrix(rank as u64, c) + f16_matrix(c, rank as u64);
    let layer = 4 * f16_matrix(c, c)
        + lora(l.decay)
        + lora(l.in_context_rate)
        + lora(l.gate)
        + f16_matrix(config.ffn as u64, c)
        + f16_matrix(c, config.ffn as u64)
        + f32_vector(6 * c)
        + 8 * f32_vector(c)
        + 4 * f32_vector(2 * c);
    let value_residual = lora(l.value_residual) + f32_vector(c);
    let layers = config.layers as u64;
    layers * layer
        + layers.saturating_sub(1) * value_residual
        + f16_matrix(config.vocab as u64, c)
        + 2 * f32_vector(2 * c)
}
