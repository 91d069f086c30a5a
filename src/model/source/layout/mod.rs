//! Other layouts of the same weights, presented under the official names.
//!
//! Hugging Face checkpoints (flash-linear-attention's "fla-hub" RWKV-7, Transformers' RWKV
//! ports) and llama.cpp's GGUF files name, shape and sometimes fuse the official tensors
//! differently. Each layout here is a table from its names to the official ones, with the
//! transform that undoes what its converter did (a transpose, a fused row, a rescale); the
//! loader then reads every file the same way. The tables follow the converters: Hugging Face's
//! in `hugging_face.rs`, llama.cpp's in `gguf.rs`; this file holds what they share and the
//! renaming source itself.

mod gguf;
mod hugging_face;

use std::collections::BTreeMap;

use self::gguf::{gguf_rwkv6, gguf_rwkv7};
use self::hugging_face::{fla, transformers, transformers_legacy};

use super::gguf::GgufFile;
use super::{DType, TensorData, TensorSource};
use crate::error::{Error, Result};
use crate::quant::PackedMatrix;

/// How a stored tensor becomes the official one.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    Same,
    /// The last two dimensions swapped (a `[in, out]` LoRA factor stored as `[out, in]`).
    Transpose,
    /// Part `index` of `count` equal parts along the first dimension (fused token-shift mixes).
    Part {
        index: usize,
        count: usize,
    },
    /// The same values in another shape (a flattened `[heads, head_size]`).
    Reshape(Vec<usize>),
    /// Multiplied by a factor (GGUF RWKV-6 divides some layers' outputs by powers of two).
    Scale(f32),
}

/// A source whose tensors are another source's, renamed to the official names.
pub struct Renamed {
    inner: Box<dyn TensorSource>,
    layout: &'static str,
    /// Official name → (stored name, transform).
    map: BTreeMap<String, (String, Transform)>,
}

/// Presents `source` under the official names, whatever layout its names show.
pub fn official(source: Box<dyn TensorSource>) -> Result<Box<dyn TensorSource>> {
    let names = source.names();
    let has = |name: &str| names.iter().any(|n| n == name);
    let (layout, map) = if has("emb.weight") || !names.iter().any(|n| n.contains('.')) {
        return Ok(source);
    } else if has("model.embeddings.weight") && names.iter().any(|n| n.starts_with("model.layers.")) {
        ("fla-hub (Hugging Face)", rename(&names, fla))
    } else if has("rwkv7.embeddings.weight") {
        ("Transformers RWKV-7 (Hugging Face)", rename(&names, transformers))
    } else if has("rwkv.embeddings.weight") {
        ("Transformers RWKV (Hugging Face)", rename(&names, transformers_legacy))
    } else {
        return Ok(source);
    };
    Ok(Box::new(Renamed::new(
        source,
        layout,
        map,
        "model.embeddings.weight|rwkv7.embeddings.weight|rwkv.embeddings.weight",
    )))
}

/// A GGUF file of llama.cpp's `rwkv6` or `rwkv7` architecture under the official names.
pub fn from_gguf(file: GgufFile) -> Result<Box<dyn TensorSource>> {
    let architecture = file.text("general.architecture").unwrap_or("").to_string();
    let names = file.names();
    let map = match architecture.as_str() {
        "rwkv7" => {
            let embd = file.int("rwkv7.embedding_length");
            let head_size = file.int("rwkv7.wkv.head_size");
            let (Some(embd), Some(head_size)) = (embd, head_size) else {
                return Err(Error::malformed(
                    file.file_name(),
                    "an rwkv7 GGUF without `rwkv7.embedding_length` and `rwkv7.wkv.head_size`",
                ));
            };
            if head_size <= 0 || embd <= 0 || embd % head_size != 0 {
                return Err(Error::malformed(
                    file.file_name(),
                    format!("embedding length {embd} is not a whole number of heads of {head_size}"),
                ));
            }
            let heads = vec![(embd / head_size) as usize, head_size as usize];
            rename(&names, |name| gguf_rwkv7(name, &heads))
        }
        "rwkv6" => {
            let rescale = file.int("rwkv6.rescale_every_n_layers").unwrap_or(0).max(0) as usize;
            rename(&names, |name| gguf_rwkv6(name, rescale))
        }
        "" => return Err(Error::malformed(file.file_name(), "a GGUF file without `general.architecture`")),
        other => {
            return Err(Error::UnsupportedModel(format!(
                "{}: a GGUF file of architecture `{other}`; only RWKV-6 (`rwkv6`) and RWKV-7 (`rwkv7`) GGUF files load \
                 (the hybrids `rwkv6qwen2` and `arwkv7` are not RWKV checkpoints this engine runs)",
                file.file_name()
            )))
        }
    };
    Ok(Box::new(Renamed::new(Box::new(file), "llama.cpp GGUF", map, "token_embd.weight")))
}

/// The official name of one tensor named as in the official checkpoints or a Hugging Face
/// layout (what a LoRA adapter's module names follow), with the transform between them.
pub fn official_name(name: &str) -> Option<(String, Transform)> {
    let official = ["emb.weight", "head.weight"].contains(&name)
        || name.starts_with("blocks.")
        || name.starts_with("ln_out.");
    if official {
        return Some((name.to_string(), Transform::Same));
    }
    [fla, transformers, transformers_legacy].iter().find_map(|layout| layout(name).into_iter().next())
}

/// The official name and transform of every stored name the layout knows.
fn rename(
    names: &[String],
    map: impl Fn(&str) -> Vec<(String, Transform)>,
) -> BTreeMap<String, (String, Transform)> {
    let mut out = BTreeMap::new();
    for name in names {
        for (official, transform) in map(name) {
            out.insert(official, (name.clone(), transform));
        }
    }
    out
}

/// Splits `{prefix}{layer}.{rest}` into (layer, rest).
fn layer_of<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let (layer, rest) = name.strip_prefix(prefix)?.split_once('.')?;
    Some((layer.parse().ok()?, rest))
}

fn one(name: String) -> Vec<(String, Transform)> {
    vec![(name, Transform::Same)]
}

/// The official names of layer `layer`'s token-shift mixes `mixes`, each a part of one fused
/// tensor.
fn fused_mixes(layer: usize, mixes: &[&str]) -> Vec<(String, Transform)> {
    let count = mixes.len();
    let part = |(index, mix)| (format!("blocks.{layer}.att.{mix}"), Transform::Part { index, count });
    mixes.iter().enumerate().map(part).collect()
}

/// The six token-shift mixes of RWKV-7, in the order fused tensors keep them.
const V7_MIXES: [&str; 6] = ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"];

impl Renamed {
    /// `tied` lists the stored embedding names: a layout without a head reuses the embedding.
    fn new(
        inner: Box<dyn TensorSource>,
        layout: &'static str,
        mut map: BTreeMap<String, (String, Transform)>,
        tied: &str,
    ) -> Renamed {
        if !map.contains_key("head.weight") {
            if let Some(embedding) = tied.split('|').find(|name| inner.meta(name).is_some()) {
                map.insert("head.weight".into(), (embedding.to_string(), Transform::Same));
            }
        }
        Renamed { inner, layout, map }
    }

    fn stored(&self, name: &str) -> Result<&(String, Transform)> {
        self.map.get(name).ok_or_else(|| Error::MissingTensor { name: name.into(), hint: String::new() })
    }
}

/// The shape a transform gives a tensor of `shape`.
fn transformed_shape(shape: &[usize], transform: &Transform) -> Vec<usize> {
    let mut shape = shape.to_vec();
    match transform {
        Transform::Same | Transform::Scale(_) => {}
        Transform::Transpose => {
            let n = shape.len();
            if n >= 2 {
                shape.swap(n - 2, n - 1);
            }
        }
        Transform::Part { count, .. } => match shape.first_mut() {
            Some(first) if *first == *count => {
                shape.remove(0);
            }
            Some(first) => *first /= count,
            None => {}
        },
        Transform::Reshape(to) => shape = to.clone(),
    }
    shape
}

impl TensorSource for Renamed {
    fn format(&self) -> &'static str {
        self.inner.format()
    }

    fn layout(&self) -> &'static str {
        self.layout
    }

    fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    fn meta(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        let (stored, transform) = self.map.get(name)?;
        let (dtype, shape) = self.inner.meta(stored)?;
        Some((dtype, transformed_shape(&shape, transform)))
    }

    fn tensor(&self, name: &str) -> Result<TensorData<'_>> {
        let (stored, transform) = self.stored(name)?;
        let tensor = self.inner.tensor(stored)?;
        let shape = transformed_shape(&tensor.shape, transform);
        let elements: usize = tensor.shape.iter().product();
        let parts = match transform {
            Transform::Part { count, .. } => *count,
            _ => 1,
        };
        let reshaped = shape.iter().product::<usize>() * parts == elements;
        let size = tensor
            .dtype
            .size()
            .ok_or_else(|| Error::DType { name: name.into(), dtype: tensor.dtype.to_string() })?;
        if tensor.bytes.len() != elements * size || !reshaped {
            return Err(Error::malformed_tensor(
                stored,
                format!(
                    "its {} bytes do not make the shape {shape:?} it is read as `{name}` in",
                    tensor.bytes.len()
                ),
            ));
        }
        let bytes = match transform {
            Transform::Same | Transform::Reshape(_) => tensor.bytes,
            Transform::Transpose => {
                let n = tensor.shape.len();
                let (rows, cols) =
                    if n >= 2 { (tensor.shape[n - 2], tensor.shape[n - 1]) } else { (1, elements) };
                swap_last_two(&tensor.bytes, size, rows, cols).into()
            }
            Transform::Part { index, count } => {
                let part = tensor.bytes.len() / count;
                match tensor.bytes {
                    std::borrow::Cow::Borrowed(all) => all[index * part..(index + 1) * part].into(),
                    std::borrow::Cow::Owned(all) => all[index * part..(index + 1) * part].to_vec().into(),
                }
            }
            Transform::Scale(factor) => {
                let values: Vec<f32> = tensor.to_f32(name)?.into_iter().map(|v| v * factor).collect();
                let bytes = bytemuck::cast_slice::<f32, u8>(&values).to_vec();
                return Ok(TensorData { dtype: DType::F32, shape, bytes: bytes.into() });
            }
        };
        Ok(TensorData { dtype: tensor.dtype, shape, bytes })
    }

    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        match self.map.get(name) {
            Some((stored, Transform::Same)) => self.inner.packed(stored),
            _ => Ok(None),
        }
    }

    fn stored_type(&self, name: &str) -> Option<String> {
        self.map.get(name).and_then(|(stored, _)| self.inner.stored_type(stored))
    }

    fn is_quantized(&self, name: &str) -> bool {
        self.map.get(name).is_some_and(|(stored, _)| self.inner.is_quantized(stored))
    }

    fn tokenizer(&self) -> Option<Result<crate::tokenizer::Tokenizer>> {
        self.inner.tokenizer()
    }
}

/// A row-major `[.., rows, cols]` tensor of `size`-byte elements as `[.., cols, rows]`.
fn swap_last_two(bytes: &[u8], size: usize, rows: usize, cols: usize) -> Vec<u8> {
    let slab = rows * cols * size;
    let mut out = vec![0u8; bytes.len()];
    for (from, to) in bytes.chunks_exact(slab.max(1)).zip(out.chunks_exact_mut(slab.max(1))) {
        for r in 0..rows {
            for c in 0..cols {
                let (src, dst) = ((r * cols + c) * size, (c * rows + r) * size);
                to[dst..dst + size].copy_from_slice(&from[src..src + size]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposing_swaps_the_last_two_dimensions_of_each_slab() {
        let bytes: Vec<u8> = (0..12).collect(); // [2, 2, 3] of bytes
        assert_eq!(swap_last_two(&bytes, 1, 2, 3), vec![0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]);
        assert_eq!(
            transformed_shape(&[6, 1, 1, 64], &Transform::Part { index: 2, count: 6 }),
            vec![1, 1, 64]
        );
    }
}
