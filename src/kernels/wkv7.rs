//! RWKV-7's recurrence: key shaping, then the state update and readout.

use super::sequences::HeadWalk;
use super::sequences::SEQUENCE_SIZES;
use super::{expect_shape, split_heads, to_u32, wgsl, Recorder};
use crate::error::Result;
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, GpuTensor, KernelSource};

const KEYS: KernelSource =
    KernelSource { name: "wkv7_keys", parts: &[wgsl::REDUCE, wgsl::WKV7_KEYS], sizes: &[] };
const KEYS_BINDINGS: &[Access] = &[Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite];

const WKV7: KernelSource = KernelSource {
    name: "wkv7",
    parts: &[wgsl::SEQUENCES, wgsl::SEQUENCES_BINDING, wgsl::WKV7_STEP, wgsl::WKV7],
    sizes: SEQUENCE_SIZES,
};
const WKV7_BINDINGS: &[Access] =
    &[Uniform, Uniform, ReadWrite, Read, Read, Read, Read, Read, Read, ReadWrite];

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

/// The inputs of [`wkv7_keys`]: `k`, `a` are [rows, C], `k_k`, `k_a` weights [1, C].
pub struct KeyInputs<'a> {
    pub k: &'a GpuTensor,
    pub a: &'a GpuTensor,
    pub k_k: &'a GpuTensor,
    pub k_a: &'a GpuTensor,
}

/// Records `kk = normalize_per_head(k ⊙ k_k)` and `k_out = k ⊙ (1 + (a − 1) ⊙ k_a)` per row.
pub fn wkv7_keys(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    inputs: KeyInputs,
    kk: &GpuTensor,
    k_out: &GpuTensor,
) -> Result<()> {
    let (rows, c) = (inputs.k.rows, inputs.k.cols);
    for (name, operand) in [("a", inputs.a), ("kk", kk), ("k_out", k_out)] {
        expect_shape(label, name, operand, rows, c)?;
    }
    expect_shape(label, "k_k", inputs.k_k, 1, c)?;
    expect_shape(label, "k_a", inputs.k_a, 1, c)?;
    let params = head_params(label, heads, c)?;
    let pipeline = rec.gpu.pipeline(&KEYS, "wkv7_keys", KEYS_BINDINGS, &[("L2_EPS", L2_EPS)])?;
    let storage = [
        inputs.k.binding(),
        inputs.a.binding(),
        inputs.k_k.binding(),
        inputs.k_a.binding(),
        kk.binding(),
        k_out.binding(),
    ];
    rec.record(&pipeline, label, &params, &storage, [params.heads, to_u32(label, rows)?, 1])
}

/// CPU reference of [`wkv7_keys`] for rows of `k_k.len()` channels: `(kk, k_out)`.
pub fn wkv7_keys_ref(heads: usize, k: &[f32], a: &[f32], k_k: &[f32], k_a: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let c = k_k.len();
    let n = c / heads;
    let shaped: Vec<f64> = k.iter().enumerate().map(|(i, &k)| f64::from(k) * f64::from(k_k[i % c])).collect();
    let mut kk = Vec::with_capacity(k.len());
    for head in shaped.chunks_exact(n) {
        let norm = head.iter().map(|x| x * x).sum::<f64>().sqrt().max(L2_EPS);
        kk.extend(head.iter().map(|x| (x / norm) as f32));
    }
    let k_out = (0..k.len()).map(|i| k[i] * (1.0 + (a[i] - 1.0) * k_a[i % c])).collect();
    (kk, k_out)
}

/// The inputs of [`wkv7`], each [rows, C].
pub struct Wkv7Inputs<'a> {
    pub r: &'a GpuTensor,
    pub w: &'a GpuTensor,
    pub k: &'a GpuTensor,
    pub v: &'a GpuTensor,
    pub kk: &'a GpuTensor,
    pub a: &'a GpuTensor,
}

impl Wkv7Inputs<'_> {
    /// Checks that every input, the output `y` and the `state` slots fit [rows, C] in `heads`
    /// heads; returns (heads, head size).
    pub(super) fn check(
        &self,
        label: &str,
        heads: usize,
        state: &GpuTensor,
        y: &GpuTensor,
    ) -> Result<(u32, u32)> {
        let (rows, c) = (self.r.rows, self.r.cols);
        let operands =
            [("w", self.w), ("k", self.k), ("v", self.v), ("kk", self.kk), ("a", self.a), ("y", y)];
        for (name, operand) in operands {
            expect_shape(label, name, operand, rows, c)?;
        }
        let (heads, head_size) = split_heads(label, heads, c)?;
        expect_shape(label, "state", state, state.rows, c * head_size as usize)?;
        Ok((heads, head_size))
    }
}

/// Records the RWKV-7 recurrence over every sequence's rows, updating each sequence's `state`
/// slot ([slots, H·N·N], indexed [head, value, key]), and the readout `y`.
pub fn wkv7(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    state: &GpuTensor,
    inputs: Wkv7Inputs,
    y: &GpuTensor,
) -> Result<()> {
    let (heads, head_size) = inputs.check(label, heads, state, y)?;
    let Wkv7Inputs { r, w, k, v, kk, a } = inputs;
    let (rows, c) = (r.rows, r.cols);
    let params = |window| HeadWalk { heads, head_size, window };
    let pipeline = rec.gpu.pipeline(&WKV7, "wkv7", WKV7_BINDINGS, &[("HEAD_SIZE", f64::from(head_size))])?;
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
    // Two passes over the head's keys per token.
    let walk = (rows, 2 * head_size as usize);
    rec.record_walk(&pipeline, label, walk, params, &storage, to_u32(label, c.div_ceil(64))?)
}

/// CPU reference of [`wkv7`] for one sequence (inputs its rows in order), in the official order:
/// `sa = S·(−kk)` from the old state, then `S ← S·diag(w) + sa·(kk⊙a)ᵀ + v·kᵀ`, then `y = S·r`.
/// Updates `state` in place.
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
    let n = (state.len() / heads).isqrt();
    let c = heads * n;
    let mut y = vec![0.0; r.len()];
    for row in 0..r.len() / c {
        for h in 0..heads {
            for i in 0..n {
                let s_row = &mut state[(h * n + i) * n..(h * n + i + 1) * n];
                let head = |x: &[f32], j: usize| f64::from(x[row * c + h * n + j]);
                let sa: f64 = (0..n).map(|j| -f64::from(s_row[j]) * head(kk, j)).sum();
                let v_i = head(v, i);
                let mut out = 0.0;
                for (j, s) in s_row.iter_mut().enumerate() {
                    let updated =
                        f64::from(*s) * head(w, j) + sa * head(kk, j) * head(a, j) + v_i * head(k, j);
                    *s = updated as f32;
                    out += updated * head(r, j);
                }
                y[row * c + h * n + i] = out as f32;
            }
        }
    }
    y
}
