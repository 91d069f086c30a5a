//! Gathering the last row of each sequence, so the head computes only the logits that are read.

use super::sequences::SEQUENCE_SIZES;
use super::{expect_shape, to_u32, wgsl, Grid, Recorder};
use crate::error::Result;
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, GpuTensor, KernelSource};

const GATHER: KernelSource =
    KernelSource { name: "gather", parts: &[wgsl::SEQUENCES, wgsl::GATHER], sizes: SEQUENCE_SIZES };
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
