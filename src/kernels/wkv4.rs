//! RWKV-4's recurrence: a per-channel weighted average kept in log space.

use super::sequences::SEQUENCE_SIZES;
use super::sequences::WKV_BINDINGS;
use super::{expect_shape, to_u32, wgsl, Recorder, Window};
use crate::error::Result;
use crate::gpu::{GpuTensor, KernelSource};

const WKV4: KernelSource = KernelSource {
    name: "wkv4",
    parts: &[wgsl::SEQUENCES, wgsl::SEQUENCES_BINDING, wgsl::WKV_BINDINGS, wgsl::WKV4],
    sizes: SEQUENCE_SIZES,
};

/// Where the RWKV-4 state starts: aa = bb = 0 and pp = −1e30 (so the first token's weight wins).
pub const WKV4_INITIAL_PP: f32 = -1e30;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    padding: u32,
    window: Window,
}

/// The inputs of [`wkv4`]: `r`, `k`, `v` are [rows, C], `w` and `u` [1, C].
pub struct Wkv4Inputs<'a> {
    /// Receptance after the sigmoid.
    pub r: &'a GpuTensor,
    pub k: &'a GpuTensor,
    pub v: &'a GpuTensor,
    /// −exp(time_decay).
    pub w: &'a GpuTensor,
    /// time_first.
    pub u: &'a GpuTensor,
}

/// Records `y = r ⊙ wkv` for every row and the update of each sequence's `state` slot, a row of
/// [aa; bb; pp] ([slots, 3C]).
pub fn wkv4(
    rec: &mut Recorder,
    label: &str,
    state: &GpuTensor,
    inputs: Wkv4Inputs,
    y: &GpuTensor,
) -> Result<()> {
    let Wkv4Inputs { r, k, v, w, u } = inputs;
    let (rows, c) = (r.rows, r.cols);
    for (name, operand) in [("k", k), ("v", v), ("y", y)] {
        expect_shape(label, name, operand, rows, c)?;
    }
    expect_shape(label, "w", w, 1, c)?;
    expect_shape(label, "u", u, 1, c)?;
    expect_shape(label, "state", state, state.rows, 3 * c)?;
    let pipeline = rec.gpu.pipeline(&WKV4, "wkv4", WKV_BINDINGS, &[])?;
    let len = to_u32(label, c)?;
    let params = |window| Params { len, padding: 0, window };
    let storage =
        [state.binding(), r.binding(), k.binding(), v.binding(), w.binding(), u.binding(), y.binding()];
    // No loop inside the token loop.
    rec.record_walk(&pipeline, label, (rows, 0), params, &storage, to_u32(label, c.div_ceil(64))?)
}

/// CPU reference of [`wkv4`] for one sequence (`r`, `k`, `v` its rows in order), in the official
/// order; updates `state` = [aa; bb; pp] in place.
pub fn wkv4_ref(state: &mut [f32], r: &[f32], k: &[f32], v: &[f32], w: &[f32], u: &[f32]) -> Vec<f32> {
    let n = w.len();
    let mut y = Vec::with_capacity(r.len());
    for row in 0..r.len() / n {
        for c in 0..n {
            let at = row * n + c;
            let (aa, bb, pp) = (f64::from(state[c]), f64::from(state[n + c]), f64::from(state[2 * n + c]));
            let (kc, vc) = (f64::from(k[at]), f64::from(v[at]));
            let bonus = f64::from(u[c]) + kc;
            let p = pp.max(bonus);
            let (e1, e2) = ((pp - p).exp(), (bonus - p).exp());
            y.push((f64::from(r[at]) * (e1 * aa + e2 * vc) / (e1 * bb + e2)) as f32);
            let decayed = f64::from(w[c]) + pp;
            let q = decayed.max(kc);
            let (f1, f2) = ((decayed - q).exp(), (kc - q).exp());
            state[c] = (f1 * aa + f2 * vc) as f32;
            state[n + c] = (f1 * bb + f2) as f32;
            state[2 * n + c] = q as f32;
        }
    }
    y
}
