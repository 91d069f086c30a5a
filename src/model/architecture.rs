//! What the engine must know of an RWKV generation, as one value that the generation's own file
//! defines ([`super::v7::ARCHITECTURE`] and its siblings): how to recognise its checkpoints, read
//! its shape, load and record its layers, lay out its state and normalize its embedding. Nothing
//! else branches on the version, so a new generation is a new file (plus its shaders) and a line
//! in [`ARCHITECTURES`].

use std::sync::Arc;

use super::block::Layers;
use super::config::{LoraRank, ModelConfig};
use super::embedding::NormalizedIn;
use super::loader::Inventory;
use super::source::TensorSource;
use super::{v4, v5, v6, v7};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::quant::QuantPlan;

/// One RWKV generation, with the revisions that share its layer code.
pub struct Architecture {
    /// The revisions' names, oldest first, as the official package tells them apart.
    pub revisions: &'static [&'static str],
    /// Which revision a checkpoint is, from its tensor names; `None` if it is not this generation.
    pub detect: fn(&TensorNames) -> Option<&'static str>,
    /// The time mix's heads and low-rank ranks, read from the tensors.
    pub time_mix_shape: fn(&dyn TensorSource, &Widths) -> Result<TimeMixShape>,
    /// The precision the official loader normalizes the embedding table in.
    pub embedding: NormalizedIn,
    pub channel_mix: ChannelMixLayout,
    pub state: StateLayout,
    /// Loads every block onto the GPU, its matrices stored as the plan says.
    pub upload: Upload,
    /// Reads every block's tensors (checking them) into a store that lists the matrices.
    pub inventory: fn(&dyn TensorSource, &ModelConfig, &Inventory, &QuantPlan) -> Result<()>,
}

/// Loads a version's blocks onto the GPU.
pub type Upload = fn(&dyn TensorSource, &Arc<ModelConfig>, &Gpu, &QuantPlan) -> Result<Box<dyn Layers>>;

/// The generations, in the order detection tries them: a later one's telltale names are absent
/// from the earlier ones, and RWKV-4, which has none, comes last.
pub static ARCHITECTURES: [&Architecture; 4] =
    [&v7::ARCHITECTURE, &v6::ARCHITECTURE, &v5::ARCHITECTURE, &v4::ARCHITECTURE];

/// The widths every version has, read before the version's own shape.
pub struct Widths {
    pub embd: usize,
    pub layers: usize,
}

/// The shape of a version's time mix.
pub struct TimeMixShape {
    /// Heads of the matrix-valued state; 0 where the state is per channel (RWKV-4).
    pub heads: usize,
    pub head_size: usize,
    pub lora: Vec<LoraRank>,
}

/// The channel mix's token shift and gate.
pub struct ChannelMixLayout {
    /// The mixes, `blocks.N.ffn.<name>`, in the order the token shift stacks them: the key's,
    /// then the receptance's where there is a gate.
    pub mixes: &'static [&'static str],
    /// Stored as `time_mix` (x·m + prev·(1 − m)) rather than `time_maa` (x + (prev − x)·m).
    pub complement: bool,
    /// Whether the output is gated by σ(W_r·x_r).
    pub gated: bool,
}

/// A layer's `wkv` state.
pub struct StateLayout {
    /// Its values before the first token.
    pub initial_wkv: fn(&ModelConfig) -> Vec<f32>,
    /// How a state-tuned checkpoint's `time_state` maps onto it; `None` if the version has no
    /// matrix state to tune.
    pub tuned: Option<TunedState>,
}

/// State-tuning tools store `time_state` as [head, value, key].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunedState {
    /// The version's own layout.
    AsStored,
    /// The version keeps [head, key, value].
    Transposed,
}

/// A matrix-valued state of zeros, [H, N, N] (RWKV-5 on).
pub fn zero_matrices(config: &ModelConfig) -> Vec<f32> {
    vec![0.0; config.embd * config.head_size]
}

/// A checkpoint's tensor names, for detection.
pub struct TensorNames<'a> {
    source: &'a dyn TensorSource,
    names: Vec<String>,
}

impl<'a> TensorNames<'a> {
    pub fn new(source: &'a dyn TensorSource) -> Self {
        TensorNames { source, names: source.names() }
    }

    pub fn all(&self) -> &[String] {
        &self.names
    }

    /// Whether some `blocks.N.*` tensor's name ends with `suffix`.
    pub fn in_blocks(&self, suffix: &str) -> bool {
        self.names.iter().any(|n| n.starts_with("blocks.") && n.ends_with(suffix))
    }

    /// Whether some tensor's name contains `part`.
    pub fn any_containing(&self, part: &str) -> bool {
        self.names.iter().any(|n| n.contains(part))
    }

    /// The shapes of the tensors whose names end with `suffix`.
    pub fn shapes_ending(&self, suffix: &str) -> impl Iterator<Item = Vec<usize>> + '_ {
        let suffix = suffix.to_string();
        self.names
            .iter()
            .filter(move |n| n.ends_with(&suffix))
            .filter_map(|n| self.source.meta(n).map(|(_, shape)| shape))
    }
}

/// An RWKV generation and the revision of it a model is.
#[derive(Clone, Copy)]
pub struct Version {
    pub architecture: &'static Architecture,
    name: &'static str,
}

impl Version {
    /// The newest revision of `architecture`.
    pub fn latest(architecture: &'static Architecture) -> Version {
        let name = architecture.revisions.last().copied().unwrap_or("?");
        Version { architecture, name }
    }

    /// The version of a checkpoint, from the first generation that recognises it.
    pub fn detect(names: &TensorNames) -> Option<Version> {
        ARCHITECTURES
            .iter()
            .find_map(|&architecture| (architecture.detect)(names).map(|name| Version { architecture, name }))
    }

    /// Every revision of every generation.
    pub fn all() -> impl Iterator<Item = Version> {
        ARCHITECTURES.iter().flat_map(|&architecture| {
            architecture.revisions.iter().map(move |&name| Version { architecture, name })
        })
    }

    pub fn by_name(name: &str) -> Option<Version> {
        Self::all().find(|version| version.name == name)
    }

    pub fn name(self) -> &'static str {
        self.name
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.name == other.name
    }
}

impl Eq for Version {}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}
