//! Element-wise kernels.

use super::{expect_shape, to_u32, wgsl, Recorder};
use crate::error::Result;
use crate::gpu::{Access, GpuTensor, KernelSource};

const LERP: KernelSource = KernelSource { name: "lerp", parts: &[wgsl::LERP] };
const LERP_BINDINGS: &[Access] =
    &[Access::Uniform, Access::Read, Access::Read, Access::Read, Access::ReadWrite];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    padding: [u32; 3],
}

/// Records `out = a + (b − a) ⊙ t` for same-shaped tensors.
pub fn lerp(
    rec: &mut Recorder,
    label: &str,
    a: &GpuTensor,
    b: &GpuTensor,
    t: &GpuTensor,
    out: &GpuTensor,
) -> Result<()> {
    for (name, operand) in [("b", b), ("t", t), ("out", out)] {
        expect_shape(label, name, operand, a.rows, a.cols)?;
    }
    let pipeline = rec.gpu.pipeline(&LERP, "lerp", LERP_BINDINGS, &[])?;
    let len = a.rows * a.stride();
    let params = Params { len: to_u32(label, len)?, padding: [0; 3] };
    let workgroups = rec.gpu.grid(to_u32(label, len.div_ceil(64))?);
    rec.record(&pipeline, label, &params, &[a.binding(), b.binding(), t.binding(), out.binding()], workgroups)
}

/// CPU reference of [`lerp`].
pub fn lerp_ref(a: &[f32], b: &[f32], t: &[f32]) -> Vec<f32> {
    a.iter().zip(b).zip(t).map(|((&a, &b), &t)| a + (b - a) * t).collect()
}
