//! RWKV-7's recurrence over a long prompt in chunks of [`WKV7_CHUNK`] tokens: the chunks' walks
//! run side by side, then one small matrix product per chunk carries the state from chunk to
//! chunk (the algebra is in `shaders/wkv7_chunks.wgsl`). The serial walk ([`super::wkv7`])
//! has a head's rows walk every token one after the other, which leaves a GPU mostly idle on a
//! prompt; this form gives it chunks × 2C threads instead of C.

use super::sequences::{windows, MAX_HEAD_SIZE, MAX_SEQUENCES};
use super::wkv7::Wkv7Inputs;
use super::{to_u32, wgsl, Grid, Recorder};
use crate::error::{Error, Result};
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{padded4, Access, Gpu, GpuTensor, KernelSource};

/// Tokens per chunk.
pub const WKV7_CHUNK: usize = 32;
/// The most sequences a chunked step may hold (which bounds its chunk slots).
pub const WKV7_CHUNKED_SEQUENCES: usize = 16;

const SIZES: &[(&str, usize)] =
    &[("MAX_SEQUENCES", MAX_SEQUENCES), ("MAX_HEAD_SIZE", MAX_HEAD_SIZE), ("CHUNK", WKV7_CHUNK)];

const OPERATORS: KernelSource = KernelSource {
    name: "wkv7_chunk_operators",
    parts: &[
        wgsl::SEQUENCES,
        wgsl::SEQUENCES_BINDING,
        wgsl::WKV7_STEP,
        wgsl::WKV7_CHUNKS,
        wgsl::WKV7_CHUNK_OPERATORS,
    ],
    sizes: SIZES,
};
const OPERATORS_BINDINGS: &[Access] = &[Uniform, Uniform, ReadWrite, Read, Read, Read, Read, Read, Read];

const STATES: KernelSource = KernelSource {
    name: "wkv7_chunk_states",
    parts: &[wgsl::SEQUENCES, wgsl::SEQUENCES_BINDING, wgsl::WKV7_CHUNKS, wgsl::WKV7_CHUNK_STATES],
    sizes: SIZES,
};
const STATES_BINDINGS: &[Access] = &[Uniform, Uniform, ReadWrite, ReadWrite];

const OUTPUTS: KernelSource = KernelSource {
    name: "wkv7_chunk_outputs",
    parts: &[wgsl::SEQUENCES, wgsl::SEQUENCES_BINDING, wgsl::WKV7_CHUNKS, wgsl::WKV7_CHUNK_OUTPUTS],
    sizes: SIZES,
};
const OUTPUTS_BINDINGS: &[Access] = &[Uniform, Uniform, Read, ReadWrite];

/// `ChunkParams` in wkv7_chunks.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ChunkParams {
    heads: u32,
    window_first: u32,
    window_count: u32,
    padding: u32,
    readouts_at: u32,
    outputs_at: u32,
    transitions_at: u32,
    starts_at: u32,
}

/// Columns of the scratch tensor the chunked recurrence needs, `[rows, width]` for a step of
/// `rows` rows: q_t and z_t·r_t for every row, and two N×N matrices per head for each chunk
/// slot — at most 2·rows / [`WKV7_CHUNK`] slots, as [`wkv7_chunked_supports`] asks every
/// sequence to average a chunk or more.
pub fn wkv7_chunk_width(channels: usize, head_size: usize) -> usize {
    2 * padded4(channels) + (4 * channels * head_size).div_ceil(WKV7_CHUNK)
}

/// Whether a step of `rows` rows in `sequences` sequences, with heads of `head_size`, should take
/// the chunked form on `gpu`: the adapter asks for it ([`Gpu::wkv_chunks`]), the head's row fits
/// in registers and splits into quarters, and the sequences are few and long enough to fill
/// chunks.
pub fn wkv7_chunked_supports(gpu: &Gpu, rows: usize, sequences: usize, head_size: usize) -> bool {
    gpu.wkv_chunks
        && (1..=MAX_HEAD_SIZE).contains(&head_size)
        && head_size % 4 == 0
        && (1..=WKV7_CHUNKED_SEQUENCES).contains(&sequences)
        && rows >= 2 * WKV7_CHUNK
        && rows >= sequences * WKV7_CHUNK
}

/// [`super::wkv7`] in chunks: the same state update and readout, for steps that
/// [`wkv7_chunked_supports`] takes. `chunks` is scratch of at least `[rows, wkv7_chunk_width]`.
pub fn wkv7_chunked(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    state: &GpuTensor,
    inputs: Wkv7Inputs,
    y: &GpuTensor,
    chunks: &GpuTensor,
) -> Result<()> {
    let (heads_u32, head_size) = inputs.check(label, heads, state, y)?;
    let Wkv7Inputs { r, w, k, v, kk, a } = inputs;
    let (rows, c, n) = (r.rows, r.cols, head_size as usize);
    let sequences = rec.sequences(label)?.count;
    if !wkv7_chunked_supports(rec.gpu, rows, sequences, n) {
        return Err(Error::InvalidArgument(format!(
            "{label}: {rows} rows of {sequences} sequences with heads of {n} do not take the chunked recurrence"
        )));
    }
    let slots = rows / WKV7_CHUNK + sequences;
    let row_values = rows * padded4(c);
    let needed = 2 * row_values + 2 * slots * c * n;
    if chunks.rows * chunks.stride() < needed {
        return Err(Error::InvalidArgument(format!(
            "{label}: the chunk scratch holds {} values, the step needs {needed}",
            chunks.rows * chunks.stride()
        )));
    }
    let at = |values: usize| to_u32(label, values);
    let params = |first: usize, count: usize| -> Result<ChunkParams> {
        Ok(ChunkParams {
            heads: heads_u32,
            window_first: at(first)?,
            window_count: at(count)?,
            padding: 0,
            readouts_at: 0,
            outputs_at: at(row_values)?,
            transitions_at: at(2 * row_values)?,
            starts_at: at(2 * row_values + slots * c * n)?,
        })
    };
    let constants = [("HEAD_SIZE", f64::from(head_size))];
    let most_chunks = rows.div_ceil(WKV7_CHUNK);

    let operators = rec.gpu.pipeline(&OPERATORS, "operators", OPERATORS_BINDINGS, &constants)?;
    let storage =
        [chunks.binding(), r.binding(), w.binding(), k.binding(), v.binding(), kk.binding(), a.binding()];
    let grid = [to_u32(label, (2 * c).div_ceil(64))?, to_u32(label, sequences)?, at(most_chunks)?];
    rec.record(&operators, &format!("{label}.operators"), &params(0, 0)?, &storage, Grid::Workgroups(grid))?;

    // Per chunk, each thread runs a quarter row's product with the head's N×N operator.
    let states = rec.gpu.pipeline(&STATES, "states", STATES_BINDINGS, &constants)?;
    let per_chunk = n * n / 4 + n + n / 2;
    for window in windows(most_chunks, per_chunk) {
        let (first, count) = (window.first as usize, window.count as usize);
        let storage = [state.binding(), chunks.binding()];
        let grid = Grid::PerSequence(to_u32(label, (4 * c).div_ceil(64))?);
        rec.record(&states, &format!("{label}.states"), &params(first, count)?, &storage, grid)?;
    }

    let outputs = rec.gpu.pipeline(&OUTPUTS, "outputs", OUTPUTS_BINDINGS, &constants)?;
    let grid = [to_u32(label, c.div_ceil(64))?, at(rows)?, 1];
    let storage = [chunks.binding(), y.binding()];
    rec.record(&outputs, &format!("{label}.outputs"), &params(0, 0)?, &storage, Grid::Workgroups(grid))
}
