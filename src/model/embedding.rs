//! The embedding table, normalized by `blocks.0.ln0` as the official loader leaves it, lives on
//! the GPU where it fits a few storage bindings (f32, V×C×4 bytes; see `embed.wgsl`): a step then uploads token ids,
//! and a decode step can read the token the step before it sampled on the GPU, so several run in
//! one submit (runtime::engine::block). Where it does not fit, it stays in host memory in the
//! file's own dtype, and each step normalizes and uploads its rows (C floats per token), as
//! llama.cpp does. Both give the same rows, bit for bit.
//!
//! The official package normalizes the whole table once as it loads, and for RWKV-4/5/6 it does
//! so in the file's dtype: a bf16 checkpoint's normalized rows are rounded to bf16 (RWKV-7 first
//! converts the table to the run's dtype, fp32 here). The rows are rounded the same way, so that
//! the released bf16 checkpoints give the official logits: skipping that rounding moves them by
//! 1e-2 to 1e-1 × std.

use half::{bf16, f16};

use super::source::{DType, TensorSource};
use crate::error::{Error, Result};
use crate::gpu::{padded4, Gpu, GpuTensor};
use crate::kernels::{EMBED_PARTS, LN_EPS};

/// Where a model keeps its embedding table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EmbeddingPlace {
    /// On the GPU where the table fits [`EMBED_PARTS`] storage bindings, else in host memory.
    #[default]
    Auto,
    Host,
    /// On the GPU, or an error where it does not fit.
    Gpu,
}

/// The embedding table where it was placed.
pub enum EmbeddingTable {
    Host(Embedding),
    /// `[vocab, embd]` normalized rows in f32, in parts of at most one storage binding each.
    Gpu(Vec<GpuTensor>),
}

/// Rows per part of a `[vocab, embd]` f32 table on `gpu`, and the number of parts.
pub fn table_parts(gpu: &Gpu, vocab: usize, embd: usize) -> (usize, usize) {
    let limit = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
    let row = (padded4(embd) * 4) as u64;
    let rows = usize::try_from(limit / row).unwrap_or(usize::MAX).clamp(1, vocab.max(1));
    (rows, vocab.div_ceil(rows))
}

impl EmbeddingTable {
    /// `embedding`, moved to the GPU where `place` and the adapter's limits allow.
    pub fn place(embedding: Embedding, gpu: &Gpu, place: EmbeddingPlace) -> Result<EmbeddingTable> {
        let (_, parts) = table_parts(gpu, embedding.vocab, embedding.embd);
        let fits = parts <= EMBED_PARTS;
        match place {
            EmbeddingPlace::Host => return Ok(EmbeddingTable::Host(embedding)),
            EmbeddingPlace::Auto if !fits => return Ok(EmbeddingTable::Host(embedding)),
            EmbeddingPlace::Gpu if !fits => {
                return Err(Error::TooBig(format!(
                    "the embedding table takes {parts} storage bindings of this adapter in f32, more than \
                     the {EMBED_PARTS} its kernel reads: keep it in host memory"
                )))
            }
            _ => {}
        }
        match upload(&embedding, gpu) {
            Ok(parts) => Ok(EmbeddingTable::Gpu(parts)),
            // Out of GPU memory: host memory serves where the caller did not insist.
            Err(_) if place == EmbeddingPlace::Auto => Ok(EmbeddingTable::Host(embedding)),
            Err(error) => Err(error),
        }
    }

    /// Where the table is, for `info`.
    pub fn place_name(&self) -> &'static str {
        match self {
            EmbeddingTable::Host(_) => "host memory",
            EmbeddingTable::Gpu(_) => "GPU",
        }
    }
}

/// The normalized rows of `embedding` in new GPU tensors, as [`table_parts`] splits them.
fn upload(embedding: &Embedding, gpu: &Gpu) -> Result<Vec<GpuTensor>> {
    let (part_rows, parts) = table_parts(gpu, embedding.vocab, embedding.embd);
    // A few thousand rows at a time: the whole table in f32 need not exist in host memory.
    const ROWS_PER_WRITE: usize = 4096;
    let tensors = (0..parts)
        .map(|part| {
            let first = part * part_rows;
            let rows = part_rows.min(embedding.vocab - first);
            let tensor = GpuTensor::zeros(gpu, &format!("embedding part {part}"), rows, embedding.embd)?;
            for at in (0..rows).step_by(ROWS_PER_WRITE) {
                let end = (at + ROWS_PER_WRITE).min(rows);
                let mut values = Vec::with_capacity((end - at) * embedding.embd);
                for token in first + at..first + end {
                    values.extend(embedding.row(token as u32)?);
                }
                tensor.write_rows(gpu, at, &values)?;
            }
            Ok(tensor)
        })
        .collect::<Result<Vec<_>>>()?;
    gpu.check()?;
    Ok(tensors)
}

/// The precision the official loader leaves the normalized embedding in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormalizedIn {
    /// The file's dtype (RWKV-4, 5 and 6).
    FileDtype,
    /// f32 (RWKV-7).
    F32,
}

enum Rows {
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F32(Vec<f32>),
}

pub struct Embedding {
    rows: Rows,
    pub vocab: usize,
    pub embd: usize,
    /// `blocks.0.ln0`: [weight; bias].
    ln0: Vec<f32>,
    normalized_in: NormalizedIn,
}

impl Embedding {
    /// The table of `source`, read through `ln0` ([weight; bias], already checked).
    pub fn load(
        source: &dyn TensorSource,
        vocab: usize,
        embd: usize,
        ln0: Vec<f32>,
        normalized_in: NormalizedIn,
    ) -> Result<Embedding> {
        let name = "emb.weight";
        let tensor = source.tensor(name)?;
        if tensor.shape != [vocab, embd] {
            return Err(Error::Shape { name: name.into(), expected: vec![vocab, embd], found: tensor.shape });
        }
        let bytes = &tensor.bytes[..];
        let expected = vocab * embd * tensor.dtype.size().unwrap_or(0);
        if bytes.len() != expected {
            return Err(Error::malformed_tensor(
                name,
                format!("holds {} bytes, its shape needs {expected}", bytes.len()),
            ));
        }
        let rows = match tensor.dtype {
            DType::F16 => {
                Rows::F16(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect())
            }
            DType::BF16 => {
                Rows::BF16(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect())
            }
            DType::F32 => Rows::F32(bytemuck::pod_collect_to_vec(bytes)),
            DType::Other(dtype) => return Err(Error::DType { name: name.into(), dtype: dtype.into() }),
        };
        let non_finite = match &rows {
            Rows::F16(values) => values.iter().position(|v| !v.is_finite()),
            Rows::BF16(values) => values.iter().position(|v| !v.is_finite()),
            Rows::F32(values) => values.iter().position(|v| !v.is_finite()),
        };
        if let Some(index) = non_finite {
            let (token, column) = (index / embd.max(1), index % embd.max(1));
            return Err(Error::BadWeights {
                name: name.into(),
                reason: format!(
                    "token {token}'s row holds NaN or infinity at column {column}: the file is damaged"
                ),
            });
        }
        if ln0.len() != 2 * embd {
            return Err(Error::InvalidArgument(format!(
                "ln0 holds {} values for {embd} channels",
                ln0.len()
            )));
        }
        Ok(Embedding { rows, vocab, embd, ln0, normalized_in })
    }

    /// Row `token` normalized by ln0, in the precision the official loader leaves it in, or an
    /// error for an id outside the vocabulary.
    pub fn row(&self, token: u32) -> Result<Vec<f32>> {
        let normalized = self.normalize(&self.raw_row(token)?);
        Ok(match (&self.rows, self.normalized_in) {
            (Rows::BF16(_), NormalizedIn::FileDtype) => {
                normalized.into_iter().map(|v| bf16::from_f32(v).to_f32()).collect()
            }
            (Rows::F16(_), NormalizedIn::FileDtype) => {
                normalized.into_iter().map(|v| f16::from_f32(v).to_f32()).collect()
            }
            _ => normalized,
        })
    }

    /// ln0 of one row in f32, in the order of torch's CPU kernel, which the official loader runs:
    /// each value as (x · rstd − mean · rstd) · weight + bias with fused multiply-adds. Rounded to
    /// 16 bits afterwards, a value that lands on the other side of a rounding boundary than
    /// torch's moves by a whole 16-bit step, so the order matters.
    fn normalize(&self, row: &[f32]) -> Vec<f32> {
        let (weight, bias) = self.ln0.split_at(self.embd);
        let n = row.len() as f64;
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        let rstd = (1.0 / (var + f64::from(LN_EPS)).sqrt()) as f32;
        let shift = -(mean as f32) * rstd;
        row.iter()
            .zip(weight.iter().zip(bias))
            .map(|(&x, (&w, &b))| x.mul_add(rstd, shift).mul_add(w, b))
            .collect()
    }

    /// Row `token` as stored, in f32.
    fn raw_row(&self, token: u32) -> Result<Vec<f32>> {
        let index = token as usize;
        if index >= self.vocab {
            return Err(Error::TokenOutOfRange { id: token, vocab: self.vocab });
        }
        let range = index * self.embd..(index + 1) * self.embd;
        Ok(match &self.rows {
            Rows::F16(rows) => rows[range].iter().map(|x| x.to_f32()).collect(),
            Rows::BF16(rows) => rows[range].iter().map(|x| x.to_f32()).collect(),
            Rows::F32(rows) => rows[range].to_vec(),
        })
    }

    /// Bytes of host memory the table occupies.
    pub fn bytes(&self) -> usize {
        match &self.rows {
            Rows::F16(rows) => rows.len() * 2,
            Rows::BF16(rows) => rows.len() * 2,
            Rows::F32(rows) => rows.len() * 4,
        }
    }
}
