//! RWKV-7 "Goose" (x070): the weights of a layer, loaded by their checkpoint names, and the
//! layer's forward pass for one token as a list of kernels in the order of the equations.
//!
//! Reference: `RWKV_x070_TMix_one` / `RWKV_x070_CMix_one` in BlinkDL's `rwkv` package 0.8.32.

use super::config::V7Config;
use super::loader::{Loader, Store};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuMatrix, GpuVector};
use crate::kernels::Activation::{Decay7, ReluSquared, Sigmoid, Tanh};
use crate::kernels::{self, BonusGate, Epilogue, KeyInputs, Recorder, Wkv7Inputs};

/// The six token-shift mixes of the time mix, in the order they are stacked.
pub const TIME_MIXES: [&str; 6] = ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"];

/// The value residual: layer 0 remembers its value as `v_first`; later layers pull their value
/// towards it by a data-dependent amount. (Layer 0's `v0/v1/v2` exist in checkpoints but are
/// unused, so they are not loaded.)
pub enum ValueResidual<S: Store> {
    First,
    Mix { v0: S::Vector, v1: S::Matrix, v2: S::Matrix },
}

/// `blocks.N.att.*`
pub struct TimeMix<S: Store> {
    /// x_r, x_w, x_k, x_v, x_a, x_g stacked: [6, C].
    pub mixes: S::Vector,
    pub receptance: S::Matrix,
    pub key: S::Matrix,
    pub value: S::Matrix,
    pub output: S::Matrix,
    /// Decay LoRA: w1 [D, C] and w2 [C, D] as `[out, in]`; w0 [C] its bias.
    pub w0: S::Vector,
    pub w1: S::Matrix,
    pub w2: S::Matrix,
    /// In-context learning rate LoRA.
    pub a0: S::Vector,
    pub a1: S::Matrix,
    pub a2: S::Matrix,
    pub value_residual: ValueResidual<S>,
    /// Output gate LoRA (no bias).
    pub g1: S::Matrix,
    pub g2: S::Matrix,
    pub k_k: S::Vector,
    pub k_a: S::Vector,
    /// [H, N] flattened to [C].
    pub r_k: S::Vector,
    /// Group norm, [weight; bias].
    pub ln_x: S::Vector,
}

/// `blocks.N.ffn.*`
pub struct ChannelMix<S: Store> {
    pub x_k: S::Vector,
    /// [F, C]
    pub key: S::Matrix,
    /// [C, F]
    pub value: S::Matrix,
}

/// `blocks.N.*`
pub struct Block<S: Store> {
    pub ln1: S::Vector,
    pub ln2: S::Vector,
    pub att: TimeMix<S>,
    pub ffn: ChannelMix<S>,
}

impl<S: Store> Block<S> {
    pub fn load(loader: &Loader<S>, config: &V7Config, layer: usize) -> Result<Self> {
        let c = config.embd;
        let lora = &config.lora;
        let att = |name: &str| format!("blocks.{layer}.att.{name}");
        let vector = |name: &str| loader.vector(&att(name), c);
        let lora_in = |name: &str, rank| loader.matrix_transposed(&att(name), c, rank);
        let lora_out = |name: &str, rank| loader.matrix_transposed(&att(name), rank, c);
        let linear = |name: &str| loader.matrix(&att(&format!("{name}.weight")), c, c);

        let mix_names: Vec<String> = TIME_MIXES.iter().map(|m| att(m)).collect();
        let value_residual = if layer == 0 {
            ValueResidual::First
        } else {
            ValueResidual::Mix {
                v0: vector("v0")?,
                v1: lora_in("v1", lora.value_residual)?,
                v2: lora_out("v2", lora.value_residual)?,
            }
        };
        let r_k = loader
            .store
            .vector(&att("r_k"), loader.matrix_f32(&att("r_k"), config.heads, config.head_size)?)?;
        let ffn = |name: &str| format!("blocks.{layer}.ffn.{name}");
        Ok(Block {
            ln1: loader.norm(&format!("blocks.{layer}.ln1"), c)?,
            ln2: loader.norm(&format!("blocks.{layer}.ln2"), c)?,
            att: TimeMix {
                mixes: loader.stacked(&att("x_*"), &mix_names, c)?,
                receptance: linear("receptance")?,
                key: linear("key")?,
                value: linear("value")?,
                output: linear("output")?,
                w0: vector("w0")?,
                w1: lora_in("w1", lora.decay)?,
                w2: lora_out("w2", lora.decay)?,
                a0: vector("a0")?,
                a1: lora_in("a1", lora.in_context_rate)?,
                a2: lora_out("a2", lora.in_context_rate)?,
                value_residual,
                g1: lora_in("g1", lora.gate)?,
                g2: lora_out("g2", lora.gate)?,
                k_k: vector("k_k")?,
                k_a: vector("k_a")?,
                r_k,
                ln_x: loader.norm(&att("ln_x"), c)?,
            },
            ffn: ChannelMix {
                x_k: loader.vector(&ffn("x_k"), c)?,
                key: loader.matrix(&ffn("key.weight"), config.ffn, c)?,
                value: loader.matrix(&ffn("value.weight"), c, config.ffn)?,
            },
        })
    }
}

/// A layer's recurrent state, on the GPU. Layout as in the official package:
/// `att_x` [C], `wkv` [H, N (value), N (key)], `ffn_x` [C].
pub struct LayerState {
    pub att_x: GpuVector,
    pub wkv: GpuVector,
    pub ffn_x: GpuVector,
}

/// Intermediate values of one token's pass through a layer, reused by every layer and step.
pub struct Scratch {
    pub xa: GpuVector,
    /// Token-shifted inputs x_r … x_g, one stack written by one dispatch.
    pub mixed: [GpuVector; 6],
    pub mixed_stride: usize,
    pub r: GpuVector,
    pub k: GpuVector,
    pub v: GpuVector,
    /// A later layer's own value, before the pull towards `v_first`.
    pub v_own: GpuVector,
    pub v_first: GpuVector,
    pub v_mix: GpuVector,
    pub w: GpuVector,
    pub a: GpuVector,
    pub g: GpuVector,
    pub kk: GpuVector,
    pub k_shaped: GpuVector,
    pub y: GpuVector,
    pub y_gated: GpuVector,
    pub decay_hidden: GpuVector,
    pub rate_hidden: GpuVector,
    pub value_hidden: GpuVector,
    pub gate_hidden: GpuVector,
    pub xf: GpuVector,
    pub ffn_mixed: Vec<GpuVector>,
    pub ffn_mixed_stride: usize,
    pub ffn_hidden: GpuVector,
}

impl Scratch {
    pub fn new(gpu: &Gpu, config: &V7Config) -> Result<Scratch> {
        let c = config.embd;
        let vector = |name: &str, len: usize| GpuVector::zeros(gpu, name, len);
        let (mixed, mixed_stride) = GpuVector::stack(gpu, "att.mixed", TIME_MIXES.len(), c)?;
        let mixed: [GpuVector; 6] =
            mixed.try_into().map_err(|_| Error::Gpu("att.mixed: expected six rows".into()))?;
        let (ffn_mixed, ffn_mixed_stride) = GpuVector::stack(gpu, "ffn.mixed", 1, c)?;
        Ok(Scratch {
            xa: vector("xa", c)?,
            mixed,
            mixed_stride,
            r: vector("r", c)?,
            k: vector("k", c)?,
            v: vector("v", c)?,
            v_own: vector("v_own", c)?,
            v_first: vector("v_first", c)?,
            v_mix: vector("v_mix", c)?,
            w: vector("w", c)?,
            a: vector("a", c)?,
            g: vector("g", c)?,
            kk: vector("kk", c)?,
            k_shaped: vector("k_shaped", c)?,
            y: vector("y", c)?,
            y_gated: vector("y_gated", c)?,
            decay_hidden: vector("decay_hidden", config.lora.decay)?,
            rate_hidden: vector("rate_hidden", config.lora.in_context_rate)?,
            value_hidden: vector("value_hidden", config.lora.value_residual.max(1))?,
            gate_hidden: vector("gate_hidden", config.lora.gate)?,
            xf: vector("xf", c)?,
            ffn_mixed,
            ffn_mixed_stride,
            ffn_hidden: vector("ffn_hidden", config.ffn)?,
        })
    }
}

impl Block<Gpu> {
    /// Records one token's pass through layer `layer`, updating the residual stream `x` and the
    /// layer's `state`.
    pub fn record(
        &self,
        rec: &mut Recorder,
        layer: usize,
        heads: usize,
        x: &GpuVector,
        state: &LayerState,
        s: &Scratch,
    ) -> Result<()> {
        let (att, ffn) = (&self.att, &self.ffn);
        let label = |op: &str| format!("L{layer}.{op}");
        let matvec = |rec: &mut Recorder, op: &str, m: &GpuMatrix, x, y, e| {
            kernels::matvec(rec, &label(op), m, x, y, e)
        };
        let [xr, xw, xk, xv, xa, xg] = &s.mixed;

        // ─── Time mix ───
        // 1. x_* = xa + (xa_prev − xa) ⊙ x_*, with xa = LN1(x)
        kernels::layer_norm(rec, &label("ln1"), x, &self.ln1, &s.xa)?;
        kernels::token_shift(
            rec,
            &label("att.shift"),
            &s.xa,
            &state.att_x,
            &att.mixes,
            &s.mixed,
            s.mixed_stride,
        )?;
        // 2. r = W_r·x_r, k = W_k·x_k, v = W_v·x_v (layer 0's value is v_first itself)
        let v_own = if layer == 0 { &s.v_first } else { &s.v_own };
        matvec(rec, "att.receptance", &att.receptance, xr, &s.r, Epilogue::PLAIN)?;
        matvec(rec, "att.key", &att.key, xk, &s.k, Epilogue::PLAIN)?;
        matvec(rec, "att.value", &att.value, xv, v_own, Epilogue::PLAIN)?;
        // 3. w = exp(−e^−0.5 · σ(w0 + tanh(x_w·w1)·w2))
        matvec(rec, "att.w1", &att.w1, xw, &s.decay_hidden, Epilogue::then(Tanh))?;
        matvec(rec, "att.w2", &att.w2, &s.decay_hidden, &s.w, Epilogue::bias(&att.w0, Decay7))?;
        // 4. a = σ(a0 + (x_a·a1)·a2)
        matvec(rec, "att.a1", &att.a1, xa, &s.rate_hidden, Epilogue::PLAIN)?;
        matvec(rec, "att.a2", &att.a2, &s.rate_hidden, &s.a, Epilogue::bias(&att.a0, Sigmoid))?;
        // 5. v = v + (v_first − v) ⊙ σ(v0 + (x_v·v1)·v2), except in layer 0
        let v = match &att.value_residual {
            ValueResidual::First => &s.v_first,
            ValueResidual::Mix { v0, v1, v2 } => {
                matvec(rec, "att.v1", v1, xv, &s.value_hidden, Epilogue::PLAIN)?;
                matvec(rec, "att.v2", v2, &s.value_hidden, &s.v_mix, Epilogue::bias(v0, Sigmoid))?;
                kernels::lerp(rec, &label("att.value_residual"), &s.v_own, &s.v_first, &s.v_mix, &s.v)?;
                &s.v
            }
        };
        // 6. g = σ(x_g·g1)·g2
        matvec(rec, "att.g1", &att.g1, xg, &s.gate_hidden, Epilogue::then(Sigmoid))?;
        matvec(rec, "att.g2", &att.g2, &s.gate_hidden, &s.g, Epilogue::PLAIN)?;
        // 7. kk = normalize(k ⊙ k_k) per head; k = k ⊙ (1 + (a − 1) ⊙ k_a)
        let keys = KeyInputs { k: &s.k, a: &s.a, k_k: &att.k_k, k_a: &att.k_a };
        kernels::wkv7_keys(rec, &label("att.keys"), heads, keys, &s.kk, &s.k_shaped)?;
        // 8. S ← S·diag(w) + (S·(−kk))·(kk⊙a)ᵀ + v·kᵀ;  y = S·r
        let wkv = Wkv7Inputs { r: &s.r, w: &s.w, k: &s.k_shaped, v, kk: &s.kk, a: &s.a };
        kernels::wkv7(rec, &label("att.wkv"), heads, &state.wkv, wkv, &s.y)?;
        // 9. y = (GroupNorm(y) + (Σ r⊙k⊙r_k)·v) ⊙ g
        let bonus_gate = BonusGate { r: &s.r, k: &s.k_shaped, v, r_k: &att.r_k, g: &s.g };
        kernels::group_norm_bonus_gate(
            rec,
            &label("att.ln_x"),
            heads,
            &s.y,
            &att.ln_x,
            bonus_gate,
            &s.y_gated,
        )?;
        // 10. x += W_o·y
        matvec(rec, "att.output", &att.output, &s.y_gated, x, Epilogue::ACCUMULATE)?;

        // ─── Channel mix ───
        // 11. k = relu(W_k·(xf + (xf_prev − xf) ⊙ x_k))², with xf = LN2(x)
        kernels::layer_norm(rec, &label("ln2"), x, &self.ln2, &s.xf)?;
        kernels::token_shift(
            rec,
            &label("ffn.shift"),
            &s.xf,
            &state.ffn_x,
            &ffn.x_k,
            &s.ffn_mixed,
            s.ffn_mixed_stride,
        )?;
        matvec(rec, "ffn.key", &ffn.key, &s.ffn_mixed[0], &s.ffn_hidden, Epilogue::then(ReluSquared))?;
        // 12. x += W_v·k
        matvec(rec, "ffn.value", &ffn.value, &s.ffn_hidden, x, Epilogue::ACCUMULATE)
    }
}
