//! The tensor types of GGUF files (llama.cpp's ggml types) and their decoding to f32.
//!
//! Quantized GGUF weights are decoded once, at load, to the values ggml itself computes with
//! (`dequantize_row_*` in ggml-quants.c), and then stored in one of our formats. Every block
//! type is a fixed number of weights along a row in a fixed number of bytes; all scales are f16.

use half::f16;

/// A ggml tensor type that a GGUF file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Bf16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl GgmlType {
    /// The type of a ggml type id, or the id's name when we cannot decode it.
    pub fn from_id(id: u32) -> Result<GgmlType, String> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::Bf16,
            other => return Err(unsupported_name(other).to_string()),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Bf16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
        }
    }

    /// (weights per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block().0 > 1
    }

    /// Decodes whole blocks (`bytes` holds `bytes.len() / block bytes` of them) into `out`.
    pub fn dequantize(self, bytes: &[u8], out: &mut Vec<f32>) {
        let (_, size) = self.block();
        for block in bytes.chunks_exact(size) {
            match self {
                GgmlType::F32 => out.push(f32::from_le_bytes([block[0], block[1], block[2], block[3]])),
                GgmlType::F16 => out.push(half(block, 0)),
                GgmlType::Bf16 => out.push(half::bf16::from_le_bytes([block[0], block[1]]).to_f32()),
                GgmlType::Q4_0 => q4(block, 2, (half(block, 0), 8.0, 0.0), &[0; 4], 0, out),
                GgmlType::Q4_1 => q4(block, 4, (half(block, 0), 0.0, half(block, 2)), &[0; 4], 0, out),
                GgmlType::Q5_0 => q4(block, 6, (half(block, 0), 16.0, 0.0), &block[2..6], 0x10, out),
                GgmlType::Q5_1 => {
                    q4(block, 8, (half(block, 0), 0.0, half(block, 2)), &block[4..8], 0x10, out)
                }
                GgmlType::Q8_0 => {
                    let d = half(block, 0);
                    out.extend(block[2..].iter().map(|&q| d * f32::from(q as i8)));
                }
                GgmlType::Q4K => k_quant(block, None, out),
                GgmlType::Q5K => k_quant(&block[..16], Some((&block[16..48], &block[48..])), out),
                GgmlType::Q6K => q6_k(block, out),
            }
        }
    }
}

/// The names of the ggml types we do not decode, for error messages.
fn unsupported_name(id: u32) -> String {
    let name = match id {
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("ggml type {id}"),
    };
    name.to_string()
}

fn half(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Q4_0, Q4_1, Q5_0 and Q5_1: 32 weights, `w = d·(q − offset) + m` (rounded as ggml rounds it,
/// `(d, offset, m)` given per type); the low nibbles of the 16 code bytes
/// from `codes_at` are weights 0–15, the high nibbles 16–31; the fifth bits (Q5) come from the
/// 32-bit `high` word, bit j for weight j, worth `high_value`.
fn q4(
    block: &[u8],
    codes_at: usize,
    (d, offset, m): (f32, f32, f32),
    high: &[u8],
    high_value: u8,
    out: &mut Vec<f32>,
) {
    let high = u32::from_le_bytes([high[0], high[1], high[2], high[3]]);
    let codes = &block[codes_at..codes_at + 16];
    let fifth = |j: usize| if high >> j & 1 == 1 { high_value } else { 0 };
    let value = |code: u8| d * (f32::from(code) - offset) + m;
    out.extend(codes.iter().enumerate().map(|(j, &c)| value((c & 0xF) | fifth(j))));
    out.extend(codes.iter().enumerate().map(|(j, &c)| value((c >> 4) | fifth(j + 16))));
}

/// The 6-bit scale and minimum of sub-block `j` (0–7) of a Q4_K or Q5_K block.
fn scale_min(scales: &[u8], j: usize) -> (f32, f32) {
    if j < 4 {
        (f32::from(scales[j] & 63), f32::from(scales[j + 4] & 63))
    } else {
        let scale = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4);
        let min = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        (f32::from(scale), f32::from(min))
    }
}

/// Q4_K (`fifth` = None) and Q5_K: 256 weights in 8 sub-blocks of 32, each `w = d·sc·q − dmin·m`.
/// `header` is d, dmin and the 12 scale bytes; Q4_K's 128 code bytes follow it in `block`, Q5_K
/// passes its 32 bytes of fifth bits and its 128 code bytes.
fn k_quant(block: &[u8], fifth: Option<(&[u8], &[u8])>, out: &mut Vec<f32>) {
    let (d, dmin, scales) = (half(block, 0), half(block, 2), &block[4..16]);
    let codes = match fifth {
        Some((_, codes)) => codes,
        None => &block[16..144],
    };
    for group in 0..4 {
        let quarter = &codes[group * 32..group * 32 + 32];
        for (half_index, shift) in [(0, 0), (1, 4)] {
            let sub = group * 2 + half_index;
            let (sc, m) = scale_min(scales, sub);
            let bit = 1u8 << sub;
            out.extend(quarter.iter().enumerate().map(|(l, &q)| {
                let high = fifth.map_or(0, |(bits, _)| if bits[l] & bit != 0 { 16 } else { 0 });
                d * sc * f32::from(((q >> shift) & 0xF) + high) - dmin * m
            }));
        }
    }
}

/// Q6_K: 256 weights; 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 signed 8-bit scales
/// (one per 16 weights) and d; `w = d·scale·(q − 32)`.
fn q6_k(block: &[u8], out: &mut Vec<f32>) {
    let (low, high, scales, d) = (&block[..128], &block[128..192], &block[192..208], half(block, 208));
    for half_block in 0..2 {
        let (ql, qh, sc) = (&low[half_block * 64..], &high[half_block * 32..], &scales[half_block * 8..]);
        let mut values = [0f32; 128];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, &code) in q.iter().enumerate() {
                values[l + 32 * k] = d * f32::from(sc[is + 2 * k] as i8) * (f32::from(code) - 32.0);
            }
        }
        out.extend_from_slice(&values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    /// Q8_0 is `d · q` with signed codes.
    #[test]
    fn q8_0_scales_signed_codes() {
        let mut block = f16_bytes(0.5).to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut out = Vec::new();
        GgmlType::Q8_0.dequantize(&block, &mut out);
        assert_eq!(out, (0..32).map(|i| 0.5 * (i as f32 - 16.0)).collect::<Vec<_>>());
    }

    /// Q5_0 puts weight j's fifth bit at bit j of its high word and centers codes on 16.
    #[test]
    fn q5_0_reads_the_fifth_bit_per_weight() {
        let mut block = f16_bytes(2.0).to_vec();
        block.extend(0x8000_0001u32.to_le_bytes()); // weights 0 and 31 get the fifth bit
        block.extend([0x21u8; 16]); // low nibble 1 (weights 0–15), high nibble 2 (16–31)
        let mut out = Vec::new();
        GgmlType::Q5_0.dequantize(&block, &mut out);
        assert_eq!(out[0], 2.0 * (17.0 - 16.0));
        assert_eq!(out[1], 2.0 * (1.0 - 16.0));
        assert_eq!(out[16], 2.0 * (2.0 - 16.0));
        assert_eq!(out[31], 2.0 * (18.0 - 16.0));
    }

    /// Every block type decodes to exactly its block's number of weights.
    #[test]
    fn each_block_decodes_to_its_weight_count() {
        for id in [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30] {
            let kind = GgmlType::from_id(id).unwrap();
            let (weights, bytes) = kind.block();
            let mut out = Vec::new();
            kind.dequantize(&vec![0u8; bytes * 3], &mut out);
            assert_eq!(out.len(), weights * 3, "{}", kind.name());
        }
        assert_eq!(GgmlType::from_id(16).unwrap_err(), "IQ2_XXS");
    }
}
