//! Matrix-vector products: `y (+)= act(W·x (+ bias))` with f16 weights and f32 arithmetic.

use half::f16;

use super::{expect_len, to_u32, wgsl, Activation, Recorder};
use crate::error::Result;
use crate::gpu::{Access, GpuMatrix, GpuVector, KernelSource, RowMapping};

const F16_WEIGHTS: KernelSource = KernelSource {
    name: "matvec_f16",
    parts: &[wgsl::WEIGHTS_F16, wgsl::REDUCE, wgsl::ACTIVATION, wgsl::MATVEC],
};
const PACKED_WEIGHTS: KernelSource = KernelSource {
    name: "matvec_packed",
    parts: &[wgsl::WEIGHTS_PACKED, wgsl::REDUCE, wgsl::ACTIVATION, wgsl::MATVEC],
};

const BINDINGS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite];
const BINDINGS_BIAS: &[Access] =
    &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite, Access::Read];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols4: u32,
    stride4: u32,
    padding: u32,
}

/// What happens to `W·x` before it is stored.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a GpuVector>,
    pub activation: Activation,
    /// Add to the output instead of overwriting it (a residual connection).
    pub accumulate: bool,
}

impl Epilogue<'_> {
    pub const PLAIN: Epilogue<'static> =
        Epilogue { bias: None, activation: Activation::None, accumulate: false };
    pub const ACCUMULATE: Epilogue<'static> =
        Epilogue { bias: None, activation: Activation::None, accumulate: true };

    pub fn then(activation: Activation) -> Epilogue<'static> {
        Epilogue { activation, ..Epilogue::PLAIN }
    }
}

impl<'a> Epilogue<'a> {
    pub fn bias(bias: &'a GpuVector, activation: Activation) -> Epilogue<'a> {
        Epilogue { bias: Some(bias), activation, accumulate: false }
    }
}

/// Records `y (+)= act(matrix·x (+ bias))`.
pub fn matvec(
    rec: &mut Recorder,
    label: &str,
    matrix: &GpuMatrix,
    x: &GpuVector,
    y: &GpuVector,
    epilogue: Epilogue,
) -> Result<()> {
    expect_len(label, "x", x.len, matrix.cols)?;
    expect_len(label, "y", y.len, matrix.rows)?;
    if let Some(bias) = epilogue.bias {
        expect_len(label, "bias", bias.len, matrix.rows)?;
    }
    let gpu = rec.gpu;
    let source = if gpu.f16 { &F16_WEIGHTS } else { &PACKED_WEIGHTS };
    let (entry, rows_per_group) = match (gpu.row_mapping, epilogue.bias.is_some()) {
        (RowMapping::ThreadPerRow, false) => ("thread_per_row", 64),
        (RowMapping::ThreadPerRow, true) => ("thread_per_row_bias", 64),
        (RowMapping::WorkgroupPerRow, false) => ("workgroup_per_row", 1),
        (RowMapping::WorkgroupPerRow, true) => ("workgroup_per_row_bias", 1),
    };
    let constants = [
        ("ACTIVATION", epilogue.activation as u32 as f64),
        ("ACCUMULATE", if epilogue.accumulate { 1.0 } else { 0.0 }),
    ];
    let bindings = if epilogue.bias.is_some() { BINDINGS_BIAS } else { BINDINGS };
    let pipeline = gpu.pipeline(source, entry, bindings, &constants)?;
    let params = Params {
        rows: to_u32(label, matrix.rows)?,
        cols4: to_u32(label, matrix.cols.div_ceil(4))?,
        stride4: to_u32(label, matrix.stride / 4)?,
        padding: 0,
    };
    let mut storage = vec![matrix.binding(), x.binding(), y.binding()];
    if let Some(bias) = epilogue.bias {
        storage.push(bias.binding());
    }
    let workgroups = gpu.grid(to_u32(label, matrix.rows.div_ceil(rows_per_group))?);
    rec.record(&pipeline, label, &params, &storage, workgroups)
}

/// CPU reference of [`matvec`]: `matrix` is row-major `[y.len(), x.len()]`; `y` holds the
/// previous output when accumulating.
pub fn matvec_ref(
    matrix: &[f16],
    x: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
    accumulate_into: Option<&[f32]>,
) -> Vec<f32> {
    let cols = x.len();
    let rows = matrix.len().checked_div(cols).unwrap_or(0);
    (0..rows)
        .map(|row| {
            let weights = &matrix[row * cols..(row + 1) * cols];
            let mut dot: f64 =
                weights.iter().zip(x).map(|(w, &x)| f64::from(w.to_f32()) * f64::from(x)).sum();
            if let Some(bias) = bias {
                dot += f64::from(bias[row]);
            }
            let value = activation.apply(dot);
            let base = accumulate_into.map_or(0.0, |y| f64::from(y[row]));
            (base + value) as f32
        })
        .collect()
}
