//! RWKV-7 "Goose" (x070): the time mix's weights, loaded by their checkpoint names, and its
//! forward pass for one token as a list of kernels in the order of the equations.
//!
//! Reference: `RWKV_x070_TMix_one` in BlinkDL's `rwkv` package 0.8.32.

use super::block::{LayerState, LoadTimeMix, TimeMix};
use super::config::ModelConfig;
use super::loader::{Loader, Store};
use crate::error::Result;
use crate::gpu::{Gpu, GpuMatrix, GpuTensor, ScratchPool};
use crate::kernels::Activation::{Decay7, Sigmoid, Tanh};
use crate::kernels::{self, BonusGate, Epilogue, KeyInputs, Mixes, Prev, Recorder, Wkv7Inputs};

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
pub struct TimeMix7<S: Store> {
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

impl<S: Store> LoadTimeMix<S> for TimeMix7<S> {
    fn load(loader: &Loader<S>, config: &ModelConfig, layer: usize) -> Result<Self> {
        let c = config.embd;
        let att = |name: &str| format!("blocks.{layer}.att.{name}");
        let vector = |name: &str| loader.vector(&att(name), c);
        let lora_in = |name: &str, rank| loader.matrix_transposed(&att(name), c, rank);
        let lora_out = |name: &str, rank| loader.matrix_transposed(&att(name), rank, c);
        let linear = |name: &str| loader.linear(&att(&format!("{name}.weight")), c, c);
        let (decay, rate, gate) = (config.rank("decay"), config.rank("in-context rate"), config.rank("gate"));

        let mix_names: Vec<String> = TIME_MIXES.iter().map(|m| att(m)).collect();
        let value_residual = if layer == 0 {
            ValueResidual::First
        } else {
            let rank = config.rank("value residual");
            ValueResidual::Mix { v0: vector("v0")?, v1: lora_in("v1", rank)?, v2: lora_out("v2", rank)? }
        };
        let r_k = loader
            .store
            .vector(&att("r_k"), loader.matrix_f32(&att("r_k"), config.heads, config.head_size)?)?;
        Ok(TimeMix7 {
            mixes: loader.stacked(&att("x_*"), &mix_names, c)?,
            receptance: linear("receptance")?,
            key: linear("key")?,
            value: linear("value")?,
            output: linear("output")?,
            w0: vector("w0")?,
            w1: lora_in("w1", decay)?,
            w2: lora_out("w2", decay)?,
            a0: vector("a0")?,
            a1: lora_in("a1", rate)?,
            a2: lora_out("a2", rate)?,
            value_residual,
            g1: lora_in("g1", gate)?,
            g2: lora_out("g2", gate)?,
            k_k: vector("k_k")?,
            k_a: vector("k_a")?,
            r_k,
            ln_x: loader.norm(&att("ln_x"), c)?,
        })
    }
}

/// Intermediate values of one token's time mix, shared by every layer and step.
pub struct Scratch7 {
    /// Token-shifted inputs x_r … x_g, one stack written by one dispatch.
    mixed: [GpuTensor; 6],
    mixed_stride: usize,
    r: GpuTensor,
    k: GpuTensor,
    v: GpuTensor,
    /// A later layer's own value, before the pull towards `v_first`.
    v_own: GpuTensor,
    /// Layer 0's value, which every later layer mixes in.
    v_first: GpuTensor,
    v_mix: GpuTensor,
    w: GpuTensor,
    a: GpuTensor,
    g: GpuTensor,
    kk: GpuTensor,
    k_shaped: GpuTensor,
    y: GpuTensor,
    y_gated: GpuTensor,
    decay_hidden: GpuTensor,
    rate_hidden: GpuTensor,
    value_hidden: GpuTensor,
    gate_hidden: GpuTensor,
}

impl TimeMix for TimeMix7<Gpu> {
    type Scratch = Scratch7;

    fn initial_state(config: &ModelConfig) -> Vec<f32> {
        vec![0.0; config.embd * config.head_size]
    }

    fn scratch(gpu: &Gpu, pool: &ScratchPool, config: &ModelConfig, rows: usize) -> Result<Scratch7> {
        let c = config.embd;
        let vector = |name: &str, len: usize| pool.tensor(gpu, &format!("att.{name}"), rows, len);
        let (mixed, mixed_stride) = pool.stack_of(gpu, "att.mixed", rows, c)?;
        Ok(Scratch7 {
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
            decay_hidden: vector("decay_hidden", config.rank("decay"))?,
            rate_hidden: vector("rate_hidden", config.rank("in-context rate"))?,
            value_hidden: vector("value_hidden", config.rank("value residual").max(1))?,
            gate_hidden: vector("gate_hidden", config.rank("gate"))?,
        })
    }

    fn record(
        &self,
        rec: &mut Recorder,
        config: &ModelConfig,
        layer: usize,
        (xa_norm, x): (&GpuTensor, &GpuTensor),
        state: &LayerState,
        s: &Scratch7,
    ) -> Result<()> {
        let heads = config.heads;
        let label = |op: &str| format!("L{layer}.att.{op}");
        let linear = |rec: &mut Recorder, op: &str, m: &GpuMatrix, x, y, e| {
            kernels::linear(rec, &label(op), m, x, y, e)
        };
        let [xr, xw, xk, xv, xa, xg] = &s.mixed;

        // 1. x_* = xa + (xa_prev − xa) ⊙ x_*, with xa = LN1(x)
        let shift = (xa_norm, &state.att_x);
        kernels::token_shift(
            rec,
            &label("shift"),
            shift,
            Mixes::Packed(&self.mixes),
            &s.mixed,
            s.mixed_stride,
            Prev::Update,
        )?;
        // 2. r = W_r·x_r, k = W_k·x_k, v = W_v·x_v (layer 0's value is v_first itself)
        let v_own = if layer == 0 { &s.v_first } else { &s.v_own };
        linear(rec, "receptance", &self.receptance, xr, &s.r, Epilogue::PLAIN)?;
        linear(rec, "key", &self.key, xk, &s.k, Epilogue::PLAIN)?;
        linear(rec, "value", &self.value, xv, v_own, Epilogue::PLAIN)?;
        // 3. w = exp(−e^−0.5 · σ(w0 + tanh(x_w·w1)·w2))
        linear(rec, "w1", &self.w1, xw, &s.decay_hidden, Epilogue::then(Tanh))?;
        linear(rec, "w2", &self.w2, &s.decay_hidden, &s.w, Epilogue::bias(&self.w0, Decay7))?;
        // 4. a = σ(a0 + (x_a·a1)·a2)
        linear(rec, "a1", &self.a1, xa, &s.rate_hidden, Epilogue::PLAIN)?;
        linear(rec, "a2", &self.a2, &s.rate_hidden, &s.a, Epilogue::bias(&self.a0, Sigmoid))?;
        // 5. v = v + (v_first − v) ⊙ σ(v0 + (x_v·v1)·v2), except in layer 0
        let v = match &self.value_residual {
            ValueResidual::First => &s.v_first,
            ValueResidual::Mix { v0, v1, v2 } => {
                linear(rec, "v1", v1, xv, &s.value_hidden, Epilogue::PLAIN)?;
                linear(rec, "v2", v2, &s.value_hidden, &s.v_mix, Epilogue::bias(v0, Sigmoid))?;
                kernels::lerp(rec, &label("value_residual"), &s.v_own, &s.v_first, &s.v_mix, &s.v)?;
                &s.v
            }
        };
        // 6. g = σ(x_g·g1)·g2
        linear(rec, "g1", &self.g1, xg, &s.gate_hidden, Epilogue::then(Sigmoid))?;
        linear(rec, "g2", &self.g2, &s.gate_hidden, &s.g, Epilogue::PLAIN)?;
        // 7. kk = normalize(k ⊙ k_k) per head; k = k ⊙ (1 + (a − 1) ⊙ k_a)
        let keys = KeyInputs { k: &s.k, a: &s.a, k_k: &self.k_k, k_a: &self.k_a };
        kernels::wkv7_keys(rec, &label("keys"), heads, keys, &s.kk, &s.k_shaped)?;
        // 8. S ← S·diag(w) + (S·(−kk))·(kk⊙a)ᵀ + v·kᵀ;  y = S·r
        let wkv = Wkv7Inputs { r: &s.r, w: &s.w, k: &s.k_shaped, v, kk: &s.kk, a: &s.a };
        kernels::wkv7(rec, &label("wkv"), heads, &state.wkv, wkv, &s.y)?;
        // 9. y = (GroupNorm(y) + (Σ r⊙k⊙r_k)·v) ⊙ g
        let bonus_gate = BonusGate { r: &s.r, k: &s.k_shaped, v, r_k: &self.r_k, g: &s.g };
        kernels::group_norm_bonus_gate(rec, &label("ln_x"), heads, &s.y, &self.ln_x, bonus_gate, &s.y_gated)?;
        // 10. x += W_o·y
        linear(rec, "output", &self.output, &s.y_gated, x, Epilogue::ACCUMULATE)
    }
}
