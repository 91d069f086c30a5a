//! Model files, configuration and the layers of each RWKV version.
//!
//! [`Model::load`] opens a `.safetensors` or `.pth` file, detects the version, checks every
//! tensor and uploads the weights to the GPU once. Running it is the job of
//! [`crate::runtime::Session`].
//!
//! Every version shares the block structure ([`block`]) and the channel mix
//! ([`channel_mix`]); each version file holds its time mix and its [`architecture::Architecture`]:
//! everything else the engine must know of that version.

pub mod architecture;
pub mod block;
pub mod channel_mix;
pub mod config;
pub mod embedding;
pub mod loader;
pub mod lora;
pub mod memory;
pub mod source;
pub mod store;
pub mod synthetic;
pub mod v4;
pub mod v5;
pub mod v6;
pub mod v7;

use std::path::Path;
use std::sync::Arc;

use self::architecture::Version;
use self::block::{Layers, StepTensors};
use self::config::ModelConfig;
use self::embedding::Embedding;
pub use self::embedding::{EmbeddingPlace, EmbeddingTable};
use self::loader::{Inventory, Loader, Store};
pub use self::source::progress::Progress;
use self::source::TensorSource;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuMatrix, GpuTensor, ScratchPool};
use crate::kernels::{self, Epilogue, Recorder};
use crate::quant::{MatrixFormat, PlannedMatrix, QuantPlan};

/// Options for loading a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The format of each large weight matrix (f32, bf16, f16, int8 or nf4), converted as it is
    /// loaded; by default each keeps its file's precision.
    pub quant: QuantPlan,
    /// LoRA adapters merged into the weights as they load ([`Model::load`]; a caller of
    /// [`Model::from_source`] merges with [`lora::merge`]).
    pub lora: Vec<lora::Lora>,
    /// Where the embedding table lives.
    pub embedding: EmbeddingPlace,
    /// Told how many bytes of the file's tensors have been read, as the weights convert and upload.
    pub progress: Option<Progress>,
}

/// A loaded model: its shape, its weights and its embedding table (on the GPU, or in host memory
/// where it does not fit).
pub struct Model {
    pub gpu: Arc<Gpu>,
    pub config: Arc<ModelConfig>,
    layers: Box<dyn Layers>,
    ln_out: GpuTensor,
    /// [V, C]
    head: GpuMatrix,
    /// The embedding table, whose rows come normalized by ln0: the first step of the forward pass.
    pub embedding: EmbeddingTable,
    /// The file format it came from ("safetensors", "pth").
    pub format: &'static str,
    /// The dtype of `head.weight` in the file (what most of the file is stored as).
    pub file_dtype: String,
    /// How the weight matrices are stored on the GPU: "bf16", or "int8 94%, f16 6%" by bytes.
    pub storage: String,
}

/// Refuses, before anything is allocated, a model with a matrix whose single row would not fit
/// one storage binding (larger matrices are split by rows, so rows are what must fit), with its
/// matrices stored as `plan` says.
pub fn check_fits(
    gpu: &Gpu,
    source: &dyn TensorSource,
    config: &ModelConfig,
    plan: &QuantPlan,
) -> Result<()> {
    let matrices = planned_matrices(source, config, plan)?;
    let limit = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
    for m in &matrices {
        let row = m.format.bytes(1, m.cols) + 4;
        if row > limit {
            return Err(Error::TooBig(format!(
                "`{}`: one row of {} {} weights takes {row} bytes, more than the adapter's {limit}-byte storage bindings",
                m.name,
                m.cols,
                m.format.name()
            )));
        }
    }
    Ok(())
}

/// Checks every tensor of the model (presence, shape, dtype) without keeping any of it.
pub fn validate(source: &dyn TensorSource, config: &ModelConfig) -> Result<()> {
    planned_matrices(source, config, &QuantPlan::default()).map(drop)
}

/// Every weight matrix of the model with the format `plan` gives it (or the format the file
/// already holds it in), in loading order.
pub fn planned_matrices(
    source: &dyn TensorSource,
    config: &ModelConfig,
    plan: &QuantPlan,
) -> Result<Vec<PlannedMatrix>> {
    let inventory = Inventory::default();
    let blocks = (config.version.architecture.inventory)(source, config, &inventory, plan);
    in_version(config.version, blocks)?;
    in_version(config.version, Outer::load(source, config, &inventory, plan).map(drop))?;
    Ok(inventory.into_matrices())
}

/// The formats of `matrices` by their share of the bytes, largest first: "bf16" when there is
/// one, else "int8 94%, f16 6%".
pub fn describe_storage(matrices: &[PlannedMatrix]) -> String {
    let mut bytes: Vec<(MatrixFormat, u64)> = Vec::new();
    for m in matrices {
        let size = m.format.bytes(m.rows, m.cols);
        match bytes.iter_mut().find(|(format, _)| *format == m.format) {
            Some((_, total)) => *total += size,
            None => bytes.push((m.format, size)),
        }
    }
    bytes.sort_by_key(|&(_, size)| std::cmp::Reverse(size));
    if let [(format, _)] = bytes[..] {
        return format.name().to_string();
    }
    let all: u64 = bytes.iter().map(|(_, size)| size).sum::<u64>().max(1);
    let share = |size: u64| ((size * 100 + all / 2) / all).max(1);
    bytes
        .iter()
        .map(|&(format, size)| format!("{} {}%", format.name(), share(size)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The weights outside the blocks. ln0 stays on the host with the embedding it normalizes.
struct Outer<S: Store> {
    ln0: Vec<f32>,
    ln_out: S::Vector,
    head: S::Matrix,
}

impl<S: Store> Outer<S> {
    fn load(source: &dyn TensorSource, config: &ModelConfig, store: &S, plan: &QuantPlan) -> Result<Self> {
        let loader = Loader::with_plan(source, store, plan.clone());
        Ok(Outer {
            ln0: loader.norm_f32("blocks.0.ln0", config.embd)?,
            ln_out: loader.norm("ln_out", config.embd)?,
            head: loader.linear("head.weight", config.vocab, config.embd)?,
        })
    }
}

/// Adds which version the file looked like to a missing-tensor error: the names a user sees are
/// then explained by the version the file was taken for.
pub(crate) fn in_version<T>(version: Version, result: Result<T>) -> Result<T> {
    result.map_err(|error| match error {
        Error::MissingTensor { name, hint } if hint.is_empty() => {
            Error::MissingTensor { name, hint: format!(" (the file looks like {})", version.name()) }
        }
        other => other,
    })
}

/// The forward pass, recorded by the engine into its steps: the normalized embedding rows (from
/// [`Model::embedding`]), [`Model::record_blocks`] over them, and [`Model::record_head`] over the
/// rows whose next-token logits are wanted.
impl Model {
    /// Records every block over a step's rows: `step.x` ([rows, C]) holds the normalized embedding
    /// rows and becomes the residual stream; each sequence's state is read and updated.
    pub fn record_blocks(&self, rec: &mut Recorder, pool: &ScratchPool, step: StepTensors) -> Result<()> {
        self.layers.record(rec, pool, step)
    }

    /// Where a scratch tensor of [`Model::record_blocks`] for steps of `max_rows` rows would not
    /// fit one of the adapter's storage bindings: its label and the most rows it allows.
    pub fn scratch_shortfall(&self, max_rows: usize) -> Result<Option<(String, usize)>> {
        let pool = ScratchPool::planning(&self.gpu, max_rows)?;
        self.layers.reserve(&self.gpu, &pool)?;
        Ok(pool.planned_shortfall())
    }

    /// Records `logits = head(ln_out(rows))` ([n, C] → [n, V]), with `normed` ([n, C]) as scratch.
    pub fn record_head(
        &self,
        rec: &mut Recorder,
        rows: &GpuTensor,
        normed: &GpuTensor,
        logits: &GpuTensor,
    ) -> Result<()> {
        kernels::layer_norm(rec, "ln_out", rows, &self.ln_out, normed)?;
        kernels::linear(rec, "head", &self.head, normed, logits, Epilogue::PLAIN)
    }

    /// One layer's `wkv` state before the first token.
    pub fn initial_wkv(&self) -> Vec<f32> {
        self.config.initial_wkv()
    }

    /// The head, `head.weight` as stored on the GPU.
    pub fn head(&self) -> &GpuMatrix {
        &self.head
    }
}

impl Model {
    /// Opens `path` (a file or a Hugging Face folder) and loads it onto `gpu`, with the options'
    /// adapters merged in.
    pub fn load(gpu: Arc<Gpu>, path: &Path, options: &LoadOptions) -> Result<Model> {
        let source = lora::merge(source::open(path)?, &options.lora)?;
        Self::from_source(gpu, source.as_ref(), options)
    }

    /// Loads a model from any tensor source (a file, or a synthetic model made in memory).
    pub fn from_source(gpu: Arc<Gpu>, source: &dyn TensorSource, options: &LoadOptions) -> Result<Model> {
        let reporting =
            options.progress.clone().map(|progress| source::progress::Reporting::new(source, progress));
        let source: &dyn TensorSource = match &reporting {
            Some(reporting) => reporting,
            None => source,
        };
        let config = Arc::new(ModelConfig::from_source(source)?);
        check_fits(&gpu, source, &config, &options.quant)?;
        let uploaded = gpu.scoped("uploading the weights", || {
            let layers = (config.version.architecture.upload)(source, &config, &gpu, &options.quant)?;
            Ok((layers, Outer::load(source, &config, gpu.as_ref(), &options.quant)?))
        });
        let (layers, outer) = in_version(config.version, uploaded)?;
        let storage = describe_storage(&planned_matrices(source, &config, &options.quant)?);
        let embedding = Embedding::load(
            source,
            config.vocab,
            config.embd,
            outer.ln0,
            config.version.architecture.embedding,
        )?;
        let embedding = EmbeddingTable::place(embedding, &gpu, options.embedding)?;
        if let Some(reporting) = &reporting {
            reporting.finish();
        }
        let file_dtype =
            source.meta("head.weight").map_or_else(|| "?".into(), |(dtype, _)| dtype.to_string());
        Ok(Model {
            gpu,
            config,
            layers,
            ln_out: outer.ln_out,
            head: outer.head,
            embedding,
            format: source.format(),
            file_dtype,
            storage,
        })
    }
}
