//! A kernel that only reads: the measure of an adapter's read bandwidth, which bounds decode
//! (every weight is read once per token).

use super::{to_u32, wgsl, Recorder};
use crate::error::{Error, Result};
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, GpuTensor, KernelSource};

const READ_SUM: KernelSource = KernelSource { name: "bandwidth", parts: &[wgsl::BANDWIDTH], sizes: &[] };
const BINDINGS: &[Access] = &[Uniform, Read, ReadWrite];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    vec4s: u32,
    per_workgroup: u32,
    padding: [u32; 2],
}

/// The vec4s each workgroup of [`read_sum`] reads from `values` values: spans of 16 loads per
/// lane, in at most 65535 workgroups.
pub fn read_sum_span(values: usize) -> usize {
    let vec4s = values / 4;
    (256 * 16).max(vec4s.div_ceil(65535)).next_multiple_of(256)
}

/// Records `sums[w] = Σ data[w·span .. (w+1)·span]` (spans of [`read_sum_span`] vec4s, the
/// last shorter) over the one-row `data`, whose length must be a multiple of 4; `sums` is
/// `[1, ≥ workgroups]`.
pub fn read_sum(rec: &mut Recorder, label: &str, data: &GpuTensor, sums: &GpuTensor) -> Result<()> {
    let values = data.len();
    let span = read_sum_span(values);
    let workgroups = (values / 4).div_ceil(span);
    if data.rows != 1 || values % 4 != 0 || values == 0 || sums.rows != 1 || sums.cols < workgroups {
        return Err(Error::InvalidArgument(format!(
            "{label}: a one-row tensor of a multiple of 4 values and [1, ≥{workgroups}] sums, got [{}, {}] and [{}, {}]",
            data.rows, data.cols, sums.rows, sums.cols
        )));
    }
    let pipeline = rec.gpu.pipeline(&READ_SUM, "read_sum", BINDINGS, &[])?;
    let params =
        Params { vec4s: to_u32(label, values / 4)?, per_workgroup: to_u32(label, span)?, padding: [0; 2] };
    let grid = [to_u32(label, workgroups)?, 1, 1];
    rec.record(&pipeline, label, &params, &[data.binding(), sums.binding()], grid)
}

/// The CPU reference of [`read_sum`].
pub fn read_sum_ref(data: &[f32]) -> Vec<f32> {
    data.chunks(read_sum_span(data.len()) * 4).map(|span| span.iter().sum()).collect()
}
