//! GGUF files (llama.cpp's format): a header of typed key–value metadata and tensor
//! descriptions, then the aligned tensor data.
//!
//! The container is small enough to read here, with every length and offset checked against
//! the file (the files are downloaded from anywhere). The tensors keep their GGUF names;
//! [`super::layout`] maps llama.cpp's RWKV names onto the official ones. Quantized tensors are
//! decoded to f32 when read ([`GgmlType::dequantize`]) and stored in int8 unless `--quant` says
//! otherwise (`model::loader`); their `meta` says f16.

use std::collections::HashMap;

use super::{DType, FileBytes, TensorData, TensorSource};
use crate::error::{Error, Result};
use crate::quant::ggml::GgmlType;
use crate::tokenizer::{Tokenizer, WorldTokenizer};

/// One metadata value. Arrays of numbers are kept as f64 or i64 lists; only what the loader
/// reads is kept precisely (strings, integers, string arrays).
#[derive(Debug, Clone)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Texts(Vec<String>),
    Ints(Vec<i64>),
    /// Other arrays (of floats, bools or arrays), by length.
    OtherArray(usize),
}

struct TensorInfo {
    kind: GgmlType,
    /// Row-major shape (GGUF lists dimensions innermost first; this is reversed).
    shape: Vec<usize>,
    /// Byte range in the file.
    start: usize,
    end: usize,
}

pub struct GgufFile {
    name: String,
    bytes: FileBytes,
    pub metadata: HashMap<String, Value>,
    tensors: HashMap<String, TensorInfo>,
    /// Tensor names in file order.
    order: Vec<String>,
}

/// The GGUF magic: the file's first four bytes.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// A bounds-checked little-endian reader over the header.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end = end
            .ok_or_else(|| format!("the header ends early (at byte {} of {})", self.at, self.bytes.len()))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }

    /// A count of items of at least `min_size` bytes each, refused if the rest of the file cannot
    /// hold them (so a corrupt count cannot make us allocate terabytes).
    fn count(&mut self, min_size: usize, what: &str) -> std::result::Result<usize, String> {
        let count = self.u64()?;
        let left = (self.bytes.len() - self.at) as u64;
        if count.saturating_mul(min_size.max(1) as u64) > left {
            return Err(format!("{what} count {count} does not fit in the {left} bytes left"));
        }
        Ok(count as usize)
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let len = self.count(1, "string length")?;
        let at = self.at;
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| format!("the string at byte {at} is not UTF-8"))
    }

    fn value(&mut self, kind: u32, depth: usize) -> std::result::Result<Value, String> {
        let int = |bytes: &[u8], signed: bool| -> i64 {
            let mut wide = [0u8; 8];
            wide[..bytes.len()].copy_from_slice(bytes);
            let negative = signed && bytes.last().is_some_and(|b| b & 0x80 != 0);
            if negative {
                wide[bytes.len()..].fill(0xFF);
            }
            i64::from_le_bytes(wide)
        };
        Ok(match kind {
            0 | 1 => Value::Int(int(self.take(1)?, kind == 1)),
            2 | 3 => Value::Int(int(self.take(2)?, kind == 3)),
            4 | 5 => Value::Int(int(self.take(4)?, kind == 5)),
            10 | 11 => Value::Int(int(self.take(8)?, kind == 11)),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()))),
            12 => Value::Float(f64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default())),
            7 => Value::Bool(self.take(1)?[0] != 0),
            8 => Value::Text(self.string()?),
            9 => {
                if depth > 2 {
                    return Err("arrays nested deeper than 3".into());
                }
                let element = self.u32()?;
                let len = self.count(1, "array length")?;
                let mut texts = Vec::new();
                let mut ints = Vec::new();
                for _ in 0..len {
                    match self.value(element, depth + 1)? {
                        Value::Text(text) => texts.push(text),
                        Value::Int(int) => ints.push(int),
                        _ => {}
                    }
                }
                match element {
                    8 => Value::Texts(texts),
                    0..=5 | 10 | 11 => Value::Ints(ints),
                    _ => Value::OtherArray(len),
                }
            }
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

impl GgufFile {
    pub fn from_bytes(name: String, bytes: FileBytes) -> Result<GgufFile> {
        let parsed = Self::parse(&bytes);
        let (metadata, tensors, order) = parsed.map_err(|reason| Error::malformed(&name, reason))?;
        Ok(GgufFile { name, bytes, metadata, tensors, order })
    }

    #[allow(clippy::type_complexity)]
    fn parse(
        bytes: &[u8],
    ) -> std::result::Result<(HashMap<String, Value>, HashMap<String, TensorInfo>, Vec<String>), String> {
        let mut cursor = Cursor { bytes, at: 0 };
        if cursor.take(4)? != MAGIC {
            return Err("not a GGUF file".into());
        }
        let version = cursor.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version}; versions 2 and 3 are supported"));
        }
        // A tensor description takes at least 8 + 4 + 4 + 8 bytes, a key–value pair 8 + 4 + 1.
        let tensor_count = cursor.count(24, "tensor")?;
        let kv_count = cursor.count(13, "metadata")?;
        let mut metadata = HashMap::new();
        for _ in 0..kv_count {
            let key = cursor.string()?;
            let kind = cursor.u32()?;
            let value = cursor.value(kind, 0).map_err(|e| format!("metadata `{key}`: {e}"))?;
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            Some(Value::Int(a)) if *a > 0 && (*a as u64).is_power_of_two() && *a <= 1 << 20 => *a as usize,
            None => 32,
            Some(other) => return Err(format!("`general.alignment` is {other:?}, not a power of two")),
        };
        let mut infos = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = cursor.string()?;
            let dims = cursor.u32()? as usize;
            if !(1..=4).contains(&dims) {
                return Err(format!("tensor `{name}` has {dims} dimensions (1 to 4 allowed)"));
            }
            let mut shape = Vec::with_capacity(dims);
            for _ in 0..dims {
                shape.push(
                    usize::try_from(cursor.u64()?)
                        .map_err(|_| format!("tensor `{name}`: dimension too large"))?,
                );
            }
            shape.reverse();
            let id = cursor.u32()?;
            let kind = GgmlType::from_id(id).map_err(|type_name| {
                format!(
                    "tensor `{name}` is of type {type_name}, which this engine does not read \
                     (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K are supported)"
                )
            })?;
            let offset = cursor.u64()?;
            infos.push((name, kind, shape, offset));
        }
        let data_start = cursor.at.div_ceil(alignment) * alignment;
        let mut tensors = HashMap::new();
        let mut order = Vec::new();
        for (name, kind, shape, offset) in infos {
            let (block_weights, block_bytes) = kind.block();
            let row = *shape.last().unwrap_or(&0);
            if row % block_weights != 0 {
                return Err(format!(
                    "tensor `{name}`: rows of {row} are not whole {} blocks of {block_weights}",
                    kind.name()
                ));
            }
            let size = shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .and_then(|n| (n / block_weights).checked_mul(block_bytes))
                .ok_or_else(|| format!("tensor `{name}`: its size overflows"))?;
            let start = usize::try_from(offset).ok().and_then(|o| o.checked_add(data_start));
            let end = start.and_then(|s| s.checked_add(size)).filter(|&end| end <= bytes.len());
            let (Some(start), Some(end)) = (start, end) else {
                return Err(format!(
                    "tensor `{name}` ({size} bytes at offset {offset}) lies past the end of the file ({} bytes): \
                     the file is truncated",
                    bytes.len()
                ));
            };
            if tensors.insert(name.clone(), TensorInfo { kind, shape, start, end }).is_some() {
                return Err(format!("tensor `{name}` appears twice"));
            }
            order.push(name);
        }
        Ok((metadata, tensors, order))
    }

    /// A metadata string.
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(Value::Text(text)) => Some(text),
            _ => None,
        }
    }

    /// A metadata integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.metadata.get(key) {
            Some(Value::Int(int)) => Some(*int),
            _ => None,
        }
    }

    /// The file's name, as errors call it.
    pub fn file_name(&self) -> &str {
        &self.name
    }

    /// The ggml type of a tensor, for `info`.
    pub fn kind(&self, name: &str) -> Option<GgmlType> {
        self.tensors.get(name).map(|info| info.kind)
    }
}

impl TensorSource for GgufFile {
    fn format(&self) -> &'static str {
        "gguf"
    }

    fn names(&self) -> Vec<String> {
        self.order.clone()
    }

    fn meta(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        let info = self.tensors.get(name)?;
        let dtype = match info.kind {
            GgmlType::F32 => DType::F32,
            GgmlType::Bf16 => DType::BF16,
            _ => DType::F16,
        };
        Some((dtype, info.shape.clone()))
    }

    fn tensor(&self, name: &str) -> Result<TensorData<'_>> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor { name: name.into(), hint: String::new() })?;
        let bytes = &self.bytes[info.start..info.end];
        let shape = info.shape.clone();
        let borrowed = |dtype| Ok(TensorData { dtype, shape: shape.clone(), bytes: bytes.into() });
        match info.kind {
            GgmlType::F32 => borrowed(DType::F32),
            GgmlType::F16 => borrowed(DType::F16),
            GgmlType::Bf16 => borrowed(DType::BF16),
            kind => {
                let mut values = Vec::with_capacity(shape.iter().product());
                kind.dequantize(bytes, &mut values);
                let bytes = bytemuck::cast_slice::<f32, u8>(&values).to_vec();
                Ok(TensorData { dtype: DType::F32, shape, bytes: bytes.into() })
            }
        }
    }

    fn stored_type(&self, name: &str) -> Option<String> {
        self.kind(name).map(|kind| kind.name().to_string())
    }

    fn is_quantized(&self, name: &str) -> bool {
        self.kind(name).is_some_and(GgmlType::is_quantized)
    }

    /// The World vocabulary llama.cpp's converter writes for RWKV (`tokenizer.ggml.model` =
    /// "rwkv"); other tokenizer models are refused by name.
    fn tokenizer(&self) -> Option<Result<Tokenizer>> {
        let model = self.text("tokenizer.ggml.model")?;
        if model != "rwkv" {
            return Some(Err(Error::UnsupportedModel(format!(
                "{}: its tokenizer is of kind `{model}`; GGUF files with the RWKV World vocabulary (`rwkv`) are read, \
                 for others pass --tokenizer tokenizer.json",
                self.name
            ))));
        }
        let tokens = match self.metadata.get("tokenizer.ggml.tokens") {
            Some(Value::Texts(tokens)) => tokens,
            _ => {
                return Some(Err(Error::malformed(
                    &self.name,
                    "`tokenizer.ggml.tokens` is not a list of strings",
                )))
            }
        };
        let types = match self.metadata.get("tokenizer.ggml.token_type") {
            Some(Value::Ints(types)) => &types[..],
            _ => &[],
        };
        Some(WorldTokenizer::from_gguf_tokens(tokens, types, &self.name).map(Tokenizer::World))
    }
}
