//! The GPU kernels, one module per family. Each kernel has three faces: a WGSL file in
//! `shaders/`, a Rust function here that checks shapes and records a dispatch, and a plain CPU
//! reference (`*_ref`) of the same math that the tests compare it with.

mod bandwidth;
mod elementwise;
mod gather;
mod linear;
mod norm;
mod sample;
mod sequences;
mod token_shift;
mod wkv4;
mod wkv5;
mod wkv7;
mod wkv7_chunks;
mod wkv7_one;

pub use self::bandwidth::{read_sum, read_sum_ref, read_sum_span};
pub use self::elementwise::lerp_ref;
pub use self::gather::{embed, embed_ref, gather_last_rows, EMBED_PARTS};
pub use self::linear::{
    by_input_threads, linear, linear_grouped, linear_ref, linear_shifted, on_tensor_cores, shifted_products,
    Epilogue, Operand, OperandRef, Remember, Segment, ShiftedInput, ShiftedSegment, MAX_SEGMENTS,
};
pub use self::norm::{
    group_norm, group_norm_bonus_gate, group_norm_bonus_gate_ref, group_norm_ref, layer_norm, layer_norm_ref,
    BonusGate, GN_EPS, LN_EPS,
};
pub use self::sample::{
    count_ref, logprobs_ref, mask_words, sample, sample_ref, Choice, RowMasks, SampleOutputs, SampleRow,
    SlotSampling, TokenLogprobs, BANNED, LOGPROB_COLS, MAX_TOP_LOGPROBS,
};
pub use self::sequences::{
    windows, SequenceEntry, Sequences, Window, LOOP_BUDGET, MAX_HEAD_SIZE, MAX_SEQUENCES,
};
pub use self::token_shift::{layer_norm_shift, token_shift, token_shift_ref, Mixes, NormInput, Prev};
pub use self::wkv4::{wkv4, wkv4_ref, Wkv4Inputs, WKV4_INITIAL_PP};
pub use self::wkv5::{wkv5, wkv5_one, wkv5_ref, GroupNormGate, Wkv5Inputs, WKV5_ONE_MAX_HEAD};
pub use self::wkv7::{wkv7, wkv7_keys, wkv7_keys_ref, wkv7_ref, KeyInputs, Wkv7Inputs, L2_EPS};
pub use self::wkv7_chunks::{
    wkv7_chunk_width, wkv7_chunked, wkv7_chunked_supports, WKV7_CHUNK, WKV7_CHUNKED_SEQUENCES,
};
pub use self::wkv7_one::{wkv7_one, wkv7_one_supports, Wkv7OneInputs, WKV7_ONE_MAX_HEAD};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, GpuTensor, Pipeline, Step};

/// The WGSL files, embedded in the binary.
mod wgsl {
    pub use crate::gpu::REDUCE;
    pub const ACTIVATION: &str = include_str!("../../shaders/activation.wgsl");
    pub const WEIGHTS_F32: &str = include_str!("../../shaders/weights_f32.wgsl");
    pub const WEIGHTS_BF16: &str = include_str!("../../shaders/weights_bf16.wgsl");
    pub const WEIGHTS_F16: &str = include_str!("../../shaders/weights_f16.wgsl");
    pub const WEIGHTS_PACKED: &str = include_str!("../../shaders/weights_packed.wgsl");
    pub const WEIGHTS_INT8: &str = include_str!("../../shaders/weights_int8.wgsl");
    pub const WEIGHTS_NF4: &str = include_str!("../../shaders/weights_nf4.wgsl");
    pub const SEQUENCES: &str = include_str!("../../shaders/sequences.wgsl");
    pub const SEQUENCES_BINDING: &str = include_str!("../../shaders/sequences_binding.wgsl");
    pub const LINEAR_EPILOGUE: &str = include_str!("../../shaders/linear_epilogue.wgsl");
    pub const MATVEC: &str = include_str!("../../shaders/matvec.wgsl");
    pub const MATVEC_SUBGROUP: &str = include_str!("../../shaders/matvec_subgroup.wgsl");
    pub const MATVEC_BY_INPUT: &str = include_str!("../../shaders/matvec_by_input.wgsl");
    pub const NEAREST_F16: &str = include_str!("../../shaders/nearest_f16.wgsl");
    pub const INPUT_PLAIN: &str = include_str!("../../shaders/input_plain.wgsl");
    pub const INPUT_SHIFTED: &str = include_str!("../../shaders/input_shifted.wgsl");
    pub const REMEMBER_INPUT: &str = include_str!("../../shaders/remember_input.wgsl");
    pub const REMEMBER_NOTHING: &str = include_str!("../../shaders/remember_nothing.wgsl");
    pub const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
    pub const MATMUL_COOP: &str = include_str!("../../shaders/matmul_coop.wgsl");
    pub const COOP_16: &str = include_str!("../../shaders/coop_16.wgsl");
    pub const COOP_8: &str = include_str!("../../shaders/coop_8.wgsl");
    pub const TILE_F32: &str = include_str!("../../shaders/tile_f32.wgsl");
    pub const TILE_F16: &str = include_str!("../../shaders/tile_f16.wgsl");
    pub const GATHER: &str = include_str!("../../shaders/gather.wgsl");
    pub const EMBED: &str = include_str!("../../shaders/embed.wgsl");
    pub const BANDWIDTH: &str = include_str!("../../shaders/bandwidth.wgsl");
    pub const ROW_STATS: &str = include_str!("../../shaders/row_stats.wgsl");
    pub const LAYER_NORM: &str = include_str!("../../shaders/layer_norm.wgsl");
    pub const GROUP_NORM: &str = include_str!("../../shaders/group_norm.wgsl");
    pub const GROUP_NORM_PARAMS: &str = include_str!("../../shaders/group_norm_params.wgsl");
    pub const TOKEN_SHIFT: &str = include_str!("../../shaders/token_shift.wgsl");
    pub const LAYER_NORM_SHIFT: &str = include_str!("../../shaders/layer_norm_shift.wgsl");
    pub const WKV7_KEYS: &str = include_str!("../../shaders/wkv7_keys.wgsl");
    pub const WKV_BINDINGS: &str = include_str!("../../shaders/wkv_bindings.wgsl");
    pub const WKV4: &str = include_str!("../../shaders/wkv4.wgsl");
    pub const WKV5: &str = include_str!("../../shaders/wkv5.wgsl");
    pub const WKV5_ONE: &str = include_str!("../../shaders/wkv5_one.wgsl");
    pub const WKV7_STEP: &str = include_str!("../../shaders/wkv7_step.wgsl");
    pub const WKV7: &str = include_str!("../../shaders/wkv7.wgsl");
    pub const WKV7_CHUNKS: &str = include_str!("../../shaders/wkv7_chunks.wgsl");
    pub const WKV7_CHUNK_OPERATORS: &str = include_str!("../../shaders/wkv7_chunk_operators.wgsl");
    pub const WKV7_CHUNK_STATES: &str = include_str!("../../shaders/wkv7_chunk_states.wgsl");
    pub const WKV7_CHUNK_OUTPUTS: &str = include_str!("../../shaders/wkv7_chunk_outputs.wgsl");
    pub const WKV7_ONE: &str = include_str!("../../shaders/wkv7_one.wgsl");
    pub const SAMPLE: &str = include_str!("../../shaders/sample.wgsl");
}

/// Element-wise functions applied to a kernel's result. The numbering matches `activation.wgsl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None = 0,
    Tanh = 1,
    Sigmoid = 2,
    ReluSquared = 3,
    /// RWKV-7's decay, exp(−e^−0.5 · σ(x)).
    Decay7 = 4,
    /// x · σ(x), RWKV-5.1+'s gate.
    Silu = 5,
    /// RWKV-5/6's decay, exp(−exp(x)).
    Decay6 = 6,
}

/// e^−0.5: RWKV-7 keeps its decay in (e^−e^−0.5, 1) ≈ (0.545, 1).
pub const DECAY_SCALE: f64 = 0.606_531;

impl Activation {
    pub const ALL: [Activation; 7] = [
        Activation::None,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::ReluSquared,
        Activation::Decay7,
        Activation::Silu,
        Activation::Decay6,
    ];

    /// The CPU reference of the activation.
    pub fn apply(self, x: f64) -> f64 {
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        match self {
            Activation::None => x,
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => sigmoid(x),
            Activation::ReluSquared => x.max(0.0).powi(2),
            Activation::Decay7 => (-DECAY_SCALE * sigmoid(x)).exp(),
            Activation::Silu => x * sigmoid(x),
            Activation::Decay6 => (-x.exp()).exp(),
        }
    }
}

/// Collects the dispatches of one step. Kernel functions check their arguments' shapes and
/// append one dispatch each; nothing runs until the step is submitted. Kernels that walk
/// sequences (token shift, the WKV recurrences) read the step's [`Sequences`].
pub struct Recorder<'g> {
    pub gpu: &'g Gpu,
    pub step: Step,
    sequences: Option<&'g Sequences>,
}

impl<'g> Recorder<'g> {
    /// A recorder for kernels that treat every row alike.
    pub fn new(gpu: &'g Gpu) -> Self {
        Recorder { gpu, step: Step::default(), sequences: None }
    }

    /// A recorder for a step whose rows belong to the sequences described by `sequences`.
    pub fn with_sequences(gpu: &'g Gpu, sequences: &'g Sequences) -> Self {
        Recorder { gpu, step: Step::default(), sequences: Some(sequences) }
    }

    pub fn finish(self) -> Step {
        self.step
    }

    /// How many sequences the step holds, if it has a sequence table.
    pub fn sequence_count(&self) -> Option<usize> {
        self.sequences.map(|sequences| sequences.count)
    }

    fn sequences(&self, label: &str) -> Result<&'g Sequences> {
        self.sequences
            .ok_or_else(|| Error::InvalidArgument(format!("{label}: the step has no sequence table")))
    }

    /// Records one dispatch of `pipeline` over `grid`. Binding 0 is always the kernel's uniform
    /// `params`; any other uniform binding is the step's sequence table; the storage buffers
    /// fill the rest in binding order.
    fn record<P: bytemuck::Pod>(
        &mut self,
        pipeline: &Arc<Pipeline>,
        label: &str,
        params: &P,
        storage: &[Binding],
        grid: impl Into<Grid>,
    ) -> Result<()> {
        let workgroups = match grid.into() {
            Grid::Workgroups(workgroups) => workgroups,
            Grid::PerSequence(x) => [x.max(1), to_u32(label, self.sequences(label)?.count)?.max(1), 1],
        };
        let uniform = self.gpu.uniform(label, params)?;
        let mut bindings = Vec::with_capacity(storage.len() + 2);
        bindings.push(Binding::whole(&uniform));
        let mut storage = storage.iter();
        for index in 1..pipeline.binding_count() {
            let binding = if pipeline.binds_uniform(index) {
                Binding::whole(&self.sequences(label)?.buffer)
            } else {
                storage.next().cloned().ok_or_else(|| {
                    Error::Internal(format!("{label}: too few storage bindings for its kernel"))
                })?
            };
            bindings.push(binding);
        }
        if storage.next().is_some() {
            return Err(Error::Internal(format!("{label}: more storage bindings than its kernel has")));
        }
        let dispatch = pipeline.dispatch(self.gpu, label, &bindings, workgroups)?;
        self.step.push(dispatch);
        Ok(())
    }

    /// Records a kernel that walks each sequence's rows in order, once per window of
    /// [`windows`]: `params` gets the window, `rows` is the step's most rows (of all sequences),
    /// and `inner_loops` the iterations its loops run per token.
    fn record_walk<P: bytemuck::Pod>(
        &mut self,
        pipeline: &Arc<Pipeline>,
        label: &str,
        (rows, inner_loops): (usize, usize),
        params: impl Fn(Window) -> P,
        storage: &[Binding],
        workgroups_x: u32,
    ) -> Result<()> {
        windows(rows, inner_loops).into_iter().try_for_each(|window| {
            self.record(pipeline, label, &params(window), storage, Grid::PerSequence(workgroups_x))
        })
    }
}

/// The workgroups of a dispatch.
enum Grid {
    Workgroups([u32; 3]),
    /// `x` workgroups for each sequence of the step (`y`).
    PerSequence(u32),
}

impl From<[u32; 3]> for Grid {
    fn from(workgroups: [u32; 3]) -> Grid {
        Grid::Workgroups(workgroups)
    }
}

/// Fails unless `tensor` is `[rows, cols]`, naming the operand.
fn expect_shape(label: &str, operand: &str, tensor: &GpuTensor, rows: usize, cols: usize) -> Result<()> {
    if tensor.rows == rows && tensor.cols == cols {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{label}: `{operand}` is [{}, {}], expected [{rows}, {cols}]",
            tensor.rows, tensor.cols
        )))
    }
}

fn to_u32(label: &str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::TooBig(format!("{label}: size {value} does not fit in 32 bits")))
}

/// `(heads, head_size)` for `channels` split into `heads` equal heads.
fn split_heads(label: &str, heads: usize, channels: usize) -> Result<(u32, u32)> {
    if heads == 0 || channels % heads != 0 {
        return Err(Error::InvalidArgument(format!(
            "{label}: {channels} channels do not split into {heads} heads"
        )));
    }
    Ok((to_u32(label, heads)?, to_u32(label, channels / heads)?))
}

/// Checks that `entries` are consecutive entries of one stack, `stride` elements apart.
fn check_stack(label: &str, what: &str, entries: &[GpuTensor], stride: usize) -> Result<()> {
    let first = entries.first().ok_or_else(|| Error::InvalidArgument(format!("{label}: no {what}")))?;
    for (m, entry) in entries.iter().enumerate() {
        let in_place = entry.buffer == first.buffer && entry.offset == first.offset + (m * stride * 4) as u64;
        if entry.rows != first.rows || entry.cols != first.cols || !in_place {
            return Err(Error::InvalidArgument(format!("{label}: {what} {m} is not entry {m} of one stack")));
        }
    }
    Ok(())
}
