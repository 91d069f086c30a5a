//! What a model file holds: its RWKV version, detected from the tensor names as the official
//! package does, and its shapes, read from the tensors (never from a table of known sizes).

use super::embedding::NormalizedIn;
use super::source::TensorSource;
use crate::error::{Error, Result};

/// RWKV generations, as the official `rwkv` package (0.8.32) tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V4,
    V5_0,
    V5_1,
    V5_2,
    V6,
    V7,
}

impl Version {
    pub const ALL: [Version; 6] =
        [Version::V4, Version::V5_0, Version::V5_1, Version::V5_2, Version::V6, Version::V7];

    /// The precision the official loader normalizes this version's embedding table in (see
    /// model::embedding).
    pub fn embedding_normalized_in(self) -> NormalizedIn {
        match self {
            Version::V7 => NormalizedIn::F32,
            _ => NormalizedIn::FileDtype,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Version::V4 => "RWKV-4",
            Version::V5_0 => "RWKV-5.0",
            Version::V5_1 => "RWKV-5.1",
            Version::V5_2 => "RWKV-5.2",
            Version::V6 => "RWKV-6",
            Version::V7 => "RWKV-7 (x070)",
        }
    }
}

/// Detects the version from the tensor names (and the shape of `att.time_decay` for 5.2).
pub fn detect_version(source: &dyn TensorSource) -> Result<Version> {
    let names = source.names();
    let has = |suffix: &str| names.iter().any(|n| n.starts_with("blocks.") && n.ends_with(suffix));
    if !names.iter().any(|n| n == "emb.weight") || !has(".ln1.weight") {
        let mut shown: Vec<&str> = names.iter().map(String::as_str).take(8).collect();
        shown.sort_unstable();
        return Err(Error::UnsupportedModel(format!(
            "not an RWKV checkpoint: no `emb.weight` and `blocks.N.ln1.weight` among its {} tensors (first: {})",
            names.len(),
            shown.join(", ")
        )));
    }
    if has(".att.k_k") || has(".att.x_r") || has(".att.r_k") {
        return Ok(Version::V7);
    }
    if names.iter().any(|n| n.contains("time_maa")) {
        return Ok(Version::V6);
    }
    let any = |part: &str| names.iter().any(|n| n.contains(part));
    if any("ln_x") {
        let decay_2d = names
            .iter()
            .filter(|n| n.ends_with(".att.time_decay"))
            .filter_map(|n| source.meta(n))
            .any(|(_, shape)| shape.len() == 2 && shape[1] > 1);
        return Ok(if decay_2d {
            Version::V5_2
        } else if any("gate.weight") {
            Version::V5_1
        } else {
            Version::V5_0
        });
    }
    Ok(Version::V4)
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
fn dim(source: &dyn TensorSource, name: &str, rank: usize, dim: usize) -> Result<usize> {
    let shape = squeeze_leading(shape_of(source, name)?, rank);
    if shape.len() != rank || shape.contains(&0) {
        return Err(Error::malformed_tensor(
            name,
            format!("expected a non-empty {rank}-dimensional tensor, found shape {shape:?}"),
        ));
    }
    Ok(shape[dim])
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
fn heads_from(source: &dyn TensorSource, name: &str, embd: usize) -> Result<(usize, usize)> {
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
            .map_or(0, |last| last + 1);
        let vocab = dim(source, "emb.weight", 2, 0)?;
        let embd = dim(source, "emb.weight", 2, 1)?;
        let rank = |name: &'static str, tensor: &str, divisor: usize| -> Result<LoraRank> {
            Ok(LoraRank { name, rank: dim(source, tensor, 2, 1)? / divisor })
        };
        let (heads, head_size, lora) = match version {
            Version::V4 => (0, 0, vec![]),
            Version::V5_0 | Version::V5_1 | Version::V5_2 => {
                let (heads, head_size) = heads_from(source, "blocks.0.att.time_decay", embd)?;
                (heads, head_size, vec![])
            }
            Version::V6 => {
                let (heads, head_size) = heads_from(source, "blocks.0.att.time_faaaa", embd)?;
                let lora = vec![
                    rank("token shift", "blocks.0.att.time_maa_w1", 5)?,
                    rank("decay", "blocks.0.att.time_decay_w1", 1)?,
                ];
                (heads, head_size, lora)
            }
            Version::V7 => {
                let (heads, head_size) = heads_from(source, "blocks.0.att.r_k", embd)?;
                // Layer 0 has no value residual, so its v1 may be absent or a placeholder.
                let value_residual = if layers > 1 {
                    rank("value residual", "blocks.1.att.v1", 1)?
                } else {
                    LoraRank { name: "value residual", rank: 0 }
                };
                let lora = vec![
                    rank("decay", "blocks.0.att.w1", 1)?,
                    rank("in-context rate", "blocks.0.att.a1", 1)?,
                    value_residual,
                    rank("gate", "blocks.0.att.g1", 1)?,
                ];
                (heads, head_size, lora)
            }
        };
        Ok(ModelConfig {
            version,
            layers,
            embd,
            heads,
            head_size,
            ffn: ffn_width(source, embd)?,
            vocab,
            lora,
        })
    }

    /// The rank of the projection called `name`, 0 if the model has none.
    pub fn rank(&self, name: &str) -> usize {
        self.lora.iter().find(|l| l.name == name).map_or(0, |l| l.rank)
    }
}
