//! RWKV-4: the time mix is a per-channel weighted average of past values, kept in log space.
//!
//! Reference: `RWKV.att_one` in BlinkDL's `rwkv` package 0.8.32.

use super::architecture::{Architecture, ChannelMixLayout, StateLayout, TimeMixShape};
use super::block::{self, LayerStep, LoadTimeMix, TimeMix};
use super::config::ModelConfig;
use super::embedding::NormalizedIn;
use super::loader::{Inventory, Loader, Store};
use crate::error::Result;
use crate::gpu::{Gpu, GpuTensor, ScratchPool};
use crate::kernels::{
    self, Activation, Epilogue, Recorder, ShiftedInput, ShiftedSegment, Wkv4Inputs, WKV4_INITIAL_PP,
};

/// What no later generation has: RWKV-4 is what remains.
pub static ARCHITECTURE: Architecture = Architecture {
    revisions: &["RWKV-4"],
    detect: |_| Some("RWKV-4"),
    time_mix_shape: |_, _| Ok(TimeMixShape { heads: 0, head_size: 0, lora: vec![] }),
    embedding: NormalizedIn::FileDtype,
    channel_mix: ChannelMixLayout { mixes: &["time_mix_k", "time_mix_r"], complement: true, gated: true },
    state: StateLayout { initial_wkv, tuned: None },
    upload: block::upload::<TimeMix4<Gpu>>,
    inventory: block::inventory::<TimeMix4<Inventory>>,
};

/// aa = bb = 0, pp = −1e30, per channel.
fn initial_wkv(config: &ModelConfig) -> Vec<f32> {
    let c = config.embd;
    [vec![0.0; 2 * c], vec![WKV4_INITIAL_PP; c]].concat()
}

/// `blocks.N.att.*`
pub struct TimeMix4<S: Store> {
    /// 1 − time_mix_{k,v,r}, stacked: [3, C].
    pub mixes: S::Vector,
    /// Receptance, key and value stacked by rows, [3C, C]: one pass reads all three.
    pub rkv: S::Matrix,
    pub output: S::Matrix,
    /// −exp(time_decay), the log-space decay per token.
    pub decay: S::Vector,
    /// time_first, the log-space bonus of the current token.
    pub first: S::Vector,
}

impl<S: Store> LoadTimeMix<S> for TimeMix4<S> {
    fn load(loader: &Loader<S>, config: &ModelConfig, layer: usize) -> Result<Self> {
        let c = config.embd;
        let att = |name: &str| format!("blocks.{layer}.att.{name}");
        let weight = |name: &str| (att(&format!("{name}.weight")), c);
        let mixes = ["time_mix_k", "time_mix_v", "time_mix_r"].map(att);
        let decay = loader.vector_f32(&att("time_decay"), c)?.into_iter().map(|d| -d.exp()).collect();
        Ok(TimeMix4 {
            mixes: loader.stacked_complement(&att("time_mix_*"), &mixes, c)?,
            rkv: loader.linear_stacked(&["receptance", "key", "value"].map(weight), c)?,
            output: loader.linear(&att("output.weight"), c, c)?,
            decay: loader.store.vector(&att("time_decay"), decay)?,
            first: loader.vector(&att("time_first"), c)?,
        })
    }
}

/// Intermediate values of one token's time mix, shared by every layer.
pub struct Scratch4 {
    /// x_k, x_v, x_r.
    shifted: [GpuTensor; 3],
    stride: usize,
    /// r, k, v: one stack, which the stacked product writes.
    rkv: [GpuTensor; 3],
    y: GpuTensor,
}

impl TimeMix for TimeMix4<Gpu> {
    type Scratch = Scratch4;

    fn scratch(gpu: &Gpu, pool: &ScratchPool, config: &ModelConfig, rows: usize) -> Result<Scratch4> {
        let c = config.embd;
        let (shifted, stride) = pool.stack_of(gpu, "att.shifted", rows, c)?;
        let (rkv, _) = pool.stack_of(gpu, "att.rkv", rows, c)?;
        Ok(Scratch4 { shifted, stride, rkv, y: pool.tensor(gpu, "att.y", rows, c)? })
    }

    fn record(&self, rec: &mut Recorder, step: LayerStep, s: &Scratch4) -> Result<()> {
        let LayerStep { layer, input, state, .. } = step;
        let x = input.x;
        let label = |op: &str| format!("L{layer}.att.{op}");
        // 1. x_* = xa·m + xa_prev·(1 − m) for m = time_mix_k, v, r (xa = LN1(x));
        // 2. r = σ(W_r·x_r), k = W_k·x_k, v = W_v·x_v
        let shifted = ShiftedInput { input, prev: &state.att_x, mixes: &self.mixes };
        let [r, k, v] = &s.rkv;
        let rkv = [
            ShiftedSegment { mix: 2, y: r, activation: Activation::Sigmoid },
            ShiftedSegment { mix: 0, y: k, activation: Activation::None },
            ShiftedSegment { mix: 1, y: v, activation: Activation::None },
        ];
        let remember = kernels::shifted_products(
            rec,
            label,
            (shifted, kernels::Prev::Update),
            (&s.shifted, s.stride),
            &[("rkv", &self.rkv, &rkv[..])],
        )?;
        // 3. y = r ⊙ (Σ e^(w·age + k)·v + e^(u + k)·v) / (same without v), updating aa, bb, pp
        let inputs = Wkv4Inputs { r, k, v, w: &self.decay, u: &self.first };
        kernels::wkv4(rec, &label("wkv"), &state.wkv, inputs, &s.y)?;
        // 4. x += W_o·y; the sequence remembers xa
        let output = Epilogue::ACCUMULATE.remember_if(remember);
        kernels::linear(rec, &label("output"), &self.output, &s.y, x, output)
    }
}
