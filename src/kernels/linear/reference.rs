//! CPU reference of the linear layers.

use super::super::Activation;

/// The operand of [`linear_ref`].
#[derive(Debug, Clone, Copy)]
pub enum OperandRef<'a> {
    None,
    /// One per output.
    Bias(&'a [f32]),
    /// One per output and row.
    Gate(&'a [f32]),
}

/// CPU reference of [`linear`]: `matrix` is row-major `[out, in]` with `in` = `in_cols` (the
/// values the GPU decodes from its format), `x` rows of `in_cols`; `accumulate_into` holds the
/// previous output when accumulating.
pub fn linear_ref(
    matrix: &[f32],
    in_cols: usize,
    x: &[f32],
    operand: OperandRef,
    activation: Activation,
    accumulate_into: Option<&[f32]>,
) -> Vec<f32> {
    let outputs = matrix.len() / in_cols.max(1);
    let mut y = Vec::with_capacity(x.len() / in_cols.max(1) * outputs);
    for (r, x_row) in x.chunks_exact(in_cols.max(1)).enumerate() {
        for o in 0..outputs {
            let weights = &matrix[o * in_cols..(o + 1) * in_cols];
            let dot: f64 = weights.iter().zip(x_row).map(|(&w, &x)| f64::from(w) * f64::from(x)).sum();
            let value = match operand {
                OperandRef::None => activation.apply(dot),
                OperandRef::Bias(bias) => activation.apply(dot + f64::from(bias[o])),
                OperandRef::Gate(gate) => activation.apply(dot) * f64::from(gate[r * outputs + o]),
            };
            let at = r * outputs + o;
            let base = accumulate_into.map_or(0.0, |y| f64::from(y[at]));
            y.push((base + value) as f32);
        }
    }
    y
}
