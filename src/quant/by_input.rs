//! Matrices stored by input: stored row i holds every output's weight for input i, W
//! transposed to `[inputs, outputs]`. The channel mix's W_v is kept so on GPUs: its input, a
//! squared ReLU, is mostly exact zeros, and each zero input then skips one contiguous row of
//! weights, where stored by output it skips scattered 8-byte pieces of every row, which a GPU
//! reads in 32-byte sectors anyway.
//!
//! The stored rows are padded with zero rows to a whole vec4 of inputs, so that kernels taking
//! four inputs at a time never read past the matrix. Only the float formats are stored so: int8
//! and nf4 blocks run along inputs, as in the files `quantize` writes and GGUF's, and keep doing
//! so (`Store::keeps_by_input`).

use super::{MatrixFormat, PackedMatrix};
use crate::error::{Error, Result};

/// Stored rows of a matrix with `inputs` inputs stored by input.
pub fn stored_rows(inputs: usize) -> usize {
    inputs.next_multiple_of(4)
}

/// A row-major `[rows, cols]` matrix as row-major `[out_rows, rows]` (`out_rows ≥ cols`), the
/// rows past `cols` zero.
pub fn transpose_padded<T: Copy + Default>(
    matrix: &[T],
    rows: usize,
    cols: usize,
    out_rows: usize,
) -> Vec<T> {
    let mut transposed = vec![T::default(); out_rows * rows];
    for (r, row) in matrix.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (c, &value) in row.iter().enumerate() {
            transposed[c * rows + r] = value;
        }
    }
    transposed
}

impl PackedMatrix {
    /// Packs a row-major `[rows, cols]` matrix (`rows` outputs of `cols` inputs) by input: the
    /// result is `[stored_rows(cols), rows]`.
    pub fn pack_by_input(
        format: MatrixFormat,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> Result<PackedMatrix> {
        if values.len() != rows * cols {
            return Err(Error::InvalidArgument(format!(
                "{} values for a [{rows}, {cols}] matrix",
                values.len()
            )));
        }
        let stored = stored_rows(cols);
        PackedMatrix::pack(format, stored, rows, &transpose_padded(values, rows, cols, stored))
    }

    /// The values the GPU decodes from a matrix stored by input with `inputs` inputs, row-major
    /// `[outputs, inputs]` (the CPU reference).
    pub fn unpack_by_input(&self, inputs: usize) -> Vec<f32> {
        let stored = self.unpack();
        // Row o of the stored matrix transposed holds output o's weights for every stored row,
        // padding included: keep the first `inputs`.
        transpose_padded(&stored, self.rows, self.cols, self.cols)
            .chunks_exact(self.rows.max(1))
            .flat_map(|row| row[..inputs].iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_packed_by_input_unpacks_to_its_values() {
        let (rows, cols) = (5, 7);
        let values: Vec<f32> = (0..rows * cols).map(|i| i as f32 / 8.0 - 2.0).collect();
        for format in [MatrixFormat::F32, MatrixFormat::F16] {
            let packed = PackedMatrix::pack_by_input(format, rows, cols, &values).unwrap();
            assert_eq!((packed.rows, packed.cols), (8, rows));
            assert_eq!(packed.unpack_by_input(cols), values, "{format:?}");
            // The padding rows are zero.
            assert!(packed.unpack()[cols * rows..].iter().all(|&v| v == 0.0));
        }
    }
}
