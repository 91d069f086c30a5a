//! Choosing the next token from logits: greedy, or temperature with top-k / top-p / min-p, after
//! a logit bias (banned tokens) and presence and frequency penalties on the tokens generated so
//! far, whose counts may decay as the official `alpha_decay` does. The engine does it on the
//! GPU from a [`Sampler::choice`]; [`Sampler::sample`] does the same on the CPU.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::kernels::{self, Choice};

/// The largest logit bias by magnitude: far beyond any logit, far short of a banned token's.
pub const MAX_LOGIT_BIAS: f32 = 1e6;

/// How to sample. `Default` is greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerOptions {
    /// Always take the most likely token (ignores temperature, top-k and top-p).
    pub greedy: bool,
    /// > 0. Below 1 sharpens the distribution, above 1 flattens it.
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches this; in (0, 1].
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit for each time it was generated.
    pub frequency_penalty: f32,
    /// Every count is multiplied by this after each generated token (the official pipeline's
    /// `alpha_decay`, 0.996): in (0, 1], 1 never forgets.
    pub penalty_decay: f32,
    /// Keep only tokens at least this share as likely as the most likely one (at temperature 1);
    /// in [0, 1), 0 keeps all.
    pub min_p: f32,
    /// Typical sampling: keep the tokens whose surprise is nearest the entropy (at temperature
    /// 1), fewest first, until they carry this share of the mass; in (0, 1], 1 keeps all.
    pub typical_p: f32,
    /// Added to the logits of these tokens (summed where a token repeats).
    pub logit_bias: Vec<(u32, f32)>,
    /// Never chosen (unless every token is banned).
    pub banned: Vec<u32>,
    /// Report each chosen token's log-probability and those of this many most likely tokens
    /// (at most 20), at temperature 1 after the bias and penalties; `None` reports nothing.
    pub logprobs: Option<usize>,
    /// Seed of the random generator; `None` draws one from the OS.
    pub seed: Option<u64>,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            greedy: true,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_decay: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            logit_bias: Vec::new(),
            banned: Vec::new(),
            logprobs: None,
            seed: None,
        }
    }
}

impl SamplerOptions {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "temperature must be a positive number, got {} (use greedy for argmax)",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return bad("penalties must be finite numbers".into());
        }
        if !(self.penalty_decay > 0.0 && self.penalty_decay <= 1.0) {
            return bad(format!("the penalty decay must be in (0, 1], got {}", self.penalty_decay));
        }
        if !(0.0..1.0).contains(&self.min_p) {
            return bad(format!("min-p must be in [0, 1), got {}", self.min_p));
        }
        if !(self.typical_p > 0.0 && self.typical_p <= 1.0) {
            return bad(format!("typical-p must be in (0, 1], got {}", self.typical_p));
        }
        if self.logprobs.is_some_and(|n| n > kernels::MAX_TOP_LOGPROBS) {
            return bad(format!(
                "at most {} top log-probabilities, not {:?}",
                kernels::MAX_TOP_LOGPROBS,
                self.logprobs
            ));
        }
        if let Some((token, bias)) =
            self.logit_bias.iter().find(|(_, b)| !b.is_finite() || b.abs() > MAX_LOGIT_BIAS)
        {
            return bad(format!(
                "the logit bias of token {token} must be a number from -{MAX_LOGIT_BIAS} to {MAX_LOGIT_BIAS}, got {bias} \
                 (ban a token instead of biasing it further)"
            ));
        }
        Ok(())
    }

    /// The bias GPU sampling adds per token: the logit bias, and [`kernels::BANNED`] for banned
    /// tokens.
    pub fn bias(&self) -> Vec<(u32, f32)> {
        let banned = self.banned.iter().map(|&token| (token, kernels::BANNED));
        self.logit_bias.iter().copied().chain(banned).collect()
    }
}

/// Samples tokens and remembers what it generated, for the penalties. The choice itself is
/// [`kernels::sample_ref`]'s: the same definition the GPU kernel runs, so that a generation
/// chooses the same tokens whether its logits come back or not.
pub struct Sampler {
    options: SamplerOptions,
    rng: StdRng,
    /// Occurrences of the generated tokens, decayed.
    counts: HashMap<u32, f32>,
}

impl Sampler {
    pub fn new(options: SamplerOptions) -> Result<Sampler> {
        options.validate()?;
        let rng = match options.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Sampler { options, rng, counts: HashMap::new() })
    }

    /// The next choice for the GPU (slot filled in by the engine), with a fresh random draw.
    pub fn choice(&mut self) -> Choice {
        let o = &self.options;
        Choice {
            slot: 0,
            mode: if o.greedy { Choice::GREEDY } else { Choice::DRAW },
            top_k: u32::try_from(o.top_k).unwrap_or(u32::MAX),
            temperature: o.temperature,
            top_p: o.top_p,
            presence: o.presence_penalty,
            frequency: o.frequency_penalty,
            draw: self.rng.random::<f32>(),
            min_p: o.min_p,
            decay: o.penalty_decay,
            typical_p: o.typical_p,
            logprobs: o.logprobs.map_or(0, |top| 1 + top as u32),
            masked: 0,
            reserved: [0; 3],
        }
    }

    /// Counts a token chosen elsewhere (on the GPU) towards the penalties, after decaying the
    /// others as the GPU does.
    pub fn count(&mut self, token: u32) {
        let decay = self.options.penalty_decay;
        if decay != 1.0 {
            self.counts.values_mut().for_each(|c| *c *= decay);
        }
        *self.counts.entry(token).or_default() += 1.0;
    }

    /// Picks the next token from logits on the CPU and counts it towards the penalties.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::InvalidArgument("no logits to sample from".into()));
        }
        if let Some(bad) = logits.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFiniteLogits(format!("token {bad}'s logit is {}", logits[bad])));
        }
        let mut counts = vec![0.0; logits.len()];
        for (&token, &count) in &self.counts {
            if let Some(slot) = counts.get_mut(token as usize) {
                *slot = count;
            }
        }
        let mut bias = vec![0.0; logits.len()];
        for (token, value) in self.options.bias() {
            let vocab = logits.len();
            *bias.get_mut(token as usize).ok_or(Error::TokenOutOfRange { id: token, vocab })? += value;
        }
        let choice = self.choice();
        let row = kernels::SampleRow { logits, counts: &counts, bias: &bias, mask: &[] };
        let token = kernels::sample_ref(row, &choice).unwrap_or(0);
        self.count(token);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(options: SamplerOptions) -> Sampler {
        Sampler::new(SamplerOptions { seed: Some(7), ..options }).unwrap()
    }

    #[test]
    fn greedy_takes_the_largest_logit() {
        assert_eq!(sampler(SamplerOptions::default()).sample(&[0.1, 3.0, -1.0, 2.9]).unwrap(), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let options =
            SamplerOptions { greedy: false, top_k: 1, temperature: 5.0, ..SamplerOptions::default() };
        let mut s = sampler(options);
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 1.0, 0.5]).unwrap(), 1);
        }
    }

    /// Probabilities of [ln 6, ln 3, ln 1] are 0.6, 0.3, 0.1: top-p 0.85 keeps the first two.
    #[test]
    fn top_p_drops_the_tail() {
        let logits = [6f32.ln(), 3f32.ln(), 0.0];
        let mut s = sampler(SamplerOptions { greedy: false, top_p: 0.85, ..SamplerOptions::default() });
        let draws: Vec<u32> = (0..300).map(|_| s.sample(&logits).unwrap()).collect();
        assert!(!draws.contains(&2));
        let ones = draws.iter().filter(|&&t| t == 1).count();
        assert!((60..140).contains(&ones), "token 1 drawn {ones} times of 300, expected about 100");
    }

    #[test]
    fn penalties_discourage_repeats() {
        let options =
            SamplerOptions { presence_penalty: 1.0, frequency_penalty: 0.5, ..SamplerOptions::default() };
        let mut s = sampler(options);
        assert_eq!(s.sample(&[2.0, 1.0]).unwrap(), 0);
        // Token 0 now scores 2 − 1 − 0.5 = 0.5 < 1.
        assert_eq!(s.sample(&[2.0, 1.0]).unwrap(), 1);
    }

    /// Probabilities 0.6, 0.3, 0.1: min-p 0.2 keeps tokens at least 0.12 likely, the first two.
    #[test]
    fn min_p_drops_what_is_far_less_likely_than_the_best() {
        let logits = [6f32.ln(), 3f32.ln(), 0.0];
        let mut s = sampler(SamplerOptions { greedy: false, min_p: 0.2, ..SamplerOptions::default() });
        let draws: Vec<u32> = (0..300).map(|_| s.sample(&logits).unwrap()).collect();
        assert!(!draws.contains(&2));
        assert!(draws.contains(&1));
    }

    /// Probabilities 0.5, 0.3, 0.2 (entropy 1.03 nats; surprises 0.69, 1.20, 1.61): typical-p
    /// 0.25 keeps the token nearest the entropy, token 1 (0.3 of the mass), alone.
    #[test]
    fn typical_p_keeps_the_tokens_nearest_the_entropy() {
        let logits = [5f32.ln(), 3f32.ln(), 2f32.ln()];
        let mut s = sampler(SamplerOptions { greedy: false, typical_p: 0.25, ..SamplerOptions::default() });
        assert!((0..100).all(|_| s.sample(&logits).unwrap() == 1));
    }

    #[test]
    fn banned_tokens_and_logit_bias() {
        let options =
            SamplerOptions { banned: vec![1], logit_bias: vec![(2, 1.5)], ..SamplerOptions::default() };
        // Token 1 is the largest but banned; token 2 rises from 1.0 to 2.5, above token 0.
        assert_eq!(sampler(options).sample(&[2.0, 3.0, 1.0]).unwrap(), 2);
        let everything = SamplerOptions { banned: vec![0, 1, 2], ..SamplerOptions::default() };
        assert!(sampler(everything).sample(&[2.0, 3.0, 1.0]).is_ok(), "all banned still gives a token");
        let outside = SamplerOptions { banned: vec![9], ..SamplerOptions::default() };
        assert!(matches!(sampler(outside).sample(&[0.0; 3]), Err(Error::TokenOutOfRange { id: 9, .. })));
    }

    /// The official `alpha_decay`: each token multiplies every count, so old repeats weigh less.
    #[test]
    fn penalties_decay() {
        let options =
            SamplerOptions { frequency_penalty: 1.0, penalty_decay: 0.5, ..SamplerOptions::default() };
        let mut s = sampler(options);
        assert_eq!(s.sample(&[2.0, 1.6, 0.0]).unwrap(), 0);
        // Token 0 counts 1 and scores 1.0 < 1.6: token 1.
        assert_eq!(s.sample(&[2.0, 1.6, 0.0]).unwrap(), 1);
        // Token 0 now counts 0.5 (2 − 0.5 = 1.5), token 1 counts 1 (0.6): token 0 again.
        assert_eq!(s.sample(&[2.0, 1.6, 0.0]).unwrap(), 0);
    }

    #[test]
    fn same_seed_same_tokens() {
        let options = SamplerOptions { greedy: false, seed: Some(42), ..SamplerOptions::default() };
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |o: &SamplerOptions| {
            let mut s = Sampler::new(o.clone()).unwrap();
            (0..30).map(|_| s.sample(&logits).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(&options), draw(&options));
    }

    #[test]
    fn invalid_options_are_errors() {
        for options in [
            SamplerOptions { temperature: 0.0, ..SamplerOptions::default() },
            SamplerOptions { temperature: -1.0, ..SamplerOptions::default() },
            SamplerOptions { top_p: 0.0, ..SamplerOptions::default() },
            SamplerOptions { top_p: 1.5, ..SamplerOptions::default() },
            SamplerOptions { min_p: 1.0, ..SamplerOptions::default() },
            SamplerOptions { min_p: -0.1, ..SamplerOptions::default() },
            SamplerOptions { typical_p: 0.0, ..SamplerOptions::default() },
            SamplerOptions { typical_p: 1.1, ..SamplerOptions::default() },
            SamplerOptions { penalty_decay: 0.0, ..SamplerOptions::default() },
            SamplerOptions { penalty_decay: 1.5, ..SamplerOptions::default() },
            SamplerOptions { logit_bias: vec![(0, f32::NAN)], ..SamplerOptions::default() },
            SamplerOptions { logit_bias: vec![(0, -1e38)], ..SamplerOptions::default() },
        ] {
            assert!(matches!(Sampler::new(options), Err(Error::InvalidArgument(_))));
        }
    }

    #[test]
    fn non_finite_logits_are_their_own_error() {
        let mut sampler = Sampler::new(SamplerOptions::default()).unwrap();
        let error = sampler.sample(&[0.5, f32::NAN, 1.0]).unwrap_err();
        assert!(matches!(error, Error::NonFiniteLogits(_)), "{error:?}");
        assert!(error.to_string().contains("token 1's logit is NaN"), "{error}");
    }
}
