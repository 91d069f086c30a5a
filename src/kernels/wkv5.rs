//! RWKV-5 and RWKV-6's recurrence: a matrix state per head, decayed per key channel.

use super::{expect_len, split_heads, to_u32, wgsl, Recorder};
use crate::error::Result;
use crate::gpu::{Access, GpuVector, KernelSource};

const WKV5: KernelSource = KernelSource { name: "wkv5", parts: &[wgsl::WKV5] };
const BINDINGS: &[Access] = &[
    Access::Uniform,
    Access::ReadWrite,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::ReadWrite,
];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    heads: u32,
    head_size: u32,
    padding: [u32; 2],
}

/// The per-channel inputs of [`wkv5`].
pub struct Wkv5Inputs<'a> {
    pub r: &'a GpuVector,
    pub k: &'a GpuVector,
    pub v: &'a GpuVector,
    /// Decay in (0, 1), per key channel.
    pub w: &'a GpuVector,
    /// Bonus of the current token, per key channel.
    pub u: &'a GpuVector,
}

/// Records one step on `state` ([heads, key, value]) and its readout `y`.
pub fn wkv5(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    state: &GpuVector,
    inputs: Wkv5Inputs,
    y: &GpuVector,
) -> Result<()> {
    let Wkv5Inputs { r, k, v, w, u } = inputs;
    let channels = r.len;
    for (name, operand) in [("k", k), ("v", v), ("w", w), ("u", u), ("y", y)] {
        expect_len(label, name, operand.len, channels)?;
    }
    let (heads, head_size) = split_heads(label, heads, channels)?;
    expect_len(label, "state", state.len, channels * head_size as usize)?;
    let pipeline = rec.gpu.pipeline(&WKV5, "wkv5", BINDINGS, &[])?;
    let params = Params { heads, head_size, padding: [0; 2] };
    let storage =
        [state.binding(), r.binding(), k.binding(), v.binding(), w.binding(), u.binding(), y.binding()];
    let workgroups = rec.gpu.grid(to_u32(label, channels.div_ceil(64))?);
    rec.record(&pipeline, label, &params, &storage, workgroups)
}

/// CPU reference of [`wkv5`], as the official `att_one_v5`: `y = r·(u⊙(k vᵀ) + S)`, then
/// `S ← k vᵀ + w⊙S`. Updates `state` in place.
pub fn wkv5_ref(
    heads: usize,
    state: &mut [f32],
    r: &[f32],
    k: &[f32],
    v: &[f32],
    w: &[f32],
    u: &[f32],
) -> Vec<f32> {
    let n = r.len() / heads;
    let mut y = vec![0.0f64; r.len()];
    for h in 0..heads {
        for i in 0..n {
            let c = h * n + i;
            for j in 0..n {
                let at = (h * n + i) * n + j;
                let kv = f64::from(k[c]) * f64::from(v[h * n + j]);
                let s = f64::from(state[at]);
                y[h * n + j] += f64::from(r[c]) * (f64::from(u[c]) * kv + s);
                state[at] = (kv + f64::from(w[c]) * s) as f32;
            }
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}
