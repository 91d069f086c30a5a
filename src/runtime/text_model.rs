//! A model ready to read and write text, opened from a few plain options: what the C and Python
//! bindings hold behind their handles.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Engine, EngineOptions};
use crate::error::Result;
use crate::gpu::{Backend, Gpu, GpuOptions};
use crate::model::lora::{self, Lora};
use crate::model::source::{self, FileBytes, TensorSource};
use crate::model::{LoadOptions, Model};
use crate::quant::{MatrixFormat, QuantPlan};
use crate::tokenizer::Tokenizer;

/// How to open a [`TextModel`]; every field has a default.
#[derive(Debug, Clone)]
pub struct TextModelOptions {
    /// "f32", "bf16", "f16", "int8" or "nf4" (as `--quant`); `None` keeps the file's precision.
    pub quant: Option<String>,
    /// "vulkan", "metal", "dx12" or "gl"; `None` picks the best.
    pub backend: Option<String>,
    /// Use the first adapter whose name contains this (case-insensitive).
    pub adapter: Option<String>,
    /// A tokenizer.json or World vocabulary .txt; `None` takes the one the model carries, else
    /// World.
    pub tokenizer: Option<PathBuf>,
    /// LoRA adapters to merge.
    pub lora: Vec<Lora>,
    /// Sessions that can exist at once.
    pub slots: usize,
    /// Prompt tokens read per step.
    pub chunk: usize,
}

impl Default for TextModelOptions {
    fn default() -> Self {
        TextModelOptions {
            quant: None,
            backend: None,
            adapter: None,
            tokenizer: None,
            lora: Vec::new(),
            slots: 4,
            chunk: EngineOptions::DEFAULT_CHUNK,
        }
    }
}

/// A model on its engine, with its tokenizer.
pub struct TextModel {
    pub engine: Engine,
    pub tokenizer: Tokenizer,
}

impl TextModel {
    /// Opens a model file or Hugging Face folder.
    pub fn open(path: &Path, options: &TextModelOptions) -> Result<TextModel> {
        Self::from_source(source::open(path)?, options)
    }

    /// A model file held in memory; `name` is what errors call it.
    pub fn from_bytes(name: &str, bytes: Vec<u8>, options: &TextModelOptions) -> Result<TextModel> {
        Self::from_source(source::from_bytes(name, FileBytes::Owned(bytes))?, options)
    }

    fn from_source(source: Box<dyn TensorSource>, options: &TextModelOptions) -> Result<TextModel> {
        let tokenizer = match &options.tokenizer {
            Some(path) => Tokenizer::from_file(path)?,
            None => source.tokenizer().unwrap_or_else(Tokenizer::world)?,
        };
        let source = lora::merge(source, &options.lora)?;
        let quant = match &options.quant {
            Some(name) => QuantPlan::with(MatrixFormat::parse(name)?),
            None => QuantPlan::default(),
        };
        let backend = options.backend.as_deref().map(Backend::parse).transpose()?;
        let gpu =
            Gpu::new(&GpuOptions { backend, adapter: options.adapter.clone(), ..GpuOptions::default() })?;
        let model = Model::from_source(
            Arc::new(gpu),
            source.as_ref(),
            &LoadOptions { quant, ..LoadOptions::default() },
        )?;
        let engine =
            Engine::new(Arc::new(model), EngineOptions { slots: options.slots, chunk: options.chunk })?;
        Ok(TextModel { engine, tokenizer })
    }
}
