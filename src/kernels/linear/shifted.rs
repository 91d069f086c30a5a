//! Products whose input is the layer-normalized, token-shifted residual stream: for one token,
//! computed in the products' prologue; for more, by [`super::super::layer_norm_shift`] first.

use super::{record_product, Epilogue, Inputs, Segment};
use crate::error::{Error, Result};
use crate::gpu::{GpuMatrix, GpuTensor};
use crate::kernels::{expect_shape, layer_norm_shift, linear_grouped, Activation, NormInput, Prev, Recorder};

/// The input of a one-row product computed in its prologue: `n = LayerNorm(input.x)` with
/// `input.norm`, shifted per segment as `n + (prev[slot] − n) ⊙ mixes[m]` (what
/// [`super::layer_norm_shift`] writes for many rows, without its dispatch).
#[derive(Debug, Clone, Copy)]
pub struct ShiftedInput<'a> {
    /// `normed` receives n.
    pub input: NormInput<'a>,
    /// Each sequence's previous normalized input, [slots, C]: read, not changed.
    pub prev: &'a GpuTensor,
    /// [mixes, C]
    pub mixes: &'a GpuTensor,
}

/// One matrix of a shifted grouped product: the next `y.cols` rows of the stacked matrix read
/// the input shifted by mix `mix`.
#[derive(Debug, Clone, Copy)]
pub struct ShiftedSegment<'a> {
    pub mix: usize,
    pub y: &'a GpuTensor,
    pub activation: Activation,
}

/// What a shifted product leaves to do: store its normalized input as the sequence's previous
/// one, which it cannot do itself (every workgroup reads the old one). A later kernel of the
/// layer does it ([`Epilogue::remembering`], or the RWKV-7 recurrence for one token).
#[derive(Debug, Clone, Copy)]
#[must_use = "the sequence's state is only updated by a kernel that takes this"]
pub struct Remember<'a> {
    pub normed: &'a GpuTensor,
    pub prev: &'a GpuTensor,
}

/// Records a one-row grouped product whose input is computed in its prologue (see
/// [`ShiftedInput`]): one dispatch instead of [`super::layer_norm_shift`]'s and the product's.
/// `shifted.input.normed` receives the normalized input, and the returned [`Remember`] must be
/// passed to a later kernel of the layer, which stores it as the sequence's previous input.
pub fn linear_shifted<'a>(
    rec: &mut Recorder,
    label: &str,
    matrix: &GpuMatrix,
    shifted: ShiftedInput<'a>,
    segments: &[ShiftedSegment],
) -> Result<Remember<'a>> {
    let ShiftedInput { input, prev, mixes } = shifted;
    let c = input.x.cols;
    if input.x.rows != 1 {
        return Err(Error::InvalidArgument(format!(
            "{label}: a shifted product takes one row, not {}",
            input.x.rows
        )));
    }
    if matrix.cols != c {
        return Err(Error::InvalidArgument(format!(
            "{label}: `x` has {c} columns, the matrix takes {}",
            matrix.cols
        )));
    }
    expect_shape(label, "norm", input.norm, 2, c)?;
    expect_shape(label, "normed", input.normed, 1, c)?;
    expect_shape(label, "prev", prev, prev.rows, c)?;
    expect_shape(label, "mixes", mixes, mixes.rows, c)?;
    if let Some(segment) = segments.iter().find(|s| s.mix >= mixes.rows) {
        return Err(Error::InvalidArgument(format!("{label}: mix {} of {} mixes", segment.mix, mixes.rows)));
    }
    let outputs: Vec<(&GpuTensor, Activation)> = segments.iter().map(|s| (s.y, s.activation)).collect();
    let inputs = Inputs::Shifted(shifted, segments.iter().map(|s| s.mix).collect());
    record_product(rec, label, matrix, (inputs, 1), &outputs, Epilogue::PLAIN)?;
    Ok(Remember { normed: input.normed, prev })
}

/// One product of [`shifted_products`]: its matrix and segments.
pub type ShiftedProduct<'a> = (&'a str, &'a GpuMatrix, &'a [ShiftedSegment<'a>]);

/// Records products of token-shifted inputs, labelled `label(name)`: for a step of one token
/// on an adapter that fuses them ([`crate::gpu::Gpu::fused_decode`]), each normalizes and shifts
/// its input itself, and with [`Prev::Update`] the returned [`Remember`] must reach a later
/// product of the layer ([`Epilogue::remember_if`]); otherwise [`layer_norm_shift`] writes every
/// mix into `mixed` (a stack with an entry per mix, `stride` apart), updating the sequences'
/// state as `update` says, and the products read them.
pub fn shifted_products<'a>(
    rec: &mut Recorder,
    label: impl Fn(&str) -> String,
    (shifted, update): (ShiftedInput<'a>, Prev),
    (mixed, stride): (&[GpuTensor], usize),
    products: &[ShiftedProduct],
) -> Result<Option<Remember<'a>>> {
    let ShiftedInput { input, prev, mixes } = shifted;
    if input.x.rows == 1 && rec.gpu.fused_decode {
        let mut remember = None;
        for &(name, matrix, segments) in products {
            remember = Some(linear_shifted(rec, &label(name), matrix, shifted, segments)?);
        }
        return Ok(remember.filter(|_| update == Prev::Update));
    }
    layer_norm_shift(rec, &label("ln_shift"), input, (prev, update), mixes, (mixed, stride))?;
    for &(name, matrix, segments) in products {
        let segments: Vec<Segment> =
            segments.iter().map(|s| Segment { x: &mixed[s.mix], y: s.y, activation: s.activation }).collect();
        linear_grouped(rec, &label(name), matrix, &segments, Epilogue::PLAIN)?;
    }
    Ok(None)
}
