//! Random-weight RWKV-7 models of any shape, made in memory with the official tensor names and
//! shapes. Tensors are generated on demand from a seed and the tensor's name, so even a 7B shape
//! costs no memory until it is loaded. Used by the tests (random shapes) and benchmarks.
//!
//! Scales follow what makes every path matter: decays spread over (0.55, 1), in-context rates
//! over (0, 1), unit-variance activations and logits of order 1–10.

use std::borrow::Cow;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::architecture::Version;
use super::config::{LoraRank, ModelConfig};
use super::source::{DType, TensorData, TensorSource};
use crate::error::{Error, Result};

/// The shape of a synthetic model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub layers: usize,
    pub heads: usize,
    pub head_size: usize,
    pub ffn: usize,
    pub vocab: usize,
    /// Ranks of the decay, in-context rate, value residual and gate projections.
    pub lora: [usize; 4],
}

impl Shape {
    /// An RWKV-7 of `layers` × `embd` as RWKV-LM sizes its parts: FFN 4·C, LoRA ranks
    /// max(32, round(f·√C / 32)·32) with f = 2.5 (decay, in-context rate), 1.7 (value), 5 (gate).
    pub fn rwkv7(layers: usize, embd: usize, vocab: usize, head_size: usize) -> Shape {
        let rank = |factor: f64| (((factor * (embd as f64).sqrt()) / 32.0).round() as usize * 32).max(32);
        Shape {
            layers,
            heads: embd / head_size.max(1),
            head_size,
            ffn: 4 * embd,
            vocab,
            lora: [rank(2.5), rank(2.5), rank(1.7), rank(5.0)],
        }
    }
}

pub struct SyntheticV7 {
    pub config: ModelConfig,
    seed: u64,
    tensors: Vec<(String, Vec<usize>)>,
}

/// FNV-1a: a stable hash, so a name gives the same tensor on every platform and toolchain.
fn fnv1a(text: &str) -> u64 {
    text.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

impl SyntheticV7 {
    /// A model of `shape`; its LoRA ranks are (decay, in-context rate, value residual, gate).
    pub fn new(shape: Shape, seed: u64) -> SyntheticV7 {
        let Shape { layers, heads, head_size, ffn, vocab, lora } = shape;
        let c = heads * head_size;
        let [decay, rate, value, gate] = lora;
        let config = ModelConfig {
            version: Version::latest(&super::v7::ARCHITECTURE),
            layers,
            embd: c,
            heads,
            head_size,
            ffn,
            vocab,
            lora: vec![
                LoraRank { name: "decay", rank: decay },
                LoraRank { name: "in-context rate", rank: rate },
                LoraRank { name: "value residual", rank: value },
                LoraRank { name: "gate", rank: gate },
            ],
        };
        let mut tensors = vec![
            ("emb.weight".to_string(), vec![vocab, c]),
            ("blocks.0.ln0.weight".into(), vec![c]),
            ("blocks.0.ln0.bias".into(), vec![c]),
        ];
        for layer in 0..layers {
            let mut add =
                |name: &str, shape: Vec<usize>| tensors.push((format!("blocks.{layer}.{name}"), shape));
            for norm in ["ln1", "ln2", "att.ln_x"] {
                add(&format!("{norm}.weight"), vec![c]);
                add(&format!("{norm}.bias"), vec![c]);
            }
            for vector in ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a"] {
                add(&format!("att.{vector}"), vec![1, 1, c]);
            }
            for (pair, rank) in [("w", decay), ("a", rate), ("v", value), ("g", gate)] {
                add(&format!("att.{pair}1"), vec![c, rank]);
                add(&format!("att.{pair}2"), vec![rank, c]);
            }
            add("att.r_k", vec![heads, head_size]);
            for linear in ["receptance", "key", "value", "output"] {
                add(&format!("att.{linear}.weight"), vec![c, c]);
            }
            add("ffn.x_k", vec![1, 1, c]);
            add("ffn.key.weight", vec![ffn, c]);
            add("ffn.value.weight", vec![c, ffn]);
        }
        tensors.push(("ln_out.weight".into(), vec![c]));
        tensors.push(("ln_out.bias".into(), vec![c]));
        tensors.push(("head.weight".into(), vec![vocab, c]));
        SyntheticV7 { config, seed, tensors }
    }

    /// The range values of tensor `name` are drawn from, uniformly.
    fn range(&self, name: &str, shape: &[usize]) -> (f32, f32) {
        let kind =
            name.strip_prefix("blocks.").and_then(|rest| rest.split_once('.')).map_or(name, |(_, kind)| kind);
        // Unit-variance outputs for unit-variance inputs.
        let fan_in = |inputs: usize| {
            let s = 3f32.sqrt() / (inputs.max(1) as f32).sqrt();
            (-s, s)
        };
        match kind {
            "emb.weight" => (-1.0, 1.0),
            "ln0.weight" | "ln1.weight" | "ln2.weight" | "att.ln_x.weight" | "ln_out.weight" => (0.6, 1.4),
            _ if kind.ends_with(".bias") => (-0.2, 0.2),
            "att.x_r" | "att.x_w" | "att.x_k" | "att.x_v" | "att.x_a" | "att.x_g" | "ffn.x_k" | "att.k_a" => {
                (0.0, 1.0)
            }
            // Decay biases from e^−e^−0.5·σ(−7) ≈ 0.9995 down to ≈ 0.58.
            "att.w0" => (-7.0, 2.0),
            "att.a0" | "att.v0" => (-2.0, 2.0),
            "att.k_k" => (0.5, 1.5),
            "att.r_k" => (-1.0, 1.0),
            // LoRA factors are stored [in, out].
            "att.w1" | "att.a1" | "att.v1" | "att.g1" | "att.w2" | "att.a2" | "att.v2" | "att.g2" => {
                fan_in(shape[0])
            }
            // Linear layers are stored [out, in]; the head a little wider for logits of order 1–10.
            "head.weight" => fan_in(shape[1] / 4),
            _ => fan_in(shape[1]),
        }
    }
}

impl TensorSource for SyntheticV7 {
    fn format(&self) -> &'static str {
        "synthetic"
    }

    fn names(&self) -> Vec<String> {
        self.tensors.iter().map(|(name, _)| name.clone()).collect()
    }

    fn meta(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, shape)| (dtype_of(shape), shape.clone()))
    }

    fn tensor(&self, name: &str) -> Result<TensorData<'_>> {
        let (_, shape) = self.tensors.iter().find(|(n, _)| n == name).ok_or_else(|| {
            Error::MissingTensor { name: name.into(), hint: " in the synthetic model".into() }
        })?;
        let (lo, hi) = self.range(name, shape);
        let seed = self.seed ^ fnv1a(name);
        let len: usize = shape.iter().product();
        let bytes = match dtype_of(shape) {
            DType::F16 => uniform_f16(len, seed, lo, hi),
            _ => {
                let mut rng = StdRng::seed_from_u64(seed);
                let values: Vec<f32> = (0..len).map(|_| rng.random_range(lo..hi)).collect();
                bytemuck::cast_slice(&values).to_vec()
            }
        };
        Ok(TensorData { dtype: dtype_of(shape), shape: shape.clone(), bytes: Cow::Owned(bytes) })
    }
}

/// Tensors of this many values or more are f16, drawn by [`uniform_f16`]: a 7B's matrices are
/// then made in seconds, and need no conversion for the f16 runs benchmarks measure. Smaller
/// ones (every tensor of the shapes tests use) are f32 from `StdRng`.
const LARGE: usize = 1 << 24;

fn dtype_of(shape: &[usize]) -> DType {
    if shape.iter().product::<usize>() >= LARGE {
        DType::F16
    } else {
        DType::F32
    }
}

/// `len` f16 values uniform in [lo, hi), as little-endian bytes: SplitMix64 streams, one per
/// 1 Mi-value block (so the values do not depend on the number of threads), on every core.
fn uniform_f16(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<u8> {
    const BLOCK: usize = 1 << 20;
    let mut bytes = vec![0u8; len * 2];
    let blocks: Vec<(usize, &mut [u8])> = bytes.chunks_mut(BLOCK * 2).enumerate().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(blocks.len().max(1));
    let per_thread = blocks.len().div_ceil(threads.max(1)).max(1);
    let mut blocks = blocks.into_iter();
    std::thread::scope(|scope| loop {
        let share: Vec<_> = blocks.by_ref().take(per_thread).collect();
        if share.is_empty() {
            break;
        }
        scope.spawn(move || {
            for (index, block) in share {
                let mut state = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                for pair in block.chunks_exact_mut(2) {
                    let unit = (splitmix64(&mut state) >> 40) as f32 / (1u64 << 24) as f32;
                    pair.copy_from_slice(&half::f16::from_f32(lo + (hi - lo) * unit).to_le_bytes());
                }
            }
        });
    });
    bytes
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
