//! Products with a matrix stored by input (`quant::by_input_rows`): one row runs `by_input`
//! (matvec_by_input.wgsl), which skips the stored row of every zero input, and up to FEW_ROWS
//! rows on GPUs `by_input_rows`; more rows run the usual matrix-matrix kernels, which transpose
//! the weights as they load them (`WEIGHTS_BY_INPUT`).

use crate::error::{Error, Result};
use crate::gpu::{GpuMatrix, RowMapping};

/// Threads of a `by_input` workgroup: `Gpu::by_input_lanes` lanes of four outputs, the rest
/// splitting the inputs. CPU drivers run a workgroup's lanes as one vector of 16.
pub fn by_input_threads(mapping: RowMapping) -> usize {
    match mapping {
        RowMapping::ThreadPerRow => 64,
        RowMapping::WorkgroupPerRow | RowMapping::SubgroupPerRow => 256,
    }
}

/// Matrices stored by input are read whole, each output computed from every input: one part
/// (the loader stores by input only what fits one binding), one segment, a plain input.
pub(super) fn check(label: &str, matrix: &GpuMatrix, segments: usize, shifted_input: bool) -> Result<()> {
    if matrix.parts.len() != 1 || segments != 1 || shifted_input {
        return Err(Error::InvalidArgument(format!(
            "{label}: a matrix stored by input takes one plain input and one output, in one part"
        )));
    }
    Ok(())
}
