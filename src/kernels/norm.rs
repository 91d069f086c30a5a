//! Normalisations: layer norm over a whole vector, and RWKV-7's per-head group norm fused with
//! its bonus term and output gate.

use super::{expect_len, split_heads, to_u32, wgsl, Recorder};
use crate::error::Result;
use crate::gpu::{Access, GpuVector, KernelSource};

/// Layer norm epsilon of every RWKV version (torch's default).
pub const LN_EPS: f32 = 1e-5;
/// Group norm epsilon of `ln_x` in RWKV-5, 6 and 7.
pub const GN_EPS: f32 = 64e-5;

const LAYER_NORM: KernelSource =
    KernelSource { name: "layer_norm", parts: &[wgsl::REDUCE, wgsl::LAYER_NORM] };
const LAYER_NORM_BINDINGS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite];

const GROUP_NORM: KernelSource =
    KernelSource { name: "group_norm", parts: &[wgsl::REDUCE, wgsl::GROUP_NORM] };
const GROUP_NORM_PLAIN_BINDINGS: &[Access] =
    &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite];
const GROUP_NORM_GATE_BINDINGS: &[Access] =
    &[Access::Uniform, Access::Read, Access::Read, Access::Read, Access::ReadWrite];
const GROUP_NORM_BONUS_BINDINGS: &[Access] = &[
    Access::Uniform,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::ReadWrite,
];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LayerNormParams {
    len: u32,
    rows: u32,
    eps: f32,
    padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GroupNormParams {
    heads: u32,
    head_size: u32,
    eps: f32,
    padding: u32,
}

/// Records `out = LayerNorm(x)` with `norm` = [weight; bias] (`2 × len` values).
pub fn layer_norm(
    rec: &mut Recorder,
    label: &str,
    x: &GpuVector,
    norm: &GpuVector,
    out: &GpuVector,
) -> Result<()> {
    expect_len(label, "norm", norm.len, 2 * x.len)?;
    expect_len(label, "out", out.len, x.len)?;
    let pipeline = rec.gpu.pipeline(&LAYER_NORM, "layer_norm", LAYER_NORM_BINDINGS, &[])?;
    let params = LayerNormParams { len: to_u32(label, x.len)?, rows: 1, eps: LN_EPS, padding: 0 };
    rec.record(&pipeline, label, &params, &[x.binding(), norm.binding(), out.binding()], [1, 1, 1])
}

/// CPU reference of [`layer_norm`].
pub fn layer_norm_ref(x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    normalize(x, f64::from(LN_EPS))
        .zip(weight.iter().zip(bias))
        .map(|(n, (&w, &b))| (n * f64::from(w) + f64::from(b)) as f32)
        .collect()
}

/// (x − mean) / sqrt(var + eps), in f64.
fn normalize(x: &[f32], eps: f64) -> impl Iterator<Item = f64> + '_ {
    let len = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / len;
    let var = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / len;
    let inv_std = 1.0 / (var + eps).sqrt();
    x.iter().map(move |&v| (f64::from(v) - mean) * inv_std)
}

/// Records `out = GroupNorm_heads(y)`, times `gate` if given, with `norm` = [ln_x weight;
/// ln_x bias].
pub fn group_norm(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    y: &GpuVector,
    norm: &GpuVector,
    gate: Option<&GpuVector>,
    out: &GpuVector,
) -> Result<()> {
    let channels = y.len;
    let (heads, head_size) = split_heads(label, heads, channels)?;
    expect_len(label, "norm", norm.len, 2 * channels)?;
    expect_len(label, "out", out.len, channels)?;
    let params = GroupNormParams { heads, head_size, eps: GN_EPS, padding: 0 };
    let mut storage = vec![y.binding(), norm.binding()];
    let pipeline = match gate {
        None => rec.gpu.pipeline(&GROUP_NORM, "group_norm", GROUP_NORM_PLAIN_BINDINGS, &[])?,
        Some(gate) => {
            expect_len(label, "gate", gate.len, channels)?;
            storage.push(gate.binding());
            rec.gpu.pipeline(&GROUP_NORM, "group_norm_gate", GROUP_NORM_GATE_BINDINGS, &[])?
        }
    };
    storage.push(out.binding());
    rec.record(&pipeline, label, &params, &storage, [heads, 1, 1])
}

/// CPU reference of [`group_norm`]; `ln_x` = (weight, bias).
pub fn group_norm_ref(heads: usize, y: &[f32], ln_x: (&[f32], &[f32]), gate: Option<&[f32]>) -> Vec<f32> {
    let n = y.len() / heads;
    let mut out = Vec::with_capacity(y.len());
    for (h, head) in y.chunks_exact(n).enumerate() {
        for (j, normed) in normalize(head, f64::from(GN_EPS)).enumerate() {
            let c = h * n + j;
            let value = normed * f64::from(ln_x.0[c]) + f64::from(ln_x.1[c]);
            out.push((value * gate.map_or(1.0, |g| f64::from(g[c]))) as f32);
        }
    }
    out
}

/// The operands of RWKV-7's time-mix output stage.
pub struct BonusGate<'a> {
    pub r: &'a GpuVector,
    pub k: &'a GpuVector,
    pub v: &'a GpuVector,
    pub r_k: &'a GpuVector,
    pub g: &'a GpuVector,
}

/// Records `out = (GroupNorm_heads(y) + (Σ r·k·r_k)·v) ⊙ g`, one group per head, with
/// `norm` = [ln_x weight; ln_x bias].
pub fn group_norm_bonus_gate(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    y: &GpuVector,
    norm: &GpuVector,
    operands: BonusGate,
    out: &GpuVector,
) -> Result<()> {
    let channels = y.len;
    let (heads, head_size) = split_heads(label, heads, channels)?;
    expect_len(label, "norm", norm.len, 2 * channels)?;
    for (name, operand) in [
        ("r", operands.r),
        ("k", operands.k),
        ("v", operands.v),
        ("r_k", operands.r_k),
        ("g", operands.g),
        ("out", out),
    ] {
        expect_len(label, name, operand.len, channels)?;
    }
    let pipeline = rec.gpu.pipeline(&GROUP_NORM, "group_norm_bonus_gate", GROUP_NORM_BONUS_BINDINGS, &[])?;
    let params = GroupNormParams { heads, head_size, eps: GN_EPS, padding: 0 };
    let storage = [
        y.binding(),
        norm.binding(),
        operands.r.binding(),
        operands.k.binding(),
        operands.v.binding(),
        operands.r_k.binding(),
        operands.g.binding(),
        out.binding(),
    ];
    rec.record(&pipeline, label, &params, &storage, [heads, 1, 1])
}

/// CPU reference of [`group_norm_bonus_gate`]; `ln_x` = (weight, bias).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bonus_gate_ref(
    heads: usize,
    y: &[f32],
    ln_x: (&[f32], &[f32]),
    r: &[f32],
    k: &[f32],
    v: &[f32],
    r_k: &[f32],
    g: &[f32],
) -> Vec<f32> {
    let n = y.len() / heads;
    let normed = group_norm_ref(heads, y, ln_x, None);
    let bonus: Vec<f64> = (0..heads)
        .map(|h| (h * n..(h + 1) * n).map(|c| f64::from(r[c]) * f64::from(k[c]) * f64::from(r_k[c])).sum())
        .collect();
    (0..y.len())
        .map(|c| ((f64::from(normed[c]) + bonus[c / n] * f64::from(v[c])) * f64::from(g[c])) as f32)
        .collect()
}
