//! The channel mix (feed-forward) of every RWKV version:
//!   k = relu(W_k·x_k)²;  out = W_v·k, gated by σ(W_r·x_r) in RWKV-4…6 (RWKV-7 has no gate),
//! with x_k, x_r the token-shifted inputs.

use super::config::ModelConfig;
use super::loader::{Loader, Store};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor, ScratchPool};
use crate::kernels::{self, Activation, Epilogue, NormInput, Recorder, ShiftedInput, ShiftedSegment};

/// `blocks.N.ffn.*`
pub struct ChannelMix<S: Store> {
    /// Token-shift mixes, [k] or [k; r], in the `x + (prev − x)·mix` form.
    pub mixes: S::Vector,
    /// W_k [F, C]; in RWKV-4…6 with W_r [C, C] stacked below it, so that one pass reads both.
    pub key: S::Matrix,
    /// [C, F], on GPUs stored by input
    pub value: S::Matrix,
    /// RWKV-4…6 gate the output by σ(W_r·x_r); RWKV-7 has no receptance.
    pub gated: bool,
}

impl<S: Store> ChannelMix<S> {
    pub fn load(loader: &Loader<S>, config: &ModelConfig, layer: usize) -> Result<Self> {
        let c = config.embd;
        let ffn = |name: &str| format!("blocks.{layer}.ffn.{name}");
        let layout = &config.version.architecture.channel_mix;
        let names = layout.mixes.iter().map(|p| ffn(p)).collect::<Vec<_>>();
        let label = ffn("mixes");
        let mixes = if layout.complement {
            loader.stacked_complement(&label, &names, c)?
        } else {
            loader.stacked(&label, &names, c)?
        };
        let mut key = vec![(ffn("key.weight"), config.ffn)];
        if layout.gated {
            key.push((ffn("receptance.weight"), c));
        }
        Ok(ChannelMix {
            mixes,
            key: loader.linear_stacked(&key, c)?,
            value: loader.linear_sparse_input(&ffn("value.weight"), c, config.ffn)?,
            gated: layout.gated,
        })
    }
}

/// Intermediate values of the channel mix, shared by all layers.
pub struct ChannelScratch {
    /// x_k (and x_r), one stack.
    shifted: Vec<GpuTensor>,
    stride: usize,
    /// relu(W_k·x_k)² and, gated, σ(W_r·x_r), in one buffer: the stacked product writes both.
    hidden: GpuTensor,
    gate: Option<GpuTensor>,
}

impl ChannelScratch {
    pub fn new(gpu: &Gpu, pool: &ScratchPool, config: &ModelConfig, rows: usize) -> Result<ChannelScratch> {
        let mixes = config.version.architecture.channel_mix.mixes.len();
        let (shifted, stride) = pool.stack(gpu, "ffn.shifted", mixes, rows, config.embd)?;
        let gated = config.version.architecture.channel_mix.gated;
        let width = if gated { config.ffn.max(config.embd) } else { config.ffn };
        let (outputs, _) = pool.stack(gpu, "ffn.hidden_gate", 1 + usize::from(gated), rows, width)?;
        let mut outputs = outputs.into_iter();
        let hidden = outputs.next().map(|entry| GpuTensor { cols: config.ffn, ..entry });
        Ok(ChannelScratch {
            shifted,
            stride,
            hidden: hidden.ok_or_else(|| Error::Internal("no channel-mix scratch".into()))?,
            gate: outputs.next().map(|entry| GpuTensor { cols: config.embd, ..entry }),
        })
    }
}

impl ChannelMix<Gpu> {
    /// Records `x += ChannelMix(xf)`, with `prev` the layer's remembered LN2 output.
    pub fn record(
        &self,
        rec: &mut Recorder,
        layer: usize,
        (input, prev): (NormInput, &GpuTensor),
        s: &ChannelScratch,
    ) -> Result<()> {
        let label = |op: &str| format!("L{layer}.ffn.{op}");
        let shifted = ShiftedInput { input, prev, mixes: &self.mixes };
        // k = relu(W_k·x_k)² and, with a receptance, r = σ(W_r·x_r), where
        // x_* = xf + (xf_prev − xf) ⊙ mix_* and xf = LN2(x)
        let mut key = vec![ShiftedSegment { mix: 0, y: &s.hidden, activation: Activation::ReluSquared }];
        let gate = if self.gated { s.gate.as_ref() } else { None };
        if let Some(gate) = gate {
            key.push(ShiftedSegment { mix: 1, y: gate, activation: Activation::Sigmoid });
        }
        let remember = kernels::shifted_products(
            rec,
            label,
            (shifted, kernels::Prev::Update),
            (&s.shifted, s.stride),
            &[("key", &self.key, &key[..])],
        )?;
        // x += W_v·k (⊙ r); the input is mostly zeros
        let value = gate.map_or(Epilogue::ACCUMULATE, Epilogue::gated_accumulate);
        let value = value.sparse_input().remember_if(remember);
        kernels::linear(rec, &label("value"), &self.value, &s.hidden, input.x, value)
    }
}
