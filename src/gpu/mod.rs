//! GPU plumbing: choosing an adapter, the device and queue, the pipeline cache, buffers and readback.
//!
//! [`Gpu`] is made once and shared by everything that runs on the device. It records which
//! optional features the adapter has (SHADER_F16, SUBGROUP); nothing here *requires* them, so the
//! engine runs on baseline WebGPU.

mod buffer;
mod coop;
mod kernel;
mod matrix;
mod options;
#[cfg(not(target_arch = "wasm32"))]
mod poller;
mod pool;
mod profile;

use std::sync::{Arc, Mutex};

pub use self::buffer::padded4;
pub use self::buffer::{Binding, GpuTensor, Readback, Stack};
use self::coop::tensor_cores;
pub use self::coop::CoopMatrix;
pub use self::kernel::{Access, CompiledKernel, Dispatch, KernelSource, Pipeline, Step, REDUCE};
pub use self::matrix::{GpuMatrix, MatrixPart};
pub use self::options::{Backend, GpuOptions, RowMapping};
pub use self::pool::ScratchPool;
pub use self::profile::DispatchTime;

use crate::error::{Error, Result};

/// One line per adapter, for `rwkv-wgpu adapters` and for error messages.
pub fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
    if info.backend == wgpu::Backend::BrowserWebGpu {
        // Browsers keep the adapter anonymous (an empty description, no driver) by default.
        let name = if info.name.is_empty() { "the browser's adapter" } else { info.name.as_str() };
        let software = if info.device_type == wgpu::DeviceType::Cpu { ", software fallback" } else { "" };
        return format!("{name} (WebGPU{software})");
    }
    format!(
        "{} ({:?}, {:?}, driver {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    )
}

/// The adapters to choose from: every one natively; in a browser, which lists none, the one it
/// offers.
async fn adapters(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
    high_performance: bool,
) -> Vec<wgpu::Adapter> {
    if cfg!(not(target_arch = "wasm32")) {
        return instance.enumerate_adapters(backends).await;
    }
    let power_preference = if high_performance {
        wgpu::PowerPreference::HighPerformance
    } else {
        wgpu::PowerPreference::LowPower
    };
    let options = wgpu::RequestAdapterOptions { power_preference, ..Default::default() };
    instance.request_adapter(&options).await.into_iter().collect()
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// All adapters the chosen backends can see.
#[cfg(not(target_arch = "wasm32"))]
pub fn list_adapters(backend: Option<Backend>) -> Vec<(wgpu::AdapterInfo, Vec<String>)> {
    let backends = backend.map_or(wgpu::Backends::all(), Backend::flags);
    let instance = instance(backends);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    adapters.iter().map(|a| (a.get_info(), coop::describe_cooperative_matrices(a))).collect()
}

const INSTALL_HINT: &str = "install a Vulkan, Metal or DX12 driver for your GPU; on Linux without a GPU, \
     `apt-get install mesa-vulkan-drivers` provides the CPU driver lavapipe";

/// Orders adapters: the requested kind of GPU first, CPU drivers last, GL after native APIs.
fn preference(info: &wgpu::AdapterInfo, high_performance: bool) -> (u8, u8) {
    let kind = match (info.device_type, high_performance) {
        (wgpu::DeviceType::DiscreteGpu, true) | (wgpu::DeviceType::IntegratedGpu, false) => 0,
        (wgpu::DeviceType::DiscreteGpu, false) | (wgpu::DeviceType::IntegratedGpu, true) => 1,
        (wgpu::DeviceType::VirtualGpu, _) => 2,
        (wgpu::DeviceType::Other, _) => 3,
        (wgpu::DeviceType::Cpu, _) => 4,
    };
    let api = u8::from(info.backend == wgpu::Backend::Gl);
    (api, kind)
}

/// Errors the device reports asynchronously, kept until the next call that can return them.
type ErrorSlot = Arc<Mutex<Option<String>>>;
/// Why the device was lost, once it has been: every later call fails with it.
type LostSlot = Arc<std::sync::OnceLock<String>>;

/// The device, its queue, and what the adapter offers.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Shaders may use native f16 (SHADER_F16 present and allowed).
    pub f16: bool,
    /// Prefill multiplies in f16 (asked for, and `f16`).
    pub f16_arithmetic: bool,
    /// Shaders may use subgroup operations (SUBGROUP present and allowed): workgroup sums use
    /// them.
    pub subgroups: bool,
    /// Compute passes can write GPU timestamps (for profiling).
    pub timestamps: bool,
    pub row_mapping: RowMapping,
    /// Steps of one token run the fused kernels: the layer norm and token shift in the
    /// prologue of the products that read them, RWKV-7's time mix between its products in one
    /// dispatch (6 dispatches per RWKV-7 layer instead of 14).
    pub fused_decode: bool,
    /// Prompt steps walk RWKV-7's recurrence in chunks side by side, then carry the state from
    /// chunk to chunk (`kernels::wkv7_chunked`), instead of every token one after the other.
    pub wkv_chunks: bool,
    /// The channel mix's W_v is stored by input (`quant::by_input_rows`) where it is in a float
    /// format and fits one binding: one-token products read only the rows of nonzero inputs.
    pub value_by_input: bool,
    /// `GpuOptions::by_input_lanes`: by default 16 on CPU drivers (their vectors' width) and 4
    /// on GPUs, whose lanes then read one 32-byte sector of f16 weights per input, the fewest
    /// that waste none, so that the most workgroups share the outputs.
    pub by_input_lanes: usize,
    /// Products of many rows with f16, int8 or nf4 weights run on cooperative matrices of this
    /// size (`shaders/matmul_coop.wgsl`), with f16 on.
    pub coop: Option<CoopMatrix>,
    pipelines: kernel::PipelineCache,
    errors: ErrorSlot,
    lost: LostSlot,
    #[cfg(not(target_arch = "wasm32"))]
    poller: poller::Poller,
}

impl Gpu {
    /// Chooses an adapter and opens a device on it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(options: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::new_async(options))
    }

    pub async fn new_async(options: &GpuOptions) -> Result<Gpu> {
        let backends = options.backend.map_or(wgpu::Backends::all(), Backend::flags);
        let instance = instance(backends);
        let adapters = adapters(&instance, backends, options.high_performance).await;
        if adapters.is_empty() {
            let which = options.backend.map_or("any backend".to_string(), |b| format!("{b:?}"));
            return Err(Error::NoAdapter(format!("no adapter on {which}: {INSTALL_HINT}")));
        }
        let wanted = options.adapter.as_deref().map(str::to_lowercase);
        let mut candidates: Vec<wgpu::Adapter> = adapters
            .iter()
            .filter(|a| wanted.as_ref().is_none_or(|w| a.get_info().name.to_lowercase().contains(w.as_str())))
            .cloned()
            .collect();
        if candidates.is_empty() {
            let names: Vec<String> = adapters.iter().map(|a| describe_adapter(&a.get_info())).collect();
            return Err(Error::NoAdapter(format!(
                "no adapter name contains {:?}; available: {}",
                options.adapter.as_deref().unwrap_or(""),
                names.join("; ")
            )));
        }
        candidates.sort_by_key(|a| preference(&a.get_info(), options.high_performance));
        let adapter = candidates.remove(0);
        Self::open(adapter, options).await
    }

    async fn open(adapter: wgpu::Adapter, options: &GpuOptions) -> Result<Gpu> {
        let info = adapter.get_info();
        let available = adapter.features();
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let wanted = options.allow_f16.unwrap_or(!cpu);
        let f16 = wanted && available.contains(wgpu::Features::SHADER_F16);
        let subgroups =
            options.allow_subgroups.unwrap_or(!cpu) && available.contains(wgpu::Features::SUBGROUP);
        let mut features = wgpu::Features::empty();
        if f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let coop = if f16 { tensor_cores(&adapter, options.coop, options.coop_matrix) } else { None };
        if coop.is_some() {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        // Only `--profile` writes timestamps; asking costs nothing where they exist.
        let timestamps = available.contains(wgpu::Features::TIMESTAMP_QUERY);
        if timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let row_mapping = match options.row_mapping {
            Some(RowMapping::SubgroupPerRow) if !subgroups => RowMapping::WorkgroupPerRow,
            Some(mapping) => mapping,
            None if cpu => RowMapping::ThreadPerRow,
            None if subgroups => RowMapping::SubgroupPerRow,
            None => RowMapping::WorkgroupPerRow,
        };
        let by_input_lanes = options.by_input_lanes.unwrap_or(if cpu { 16 } else { 4 });
        let by_input_threads = crate::kernels::by_input_threads(row_mapping);
        if !by_input_lanes.is_power_of_two() || by_input_lanes > by_input_threads {
            return Err(Error::InvalidArgument(format!(
                "by-input lanes must be a power of two up to {by_input_threads}, not {by_input_lanes}"
            )));
        }
        // Ask for everything the adapter can do: WebGPU's defaults (e.g. 128 MiB per storage
        // binding) are far below what big models need on real hardware.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("rwkv-wgpu"),
                required_features: features,
                required_limits: limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                // SAFETY: the only experimental feature asked for is cooperative matrices, and
                // only where the adapter reports them; their kernel is checked against the tiled
                // products by tests/coop.rs on every adapter that has them.
                experimental_features: if coop.is_some() {
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("cannot open {}: {e}", describe_adapter(&info))))?;
        let mut limits = limits;
        if let Some(limit) = options.binding_limit {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(limit);
        }

        let errors: ErrorSlot = Arc::default();
        let slot = errors.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            log::error!("wgpu: {error}");
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| error.to_string());
        }));
        let lost: LostSlot = Arc::default();
        let slot = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let _ = slot.set(if message.is_empty() {
                format!("{reason:?}")
            } else {
                format!("{reason:?}: {message}")
            });
        });

        log::info!(
            "adapter: {} (f16: {f16}, subgroups: {subgroups}, cooperative matrices: {coop:?}, {row_mapping:?})",
            describe_adapter(&info)
        );
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            f16,
            f16_arithmetic: options.f16_arithmetic && f16,
            subgroups,
            timestamps,
            row_mapping,
            fused_decode: options.fused_decode.unwrap_or(!cpu),
            wkv_chunks: options.wkv_chunks.unwrap_or(!cpu),
            value_by_input: options.value_by_input.unwrap_or(true),
            by_input_lanes,
            coop,
            pipelines: kernel::PipelineCache::default(),
            errors,
            lost,
            #[cfg(not(target_arch = "wasm32"))]
            poller: poller::Poller::default(),
        })
    }

    /// A one-line description of the adapter in use.
    pub fn describe(&self) -> String {
        describe_adapter(&self.info)
    }

    /// Fails once the device has been lost (driver reset, GPU removed, `destroy`): nothing can
    /// run on it again, and the engine must be dropped and made anew.
    pub fn check_alive(&self) -> Result<()> {
        match self.lost.get() {
            Some(reason) => Err(Error::Gpu(format!(
                "the GPU device was lost ({reason}); drop the engine and create a new one"
            ))),
            None => Ok(()),
        }
    }

    /// The error for an operation that failed with `cause`: that the device was lost, if it was
    /// (wgpu reports a loss only once the device is polled), else `cause` on one line.
    pub(crate) fn error(&self, what: &str, cause: &dyn std::fmt::Display) -> Error {
        let _ = self.device.poll(wgpu::PollType::Poll);
        match self.check_alive() {
            Err(lost) => lost,
            Ok(()) => Error::Gpu(format!("{what}: {}", one_line(&cause.to_string()))),
        }
    }

    /// Returns (and clears) the first error the device reported since the last check, or that
    /// the device was lost.
    pub fn check(&self) -> Result<()> {
        self.check_alive()?;
        let mut slot = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(message) => Err(Error::Gpu(one_line(&message))),
            None => Ok(()),
        }
    }

    /// Blocks until the queue is idle, then reports any error the device raised meanwhile.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        self.check()
    }

    /// [`Gpu::wait`] without blocking the calling thread: the device's waiting thread blocks
    /// instead, and this awaits its answer.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn wait_async(&self) -> Result<()> {
        let Some(answer) = self.poller.wait(&self.device) else {
            return self.wait();
        };
        answer
            .await
            .map_err(|_| Error::Gpu("the thread waiting for the GPU stopped".into()))?
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        self.check()
    }

    /// Runs `work`, turning any validation or out-of-memory error it causes into an `Err`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn scoped<T>(&self, what: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = work();
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(e) = oom {
            return Err(Error::TooBig(format!(
                "{what}: the device ran out of memory ({})",
                one_line(&e.to_string())
            )));
        }
        if let Some(e) = validation {
            return Err(self.error(what, &e));
        }
        value
    }

    /// In a browser an error scope reports only through the event loop, which cannot run while
    /// `work` is on the stack: errors arrive at the uncaptured-error handler and the next check.
    #[cfg(target_arch = "wasm32")]
    pub fn scoped<T>(&self, _what: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
        let value = work();
        self.check()?;
        value
    }

    /// The largest number of workgroups one dispatch dimension may have.
    pub fn max_workgroups_per_dimension(&self) -> u32 {
        self.limits.max_compute_workgroups_per_dimension
    }

    /// Alignment, in bytes, of storage-buffer binding offsets.
    pub fn storage_alignment(&self) -> u64 {
        u64::from(self.limits.min_storage_buffer_offset_alignment)
    }
}

/// wgpu's errors span several lines ("Validation Error\n\nCaused by:\n  …"); ours are one line.
fn one_line(message: &str) -> String {
    let parts: Vec<&str> =
        message.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "Caused by:").collect();
    parts.join(": ")
}
