//! What a model file holds: its RWKV version, detected from the tensor names as the official
//! package does, and its shapes, read from the tensors (never from a table of known sizes).

use super::architecture::{TensorNames, Version, Widths};
use super::source::TensorSource;
use crate::error::{Error, Result};

/// Detects the version from the tensor names, as the official package does.
pub fn detect_version(source: &dyn TensorSource) -> Result<Version> {
    let names = TensorNames::new(source);
    if !names.all().iter().any(|n| n == "emb.weight") || !names.in_blocks(".ln1.weight") {
        let mut shown: Vec<&str> = names.all().iter().map(String::as_str).take(8).collect();
        shown.sort_unstable();
        return Err(Error::UnsupportedModel(format!(
            "not an RWKV checkpoint: no `emb.weight` and `blocks.N.ln1.weight` among its {} tensors (first: {})",
            names.all().len(),
            shown.join(", ")
        )));
    }
    Version::detect(&names)
        .ok_or_else(|| Error::UnsupportedModel("no RWKV version recognises its tensors".into()))
}

/// The size of one low-rank projection, for `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LoraRank {
    pub name: &'static str,
    pub rank: usize,
}

/// The shape of a model, read from its tensors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelConfig {
    #[serde(serialize_with = "serialize_version")]
    pub version: Version,
    pub layers: usize,
    pub embd: usize,
    /// Heads of the matrix-valued state (RWKV-5 on); 0 for RWKV-4, whose state is per channel.
    pub heads: usize,
    pub head_size: usize,
    pub ffn: usize,
    pub vocab: usize,
    /// Ranks of the low-rank projections (RWKV-6 and 7).
    pub lora: Vec<LoraRank>,
}

fn serialize_version<S: serde::Serializer>(version: &Version, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(version.name())
}

fn shape_of(source: &dyn TensorSource, name: &str) -> Result<Vec<usize>> {
    source
        .meta(name)
        .map(|(_, shape)| shape)
        .ok_or_else(|| Error::MissingTensor { name: name.into(), hint: String::new() })
}

/// A shape without the leading size-1 dimensions beyond `rank` (checkpoints store vectors as
/// [1, 1, C]). Only leading ones: a real dimension may have size 1 (one head, a rank-1 LoRA), and
/// dropping it would read the shape wrongly.
fn squeeze_leading(mut shape: Vec<usize>, rank: usize) -> Vec<usize> {
    while shape.len() > rank && shape[0] == 1 {
        shape.remove(0);
    }
    shape
}

/// Dimension `dim` of a tensor that must have `rank` dimensions once leading size-1 dimensions
/// are dropped.
pub(crate) fn dim(source: &dyn TensorSource, name: &str, rank: usize, dim: usize) -> Result<usize> {
    let shape = squeeze_leading(shape_of(source, name)?, rank);
    if shape.len() != rank || shape.contains(&0) {
        return Err(Error::malformed_tensor(
            name,
            format!("expected a non-empty {rank}-dimensional tensor, found shape {shape:?}"),
        ));
    }
    Ok(shape[dim])
}

/// The rank of a low-rank projection from its input factor `tensor` ([C, D·parts], stored
/// `parts` projections side by side).
pub(crate) fn lora_rank(
    source: &dyn TensorSource,
    name: &'static str,
    tensor: &str,
    parts: usize,
) -> Result<LoraRank> {
    Ok(LoraRank { name, rank: dim(source, tensor, 2, 1)? / parts })
}

/// The channel-mix width F from `ffn.key.weight` [F, C]. A matrix stored the wrong way round
/// still yields F, so that the shape check names the right expected shape.
fn ffn_width(source: &dyn TensorSource, embd: usize) -> Result<usize> {
    let name = "blocks.0.ffn.key.weight";
    let (rows, cols) = (dim(source, name, 2, 0)?, dim(source, name, 2, 1)?);
    Ok(if cols != embd && rows == embd { cols } else { rows })
}

/// Heads and head size from a tensor that is [H] (one value per head, possibly stored as
/// [H, 1, 1]) or [H, N], as the official package reads them: the head count is the first
/// dimension, which is 1 for a one-head model.
pub(crate) fn heads_from(source: &dyn TensorSource, name: &str, embd: usize) -> Result<(usize, usize)> {
    let mut shape = squeeze_leading(shape_of(source, name)?, 2);
    while shape.len() > 1 && shape.last() == Some(&1) {
        shape.pop();
    }
    let heads = match shape[..] {
        [heads] | [heads, _] if heads > 0 && embd % heads == 0 => heads,
        _ => {
            return Err(Error::malformed_tensor(
                name,
                format!("expected [heads] or [heads, head_size] dividing {embd} channels, found {shape:?}"),
            ))
        }
    };
    let head_size = embd / heads;
    if let [_, n] = shape[..] {
        if n != head_size {
            return Err(Error::Shape { name: name.into(), expected: vec![heads, head_size], found: shape });
        }
    }
    Ok((heads, head_size))
}

impl ModelConfig {
    /// Detects the version and reads the shape from the tensors.
    pub fn from_source(source: &dyn TensorSource) -> Result<ModelConfig> {
        let version = detect_version(source)?;
        super::in_version(version, Self::shape(source, version))
    }

    fn shape(source: &dyn TensorSource, version: Version) -> Result<ModelConfig> {
        let names = source.names();
        let layers = names
            .iter()
            .filter_map(|n| n.strip_prefix("blocks.")?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(Some(0), |last| last.checked_add(1))
            .ok_or_else(|| Error::malformed_tensor("blocks", "a block index beyond any model"))?;
        let vocab = dim(source, "emb.weight", 2, 0)?;
        let embd = dim(source, "emb.weight", 2, 1)?;
        let widths = Widths { embd, layers };
        let time_mix = (version.architecture.time_mix_shape)(source, &widths)?;
        Ok(ModelConfig {
            version,
            layers,
            embd,
            heads: time_mix.heads,
            head_size: time_mix.head_size,
            ffn: ffn_width(source, embd)?,
            vocab,
            lora: time_mix.lora,
        })
    }

    /// One layer's `wkv` state before the first token.
    pub fn initial_wkv(&self) -> Vec<f32> {
        (self.version.architecture.state.initial_wkv)(self)
    }

    /// The rank of the projection called `name`, 0 if the model has none.
    pub fn rank(&self, name: &str) -> usize {
        self.lora.iter().find(|l| l.name == name).map_or(0, |l| l.rank)
    }
}
