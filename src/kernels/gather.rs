//! Gathering rows: a step's input rows from the embedding table on the GPU, and the last row of
//! each sequence, so the head computes only the logits that are read.

use super::sequences::SEQUENCE_SIZES;
use super::{expect_shape, to_u32, wgsl, Grid, Recorder};
use crate::error::Result;
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, GpuTensor, KernelSource};

const GATHER: KernelSource = KernelSource {
    name: "gather",
    parts: &[wgsl::SEQUENCES, wgsl::SEQUENCES_BINDING, wgsl::GATHER],
    sizes: SEQUENCE_SIZES,
};
const BINDINGS: &[Access] = &[Uniform, Uniform, Read, ReadWrite];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    padding: [u32; 3],
}

/// Records `out[s] = x[last row of sequence s]`, for `out` of one row per sequence of the step.
pub fn gather_last_rows(rec: &mut Recorder, label: &str, x: &GpuTensor, out: &GpuTensor) -> Result<()> {
    let count = rec.sequences(label)?.count;
    expect_shape(label, "out", out, count, x.cols)?;
    let pipeline = rec.gpu.pipeline(&GATHER, "gather_last_rows", BINDINGS, &[])?;
    let params = Params { len: to_u32(label, x.cols)?, padding: [0; 3] };
    let workgroups = to_u32(label, x.cols.div_ceil(64))?;
    rec.record(&pipeline, label, &params, &[x.binding(), out.binding()], Grid::PerSequence(workgroups))
}

const EMBED: KernelSource = KernelSource { name: "embed", parts: &[wgsl::EMBED], sizes: &[] };
const EMBED_BINDINGS: &[Access] = &[Uniform, Read, Read, Read, Read, Read, ReadWrite];

/// The most parts an embedding table on the GPU may come in (see `embed.wgsl`).
pub const EMBED_PARTS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbedParams {
    cols: u32,
    stride: u32,
    rows: u32,
    vocab: u32,
    part_rows: u32,
    padding: [u32; 3],
}

/// Records `x[r] = table[ids[r]]` for the `x.rows` rows of a step, the table given as 1 to
/// [`EMBED_PARTS`] parts of equal rows (the last may be shorter) and `ids` as `[1, ≥ x.rows]`
/// token ids in u32 bits. An id past the table reads its last row (the host checks every id it
/// uploads; see `embed.wgsl`).
pub fn embed(
    rec: &mut Recorder,
    label: &str,
    parts: &[GpuTensor],
    ids: &GpuTensor,
    x: &GpuTensor,
) -> Result<()> {
    let bad = |why: String| Err(crate::error::Error::InvalidArgument(format!("{label}: {why}")));
    let Some(first) = parts.first() else { return bad("no table".into()) };
    if parts.len() > EMBED_PARTS || parts.iter().any(|p| p.cols != first.cols || p.rows > first.rows) {
        return bad(format!(
            "a table comes in 1 to {EMBED_PARTS} parts of [≤{}, {}] rows",
            first.rows, first.cols
        ));
    }
    expect_shape(label, "x", x, x.rows, first.cols)?;
    if ids.rows != 1 || ids.cols < x.rows || first.rows == 0 {
        return bad(format!(
            "{} rows need a [1, ≥{}] id tensor, got [{}, {}]",
            x.rows, x.rows, ids.rows, ids.cols
        ));
    }
    let pipeline = rec.gpu.pipeline(&EMBED, "embed", EMBED_BINDINGS, &[])?;
    let vocab: usize = parts.iter().map(|p| p.rows).sum();
    let params = EmbedParams {
        cols: to_u32(label, x.cols)?,
        stride: to_u32(label, x.stride())?,
        rows: to_u32(label, x.rows)?,
        vocab: to_u32(label, vocab)?,
        part_rows: to_u32(label, first.rows)?,
        padding: [0; 3],
    };
    let mut bindings: Vec<_> = (0..EMBED_PARTS).map(|i| parts.get(i).unwrap_or(first).binding()).collect();
    bindings.extend([ids.binding(), x.binding()]);
    let grid = [to_u32(label, x.cols.div_ceil(64))?, to_u32(label, x.rows)?, 1];
    rec.record(&pipeline, label, &params, &bindings, grid)
}

/// The CPU reference of [`embed`]: the rows of `table` (`cols` wide) at `ids`, clamped as the
/// kernel clamps them.
pub fn embed_ref(table: &[f32], cols: usize, ids: &[u32]) -> Vec<f32> {
    let vocab = table.len() / cols;
    ids.iter()
        .flat_map(|&id| {
            let row = (id as usize).min(vocab - 1);
            table[row * cols..(row + 1) * cols].iter().copied()
        })
        .collect()
}
