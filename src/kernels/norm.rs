//! Normalisations: layer norm over each row, and the per-head group norm of RWKV-5…7's time-mix
//! output, plain, gated, or (RWKV-7) with its bonus term and gate.

use super::{expect_shape, split_heads, to_u32, wgsl, Recorder};
use crate::error::Result;
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, GpuTensor, KernelSource};

/// Layer norm epsilon of every RWKV version (torch's default).
pub const LN_EPS: f32 = 1e-5;
/// Group norm epsilon of `ln_x` in RWKV-5, 6 and 7.
pub const GN_EPS: f32 = 64e-5;

const LAYER_NORM: KernelSource = KernelSource {
    name: "layer_norm",
    parts: &[wgsl::REDUCE, wgsl::ROW_STATS, wgsl::LAYER_NORM],
    sizes: &[],
};
const LAYER_NORM_BINDINGS: &[Access] = &[Uniform, Read, Read, ReadWrite];

const GROUP_NORM: KernelSource = KernelSource {
    name: "group_norm",
    parts: &[wgsl::REDUCE, wgsl::GROUP_NORM_PARAMS, wgsl::GROUP_NORM],
    sizes: &[],
};
const GROUP_NORM_PLAIN_BINDINGS: &[Access] = &[Uniform, Read, Read, ReadWrite];
const GROUP_NORM_GATE_BINDINGS: &[Access] = &[Uniform, Read, Read, Read, ReadWrite];
const GROUP_NORM_BONUS_BINDINGS: &[Access] = &[Uniform, Read, Read, Read, Read, Read, Read, Read, ReadWrite];

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
pub(super) struct GroupNormParams {
    heads: u32,
    head_size: u32,
    eps: f32,
    padding: u32,
}

/// Records `out = LayerNorm(x)` for each row of `x`, with `norm` = [weight; bias] ([2, C]).
pub fn layer_norm(
    rec: &mut Recorder,
    label: &str,
    x: &GpuTensor,
    norm: &GpuTensor,
    out: &GpuTensor,
) -> Result<()> {
    expect_shape(label, "norm", norm, 2, x.cols)?;
    expect_shape(label, "out", out, x.rows, x.cols)?;
    let pipeline = rec.gpu.pipeline(&LAYER_NORM, "layer_norm", LAYER_NORM_BINDINGS, &[])?;
    let rows = to_u32(label, x.rows)?;
    let params = LayerNormParams { len: to_u32(label, x.cols)?, rows, eps: LN_EPS, padding: 0 };
    rec.record(&pipeline, label, &params, &[x.binding(), norm.binding(), out.binding()], [rows, 1, 1])
}

/// CPU reference of [`layer_norm`], for `x` of rows of `weight.len()` values.
pub fn layer_norm_ref(x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    x.chunks_exact(weight.len())
        .flat_map(|row| {
            normalize(row, f64::from(LN_EPS))
                .zip(weight.iter().zip(bias))
                .map(|(n, (&w, &b))| (n * f64::from(w) + f64::from(b)) as f32)
                .collect::<Vec<_>>()
        })
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

fn check_group_norm(
    label: &str,
    heads: usize,
    y: &GpuTensor,
    norm: &GpuTensor,
    out: &GpuTensor,
) -> Result<GroupNormParams> {
    let (heads, head_size) = split_heads(label, heads, y.cols)?;
    expect_shape(label, "norm", norm, 2, y.cols)?;
    expect_shape(label, "out", out, y.rows, y.cols)?;
    Ok(GroupNormParams::new(heads, head_size))
}

impl GroupNormParams {
    pub(super) fn new(heads: u32, head_size: u32) -> GroupNormParams {
        GroupNormParams { heads, head_size, eps: GN_EPS, padding: 0 }
    }
}

/// Records `out = GroupNorm_heads(y)` for each row, times `gate` if given, with `norm` =
/// [ln_x weight; ln_x bias].
pub fn group_norm(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    y: &GpuTensor,
    norm: &GpuTensor,
    gate: Option<&GpuTensor>,
    out: &GpuTensor,
) -> Result<()> {
    let params = check_group_norm(label, heads, y, norm, out)?;
    let mut storage = vec![y.binding(), norm.binding()];
    let pipeline = match gate {
        None => rec.gpu.pipeline(&GROUP_NORM, "group_norm", GROUP_NORM_PLAIN_BINDINGS, &[])?,
        Some(gate) => {
            expect_shape(label, "gate", gate, y.rows, y.cols)?;
            storage.push(gate.binding());
            rec.gpu.pipeline(&GROUP_NORM, "group_norm_gate", GROUP_NORM_GATE_BINDINGS, &[])?
        }
    };
    storage.push(out.binding());
    rec.record(&pipeline, label, &params, &storage, [params.heads, to_u32(label, y.rows)?, 1])
}

/// CPU reference of [`group_norm`]; `ln_x` = (weight, bias).
pub fn group_norm_ref(heads: usize, y: &[f32], ln_x: (&[f32], &[f32]), gate: Option<&[f32]>) -> Vec<f32> {
    let channels = ln_x.0.len();
    let n = channels / heads;
    let mut out = Vec::with_capacity(y.len());
    for (h, head) in y.chunks_exact(n).enumerate() {
        let first = h * n;
        for (j, normed) in normalize(head, f64::from(GN_EPS)).enumerate() {
            let c = (first + j) % channels;
            let value = normed * f64::from(ln_x.0[c]) + f64::from(ln_x.1[c]);
            out.push((value * gate.map_or(1.0, |g| f64::from(g[first + j]))) as f32);
        }
    }
    out
}

/// The operands of RWKV-7's time-mix output stage, each [rows, C] except `r_k` ([C]).
pub struct BonusGate<'a> {
    /// The recurrence's r, k and v.
    pub rkv: [&'a GpuTensor; 3],
    pub r_k: &'a GpuTensor,
    pub g: &'a GpuTensor,
}

/// Records `out = (GroupNorm_heads(y) + (Σ r·k·r_k)·v) ⊙ g` for each row, one group per head,
/// with `norm` = [ln_x weight; ln_x bias].
pub fn group_norm_bonus_gate(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    y: &GpuTensor,
    norm: &GpuTensor,
    operands: BonusGate,
    out: &GpuTensor,
) -> Result<()> {
    let params = check_group_norm(label, heads, y, norm, out)?;
    let [r, k, v] = operands.rkv;
    for (name, operand) in [("r", r), ("k", k), ("v", v), ("g", operands.g)] {
        expect_shape(label, name, operand, y.rows, y.cols)?;
    }
    expect_shape(label, "r_k", operands.r_k, 1, y.cols)?;
    let pipeline = rec.gpu.pipeline(&GROUP_NORM, "group_norm_bonus_gate", GROUP_NORM_BONUS_BINDINGS, &[])?;
    let storage = [
        y.binding(),
        norm.binding(),
        r.binding(),
        k.binding(),
        v.binding(),
        operands.r_k.binding(),
        operands.g.binding(),
        out.binding(),
    ];
    rec.record(&pipeline, label, &params, &storage, [params.heads, to_u32(label, y.rows)?, 1])
}

/// CPU reference of [`group_norm_bonus_gate`]; `ln_x` = (weight, bias), `r_k` per channel.
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
    let channels = r_k.len();
    let n = channels / heads;
    let normed = group_norm_ref(heads, y, ln_x, None);
    let bonus: Vec<f64> = (0..y.len() / n)
        .map(|head| {
            (head * n..(head + 1) * n)
                .map(|i| f64::from(r[i]) * f64::from(k[i]) * f64::from(r_k[i % channels]))
                .sum()
        })
        .collect();
    (0..y.len())
        .map(|i| ((f64::from(normed[i]) + bonus[i / n] * f64::from(v[i])) * f64::from(g[i])) as f32)
        .collect()
}
