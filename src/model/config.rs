//! What a model file holds: its RWKV version, detected from the tensor names as the official
//! package does, and its shapes, read from the tensors (never from a table of known sizes).

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
    if has(".att.time_maa_x") || has(".att.time_maa_w1") {
        return Ok(Version::V6);
    }
    if has(".att.ln_x.weight") {
        let decay_2d = names
            .iter()
            .filter(|n| n.ends_with(".att.time_decay"))
            .filter_map(|n| source.meta(n))
            .any(|(_, shape)| shape.len() == 2 && shape[1] > 1);
        return Ok(if decay_2d {
            Version::V5_2
        } else if has(".att.gate.weight") {
            Version::V5_1
        } else {
            Version::V5_0
        });
    }
    Ok(Version::V4)
}

/// Ranks of RWKV-7's low-rank projections, which differ between releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LoraRanks {
    pub decay: usize,
    pub in_context_rate: usize,
    pub value_residual: usize,
    pub gate: usize,
}

/// The shape of an RWKV-7 model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct V7Config {
    pub layers: usize,
    pub embd: usize,
    pub heads: usize,
    pub head_size: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub lora: LoraRanks,
}

fn shape_of(source: &dyn TensorSource, name: &str) -> Result<Vec<usize>> {
    source
        .meta(name)
        .map(|(_, shape)| shape)
        .ok_or_else(|| Error::MissingTensor { name: name.into(), hint: String::new() })
}

/// Dimension `dim` of a tensor that must have `rank` dimensions.
fn dim(source: &dyn TensorSource, name: &str, rank: usize, dim: usize) -> Result<usize> {
    let shape = shape_of(source, name)?;
    if shape.len() != rank || shape.contains(&0) {
        return Err(Error::Malformed {
            file: name.into(),
            reason: format!("expected a non-empty {rank}-dimensional tensor, found shape {shape:?}"),
        });
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

impl V7Config {
    /// Reads the shape from the tensors: embedding and vocab from `emb.weight`, heads and head
    /// size from `r_k`, LoRA ranks from the first layer that has each projection.
    pub fn from_source(source: &dyn TensorSource) -> Result<V7Config> {
        let names = source.names();
        let layers = names
            .iter()
            .filter_map(|n| n.strip_prefix("blocks.")?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |last| last + 1);
        if layers == 0 {
            return Err(Error::UnsupportedModel("the model has no `blocks.N.*` tensors".into()));
        }
        let vocab = dim(source, "emb.weight", 2, 0)?;
        let embd = dim(source, "emb.weight", 2, 1)?;
        let heads = dim(source, "blocks.0.att.r_k", 2, 0)?;
        let head_size = dim(source, "blocks.0.att.r_k", 2, 1)?;
        if heads * head_size != embd {
            return Err(Error::Shape {
                name: "blocks.0.att.r_k".into(),
                expected: vec![heads, embd / heads.max(1)],
                found: vec![heads, head_size],
            });
        }
        // Layer 0 has no value residual, so its v1 may be absent (or a placeholder): use layer 1's.
        let value_residual = if layers > 1 { dim(source, "blocks.1.att.v1", 2, 1)? } else { 0 };
        Ok(V7Config {
            layers,
            embd,
            heads,
            head_size,
            ffn: ffn_width(source, embd)?,
            vocab,
            lora: LoraRanks {
                decay: dim(source, "blocks.0.att.w1", 2, 1)?,
                in_context_rate: dim(source, "blocks.0.att.a1", 2, 1)?,
                value_residual,
                gate: dim(source, "blocks.0.att.g1", 2, 1)?,
            },
        })
    }
}
