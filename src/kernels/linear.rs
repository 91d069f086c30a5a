//! Linear layers over the rows of a step: `y[r] (+)= act(W·x[r] + bias)` or
//! `y[r] (+)= act(W·x[r]) ⊙ gate[r]`, with f16 weights and f32 arithmetic. One row (decoding
//! one sequence) runs the matrix-vector kernels; more rows run the tiled matrix-matrix kernels.

use super::{check_stack, expect_shape, to_u32, wgsl, Activation, Recorder};
use crate::error::{Error, Result};
use crate::gpu::{Access, Binding, GpuMatrix, GpuTensor, KernelSource, RowMapping};
use crate::quant::MatrixFormat;

// The kernel assemblies: matrix-vector (with the workgroup reduction) and matrix-matrix, for
// each way of storing weights.
const MATVEC_F16: KernelSource = KernelSource {
    name: "matvec_f16",
    parts: &[wgsl::WEIGHTS_F16, wgsl::REDUCE, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATVEC],
};
const MATVEC_PACKED: KernelSource = KernelSource {
    name: "matvec_packed",
    parts: &[wgsl::WEIGHTS_PACKED, wgsl::REDUCE, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATVEC],
};
const MATVEC_INT8: KernelSource = KernelSource {
    name: "matvec_int8",
    parts: &[wgsl::WEIGHTS_INT8, wgsl::REDUCE, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATVEC],
};
const MATVEC_NF4: KernelSource = KernelSource {
    name: "matvec_nf4",
    parts: &[wgsl::WEIGHTS_NF4, wgsl::REDUCE, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATVEC],
};
const MATMUL_F16: KernelSource = KernelSource {
    name: "matmul_f16",
    parts: &[wgsl::WEIGHTS_F16, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATMUL],
};
const MATMUL_PACKED: KernelSource = KernelSource {
    name: "matmul_packed",
    parts: &[wgsl::WEIGHTS_PACKED, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATMUL],
};
const MATMUL_INT8: KernelSource = KernelSource {
    name: "matmul_int8",
    parts: &[wgsl::WEIGHTS_INT8, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATMUL],
};
const MATMUL_NF4: KernelSource = KernelSource {
    name: "matmul_nf4",
    parts: &[wgsl::WEIGHTS_NF4, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATMUL],
};

/// The assembly for a matrix format, one or more rows, and the adapter's features.
fn source(format: MatrixFormat, one_row: bool, native_f16: bool) -> &'static KernelSource {
    match (format, one_row, native_f16) {
        (MatrixFormat::F16, true, true) => &MATVEC_F16,
        (MatrixFormat::F16, true, false) => &MATVEC_PACKED,
        (MatrixFormat::Int8, true, _) => &MATVEC_INT8,
        (MatrixFormat::Nf4, true, _) => &MATVEC_NF4,
        (MatrixFormat::F16, false, true) => &MATMUL_F16,
        (MatrixFormat::F16, false, false) => &MATMUL_PACKED,
        (MatrixFormat::Int8, false, _) => &MATMUL_INT8,
        (MatrixFormat::Nf4, false, _) => &MATMUL_NF4,
    }
}

const BINDINGS: &[Access] = &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite];
const BINDINGS_OPERAND: &[Access] =
    &[Access::Uniform, Access::Read, Access::Read, Access::ReadWrite, Access::Read];

/// Outputs per matmul tile side on GPUs (`tiled` in matmul.wgsl), and per thread block on CPU
/// drivers (`blocked`).
const TILE: usize = 64;
const BLOCK: usize = 4;

/// One dispatch over one part of a matrix: `Params` of matvec.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatvecParams {
    out_cols: u32,
    part_cols: u32,
    col_offset: u32,
    cols4: u32,
    stride4: u32,
    scales_offset: u32,
    block_cols: u32,
    block_stride: u32,
}

/// `Params` of matmul.wgsl: the rows of x, then the same fields as [`MatvecParams`].
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    rows: u32,
    part: MatvecParams,
    padding: [u32; 3],
}

/// A vector that takes part in the epilogue.
#[derive(Debug, Clone, Copy)]
pub enum Operand<'a> {
    None,
    /// Added to `W·x` before the activation: one per output, [1, out].
    Bias(&'a GpuTensor),
    /// Multiplies the activated result, one per output and row, [rows, out] (RWKV-4…6's
    /// receptance gate on the channel mix).
    Gate(&'a GpuTensor),
}

/// What happens to `W·x` before it is stored.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    pub operand: Operand<'a>,
    pub activation: Activation,
    /// Add to the output instead of overwriting it (a residual connection).
    pub accumulate: bool,
    /// The input is mostly exact zeros (after a squared ReLU): the matrix-vector kernels skip
    /// the weights that would multiply them, which saves reading them.
    pub sparse_input: bool,
}

impl Epilogue<'_> {
    pub const PLAIN: Epilogue<'static> = Epilogue {
        operand: Operand::None,
        activation: Activation::None,
        accumulate: false,
        sparse_input: false,
    };
    pub const ACCUMULATE: Epilogue<'static> = Epilogue { accumulate: true, ..Epilogue::PLAIN };

    pub fn then(activation: Activation) -> Epilogue<'static> {
        Epilogue { activation, ..Epilogue::PLAIN }
    }
}

impl<'a> Epilogue<'a> {
    pub fn bias(bias: &'a GpuTensor, activation: Activation) -> Epilogue<'a> {
        Epilogue { operand: Operand::Bias(bias), activation, ..Epilogue::PLAIN }
    }

    /// `y += gate ⊙ W·x`.
    pub fn gated_accumulate(gate: &'a GpuTensor) -> Epilogue<'a> {
        Epilogue { operand: Operand::Gate(gate), accumulate: true, ..Epilogue::PLAIN }
    }

    /// The same, for an input that is mostly zeros.
    pub fn sparse_input(self) -> Epilogue<'a> {
        Epilogue { sparse_input: true, ..self }
    }
}

/// Records `y[r] (+)= …` for every row of `x` ([rows, matrix.cols] → [rows, matrix.rows]).
pub fn linear(
    rec: &mut Recorder,
    label: &str,
    matrix: &GpuMatrix,
    x: &GpuTensor,
    y: &GpuTensor,
    epilogue: Epilogue,
) -> Result<()> {
    expect_shape(label, "y", y, x.rows, matrix.rows)?;
    record(rec, label, matrix, x, (y.binding(), matrix.rows, 0), epilogue)
}

/// Records a product whose output columns fill `out`, consecutive entries of one stack `stride`
/// apart: the first `out[0].cols` outputs of every row go to `out[0]`, the next to `out[1]`…
pub fn linear_into(
    rec: &mut Recorder,
    label: &str,
    matrix: &GpuMatrix,
    x: &GpuTensor,
    out: &[GpuTensor],
    stride: usize,
    epilogue: Epilogue,
) -> Result<()> {
    check_stack(label, "output", out, stride)?;
    let first = &out[0];
    expect_shape(label, "output", first, x.rows, first.cols)?;
    if out.len() * first.cols != matrix.rows {
        return Err(Error::InvalidArgument(format!(
            "{label}: {} outputs of {} for a matrix of {} rows",
            out.len(),
            first.cols,
            matrix.rows
        )));
    }
    record(rec, label, matrix, x, (first.entries_binding(out.len(), stride), first.cols, stride), epilogue)
}

/// `output` is (binding, outputs per block, distance between blocks).
fn record(
    rec: &mut Recorder,
    label: &str,
    matrix: &GpuMatrix,
    x: &GpuTensor,
    output: (Binding, usize, usize),
    epilogue: Epilogue,
) -> Result<()> {
    if x.cols != matrix.cols {
        return Err(Error::InvalidArgument(format!(
            "{label}: `x` has {} columns, the matrix takes {}",
            x.cols, matrix.cols
        )));
    }
    let (operand, operand_kind) = match epilogue.operand {
        Operand::None => (None, 0.0),
        Operand::Bias(bias) => {
            expect_shape(label, "bias", bias, 1, matrix.rows)?;
            (Some(bias), 1.0)
        }
        Operand::Gate(gate) => {
            expect_shape(label, "gate", gate, x.rows, matrix.rows)?;
            (Some(gate), 2.0)
        }
    };
    let gpu = rec.gpu;
    let mut constants = vec![
        ("ACTIVATION", epilogue.activation as u32 as f64),
        ("ACCUMULATE", if epilogue.accumulate { 1.0 } else { 0.0 }),
    ];
    if operand.is_some() {
        constants.push(("OPERAND", operand_kind));
    }
    let one_row = x.rows == 1;
    if epilogue.sparse_input && one_row {
        constants.push(("SPARSE_INPUT", 1.0));
    }
    let bindings = if operand.is_some() { BINDINGS_OPERAND } else { BINDINGS };
    let (y, block, block_stride) = output;
    let with_operand = operand.is_some();
    let pipeline = gpu.pipeline(
        source(matrix.format, one_row, gpu.f16),
        entry(gpu.row_mapping, one_row, with_operand),
        bindings,
        &constants,
    )?;
    for part in &matrix.parts {
        let mut storage = vec![part.binding(), x.binding(), y.clone()];
        storage.extend(operand.map(GpuTensor::binding));
        let part_params = MatvecParams {
            out_cols: to_u32(label, matrix.rows)?,
            part_cols: to_u32(label, part.rows)?,
            col_offset: to_u32(label, part.first_row)?,
            cols4: to_u32(label, matrix.cols.div_ceil(4))?,
            stride4: to_u32(label, matrix.row_vec4s())?,
            scales_offset: to_u32(label, part.scales_offset)?,
            block_cols: to_u32(label, block.max(1))?,
            block_stride: to_u32(label, block_stride)?,
        };
        if one_row {
            let rows_per_group = if gpu.row_mapping == RowMapping::ThreadPerRow { 64 } else { 1 };
            let workgroups = gpu.grid(to_u32(label, part.rows.div_ceil(rows_per_group))?);
            rec.record(&pipeline, label, &part_params, &storage, workgroups)?;
        } else {
            let workgroups = match gpu.row_mapping {
                RowMapping::ThreadPerRow => [part.rows.div_ceil(BLOCK).div_ceil(64), x.rows.div_ceil(BLOCK)],
                RowMapping::WorkgroupPerRow => [part.rows.div_ceil(TILE), x.rows.div_ceil(TILE)],
            };
            let workgroups = [to_u32(label, workgroups[0])?, to_u32(label, workgroups[1])?, 1];
            let params = MatmulParams { rows: to_u32(label, x.rows)?, part: part_params, padding: [0; 3] };
            rec.record(&pipeline, label, &params, &storage, workgroups)?;
        }
    }
    Ok(())
}

/// The kernel entry point for a row mapping, one row or many, and whether an operand is bound.
fn entry(mapping: RowMapping, one_row: bool, with_operand: bool) -> &'static str {
    match (mapping, one_row, with_operand) {
        (RowMapping::ThreadPerRow, true, false) => "thread_per_row",
        (RowMapping::ThreadPerRow, true, true) => "thread_per_row_operand",
        (RowMapping::WorkgroupPerRow, true, false) => "workgroup_per_row",
        (RowMapping::WorkgroupPerRow, true, true) => "workgroup_per_row_operand",
        (RowMapping::ThreadPerRow, false, false) => "blocked",
        (RowMapping::ThreadPerRow, false, true) => "blocked_operand",
        (RowMapping::WorkgroupPerRow, false, false) => "tiled",
        (RowMapping::WorkgroupPerRow, false, true) => "tiled_operand",
    }
}

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
