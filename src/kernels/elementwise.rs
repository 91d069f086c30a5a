//! Element-wise kernels.

use super::{expect_len, to_u32, wgsl, Recorder};
use crate::error::Result;
use crate::gpu::{Access, GpuVector, KernelSource};

const LERP: KernelSource = KernelSource { name: "lerp", parts: &[wgsl::LERP] };
const LERP_BINDINGS: &[Access] =
    &[Access::Uniform, Access::Read, Access::Read, Access::Read, Access::ReadWrite];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    padding: [u32; 3],
}

/// Records `out = a + (b − a) ⊙ t`.
pub fn lerp(
    rec: &mut Recorder,
    label: &str,
    a: &GpuVector,
    b: &GpuVector,
    t: &GpuVector,
    out: &GpuVector,
) -> Result<()> {
    for (name, operand) in [("b", b), ("t", t), ("out", out)] {
        expect_len(label, name, operand.len, a.len)?;
    }
    let pipeline = rec.gpu.pipeline(&LERP, "lerp", LERP_BINDINGS, &[])?;
    let params = Params { len: to_u32(label, a.len)?, padding: [0; 3] };
    let workgroups = rec.gpu.grid(to_u32(label, a.len.div_ceil(64))?);
    rec.record(&pipeline, label, &params, &[a.binding(), b.binding(), t.binding(), out.binding()], workgroups)
}

/// CPU reference of [`lerp`].
pub fn lerp_ref(a: &[f32], b: &[f32], t: &[f32]) -> Vec<f32> {
    a.iter().zip(b).zip(t).map(|((&a, &b), &t)| a + (b - a) * t).collect()
}
