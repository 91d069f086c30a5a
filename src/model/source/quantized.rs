//! Pre-quantized model files: `.safetensors` in which each quantized matrix is one u32 tensor of
//! the words the GPU reads (codes, then block parameters), declared in the header's metadata as
//! `quantized.NAME = "FORMAT ROWS COLS"`. Every other tensor keeps its official name and shape,
//! in the float type the plan gave it (the small matrices of an int8 plan for an fp32 file become
//! f16), so the file loads as the plan would have loaded the original, without quantizing again.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::Dtype;

use super::{DType, TensorSource};
use crate::error::{Error, Result};
use crate::quant::{MatrixFormat, PackedMatrix, PlannedMatrix};

/// Metadata key prefix declaring a pre-quantized matrix.
pub const QUANTIZED_PREFIX: &str = "quantized.";

/// One tensor of the output, produced only when the writer asks for its bytes, so that a large
/// model is quantized one tensor at a time.
struct LazyTensor<'a> {
    source: &'a dyn TensorSource,
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// What to write instead of the stored bytes: packed codes, or another float type.
    convert: Option<PlannedMatrix>,
    len: usize,
}

impl safetensors::View for LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        // The View trait cannot fail; errors were ruled out when the plan was made (every tensor
        // was read and checked), and a failure here yields an empty tensor that makes the
        // written file invalid rather than silently wrong.
        let values = || self.source.tensor(&self.name).and_then(|t| t.to_f32(&self.name));
        let bytes = match &self.convert {
            Some(plan) if plan.format.is_quantized() => values()
                .and_then(|values| PackedMatrix::pack(plan.format, plan.rows, plan.cols, &values))
                .map(|packed| bytemuck::cast_slice(&packed.words).to_vec()),
            Some(plan) => values().map(|values| float_bytes(plan.format, &values)),
            None => self.source.tensor(&self.name).map(|t| t.bytes.into_owned()),
        };
        Cow::Owned(bytes.unwrap_or_default())
    }

    fn data_len(&self) -> usize {
        self.len
    }
}

fn safetensors_dtype(dtype: DType, name: &str) -> Result<Dtype> {
    match dtype {
        DType::F16 => Ok(Dtype::F16),
        DType::BF16 => Ok(Dtype::BF16),
        DType::F32 => Ok(Dtype::F32),
        DType::Other(other) => Err(Error::DType { name: name.into(), dtype: other.into() }),
    }
}

/// The little-endian bytes of `values` as the float type of `format`.
fn float_bytes(format: MatrixFormat, values: &[f32]) -> Vec<u8> {
    match format {
        MatrixFormat::Bf16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        MatrixFormat::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// The safetensors type of a float format.
fn float_dtype(format: MatrixFormat) -> Dtype {
    match format {
        MatrixFormat::Bf16 => Dtype::BF16,
        MatrixFormat::F16 => Dtype::F16,
        _ => Dtype::F32,
    }
}

/// Writes `source` to `path` with its matrices in the formats `matrices` plans: int8 and nf4
/// quantized, the floats converted where the plan changes their type, one tensor at a time;
/// `scheme` describes the choice for the metadata. Returns the bytes written.
pub fn write(
    source: &dyn TensorSource,
    matrices: &[PlannedMatrix],
    scheme: &str,
    path: &Path,
) -> Result<u64> {
    // A tensor planned in parts (RWKV-6's `time_maa_w2`, as `name[i]`) has one format for all.
    let planned: HashMap<&str, &PlannedMatrix> =
        matrices.iter().map(|m| (m.name.split('[').next().unwrap_or(&m.name), m)).collect();
    let mut metadata = HashMap::from([
        ("format".to_string(), "rwkv-wgpu quantized".to_string()),
        ("scheme".into(), scheme.into()),
    ]);
    let mut tensors = Vec::new();
    for name in source.names() {
        if source.packed(&name)?.is_some() {
            return Err(Error::InvalidArgument(format!(
                "`{name}` is already quantized: quantize the original model instead"
            )));
        }
        let (dtype, shape) = source
            .meta(&name)
            .ok_or_else(|| Error::MissingTensor { name: name.clone(), hint: String::new() })?;
        let elements = shape.iter().product::<usize>();
        let tensor = match planned.get(name.as_str()) {
            Some(plan) if plan.format.is_quantized() => {
                let words = plan.rows * plan.format.row_words(plan.cols)
                    + plan.format.scale_words(plan.rows, plan.cols);
                metadata.insert(
                    format!("{QUANTIZED_PREFIX}{name}"),
                    format!("{} {} {}", plan.format.name(), plan.rows, plan.cols),
                );
                LazyTensor {
                    source,
                    name: name.clone(),
                    dtype: Dtype::U32,
                    shape: vec![words],
                    convert: Some((*plan).clone()),
                    len: words * 4,
                }
            }
            Some(plan) if plan.format != dtype.exact_format() => LazyTensor {
                source,
                name: name.clone(),
                dtype: float_dtype(plan.format),
                shape,
                convert: Some((*plan).clone()),
                len: elements * if plan.format == MatrixFormat::F32 { 4 } else { 2 },
            },
            _ => LazyTensor {
                source,
                name: name.clone(),
                dtype: safetensors_dtype(dtype, &name)?,
                shape,
                convert: None,
                len: elements * dtype.size().unwrap_or(0),
            },
        };
        tensors.push((name, tensor));
    }
    safetensors::serialize_to_file(tensors, Some(metadata), path)
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    let written = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    // A tensor that failed to convert would have been written empty: read the file back.
    super::open(path).map(|_| written)
}
