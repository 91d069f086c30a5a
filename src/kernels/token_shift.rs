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
    padding: u32,
}

/// Records `out[m] = x + (prev − x) ⊙ mix[m]` for every mix `m`, then `prev = x`.
///
/// `mix` holds the mixes back to back (`mixes × len`); `out` are rows of one
/// [`GpuVector::stack`] with `stride` elements between them, written by this one dispatch.
pub fn token_shift(
    rec: &mut Recorder,
    label: &str,
    x: &GpuVector,
    prev: &GpuVector,
    mix: &GpuVector,
    out: &[GpuVector],
    stride: usize,
) -> Result<()> {
    let len = x.len;
    expect_len(label, "prev", prev.len, len)?;
    expect_len(label, "mix", mix.len, out.len() * len)?;
    let first = out.first().ok_or_else(|| Error::InvalidArgument(format!("{label}: no outputs")))?;
    for (m, row) in out.iter().enumerate() {
        let contiguous = row.buffer == first.buffer && row.offset == first.offset + (m * stride * 4) as u64;
        if row.len != len || !contiguous {
            return Err(Error::InvalidArgument(format!("{label}: output {m} is not row {m} of one stack")));
        }
    }
    let pipeline = rec.gpu.pipeline(&TOKEN_SHIFT, "token_shift", BINDINGS, &[])?;
    let params = Params {
        len: to_u32(label, len)?,
        mixes: to_u32(label, out.len())?,
        stride: to_u32(label, stride)?,
        padding: 0,
    };
    let storage = [x.binding(), prev.binding(), mix.binding(), first.rows_binding(out.len(), stride)];
    let workgroups = rec.gpu.grid(to_u32(label, len.div_ceil(64))?);
    rec.record(&pipeline, label, &params, &storage, workgroups)
}

/// CPU reference of [`token_shift`]: the mixed rows, and `prev` replaced by `x`.
pub fn token_shift_ref(x: &[f32], prev: &mut [f32], mix: &[f32]) -> Vec<Vec<f32>> {
    let out = mix
        .chunks_exact(x.len())
        .map(|m| x.iter().zip(prev.iter()).zip(m).map(|((&x, &p), &m)| x + (p - x) * m).collect())
        .collect();
    prev.copy_from_slice(x);
    out
}
