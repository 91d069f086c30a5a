//! `.safetensors` files: an 8-byte header length, a JSON header, then the tensor bytes.

use std::borrow::Cow;

use safetensors::tensor::{Metadata, SafeTensors};
use safetensors::Dtype;

use std::collections::HashMap;

use super::quantized::QUANTIZED_PREFIX;
use super::{DType, FileBytes, TensorData, TensorSource};
use crate::error::{Error, Result};
use crate::quant::{MatrixFormat, PackedMatrix};

/// A safetensors file whose header has been parsed and validated.
pub struct SafetensorsFile {
    name: String,
    map: FileBytes,
    metadata: Metadata,
    data_start: usize,
    /// Matrices written pre-quantized by `rwkv-wgpu quantize`: name → (format, rows, cols).
    quantized: HashMap<String, (MatrixFormat, usize, usize)>,
}

impl SafetensorsFile {
    pub fn from_bytes(name: String, map: FileBytes) -> Result<Self> {
        if let Some(name_twice) = header(&map).and_then(repeated_key) {
            return Err(Error::malformed(&name, format!("two tensors named `{name_twice}`")));
        }
        // read_metadata checks that offsets are contiguous, sizes match the shapes and dtypes,
        // and that the data section ends exactly at the end of the file.
        let (header_len, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|e| Error::malformed(&name, format!("invalid safetensors file: {e}")))?;
        let quantized = quantized_matrices(&name, &metadata)?;
        Ok(Self { name, map, metadata, data_start: 8 + header_len, quantized })
    }

    /// The free-form `__metadata__` map of the header, if any.
    pub fn header_metadata(&self) -> Option<&std::collections::HashMap<String, String>> {
        self.metadata.metadata().as_ref()
    }
}

/// The JSON header, if the length prefix fits the file.
fn header(file: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(file.get(..8)?.try_into().ok()?);
    file.get(8..8usize.checked_add(usize::try_from(len).ok()?)?)
}

/// The first key the header's top-level object repeats. JSON parsers, safetensors' included, keep
/// the last of two equal keys, so a tensor named twice would otherwise vanish silently.
fn repeated_key(header: &[u8]) -> Option<String> {
    struct FirstRepeat(Option<String>);
    impl<'de> serde::Deserialize<'de> for FirstRepeat {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(FirstRepeat(None))
        }
    }
    impl<'de> serde::de::Visitor<'de> for FirstRepeat {
        type Value = FirstRepeat;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                if !seen.insert(key.clone()) {
                    return Ok(FirstRepeat(Some(key)));
                }
            }
            Ok(FirstRepeat(None))
        }
    }
    serde_json::from_slice::<FirstRepeat>(header).ok()?.0
}

/// The pre-quantized matrices a header declares in its metadata (see `quantized.rs`).
fn quantized_matrices(
    file: &str,
    metadata: &Metadata,
) -> Result<HashMap<String, (MatrixFormat, usize, usize)>> {
    let Some(entries) = metadata.metadata() else { return Ok(HashMap::new()) };
    let mut quantized = HashMap::new();
    for (key, value) in entries {
        let Some(name) = key.strip_prefix(QUANTIZED_PREFIX) else { continue };
        let bad = || Error::malformed(file, format!("bad quantization entry `{key}`: `{value}`"));
        let mut fields = value.split_whitespace();
        let format = MatrixFormat::parse(fields.next().ok_or_else(bad)?).map_err(|_| bad())?;
        let rows: usize = fields.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let cols: usize = fields.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        // The word counts below stay within rows × (cols + a block): that must not overflow.
        let block = format.block();
        if cols.checked_add(block).and_then(|padded| rows.checked_mul(padded)).is_none() {
            return Err(bad());
        }
        let info =
            metadata.info(name).ok_or_else(|| Error::malformed(file, format!("`{key}` names no tensor")))?;
        let words = rows
            .checked_mul(format.row_words(cols))
            .and_then(|w| w.checked_add(format.scale_words(rows, cols)));
        if info.dtype != Dtype::U32 || Some(info.shape.iter().product::<usize>()) != words {
            return Err(Error::malformed(
                file,
                format!("tensor `{name}` does not hold a [{rows}, {cols}] {} matrix", format.name()),
            ));
        }
        quantized.insert(name.to_string(), (format, rows, cols));
    }
    Ok(quantized)
}

fn dtype_of(dtype: Dtype) -> DType {
    match dtype {
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::Other("f64"),
        Dtype::I64 => DType::Other("i64"),
        Dtype::I32 => DType::Other("i32"),
        Dtype::I16 => DType::Other("i16"),
        Dtype::I8 => DType::Other("i8"),
        Dtype::U32 => DType::Other("u32"),
        Dtype::U8 => DType::Other("u8"),
        Dtype::BOOL => DType::Other("bool"),
        _ => DType::Other("an unsupported type"),
    }
}

impl TensorSource for SafetensorsFile {
    fn format(&self) -> &'static str {
        "safetensors"
    }

    fn names(&self) -> Vec<String> {
        self.metadata.tensors().into_keys().collect()
    }

    fn meta(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        if let Some(&(format, rows, cols)) = self.quantized.get(name) {
            return Some((DType::Other(format.name()), vec![rows, cols]));
        }
        let info = self.metadata.info(name)?;
        Some((dtype_of(info.dtype), info.shape.clone()))
    }

    fn tensor(&self, name: &str) -> Result<TensorData<'_>> {
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| Error::MissingTensor { name: name.into(), hint: format!(" in {}", self.name) })?;
        let (begin, end) = info.data_offsets;
        let bytes = self
            .map
            .get(self.data_start + begin..self.data_start + end)
            .ok_or_else(|| Error::malformed(&self.name, format!("tensor `{name}` lies outside the file")))?;
        Ok(TensorData { dtype: dtype_of(info.dtype), shape: info.shape.clone(), bytes: Cow::Borrowed(bytes) })
    }

    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        let Some(&(format, rows, cols)) = self.quantized.get(name) else { return Ok(None) };
        let tensor = self.tensor(name)?;
        let words = bytemuck::pod_collect_to_vec(&tensor.bytes);
        Ok(Some(PackedMatrix { format, rows, cols, words }))
    }
}
