//! The embedding table stays in host memory, in the file's own dtype: each step gathers one row
//! per token on the CPU and uploads it (C floats). This is exact for f32 checkpoints and saves
//! V×C×2 bytes of GPU memory (512 MiB for a 7B model), as llama.cpp does.

use half::{bf16, f16};

use super::source::{DType, TensorSource};
use crate::error::{Error, Result};

enum Rows {
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F32(Vec<f32>),
}

pub struct Embedding {
    rows: Rows,
    pub vocab: usize,
    pub embd: usize,
}

impl Embedding {
    pub fn load(source: &dyn TensorSource, vocab: usize, embd: usize) -> Result<Embedding> {
        let name = "emb.weight";
        let tensor = source.tensor(name)?;
        if tensor.shape != [vocab, embd] {
            return Err(Error::Shape { name: name.into(), expected: vec![vocab, embd], found: tensor.shape });
        }
        let bytes = &tensor.bytes[..];
        let expected = vocab * embd * tensor.dtype.size().unwrap_or(0);
        if bytes.len() != expected {
            return Err(Error::malformed(
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
        Ok(Embedding { rows, vocab, embd })
    }

    /// Row `token` in f32, or an error for an id outside the vocabulary.
    pub fn row(&self, token: u32) -> Result<Vec<f32>> {
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
