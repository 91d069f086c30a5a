//! The adapter's read bandwidth, measured by `bench` in the same run as decode: decode at batch 1
//! reads every weight once per token, so its floor is the weights' bytes over this rate.

use std::time::Instant;

use rwkv_wgpu::gpu::{Gpu, GpuTensor};
use rwkv_wgpu::kernels::{self, Recorder};
use rwkv_wgpu::Result;

use super::bench::median;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Bandwidth {
    pub bytes_per_second: f64,
    /// The buffer read, and how many times per submit.
    pub buffer_bytes: u64,
    pub reads_per_submit: usize,
}

/// Reads a buffer of up to 256 MiB (far more than any cache) several times per submit and times
/// the submits by the wall clock: the median of `repeats` after a warm-up.
pub fn measure(gpu: &Gpu, repeats: usize) -> Result<Bandwidth> {
    let limit = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
    let values = (limit.min(256 << 20) / 16 * 4) as usize;
    // A CPU driver reads a few GB/s: fewer reads keep its run short. A GPU needs many, so that
    // the submit's own latency is small beside them.
    let software = gpu.info.device_type == wgpu::DeviceType::Cpu;
    let reads = if software { 2 } else { 32 };
    let data = GpuTensor::zeros(gpu, "bandwidth probe", 1, values)?;
    let workgroups = (values / 4).div_ceil(kernels::read_sum_span(values));
    let sums = GpuTensor::zeros(gpu, "bandwidth sums", 1, workgroups)?;
    let mut rec = Recorder::new(gpu);
    for _ in 0..reads {
        kernels::read_sum(&mut rec, "bandwidth", &data, &sums)?;
    }
    let step = rec.finish();
    step.run(gpu);
    gpu.wait()?;
    let mut seconds = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        step.run(gpu);
        gpu.wait()?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    let buffer_bytes = (values * 4) as u64;
    Ok(Bandwidth {
        bytes_per_second: (buffer_bytes * reads as u64) as f64 / median(seconds),
        buffer_bytes,
        reads_per_submit: reads,
    })
}
