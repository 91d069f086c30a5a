//! Tensors that live on the GPU, and reading results back.
//!
//! Two kinds of tensor cover the engine:
//! - [`GpuVector`]: f32 values (activations, state, per-channel parameters). Its allocation is
//!   padded to a multiple of 4 elements, zero-filled, so kernels may read it as `vec4<f32>`.
//! - [`GpuMatrix`]: an f16 weight matrix `[rows, cols]`, row-major, each row padded with zeros to
//!   a multiple of 4 elements so a row is a whole number of `vec4<f16>` (or `vec2<u32>` when
//!   packed for adapters without SHADER_F16: the bytes are the same).

use half::f16;
use wgpu::util::DeviceExt;

use super::kernel::Binding;
use super::Gpu;
use crate::error::{Error, Result};

const F32: u64 = 4;

/// Elements rounded up to whole `vec4`s.
pub fn padded4(len: usize) -> usize {
    len.div_ceil(4) * 4
}

fn storage_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC
}

fn check_size(gpu: &Gpu, label: &str, bytes: u64) -> Result<()> {
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

/// A run of f32 values on the GPU: a whole buffer, or one row of a [`GpuVector::stack`].
#[derive(Debug, Clone)]
pub struct GpuVector {
    pub buffer: wgpu::Buffer,
    /// Byte offset of element 0 in `buffer`.
    pub offset: u64,
    pub len: usize,
}

impl GpuVector {
    /// A zero-filled vector of `len` elements.
    pub fn zeros(gpu: &Gpu, label: &str, len: usize) -> Result<GpuVector> {
        let bytes = padded4(len.max(1)) as u64 * F32;
        check_size(gpu, label, bytes)?;
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: storage_usage(),
            mapped_at_creation: false,
        });
        Ok(GpuVector { buffer, offset: 0, len })
    }

    /// A vector holding `data`.
    pub fn from_slice(gpu: &Gpu, label: &str, data: &[f32]) -> Result<GpuVector> {
        let mut padded = data.to_vec();
        padded.resize(padded4(data.len().max(1)), 0.0);
        check_size(gpu, label, padded.len() as u64 * F32)?;
        let buffer = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(&padded),
            usage: storage_usage(),
        });
        Ok(GpuVector { buffer, offset: 0, len: data.len() })
    }

    /// `count` vectors of `len` elements in one buffer, each starting at an offset the adapter
    /// can bind, so one kernel can write all of them and others can bind each one alone.
    /// Returns the rows and the distance between them in elements.
    pub fn stack(gpu: &Gpu, label: &str, count: usize, len: usize) -> Result<(Vec<GpuVector>, usize)> {
        let align = (gpu.storage_alignment() / F32).max(4) as usize;
        let stride = padded4(len.max(1)).div_ceil(align) * align;
        let whole = GpuVector::zeros(gpu, label, stride * count)?;
        let rows = (0..count)
            .map(|i| GpuVector { buffer: whole.buffer.clone(), offset: (i * stride) as u64 * F32, len })
            .collect();
        Ok((rows, stride))
    }

    /// [`GpuVector::stack`] with the number of rows fixed at compile time.
    pub fn stack_of<const N: usize>(gpu: &Gpu, label: &str, len: usize) -> Result<([GpuVector; N], usize)> {
        let (rows, stride) = Self::stack(gpu, label, N, len)?;
        let rows = rows.try_into().map_err(|_| Error::Gpu(format!("{label}: expected {N} rows")))?;
        Ok((rows, stride))
    }

    /// Binds this vector, including its padding to a whole `vec4`.
    pub fn binding(&self) -> Binding {
        Binding {
            buffer: self.buffer.clone(),
            offset: self.offset,
            size: padded4(self.len.max(1)) as u64 * F32,
        }
    }

    /// Binds `count` consecutive rows of `stride` elements starting at this vector.
    pub fn rows_binding(&self, count: usize, stride: usize) -> Binding {
        Binding { buffer: self.buffer.clone(), offset: self.offset, size: (count * stride) as u64 * F32 }
    }

    /// Overwrites the vector's contents (queued; takes effect before the next submitted work).
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::InvalidArgument(format!(
                "writing {} values into a GPU vector of {}",
                data.len(),
                self.len
            )));
        }
        gpu.queue.write_buffer(&self.buffer, self.offset, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Copies the vector back to the CPU (waits for the GPU).
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let readback = Readback::new(gpu, "read vector", self.len)?;
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        readback.copy_from(&mut encoder, self);
        gpu.queue.submit([encoder.finish()]);
        readback.read(gpu)
    }
}

/// An f16 matrix `[rows, cols]` on the GPU (see the module docs for the layout).
#[derive(Debug, Clone)]
pub struct GpuMatrix {
    pub buffer: wgpu::Buffer,
    pub rows: usize,
    pub cols: usize,
    /// Elements from the start of one row to the next (`cols` rounded up to 4).
    pub stride: usize,
}

impl GpuMatrix {
    /// Uploads a row-major `[rows, cols]` matrix of f16 values.
    pub fn from_f16(gpu: &Gpu, label: &str, rows: usize, cols: usize, data: &[f16]) -> Result<GpuMatrix> {
        if data.len() != rows * cols {
            return Err(Error::InvalidArgument(format!(
                "{label}: {} values for a [{rows}, {cols}] matrix",
                data.len()
            )));
        }
        let stride = padded4(cols.max(1));
        let bytes = (rows.max(1) * stride) as u64 * 2;
        check_size(gpu, label, bytes)?;
        let padded: Vec<f16> = if stride == cols {
            data.to_vec()
        } else {
            let mut padded = vec![f16::ZERO; rows * stride];
            for (dst, src) in padded.chunks_exact_mut(stride).zip(data.chunks_exact(cols.max(1))) {
                dst[..cols].copy_from_slice(src);
            }
            padded
        };
        let buffer = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(&padded),
            usage: storage_usage(),
        });
        Ok(GpuMatrix { buffer, rows, cols, stride })
    }

    /// Uploads a row-major `[rows, cols]` matrix given in f32, rounding to f16.
    pub fn from_f32(gpu: &Gpu, label: &str, rows: usize, cols: usize, data: &[f32]) -> Result<GpuMatrix> {
        let halves: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
        Self::from_f16(gpu, label, rows, cols, &halves)
    }

    pub fn binding(&self) -> Binding {
        Binding::whole(&self.buffer)
    }

    /// Bytes the matrix occupies on the GPU.
    pub fn bytes(&self) -> u64 {
        self.buffer.size()
    }
}

/// A CPU-readable buffer that results are copied into at the end of a step.
pub struct Readback {
    buffer: wgpu::Buffer,
    len: usize,
}

impl Readback {
    pub fn new(gpu: &Gpu, label: &str, len: usize) -> Result<Readback> {
        let bytes = padded4(len.max(1)) as u64 * F32;
        if bytes > gpu.limits.max_buffer_size {
            return Err(Error::TooBig(format!("{label}: {bytes}-byte readback buffer")));
        }
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Readback { buffer, len })
    }

    /// Records a copy of `source` (which must not be longer than this buffer) into it.
    pub fn copy_from(&self, encoder: &mut wgpu::CommandEncoder, source: &GpuVector) {
        let len = source.len.min(self.len);
        encoder.copy_buffer_to_buffer(
            &source.buffer,
            source.offset,
            &self.buffer,
            0,
            Some(padded4(len) as u64 * F32),
        );
    }

    /// Waits for the copy, then returns the values.
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let bytes = self.len as u64 * F32;
        self.buffer.slice(..bytes.max(F32)).map_async(wgpu::MapMode::Read, move |result| {
            // The receiver outlives this callback: `read` waits for it below.
            let _ = sender.send(result);
        });
        gpu.wait()?;
        receiver
            .recv()
            .map_err(|_| Error::Gpu("the GPU never finished mapping the readback buffer".into()))?
            .map_err(|e| Error::Gpu(format!("mapping the readback buffer failed: {e}")))?;
        let values = {
            let view = self
                .buffer
                .get_mapped_range(..bytes.max(F32))
                .map_err(|e| Error::Gpu(format!("reading the readback buffer failed: {e}")))?;
            bytemuck::cast_slice::<u8, f32>(&view)[..self.len].to_vec()
        };
        self.buffer.unmap();
        Ok(values)
    }
}
