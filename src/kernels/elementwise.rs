//! Element-wise references.

/// `a + (b − a) ⊙ t`: the CPU reference of the value-residual pull that
/// [`crate::kernels::Epilogue::lerp`] applies in a linear kernel's epilogue.
pub fn lerp_ref(a: &[f32], b: &[f32], t: &[f32]) -> Vec<f32> {
    a.iter().zip(b).zip(t).map(|((&a, &b), &t)| a + (b - a) * t).collect()
}
