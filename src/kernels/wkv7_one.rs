//! RWKV-7's time mix between its two products for one token per sequence, in one dispatch:
//! what the LoRA output products, [`super::wkv7_keys`], [`super::wkv7`] and
//! [`super::group_norm_bonus_gate`] do for many tokens (`shaders/wkv7_one.wgsl`).

use super::sequences::SEQUENCE_SIZES;
use super::{expect_shape, split_heads, to_u32, wgsl, Recorder, Remember, GN_EPS, L2_EPS};
use crate::error::{Error, Result};
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, Binding, GpuMatrix, GpuTensor, KernelSource};
use crate::quant::MatrixFormat;

macro_rules! wkv7_one {
    ($name:literal, $weights:expr) => {
        KernelSource {
            name: concat!("wkv7_one_", $name),
            parts: &[wgsl::SEQUENCES, $weights, wgsl::REDUCE, wgsl::ACTIVATION, wgsl::WKV7_ONE],
            sizes: SEQUENCE_SIZES,
        }
    };
}

const F32: KernelSource = wkv7_one!("f32", wgsl::WEIGHTS_F32);
const BF16: KernelSource = wkv7_one!("bf16", wgsl::WEIGHTS_BF16);
const F16: KernelSource = wkv7_one!("f16", wgsl::WEIGHTS_F16);
const PACKED: KernelSource = wkv7_one!("packed", wgsl::WEIGHTS_PACKED);
const BINDINGS: &[Access] =
    &[Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite, Read, ReadWrite, Uniform];

/// The largest head the kernel takes: one thread per channel of a 64-thread workgroup.
pub const WKV7_ONE_MAX_HEAD: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    heads: u32,
    head_size: u32,
    values_stride: u32,
    hidden_stride: u32,
    rank: [u32; 4],
    lora_at: [u32; 4],
    lora_stride: [u32; 4],
    gn_eps: f32,
    padding: [u32; 3],
}

/// What [`wkv7_one`] reads, each tensor [rows, …] with one row per sequence.
pub struct Wkv7OneInputs<'a> {
    /// r, k, v and v_first: consecutive entries of one stack, [rows, C].
    pub values: [&'a GpuTensor; 4],
    /// The LoRA hidden vectors h_w, h_a, h_v, h_g: consecutive entries of one stack, each
    /// [rows, rank] (h_v unused in layer 0).
    pub hidden: [&'a GpuTensor; 4],
    /// W2, A2, V2 (`None` in layer 0), G2 as `[C, rank]`, uploaded together
    /// ([`GpuMatrix::upload_together`]).
    pub lora: [Option<&'a GpuMatrix>; 4],
    /// [8, C]: k_k, k_a, r_k, ln_x weight, ln_x bias, w0, a0, v0.
    pub channel: &'a GpuTensor,
}

/// Whether [`wkv7_one`] can run a layer with these LoRA output matrices and heads: float
/// matrices in one buffer, heads of at most [`WKV7_ONE_MAX_HEAD`].
pub fn wkv7_one_supports(lora: &[Option<&GpuMatrix>; 4], head_size: usize) -> bool {
    let buffers: Vec<_> =
        lora.iter().flatten().map(|m| m.shared_buffer().map(|(buffer, _)| buffer)).collect();
    let shared = buffers.iter().all(|b| b.is_some() && *b == buffers[0]);
    let floats = lora.iter().flatten().all(|m| !m.format.is_quantized());
    shared
        && floats
        && lora[0].is_some()
        && lora[1].is_some()
        && lora[3].is_some()
        && head_size <= WKV7_ONE_MAX_HEAD
}

/// Records the time mix's middle for one token per sequence: the LoRA outputs, key shaping,
/// the state update and readout, group norm, bonus and gate into `out` ([rows, C]); then each
/// sequence remembers what `remember` holds.
pub fn wkv7_one(
    rec: &mut Recorder,
    label: &str,
    heads: usize,
    (inputs, state): (Wkv7OneInputs, &GpuTensor),
    out: &GpuTensor,
    remember: Remember,
) -> Result<()> {
    let Wkv7OneInputs { values, hidden, lora, channel } = inputs;
    let (rows, c) = (values[0].rows, values[0].cols);
    let (heads, head_size) = split_heads(label, heads, c)?;
    if !wkv7_one_supports(&lora, head_size as usize) {
        return Err(Error::InvalidArgument(format!(
            "{label}: needs float LoRA outputs in one buffer and heads of at most {WKV7_ONE_MAX_HEAD}"
        )));
    }
    let sequences = rec.sequences(label)?.count;
    if sequences != rows {
        return Err(Error::InvalidArgument(format!("{label}: {rows} rows for {sequences} sequences")));
    }
    for (name, tensor) in [("k", values[1]), ("v", values[2]), ("v_first", values[3]), ("out", out)] {
        expect_shape(label, name, tensor, rows, c)?;
    }
    expect_shape(label, "channel", channel, 8, c)?;
    expect_shape(label, "normed", remember.normed, rows, c)?;
    expect_shape(label, "prev", remember.prev, remember.prev.rows, c)?;
    expect_shape(label, "state", state, state.rows, c * head_size as usize)?;
    let stride = |entries: &[&GpuTensor; 4], what: &str| -> Result<(Binding, u32)> {
        let step = entries[1].offset.saturating_sub(entries[0].offset);
        let in_place = entries
            .iter()
            .enumerate()
            .all(|(m, e)| e.buffer == entries[0].buffer && e.offset == entries[0].offset + m as u64 * step);
        if !in_place || step == 0 {
            return Err(Error::InvalidArgument(format!("{label}: the {what} are not entries of one stack")));
        }
        let last = entries[3];
        let size = last.offset + last.bytes() - entries[0].offset;
        let binding = Binding { buffer: entries[0].buffer.clone(), offset: entries[0].offset, size };
        Ok((binding, to_u32(label, (step / 4) as usize)?))
    };
    let (values_binding, values_stride) = stride(&values, "values")?;
    let (hidden_binding, hidden_stride) = stride(&hidden, "hidden vectors")?;

    let mut params = Params {
        heads,
        head_size,
        values_stride,
        hidden_stride,
        gn_eps: GN_EPS,
        ..bytemuck::Zeroable::zeroed()
    };
    let present = lora.iter().flatten().next().expect("checked by wkv7_one_supports");
    let (weights, _) = present.shared_buffer().expect("checked by wkv7_one_supports");
    let vec4_bytes = present.format.bytes(1, 4);
    for (m, matrix) in lora.iter().enumerate() {
        let Some(matrix) = matrix else { continue };
        expect_shape(label, "hidden", hidden[m], rows, matrix.cols)?;
        if matrix.rows != c || matrix.format != present.format {
            return Err(Error::InvalidArgument(format!("{label}: LoRA output {m} is not [{c}, rank]")));
        }
        let (_, offset) = matrix.shared_buffer().expect("checked by wkv7_one_supports");
        params.rank[m] = to_u32(label, matrix.cols)?;
        params.lora_at[m] = to_u32(label, (offset / vec4_bytes) as usize)?;
        params.lora_stride[m] = to_u32(label, matrix.row_vec4s())?;
    }
    let source = match (present.format, rec.gpu.f16) {
        (MatrixFormat::F32, _) => &F32,
        (MatrixFormat::Bf16, _) => &BF16,
        (MatrixFormat::F16, true) => &F16,
        (MatrixFormat::F16, false) => &PACKED,
        _ => unreachable!("checked by wkv7_one_supports"),
    };
    let constants = [
        ("VALUE_RESIDUAL", f64::from(u8::from(lora[2].is_some()))),
        ("L2_EPS", L2_EPS),
        ("HEAD_SIZE", f64::from(head_size)),
    ];
    let pipeline = rec.gpu.pipeline(source, "wkv7_one", BINDINGS, &constants)?;
    let storage = [
        Binding::whole(weights),
        values_binding,
        hidden_binding,
        channel.binding(),
        state.binding(),
        out.binding(),
        remember.normed.binding(),
        remember.prev.binding(),
    ];
    rec.record(&pipeline, label, &params, &storage, [heads, to_u32(label, rows)?, 1])
}
