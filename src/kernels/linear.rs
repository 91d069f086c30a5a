//! Linear layers over the rows of a step: `y[r] (+)= act(W·x[r] + bias)` or
//! `y[r] (+)= act(W·x[r]) ⊙ gate[r]`, with weights in any [`MatrixFormat`] and f32 arithmetic.
//! One row (decoding one sequence) runs the matrix-vector kernels; more rows run the tiled
//! matrix-matrix kernels.

use super::{expect_shape, to_u32, wgsl, Activation, Recorder};
use crate::error::{Error, Result};
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, Binding, Gpu, GpuMatrix, GpuTensor, KernelSource, RowMapping};
use crate::quant::{MatrixFormat, INT8_BLOCK, NF4_BLOCK};

/// The kernel assemblies for one way of storing weights: its prelude (binding 1 and
/// `load_weight4`) before the matrix-vector kernel (with the workgroup reduction) and before the
/// matrix-matrix kernel with tiles of `$tile`.
macro_rules! products {
    ($matvec:ident, $matmul:ident, $name:literal, $weights:expr, $tile:expr) => {
        const $matvec: KernelSource = KernelSource {
            name: concat!("matvec_", $name),
            parts: &[$weights, wgsl::REDUCE, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATVEC],
            sizes: &[],
        };
        const $matmul: KernelSource = KernelSource {
            name: concat!("matmul_", $name),
            parts: &[$weights, $tile, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATMUL],
            sizes: &[],
        };
    };
}

products!(MATVEC_F32, MATMUL_F32, "f32", wgsl::WEIGHTS_F32, wgsl::TILE_F32);
products!(MATVEC_BF16, MATMUL_BF16, "bf16", wgsl::WEIGHTS_BF16, wgsl::TILE_F32);
products!(MATVEC_F16, MATMUL_F16, "f16", wgsl::WEIGHTS_F16, wgsl::TILE_F32);
products!(MATVEC_PACKED, MATMUL_PACKED, "packed", wgsl::WEIGHTS_PACKED, wgsl::TILE_F32);
products!(MATVEC_INT8, MATMUL_INT8, "int8", wgsl::WEIGHTS_INT8, wgsl::TILE_F32);
products!(MATVEC_NF4, MATMUL_NF4, "nf4", wgsl::WEIGHTS_NF4, wgsl::TILE_F32);
const MATMUL_F16_ARITHMETIC: KernelSource = KernelSource {
    name: "matmul_f16_arithmetic",
    parts: &[wgsl::WEIGHTS_F16, wgsl::TILE_F16, wgsl::ACTIVATION, wgsl::LINEAR_EPILOGUE, wgsl::MATMUL],
    sizes: &[],
};

/// The assembly for a matrix format, one or more rows, and the adapter's features. Only f16
/// weights may multiply in f16: f32 and bf16 storage exist to run a checkpoint exactly, so their
/// tiles stay f32.
fn source(format: MatrixFormat, one_row: bool, gpu: &Gpu) -> &'static KernelSource {
    if format == MatrixFormat::F16 && !one_row && gpu.f16_arithmetic {
        return &MATMUL_F16_ARITHMETIC;
    }
    let (matvec, matmul) = match (format, gpu.f16) {
        (MatrixFormat::F32, _) => (&MATVEC_F32, &MATMUL_F32),
        (MatrixFormat::Bf16, _) => (&MATVEC_BF16, &MATMUL_BF16),
        (MatrixFormat::F16, true) => (&MATVEC_F16, &MATMUL_F16),
        (MatrixFormat::F16, false) => (&MATVEC_PACKED, &MATMUL_PACKED),
        (MatrixFormat::Int8, _) => (&MATVEC_INT8, &MATMUL_INT8),
        (MatrixFormat::Nf4, _) => (&MATVEC_NF4, &MATMUL_NF4),
    };
    if one_row {
        matvec
    } else {
        matmul
    }
}

/// params, weights, x, y, and the operand: always bound (the input's buffer again, never read,
/// when there is none), so that one entry point per row mapping serves every epilogue.
const BINDINGS: &[Access] = &[Uniform, Read, Read, ReadWrite, Read];

/// Outputs per matmul tile side on GPUs (`tiled` in matmul.wgsl), and per thread block on CPU
/// drivers (`blocked`).
const TILE: usize = 64;
const BLOCK: usize = 4;
/// Segments a grouped product may have: the size of the tables in `Params`.
pub const MAX_SEGMENTS: usize = 8;

/// `Params` of linear_epilogue.wgsl: one dispatch's range of output columns and the segment table.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    out_cols: u32,
    part_cols: u32,
    col_offset: u32,
    weight_row0: u32,
    cols4: u32,
    stride4: u32,
    scales_offset: u32,
    lerp_offset: u32,
    padding: [u32; 3],
    segment_start: [u32; MAX_SEGMENTS],
    segment_end: [u32; MAX_SEGMENTS],
    x_at: [u32; MAX_SEGMENTS],
    y_at: [u32; MAX_SEGMENTS],
    activation: [u32; MAX_SEGMENTS],
}

/// What binding 4 of linear_epilogue.wgsl holds; the numbering matches its `OPERAND_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperandKind {
    None = 0,
    Bias = 1,
    Gate = 2,
    Lerp = 3,
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
    /// `y ← y + (target − y) · act(W·x + bias)`: pulls the output towards `target`, a tensor of
    /// the output's shape later in the same buffer (RWKV-7's value residual).
    Lerp {
        bias: &'a GpuTensor,
        target: &'a GpuTensor,
    },
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

    /// `y ← y + (target − y) · act(W·x + bias)`.
    pub fn lerp(bias: &'a GpuTensor, target: &'a GpuTensor, activation: Activation) -> Epilogue<'a> {
        Epilogue { operand: Operand::Lerp { bias, target }, activation, ..Epilogue::PLAIN }
    }

    /// The same, for an input that is mostly zeros.
    pub fn sparse_input(self) -> Epilogue<'a> {
        Epilogue { sparse_input: true, ..self }
    }
}

/// One matrix of a grouped product: the next `y.cols` rows of the stacked matrix map `x` to `y`.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub x: &'a GpuTensor,
    pub y: &'a GpuTensor,
    pub activation: Activation,
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
    let segment = Segment { x, y, activation: epilogue.activation };
    linear_grouped(rec, label, matrix, &[segment], Epilogue { activation: Activation::None, ..epilogue })
}

/// Records a grouped product: `matrix` is several matrices stacked by rows, and each segment's
/// rows read their own input and write their own output with their own activation, in one
/// dispatch when decoding (one row) and one per segment otherwise. The inputs must lie in one
/// buffer (entries of a stack), and so must the outputs. `epilogue.activation` must be `None`:
/// the segments carry theirs.
pub fn linear_grouped(
    rec: &mut Recorder,
    label: &str,
    matrix: &GpuMatrix,
    segments: &[Segment],
    epilogue: Epilogue,
) -> Result<()> {
    if epilogue.activation != Activation::None {
        return Err(Error::InvalidArgument(format!(
            "{label}: a grouped product's activations are per segment"
        )));
    }
    let Some(first) = segments.first() else {
        return Err(Error::InvalidArgument(format!("{label}: a product needs at least one segment")));
    };
    if segments.len() > MAX_SEGMENTS {
        return Err(Error::InvalidArgument(format!("{label}: more than {MAX_SEGMENTS} segments")));
    }
    let rows = first.x.rows;
    for (index, segment) in segments.iter().enumerate() {
        if segment.x.cols != matrix.cols {
            let what = if segments.len() == 1 { "`x`".to_string() } else { format!("input {index}") };
            return Err(Error::InvalidArgument(format!(
                "{label}: {what} has {} columns, the matrix takes {}",
                segment.x.cols, matrix.cols
            )));
        }
        expect_shape(label, "input", segment.x, rows, matrix.cols)?;
        expect_shape(label, "output", segment.y, rows, segment.y.cols)?;
    }
    let outputs: usize = segments.iter().map(|s| s.y.cols).sum();
    if outputs != matrix.rows {
        return Err(Error::InvalidArgument(format!(
            "{label}: the outputs have {outputs} columns in all, the matrix has {} rows",
            matrix.rows
        )));
    }
    let (operand, operand_kind) = match epilogue.operand {
        Operand::None => (None, OperandKind::None),
        Operand::Bias(bias) => {
            expect_shape(label, "bias", bias, 1, matrix.rows)?;
            (Some(bias), OperandKind::Bias)
        }
        Operand::Gate(gate) => {
            expect_shape(label, "gate", gate, rows, matrix.rows)?;
            (Some(gate), OperandKind::Gate)
        }
        Operand::Lerp { bias, target } => {
            expect_shape(label, "bias", bias, 1, matrix.rows)?;
            expect_shape(label, "target", target, rows, matrix.rows)?;
            (Some(bias), OperandKind::Lerp)
        }
    };
    let inputs: Vec<&GpuTensor> = segments.iter().map(|s| s.x).collect();
    let mut outputs: Vec<&GpuTensor> = segments.iter().map(|s| s.y).collect();
    let mut lerp_offset = 0;
    if let Operand::Lerp { target, .. } = epilogue.operand {
        if segments.len() != 1 || target.buffer != first.y.buffer || target.offset <= first.y.offset {
            return Err(Error::InvalidArgument(format!(
                "{label}: a lerp target must follow the single output in its buffer"
            )));
        }
        lerp_offset = to_u32(label, ((target.offset - first.y.offset) / 4) as usize)?;
        outputs.push(target);
    }
    let (x_binding, x_offsets) = covering(label, "inputs", &inputs)?;
    let (y_binding, y_offsets) = covering(label, "outputs", &outputs)?;

    let gpu = rec.gpu;
    let mut constants = vec![
        ("ACCUMULATE", if epilogue.accumulate { 1.0 } else { 0.0 }),
        ("OPERAND", f64::from(operand_kind as u32)),
    ];
    // The block sizes the weights preludes divide by, from their one definition.
    match matrix.format {
        MatrixFormat::Int8 => constants.push(("INT8_BLOCK", INT8_BLOCK as f64)),
        MatrixFormat::Nf4 => constants.push(("NF4_BLOCK", NF4_BLOCK as f64)),
        _ => {}
    }
    let one_row = rows == 1;
    if epilogue.sparse_input && one_row {
        constants.push(("SPARSE_INPUT", 1.0));
    }
    let pipeline = gpu.pipeline(
        source(matrix.format, one_row, gpu),
        entry(gpu.row_mapping, one_row),
        BINDINGS,
        &constants,
    )?;

    let mut params = Params {
        rows: to_u32(label, rows)?,
        out_cols: to_u32(label, matrix.rows)?,
        cols4: to_u32(label, matrix.cols.div_ceil(4))?,
        stride4: to_u32(label, matrix.row_vec4s())?,
        lerp_offset,
        segment_end: [u32::MAX; MAX_SEGMENTS],
        ..bytemuck::Zeroable::zeroed()
    };
    let mut start = 0;
    let mut ranges = Vec::with_capacity(segments.len());
    for (index, segment) in segments.iter().enumerate() {
        let end = start + segment.y.cols;
        params.segment_start[index] = to_u32(label, start)?;
        params.segment_end[index] = to_u32(label, end)?;
        params.x_at[index] = to_u32(label, (x_offsets[index] / 16) as usize)?;
        params.y_at[index] = to_u32(label, (y_offsets[index] / 4) as usize)?;
        params.activation[index] = segment.activation as u32;
        ranges.push(start..end);
        start = end;
    }
    if x_offsets.iter().any(|offset| offset % 16 != 0) {
        return Err(Error::InvalidArgument(format!(
            "{label}: grouped inputs must start on 16-byte boundaries"
        )));
    }

    for part in &matrix.parts {
        let mut storage = vec![part.binding(), x_binding.clone(), y_binding.clone()];
        storage.push(operand.map_or_else(|| x_binding.clone(), GpuTensor::binding));
        params.scales_offset = to_u32(label, part.scales_offset)?;
        let part_rows = part.first_row..part.first_row + part.rows;
        if one_row {
            // One dispatch for the whole part, whatever segments it holds.
            params.col_offset = to_u32(label, part.first_row)?;
            params.weight_row0 = 0;
            params.part_cols = to_u32(label, part.rows)?;
            let rows_per_group = if gpu.row_mapping == RowMapping::ThreadPerRow { 64 } else { 1 };
            let workgroups = gpu.grid(to_u32(label, part.rows.div_ceil(rows_per_group))?);
            rec.record(&pipeline, label, &params, &storage, workgroups)?;
            continue;
        }
        // A tile shares its input rows, so it must not straddle segments: one dispatch each.
        for range in &ranges {
            let (lo, hi) = (range.start.max(part_rows.start), range.end.min(part_rows.end));
            if lo >= hi {
                continue;
            }
            params.col_offset = to_u32(label, lo)?;
            params.weight_row0 = to_u32(label, lo - part.first_row)?;
            params.part_cols = to_u32(label, hi - lo)?;
            let columns = hi - lo;
            let workgroups = match gpu.row_mapping {
                RowMapping::ThreadPerRow => [columns.div_ceil(BLOCK).div_ceil(64), rows.div_ceil(BLOCK)],
                RowMapping::WorkgroupPerRow => [columns.div_ceil(TILE), rows.div_ceil(TILE)],
            };
            let workgroups = [to_u32(label, workgroups[0])?, to_u32(label, workgroups[1])?, 1];
            rec.record(&pipeline, label, &params, &storage, workgroups)?;
        }
    }
    Ok(())
}

/// One binding that covers every tensor of `tensors` (which must share a buffer), and the
/// offset of each within it, in bytes.
fn covering(label: &str, what: &str, tensors: &[&GpuTensor]) -> Result<(Binding, Vec<u64>)> {
    let first = tensors[0];
    if tensors.iter().any(|t| t.buffer != first.buffer) {
        return Err(Error::InvalidArgument(format!(
            "{label}: the {what} of a grouped product must share one buffer"
        )));
    }
    let start = tensors.iter().map(|t| t.offset).min().unwrap_or(0);
    let end = tensors.iter().map(|t| t.offset + t.bytes()).max().unwrap_or(0);
    let binding = Binding { buffer: first.buffer.clone(), offset: start, size: end - start };
    Ok((binding, tensors.iter().map(|t| t.offset - start).collect()))
}

/// The kernel entry point for a row mapping, one row or many.
fn entry(mapping: RowMapping, one_row: bool) -> &'static str {
    match (mapping, one_row) {
        (RowMapping::ThreadPerRow, true) => "thread_per_row",
        (RowMapping::WorkgroupPerRow, true) => "workgroup_per_row",
        (RowMapping::ThreadPerRow, false) => "blocked",
        (RowMapping::WorkgroupPerRow, false) => "tiled",
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
