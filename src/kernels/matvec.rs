//! Matrix-vector products: `y (+)= act(W·x + bias)` or `y (+)= act(W·x) ⊙ gate`, with f16
//! weights and f32 arithmetic.

use half::f16;

use super::{expect_len, to_u32, wgsl, Activation, Recorder};
use crate::error::{Error, Result};
use crate::gpu::{Access, Binding, GpuMatrix, GpuVector, KernelSource, RowMapping};

const F16_WEIGHTS: KernelSource = KernelSource {
    name: "matvec_f16",
    parts: &[wgsl::WEIGHTS_F16, wgsl::REDUCE, wgsl::ACTIVATION, wgsl::MATVEC],
};
const PACKED_WEIGHTS: KernelSource = KernelSource {
    name: "matvec_packed",
    parts: &[wgsl::WEIGHTS_PACKED, wgsl::REDUCE, wgsl::ACTIVATION, wgsl::MATVEC],
};

const BINDINGS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite];
const BINDINGS_OPERAND: &[Access] =
    &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite, Access::Read];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols4: u32,
    stride4: u32,
    block_rows: u32,
    block_stride: u32,
    padding: [u32; 3],
}

/// A per-row vector that takes part in the epilogue.
#[derive(Debug, Clone, Copy)]
pub enum Operand<'a> {
    None,
    /// Added to `W·x` before the activation.
    Bias(&'a GpuVector),
    /// Multiplies the activated result (RWKV-4…6's receptance gate on the channel mix).
    Gate(&'a GpuVector),
}

/// What happens to `W·x` before it is stored.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    pub operand: Operand<'a>,
    pub activation: Activation,
    /// Add to the output instead of overwriting it (a residual connection).
    pub accumulate: bool,
}

impl Epilogue<'_> {
    pub const PLAIN: Epilogue<'static> =
        Epilogue { operand: Operand::None, activation: Activation::None, accumulate: false };
    pub const ACCUMULATE: Epilogue<'static> = Epilogue { accumulate: true, ..Epilogue::PLAIN };

    pub fn then(activation: Activation) -> Epilogue<'static> {
        Epilogue { activation, ..Epilogue::PLAIN }
    }
}

impl<'a> Epilogue<'a> {
    pub fn bias(bias: &'a GpuVector, activation: Activation) -> Epilogue<'a> {
        Epilogue { operand: Operand::Bias(bias), activation, accumulate: false }
    }

    /// `y += gate ⊙ W·x`.
    pub fn gated_accumulate(gate: &'a GpuVector) -> Epilogue<'a> {
        Epilogue { operand: Operand::Gate(gate), activation: Activation::None, accumulate: true }
    }
}

/// Records `y (+)= …` for `y` of `matrix.rows` elements.
pub fn matvec(
    rec: &mut Recorder,
    label: &str,
    matrix: &GpuMatrix,
    x: &GpuVector,
    y: &GpuVector,
    epilogue: Epilogue,
) -> Result<()> {
    expect_len(label, "y", y.len, matrix.rows)?;
    record(rec, label, matrix, x, (y.binding(), matrix.rows, 0), epilogue)
}

/// Records a product whose rows fill `out`, consecutive rows of one stack `stride` apart: the
/// first `out[0].len` rows of the matrix go to `out[0]`, the next to `out[1]`, and so on.
pub fn matvec_into_rows(
    rec: &mut Recorder,
    label: &str,
    matrix: &GpuMatrix,
    x: &GpuVector,
    out: &[GpuVector],
    stride: usize,
    epilogue: Epilogue,
) -> Result<()> {
    let first = out.first().ok_or_else(|| Error::InvalidArgument(format!("{label}: no outputs")))?;
    expect_len(label, "out", out.len() * first.len, matrix.rows)?;
    for (index, row) in out.iter().enumerate() {
        let in_place = row.buffer == first.buffer && row.offset == first.offset + (index * stride * 4) as u64;
        if row.len != first.len || !in_place {
            return Err(Error::InvalidArgument(format!(
                "{label}: output {index} is not row {index} of one stack"
            )));
        }
    }
    record(rec, label, matrix, x, (first.rows_binding(out.len(), stride), first.len, stride), epilogue)
}

/// `output` is (binding, rows per block, distance between blocks).
fn record(
    rec: &mut Recorder,
    label: &str,
    matrix: &GpuMatrix,
    x: &GpuVector,
    output: (Binding, usize, usize),
    epilogue: Epilogue,
) -> Result<()> {
    expect_len(label, "x", x.len, matrix.cols)?;
    let (operand, operand_kind) = match epilogue.operand {
        Operand::None => (None, 0.0),
        Operand::Bias(bias) => (Some(bias), 1.0),
        Operand::Gate(gate) => (Some(gate), 2.0),
    };
    if let Some(operand) = operand {
        expect_len(label, "operand", operand.len, matrix.rows)?;
    }
    let gpu = rec.gpu;
    let source = if gpu.f16 { &F16_WEIGHTS } else { &PACKED_WEIGHTS };
    let (entry, rows_per_group) = match (gpu.row_mapping, operand.is_some()) {
        (RowMapping::ThreadPerRow, false) => ("thread_per_row", 64),
        (RowMapping::ThreadPerRow, true) => ("thread_per_row_operand", 64),
        (RowMapping::WorkgroupPerRow, false) => ("workgroup_per_row", 1),
        (RowMapping::WorkgroupPerRow, true) => ("workgroup_per_row_operand", 1),
    };
    let mut constants = vec![
        ("ACTIVATION", epilogue.activation as u32 as f64),
        ("ACCUMULATE", if epilogue.accumulate { 1.0 } else { 0.0 }),
    ];
    if operand.is_some() {
        constants.push(("OPERAND", operand_kind));
    }
    let bindings = if operand.is_some() { BINDINGS_OPERAND } else { BINDINGS };
    let pipeline = gpu.pipeline(source, entry, bindings, &constants)?;
    let (y, block_rows, block_stride) = output;
    let params = Params {
        rows: to_u32(label, matrix.rows)?,
        cols4: to_u32(label, matrix.cols.div_ceil(4))?,
        stride4: to_u32(label, matrix.stride / 4)?,
        block_rows: to_u32(label, block_rows.max(1))?,
        block_stride: to_u32(label, block_stride)?,
        padding: [0; 3],
    };
    let mut storage = vec![matrix.binding(), x.binding(), y];
    storage.extend(operand.map(GpuVector::binding));
    let workgroups = gpu.grid(to_u32(label, matrix.rows.div_ceil(rows_per_group))?);
    rec.record(&pipeline, label, &params, &storage, workgroups)
}

/// The operand of [`matvec_ref`].
#[derive(Debug, Clone, Copy)]
pub enum OperandRef<'a> {
    None,
    Bias(&'a [f32]),
    Gate(&'a [f32]),
}

/// CPU reference of [`matvec`]: `matrix` is row-major `[rows, x.len()]`; `accumulate_into`
/// holds the previous output when accumulating.
pub fn matvec_ref(
    matrix: &[f16],
    x: &[f32],
    operand: OperandRef,
    activation: Activation,
    accumulate_into: Option<&[f32]>,
) -> Vec<f32> {
    let cols = x.len();
    let rows = matrix.len().checked_div(cols).unwrap_or(0);
    (0..rows)
        .map(|row| {
            let weights = &matrix[row * cols..(row + 1) * cols];
            let dot: f64 = weights.iter().zip(x).map(|(w, &x)| f64::from(w.to_f32()) * f64::from(x)).sum();
            let value = match operand {
                OperandRef::None => activation.apply(dot),
                OperandRef::Bias(bias) => activation.apply(dot + f64::from(bias[row])),
                OperandRef::Gate(gate) => activation.apply(dot) * f64::from(gate[row]),
            };
            let base = accumulate_into.map_or(0.0, |y| f64::from(y[row]));
            (base + value) as f32
        })
        .collect()
}
