//! RWKV-5 "Eagle" (5.0, 5.1, 5.2): a matrix-valued state per head, decayed per key channel,
//! read out through a per-head group norm; from 5.1 on, a SiLU output gate.
//!
//! The three revisions differ only in their weights: 5.0 has no gate; 5.0 and 5.1 store one
//! decay and one bonus per head (expanded to channels here), 5.2 one per channel. The bonus is
//! `exp(time_first)`, or `time_faaaa` as is where the checkpoint has that instead.
//!
//! Reference: `RWKV.att_one_v5` and `att_one_v5_1` in BlinkDL's `rwkv` package 0.8.32.

use super::architecture::{
    zero_matrices, Architecture, ChannelMixLayout, StateLayout, TensorNames, TimeMixShape, TunedState, Widths,
};
use super::block::{self, LayerStep, LoadTimeMix, TimeMix};
use super::config::{heads_from, ModelConfig};
use super::embedding::NormalizedIn;
use super::loader::{Inventory, Loader, Store};
use super::source::TensorSource;
use crate::error::Result;
use crate::gpu::{Gpu, GpuTensor, ScratchPool};
use crate::kernels::{
    self, Activation, Epilogue, GroupNormGate, Recorder, Remember, Segment, ShiftedInput, ShiftedSegment,
    Wkv5Inputs, WKV5_ONE_MAX_HEAD,
};

pub static ARCHITECTURE: Architecture = Architecture {
    revisions: &["RWKV-5.0", "RWKV-5.1", "RWKV-5.2"],
    detect,
    time_mix_shape: |source: &dyn TensorSource, widths: &Widths| {
        let (heads, head_size) = heads_from(source, "blocks.0.att.time_decay", widths.embd)?;
        Ok(TimeMixShape { heads, head_size, lora: vec![] })
    },
    embedding: NormalizedIn::FileDtype,
    channel_mix: ChannelMixLayout { mixes: &["time_mix_k", "time_mix_r"], complement: true, gated: true },
    state: StateLayout { initial_wkv: zero_matrices, tuned: Some(TunedState::Transposed) },
    upload: block::upload::<TimeMix5<Gpu>>,
    inventory: block::inventory::<TimeMix5<Inventory>>,
};

/// RWKV-5 has a group norm (`ln_x`); 5.2 stores a decay per channel ([H, N]), 5.1 one per head
/// but a gate, 5.0 neither.
fn detect(names: &TensorNames) -> Option<&'static str> {
    if !names.any_containing("ln_x") {
        return None;
    }
    let decay_per_channel =
        names.shapes_ending(".att.time_decay").any(|shape| shape.len() == 2 && shape[1] > 1);
    Some(if decay_per_channel {
        "RWKV-5.2"
    } else if names.any_containing("gate.weight") {
        "RWKV-5.1"
    } else {
        "RWKV-5.0"
    })
}

/// `blocks.N.att.*`
pub struct TimeMix5<S: Store> {
    /// 1 − time_mix_{k,v,r[,g]}, stacked: [3 or 4, C].
    pub mixes: S::Vector,
    /// exp(−exp(time_decay)), per channel.
    pub decay: S::Vector,
    pub core: Core5<S>,
}

/// The part of the time mix RWKV-5 and RWKV-6 share: the projections, the bonus of the current
/// token, the group norm and the output.
pub struct Core5<S: Store> {
    /// Receptance, key, value and (RWKV-5.1 and later) gate stacked by rows, [3C or 4C, C]:
    /// one pass reads them all.
    pub projections: S::Matrix,
    pub gated: bool,
    pub output: S::Matrix,
    /// The bonus of the current token, per channel.
    pub first: S::Vector,
    /// Group norm, [weight; bias].
    pub ln_x: S::Vector,
}

/// A per-channel vector from a tensor holding one value per head ([H], expanded) or per
/// channel ([H, N] in RWKV-5.2, [C] in RWKV-6).
pub(super) fn per_channel<S: Store>(
    loader: &Loader<S>,
    name: &str,
    config: &ModelConfig,
) -> Result<Vec<f32>> {
    let (heads, n) = (config.heads, config.head_size);
    match loader.elements(name) {
        Some(elements) if elements == heads && n > 1 => Ok(loader
            .vector_f32(name, heads)?
            .into_iter()
            .flat_map(|value| std::iter::repeat_n(value, n))
            .collect()),
        _ if loader.dimensions(name) == Some(1) => loader.vector_f32(name, config.embd),
        _ => loader.matrix_f32(name, heads, n),
    }
}

/// The bonus of the current token: `time_faaaa` as stored, or `exp(time_first)`.
pub(super) fn bonus<S: Store>(loader: &Loader<S>, layer: usize, config: &ModelConfig) -> Result<S::Vector> {
    let faaaa = format!("blocks.{layer}.att.time_faaaa");
    if loader.has(&faaaa) {
        return loader.store.vector(&faaaa, per_channel(loader, &faaaa, config)?);
    }
    let first = format!("blocks.{layer}.att.time_first");
    let values = per_channel(loader, &first, config)?.into_iter().map(f32::exp).collect();
    loader.store.vector(&first, values)
}

impl<S: Store> Core5<S> {
    pub fn load(loader: &Loader<S>, config: &ModelConfig, layer: usize) -> Result<Self> {
        let c = config.embd;
        let att = |name: &str| format!("blocks.{layer}.att.{name}");
        let gated = loader.has(&att("gate.weight"));
        let projections = ["receptance", "key", "value", "gate"][..3 + usize::from(gated)]
            .iter()
            .map(|name| (att(&format!("{name}.weight")), c))
            .collect::<Vec<_>>();
        Ok(Core5 {
            projections: loader.linear_stacked(&projections, c)?,
            gated,
            output: loader.linear(&att("output.weight"), c, c)?,
            first: bonus(loader, layer, config)?,
            ln_x: loader.norm(&att("ln_x"), c)?,
        })
    }
}

impl<S: Store> LoadTimeMix<S> for TimeMix5<S> {
    fn load(loader: &Loader<S>, config: &ModelConfig, layer: usize) -> Result<Self> {
        let att = |name: &str| format!("blocks.{layer}.att.{name}");
        let core = Core5::load(loader, config, layer)?;
        let mut mixes = vec![att("time_mix_k"), att("time_mix_v"), att("time_mix_r")];
        if core.gated {
            mixes.push(att("time_mix_g"));
        }
        let decay =
            per_channel(loader, &att("time_decay"), config)?.into_iter().map(|d| (-d.exp()).exp()).collect();
        Ok(TimeMix5 {
            mixes: loader.stacked_complement(&att("time_mix_*"), &mixes, config.embd)?,
            decay: loader.store.vector(&att("time_decay"), decay)?,
            core,
        })
    }
}

/// Intermediate values of [`Core5`], shared by every layer.
pub struct CoreScratch {
    /// r, k, v, g: one stack, which the stacked projections write.
    rkvg: [GpuTensor; 4],
    y: GpuTensor,
    y_normed: GpuTensor,
}

impl CoreScratch {
    pub fn new(gpu: &Gpu, pool: &ScratchPool, config: &ModelConfig, rows: usize) -> Result<CoreScratch> {
        let vector = |name: &str| pool.tensor(gpu, &format!("att.{name}"), rows, config.embd);
        let (rkvg, _) = pool.stack_of(gpu, "att.rkvg", rows, config.embd)?;
        Ok(CoreScratch { rkvg, y: vector("y")?, y_normed: vector("y_normed")? })
    }

    /// The segments of [`Core5::projections`] in their order, each writing its own output:
    /// r, k, v, then, where the model has a gate, g = silu(W_g·x_g).
    pub(super) fn projections<'a, T>(
        &'a self,
        core: &Core5<Gpu>,
        inputs: [T; 4],
    ) -> Vec<(T, &'a GpuTensor, Activation)> {
        let activations = [Activation::None, Activation::None, Activation::None, Activation::Silu];
        let count = 3 + usize::from(core.gated);
        inputs.into_iter().zip(&self.rkvg).zip(activations).take(count).map(|((x, y), a)| (x, y, a)).collect()
    }
}

/// The token-shifted inputs of [`Core5`]'s projections, in one stack: x_r, x_k, x_v, x_g.
pub struct Shifted<'a> {
    pub r: &'a GpuTensor,
    pub k: &'a GpuTensor,
    pub v: &'a GpuTensor,
    pub g: &'a GpuTensor,
}

impl Core5<Gpu> {
    /// Records `r, k, v = W·x_*` and, with a gate, `g = silu(W_g·x_g)`, in one grouped product.
    pub fn project(&self, rec: &mut Recorder, layer: usize, x: Shifted, s: &CoreScratch) -> Result<()> {
        let segments: Vec<Segment> = s
            .projections(self, [x.r, x.k, x.v, x.g])
            .into_iter()
            .map(|(x, y, activation)| Segment { x, y, activation })
            .collect();
        kernels::linear_grouped(
            rec,
            &format!("L{layer}.att.rkvg"),
            &self.projections,
            &segments,
            Epilogue::PLAIN,
        )
    }

    /// Records the state update and read-out with decay `w`:
    ///   y = r·(u⊙k vᵀ + S);  S ← k vᵀ + w⊙S;  x += W_o·(GroupNorm(y) [⊙ g])
    /// and stores what a fused shift left to remember, if anything.
    pub fn read_out(
        &self,
        rec: &mut Recorder,
        (layer, heads): (usize, usize),
        w: &GpuTensor,
        (state, x): (&GpuTensor, &GpuTensor),
        (s, remember): (&CoreScratch, Option<Remember>),
    ) -> Result<()> {
        let label = |op: &str| format!("L{layer}.att.{op}");
        let [r, k, v, g] = &s.rkvg;
        let inputs = Wkv5Inputs { r, k, v, w, u: &self.first };
        let gate = self.gated.then_some(g);
        // A token per sequence (decoding, batched or not; sequences are never empty).
        let one_token = rec.sequence_count() == Some(r.rows) && rec.gpu.fused_decode;
        if one_token && r.cols / heads.max(1) <= WKV5_ONE_MAX_HEAD {
            let norm = GroupNormGate { norm: &self.ln_x, gate };
            kernels::wkv5_one(rec, &label("wkv_ln_x"), heads, (state, inputs), norm, &s.y_normed)?;
        } else {
            kernels::wkv5(rec, &label("wkv"), heads, state, inputs, &s.y)?;
            kernels::group_norm(rec, &label("ln_x"), heads, &s.y, &self.ln_x, gate, &s.y_normed)?;
        }
        let output = Epilogue::ACCUMULATE.remember_if(remember);
        kernels::linear(rec, &label("output"), &self.output, &s.y_normed, x, output)
    }
}

/// Intermediate values of one token's time mix, shared by every layer.
pub struct Scratch5 {
    /// x_k, x_v, x_r and, with a gate, x_g.
    shifted: [GpuTensor; 4],
    stride: usize,
    core: CoreScratch,
}

impl TimeMix for TimeMix5<Gpu> {
    type Scratch = Scratch5;

    fn scratch(gpu: &Gpu, pool: &ScratchPool, config: &ModelConfig, rows: usize) -> Result<Scratch5> {
        let (shifted, stride) = pool.stack_of(gpu, "att.shifted", rows, config.embd)?;
        Ok(Scratch5 { shifted, stride, core: CoreScratch::new(gpu, pool, config, rows)? })
    }

    fn record(&self, rec: &mut Recorder, step: LayerStep, s: &Scratch5) -> Result<()> {
        let LayerStep { config, layer, input, state } = step;
        let (core, scratch) = (&self.core, &s.core);
        let label = |op: &str| format!("L{layer}.att.{op}");
        // 1. x_* = xa·m + xa_prev·(1 − m) for m = time_mix_k, v, r (and g), xa = LN1(x);
        // 2. r, k, v = W·x_*; g = silu(W_g·x_g)
        let shifted = ShiftedInput { input, prev: &state.att_x, mixes: &self.mixes };
        // The mixes are stacked k, v, r, g.
        let segments: Vec<ShiftedSegment> = scratch
            .projections(core, [2, 0, 1, 3])
            .into_iter()
            .map(|(mix, y, activation)| ShiftedSegment { mix, y, activation })
            .collect();
        let mixed = &s.shifted[..segments.len()];
        let remember = kernels::shifted_products(
            rec,
            label,
            (shifted, kernels::Prev::Update),
            (mixed, s.stride),
            &[("rkvg", &core.projections, &segments[..])],
        )?;
        // 3. y = r·(u⊙k vᵀ + S); S ← k vᵀ + w⊙S; x += W_o·(GroupNorm(y) [⊙ g]); the sequence
        //    remembers xa
        let io = (&state.wkv, input.x);
        core.read_out(rec, (layer, config.heads), &self.decay, io, (scratch, remember))
    }
}
