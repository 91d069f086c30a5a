//! The channel mix (feed-forward) of every RWKV version:
//!   k = relu(W_k·x_k)²;  out = W_v·k, gated by σ(W_r·x_r) in RWKV-4…6 (RWKV-7 has no gate),
//! with x_k, x_r the token-shifted inputs.

use super::config::ModelConfig;
use super::loader::{Loader, Store};
use crate::error::Result;
use crate::gpu::{Gpu, GpuMatrix, GpuTensor, ScratchPool};
use crate::kernels::{self, Activation, Epilogue, NormInput, Prev, Recorder, ShiftedInput, ShiftedSegment};

/// `blocks.N.ffn.*`
pub struct ChannelMix<S: Store> {
    /// Token-shift mixes, [k] or [k; r], in the `x + (prev − x)·mix` form.
    pub mixes: S::Vector,
    /// [F, C]
    pub key: S::Matrix,
    /// [C, F]
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
            value: loader.linear(&ffn("value.weight"), c, config.ffn)?,
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
        let linear = |rec: &mut Recorder, op: &str, m: &GpuMatrix, x, y, e| {
            kernels::linear(rec, &label(op), m, x, y, e)
        };
        if input.x.rows == 1 && rec.gpu.fused_decode {
            return self.record_one(rec, layer, (input, prev), s);
        }
        let x = input.x;
        // x_* = xf + (xf_prev − xf) ⊙ mix_*, with xf = LN2(x)
        let shifted = (&s.shifted[..], s.stride);
        kernels::layer_norm_shift(
            rec,
            &label("ln_shift"),
            input,
            (prev, Prev::Update),
            &self.mixes,
            shifted,
        )?;
        linear(rec, "key", &self.key, &s.shifted[0], &s.hidden, Epilogue::then(Activation::ReluSquared))?;
        match &self.receptance {
            None => linear(rec, "value", &self.value, &s.hidden, x, Epilogue::ACCUMULATE.sparse_input()),
            Some(receptance) => {
                linear(
                    rec,
                    "receptance",
                    receptance,
                    &s.shifted[1],
                    &s.gate,
                    Epilogue::then(Activation::Sigmoid),
                )?;
                linear(
                    rec,
                    "value",
                    &self.value,
                    &s.hidden,
                    x,
                    Epilogue::gated_accumulate(&s.gate).sparse_input(),
                )
            }
        }
    }

    /// The same for a step of one token: the layer norm and token shift run in the prologue of
    /// the products that read them, and the value product stores xf as the sequence's previous
    /// input (2 dispatches in RWKV-7, 3 with a receptance gate).
    fn record_one(
        &self,
        rec: &mut Recorder,
        layer: usize,
        (input, prev): (NormInput, &GpuTensor),
        s: &ChannelScratch,
    ) -> Result<()> {
        let label = |op: &str| format!("L{layer}.ffn.{op}");
        let shifted = ShiftedInput { input, prev, mixes: &self.mixes };
        let segment = |mix, y, activation| [ShiftedSegment { mix, y, activation }];
        // k = relu(W_k·x_k)², with x_k = xf + (xf_prev − xf) ⊙ mix_k, xf = LN2(x)
        let key = segment(0, &s.hidden, Activation::ReluSquared);
        let remember = kernels::linear_shifted(rec, &label("key"), &self.key, shifted, &key)?;
        let value = match &self.receptance {
            None => Epilogue::ACCUMULATE,
            Some(receptance) => {
                // r = σ(W_r·x_r)
                let gate = segment(1, &s.gate, Activation::Sigmoid);
                let _ = kernels::linear_shifted(rec, &label("receptance"), receptance, shifted, &gate)?;
                Epilogue::gated_accumulate(&s.gate)
            }
        };
        // x += W_v·k (⊙ r); the sequence remembers xf
        let value = value.sparse_input().remembering(remember);
        kernels::linear(rec, &label("value"), &self.value, &s.hidden, input.x, value)
    }
}
