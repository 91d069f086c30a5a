//! Reading weights by name with validation, into a [`Store`]: the GPU, or the host for the CPU
//! reference. Every check of presence, dtype and shape happens here, and every error names the
//! tensor.

use half::f16;

use super::source::{DType, TensorData, TensorSource};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuMatrix, GpuTensor};

/// Where loaded weights go.
pub trait Store {
    type Vector;
    type Matrix;
    /// f32 values as rows of `cols`.
    fn rows(&self, name: &str, cols: usize, data: Vec<f32>) -> Result<Self::Vector>;
    /// f32 values as one row.
    fn vector(&self, name: &str, data: Vec<f32>) -> Result<Self::Vector> {
        self.rows(name, data.len(), data)
    }
    /// A row-major `[rows, cols]` matrix.
    fn matrix(&self, name: &str, rows: usize, cols: usize, data: Vec<f16>) -> Result<Self::Matrix>;
}

impl Store for Gpu {
    type Vector = GpuTensor;
    type Matrix = GpuMatrix;

    fn rows(&self, name: &str, cols: usize, data: Vec<f32>) -> Result<GpuTensor> {
        GpuTensor::from_rows(self, name, cols, &data)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize, data: Vec<f16>) -> Result<GpuMatrix> {
        GpuMatrix::from_f16(self, name, rows, cols, &data)
    }
}

/// Weights kept on the CPU, for the reference implementation.
pub struct Host;

/// A row-major f16 matrix on the CPU.
#[derive(Debug, Clone)]
pub struct HostMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f16>,
}

impl Store for Host {
    type Vector = Vec<f32>;
    type Matrix = HostMatrix;

    fn rows(&self, _name: &str, _cols: usize, data: Vec<f32>) -> Result<Vec<f32>> {
        Ok(data)
    }

    fn matrix(&self, _name: &str, rows: usize, cols: usize, data: Vec<f16>) -> Result<HostMatrix> {
        Ok(HostMatrix { rows, cols, data })
    }
}

/// Checks tensors without keeping them: `info` uses it to validate a whole file cheaply.
pub struct Validate;

impl Store for Validate {
    type Vector = ();
    type Matrix = ();

    fn rows(&self, _name: &str, _cols: usize, _data: Vec<f32>) -> Result<()> {
        Ok(())
    }

    fn matrix(&self, _name: &str, _rows: usize, _cols: usize, _data: Vec<f16>) -> Result<()> {
        Ok(())
    }
}

/// Reads tensors from a source, checks them, and hands them to a store.
pub struct Loader<'a, S: Store> {
    source: &'a dyn TensorSource,
    pub store: &'a S,
}

impl<'a, S: Store> Loader<'a, S> {
    pub fn new(source: &'a dyn TensorSource, store: &'a S) -> Self {
        Loader { source, store }
    }

    /// A tensor that must exist, in a float dtype, with exactly `expected` elements laid out as
    /// `expected` once dimensions of size 1 are ignored (checkpoints store `x_r` as [1, 1, C]).
    fn fetch(&self, name: &str, expected: &[usize]) -> Result<TensorData<'a>> {
        let tensor = self.source.tensor(name).map_err(|e| match e {
            Error::MissingTensor { .. } => Error::MissingTensor { name: name.into(), hint: String::new() },
            other => other,
        })?;
        if tensor.dtype.size().is_none() {
            return Err(Error::DType { name: name.into(), dtype: tensor.dtype.to_string() });
        }
        let squeeze = |shape: &[usize]| shape.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if squeeze(&tensor.shape) != squeeze(expected) {
            return Err(Error::Shape { name: name.into(), expected: expected.to_vec(), found: tensor.shape });
        }
        let bytes_expected = tensor.len() * tensor.dtype.size().unwrap_or(0);
        if tensor.bytes.len() != bytes_expected {
            return Err(Error::malformed(
                name,
                format!("holds {} bytes, its shape needs {bytes_expected}", tensor.bytes.len()),
            ));
        }
        Ok(tensor)
    }

    /// Whether the file has a tensor of this name.
    pub fn has(&self, name: &str) -> bool {
        self.source.meta(name).is_some()
    }

    /// The number of dimensions larger than 1 of a tensor, if present.
    pub fn dimensions(&self, name: &str) -> Option<usize> {
        self.source.meta(name).map(|(_, shape)| shape.iter().filter(|&&d| d != 1).count())
    }

    /// The number of elements of a tensor, if present.
    pub fn elements(&self, name: &str) -> Option<usize> {
        self.source.meta(name).map(|(_, shape)| shape.iter().product())
    }

    /// A vector of `len` values, converted to f32.
    pub fn vector_f32(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        self.fetch(name, &[len])?.to_f32(name)
    }

    /// A `[rows, cols]` matrix as stored, converted to f32.
    pub fn matrix_f32(&self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>> {
        self.fetch(name, &[rows, cols])?.to_f32(name)
    }

    pub fn vector(&self, name: &str, len: usize) -> Result<S::Vector> {
        self.store.vector(name, self.vector_f32(name, len)?)
    }

    /// Several vectors of `len` values each, back to back in one store vector.
    pub fn stacked(&self, label: &str, names: &[String], len: usize) -> Result<S::Vector> {
        let mut data = Vec::with_capacity(names.len() * len);
        for name in names {
            data.extend(self.vector_f32(name, len)?);
        }
        self.store.rows(label, len, data)
    }

    /// Like [`Loader::stacked`], storing `1 − m` for each value `m`: RWKV-4 and 5 write their token
    /// shift as `x·m + prev·(1 − m)`, which is `x + (prev − x)·(1 − m)`.
    pub fn stacked_complement(&self, label: &str, names: &[String], len: usize) -> Result<S::Vector> {
        let mut data = Vec::with_capacity(names.len() * len);
        for name in names {
            data.extend(self.vector_f32(name, len)?.into_iter().map(|m| 1.0 - m));
        }
        self.store.rows(label, len, data)
    }

    /// A norm's `{prefix}.weight` and `{prefix}.bias`, stacked as [weight; bias].
    pub fn norm(&self, prefix: &str, len: usize) -> Result<S::Vector> {
        self.stacked(prefix, &[format!("{prefix}.weight"), format!("{prefix}.bias")], len)
    }

    /// A linear layer's weight as stored, `[out, in]`.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<S::Matrix> {
        let tensor = self.fetch(name, &[rows, cols])?;
        self.store.matrix(name, rows, cols, to_f16(&tensor, name)?)
    }

    /// A matrix stored `[in, out]` (RWKV-7's LoRA factors, used as `x @ W`), transposed to the
    /// `[out, in]` layout the matrix-vector kernels read.
    pub fn matrix_transposed(&self, name: &str, inputs: usize, outputs: usize) -> Result<S::Matrix> {
        let tensor = self.fetch(name, &[inputs, outputs])?;
        let transposed = transpose(&to_f16(&tensor, name)?, inputs, outputs);
        self.store.matrix(name, outputs, inputs, transposed)
    }
}

impl<S: Store> Loader<'_, S> {
    /// `count` matrices stored as one `[count, inputs, outputs]` tensor (RWKV-6's
    /// `time_maa_w2`), each transposed to `[outputs, inputs]`.
    pub fn matrices_transposed(
        &self,
        name: &str,
        count: usize,
        inputs: usize,
        outputs: usize,
    ) -> Result<Vec<S::Matrix>> {
        let tensor = self.fetch(name, &[count, inputs, outputs])?;
        let stored = to_f16(&tensor, name)?;
        stored
            .chunks_exact(inputs * outputs)
            .enumerate()
            .map(|(index, slice)| {
                self.store.matrix(
                    &format!("{name}[{index}]"),
                    outputs,
                    inputs,
                    transpose(slice, inputs, outputs),
                )
            })
            .collect()
    }
}

/// A row-major `[rows, cols]` matrix as row-major `[cols, rows]`.
fn transpose(matrix: &[f16], rows: usize, cols: usize) -> Vec<f16> {
    let mut transposed = vec![f16::ZERO; matrix.len()];
    for r in 0..rows {
        for c in 0..cols {
            transposed[c * rows + r] = matrix[r * cols + c];
        }
    }
    transposed
}

/// Matrices are stored on the GPU as f16; bf16 and f32 inputs are rounded to nearest.
fn to_f16(tensor: &TensorData, name: &str) -> Result<Vec<f16>> {
    let bytes = &tensor.bytes[..];
    Ok(match tensor.dtype {
        DType::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect(),
        DType::BF16 | DType::F32 => tensor.to_f32(name)?.into_iter().map(f16::from_f32).collect(),
        DType::Other(dtype) => return Err(Error::DType { name: name.into(), dtype: dtype.into() }),
    })
}
