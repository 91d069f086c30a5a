//! Packing matrices into the words the GPU reads, in every [`MatrixFormat`], and back.

use half::{bf16, f16};

use super::{MatrixFormat, INT8_BLOCK, NF4_BLOCK, NF4_CODES};
use crate::error::{Error, Result};

/// A matrix in one of the formats, as the u32 words the GPU reads: the codes of every row, then
/// the block parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    pub format: MatrixFormat,
    pub rows: usize,
    pub cols: usize,
    pub words: Vec<u32>,
}

fn pack_f16_pair(low: f16, high: f16) -> u32 {
    u32::from(low.to_bits()) | (u32::from(high.to_bits()) << 16)
}

impl PackedMatrix {
    /// Packs a row-major `[rows, cols]` matrix of f32 values into `format`.
    pub fn pack(format: MatrixFormat, rows: usize, cols: usize, values: &[f32]) -> Result<PackedMatrix> {
        if values.len() != rows * cols {
            return Err(Error::InvalidArgument(format!(
                "{} values for a [{rows}, {cols}] matrix",
                values.len()
            )));
        }
        let (codes, scales) = pack_rows_in_parallel(format, cols, &values[..rows * cols]);
        let mut words = codes;
        match format {
            MatrixFormat::F32 | MatrixFormat::Bf16 | MatrixFormat::F16 => {}
            // Each int8 block: (scale, min) in one word.
            MatrixFormat::Int8 => words.extend(scales.chunks_exact(2).map(|p| pack_f16_pair(p[0], p[1]))),
            MatrixFormat::Nf4 => {
                words.extend(scales.chunks(2).map(|p| pack_f16_pair(p[0], *p.get(1).unwrap_or(&f16::ZERO))))
            }
        }
        Ok(PackedMatrix { format, rows, cols, words })
    }

    /// A `[rows, cols]` matrix of little-endian f16 values (a file's bytes) as f16 words, without
    /// going through f32. Fails with the first element that is not finite and its value.
    pub fn from_f16_bytes(
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> std::result::Result<PackedMatrix, (usize, f32)> {
        let format = MatrixFormat::F16;
        let row_words = format.row_words(cols);
        let mut words = vec![0u32; rows * row_words];
        for (row, (out, values)) in
            words.chunks_exact_mut(row_words.max(1)).zip(bytes.chunks(2 * cols.max(1))).enumerate()
        {
            for (i, pair) in values.chunks(4).enumerate() {
                let low = u16::from_le_bytes([pair[0], pair[1]]);
                let high = if pair.len() == 4 { u16::from_le_bytes([pair[2], pair[3]]) } else { 0 };
                for (j, bits) in [low, high].into_iter().enumerate().take(pair.len() / 2) {
                    // All exponent bits set: infinite or NaN.
                    if bits & 0x7c00 == 0x7c00 {
                        return Err((row * cols + 2 * i + j, f16::from_bits(bits).to_f32()));
                    }
                }
                out[i] = u32::from(low) | (u32::from(high) << 16);
            }
        }
        Ok(PackedMatrix { format, rows, cols, words })
    }

    /// The words of rows `first .. first + count` alone: their codes, then their block parameters.
    pub fn rows_words(&self, first: usize, count: usize) -> Vec<u32> {
        let format = self.format;
        let row_words = format.row_words(self.cols);
        let code_words = self.rows * row_words;
        let mut words = self.words[first * row_words..(first + count) * row_words].to_vec();
        let per_row = self.cols.div_ceil(format.block());
        let (blocks, end) = (first * per_row, (first + count) * per_row);
        match format {
            MatrixFormat::F32 | MatrixFormat::Bf16 | MatrixFormat::F16 => {}
            MatrixFormat::Int8 => words.extend_from_slice(&self.words[code_words + blocks..code_words + end]),
            // Two absmax per word: re-pair them, since the part may start at an odd block.
            MatrixFormat::Nf4 => {
                let half = |block: usize| {
                    let word = self.words[code_words + block / 2];
                    f16::from_bits(if block % 2 == 1 { (word >> 16) as u16 } else { word as u16 })
                };
                let halves: Vec<f16> = (blocks..end).map(half).collect();
                words.extend(halves.chunks(2).map(|p| pack_f16_pair(p[0], *p.get(1).unwrap_or(&f16::ZERO))));
            }
        }
        words
    }

    /// Matrices of one format and width, stacked by rows into one (RWKV-7's r, k and v
    /// projections, read in one pass). Blocks never cross rows, so this is exactly the matrix
    /// packing the stacked values would give.
    pub fn stack_rows(matrices: &[PackedMatrix]) -> Result<PackedMatrix> {
        let Some(first) = matrices.first() else {
            return Err(Error::InvalidArgument("no matrices to stack".into()));
        };
        let (format, cols) = (first.format, first.cols);
        if let Some(other) = matrices.iter().find(|m| m.format != format || m.cols != cols) {
            return Err(Error::InvalidArgument(format!(
                "matrices read in one pass must share a format and width: {} × {} {} beside {} × {} {}",
                first.rows,
                cols,
                format.name(),
                other.rows,
                other.cols,
                other.format.name()
            )));
        }
        let rows: usize = matrices.iter().map(|m| m.rows).sum();
        let row_words = format.row_words(cols);
        let mut words: Vec<u32> =
            matrices.iter().flat_map(|m| m.words[..m.rows * row_words].iter().copied()).collect();
        // The block parameters follow all the codes, in row order; nf4 packs two per word, so
        // they are re-paired across the seams.
        let per_row = cols.div_ceil(format.block());
        match format {
            MatrixFormat::F32 | MatrixFormat::Bf16 | MatrixFormat::F16 => {}
            MatrixFormat::Int8 => {
                words.extend(matrices.iter().flat_map(|m| m.words[m.rows * row_words..].iter().copied()))
            }
            MatrixFormat::Nf4 => {
                let halves: Vec<f16> = matrices
                    .iter()
                    .flat_map(|m| {
                        let scales = &m.words[m.rows * row_words..];
                        (0..m.rows * per_row).map(move |block| {
                            let word = scales[block / 2];
                            f16::from_bits(if block % 2 == 1 { (word >> 16) as u16 } else { word as u16 })
                        })
                    })
                    .collect();
                words.extend(halves.chunks(2).map(|p| pack_f16_pair(p[0], *p.get(1).unwrap_or(&f16::ZERO))));
            }
        }
        Ok(PackedMatrix { format, rows, cols, words })
    }

    /// The values the GPU decodes, row-major `[rows, cols]` (the CPU reference of every format).
    pub fn unpack(&self) -> Vec<f32> {
        let (format, cols) = (self.format, self.cols);
        let row_words = format.row_words(cols);
        let code_words = self.rows * row_words;
        let half = |word: u32, high: bool| {
            f16::from_bits(if high { (word >> 16) as u16 } else { word as u16 }).to_f32()
        };
        let mut out = Vec::with_capacity(self.rows * cols);
        for row in 0..self.rows {
            for c in 0..cols {
                let index = row * format.row_vec4s(cols) * 4 + c;
                let value = match format {
                    MatrixFormat::F32 => f32::from_bits(self.words[index]),
                    MatrixFormat::Bf16 => {
                        let word = self.words[index / 2];
                        f32::from_bits(if index % 2 == 1 { word & 0xffff_0000 } else { word << 16 })
                    }
                    MatrixFormat::F16 => half(self.words[index / 2], index % 2 == 1),
                    MatrixFormat::Int8 => {
                        let q = (self.words[index / 4] >> (8 * (index % 4))) & 0xff;
                        let block = self.words[code_words + index / INT8_BLOCK];
                        q as f32 * half(block, false) + half(block, true)
                    }
                    MatrixFormat::Nf4 => {
                        let q = (self.words[index / 8] >> (4 * (index % 8))) & 0xf;
                        let block = index / NF4_BLOCK;
                        NF4_CODES[q as usize] * half(self.words[code_words + block / 2], block % 2 == 1)
                    }
                };
                out.push(value);
            }
        }
        debug_assert_eq!(code_words, self.rows * row_words);
        out
    }
}

/// Rows of at least this many weights in all are packed on several threads.
const PARALLEL_WEIGHTS: usize = 1 << 20;

/// [`pack_rows`] over row ranges on every core for large matrices (nf4's scale search costs
/// ~60 ns a weight): the same codes and block parameters, in row order.
fn pack_rows_in_parallel(format: MatrixFormat, cols: usize, values: &[f32]) -> (Vec<u32>, Vec<f16>) {
    let threads = if cfg!(target_arch = "wasm32") || values.len() < PARALLEL_WEIGHTS {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let rows = values.len() / cols.max(1);
    if threads <= 1 || rows < 2 {
        return pack_rows(format, cols, values);
    }
    let rows_per_thread = rows.div_ceil(threads);
    let parts: Vec<(Vec<u32>, Vec<f16>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = values
            .chunks(rows_per_thread * cols)
            .map(|part| scope.spawn(move || pack_rows(format, cols, part)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let (mut codes, mut scales) = (Vec::new(), Vec::new());
    for (part_codes, part_scales) in parts {
        codes.extend(part_codes);
        scales.extend(part_scales);
    }
    (codes, scales)
}

/// The codes of whole rows of `cols` weights, and their block parameters in order (int8: scale
/// and minimum per block; nf4: one scale per block).
fn pack_rows(format: MatrixFormat, cols: usize, values: &[f32]) -> (Vec<u32>, Vec<f16>) {
    let block = format.block();
    let padded = format.row_vec4s(cols) * 4;
    let rows = values.len() / cols.max(1);
    let mut codes: Vec<u32> = Vec::with_capacity(rows * format.row_words(cols));
    let mut scales: Vec<f16> = Vec::new();
    let mut row_values = vec![0.0f32; padded];
    for row in values.chunks_exact(cols.max(1)) {
        row_values[..cols].copy_from_slice(row);
        row_values[cols..].fill(0.0);
        match format {
            MatrixFormat::F32 => codes.extend(row_values.iter().map(|w| w.to_bits())),
            MatrixFormat::Bf16 => codes.extend(row_values.chunks_exact(2).map(|pair| {
                u32::from(bf16::from_f32(pair[0]).to_bits())
                    | (u32::from(bf16::from_f32(pair[1]).to_bits()) << 16)
            })),
            MatrixFormat::F16 => {
                for pair in row_values.chunks_exact(2) {
                    codes.push(pack_f16_pair(f16::from_f32(pair[0]), f16::from_f32(pair[1])));
                }
            }
            MatrixFormat::Int8 => {
                for (b, weights) in row_values.chunks_exact(block).enumerate() {
                    // Only real weights set the range; padding decodes to whatever it is.
                    let real = &weights[..cols.saturating_sub(b * block).min(block)];
                    let (min, max) =
                        real.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &w| (lo.min(w), hi.max(w)));
                    let (min, max) = if real.is_empty() { (0.0, 0.0) } else { (min, max) };
                    // The stored f16 parameters are what the GPU decodes with: quantize against them.
                    let scale = f16::from_f32((max - min) / 255.0);
                    let offset = f16::from_f32(min);
                    scales.push(scale);
                    scales.push(offset);
                    let (scale, offset) = (scale.to_f32(), offset.to_f32());
                    for four in weights.chunks_exact(4) {
                        let mut word = 0u32;
                        for (i, &w) in four.iter().enumerate() {
                            let q = if scale > 0.0 {
                                ((w - offset) / scale).round().clamp(0.0, 255.0)
                            } else {
                                0.0
                            };
                            word |= (q as u32) << (8 * i);
                        }
                        codes.push(word);
                    }
                }
            }
            MatrixFormat::Nf4 => {
                for weights in row_values.chunks_exact(block) {
                    let scale = nf4_scale(weights);
                    scales.push(scale);
                    let scale = scale.to_f32();
                    for eight in weights.chunks_exact(8) {
                        let mut word = 0u32;
                        for (i, &w) in eight.iter().enumerate() {
                            let unit = if scale > 0.0 { w / scale } else { 0.0 };
                            word |= (nearest_nf4(unit) as u32) << (4 * i);
                        }
                        codes.push(word);
                    }
                }
            }
        }
    }
    (codes, scales)
}

/// The points halfway between neighbouring NormalFloat levels.
const NF4_MIDPOINTS: [f32; 15] = {
    let mut midpoints = [0.0; 15];
    let mut i = 0;
    while i < 15 {
        midpoints[i] = (NF4_CODES[i] + NF4_CODES[i + 1]) / 2.0;
        i += 1;
    }
    midpoints
};

/// The index of the NormalFloat level nearest to `unit` (the lower one on a tie): the number of
/// midpoints below it.
fn nearest_nf4(unit: f32) -> usize {
    NF4_MIDPOINTS.partition_point(|&midpoint| midpoint < unit)
}

/// Candidate scales per nf4 block, in steps of 2% of its absolute maximum downwards.
const NF4_SCALE_CANDIDATES: usize = 16;

/// The scale of an nf4 block (as stored, in f16) with the least squared error over its weights.
/// The absolute maximum represents the largest weight exactly, but a smaller scale (the largest
/// weights then saturate at ±1) gives every other weight finer levels, which usually wins on
/// bell-shaped weights; the least-squares scale of the best candidate's codes is tried too.
fn nf4_scale(weights: &[f32]) -> f16 {
    let absmax = weights.iter().fold(0.0f32, |m, &w| m.max(w.abs()));
    let squared_error = |scale: f32| -> f32 {
        if scale <= 0.0 {
            return weights.iter().map(|w| w * w).sum();
        }
        weights.iter().map(|&w| (NF4_CODES[nearest_nf4(w / scale)] * scale - w).powi(2)).sum()
    };
    let candidates = (0..NF4_SCALE_CANDIDATES).map(|k| f16::from_f32(absmax * (1.0 - 0.02 * k as f32)));
    let best = |a: (f16, f32), b: (f16, f32)| if b.1 < a.1 { b } else { a };
    let (grid_best, error) = candidates
        .map(|scale| (scale, squared_error(scale.to_f32())))
        .fold((f16::from_f32(absmax), f32::INFINITY), best);
    // For the codes that scale picks, the best scale is Σ w·c / Σ c².
    let s = grid_best.to_f32();
    let (wc, cc) = weights.iter().fold((0.0f32, 0.0f32), |(wc, cc), &w| {
        let c = if s > 0.0 { NF4_CODES[nearest_nf4(w / s)] } else { 0.0 };
        (wc + w * c, cc + c * c)
    });
    if cc > 0.0 {
        let refined = f16::from_f32(wc / cc);
        return best((grid_best, error), (refined, squared_error(refined.to_f32()))).0;
    }
    grid_best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3).collect()
    }

    /// An f16 file's matrix copied as it is packs exactly as its values through f32 do, rows
    /// padded to whole vec4s; an infinite or NaN element is refused with its index.
    #[test]
    fn f16_bytes_pack_as_their_values() {
        for (rows, cols) in [(3, 8), (5, 7), (2, 1)] {
            let values: Vec<f32> = values(rows * cols).iter().map(|&v| f16::from_f32(v).to_f32()).collect();
            let bytes: Vec<u8> = values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
            let expected = PackedMatrix::pack(MatrixFormat::F16, rows, cols, &values).unwrap();
            assert_eq!(PackedMatrix::from_f16_bytes(rows, cols, &bytes).unwrap(), expected, "{rows}×{cols}");
        }
        let mut bytes: Vec<u8> = values(14).iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
        bytes[2 * 9..2 * 10].copy_from_slice(&f16::NAN.to_le_bytes());
        let (index, value) = PackedMatrix::from_f16_bytes(2, 7, &bytes).unwrap_err();
        assert_eq!(index, 9);
        assert!(value.is_nan());
    }

    #[test]
    fn f16_round_trips() {
        let v: Vec<f32> = values(3 * 7).iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        assert_eq!(PackedMatrix::pack(MatrixFormat::F16, 3, 7, &v).unwrap().unpack(), v);
    }

    /// int8 error is at most half a step of its block; nf4's at most half the widest gap between
    /// levels times its scale, or what saturates above it (the scale is at least 70% of the
    /// absolute maximum).
    #[test]
    fn quantization_error_is_bounded() {
        for (rows, cols) in [(2, 128), (3, 200), (1, 7)] {
            let v = values(rows * cols);
            let int8 = PackedMatrix::pack(MatrixFormat::Int8, rows, cols, &v).unwrap().unpack();
            let step = 0.6 / 255.0;
            assert!(
                v.iter().zip(&int8).all(|(a, b)| (a - b).abs() <= step * 0.51 + 1e-3),
                "int8 {rows}x{cols}"
            );
            let nf4 = PackedMatrix::pack(MatrixFormat::Nf4, rows, cols, &v).unwrap().unpack();
            let bound = f32::max(0.3 * 0.16, 0.3 * 0.3) + 1e-3;
            assert!(v.iter().zip(&nf4).all(|(a, b)| (a - b).abs() <= bound), "nf4 {rows}x{cols}");
        }
    }

    /// Large matrices are packed on several threads: the words are those of one thread.
    #[test]
    fn packing_in_parallel_gives_the_same_words() {
        let (rows, cols) = (1100, 1000);
        assert!(rows * cols >= PARALLEL_WEIGHTS);
        let v = values(rows * cols);
        for format in MatrixFormat::ALL {
            assert_eq!(pack_rows_in_parallel(format, cols, &v), pack_rows(format, cols, &v), "{format:?}");
        }
    }

    /// On bell-shaped weights the chosen nf4 scales beat the absolute maximum, block by block
    /// never losing to it.
    #[test]
    fn nf4_scales_beat_the_absolute_maximum() {
        // Deterministic normal-ish weights: sums of four uniforms.
        let uniform = values(4 * 64 * 32);
        let weights: Vec<f32> = uniform.chunks_exact(4).map(|four| four.iter().sum::<f32>() / 4.0).collect();
        let packed = PackedMatrix::pack(MatrixFormat::Nf4, 32, 64, &weights).unwrap().unpack();
        let (mut chosen, mut absmax) = (0.0, 0.0);
        for (block, decoded) in weights.chunks_exact(NF4_BLOCK).zip(packed.chunks_exact(NF4_BLOCK)) {
            let scale = f16::from_f32(block.iter().fold(0.0f32, |m, &w| m.max(w.abs()))).to_f32();
            let by_absmax: f32 =
                block.iter().map(|&w| (NF4_CODES[nearest_nf4(w / scale)] * scale - w).powi(2)).sum();
            let by_choice: f32 = block.iter().zip(decoded).map(|(w, d)| (w - d).powi(2)).sum();
            assert!(by_choice <= by_absmax, "{by_choice} > {by_absmax}");
            (chosen, absmax) = (chosen + by_choice, absmax + by_absmax);
        }
        assert!(chosen < 0.95 * absmax, "squared error {chosen} against {absmax} with the absolute maxima");
    }

    /// bf16 and f32 keep what they are given bit for bit; bf16 rounds f32 to nearest.
    #[test]
    fn floats_keep_their_bits() {
        let v = values(3 * 9);
        assert_eq!(PackedMatrix::pack(MatrixFormat::F32, 3, 9, &v).unwrap().unpack(), v);
        let b: Vec<f32> = v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
        assert_eq!(PackedMatrix::pack(MatrixFormat::Bf16, 3, 9, &b).unwrap().unpack(), b);
        assert_eq!(PackedMatrix::pack(MatrixFormat::Bf16, 3, 9, &v).unwrap().unpack(), b);
        assert_eq!(MatrixFormat::F32.bytes(2, 5), 2 * 8 * 4);
        assert_eq!(MatrixFormat::Bf16.bytes(2, 5), 2 * 8 * 2);
    }
}
