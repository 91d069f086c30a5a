//! Weight formats: the floats f32, bf16 and f16, and the blockwise quantizations int8 and nf4.
//!
//! Layouts, chosen so that a kernel reads four weights (one `vec4`) with one or two loads and
//! finds its block's parameters by dividing the `vec4` index by a constant:
//! - **f32**, **bf16**, **f16**: each weight as it is, rows padded to whole `vec4`s; 16-bit
//!   values two per u32, low half first. f32 and bf16 keep an fp32 or bf16 checkpoint's own
//!   weights; f16 rounds them (a relative error of up to 2^-11).
//! - **int8**: blocks of [`INT8_BLOCK`] weights along a row. Each weight is a byte `q`, and
//!   `w = q · scale + min` with the block's `scale = (max − min) / 255`. The codes fill whole u32
//!   words (4 weights each); a row is padded to whole blocks. Each block's (scale, min) is one u32
//!   of two f16s, after all the codes.
//! - **nf4**: blocks of [`NF4_BLOCK`] weights. Each weight is a 4-bit index into the
//!   NormalFloat table [`NF4_CODES`] (QLoRA's quantiles of a normal distribution), scaled by the
//!   block's absolute maximum. Eight codes per u32, low nibble first; each block's absmax is an
//!   f16, two per u32, after all the codes.

mod by_input;
pub mod ggml;
mod pack;
mod plan;

pub use self::by_input::{stored_rows as by_input_rows, transpose_padded};
pub use self::pack::PackedMatrix;
pub use self::plan::{PlannedMatrix, QuantPlan};

use crate::error::{Error, Result};

/// Weights per int8 block.
pub const INT8_BLOCK: usize = 128;
/// Weights per nf4 block.
pub const NF4_BLOCK: usize = 64;

/// The 16 NormalFloat-4 levels in [−1, 1].
pub const NF4_CODES: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// How a weight matrix is stored on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum MatrixFormat {
    F32,
    Bf16,
    F16,
    Int8,
    Nf4,
}

impl MatrixFormat {
    pub const ALL: [MatrixFormat; 5] =
        [MatrixFormat::F32, MatrixFormat::Bf16, MatrixFormat::F16, MatrixFormat::Int8, MatrixFormat::Nf4];

    pub fn name(self) -> &'static str {
        match self {
            MatrixFormat::F32 => "f32",
            MatrixFormat::Bf16 => "bf16",
            MatrixFormat::F16 => "f16",
            MatrixFormat::Int8 => "int8",
            MatrixFormat::Nf4 => "nf4",
        }
    }

    pub fn parse(text: &str) -> Result<MatrixFormat> {
        MatrixFormat::ALL.into_iter().find(|format| format.name() == text).ok_or_else(|| {
            Error::InvalidArgument(format!("unknown weight format `{text}`: use f32, bf16, f16, int8 or nf4"))
        })
    }

    /// Whether weights are blocks of codes (int8, nf4) rather than floats.
    pub fn is_quantized(self) -> bool {
        matches!(self, MatrixFormat::Int8 | MatrixFormat::Nf4)
    }

    /// Weights per block (4, one `vec4`, for the floats, which have no block parameters).
    pub fn block(self) -> usize {
        match self {
            MatrixFormat::F32 | MatrixFormat::Bf16 | MatrixFormat::F16 => 4,
            MatrixFormat::Int8 => INT8_BLOCK,
            MatrixFormat::Nf4 => NF4_BLOCK,
        }
    }

    /// `vec4`s of weights from one row to the next (rows are padded to whole blocks).
    pub fn row_vec4s(self, cols: usize) -> usize {
        cols.div_ceil(self.block()) * self.block() / 4
    }

    /// u32 words of codes per row.
    pub fn row_words(self, cols: usize) -> usize {
        match self {
            MatrixFormat::F32 => self.row_vec4s(cols) * 4,
            MatrixFormat::Bf16 | MatrixFormat::F16 => self.row_vec4s(cols) * 2,
            MatrixFormat::Int8 => self.row_vec4s(cols),
            MatrixFormat::Nf4 => self.row_vec4s(cols) / 2,
        }
    }

    /// u32 words of block parameters for `rows` rows.
    pub fn scale_words(self, rows: usize, cols: usize) -> usize {
        let blocks = rows * cols.div_ceil(self.block());
        match self {
            MatrixFormat::F32 | MatrixFormat::Bf16 | MatrixFormat::F16 => 0,
            MatrixFormat::Int8 => blocks,
            MatrixFormat::Nf4 => blocks.div_ceil(2),
        }
    }

    /// Bytes a `[rows, cols]` matrix takes on the GPU.
    pub fn bytes(self, rows: usize, cols: usize) -> u64 {
        ((rows * self.row_words(cols) + self.scale_words(rows, cols)) * 4) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_per_weight() {
        // A 4096-wide row: int8 is 1 byte + 4 bytes per 128; nf4 half a byte + 2 bytes per 64.
        assert_eq!(MatrixFormat::Int8.bytes(1, 4096), 4096 + 32 * 4);
        assert_eq!(MatrixFormat::Nf4.bytes(1, 4096), 2048 + 32 * 4);
        assert_eq!(MatrixFormat::F16.bytes(1, 4096), 8192);
    }
}
