//! Where the loader puts weights: the GPU, the host (for the CPU reference), or an inventory
//! that keeps only names, formats and shapes.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuMatrix, GpuTensor};
use crate::quant::{by_input_rows, MatrixFormat, PackedMatrix, PlannedMatrix};

/// Where loaded weights go.
pub trait Store {
    type Vector;
    type Matrix;
    /// Whether the store keeps values; if not, the loader checks names, shapes and dtypes but
    /// converts nothing.
    const KEEPS_VALUES: bool = true;
    /// f32 values as rows of `cols`.
    fn rows(&self, name: &str, cols: usize, data: Vec<f32>) -> Result<Self::Vector>;
    /// f32 values as one row.
    fn vector(&self, name: &str, data: Vec<f32>) -> Result<Self::Vector> {
        self.rows(name, data.len(), data)
    }
    /// A weight matrix, already in its format.
    fn matrix(&self, name: &str, matrix: PackedMatrix) -> Result<Self::Matrix>;
    /// Whether a large matrix of `format` with `rows` outputs of `cols` inputs, whose inputs are
    /// mostly exact zeros, is kept stored by input (`quant::by_input_rows`).
    fn keeps_by_input(&self, _format: MatrixFormat, _rows: usize, _cols: usize) -> bool {
        false
    }
    /// A weight matrix stored by input, `[by_input_rows(cols), rows]`, for a store that
    /// [`Store::keeps_by_input`].
    fn matrix_by_input(&self, name: &str, _stored: PackedMatrix, _cols: usize) -> Result<Self::Matrix> {
        Err(Error::InvalidArgument(format!("{name}: this store keeps no matrices by input")))
    }
    /// Small matrices that one kernel reads together (on the GPU: in one buffer).
    fn matrices_together(&self, names: &[String], matrices: Vec<PackedMatrix>) -> Result<Vec<Self::Matrix>> {
        names.iter().zip(matrices).map(|(name, matrix)| self.matrix(name, matrix)).collect()
    }
}

impl Store for Gpu {
    type Vector = GpuTensor;
    type Matrix = GpuMatrix;

    fn rows(&self, name: &str, cols: usize, data: Vec<f32>) -> Result<GpuTensor> {
        GpuTensor::from_rows(self, name, cols, &data)
    }

    fn matrix(&self, name: &str, matrix: PackedMatrix) -> Result<GpuMatrix> {
        GpuMatrix::upload(self, name, &matrix)
    }

    fn keeps_by_input(&self, format: MatrixFormat, rows: usize, cols: usize) -> bool {
        self.value_by_input
            && !format.is_quantized()
            && GpuMatrix::fits_one_binding(self, format.bytes(by_input_rows(cols), rows))
    }

    fn matrix_by_input(&self, name: &str, stored: PackedMatrix, cols: usize) -> Result<GpuMatrix> {
        GpuMatrix::upload_by_input(self, name, &stored, cols)
    }

    fn matrices_together(&self, names: &[String], matrices: Vec<PackedMatrix>) -> Result<Vec<GpuMatrix>> {
        GpuMatrix::upload_together(self, &names.join("+"), &matrices)
    }
}

/// Weights kept on the CPU, for the reference implementation.
pub struct Host;

/// A row-major matrix on the CPU: the values the GPU decodes from its format.
#[derive(Debug, Clone)]
pub struct HostMatrix {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
}

impl HostMatrix {
    /// Splits a matrix stacked by rows into its parts of `rows` rows each.
    pub fn split_rows(&self, rows: &[usize]) -> Vec<HostMatrix> {
        let mut first = 0;
        rows.iter()
            .map(|&count| {
                let values = self.values[first * self.cols..(first + count) * self.cols].to_vec();
                first += count;
                HostMatrix { rows: count, cols: self.cols, values }
            })
            .collect()
    }
}

impl Store for Host {
    type Vector = Vec<f32>;
    type Matrix = HostMatrix;

    fn rows(&self, _name: &str, _cols: usize, data: Vec<f32>) -> Result<Vec<f32>> {
        Ok(data)
    }

    fn matrix(&self, _name: &str, matrix: PackedMatrix) -> Result<HostMatrix> {
        Ok(HostMatrix { rows: matrix.rows, cols: matrix.cols, values: matrix.unpack() })
    }
}

/// Checks tensors without keeping their values, and lists each matrix's name, format and shape:
/// what validating a file, its memory estimate and its storage summary need.
#[derive(Default)]
pub struct Inventory {
    matrices: std::sync::Mutex<Vec<PlannedMatrix>>,
}

impl Inventory {
    pub fn into_matrices(self) -> Vec<PlannedMatrix> {
        self.matrices.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for Inventory {
    type Vector = ();
    type Matrix = ();
    const KEEPS_VALUES: bool = false;

    fn rows(&self, _name: &str, _cols: usize, _data: Vec<f32>) -> Result<()> {
        Ok(())
    }

    fn matrix(&self, name: &str, matrix: PackedMatrix) -> Result<()> {
        let planned = PlannedMatrix {
            name: name.to_string(),
            format: matrix.format,
            rows: matrix.rows,
            cols: matrix.cols,
        };
        self.matrices.lock().unwrap_or_else(|p| p.into_inner()).push(planned);
        Ok(())
    }
}
