//! Weight matrices on the GPU, in any [`MatrixFormat`], split by rows into parts that each fit
//! one storage binding.
//!
//! Browsers and many GPUs limit one storage binding to 128 MiB (WebGPU's default) while the f16
//! head of a 2.9B model is 320 MiB: such a matrix becomes several parts, each its own buffer
//! holding whole rows, and the linear kernels run once per part, writing that part's output
//! columns. Everything else sees one matrix.

use half::f16;

use super::buffer::{buffer_with, check_size, storage_usage, Binding};
use super::Gpu;
use crate::error::{Error, Result};
use crate::quant::{MatrixFormat, PackedMatrix};

/// Rows `first_row .. first_row + rows` of a matrix, in `size` bytes of a buffer from `offset`
/// on (small matrices may share a buffer): their codes, then their block parameters from
/// `scales_offset` (in u32 words) on.
#[derive(Debug, Clone)]
pub struct MatrixPart {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
    pub first_row: usize,
    pub rows: usize,
    pub scales_offset: usize,
}

impl MatrixPart {
    pub fn binding(&self) -> Binding {
        Binding { buffer: self.buffer.clone(), offset: self.offset, size: self.size }
    }
}

/// A `[rows, cols]` weight matrix (`rows` outputs of `cols` inputs) on the GPU.
#[derive(Debug, Clone)]
pub struct GpuMatrix {
    pub format: MatrixFormat,
    pub rows: usize,
    pub cols: usize,
    /// Stored by input (`quant::by_input_rows`), in one part: its parts' rows are inputs.
    pub by_input: bool,
    pub parts: Vec<MatrixPart>,
}

impl GpuMatrix {
    /// Uploads a packed matrix, split into as few parts as the adapter's binding limit allows.
    pub fn upload(gpu: &Gpu, label: &str, matrix: &PackedMatrix) -> Result<GpuMatrix> {
        let PackedMatrix { format, rows, cols, .. } = *matrix;
        let limit = binding_limit(gpu);
        let row_bytes = format.bytes(1, cols) + 4;
        let rows_per_part = (limit / row_bytes) as usize;
        if rows_per_part == 0 {
            return Err(Error::TooBig(format!(
                "{label}: one row of {cols} {} weights ({row_bytes} bytes) exceeds the adapter's {limit}-byte storage bindings",
                format.name()
            )));
        }
        let mut parts = Vec::with_capacity(rows.div_ceil(rows_per_part));
        for first_row in (0..rows.max(1)).step_by(rows_per_part) {
            let part_rows = rows_per_part.min(rows - first_row.min(rows));
            let words = matrix.rows_words(first_row, part_rows);
            check_size(gpu, label, (words.len() * 4) as u64)?;
            let buffer = buffer_with(gpu, label, bytemuck::cast_slice(&words), storage_usage())?;
            let scales_offset = part_rows * format.row_words(cols);
            let size = buffer.size();
            parts.push(MatrixPart { buffer, offset: 0, size, first_row, rows: part_rows, scales_offset });
        }
        Ok(GpuMatrix { format, rows, cols, by_input: false, parts })
    }

    /// Whether `bytes` fit one storage binding of the adapter.
    pub fn fits_one_binding(gpu: &Gpu, bytes: u64) -> bool {
        bytes <= binding_limit(gpu)
    }

    /// Uploads a matrix of `cols` inputs packed by input (`PackedMatrix::pack_by_input`), in one
    /// part: the products read it whole. Float formats only: int8 and nf4 keep their blocks along
    /// inputs, so that a file `quantize` wrote and the same quantization at load time agree.
    pub fn upload_by_input(gpu: &Gpu, label: &str, stored: &PackedMatrix, cols: usize) -> Result<GpuMatrix> {
        let bytes = (stored.words.len() * 4) as u64;
        if stored.format.is_quantized() {
            return Err(Error::InvalidArgument(format!(
                "{label}: {} matrices are stored by output (their blocks run along inputs)",
                stored.format.name()
            )));
        }
        if stored.rows != crate::quant::by_input_rows(cols) {
            return Err(Error::InvalidArgument(format!(
                "{label}: {} stored rows for {cols} inputs, not {}",
                stored.rows,
                crate::quant::by_input_rows(cols)
            )));
        }
        if !Self::fits_one_binding(gpu, bytes) {
            return Err(Error::TooBig(format!(
                "{label}: {bytes} bytes stored by input for {cols} inputs do not fit one of the adapter's {}-byte storage bindings",
                binding_limit(gpu)
            )));
        }
        check_size(gpu, label, bytes)?;
        let buffer = buffer_with(gpu, label, bytemuck::cast_slice(&stored.words), storage_usage())?;
        let format = stored.format;
        let part = MatrixPart {
            size: buffer.size(),
            buffer,
            offset: 0,
            first_row: 0,
            rows: stored.rows,
            scales_offset: stored.rows * format.row_words(stored.cols),
        };
        Ok(GpuMatrix { format, rows: stored.cols, cols, by_input: true, parts: vec![part] })
    }

    /// Uploads small matrices into one buffer, each at an offset a binding may start at, so that
    /// one kernel can read them all through one binding ([`GpuMatrix::shared_buffer`]). Falls back
    /// to [`GpuMatrix::upload`] each when they do not fit one binding together.
    pub fn upload_together(gpu: &Gpu, label: &str, matrices: &[PackedMatrix]) -> Result<Vec<GpuMatrix>> {
        let align = u64::from(gpu.limits.min_storage_buffer_offset_alignment).max(16);
        let limit = binding_limit(gpu);
        let mut offsets = Vec::with_capacity(matrices.len());
        let mut end = 0u64;
        for matrix in matrices {
            let offset = end.next_multiple_of(align);
            offsets.push(offset);
            end = offset + (matrix.words.len() * 4) as u64;
        }
        if end > limit || matrices.iter().any(|m| m.words.is_empty()) {
            return matrices.iter().map(|matrix| GpuMatrix::upload(gpu, label, matrix)).collect();
        }
        let mut bytes = vec![0u8; end as usize];
        for (matrix, &offset) in matrices.iter().zip(&offsets) {
            let words: &[u8] = bytemuck::cast_slice(&matrix.words);
            bytes[offset as usize..offset as usize + words.len()].copy_from_slice(words);
        }
        let buffer = buffer_with(gpu, label, &bytes, storage_usage())?;
        let parts = matrices.iter().zip(offsets).map(|(matrix, offset)| {
            let PackedMatrix { format, rows, cols, .. } = *matrix;
            let part = MatrixPart {
                buffer: buffer.clone(),
                offset,
                size: (matrix.words.len() * 4) as u64,
                first_row: 0,
                rows,
                scales_offset: rows * format.row_words(cols),
            };
            GpuMatrix { format, rows, cols, by_input: false, parts: vec![part] }
        });
        Ok(parts.collect())
    }

    /// The buffer this matrix shares with others uploaded together, and where (in bytes) it
    /// starts there; `None` unless it is one part in a shared buffer.
    pub fn shared_buffer(&self) -> Option<(&wgpu::Buffer, u64)> {
        match self.parts.as_slice() {
            [part] if part.size < part.buffer.size() || part.offset > 0 => Some((&part.buffer, part.offset)),
            _ => None,
        }
    }

    /// Uploads a row-major `[rows, cols]` matrix of f16 values, as f16.
    pub fn from_f16(gpu: &Gpu, label: &str, rows: usize, cols: usize, data: &[f16]) -> Result<GpuMatrix> {
        let values: Vec<f32> = data.iter().map(|x| x.to_f32()).collect();
        Self::from_f32(gpu, label, rows, cols, &values)
    }

    /// Uploads a row-major `[rows, cols]` matrix given in f32, rounding to f16.
    pub fn from_f32(gpu: &Gpu, label: &str, rows: usize, cols: usize, data: &[f32]) -> Result<GpuMatrix> {
        Self::upload(gpu, label, &PackedMatrix::pack(MatrixFormat::F16, rows, cols, data)?)
    }

    /// `vec4`s of weights from one stored row to the next.
    pub fn row_vec4s(&self) -> usize {
        self.format.row_vec4s(if self.by_input { self.rows } else { self.cols })
    }

    /// Bytes the matrix occupies on the GPU.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|part| part.size).sum()
    }
}

/// The most bytes one storage binding of the adapter holds.
fn binding_limit(gpu: &Gpu) -> u64 {
    gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size)
}
