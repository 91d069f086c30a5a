//! Choosing next tokens on the GPU (greedy, or temperature with top-k / top-p / min-p /
//! typical-p, after a logit bias, presence and frequency penalties that decay, and a mask of the
//! tokens a grammar allows), so a decode step reads back token ids instead of logits.

use super::{expect_shape, to_u32, wgsl, Recorder};
use crate::error::{Error, Result};
use crate::gpu::Access::{Read, ReadWrite, Uniform};
use crate::gpu::{Access, GpuTensor, KernelSource};

/// The most likely tokens a choice may ask to report with their log-probabilities.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Values per row of the `logprobs` output: the chosen token's, then (id bits, log-probability)
/// pairs, in whole vec4s.
pub const LOGPROB_COLS: usize = (1 + 2 * MAX_TOP_LOGPROBS).next_multiple_of(4);

const SAMPLE: KernelSource = KernelSource {
    name: "sample",
    parts: &[wgsl::REDUCE, wgsl::SAMPLE],
    sizes: &[("LOGPROB_STRIDE", LOGPROB_COLS), ("MAX_TOP_LOGPROBS", MAX_TOP_LOGPROBS)],
};
const BINDINGS: &[Access] = &[Uniform, Read, Read, ReadWrite, Read, ReadWrite, ReadWrite, Read];

/// The logit bias of a banned token: no choice keeps it unless every token is banned.
pub const BANNED: f32 = -1e30;
/// The logit of a token a constrained choice's mask leaves out (below any banned token).
const MASKED: f32 = -2e30;

/// The u32 words of one row of token masks over `vocab` tokens (token t: bit t % 32 of word t / 32).
pub fn mask_words(vocab: usize) -> usize {
    vocab.div_ceil(32)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    vocab: u32,
    stride: u32,
    rows: u32,
    mask_stride: u32,
}

/// How one row of logits becomes a token; mirrors `Choice` in `sample.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Choice {
    /// The state slot whose generated-token counts the penalties read (and this choice bumps).
    pub slot: u32,
    /// [`Choice::SKIP`], [`Choice::GREEDY`] or [`Choice::DRAW`].
    pub mode: u32,
    /// Keep the k most likely tokens (and any tied with the k-th); 0 keeps all.
    pub top_k: u32,
    pub temperature: f32,
    /// Then keep the most likely tokens carrying this share of the mass; 1 keeps all.
    pub top_p: f32,
    pub presence: f32,
    pub frequency: f32,
    /// The uniform random number in [0, 1) that picks from the kept tokens.
    pub draw: f32,
    /// Then keep the tokens at least this share as likely as the most likely (at temperature
    /// 1); 0 keeps all.
    pub min_p: f32,
    /// The factor of every occurrence count per generated token (the official `alpha_decay`);
    /// 1 keeps the counts.
    pub decay: f32,
    /// Typical sampling: of the whole vocabulary, the tokens whose surprise is nearest the
    /// entropy (at temperature 1) until they carry this share of the mass, intersected with what
    /// the other thresholds keep; 1 keeps all.
    pub typical_p: f32,
    /// 0 reports nothing; else the chosen token's log-probability and those of the
    /// `logprobs − 1` most likely tokens (at most [`MAX_TOP_LOGPROBS`]).
    pub logprobs: u32,
    /// 1: only the tokens of this row's mask may be chosen (set by the engine for a constrained
    /// sequence).
    pub masked: u32,
    /// Zero: the choices tensor's rows are whole vec4s.
    pub reserved: [u32; 3],
}

impl Choice {
    /// Leaves the row alone (a sequence of the step that wants no token).
    pub const SKIP: u32 = 0;
    pub const GREEDY: u32 = 1;
    pub const DRAW: u32 = 2;

    /// What the kernel writes instead of a token when a logit of the row is NaN or infinite.
    pub const NON_FINITE_LOGITS: u32 = u32::MAX;
    /// What the kernel writes instead of a token when the row's mask allows none of the
    /// vocabulary (a grammar that can only end).
    pub const NOTHING_ALLOWED: u32 = u32::MAX - 1;

    /// Values per choice in the `choices` tensor.
    pub const COLS: usize = std::mem::size_of::<Choice>() / 4;

    pub fn skip() -> Choice {
        Choice {
            mode: Choice::SKIP,
            temperature: 1.0,
            top_p: 1.0,
            decay: 1.0,
            typical_p: 1.0,
            ..bytemuck::Zeroable::zeroed()
        }
    }
}

const _: () = assert!(Choice::COLS % 4 == 0, "the choices tensor's rows would be padded");

/// Threads per row (sample.wgsl says why 256; reduce.wgsl's sum is sized by it).
const SAMPLE_THREADS: f64 = 256.0;

/// What sampling keeps per state slot: occurrences of the generated tokens and the logit bias,
/// each `[slots, V]`.
pub struct SlotSampling<'a> {
    pub counts: &'a GpuTensor,
    pub bias: &'a GpuTensor,
}

/// Where sampling writes: the chosen tokens (u32 bits, `[1, rows]`) and what the choices ask to
/// report of them (`[rows, LOGPROB_COLS]`).
pub struct SampleOutputs<'a> {
    pub tokens: &'a GpuTensor,
    pub logprobs: &'a GpuTensor,
}

/// Each row's allowed tokens, for its choice if `masked` (u32 bits, `[rows, mask_words(V)]`).
pub struct RowMasks<'a>(pub &'a GpuTensor);

/// Records, for each row r of `logits` whose choice is not [`Choice::SKIP`]: pick a token as
/// `choices` row r says, write it to `tokens[r]` (and its log-probabilities where asked) and
/// count it in the occurrences of its slot, after decaying them.
pub fn sample(
    rec: &mut Recorder,
    label: &str,
    (logits, choices, RowMasks(masks)): (&GpuTensor, &GpuTensor, RowMasks),
    slots: SlotSampling,
    outputs: SampleOutputs,
) -> Result<()> {
    let SlotSampling { counts, bias } = slots;
    let SampleOutputs { tokens, logprobs } = outputs;
    expect_shape(label, "logprobs", logprobs, logits.rows, LOGPROB_COLS)?;
    expect_shape(label, "choices", choices, logits.rows, Choice::COLS)?;
    expect_shape(label, "tokens", tokens, 1, logits.rows)?;
    expect_shape(label, "masks", masks, logits.rows, mask_words(logits.cols))?;
    if counts.cols != logits.cols || bias.cols != logits.cols || bias.rows != counts.rows {
        return Err(Error::InvalidArgument(format!(
            "{label}: counts [{}, {}] and bias [{}, {}] do not match logits of {} tokens",
            counts.rows, counts.cols, bias.rows, bias.cols, logits.cols
        )));
    }
    let pipeline = rec.gpu.pipeline(&SAMPLE, "sample", BINDINGS, &[("WORKGROUP_SIZE", SAMPLE_THREADS)])?;
    let rows = to_u32(label, logits.rows)?;
    let params = Params {
        vocab: to_u32(label, logits.cols)?,
        stride: to_u32(label, logits.stride())?,
        rows,
        mask_stride: to_u32(label, masks.stride())?,
    };
    let bindings = [
        logits.binding(),
        choices.binding(),
        counts.binding(),
        bias.binding(),
        tokens.binding(),
        logprobs.binding(),
        masks.binding(),
    ];
    rec.record(&pipeline, label, &params, &bindings, [rows, 1, 1])
}

/// Maps floats to integers in the same order, −0 as +0, as the kernel does.
fn order_key(x: f32) -> u32 {
    let bits = if x.to_bits() == 0x8000_0000 { 0 } else { x.to_bits() };
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

fn from_order_key(key: u32) -> f32 {
    f32::from_bits(if key & 0x8000_0000 != 0 { key & 0x7fff_ffff } else { !key })
}

/// What one row of sampling reads, for the CPU references: the row's logits, its slot's counts
/// and bias, and its mask (read only if the choice is `masked`).
#[derive(Debug, Clone, Copy)]
pub struct SampleRow<'a> {
    pub logits: &'a [f32],
    pub counts: &'a [f32],
    pub bias: &'a [f32],
    pub mask: &'a [u32],
}

impl SampleRow<'_> {
    fn allowed(&self, choice: &Choice, token: usize) -> bool {
        choice.masked == 0 || self.mask.get(token / 32).is_some_and(|word| word >> (token % 32) & 1 != 0)
    }

    /// The logits after the bias, the penalties and the mask, in f32 as the kernel computes them.
    fn penalize(&self, choice: &Choice) -> Vec<f32> {
        // In the kernel's order of operations, so that the two round alike.
        let penalized = |l: f32, c: f32| if c > 0.0 { l - choice.presence - c * choice.frequency } else { l };
        let values =
            self.logits.iter().zip(self.counts).zip(self.bias).map(|((&l, &c), &b)| penalized(l + b, c));
        values.enumerate().map(|(t, l)| if self.allowed(choice, t) { l } else { MASKED }).collect()
    }
}

/// CPU reference of [`sample`] for one row; `None` for SKIP. The kept set and draw are the
/// kernel's definition, computed by sorting instead of bisection and in f64. The caller updates
/// the counts ([`count_ref`]).
pub fn sample_ref(row: SampleRow, choice: &Choice) -> Option<u32> {
    if choice.mode == Choice::SKIP {
        return None;
    }
    if !(0..row.logits.len()).any(|t| row.allowed(choice, t)) {
        return Some(Choice::NOTHING_ALLOWED);
    }
    let penalized = row.penalize(choice);
    let argmax =
        (0..penalized.len()).fold(0, |best, i| if penalized[i] > penalized[best] { i } else { best });
    if choice.mode == Choice::GREEDY {
        return Some(argmax as u32);
    }
    let max = f64::from(penalized[argmax]);
    let weight_from =
        |reference: f64, l: f32| ((f64::from(l) - reference) / f64::from(choice.temperature)).exp();
    let weight = |l: f32| weight_from(max, l);
    let mut kept_keys: Vec<u32> = penalized.iter().map(|&l| order_key(l)).collect();
    kept_keys.sort_unstable_by(|a, b| b.cmp(a));
    let k = choice.top_k as usize;
    let mut threshold = if k == 0 || k >= kept_keys.len() { 0 } else { kept_keys[k - 1] };
    kept_keys.retain(|&key| key >= threshold);
    if choice.top_p < 1.0 {
        let weights: Vec<f64> = kept_keys.iter().map(|&key| weight(from_order_key(key))).collect();
        let wanted = f64::from(choice.top_p) * weights.iter().sum::<f64>();
        // The first key, most likely first, whose tokens at or above it reach the wanted mass.
        let mut cumulative = 0.0;
        for (i, (&key, w)) in kept_keys.iter().zip(&weights).enumerate() {
            cumulative += w;
            let last_of_key = kept_keys.get(i + 1) != Some(&key);
            if last_of_key && cumulative >= wanted {
                threshold = key;
                break;
            }
        }
    }
    if choice.min_p > 0.0 {
        threshold = threshold.max(order_key(penalized[argmax] + choice.min_p.ln()));
    }
    let typical = (choice.typical_p < 1.0).then(|| typical_limit(&penalized, max, choice.typical_p));
    let kept = |l: f32| {
        order_key(l) >= threshold
            && typical.is_none_or(|(mean, limit)| (mean - (f64::from(l) - max)).abs() <= limit)
    };
    // Weighed relative to the largest kept logit, as the kernel does.
    let largest_kept = penalized.iter().copied().filter(|&l| kept(l)).fold(f32::MIN, f32::max);
    let weight = |l: f32| weight_from(f64::from(largest_kept), l);
    let total: f64 = penalized.iter().filter(|&&l| kept(l)).map(|&l| weight(l)).sum();
    let target = f64::from(choice.draw) * total;
    let mut walked = 0.0;
    let mut chosen = argmax;
    for (t, &l) in penalized.iter().enumerate() {
        if kept(l) && weight(l) > 0.0 {
            chosen = t;
            walked += weight(l);
            if walked > target {
                break;
            }
        }
    }
    Some(chosen as u32)
}

/// Typical sampling's mean `S/Z` (the score of a token of logit `l` is `|mean − (l − max)|`,
/// its surprise's distance from the entropy) and the smallest score limit whose tokens carry
/// `typical_p` of the mass at temperature 1.
fn typical_limit(logits: &[f32], max: f64, typical_p: f32) -> (f64, f64) {
    let offsets: Vec<f64> = logits.iter().map(|&l| f64::from(l) - max).collect();
    let z: f64 = offsets.iter().map(|d| d.exp()).sum();
    let mean = offsets.iter().map(|d| d.exp() * d).sum::<f64>() / z;
    let mut scored: Vec<(f64, f64)> = offsets.iter().map(|d| ((mean - d).abs(), d.exp())).collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let wanted = f64::from(typical_p) * z;
    let mut cumulative = 0.0;
    for (i, &(score, weight)) in scored.iter().enumerate() {
        cumulative += weight;
        let last_of_score = scored.get(i + 1).is_none_or(|next| next.0 != score);
        if last_of_score && cumulative >= wanted {
            return (mean, score);
        }
    }
    (mean, f64::MAX)
}

/// A chosen token's log-probability and the most likely tokens' (at temperature 1, after the
/// logit bias and penalties), most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprobs {
    /// Reads a row of the kernel's `logprobs` output for a choice that asked for `logprobs`, over
    /// a vocabulary of `vocab` tokens (which bounds how many are reported).
    pub fn from_row(row: &[f32], logprobs: u32, vocab: usize) -> TokenLogprobs {
        let top = (0..(logprobs.saturating_sub(1) as usize).min(vocab).min(MAX_TOP_LOGPROBS))
            .map(|k| (row[1 + 2 * k].to_bits(), row[2 + 2 * k]))
            .collect();
        TokenLogprobs { logprob: row[0], top }
    }
}

/// CPU reference of the kernel's report of `token` for a choice that asks for log-probabilities.
pub fn logprobs_ref(row: SampleRow, choice: &Choice, token: u32) -> TokenLogprobs {
    let penalized: Vec<f64> = row.penalize(choice).into_iter().map(f64::from).collect();
    let max = penalized.iter().copied().fold(f64::MIN, f64::max);
    let log_z = penalized.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
    let logprob = |t: usize| (penalized[t] - max - log_z) as f32;
    let mut order: Vec<usize> = (0..penalized.len()).collect();
    order.sort_by(|&a, &b| penalized[b].total_cmp(&penalized[a]).then(a.cmp(&b)));
    let top = order
        .iter()
        .take(choice.logprobs.saturating_sub(1) as usize)
        .map(|&t| (t as u32, logprob(t)))
        .collect();
    TokenLogprobs { logprob: logprob(token as usize), top }
}

/// CPU reference of the kernel's count update: every occurrence decays, then `token`'s grows.
pub fn count_ref(counts: &mut [f32], token: u32, decay: f32) {
    if decay != 1.0 {
        counts.iter_mut().for_each(|c| *c *= decay);
    }
    counts[token as usize] += 1.0;
}
