//! RWKV-5 and RWKV-6's recurrence: a matrix state per head, decayed per key channel; and, for
//! one token per sequence, the recurrence with the group norm (and gate) after it in one kernel.

use super::norm::GroupNormParams;
use super::sequences::SEQUENCE_SIZES;
use super::sequences::{HeadWalk, WKV_BINDINGS};
use super::{expect_shape, split_heads, to_u32, wgsl, Recorder};
use crate::error::{Error, Result};
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, GpuTensor, KernelSource};

const WKV5: KernelSource = KernelSource {
    name: "wkv5",
    parts: &[wgsl::SEQUENCES, wgsl::SEQUENCES_BINDING, wgsl::WKV_BINDINGS, wgsl::WKV5],
    sizes: SEQUENCE_SIZES,
};

const WKV5_ONE: KernelSource = KernelSource {
    name: "wkv5_one",
    parts: &[
        wgsl::SEQUENCES,
        wgsl::SEQUENCES_BINDING,
        wgsl::WKV_BINDINGS,
        wgsl::REDUCE,
        wgsl::GROUP_NORM_PARAMS,
        wgsl::WKV5_ONE,
    ],
    sizes: SEQUENCE_SIZES,
};
/// [`WKV_BINDINGS`], then the group norm's weights and the gate.
const WKV5_ONE_BINDINGS: &[Access] =
    &[Uniform, Uniform, ReadWrite, Read, Read, Read, Read, Read, ReadWrite, Read, Read];
/// The largest head [`wkv5_one`] takes: one thread per channel of a 64-thread workgroup.
pub const WKV5_ONE_MAX_HEAD: usize = 64;

/// The inputs of [`wkv5`]: `r`, `k`, `v` are [rows, C].
pub struct Wkv5Inputs<'a> {
    pub r: &'a GpuTensor,
    pub k: &'a GpuTensor,
    pub v: &'a GpuTensor,
    /// Decay in (0, 1) per key channel: a weight [1, C] (RWKV-5) or per token [rows, C] (RWKV-6).
    pub w: &'a GpuTensor,
    /// Bonus of the current token, [1, C].
    pub u: &'a GpuTensor,
}

/// Records every row's output and the update of each sequence's `state` slot ([slots, H·N·N],
/// indexed [head, key, value]).
pub fn wkv5(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    state: &GpuTensor,
    inputs: Wkv5Inputs,
    y: &GpuTensor,
) -> Result<()> {
    let Wkv5Inputs { r, k, v, w, u } = inputs;
    let (rows, c) = (r.rows, r.cols);
    for (name, operand) in [("k", k), ("v", v), ("y", y)] {
        expect_shape(label, name, operand, rows, c)?;
    }
    expect_shape(label, "u", u, 1, c)?;
    // With one row, a per-token decay and a weight are the same thing.
    let per_row = if w.rows == 1 {
        expect_shape(label, "w", w, 1, c)?;
        false
    } else {
        expect_shape(label, "w", w, rows, c)?;
        true
    };
    let (heads, head_size) = split_heads(label, heads, c)?;
    expect_shape(label, "state", state, state.rows, c * head_size as usize)?;
    let constants = [("DECAY_PER_ROW", f64::from(per_row)), ("HEAD_SIZE", f64::from(head_size))];
    let pipeline = rec.gpu.pipeline(&WKV5, "wkv5", WKV_BINDINGS, &constants)?;
    let params = |window| HeadWalk { heads, head_size, window };
    let storage =
        [state.binding(), r.binding(), k.binding(), v.binding(), w.binding(), u.binding(), y.binding()];
    // One pass over the head's keys per token.
    let walk = (rows, head_size as usize);
    rec.record_walk(&pipeline, label, walk, params, &storage, to_u32(label, c.div_ceil(64))?)
}

/// The group norm after [`wkv5_one`]'s recurrence: `norm` = [ln_x weight; ln_x bias], [2, C],
/// and RWKV-5.1 and later's gate, [rows, C].
pub struct GroupNormGate<'a> {
    pub norm: &'a GpuTensor,
    pub gate: Option<&'a GpuTensor>,
}

/// Records [`wkv5`] and then [`super::group_norm`] of its output into `out`, for a step of one
/// token per sequence, in one dispatch (a workgroup per head and sequence). Heads of at most
/// [`WKV5_ONE_MAX_HEAD`].
pub fn wkv5_one(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    (state, inputs): (&GpuTensor, Wkv5Inputs),
    GroupNormGate { norm, gate }: GroupNormGate,
    out: &GpuTensor,
) -> Result<()> {
    let Wkv5Inputs { r, k, v, w, u } = inputs;
    let (rows, c) = (r.rows, r.cols);
    let sequences = rec.sequences(label)?.count;
    if sequences != rows {
        return Err(Error::InvalidArgument(format!("{label}: {rows} rows for {sequences} sequences")));
    }
    for (name, operand) in [("k", k), ("v", v), ("out", out)] {
        expect_shape(label, name, operand, rows, c)?;
    }
    expect_shape(label, "u", u, 1, c)?;
    expect_shape(label, "norm", norm, 2, c)?;
    if let Some(gate) = gate {
        expect_shape(label, "gate", gate, rows, c)?;
    }
    let per_row = w.rows != 1 || rows == 1;
    expect_shape(label, "w", w, if per_row { rows } else { 1 }, c)?;
    let (heads, head_size) = split_heads(label, heads, c)?;
    if head_size as usize > WKV5_ONE_MAX_HEAD {
        return Err(Error::InvalidArgument(format!(
            "{label}: heads of {head_size} channels, more than the {WKV5_ONE_MAX_HEAD} this kernel takes"
        )));
    }
    expect_shape(label, "state", state, state.rows, c * head_size as usize)?;
    let constants = [
        ("DECAY_PER_ROW", f64::from(per_row)),
        ("GATED", f64::from(gate.is_some())),
        ("HEAD_SIZE", f64::from(head_size)),
    ];
    let pipeline = rec.gpu.pipeline(&WKV5_ONE, "wkv5_one", WKV5_ONE_BINDINGS, &constants)?;
    let params = GroupNormParams::new(heads, head_size);
    let storage = [
        state.binding(),
        r.binding(),
        k.binding(),
        v.binding(),
        w.binding(),
        u.binding(),
        out.binding(),
        norm.binding(),
        // Without a gate, a binding never read.
        gate.unwrap_or(norm).binding(),
    ];
    rec.record(&pipeline, label, &params, &storage, [heads, to_u32(label, rows)?, 1])
}

/// CPU reference of [`wkv5`] for one sequence (`r`, `k`, `v` its rows in order), as the official
/// `att_one_v5`: `y = r·(u⊙(k vᵀ) + S)`, then `S ← k vᵀ + w⊙S`. `w` is one row or one per row.
/// Updates `state` in place.
pub fn wkv5_ref(
    heads: usize,
    state: &mut [f32],
    r: &[f32],
    k: &[f32],
    v: &[f32],
    w: &[f32],
    u: &[f32],
) -> Vec<f32> {
    let c = u.len();
    let n = c / heads;
    let mut y = vec![0.0f32; r.len()];
    for row in 0..r.len() / c {
        let at = |channel: usize| row * c + channel;
        let w_row = if w.len() == c { w } else { &w[row * c..(row + 1) * c] };
        for h in 0..heads {
            for j in 0..n {
                let mut out = 0.0f64;
                for i in 0..n {
                    let ch = h * n + i;
                    let s_at = (h * n + i) * n + j;
                    let kv = f64::from(k[at(ch)]) * f64::from(v[at(h * n + j)]);
                    let s = f64::from(state[s_at]);
                    out += f64::from(r[at(ch)]) * (f64::from(u[ch]) * kv + s);
                    state[s_at] = (kv + f64::from(w_row[ch]) * s) as f32;
                }
                y[at(h * n + j)] = out as f32;
            }
        }
    }
    y
}
