//! How to choose and configure the device: the graphics API, and the options that pick kernels
//! (most are `None` by default: `Gpu::new` then chooses from the adapter).

use super::CoopMatrix;

/// Which graphics API to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl Backend {
    /// A backend by its name: "vulkan", "metal", "dx12" or "gl".
    pub fn parse(name: &str) -> crate::error::Result<Backend> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "vulkan" => Backend::Vulkan,
            "metal" => Backend::Metal,
            "dx12" => Backend::Dx12,
            "gl" => Backend::Gl,
            other => {
                return Err(crate::error::Error::InvalidArgument(format!(
                    "unknown backend `{other}`: use vulkan, metal, dx12 or gl"
                )))
            }
        })
    }

    pub(super) fn flags(self) -> wgpu::Backends {
        match self {
            Backend::Vulkan => wgpu::Backends::VULKAN,
            Backend::Metal => wgpu::Backends::METAL,
            Backend::Dx12 => wgpu::Backends::DX12,
            Backend::Gl => wgpu::Backends::GL,
        }
    }
}

/// How matrix-vector kernels map output rows onto threads.
///
/// CPU drivers such as lavapipe run each workgroup as a fiber and pay microseconds per barrier, so
/// one thread computing a whole row is ~15× faster there; real GPUs want a workgroup per row so
/// that neighbouring threads read neighbouring weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowMapping {
    ThreadPerRow,
    WorkgroupPerRow,
    /// A subgroup per row and several rows per workgroup, summed in registers: GPUs with
    /// subgroup operations (one-row products; prefill tiles as `WorkgroupPerRow`).
    SubgroupPerRow,
}

/// How to choose and configure the device.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// Restrict to one API; `None` tries Vulkan, Metal and DX12 first and GL last.
    pub backend: Option<Backend>,
    /// Pick the first adapter whose name contains this (case-insensitive).
    pub adapter: Option<String>,
    /// Prefer a discrete GPU (`true`, the default) or an integrated one.
    pub high_performance: bool,
    /// Read f16 weights natively where the adapter offers SHADER_F16 (`Some(true)`), never
    /// (`Some(false)`: as packed `u32` pairs), or where that is faster (`None`: everywhere but on
    /// CPU drivers, where lavapipe runs the packed kernels ~25% faster).
    pub allow_f16: Option<bool>,
    /// Override the row mapping chosen from the adapter type (for tests and tuning).
    pub row_mapping: Option<RowMapping>,
    /// Use subgroup operations where the adapter has them (`Some(true)`), never (`Some(false)`:
    /// baseline WebGPU, as in browsers), or where that is faster (`None`: everywhere but on CPU
    /// drivers, which emulate them: lavapipe's prefill is ~20% slower with them).
    pub allow_subgroups: Option<bool>,
    /// Multiply in f16 in the matrix-matrix kernels (prefill) where native f16 is used: faster
    /// on GPUs, but inputs rounded to f16 put logits ~1e-3 × std from the exact ones, about half
    /// the official package's own fp16 error (off by default; `--f16-arithmetic`).
    pub f16_arithmetic: bool,
    /// Act as if storage bindings could hold at most this many bytes (to test how large
    /// matrices are split, as browsers' 128 MiB limit requires).
    pub binding_limit: Option<u64>,
    /// Decode one token in fewer, fused dispatches (`Gpu::fused_decode`): always, never, or
    /// (`None`) everywhere but on CPU drivers, where every thread of a product normalizing its
    /// input again made lavapipe's decode ~8% slower (BENCHMARKS.md).
    pub fused_decode: Option<bool>,
    /// Run RWKV-7's recurrence over long prompts in chunks side by side (`Gpu::wkv_chunks`):
    /// always, never, or (`None`) everywhere but on CPU drivers, which have no idle threads to
    /// fill and would only do the chunked form's extra arithmetic.
    pub wkv_chunks: Option<bool>,
    /// Store the channel mix's W_v by input, so that decoding skips the whole weight row of
    /// each zero input of its squared ReLU (`Gpu::value_by_input`; `None` and `Some(true)`), or
    /// by output (`Some(false)`), skipping only whole groups of four zero inputs. By input is no
    /// slower on lavapipe either (BENCHMARKS.md).
    pub value_by_input: Option<bool>,
    /// Outputs per workgroup of the one-token product by input, in vec4 lanes: a power of two
    /// up to its workgroup's threads (64 with the thread-per-row mapping, 256 with the others),
    /// the other threads splitting the inputs (`Gpu::by_input_lanes`; for tuning,
    /// `examples/value_product.rs` tries each).
    pub by_input_lanes: Option<usize>,
    /// Multiply prompts' matrices on cooperative matrices (tensor cores; `Gpu::coop`): where a
    /// GPU lists 16×16×16 or 8×8×8 f16 products summed in f32 and has subgroups of at most 32
    /// (`None`), never (`Some(false)`, `--no-coop`), or also on CPU drivers with the feature
    /// (`Some(true)`: lavapipe from Mesa 25.1 runs them, which lets CPU machines test them).
    pub coop: Option<bool>,
    /// Which size of cooperative matrices to use: by default the largest the adapter lists.
    pub coop_matrix: Option<CoopMatrix>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            backend: None,
            adapter: None,
            high_performance: true,
            allow_f16: None,
            row_mapping: None,
            allow_subgroups: None,
            f16_arithmetic: false,
            binding_limit: None,
            fused_decode: None,
            wkv_chunks: None,
            value_by_input: None,
            by_input_lanes: None,
            coop: None,
            coop_matrix: None,
        }
    }
}
