//! RWKV-4's recurrence: a per-channel weighted average kept in log space.

use super::{expect_len, to_u32, wgsl, Recorder};
use crate::error::Result;
use crate::gpu::{Access, GpuVector, KernelSource};

const WKV4: KernelSource = KernelSource { name: "wkv4", parts: &[wgsl::WKV4] };
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

/// Where the RWKV-4 state starts: aa = bb = 0 and pp = −1e30 (so the first token's weight wins).
pub const WKV4_INITIAL_PP: f32 = -1e30;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    padding: [u32; 3],
}

/// The per-channel inputs of [`wkv4`].
pub struct Wkv4Inputs<'a> {
    /// Receptance after the sigmoid.
    pub r: &'a GpuVector,
    pub k: &'a GpuVector,
    pub v: &'a GpuVector,
    /// −exp(time_decay).
    pub w: &'a GpuVector,
    /// time_first.
    pub u: &'a GpuVector,
}

/// Records `y = r ⊙ wkv` and the update of `state` = [aa; bb; pp].
pub fn wkv4(
    rec: &mut Recorder,
    label: &str,
    state: &GpuVector,
    inputs: Wkv4Inputs,
    y: &GpuVector,
) -> Result<()> {
    let Wkv4Inputs { r, k, v, w, u } = inputs;
    let len = r.len;
    for (name, operand) in [("k", k), ("v", v), ("w", w), ("u", u), ("y", y)] {
        expect_len(label, name, operand.len, len)?;
    }
    expect_len(label, "state", state.len, 3 * len)?;
    let pipeline = rec.gpu.pipeline(&WKV4, "wkv4", BINDINGS, &[])?;
    let params = Params { len: to_u32(label, len)?, padding: [0; 3] };
    let storage =
        [state.binding(), r.binding(), k.binding(), v.binding(), w.binding(), u.binding(), y.binding()];
    let workgroups = rec.gpu.grid(to_u32(label, len.div_ceil(64))?);
    rec.record(&pipeline, label, &params, &storage, workgroups)
}

/// CPU reference of [`wkv4`], in the official order; updates `state` = [aa; bb; pp] in place.
pub fn wkv4_ref(state: &mut [f32], r: &[f32], k: &[f32], v: &[f32], w: &[f32], u: &[f32]) -> Vec<f32> {
    let n = r.len();
    (0..n)
        .map(|c| {
            let (aa, bb, pp) = (f64::from(state[c]), f64::from(state[n + c]), f64::from(state[2 * n + c]));
            let (kc, vc) = (f64::from(k[c]), f64::from(v[c]));
            let bonus = f64::from(u[c]) + kc;
            let p = pp.max(bonus);
            let (e1, e2) = ((pp - p).exp(), (bonus - p).exp());
            let out = f64::from(r[c]) * (e1 * aa + e2 * vc) / (e1 * bb + e2);
            let decayed = f64::from(w[c]) + pp;
            let q = decayed.max(kc);
            let (f1, f2) = ((decayed - q).exp(), (kc - q).exp());
            state[c] = (f1 * aa + f2 * vc) as f32;
            state[n + c] = (f1 * bb + f2) as f32;
            state[2 * n + c] = q as f32;
            out as f32
        })
        .collect()
}
