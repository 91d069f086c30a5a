//! Reading weights by name with validation, into a [`Store`]: the GPU, or the host for the CPU
//! reference. Every check of presence, dtype and shape happens here, and every error names the
//! tensor.

use super::source::{TensorData, TensorSource};
pub use super::store::{Host, HostMatrix, Inventory, Store};
use crate::error::{Error, Result};
use crate::quant::{by_input_rows, transpose_padded, MatrixFormat, PackedMatrix, QuantPlan};

/// Reads tensors from a source, checks them, and hands them to a store.
pub struct Loader<'a, S: Store> {
    source: &'a dyn TensorSource,
    pub store: &'a S,
    plan: QuantPlan,
}

impl<'a, S: Store> Loader<'a, S> {
    /// A loader that keeps every matrix in its file's precision.
    pub fn new(source: &'a dyn TensorSource, store: &'a S) -> Self {
        Loader { source, store, plan: QuantPlan::default() }
    }

    /// A loader that stores the large matrices as `plan` says.
    pub fn with_plan(source: &'a dyn TensorSource, store: &'a S, plan: QuantPlan) -> Self {
        Loader { source, store, plan }
    }

    /// Checks that a tensor exists, in a float dtype, with exactly `expected` elements laid out as
    /// `expected` once dimensions of size 1 are ignored (checkpoints store `x_r` as [1, 1, C]).
    fn check(&self, name: &str, expected: &[usize]) -> Result<()> {
        let (dtype, shape) = self
            .source
            .meta(name)
            .ok_or_else(|| Error::MissingTensor { name: name.into(), hint: String::new() })?;
        if dtype.size().is_none() {
            return Err(Error::DType { name: name.into(), dtype: dtype.to_string() });
        }
        let squeeze = |shape: &[usize]| shape.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if squeeze(&shape) != squeeze(expected) {
            return Err(Error::Shape { name: name.into(), expected: expected.to_vec(), found: shape });
        }
        Ok(())
    }

    /// A checked tensor's data.
    fn fetch(&self, name: &str, expected: &[usize]) -> Result<TensorData<'a>> {
        self.check(name, expected)?;
        let tensor = self.source.tensor(name)?;
        let bytes_expected = tensor.len() * tensor.dtype.size().unwrap_or(0);
        if tensor.bytes.len() != bytes_expected {
            return Err(Error::malformed_tensor(
                name,
                format!("holds {} bytes, its shape needs {bytes_expected}", tensor.bytes.len()),
            ));
        }
        Ok(tensor)
    }

    /// A checked tensor's values in f32; zeros of the right length for stores that keep nothing
    /// (so that checking a file reads no data).
    /// NaN or infinite weights are refused, naming the first: they would only surface later as
    /// NaN logits, far from their cause.
    fn values(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        if !S::KEEPS_VALUES {
            self.check(name, expected)?;
            return Ok(vec![0.0; expected.iter().product()]);
        }
        let values = self.fetch(name, expected)?.to_f32(name)?;
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::BadWeights {
                name: name.into(),
                reason: format!("element {index} is {}: the file is damaged", values[index]),
            });
        }
        Ok(values)
    }

    /// A matrix's values for storage in `format`. f16, and the f16 block parameters of int8
    /// and nf4, must hold each value.
    fn matrix_values(&self, name: &str, expected: &[usize], format: MatrixFormat) -> Result<Vec<f32>> {
        let values = self.values(name, expected)?;
        if matches!(format, MatrixFormat::F32 | MatrixFormat::Bf16) {
            return Ok(values);
        }
        let largest = f32::from(half::f16::MAX);
        if let Some(index) = values.iter().position(|v| v.abs() > largest) {
            return Err(Error::BadWeights {
                name: name.into(),
                reason: format!(
                    "element {index} is {}, beyond the range of f16 (±{largest}), in which {} keeps it: store it as f32 or bf16",
                    values[index],
                    format.name()
                ),
            });
        }
        Ok(values)
    }

    /// The format a matrix is stored in: the one `planned`, or the file's own precision. A
    /// matrix the file holds in a quantized GGUF type is decoded and stored in int8, which keeps
    /// the decoded values to within a fraction of what the file's quantization already cost (f16
    /// would take 2 to 4 times the memory the file promised; nf4 doubles a 4-bit type's error:
    /// both stay a `--quant` away).
    fn format(&self, name: &str, planned: Option<MatrixFormat>) -> MatrixFormat {
        let quantized = || self.source.is_quantized(name).then_some(MatrixFormat::Int8);
        planned.or_else(quantized).unwrap_or_else(|| self.stored_format(name))
    }

    /// The format that holds a tensor's values as its file stores them.
    fn stored_format(&self, name: &str) -> MatrixFormat {
        self.source.meta(name).map_or(MatrixFormat::F16, |(dtype, _)| dtype.exact_format())
    }

    /// The format of a small, never quantized matrix.
    fn small_format(&self, name: &str) -> MatrixFormat {
        self.plan.small_format(self.stored_format(name))
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
        self.values(name, &[len])
    }

    /// A `[rows, cols]` matrix as stored, converted to f32.
    pub fn matrix_f32(&self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>> {
        self.values(name, &[rows, cols])
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
        self.store.rows(prefix, len, self.norm_f32(prefix, len)?)
    }

    /// The same, on the host.
    pub fn norm_f32(&self, prefix: &str, len: usize) -> Result<Vec<f32>> {
        let mut values = self.vector_f32(&format!("{prefix}.weight"), len)?;
        values.extend(self.vector_f32(&format!("{prefix}.bias"), len)?);
        Ok(values)
    }

    /// A small matrix stored `[out, in]`, never quantized (see [`QuantPlan::small_format`]).
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<S::Matrix> {
        self.check(name, &[rows, cols])?;
        let format = self.small_format(name);
        self.pack(name, format, rows, cols, || self.matrix_values(name, &[rows, cols], format))
    }

    /// One of the model's large matrices, stored `[out, in]`: in the format the plan gives it,
    /// or in its own format if the file holds it pre-quantized.
    pub fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<S::Matrix> {
        if let Some(packed) = self.prequantized(name, rows, cols)? {
            return self.store.matrix(name, packed);
        }
        self.check(name, &[rows, cols])?;
        let format = self.format(name, self.plan.format_of(name));
        let packed = self.large_packed(name, format, rows, cols)?;
        self.store.matrix(name, packed)
    }

    /// A large matrix whose inputs are mostly exact zeros (the channel mix's W_v, after a
    /// squared ReLU): stored by input where the store keeps such matrices so
    /// (`quant::by_input_rows`: float formats), otherwise as [`Loader::linear`] stores it.
    pub fn linear_sparse_input(&self, name: &str, rows: usize, cols: usize) -> Result<S::Matrix> {
        if let Some(packed) = self.prequantized(name, rows, cols)? {
            return self.store.matrix(name, packed);
        }
        self.check(name, &[rows, cols])?;
        let format = self.format(name, self.plan.format_of(name));
        if !self.store.keeps_by_input(format, rows, cols) {
            return self.store.matrix(name, self.large_packed(name, format, rows, cols)?);
        }
        let stored = by_input_rows(cols);
        let tensor = self.fetch(name, &[rows, cols])?;
        let packed = if format == MatrixFormat::F16 && tensor.dtype == crate::model::source::DType::F16 {
            // Straight from the file's bits, as `large_packed` does.
            let bits: Vec<u16> =
                tensor.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
            let bytes: Vec<u8> =
                transpose_padded(&bits, rows, cols, stored).iter().flat_map(|b| b.to_le_bytes()).collect();
            PackedMatrix::from_f16_bytes(stored, rows, &bytes).map_err(|(index, value)| {
                Error::BadWeights {
                    name: name.into(),
                    reason: format!(
                        "element {} is {value}: the file is damaged",
                        (index % rows) * cols + index / rows
                    ),
                }
            })?
        } else {
            PackedMatrix::pack_by_input(
                format,
                rows,
                cols,
                &self.matrix_values(name, &[rows, cols], format)?,
            )?
        };
        self.store.matrix_by_input(name, packed, cols)
    }

    /// The file's own packing of a matrix it holds pre-quantized (written by `quantize`),
    /// checked against the shape expected.
    fn prequantized(&self, name: &str, rows: usize, cols: usize) -> Result<Option<PackedMatrix>> {
        let Some(packed) = self.source.packed(name)? else {
            return Ok(None);
        };
        if (packed.rows, packed.cols) != (rows, cols) {
            return Err(Error::Shape {
                name: name.into(),
                expected: vec![rows, cols],
                found: vec![packed.rows, packed.cols],
            });
        }
        Ok(Some(packed))
    }

    /// A large matrix in `format`; an f16 file's f16 matrix is copied as it is, not through f32.
    fn large_packed(
        &self,
        name: &str,
        format: MatrixFormat,
        rows: usize,
        cols: usize,
    ) -> Result<PackedMatrix> {
        if S::KEEPS_VALUES && format == MatrixFormat::F16 {
            let tensor = self.fetch(name, &[rows, cols])?;
            if tensor.dtype == crate::model::source::DType::F16 {
                return PackedMatrix::from_f16_bytes(rows, cols, &tensor.bytes).map_err(|(index, value)| {
                    Error::BadWeights {
                        name: name.into(),
                        reason: format!("element {index} is {value}: the file is damaged"),
                    }
                });
            }
        }
        self.packed(format, rows, cols, || self.matrix_values(name, &[rows, cols], format))
    }

    /// Large matrices `[rows, cols]` of one width, given as (name, rows), stacked by rows into
    /// one so that a grouped product reads them in one pass; each in the format the plan or the
    /// file gives it (they must agree; floats of different precisions are all kept in the
    /// widest).
    pub fn linear_stacked(&self, matrices: &[(String, usize)], cols: usize) -> Result<S::Matrix> {
        let formats: Vec<MatrixFormat> =
            matrices.iter().map(|(name, _)| self.format(name, self.plan.format_of(name))).collect();
        let mut packed = Vec::with_capacity(matrices.len());
        for ((name, rows), format) in matrices.iter().zip(widest_floats(formats)) {
            let rows = *rows;
            packed.push(match self.source.packed(name)? {
                Some(matrix) if (matrix.rows, matrix.cols) != (rows, cols) => {
                    return Err(Error::Shape {
                        name: name.clone(),
                        expected: vec![rows, cols],
                        found: vec![matrix.rows, matrix.cols],
                    })
                }
                Some(matrix) => matrix,
                None => {
                    self.check(name, &[rows, cols])?;
                    self.large_packed(name, format, rows, cols)?
                }
            });
        }
        let names: Vec<String> = matrices.iter().map(|(name, _)| name.clone()).collect();
        self.store_stacked(&names, packed)
    }

    /// LoRA factors stored `[in, out]` with a common `in`, each transposed to `[out, in]` and
    /// stacked by rows, never quantized: `factors` are (name, out).
    pub fn matrices_transposed_stacked(
        &self,
        factors: &[(String, usize)],
        inputs: usize,
    ) -> Result<S::Matrix> {
        let formats = widest_floats(factors.iter().map(|(name, _)| self.small_format(name)).collect());
        let mut packed = Vec::with_capacity(factors.len());
        for ((name, outputs), format) in factors.iter().zip(formats) {
            self.check(name, &[inputs, *outputs])?;
            let values =
                || Ok(transpose(&self.matrix_values(name, &[inputs, *outputs], format)?, inputs, *outputs));
            packed.push(self.packed(format, *outputs, inputs, values)?);
        }
        let names: Vec<String> = factors.iter().map(|(name, _)| name.clone()).collect();
        self.store_stacked(&names, packed)
    }

    fn store_stacked(&self, names: &[String], packed: Vec<PackedMatrix>) -> Result<S::Matrix> {
        let label = names.join("+");
        if !S::KEEPS_VALUES {
            // Stores that keep nothing (the file checker, the quantization planner) see each
            // matrix under its own name, as the file holds it; their matrices are all `()`.
            let mut stored = None;
            for (name, matrix) in names.iter().zip(packed) {
                stored = Some(self.store.matrix(name, matrix)?);
            }
            return stored.ok_or_else(|| Error::InvalidArgument(format!("{label}: nothing to stack")));
        }
        let stacked =
            PackedMatrix::stack_rows(&packed).map_err(|e| Error::malformed_tensor(&label, e.to_string()))?;
        self.store.matrix(&label, stacked)
    }

    /// A matrix stored `[in, out]` (RWKV-6/7's LoRA factors, used as `x @ W`), transposed to the
    /// `[out, in]` layout the kernels read, never quantized.
    pub fn matrix_transposed(&self, name: &str, inputs: usize, outputs: usize) -> Result<S::Matrix> {
        self.check(name, &[inputs, outputs])?;
        let format = self.small_format(name);
        let values =
            || Ok(transpose(&self.matrix_values(name, &[inputs, outputs], format)?, inputs, outputs));
        self.pack(name, format, outputs, inputs, values)
    }

    /// Small matrices stored `[in, out]` with a common `out` (RWKV-7's LoRA outputs), each
    /// transposed to `[out, in]`, never quantized, kept where one kernel reads them together:
    /// `factors` are (name, in).
    pub fn matrices_transposed_together(
        &self,
        factors: &[(String, usize)],
        outputs: usize,
    ) -> Result<Vec<S::Matrix>> {
        let mut packed = Vec::with_capacity(factors.len());
        for (name, inputs) in factors {
            self.check(name, &[*inputs, outputs])?;
            let format = self.small_format(name);
            let values =
                || Ok(transpose(&self.matrix_values(name, &[*inputs, outputs], format)?, *inputs, outputs));
            packed.push(self.packed(format, outputs, *inputs, values)?);
        }
        let names: Vec<String> = factors.iter().map(|(name, _)| name.clone()).collect();
        self.store.matrices_together(&names, packed)
    }

    /// Packs a checked matrix's values into the store, unless the store keeps no values.
    fn pack(
        &self,
        name: &str,
        format: MatrixFormat,
        rows: usize,
        cols: usize,
        values: impl FnOnce() -> Result<Vec<f32>>,
    ) -> Result<S::Matrix> {
        self.store.matrix(name, self.packed(format, rows, cols, values)?)
    }

    fn packed(
        &self,
        format: MatrixFormat,
        rows: usize,
        cols: usize,
        values: impl FnOnce() -> Result<Vec<f32>>,
    ) -> Result<PackedMatrix> {
        if S::KEEPS_VALUES {
            PackedMatrix::pack(format, rows, cols, &values()?)
        } else {
            Ok(PackedMatrix { format, rows, cols, words: Vec::new() })
        }
    }
}

impl<S: Store> Loader<'_, S> {
    /// `count` matrices stored as one `[count, inputs, outputs]` tensor (RWKV-6's
    /// `time_maa_w2`), each transposed to `[outputs, inputs]` and stacked by rows into one
    /// `[count · outputs, inputs]` that a grouped product reads in one pass, never quantized.
    /// Stores that keep no values see the parts as `name[i]`.
    pub fn matrices_transposed_stacked_parts(
        &self,
        name: &str,
        count: usize,
        inputs: usize,
        outputs: usize,
    ) -> Result<S::Matrix> {
        let format = self.small_format(name);
        let stored = self.matrix_values(name, &[count, inputs, outputs], format)?;
        let packed = stored
            .chunks_exact((inputs * outputs).max(1))
            .take(count)
            .map(|slice| self.packed(format, outputs, inputs, || Ok(transpose(slice, inputs, outputs))))
            .collect::<Result<Vec<_>>>()?;
        let names: Vec<String> = (0..count).map(|index| format!("{name}[{index}]")).collect();
        self.store_stacked(&names, packed)
    }
}

/// The formats of matrices stored as one, which must agree: unchanged if they do; floats of
/// different precisions all in f32, so that no matrix loses precision; a mix with a quantized
/// format (a GGUF file whose block types differ within a layer) all in int8, the widest of ours.
fn widest_floats(formats: Vec<MatrixFormat>) -> Vec<MatrixFormat> {
    let mixed = formats.windows(2).any(|pair| pair[0] != pair[1]);
    if !mixed {
        return formats;
    }
    let common = if formats.iter().any(|format| format.is_quantized()) {
        MatrixFormat::Int8
    } else {
        MatrixFormat::F32
    };
    vec![common; formats.len()]
}

/// A row-major `[rows, cols]` matrix as row-major `[cols, rows]`.
fn transpose(matrix: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    transpose_padded(matrix, rows, cols, cols)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MatrixFormat::{Bf16, Int8, Nf4, F16, F32};

    /// Matrices read in one pass share a format: floats of mixed precision go to f32 (neither
    /// f16 nor bf16 holds the other), mixes with a quantized format to int8; agreeing formats
    /// are left as they are.
    #[test]
    fn stacked_floats_of_mixed_precision_are_kept_in_f32() {
        assert_eq!(widest_floats(vec![F16, Bf16, F16]), vec![F32; 3]);
        assert_eq!(widest_floats(vec![Bf16, F32]), vec![F32; 2]);
        assert_eq!(widest_floats(vec![Bf16, Bf16]), vec![Bf16; 2]);
        assert_eq!(widest_floats(vec![Int8, F16]), vec![Int8, Int8]);
        assert_eq!(widest_floats(vec![Nf4, Nf4, Int8]), vec![Int8; 3]);
        assert_eq!(widest_floats(vec![Nf4, Nf4]), vec![Nf4; 2]);
    }
}
