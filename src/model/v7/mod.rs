//! RWKV-7 "Goose" (x070): the time mix's weights, loaded by their checkpoint names, and its
//! forward pass for one token as a list of kernels in the order of the equations.
//!
//! Reference: `RWKV_x070_TMix_one` in BlinkDL's `rwkv` package 0.8.32.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuMatrix, GpuTensor, ScratchPool};
use crate::kernels::Activation::{self, Decay7, Sigmoid, Tanh};
use crate::kernels::{
    self, BonusGate, Epilogue, KeyInputs, Prev, Recorder, Segment, ShiftedInput, ShiftedSegment, Wkv7Inputs,
    Wkv7OneInputs,
};
use crate::model::architecture::{
    zero_matrices, Architecture, ChannelMixLayout, StateLayout, TensorNames, TimeMixShape, TunedState, Widths,
};
use crate::model::block::{self, LayerStep, LoadTimeMix, TimeMix};
use crate::model::config::{heads_from, lora_rank, LoraRank, ModelConfig};
use crate::model::embedding::NormalizedIn;
use crate::model::loader::{Inventory, Loader, Store};
use crate::model::source::TensorSource;

pub mod reference;

const IDENTITY: Activation = Activation::None;

pub static ARCHITECTURE: Architecture = Architecture {
    revisions: &["RWKV-7 (x070)"],
    detect,
    time_mix_shape,
    // The official loader normalizes RWKV-7's embedding in f32, whatever the file holds.
    embedding: NormalizedIn::F32,
    channel_mix: ChannelMixLayout { mixes: &["x_k"], complement: false, gated: false },
    state: StateLayout { initial_wkv: zero_matrices, tuned: Some(TunedState::AsStored) },
    upload: block::upload::<TimeMix7<Gpu>>,
    inventory: block::inventory::<TimeMix7<Inventory>>,
};

fn detect(names: &TensorNames) -> Option<&'static str> {
    let telltale = [".att.k_k", ".att.x_r", ".att.r_k"].iter().any(|suffix| names.in_blocks(suffix));
    telltale.then_some(ARCHITECTURE.revisions[0])
}

fn time_mix_shape(source: &dyn TensorSource, widths: &Widths) -> Result<TimeMixShape> {
    let (heads, head_size) = heads_from(source, "blocks.0.att.r_k", widths.embd)?;
    let rank = |name, tensor: &str| lora_rank(source, name, tensor, 1);
    // Layer 0 has no value residual, so its v1 may be absent or a placeholder.
    let value_residual = if widths.layers > 1 {
        rank("value residual", "blocks.1.att.v1")?
    } else {
        LoraRank { name: "value residual", rank: 0 }
    };
    let lora = vec![
        rank("decay", "blocks.0.att.w1")?,
        rank("in-context rate", "blocks.0.att.a1")?,
        value_residual,
        rank("gate", "blocks.0.att.g1")?,
    ];
    Ok(TimeMixShape { heads, head_size, lora })
}

/// The six token-shift mixes of the time mix, in the order they are stacked.
pub const TIME_MIXES: [&str; 6] = ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"];
// Their indices in the stack.
const MIX_R: usize = 0;
const MIX_W: usize = 1;
const MIX_K: usize = 2;
const MIX_V: usize = 3;
const MIX_A: usize = 4;
const MIX_G: usize = 5;

/// The value residual: layer 0 remembers its value as `v_first`; later layers pull their value
/// towards it by a data-dependent amount. (Layer 0's `v0/v1/v2` exist in checkpoints but are
/// unused, so they are not loaded.)
pub enum ValueResidual<S: Store> {
    First,
    /// v1 is part of the stacked LoRA inputs.
    Mix {
        v0: S::Vector,
        v2: S::Matrix,
    },
}

/// `blocks.N.att.*`
pub struct TimeMix7<S: Store> {
    /// x_r, x_w, x_k, x_v, x_a, x_g stacked: [6, C].
    pub mixes: S::Vector,
    /// receptance, key and value stacked by rows, [3C, C]: one pass reads all three.
    pub rkv: S::Matrix,
    pub output: S::Matrix,
    /// The LoRA input factors w1, a1, v1 (not in layer 0), g1 as `[out, in]`, stacked by rows,
    /// [D_w + D_a (+ D_v) + D_g, C]: one pass reads all of them.
    pub lora_in: S::Matrix,
    /// Decay LoRA output [C, D] and its bias w0 [C].
    pub w0: S::Vector,
    pub w2: S::Matrix,
    /// In-context learning rate LoRA output and bias.
    pub a0: S::Vector,
    pub a2: S::Matrix,
    pub value_residual: ValueResidual<S>,
    /// Output gate LoRA output (no bias).
    pub g2: S::Matrix,
    pub k_k: S::Vector,
    pub k_a: S::Vector,
    /// [H, N] flattened to [C].
    pub r_k: S::Vector,
    /// Group norm, [weight; bias].
    pub ln_x: S::Vector,
    /// The per-channel vectors again, stacked for the one-token kernel ([`kernels::wkv7_one`]):
    /// k_k, k_a, r_k, ln_x weight, ln_x bias, w0, a0, v0 (zeros in layer 0), [8, C].
    pub channel: S::Vector,
}

impl<S: Store> LoadTimeMix<S> for TimeMix7<S> {
    fn load(loader: &Loader<S>, config: &ModelConfig, layer: usize) -> Result<Self> {
        let c = config.embd;
        let att = |name: &str| format!("blocks.{layer}.att.{name}");
        let vector = |name: &str| loader.vector(&att(name), c);
        let (decay, rate, gate) = (config.rank("decay"), config.rank("in-context rate"), config.rank("gate"));

        let mix_names: Vec<String> = TIME_MIXES.iter().map(|m| att(m)).collect();
        let rkv: Vec<(String, usize)> =
            ["receptance", "key", "value"].iter().map(|m| (att(&format!("{m}.weight")), c)).collect();
        // The LoRA outputs in one buffer, which the one-token kernel reads through one binding.
        let mut outputs = vec![(att("w2"), decay), (att("a2"), rate), (att("g2"), gate)];
        if layer > 0 {
            outputs.push((att("v2"), config.rank("value residual")));
        }
        let mut outputs = loader.matrices_transposed_together(&outputs, c)?.into_iter();
        let mut next = || outputs.next().ok_or_else(|| Error::Internal("LoRA outputs missing".into()));
        let (w2, a2, g2) = (next()?, next()?, next()?);
        let value_residual = if layer == 0 {
            ValueResidual::First
        } else {
            ValueResidual::Mix { v0: vector("v0")?, v2: next()? }
        };
        let lora_in = lora_inputs(config, layer).map(|(name, rank)| (att(name), rank)).collect::<Vec<_>>();
        let r_k_values = loader.matrix_f32(&att("r_k"), config.heads, config.head_size)?;
        let channel = per_channel(loader, config, layer, &r_k_values)?;
        let r_k = loader.store.vector(&att("r_k"), r_k_values)?;
        Ok(TimeMix7 {
            mixes: loader.stacked(&att("x_*"), &mix_names, c)?,
            rkv: loader.linear_stacked(&rkv, c)?,
            output: loader.linear(&att("output.weight"), c, c)?,
            lora_in: loader.matrices_transposed_stacked(&lora_in, c)?,
            w0: vector("w0")?,
            w2,
            a0: vector("a0")?,
            a2,
            value_residual,
            g2,
            k_k: vector("k_k")?,
            k_a: vector("k_a")?,
            r_k,
            ln_x: loader.norm(&att("ln_x"), c)?,
            channel,
        })
    }
}

/// [`TimeMix7::channel`]: the per-channel vectors stacked, [8, C].
fn per_channel<S: Store>(
    loader: &Loader<S>,
    config: &ModelConfig,
    layer: usize,
    r_k: &[f32],
) -> Result<S::Vector> {
    let c = config.embd;
    let att = |name: &str| format!("blocks.{layer}.att.{name}");
    let vector = |name: &str| loader.vector_f32(&att(name), c);
    let mut rows = Vec::with_capacity(8 * c);
    rows.extend(vector("k_k")?);
    rows.extend(vector("k_a")?);
    rows.extend_from_slice(r_k);
    rows.extend(loader.norm_f32(&att("ln_x"), c)?);
    rows.extend(vector("w0")?);
    rows.extend(vector("a0")?);
    if layer == 0 {
        rows.extend(std::iter::repeat_n(0.0, c));
    } else {
        rows.extend(vector("v0")?);
    }
    loader.store.rows(&att("channel"), c, rows)
}

/// The LoRA input factors of a layer in the order they are stacked, with their ranks: decay,
/// in-context rate, value residual (not in layer 0), gate.
pub fn lora_inputs(config: &ModelConfig, layer: usize) -> impl Iterator<Item = (&'static str, usize)> + '_ {
    let factors = [("w1", "decay"), ("a1", "in-context rate"), ("v1", "value residual"), ("g1", "gate")];
    factors
        .into_iter()
        .filter(move |&(name, _)| layer > 0 || name != "v1")
        .map(|(name, what)| (name, config.rank(what)))
}

/// Intermediate values of one token's time mix, shared by every layer and step.
pub struct Scratch7 {
    /// Token-shifted inputs x_r … x_g, one stack written by one dispatch.
    mixed: [GpuTensor; 6],
    mixed_stride: usize,
    /// r, k, v and v_first in one stack: the stacked projection writes r, k and v (layer 0: r,
    /// k and v_first) in one dispatch, and the value residual pulls v towards v_first in place.
    /// Only layer 0 writes v_first, which every later layer mixes in.
    values: [GpuTensor; 4],
    w: GpuTensor,
    a: GpuTensor,
    g: GpuTensor,
    kk: GpuTensor,
    k_shaped: GpuTensor,
    y: GpuTensor,
    y_gated: GpuTensor,
    /// The LoRA hidden vectors (decay, in-context rate, value residual, gate), each its rank
    /// wide, in one stack that the stacked LoRA input product writes in one dispatch.
    hidden: [GpuTensor; 4],
    /// The chunked recurrence's scratch, for steps long enough to take it.
    chunks: Option<GpuTensor>,
}

impl TimeMix for TimeMix7<Gpu> {
    type Scratch = Scratch7;

    fn scratch(gpu: &Gpu, pool: &ScratchPool, config: &ModelConfig, rows: usize) -> Result<Scratch7> {
        let c = config.embd;
        let vector = |name: &str, len: usize| pool.tensor(gpu, &format!("att.{name}"), rows, len);
        let (mixed, mixed_stride) = pool.stack_of(gpu, "att.mixed", rows, c)?;
        let (values, _) = pool.stack_of(gpu, "att.values", rows, c)?;
        let ranks =
            ["decay", "in-context rate", "value residual", "gate"].map(|what| config.rank(what).max(1));
        let widest = ranks.iter().copied().max().unwrap_or(1);
        let (hidden, _): ([GpuTensor; 4], _) = pool.stack_of(gpu, "att.lora_hidden", rows, widest)?;
        let mut rank = ranks.iter();
        let hidden = hidden.map(|entry| GpuTensor { cols: *rank.next().unwrap_or(&1), ..entry });
        let chunk_width = kernels::wkv7_chunk_width(c, config.head_size);
        let fits = GpuTensor::stack_rows_within_binding(gpu, 1, chunk_width) >= pool.max_rows;
        let may_chunk = kernels::wkv7_chunked_supports(gpu, rows, 1, config.head_size) && fits;
        let chunks =
            if may_chunk { Some(pool.tensor(gpu, "att.wkv_chunks", rows, chunk_width)?) } else { None };
        Ok(Scratch7 {
            mixed,
            mixed_stride,
            values,
            w: vector("w", c)?,
            a: vector("a", c)?,
            g: vector("g", c)?,
            kk: vector("kk", c)?,
            k_shaped: vector("k_shaped", c)?,
            y: vector("y", c)?,
            y_gated: vector("y_gated", c)?,
            hidden,
            chunks,
        })
    }

    fn record(&self, rec: &mut Recorder, step: LayerStep, s: &Scratch7) -> Result<()> {
        let one_token = step.input.x.rows == 1 && rec.gpu.fused_decode;
        if one_token && kernels::wkv7_one_supports(&self.lora_outputs(), step.config.head_size) {
            return self.record_one(rec, step, s);
        }
        let LayerStep { config, layer, input, state } = step;
        let heads = config.heads;
        let label = |op: &str| format!("L{layer}.att.{op}");
        let linear = |rec: &mut Recorder, op: &str, m: &GpuMatrix, x, y, e| {
            kernels::linear(rec, &label(op), m, x, y, e)
        };
        let segment = |x, y, activation| Segment { x, y, activation };
        let [xr, xw, xk, xv, xa, xg] = &s.mixed;
        let [r, k, v, v_first] = &s.values;
        let [decay_hidden, rate_hidden, value_hidden, gate_hidden] = &s.hidden;

        let x = input.x;
        // 1. x_* = xa + (xa_prev − xa) ⊙ x_*, with xa = LN1(x)
        let mixed = (&s.mixed[..], s.mixed_stride);
        kernels::layer_norm_shift(
            rec,
            &label("ln_shift"),
            input,
            (&state.att_x, Prev::Update),
            &self.mixes,
            mixed,
        )?;
        // 2. r = W_r·x_r, k = W_k·x_k, v = W_v·x_v in one pass (layer 0's value is v_first itself)
        let own_value = if layer == 0 { v_first } else { v };
        let projections =
            [segment(xr, r, IDENTITY), segment(xk, k, IDENTITY), segment(xv, own_value, IDENTITY)];
        kernels::linear_grouped(rec, &label("rkv"), &self.rkv, &projections, Epilogue::PLAIN)?;
        // 3. The LoRA inputs in one pass: tanh(x_w·w1), x_a·a1, x_v·v1 (not in layer 0), σ(x_g·g1)
        let mut lora = vec![segment(xw, decay_hidden, Tanh), segment(xa, rate_hidden, IDENTITY)];
        if layer > 0 {
            lora.push(segment(xv, value_hidden, IDENTITY));
        }
        lora.push(segment(xg, gate_hidden, Sigmoid));
        kernels::linear_grouped(rec, &label("lora_in"), &self.lora_in, &lora, Epilogue::PLAIN)?;
        // 4. w = exp(−e^−0.5 · σ(w0 + ·w2)), a = σ(a0 + ·a2)
        linear(rec, "w2", &self.w2, decay_hidden, &s.w, Epilogue::bias(&self.w0, Decay7))?;
        linear(rec, "a2", &self.a2, rate_hidden, &s.a, Epilogue::bias(&self.a0, Sigmoid))?;
        // 5. v = v + (v_first − v) ⊙ σ(v0 + ·v2), except in layer 0
        let v = match &self.value_residual {
            ValueResidual::First => v_first,
            ValueResidual::Mix { v0, v2 } => {
                linear(rec, "v2", v2, value_hidden, v, Epilogue::lerp(v0, v_first, Sigmoid))?;
                v
            }
        };
        // 6. g = ·g2
        linear(rec, "g2", &self.g2, gate_hidden, &s.g, Epilogue::PLAIN)?;
        // 7. kk = normalize(k ⊙ k_k) per head; k = k ⊙ (1 + (a − 1) ⊙ k_a)
        let keys = KeyInputs { k, a: &s.a, k_k: &self.k_k, k_a: &self.k_a };
        kernels::wkv7_keys(rec, &label("keys"), heads, keys, &s.kk, &s.k_shaped)?;
        // 8. S ← S·diag(w) + (S·(−kk))·(kk⊙a)ᵀ + v·kᵀ;  y = S·r
        let wkv = Wkv7Inputs { r, w: &s.w, k: &s.k_shaped, v, kk: &s.kk, a: &s.a };
        let sequences = rec.sequence_count().unwrap_or(0);
        match &s.chunks {
            Some(chunks) if kernels::wkv7_chunked_supports(rec.gpu, x.rows, sequences, config.head_size) => {
                kernels::wkv7_chunked(rec, &label("wkv"), heads, &state.wkv, wkv, &s.y, chunks)?
            }
            _ => kernels::wkv7(rec, &label("wkv"), heads, &state.wkv, wkv, &s.y)?,
        }
        // 9. y = (GroupNorm(y) + (Σ r⊙k⊙r_k)·v) ⊙ g
        let bonus_gate = BonusGate { rkv: [r, &s.k_shaped, v], r_k: &self.r_k, g: &s.g };
        kernels::group_norm_bonus_gate(rec, &label("ln_x"), heads, &s.y, &self.ln_x, bonus_gate, &s.y_gated)?;
        // 10. x += W_o·y
        linear(rec, "output", &self.output, &s.y_gated, x, Epilogue::ACCUMULATE)
    }
}

impl TimeMix7<Gpu> {
    /// W2, A2, V2 (`None` in layer 0), G2.
    fn lora_outputs(&self) -> [Option<&GpuMatrix>; 4] {
        let v2 = match &self.value_residual {
            ValueResidual::First => None,
            ValueResidual::Mix { v2, .. } => Some(v2),
        };
        [Some(&self.w2), Some(&self.a2), v2, Some(&self.g2)]
    }

    /// The same equations as [`TimeMix::record`] for a step of one token, in four dispatches:
    /// the layer norm and token shift run in the products' prologues, and everything between
    /// the products in one kernel.
    fn record_one(&self, rec: &mut Recorder, step: LayerStep, s: &Scratch7) -> Result<()> {
        let LayerStep { config, layer, input, state } = step;
        let label = |op: &str| format!("L{layer}.att.{op}");
        let segment = |mix, y, activation| ShiftedSegment { mix, y, activation };
        let [r, k, v, v_first] = &s.values;
        let [decay_hidden, rate_hidden, value_hidden, gate_hidden] = &s.hidden;
        let shifted = ShiftedInput { input, prev: &state.att_x, mixes: &self.mixes };

        // 1. xa = LN1(x), x_* = xa + (xa_prev − xa) ⊙ x_*; r = W_r·x_r, k = W_k·x_k, v = W_v·x_v
        //    (layer 0's value is v_first itself)
        let own_value = if layer == 0 { v_first } else { v };
        let projections =
            [segment(MIX_R, r, IDENTITY), segment(MIX_K, k, IDENTITY), segment(MIX_V, own_value, IDENTITY)];
        let remember = kernels::linear_shifted(rec, &label("rkv"), &self.rkv, shifted, &projections)?;
        // 2. The LoRA inputs: tanh(x_w·w1), x_a·a1, x_v·v1 (not in layer 0), σ(x_g·g1)
        let mut lora = vec![segment(MIX_W, decay_hidden, Tanh), segment(MIX_A, rate_hidden, IDENTITY)];
        if layer > 0 {
            lora.push(segment(MIX_V, value_hidden, IDENTITY));
        }
        lora.push(segment(MIX_G, gate_hidden, Sigmoid));
        // It normalizes the same input again: the first product's `remember` stands for both.
        let _ = kernels::linear_shifted(rec, &label("lora_in"), &self.lora_in, shifted, &lora)?;
        // 3. w, a, v, g from the LoRAs; kk, k'; S ← S·diag(w) + (S·(−kk))·(kk⊙a)ᵀ + v·k'ᵀ;
        //    y = (GroupNorm(S·r) + (Σ r⊙k'⊙r_k)·v) ⊙ g; the sequence remembers xa
        let inputs = Wkv7OneInputs {
            values: [r, k, v, v_first],
            hidden: [decay_hidden, rate_hidden, value_hidden, gate_hidden],
            lora: self.lora_outputs(),
            channel: &self.channel,
        };
        kernels::wkv7_one(rec, &label("wkv_one"), config.heads, (inputs, &state.wkv), &s.y_gated, remember)?;
        // 4. x += W_o·y
        kernels::linear(rec, &label("output"), &self.output, &s.y_gated, input.x, Epilogue::ACCUMULATE)
    }
}
