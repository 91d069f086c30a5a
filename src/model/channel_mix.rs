//! The channel mix (feed-forward) of every RWKV version:
//!   k = relu(W_k·x_k)²;  out = W_v·k, gated by σ(W_r·x_r) in RWKV-4…6 (RWKV-7 has no gate),
//! with x_k, x_r the token-shifted inputs.

use super::config::ModelConfig;
use super::loader::{Loader, Store};
use crate::error::Result;
use crate::gpu::{Gpu, GpuTensor, ScratchPool};
use crate::kernels::{self, Activation, Epilogue, NormInput, Recorder, ShiftedInput, ShiftedSegment};

/// `blocks.N.ffn.*`
pub struct ChannelMix<S: Store> {
    /// Token-shift mixes, [k] or [k; r], in the `x + (prev − x)·mix` form.
    pub mixes: S::Vector,
    /// [F, C]
    pub key: S::Matrix,
    /// [C, F], on GPUs stored by input
    pub value: S::Matrix,
    /// [C, C]; absent in RWKV-7.
    pub receptance: Option<S::Matrix>,
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
        let receptance =
            if layout.gated { Some(loader.linear(&ffn("receptance.weight"), c, c)?) } else { None };
        Ok(ChannelMix {
            mixes,
            key: loader.linear(&ffn("key.weight"), config.ffn, c)?,
            value: loader.linear_sparse_input(&ffn("value.weight"), c, config.ffn)?,
            receptance,
        })
    }
}

/// Intermediate values of the channel mix, shared by all layers.
pub struct ChannelScratch {
    /// x_k (and x_r), one stack.
    shifted: Vec<GpuTensor>,
    stride: usize,
    hidden: GpuTensor,
    gate: GpuTensor,
}

impl ChannelScratch {
    pub fn new(gpu: &Gpu, pool: &ScratchPool, config: &ModelConfig, rows: usize) -> Result<ChannelScratch> {
        let mixes = config.version.architecture.channel_mix.mixes.len();
        let (shifted, stride) = pool.stack(gpu, "ffn.shifted", mixes, rows, config.embd)?;
        Ok(ChannelScratch {
            shifted,
            stride,
            hidden: pool.tensor(gpu, "ffn.hidden", rows, config.ffn)?,
            gate: pool.tensor(gpu, "ffn.gate", rows, config.embd)?,
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
        let key = [ShiftedSegment { mix: 0, y: &s.hidden, activation: Activation::ReluSquared }];
        let gate = [ShiftedSegment { mix: 1, y: &s.gate, activation: Activation::Sigmoid }];
        let mut products = vec![("key", &self.key, &key[..])];
        if let Some(receptance) = &self.receptance {
            products.push(("receptance", receptance, &gate[..]));
        }
        let remember = kernels::shifted_products(
            rec,
            label,
            (shifted, kernels::Prev::Update),
            (&s.shifted, s.stride),
            &products,
        )?;
        // x += W_v·k (⊙ r); the input is mostly zeros
        let value = match &self.receptance {
            None => Epilogue::ACCUMULATE,
            Some(_) => Epilogue::gated_accumulate(&s.gate),
        };
        let value = value.sparse_input().remember_if(remember);
        kernels::linear(rec, &label("value"), &self.value, &s.hidden, input.x, value)
    }
}
