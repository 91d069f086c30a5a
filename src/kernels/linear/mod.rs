//! Linear layers over the rows of a step: `y[r] (+)= act(W·x[r] + bias)` or
//! `y[r] (+)= act(W·x[r]) ⊙ gate[r]`, with weights in any [`MatrixFormat`] and f32 arithmetic.
//! One row (decoding one sequence) runs the matrix-vector kernels; more rows run the tiled
//! matrix-matrix kernels.

mod by_input;
mod choice;
mod reference;
mod shifted;
mod sources;

pub use self::by_input::by_input_threads;
pub use self::choice::on_tensor_cores;
pub use self::reference::{linear_ref, OperandRef};
pub use self::shifted::{linear_shifted, shifted_products, Remember, ShiftedInput, ShiftedSegment};

use self::choice::{runs_as_vector, tiles_fit, Kernel};
use self::sources::{coop_source, source, Variant};
use super::{expect_shape, to_u32, Activation, Recorder, LN_EPS};
use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuMatrix, GpuTensor, RowMapping};
use crate::quant::{MatrixFormat, INT8_BLOCK, NF4_BLOCK};

/// Outputs per matmul tile side on GPUs (`tiled` in matmul.wgsl), and per thread block on CPU
/// drivers (`blocked`).
const TILE: usize = 64;
const BLOCK: usize = 4;
/// The most rows (a batch of decoded sequences) `subgroup_per_row` takes (`FEW_ROWS` in
/// matvec_subgroup.wgsl; `by_input`'s `MOST_ROWS` on any GPU): each weight it reads serves them
/// all.
const FEW_ROWS: usize = 8;
/// Threads of a workgroup of `subgroup_per_row` (matvec.wgsl): 8 rows of 32 lanes on most GPUs.
const SUBGROUP_ROWS_WORKGROUP: usize = 256;
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
    norm_len: u32,
    eps: f32,
    padding: u32,
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
    /// A normalized input that [`linear_shifted`] left for later: the product also stores it
    /// as its sequence's previous input (one row only).
    pub remember: Option<Remember<'a>>,
}

impl Epilogue<'_> {
    pub const PLAIN: Epilogue<'static> = Epilogue {
        operand: Operand::None,
        activation: Activation::None,
        accumulate: false,
        sparse_input: false,
        remember: None,
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

    /// The same, also storing what [`linear_shifted`] left to remember.
    pub fn remembering(self, remember: Remember<'a>) -> Epilogue<'a> {
        Epilogue { remember: Some(remember), ..self }
    }

    /// The same, also storing what [`shifted_products`] left to remember, if anything.
    pub fn remember_if(self, remember: Option<Remember<'a>>) -> Epilogue<'a> {
        Epilogue { remember, ..self }
    }
}

/// How a product's inputs are given.
pub(super) enum Inputs<'a> {
    /// One tensor per segment, all in one buffer.
    Tensors(Vec<&'a GpuTensor>),
    /// Computed in the prologue, one mix per segment.
    Shifted(ShiftedInput<'a>, Vec<usize>),
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
    let Some(first) = segments.first() else {
        return Err(Error::InvalidArgument(format!("{label}: a product needs at least one segment")));
    };
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
    }
    let outputs: Vec<(&GpuTensor, Activation)> = segments.iter().map(|s| (s.y, s.activation)).collect();
    let inputs = Inputs::Tensors(segments.iter().map(|s| s.x).collect());
    record_product(rec, label, matrix, (inputs, rows), &outputs, epilogue)
}

/// Records `y (+)= epilogue(W·x)` for `rows` rows, the outputs `(y, activation)` covering the
/// matrix's rows in order.
pub(super) fn record_product(
    rec: &mut Recorder,
    label: &str,
    matrix: &GpuMatrix,
    (inputs, rows): (Inputs, usize),
    outputs: &[(&GpuTensor, Activation)],
    epilogue: Epilogue,
) -> Result<()> {
    if epilogue.activation != Activation::None {
        return Err(Error::InvalidArgument(format!(
            "{label}: a grouped product's activations are per segment"
        )));
    }
    let Some(&(first_y, _)) = outputs.first() else {
        return Err(Error::InvalidArgument(format!("{label}: a product needs at least one segment")));
    };
    if outputs.len() > MAX_SEGMENTS {
        return Err(Error::InvalidArgument(format!("{label}: more than {MAX_SEGMENTS} segments")));
    }
    for (y, _) in outputs {
        expect_shape(label, "output", y, rows, y.cols)?;
    }
    let total: usize = outputs.iter().map(|(y, _)| y.cols).sum();
    if total != matrix.rows {
        return Err(Error::InvalidArgument(format!(
            "{label}: the outputs have {total} columns in all, the matrix has {} rows",
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
    let mut ys: Vec<&GpuTensor> = outputs.iter().map(|(y, _)| *y).collect();
    let mut lerp_offset = 0;
    if let Operand::Lerp { target, .. } = epilogue.operand {
        if outputs.len() != 1 || target.buffer != first_y.buffer || target.offset <= first_y.offset {
            return Err(Error::InvalidArgument(format!(
                "{label}: a lerp target must follow the single output in its buffer"
            )));
        }
        lerp_offset = to_u32(label, ((target.offset - first_y.offset) / 4) as usize)?;
        ys.push(target);
    }
    let (y_binding, y_offsets) = covering(label, "outputs", &ys)?;
    let cols4 = matrix.cols.div_ceil(4);
    // The input binding, each segment's input (in vec4s), and the variant's own bindings.
    let (x_binding, x_at, variant, mut extra) = match &inputs {
        Inputs::Tensors(tensors) => {
            let (binding, offsets) = covering(label, "inputs", tensors)?;
            if offsets.iter().any(|offset| offset % 16 != 0) {
                return Err(Error::InvalidArgument(format!(
                    "{label}: grouped inputs must start on 16-byte boundaries"
                )));
            }
            let at = offsets.iter().map(|offset| (offset / 16) as usize).collect::<Vec<_>>();
            (binding, at, Variant::Plain, Vec::new())
        }
        Inputs::Shifted(ShiftedInput { input, prev, mixes }, mix) => {
            let at = mix.iter().map(|m| m * cols4).collect();
            let extra = vec![input.norm.binding(), prev.binding(), mixes.binding(), input.normed.binding()];
            (input.x.binding(), at, Variant::Shifted, extra)
        }
    };
    let mut norm_len = match &inputs {
        Inputs::Shifted(shifted, _) => shifted.input.x.cols,
        Inputs::Tensors(_) => 0,
    };
    let one_row = rows == 1;
    if matrix.by_input {
        by_input::check(label, matrix, outputs.len(), matches!(inputs, Inputs::Shifted(..)))?;
    }
    let gpu = rec.gpu;
    let vector = runs_as_vector(gpu, rows, matrix.by_input);
    let variant = match epilogue.remember {
        None => variant,
        Some(_) if !one_row || variant != Variant::Plain => {
            return Err(Error::InvalidArgument(format!(
                "{label}: only a one-row product with a plain input can remember a shifted input"
            )))
        }
        Some(Remember { normed, prev }) => {
            expect_shape(label, "normed", normed, 1, prev.cols)?;
            norm_len = prev.cols;
            extra = vec![normed.binding(), prev.binding()];
            Variant::Remembering
        }
    };

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
    if epilogue.sparse_input && vector {
        constants.push(("SPARSE_INPUT", 1.0));
    }
    let by_input_workgroup = (by_input::by_input_threads(gpu.row_mapping), gpu.by_input_lanes);
    if vector && matrix.by_input {
        constants.push(("WORKGROUP_SIZE", by_input_workgroup.0 as f64));
        constants.push(("OUTPUT_LANES", by_input_workgroup.1 as f64));
    } else if vector && gpu.row_mapping == RowMapping::SubgroupPerRow {
        constants.push(("WORKGROUP_SIZE", SUBGROUP_ROWS_WORKGROUP as f64));
        constants.push(("ROWS_AT_MOST", if one_row { 1.0 } else { FEW_ROWS as f64 }));
    } else if matrix.by_input {
        constants.push(("WEIGHTS_BY_INPUT", 1.0));
    }
    let coop = if vector { None } else { coop_source(matrix.format, gpu) };
    let kernel =
        Kernel::choose(gpu.row_mapping, vector, one_row, matrix.by_input, tiles_fit(gpu, matrix.format));
    let pipeline = match coop {
        Some((coop, _)) => {
            constants.push(("SPLIT_INPUTS", if gpu.f16_arithmetic { 0.0 } else { 1.0 }));
            gpu.pipeline(coop, "coop", variant.bindings(), &constants)?
        }
        None => gpu.pipeline(
            source(matrix.format, vector.then_some(variant), gpu),
            kernel.entry_point(),
            variant.bindings(),
            &constants,
        )?,
    };

    let mut params = Params {
        rows: to_u32(label, rows)?,
        out_cols: to_u32(label, matrix.rows)?,
        cols4: to_u32(label, cols4)?,
        stride4: to_u32(label, matrix.row_vec4s())?,
        lerp_offset,
        norm_len: to_u32(label, norm_len)?,
        eps: LN_EPS,
        segment_end: [u32::MAX; MAX_SEGMENTS],
        ..bytemuck::Zeroable::zeroed()
    };
    let mut start = 0;
    let mut ranges = Vec::with_capacity(outputs.len());
    for (index, (y, activation)) in outputs.iter().enumerate() {
        let end = start + y.cols;
        params.segment_start[index] = to_u32(label, start)?;
        params.segment_end[index] = to_u32(label, end)?;
        params.x_at[index] = to_u32(label, x_at[index])?;
        params.y_at[index] = to_u32(label, (y_offsets[index] / 4) as usize)?;
        params.activation[index] = *activation as u32;
        ranges.push(start..end);
        start = end;
    }

    for part in &matrix.parts {
        let mut storage = vec![part.binding(), x_binding.clone(), y_binding.clone()];
        storage.push(operand.map_or_else(|| x_binding.clone(), GpuTensor::binding));
        storage.extend(extra.iter().cloned());
        params.scales_offset = to_u32(label, part.scales_offset)?;
        // The outputs the part holds (stored by input, its one part holds them all).
        let part_rows =
            if matrix.by_input { 0..matrix.rows } else { part.first_row..part.first_row + part.rows };
        if vector {
            // One dispatch for the whole part, whatever segments it holds.
            params.col_offset = to_u32(label, part_rows.start)?;
            params.weight_row0 = 0;
            params.part_cols = to_u32(label, part_rows.len())?;
            let rows_per_group = match gpu.row_mapping {
                _ if matrix.by_input => 4 * by_input_workgroup.1,
                RowMapping::ThreadPerRow => 64,
                RowMapping::WorkgroupPerRow => 1,
                // The fewest rows a workgroup takes: its loop covers any more there are.
                RowMapping::SubgroupPerRow => {
                    (SUBGROUP_ROWS_WORKGROUP / gpu.info.subgroup_max_size.max(1) as usize).max(1)
                }
            };
            let workgroups = gpu.grid(to_u32(label, part_rows.len().div_ceil(rows_per_group))?);
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
            let workgroups = match (coop, kernel) {
                // A cooperative-matrix workgroup's outputs: 2 × 4 matrices (matmul_coop.wgsl).
                (Some((_, matrix)), _) => {
                    let side = matrix.side() as usize;
                    [columns.div_ceil(4 * side), rows.div_ceil(2 * side)]
                }
                (None, Kernel::Tiled) => [columns.div_ceil(TILE), rows.div_ceil(TILE)],
                (None, _) => [columns.div_ceil(BLOCK).div_ceil(64), rows.div_ceil(BLOCK)],
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
