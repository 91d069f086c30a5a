//! RWKV-5 and RWKV-6's recurrence: a matrix state per head, decayed per key channel.

use super::sequences::SEQUENCE_SIZES;
use super::sequences::{HeadWalk, WKV_BINDINGS};
use super::{expect_shape, split_heads, to_u32, wgsl, Recorder};
use crate::error::Result;
use crate::gpu::{GpuTensor, KernelSource};

const WKV5: KernelSource = KernelSource {
    name: "wkv5",
    parts: &[wgsl::SEQUENCES, wgsl::SEQUENCES_BINDING, wgsl::WKV_BINDINGS, wgsl::WKV5],
    sizes: SEQUENCE_SIZES,
};

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
