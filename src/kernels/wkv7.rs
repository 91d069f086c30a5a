//! RWKV-7's recurrence: key shaping, then the state update and readout.

use super::{expect_len, split_heads, to_u32, wgsl, Recorder};
use crate::error::Result;
use crate::gpu::{Access, GpuVector, KernelSource};

const KEYS: KernelSource = KernelSource { name: "wkv7_keys", parts: &[wgsl::REDUCE, wgsl::WKV7_KEYS] };
const KEYS_BINDINGS: &[Access] = &[
    Access::Uniform,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::ReadWrite,
    Access::ReadWrite,
];

const WKV7: KernelSource = KernelSource { name: "wkv7", parts: &[wgsl::WKV7] };
const WKV7_BINDINGS: &[Access] = &[
    Access::Uniform,
    Access::ReadWrite,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::ReadWrite,
];

/// Epsilon of torch's `F.normalize`, which the official code uses for `kk`.
pub const L2_EPS: f64 = 1e-12;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct HeadParams {
    heads: u32,
    head_size: u32,
    padding: [u32; 2],
}

fn head_params(label: &str, heads: usize, channels: usize) -> Result<HeadParams> {
    let (heads, head_size) = split_heads(label, heads, channels)?;
    Ok(HeadParams { heads, head_size, padding: [0; 2] })
}

/// The per-channel inputs of [`wkv7_keys`].
pub struct KeyInputs<'a> {
    pub k: &'a GpuVector,
    pub a: &'a GpuVector,
    pub k_k: &'a GpuVector,
    pub k_a: &'a GpuVector,
}

/// Records `kk = normalize_per_head(k ⊙ k_k)` and `k_out = k ⊙ (1 + (a − 1) ⊙ k_a)`.
pub fn wkv7_keys(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    inputs: KeyInputs,
    kk: &GpuVector,
    k_out: &GpuVector,
) -> Result<()> {
    let channels = inputs.k.len;
    for (name, operand) in
        [("a", inputs.a), ("k_k", inputs.k_k), ("k_a", inputs.k_a), ("kk", kk), ("k_out", k_out)]
    {
        expect_len(label, name, operand.len, channels)?;
    }
    let params = head_params(label, heads, channels)?;
    let pipeline = rec.gpu.pipeline(&KEYS, "wkv7_keys", KEYS_BINDINGS, &[])?;
    let storage = [
        inputs.k.binding(),
        inputs.a.binding(),
        inputs.k_k.binding(),
        inputs.k_a.binding(),
        kk.binding(),
        k_out.binding(),
    ];
    rec.record(&pipeline, label, &params, &storage, [params.heads, 1, 1])
}

/// CPU reference of [`wkv7_keys`]: `(kk, k_out)`.
pub fn wkv7_keys_ref(heads: usize, k: &[f32], a: &[f32], k_k: &[f32], k_a: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let n = k.len() / heads;
    let shaped: Vec<f64> = k.iter().zip(k_k).map(|(&k, &kk)| f64::from(k) * f64::from(kk)).collect();
    let mut kk = Vec::with_capacity(k.len());
    for head in shaped.chunks_exact(n) {
        let norm = head.iter().map(|x| x * x).sum::<f64>().sqrt().max(L2_EPS);
        kk.extend(head.iter().map(|x| (x / norm) as f32));
    }
    let k_out = (0..k.len()).map(|i| k[i] * (1.0 + (a[i] - 1.0) * k_a[i])).collect();
    (kk, k_out)
}

/// The per-channel inputs of [`wkv7`].
pub struct Wkv7Inputs<'a> {
    pub r: &'a GpuVector,
    pub w: &'a GpuVector,
    pub k: &'a GpuVector,
    pub v: &'a GpuVector,
    pub kk: &'a GpuVector,
    pub a: &'a GpuVector,
}

/// Records one step of the RWKV-7 recurrence on `state` ([heads, value, key]) and its readout `y`.
pub fn wkv7(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    state: &GpuVector,
    inputs: Wkv7Inputs,
    y: &GpuVector,
) -> Result<()> {
    let channels = inputs.r.len;
    let Wkv7Inputs { r, w, k, v, kk, a } = inputs;
    for (name, operand) in [("w", w), ("k", k), ("v", v), ("kk", kk), ("a", a), ("y", y)] {
        expect_len(label, name, operand.len, channels)?;
    }
    let params = head_params(label, heads, channels)?;
    expect_len(label, "state", state.len, channels * params.head_size as usize)?;
    let pipeline = rec.gpu.pipeline(&WKV7, "wkv7", WKV7_BINDINGS, &[])?;
    let storage = [
        state.binding(),
        r.binding(),
        w.binding(),
        k.binding(),
        v.binding(),
        kk.binding(),
        a.binding(),
        y.binding(),
    ];
    let workgroups = rec.gpu.grid(to_u32(label, channels.div_ceil(64))?);
    rec.record(&pipeline, label, &params, &storage, workgroups)
}

/// CPU reference of [`wkv7`], in the official order: `sa = S·(−kk)` from the old state, then
/// `S ← S·diag(w) + sa·(kk⊙a)ᵀ + v·kᵀ`, then `y = S·r`. Updates `state` in place.
#[allow(clippy::too_many_arguments)]
pub fn wkv7_ref(
    heads: usize,
    state: &mut [f32],
    r: &[f32],
    w: &[f32],
    k: &[f32],
    v: &[f32],
    kk: &[f32],
    a: &[f32],
) -> Vec<f32> {
    let n = r.len() / heads;
    let mut y = vec![0.0; r.len()];
    for h in 0..heads {
        for i in 0..n {
            let row = &mut state[(h * n + i) * n..(h * n + i + 1) * n];
            let head = |x: &[f32], j: usize| f64::from(x[h * n + j]);
            let sa: f64 = (0..n).map(|j| -f64::from(row[j]) * head(kk, j)).sum();
            let v_i = head(v, i);
            let mut out = 0.0;
            for (j, s) in row.iter_mut().enumerate() {
                let updated = f64::from(*s) * head(w, j) + sa * head(kk, j) * head(a, j) + v_i * head(k, j);
                *s = updated as f32;
                out += updated * head(r, j);
            }
            y[h * n + i] = out as f32;
        }
    }
    y
}
