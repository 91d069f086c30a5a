//! Token shift: each mix blends the current input with the previous token's, per channel.

use super::{expect_len, to_u32, wgsl, Recorder};
use crate::error::{Error, Result};
use crate::gpu::{Access, GpuVector, KernelSource};

const TOKEN_SHIFT: KernelSource = KernelSource { name: "token_shift", parts: &[wgsl::TOKEN_SHIFT] };
const BINDINGS: &[Access] =
    &[Access::Uniform, Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    mixes: u32,
    stride: u32,
    mix_stride: u32,
}

/// Where the mix coefficients come from.
#[derive(Debug, Clone, Copy)]
pub enum Mixes<'a> {
    /// Weights stored back to back, `mixes × len`.
    Packed(&'a GpuVector),
    /// Values computed this step, as consecutive rows of one stack `stride` apart.
    Rows(&'a [GpuVector], usize),
}

/// Whether the shift replaces the remembered previous input with the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prev {
    Update,
    /// Leave it for a second shift of the same token (RWKV-6).
    Keep,
}

/// Checks that `rows` are consecutive rows of one stack, `stride` elements apart.
fn check_stack(label: &str, what: &str, rows: &[GpuVector], stride: usize, len: usize) -> Result<()> {
    let first = rows.first().ok_or_else(|| Error::InvalidArgument(format!("{label}: no {what}")))?;
    for (m, row) in rows.iter().enumerate() {
        let in_place = row.buffer == first.buffer && row.offset == first.offset + (m * stride * 4) as u64;
        if row.len != len || !in_place {
            return Err(Error::InvalidArgument(format!("{label}: {what} {m} is not row {m} of one stack")));
        }
    }
    Ok(())
}

/// Records `out[m] = x + (prev − x) ⊙ mix[m]` for every mix `m`, then `prev = x` unless kept.
/// `out` are rows of one [`GpuVector::stack`] with `stride` elements between them.
pub fn token_shift(
    rec: &mut Recorder,
    label: &str,
    (x, prev): (&GpuVector, &GpuVector),
    mixes: Mixes,
    out: &[GpuVector],
    stride: usize,
    update: Prev,
) -> Result<()> {
    let len = x.len;
    expect_len(label, "prev", prev.len, len)?;
    check_stack(label, "output", out, stride, len)?;
    let (mix_binding, mix_stride) = match mixes {
        Mixes::Packed(values) => {
            expect_len(label, "mix", values.len, out.len() * len)?;
            (values.binding(), len)
        }
        Mixes::Rows(rows, mix_stride) => {
            check_stack(label, "mix", rows, mix_stride, len)?;
            if rows.len() != out.len() {
                return Err(Error::InvalidArgument(format!(
                    "{label}: {} mixes for {} outputs",
                    rows.len(),
                    out.len()
                )));
            }
            (rows[0].rows_binding(rows.len(), mix_stride), mix_stride)
        }
    };
    let keep = if update == Prev::Keep { 1.0 } else { 0.0 };
    let pipeline = rec.gpu.pipeline(&TOKEN_SHIFT, "token_shift", BINDINGS, &[("KEEP_PREV", keep)])?;
    let params = Params {
        len: to_u32(label, len)?,
        mixes: to_u32(label, out.len())?,
        stride: to_u32(label, stride)?,
        mix_stride: to_u32(label, mix_stride)?,
    };
    let storage = [x.binding(), prev.binding(), mix_binding, out[0].rows_binding(out.len(), stride)];
    let workgroups = rec.gpu.grid(to_u32(label, len.div_ceil(64))?);
    rec.record(&pipeline, label, &params, &storage, workgroups)
}

/// CPU reference of [`token_shift`] with packed mixes: the mixed rows; `prev` replaced by `x`
/// when updating.
pub fn token_shift_ref(x: &[f32], prev: &mut [f32], mix: &[f32], update: Prev) -> Vec<Vec<f32>> {
    let out = mix
        .chunks_exact(x.len())
        .map(|m| x.iter().zip(prev.iter()).zip(m).map(|((&x, &p), &m)| x + (p - x) * m).collect())
        .collect();
    if update == Prev::Update {
        prev.copy_from_slice(x);
    }
    out
}
