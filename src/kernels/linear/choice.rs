//! Which kernel runs a product: a matrix-vector kernel for one row or a few, the blocks or the
//! tiles for more, or cooperative matrices where the adapter has them.

use super::sources::{coop_source, f16_tiles};
use super::FEW_ROWS;
use crate::gpu::{Gpu, GpuMatrix, RowMapping};
use crate::quant::MatrixFormat;

/// Whether `rows` rows run the matrix-vector kernels: one row, or a few on GPUs with subgroups
/// (any GPU for a matrix stored by input).
pub(super) fn runs_as_vector(gpu: &Gpu, rows: usize, by_input: bool) -> bool {
    rows == 1
        || rows <= FEW_ROWS
            && match gpu.row_mapping {
                RowMapping::SubgroupPerRow => true,
                RowMapping::WorkgroupPerRow => by_input,
                RowMapping::ThreadPerRow => false,
            }
}

/// Whether a product of `rows` rows with `matrix` runs on cooperative matrices, which multiply
/// int8 and nf4 weights as the f16 values they dequantize to (a reference must round them too).
pub fn on_tensor_cores(gpu: &Gpu, matrix: &GpuMatrix, rows: usize) -> bool {
    !runs_as_vector(gpu, rows, matrix.by_input) && coop_source(matrix.format, gpu).is_some()
}

/// The kernels of matvec.wgsl and matmul.wgsl (the cooperative-matrix kernel aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    ThreadPerRow,
    WorkgroupPerRow,
    SubgroupPerRow,
    ByInput,
    ByInputRows,
    Blocked,
    Tiled,
}

impl Kernel {
    /// The kernel for a row mapping: a matrix-vector kernel (`vector`; those for a matrix stored
    /// by input on their own), or the tiles (where their workgroup memory fits; the blocks need
    /// none).
    pub(super) fn choose(
        mapping: RowMapping,
        vector: bool,
        one_row: bool,
        by_input: bool,
        tiles_fit: bool,
    ) -> Kernel {
        match (mapping, vector) {
            (_, true) if by_input && one_row => Kernel::ByInput,
            (_, true) if by_input => Kernel::ByInputRows,
            (RowMapping::ThreadPerRow, true) => Kernel::ThreadPerRow,
            (RowMapping::WorkgroupPerRow, true) => Kernel::WorkgroupPerRow,
            (RowMapping::SubgroupPerRow, true) => Kernel::SubgroupPerRow,
            (RowMapping::WorkgroupPerRow | RowMapping::SubgroupPerRow, false) if tiles_fit => Kernel::Tiled,
            (_, false) => Kernel::Blocked,
        }
    }

    pub(super) fn entry_point(self) -> &'static str {
        match self {
            Kernel::ThreadPerRow => "thread_per_row",
            Kernel::WorkgroupPerRow => "workgroup_per_row",
            Kernel::SubgroupPerRow => "subgroup_per_row",
            Kernel::ByInput => "by_input",
            Kernel::ByInputRows => "by_input_rows",
            Kernel::Blocked => "blocked",
            Kernel::Tiled => "tiled",
        }
    }
}

/// Whether `tiled`'s workgroup memory (matmul.wgsl: two buffers of an input and a weight tile,
/// 256 values each) fits the adapter. WebGPU guarantees 16 KiB, which f32 tiles fill; some GL
/// drivers offer a little less.
pub(super) fn tiles_fit(gpu: &Gpu, format: MatrixFormat) -> bool {
    let value_bytes = if f16_tiles(format, gpu) { 8 } else { 16 };
    2 * 2 * 256 * value_bytes <= gpu.limits.max_compute_workgroup_storage_size
}

#[cfg(test)]
mod tests {
    use super::{Kernel, RowMapping};

    #[test]
    fn each_mapping_gets_its_kernels() {
        use RowMapping::*;
        let choose = |mapping, vector, by_input, tiles_fit| {
            Kernel::choose(mapping, vector, false, by_input, tiles_fit)
        };
        assert_eq!(choose(ThreadPerRow, true, false, true), Kernel::ThreadPerRow);
        assert_eq!(choose(WorkgroupPerRow, true, false, true), Kernel::WorkgroupPerRow);
        assert_eq!(choose(SubgroupPerRow, true, false, true), Kernel::SubgroupPerRow);
        // Many rows: tiles on GPUs, blocks on CPU drivers and where the tiles' memory is short.
        assert_eq!(choose(ThreadPerRow, false, false, true), Kernel::Blocked);
        assert_eq!(choose(WorkgroupPerRow, false, false, true), Kernel::Tiled);
        assert_eq!(choose(SubgroupPerRow, false, true, true), Kernel::Tiled);
        assert_eq!(choose(WorkgroupPerRow, false, false, false), Kernel::Blocked);
        assert_eq!(choose(SubgroupPerRow, false, true, false), Kernel::Blocked);
        // Stored by input: its own matrix-vector kernels on every mapping (runs_as_vector gives
        // thread-per-row one row only, so it never takes by_input_rows in practice).
        for mapping in [ThreadPerRow, WorkgroupPerRow, SubgroupPerRow] {
            assert_eq!(Kernel::choose(mapping, true, true, true, true), Kernel::ByInput);
            assert_eq!(Kernel::choose(mapping, true, false, true, false), Kernel::ByInputRows);
        }
    }
}
