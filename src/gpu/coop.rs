//! Cooperative matrices (tensor cores): which size of them the products use on an adapter, and
//! what an adapter lists.

/// The square cooperative matrices the tensor-core products are built from
/// (`shaders/coop_16.wgsl`, `shaders/coop_8.wgsl`): 16 × 16 on NVIDIA's tensor cores and the
/// Vulkan drivers that list them, 8 × 8 on Apple's simdgroup matrices (Metal) and lavapipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoopMatrix {
    Side16,
    Side8,
}

impl CoopMatrix {
    /// Largest first: a bigger matrix does more per load.
    pub const ALL: [CoopMatrix; 2] = [CoopMatrix::Side16, CoopMatrix::Side8];

    pub fn side(self) -> u32 {
        match self {
            CoopMatrix::Side16 => 16,
            CoopMatrix::Side8 => 8,
        }
    }
}

/// The cooperative matrices to multiply on, as `wanted` (`GpuOptions::coop`) and `size`
/// (`GpuOptions::coop_matrix`) ask: by default the largest square size whose f16 products
/// summed in f32 the adapter lists, where its subgroups are at most 32 wide, so that a 32-thread
/// workgroup fills whole subgroups (cooperative operations need them; AMD's wave64 would leave
/// half of one idle). CPU drivers only when forced (`Some(true)`), with any size: lavapipe runs
/// 16 × 16 products though it lists 8 × 8, which lets CPU machines test both kernels, but
/// emulates them ~15× slower than the blocked products it runs by default (BENCHMARKS.md).
pub fn tensor_cores(
    adapter: &wgpu::Adapter,
    wanted: Option<bool>,
    size: Option<CoopMatrix>,
) -> Option<CoopMatrix> {
    if wanted == Some(false) || !adapter.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    {
        return None;
    }
    let info = adapter.get_info();
    let properties = adapter.cooperative_matrix_properties();
    let cpu = info.device_type == wgpu::DeviceType::Cpu;
    let usable = |matrix: CoopMatrix| {
        let side = matrix.side();
        let listed = properties.iter().any(|p| {
            (p.m_size, p.n_size, p.k_size) == (side, side, side)
                && p.ab_type == wgpu::CooperativeScalarType::F16
                && p.cr_type == wgpu::CooperativeScalarType::F32
        });
        listed && info.subgroup_max_size <= 32 && !cpu
    };
    let forced = wanted == Some(true) && cpu;
    match size {
        Some(matrix) => (usable(matrix) || forced).then_some(matrix),
        None => CoopMatrix::ALL.into_iter().find(|&m| usable(m)).or(forced.then_some(CoopMatrix::Side16)),
    }
}

/// The cooperative-matrix products an adapter lists, as `M×N×K A/B type → C type`.
#[cfg(not(target_arch = "wasm32"))]
pub fn describe_cooperative_matrices(adapter: &wgpu::Adapter) -> Vec<String> {
    if !adapter.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        return Vec::new();
    }
    let name = |t: wgpu::CooperativeScalarType| format!("{t:?}").to_lowercase();
    let mut lines: Vec<String> = adapter
        .cooperative_matrix_properties()
        .iter()
        .map(|p| format!("{}×{}×{} {} → {}", p.m_size, p.n_size, p.k_size, name(p.ab_type), name(p.cr_type)))
        .collect();
    // A driver may list a size twice (with and without saturating accumulation), not always
    // next to each other.
    lines.sort();
    lines.dedup();
    lines
}
