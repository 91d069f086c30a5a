//! Tensors that live on the GPU, and reading results back.
//!
//! Two kinds of tensor cover the engine:
//! - [`GpuTensor`]: f32 values `[rows, cols]` (activations of the tokens of a step, states of
//!   several sequences, per-channel parameters). Each row is padded to a multiple of 4 elements,
//!   zero-filled, so kernels may read rows as `vec4<f32>`; kernels find a row at
//!   `row * stride` with `stride = (cols + 3) & ~3`.
//! - [`super::GpuMatrix`] (in `matrix.rs`): a weight matrix in any `MatrixFormat`.

use super::Gpu;
use crate::error::{Error, Result};

/// One buffer range to bind.
#[derive(Debug, Clone)]
pub struct Binding {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl Binding {
    pub fn whole(buffer: &wgpu::Buffer) -> Binding {
        Binding { buffer: buffer.clone(), offset: 0, size: buffer.size() }
    }
}

const F32: u64 = 4;

/// Where a stack's entries start, in elements: each must be a binding offset the adapter takes.
fn stack_alignment(gpu: &Gpu) -> usize {
    (gpu.storage_alignment() / F32).max(4) as usize
}

/// Elements rounded up to whole `vec4`s.
pub fn padded4(len: usize) -> usize {
    len.div_ceil(4) * 4
}

pub(super) fn storage_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC
}

pub(super) fn check_size(gpu: &Gpu, label: &str, bytes: u64) -> Result<()> {
    let max_binding = gpu.limits.max_storage_buffer_binding_size;
    let max_buffer = gpu.limits.max_buffer_size;
    if bytes > max_binding || bytes > max_buffer {
        return Err(Error::TooBig(format!(
            "{label} needs a {bytes}-byte buffer but the adapter allows {} bytes per storage binding",
            max_binding.min(max_buffer)
        )));
    }
    Ok(())
}

/// Pads each row of a row-major `[rows, cols]` slice to whole `vec4`s.
fn pad_rows(data: &[f32], cols: usize) -> Vec<f32> {
    let stride = padded4(cols);
    if stride == cols {
        return data.to_vec();
    }
    let mut padded = vec![0.0; data.len() / cols.max(1) * stride];
    for (dst, src) in padded.chunks_exact_mut(stride).zip(data.chunks_exact(cols.max(1))) {
        dst[..cols].copy_from_slice(src);
    }
    padded
}

/// Tensors in one buffer (a kernel writes them all), and the distance from one to the next in
/// elements.
pub type Stack = (Vec<GpuTensor>, usize);

/// f32 values `[rows, cols]` on the GPU: a whole buffer, the first rows of one, or one entry of a
/// [`GpuTensor::stack`].
#[derive(Debug, Clone)]
pub struct GpuTensor {
    pub buffer: wgpu::Buffer,
    /// Byte offset of element 0 in `buffer`.
    pub offset: u64,
    pub rows: usize,
    pub cols: usize,
}

impl GpuTensor {
    /// Elements from one row to the next.
    pub fn stride(&self) -> usize {
        padded4(self.cols)
    }

    /// Values, without the padding.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> u64 {
        (self.rows * self.stride()).max(4) as u64 * F32
    }

    /// A zero-filled buffer of `elements` f32 values.
    fn allocate(gpu: &Gpu, label: &str, elements: usize) -> Result<wgpu::Buffer> {
        let bytes = elements.max(4) as u64 * F32;
        check_size(gpu, label, bytes)?;
        Ok(gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: storage_usage(),
            mapped_at_creation: false,
        }))
    }

    /// A zero-filled `[rows, cols]` tensor.
    pub fn zeros(gpu: &Gpu, label: &str, rows: usize, cols: usize) -> Result<GpuTensor> {
        let buffer = Self::allocate(gpu, label, rows * padded4(cols))?;
        Ok(GpuTensor { buffer, offset: 0, rows, cols })
    }

    /// A one-row tensor holding `data`.
    pub fn from_slice(gpu: &Gpu, label: &str, data: &[f32]) -> Result<GpuTensor> {
        Self::from_rows(gpu, label, data.len(), data)
    }

    /// A `[data.len() / cols, cols]` tensor holding the row-major `data`.
    pub fn from_rows(gpu: &Gpu, label: &str, cols: usize, data: &[f32]) -> Result<GpuTensor> {
        if cols == 0 || data.len() % cols != 0 {
            return Err(Error::InvalidArgument(format!(
                "{label}: {} values do not make rows of {cols}",
                data.len()
            )));
        }
        let mut padded = pad_rows(data, cols);
        padded.resize(padded.len().max(4), 0.0);
        check_size(gpu, label, padded.len() as u64 * F32)?;
        let buffer = buffer_with(gpu, label, bytemuck::cast_slice(&padded), storage_usage())?;
        Ok(GpuTensor { buffer, offset: 0, rows: data.len() / cols, cols })
    }

    /// `count` tensors of `[rows, cols]` in one buffer, each starting at an offset the adapter can
    /// bind, so one kernel can write all of them and others can bind each one alone.
    pub fn stack(gpu: &Gpu, label: &str, count: usize, rows: usize, cols: usize) -> Result<Stack> {
        let align = stack_alignment(gpu);
        let entry = (rows * padded4(cols)).max(4).div_ceil(align) * align;
        let buffer = Self::allocate(gpu, label, count * entry)?;
        let entries = (0..count)
            .map(|i| GpuTensor { buffer: buffer.clone(), offset: (i * entry) as u64 * F32, rows, cols })
            .collect();
        Ok((entries, entry))
    }

    /// The most rows of `cols` values that each of a [`GpuTensor::stack`]'s `count` entries can
    /// have, the whole stack within one storage binding (0 where not one row fits).
    pub fn stack_rows_within_binding(gpu: &Gpu, count: usize, cols: usize) -> usize {
        let limit = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
        let align = stack_alignment(gpu);
        let entry = usize::try_from(limit / F32).unwrap_or(usize::MAX) / count.max(1) / align * align;
        entry / padded4(cols).max(1)
    }

    /// The first `rows` rows, as a tensor of their own (same buffer).
    pub fn first_rows(&self, rows: usize) -> GpuTensor {
        GpuTensor { rows: rows.min(self.rows), ..self.clone() }
    }

    /// Binds the tensor, including each row's padding.
    pub fn binding(&self) -> Binding {
        Binding { buffer: self.buffer.clone(), offset: self.offset, size: self.bytes() }
    }

    /// Binds `count` consecutive stack entries starting at this one, `entry_stride` apart.
    pub fn entries_binding(&self, count: usize, entry_stride: usize) -> Binding {
        let size = ((count - 1) * entry_stride) as u64 * F32 + self.bytes();
        Binding { buffer: self.buffer.clone(), offset: self.offset, size }
    }

    /// Overwrites the first `data.len() / cols` rows (queued; takes effect before the next
    /// submitted work).
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        self.write_rows(gpu, 0, data)
    }

    /// Overwrites rows from `first` on with the row-major `data`.
    pub fn write_rows(&self, gpu: &Gpu, first: usize, data: &[f32]) -> Result<()> {
        let cols = self.cols.max(1);
        if data.len() % cols != 0 || first + data.len() / cols > self.rows {
            return Err(Error::InvalidArgument(format!(
                "writing {} values from row {first} into a [{}, {}] GPU tensor",
                data.len(),
                self.rows,
                self.cols
            )));
        }
        let offset = self.offset + (first * self.stride()) as u64 * F32;
        gpu.queue.write_buffer(&self.buffer, offset, bytemuck::cast_slice(&pad_rows(data, cols)));
        Ok(())
    }

    /// Copies the tensor back to the CPU, without the padding.
    pub async fn read_async(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let readback = Readback::new(gpu, "read tensor", self.rows, self.cols)?;
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        readback.copy_from(&mut encoder, self);
        gpu.queue.submit([encoder.finish()]);
        readback.read_rows_async(gpu, self.rows).await
    }

    /// [`GpuTensor::read_async`], waiting for the GPU.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        pollster::block_on(self.read_async(gpu))
    }
}

/// A CPU-readable buffer that results are copied into at the end of a step.
pub struct Readback {
    buffer: wgpu::Buffer,
    rows: usize,
    cols: usize,
}

impl Readback {
    /// Room for up to `rows` rows of `cols` values.
    pub fn new(gpu: &Gpu, label: &str, rows: usize, cols: usize) -> Result<Readback> {
        let bytes = (rows * padded4(cols)).max(4) as u64 * F32;
        if bytes > gpu.limits.max_buffer_size {
            return Err(Error::TooBig(format!("{label}: {bytes}-byte readback buffer")));
        }
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Readback { buffer, rows, cols })
    }

    /// Records a copy of `source`'s rows (as many as fit) into this buffer; returns its bytes.
    pub fn copy_from(&self, encoder: &mut wgpu::CommandEncoder, source: &GpuTensor) -> u64 {
        let rows = source.rows.min(self.rows);
        let bytes = (rows * source.stride()).max(4) as u64 * F32;
        encoder.copy_buffer_to_buffer(&source.buffer, source.offset, &self.buffer, 0, Some(bytes));
        bytes
    }

    /// Once the copy is done, the first `rows` rows without padding.
    pub async fn read_rows_async(&self, gpu: &Gpu, rows: usize) -> Result<Vec<f32>> {
        let rows = rows.min(self.rows);
        let stride = padded4(self.cols);
        let bytes = (rows * stride).max(4) as u64 * F32;
        map_read_async(gpu, &self.buffer, bytes, |view| {
            let padded: &[f32] = bytemuck::cast_slice(view);
            padded.chunks(stride).take(rows).flat_map(|row| &row[..self.cols]).copied().collect()
        })
        .await
    }
}

/// A buffer created holding `contents` (padded to 4 bytes). Unlike wgpu's `create_buffer_init`,
/// which panics when the device is gone, a lost device is an error here.
pub(crate) fn buffer_with(
    gpu: &Gpu,
    label: &str,
    contents: &[u8],
    usage: wgpu::BufferUsages,
) -> Result<wgpu::Buffer> {
    gpu.check_alive()?;
    let size = (contents.len() as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT).max(4);
    let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage,
        mapped_at_creation: true,
    });
    {
        let mut view = buffer
            .get_mapped_range_mut(..)
            .map_err(|e| gpu.error(&format!("{label}: cannot fill a new buffer"), &e))?;
        view.slice(..contents.len()).copy_from_slice(contents);
    }
    buffer.unmap();
    Ok(buffer)
}

/// Maps the first `bytes` of a MAP_READ buffer once the GPU has written them, reads them with
/// `read`, and unmaps it. Natively the device's waiting thread drives it until the mapping is
/// done; in a browser the mapping completes through the event loop, which only an `await` lets
/// run. Either way the caller's thread is free meanwhile.
pub(crate) async fn map_read_async<T>(
    gpu: &Gpu,
    buffer: &wgpu::Buffer,
    bytes: u64,
    read: impl FnOnce(&[u8]) -> T,
) -> Result<T> {
    let (sender, receiver) = futures_channel::oneshot::channel();
    buffer.slice(..bytes).map_async(wgpu::MapMode::Read, move |result| {
        let _ = sender.send(result);
    });
    let value = async {
        #[cfg(not(target_arch = "wasm32"))]
        gpu.wait_async().await?;
        receiver
            .await
            .map_err(|_| gpu.error("mapping a readback buffer", &"the GPU never finished it"))?
            .map_err(|e| gpu.error("mapping a readback buffer", &e))?;
        gpu.check()?;
        let view =
            buffer.get_mapped_range(..bytes).map_err(|e| gpu.error("reading a readback buffer", &e))?;
        Ok(read(&view))
    }
    .await;
    // Unmapped on every path, errors included: a buffer left mapped fails every later submit
    // that copies into it.
    buffer.unmap();
    value
}

/// [`map_read_async`], waiting for the GPU.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn map_read<T>(
    gpu: &Gpu,
    buffer: &wgpu::Buffer,
    bytes: u64,
    read: impl FnOnce(&[u8]) -> T,
) -> Result<T> {
    pollster::block_on(map_read_async(gpu, buffer, bytes, read))
}
