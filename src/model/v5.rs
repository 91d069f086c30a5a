//! RWKV-5 "Eagle" (5.0, 5.1, 5.2): a matrix-valued state per head, decayed per key channel,
//! read out through a per-head group norm; from 5.1 on, a SiLU output gate.
//!
//! The three revisions differ only in their weights: 5.0 has no gate; 5.0 and 5.1 store one
//! decay and one bonus per head (expanded to channels here), 5.2 one per channel. The bonus is
//! `exp(time_first)`, or `time_faaaa` as is where the checkpoint has that instead.
//!
//! Reference: `RWKV.att_one_v5` and `att_one_v5_1` in BlinkDL's `rwkv` package 0.8.32.

use super::block::{LayerState, LoadTimeMix, TimeMix};
use super::config::ModelConfig;
use super::loader::{Loader, Store};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuMatrix, GpuVector};
use crate::kernels::{self, Activation, Epilogue, Mixes, Prev, Recorder, Wkv5Inputs};

/// `blocks.N.att.*`
pub struct TimeMix5<S: Store> {
    /// 1 − time_mix_{k,v,r[,g]}, stacked: [3 or 4, C].
    pub mixes: S::Vector,
    pub receptance: S::Matrix,
    pub key: S::Matrix,
    pub value: S::Matrix,
    /// 5.1 and 5.2 only.
    pub gate: Option<S::Matrix>,
    pub output: S::Matrix,
    pub decay: S::Vector,
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

impl<S: Store> LoadTimeMix<S> for TimeMix5<S> {
    fn load(loader: &Loader<S>, config: &ModelConfig, layer: usize) -> Result<Self> {
        let c = config.embd;
        let att = |name: &str| format!("blocks.{layer}.att.{name}");
        let linear = |name: &str| loader.matrix(&att(&format!("{name}.weight")), c, c);
        let gated = loader.has(&att("gate.weight"));
        let mut mixes = vec![att("time_mix_k"), att("time_mix_v"), att("time_mix_r")];
        if gated {
            mixes.push(att("time_mix_g"));
        }
        let decay =
            per_channel(loader, &att("time_decay"), config)?.into_iter().map(|d| (-d.exp()).exp()).collect();
        Ok(TimeMix5 {
            mixes: loader.stacked_complement(&att("time_mix_*"), &mixes, c)?,
            receptance: linear("receptance")?,
            key: linear("key")?,
            value: linear("value")?,
            gate: if gated { Some(linear("gate")?) } else { None },
            output: linear("output")?,
            decay: loader.store.vector(&att("time_decay"), decay)?,
            first: bonus(loader, layer, config)?,
            ln_x: loader.norm(&att("ln_x"), c)?,
        })
    }
}

/// The read-out RWKV-5 and 6 share, on the GPU: from r, k, v, decay and bonus to `x += …`.
pub struct Readout {
    pub r: GpuVector,
    pub k: GpuVector,
    pub v: GpuVector,
    pub g: GpuVector,
    pub y: GpuVector,
    pub y_normed: GpuVector,
}

impl Readout {
    pub fn new(gpu: &Gpu, config: &ModelConfig) -> Result<Readout> {
        let vector = |name: &str| GpuVector::zeros(gpu, &format!("att.{name}"), config.embd);
        Ok(Readout {
            r: vector("r")?,
            k: vector("k")?,
            v: vector("v")?,
            g: vector("g")?,
            y: vector("y")?,
            y_normed: vector("y_normed")?,
        })
    }

    /// Records `r, k, v (and g = silu(W_g·x_g))` from the shifted inputs.
    pub fn project(
        &self,
        rec: &mut Recorder,
        label: &dyn Fn(&str) -> String,
        weights: (&GpuMatrix, &GpuMatrix, &GpuMatrix, Option<&GpuMatrix>),
        (xr, xk, xv, xg): (&GpuVector, &GpuVector, &GpuVector, Option<&GpuVector>),
    ) -> Result<()> {
        let (receptance, key, value, gate) = weights;
        kernels::matvec(rec, &label("receptance"), receptance, xr, &self.r, Epilogue::PLAIN)?;
        kernels::matvec(rec, &label("key"), key, xk, &self.k, Epilogue::PLAIN)?;
        kernels::matvec(rec, &label("value"), value, xv, &self.v, Epilogue::PLAIN)?;
        match (gate, xg) {
            (Some(gate), Some(xg)) => {
                kernels::matvec(rec, &label("gate"), gate, xg, &self.g, Epilogue::then(Activation::Silu))
            }
            (None, None) => Ok(()),
            _ => Err(Error::InvalidArgument(format!(
                "{}: a gate needs both its weight and input",
                label("gate")
            ))),
        }
    }

    /// Records the state update, group norm (and gate) and output projection:
    ///   y = r·(u⊙k vᵀ + S);  S ← k vᵀ + w⊙S;  x += W_o·(GroupNorm(y) [⊙ g])
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        rec: &mut Recorder,
        label: &dyn Fn(&str) -> String,
        heads: usize,
        (decay, first, gated): (&GpuVector, &GpuVector, bool),
        (ln_x, output): (&GpuVector, &GpuMatrix),
        state: &GpuVector,
        x: &GpuVector,
    ) -> Result<()> {
        let inputs = Wkv5Inputs { r: &self.r, k: &self.k, v: &self.v, w: decay, u: first };
        kernels::wkv5(rec, &label("wkv"), heads, state, inputs, &self.y)?;
        let gate = gated.then_some(&self.g);
        kernels::group_norm(rec, &label("ln_x"), heads, &self.y, ln_x, gate, &self.y_normed)?;
        kernels::matvec(rec, &label("output"), output, &self.y_normed, x, Epilogue::ACCUMULATE)
    }
}

/// Intermediate values of one token's time mix, shared by every layer.
pub struct Scratch5 {
    /// x_k, x_v, x_r and, with a gate, x_g.
    shifted: Vec<GpuVector>,
    stride: usize,
    readout: Readout,
}

impl TimeMix for TimeMix5<Gpu> {
    type Scratch = Scratch5;

    fn initial_state(config: &ModelConfig) -> Vec<f32> {
        vec![0.0; config.embd * config.head_size]
    }

    fn scratch(gpu: &Gpu, config: &ModelConfig) -> Result<Scratch5> {
        let (shifted, stride) = GpuVector::stack(gpu, "att.shifted", 4, config.embd)?;
        Ok(Scratch5 { shifted, stride, readout: Readout::new(gpu, config)? })
    }

    fn record(
        &self,
        rec: &mut Recorder,
        config: &ModelConfig,
        layer: usize,
        (xa, x): (&GpuVector, &GpuVector),
        state: &LayerState,
        s: &Scratch5,
    ) -> Result<()> {
        let label = |op: &str| format!("L{layer}.att.{op}");
        let gated = self.gate.is_some();
        let shifted = &s.shifted[..if gated { 4 } else { 3 }];
        // 1. x_* = xa·m + xa_prev·(1 − m) for m = time_mix_k, v, r (and g)
        let mixes = Mixes::Packed(&self.mixes);
        kernels::token_shift(
            rec,
            &label("shift"),
            (xa, &state.att_x),
            mixes,
            shifted,
            s.stride,
            Prev::Update,
        )?;
        // 2. r, k, v = W·x_*; g = silu(W_g·x_g)
        let weights = (&self.receptance, &self.key, &self.value, self.gate.as_ref());
        let inputs = (&shifted[2], &shifted[0], &shifted[1], shifted.get(3));
        s.readout.project(rec, &label, weights, inputs)?;
        // 3. y = r·(u⊙k vᵀ + S); S ← k vᵀ + w⊙S; x += W_o·(GroupNorm(y) [⊙ g])
        let decay = (&self.decay, &self.first, gated);
        s.readout.record(rec, &label, config.heads, decay, (&self.ln_x, &self.output), &state.wkv, x)
    }
}
