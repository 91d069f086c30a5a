//! How much GPU memory a model takes, before loading it: weights in each format, the state of
//! one sequence, and the scratch buffers of a step.

use super::config::ModelConfig;
use super::planned_matrices;
use super::source::TensorSource;
use crate::error::Result;
use crate::quant::QuantPlan;

/// GPU memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    /// Weight matrices in their formats, plus the f32 vectors (the embedding stays in host memory).
    pub weights: u64,
    /// The recurrent state of one sequence.
    pub state_per_sequence: u64,
    /// Intermediate values of a step of `rows` tokens (an estimate: about 30 values per channel
    /// and row, the channel-mix width, and the logits).
    pub scratch: u64,
}

impl Memory {
    pub fn total(&self, sequences: usize) -> u64 {
        self.weights + self.state_per_sequence * sequences as u64 + self.scratch
    }
}

/// The memory a model takes with its large matrices stored as `plan` says, for steps of up to
/// `rows` tokens.
pub fn memory(
    source: &dyn TensorSource,
    config: &ModelConfig,
    plan: &QuantPlan,
    rows: usize,
) -> Result<Memory> {
    let matrices = planned_matrices(source, config, plan)?;
    let matrix_bytes: u64 = matrices.iter().map(|m| m.format.bytes(m.rows, m.cols)).sum();
    let matrix_elements: usize = matrices.iter().map(|m| m.rows * m.cols).sum();
    let all_elements: usize = source
        .names()
        .iter()
        .filter(|name| name.as_str() != "emb.weight")
        .filter_map(|name| source.meta(name))
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    let vectors = all_elements.saturating_sub(matrix_elements) as u64 * 4;
    let (c, layers) = (config.embd as u64, config.layers as u64);
    let wkv = config.initial_wkv().len() as u64;
    // The channel mix's hidden vector and gate (RWKV-4 to 6) are entries of the wider's width.
    let ffn = config.ffn as u64;
    let channel_mix = if config.version.architecture.channel_mix.gated { 2 * ffn.max(c) } else { ffn };
    let per_row = 30 * c + channel_mix + config.vocab as u64;
    Ok(Memory {
        weights: matrix_bytes + vectors,
        state_per_sequence: layers * (2 * c + wkv) * 4,
        scratch: rows as u64 * per_row * 4,
    })
}
