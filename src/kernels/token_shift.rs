//! Token shift: each mix blends a token's input with the previous token's, per channel.

use super::sequences::SEQUENCE_SIZES;
use super::{check_stack, expect_shape, to_u32, wgsl, Recorder, LN_EPS};
use crate::error::{Error, Result};
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, GpuTensor, KernelSource};

const TOKEN_SHIFT: KernelSource = KernelSource {
    name: "token_shift",
    parts: &[wgsl::SEQUENCES, wgsl::SEQUENCES_BINDING, wgsl::TOKEN_SHIFT],
    sizes: SEQUENCE_SIZES,
};
const BINDINGS: &[Access] = &[Uniform, Uniform, Read, ReadWrite, Read, ReadWrite];
const LAYER_NORM_SHIFT: KernelSource = KernelSource {
    name: "layer_norm_shift",
    parts: &[wgsl::SEQUENCES, wgsl::SEQUENCES_BINDING, wgsl::REDUCE, wgsl::ROW_STATS, wgsl::LAYER_NORM_SHIFT],
    sizes: SEQUENCE_SIZES,
};
const LAYER_NORM_SHIFT_BINDINGS: &[Access] =
    &[Uniform, Uniform, Read, Read, ReadWrite, Read, ReadWrite, ReadWrite];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    mixes: u32,
    out_entry_stride: u32,
    mix_entry_stride: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LayerNormShiftParams {
    len: u32,
    rows: u32,
    mixes: u32,
    out_entry_stride: u32,
    eps: f32,
    padding: [u32; 3],
}

/// What a time mix or channel mix starts from: the residual stream `x`, the layer norm it
/// applies first (`[weight; bias]`, [2, C]), and where the normalized rows are kept.
#[derive(Debug, Clone, Copy)]
pub struct NormInput<'a> {
    pub x: &'a GpuTensor,
    pub norm: &'a GpuTensor,
    pub normed: &'a GpuTensor,
}

/// Where the mix coefficients come from.
#[derive(Debug, Clone, Copy)]
pub enum Mixes<'a> {
    /// Weights, one row per mix: [mixes, C].
    Packed(&'a GpuTensor),
    /// Values computed this step, one [rows, C] entry of a stack per mix, `stride` apart.
    Rows(&'a [GpuTensor], usize),
}

/// Whether the shift replaces the remembered previous input with the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prev {
    Update,
    /// Leave it for a second shift of the same tokens (RWKV-6).
    Keep,
}

/// Records `out[m][row] = x[row] + (prev(row) − x[row]) ⊙ mix[m]` for every mix and row, where
/// prev(row) is the sequence's previous row or, for its first row, its remembered input in
/// `prev` ([slots, C]); then the sequences remember their last rows unless kept.
/// `out` are entries of one [`GpuTensor::stack`], `stride` elements apart.
pub fn token_shift(
    rec: &mut Recorder,
    label: &str,
    (x, prev): (&GpuTensor, &GpuTensor),
    mixes: Mixes,
    out: &[GpuTensor],
    stride: usize,
    update: Prev,
) -> Result<()> {
    let c = x.cols;
    check_shift(label, x, prev, (out, stride))?;
    let (mix_binding, mix_stride, per_row) = match mixes {
        Mixes::Packed(values) => {
            expect_shape(label, "mix", values, out.len(), c)?;
            (values.binding(), 0, false)
        }
        Mixes::Rows(entries, mix_stride) => {
            check_stack(label, "mix", entries, mix_stride)?;
            expect_shape(label, "mix", &entries[0], x.rows, c)?;
            if entries.len() != out.len() {
                return Err(Error::InvalidArgument(format!(
                    "{label}: {} mixes for {} outputs",
                    entries.len(),
                    out.len()
                )));
            }
            (entries[0].entries_binding(entries.len(), mix_stride), mix_stride, true)
        }
    };
    let constants = [("KEEP_PREV", f64::from(update == Prev::Keep)), ("MIX_PER_ROW", f64::from(per_row))];
    let pipeline = rec.gpu.pipeline(&TOKEN_SHIFT, "token_shift", BINDINGS, &constants)?;
    let params = Params {
        len: to_u32(label, c)?,
        mixes: to_u32(label, out.len())?,
        out_entry_stride: to_u32(label, stride)?,
        mix_entry_stride: to_u32(label, mix_stride)?,
    };
    let storage = [x.binding(), prev.binding(), mix_binding, out[0].entries_binding(out.len(), stride)];
    let grid = [to_u32(label, c.div_ceil(64))?, to_u32(label, x.rows.max(1))?, 1];
    rec.record(&pipeline, label, &params, &storage, grid)
}

/// Records [`crate::kernels::layer_norm`] of `input.x` into `input.normed` and
/// [`token_shift`] of the normalized rows with packed `mixes` into `out`, in one dispatch.
pub fn layer_norm_shift(
    rec: &mut Recorder,
    label: &str,
    input: NormInput,
    (prev, update): (&GpuTensor, Prev),
    mixes: &GpuTensor,
    (out, stride): (&[GpuTensor], usize),
) -> Result<()> {
    let NormInput { x, norm, normed } = input;
    let c = x.cols;
    expect_shape(label, "norm", norm, 2, c)?;
    expect_shape(label, "normed", normed, x.rows, c)?;
    check_shift(label, x, prev, (out, stride))?;
    expect_shape(label, "mix", mixes, out.len(), c)?;
    let constants = [("KEEP_PREV", f64::from(update == Prev::Keep))];
    let pipeline =
        rec.gpu.pipeline(&LAYER_NORM_SHIFT, "layer_norm_shift", LAYER_NORM_SHIFT_BINDINGS, &constants)?;
    let rows = to_u32(label, x.rows)?;
    let params = LayerNormShiftParams {
        len: to_u32(label, c)?,
        rows,
        mixes: to_u32(label, out.len())?,
        out_entry_stride: to_u32(label, stride)?,
        eps: LN_EPS,
        padding: [0; 3],
    };
    let storage = [
        x.binding(),
        norm.binding(),
        prev.binding(),
        mixes.binding(),
        out[0].entries_binding(out.len(), stride),
        normed.binding(),
    ];
    // Enough workgroups to fill a GPU even for one row; prefill's many rows need no split.
    const WORKGROUPS_WANTED: usize = 256;
    let column_blocks = WORKGROUPS_WANTED.div_ceil(x.rows.max(1)).clamp(1, c.div_ceil(64));
    rec.record(&pipeline, label, &params, &storage, [rows.max(1), to_u32(label, column_blocks)?, 1])
}

/// Checks a shift's state and output stack against its input `x`.
fn check_shift(
    label: &str,
    x: &GpuTensor,
    prev: &GpuTensor,
    (out, stride): (&[GpuTensor], usize),
) -> Result<()> {
    if prev.cols != x.cols {
        return Err(Error::InvalidArgument(format!(
            "{label}: `prev` has {} columns, expected {}",
            prev.cols, x.cols
        )));
    }
    check_stack(label, "output", out, stride)?;
    expect_shape(label, "output", &out[0], x.rows, x.cols)
}

/// CPU reference of [`token_shift`] for one sequence: `x` holds its rows in order, `mix` is
/// [mixes, C]. Returns each mix's rows; `prev` ends as the last row when updating.
pub fn token_shift_ref(x: &[f32], prev: &mut [f32], mix: &[f32], update: Prev) -> Vec<Vec<f32>> {
    let c = prev.len();
    let out = mix
        .chunks_exact(c)
        .map(|m| {
            let mut previous = prev.to_vec();
            let mut rows = Vec::with_capacity(x.len());
            for row in x.chunks_exact(c) {
                rows.extend(row.iter().zip(&previous).zip(m).map(|((&x, &p), &m)| x + (p - x) * m));
                previous = row.to_vec();
            }
            rows
        })
        .collect();
    if update == Prev::Update {
        if let Some(last) = x.chunks_exact(c).last() {
            prev.copy_from_slice(last);
        }
    }
    out
}
