//! GPU time per kernel, from timestamp queries: each dispatch of a step runs in a compute pass of
//! its own that writes a timestamp at its start and end. Slower than a normal run (no overlap
//! between dispatches), so it says where the time goes, not how fast a step is.

#[cfg(not(target_arch = "wasm32"))]
use {
    super::buffer::map_read,
    super::{Gpu, Step},
    crate::error::{Error, Result},
};

/// The most timestamps one query set may hold in wgpu.
#[cfg(not(target_arch = "wasm32"))]
const MAX_QUERIES: usize = 4096;

/// GPU seconds spent in one dispatch of a step.
#[derive(Debug, Clone)]
pub struct DispatchTime {
    /// The dispatch's label (e.g. "L3.att.rkvg").
    pub label: String,
    /// The kernel it runs (its pipeline's label).
    pub kernel: String,
    pub seconds: f64,
}

// Natively only: it waits for the GPU.
#[cfg(not(target_arch = "wasm32"))]
impl Step {
    /// Runs the step once, each dispatch timed on the GPU.
    pub fn profile(&self, gpu: &Gpu) -> Result<Vec<DispatchTime>> {
        if !gpu.timestamps {
            return Err(Error::Gpu(format!("{} has no timestamp queries to profile with", gpu.describe())));
        }
        let period = f64::from(gpu.queue.get_timestamp_period()) * 1e-9;
        let mut times = Vec::with_capacity(self.len());
        for group in self.dispatches.chunks(MAX_QUERIES / 2) {
            let count = (group.len() * 2) as u32;
            let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count,
            });
            let bytes = u64::from(count) * 8;
            let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let readback = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder =
                gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
            for (i, dispatch) in group.iter().enumerate() {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&dispatch.label),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &queries,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                dispatch.encode(&mut pass);
            }
            encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
            encoder.copy_buffer_to_buffer(&resolved, 0, &readback, 0, Some(bytes));
            gpu.queue.submit([encoder.finish()]);
            let ticks: Vec<u64> =
                map_read(gpu, &readback, bytes, |view| bytemuck::cast_slice::<u8, u64>(view).to_vec())?;
            for (dispatch, pair) in group.iter().zip(ticks.chunks_exact(2)) {
                times.push(DispatchTime {
                    label: dispatch.label.clone(),
                    kernel: dispatch.kernel().to_string(),
                    seconds: pair[1].saturating_sub(pair[0]) as f64 * period,
                });
            }
        }
        Ok(times)
    }
}
