//! Choosing the next token from logits: greedy, or temperature with top-k / top-p, after
//! presence and frequency penalties on the tokens generated so far.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

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
        Ok(())
    }
}

/// Samples tokens and remembers what it generated, for the penalties.
pub struct Sampler {
    options: SamplerOptions,
    rng: StdRng,
    counts: HashMap<u32, u32>,
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

    /// Picks the next token and counts it towards the penalties.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        let token = self.choose(logits)?;
        *self.counts.entry(token).or_default() += 1;
        Ok(token)
    }

    fn choose(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::InvalidArgument("no logits to sample from".into()));
        }
        if let Some(bad) = logits.iter().position(|x| x.is_nan()) {
            return Err(Error::Gpu(format!("the model produced NaN logits (token {bad})")));
        }
        let o = &self.options;
        let mut logits = logits.to_vec();
        for (&token, &count) in &self.counts {
            if let Some(logit) = logits.get_mut(token as usize) {
                *logit -= o.presence_penalty + count as f32 * o.frequency_penalty;
            }
        }
        let argmax = |values: &[f32]| {
            values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best }) as u32
        };
        if o.greedy {
            return Ok(argmax(&logits));
        }
        // Most likely first; softmax at temperature in f64.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if o.top_k > 0 {
            order.truncate(o.top_k);
        }
        let max = f64::from(logits[order[0]]);
        let mut probs: Vec<f64> =
            order.iter().map(|&i| ((f64::from(logits[i]) - max) / f64::from(o.temperature)).exp()).collect();
        let total: f64 = probs.iter().sum();
        let mut kept = 0.0;
        let mut keep = probs.len();
        for (n, p) in probs.iter_mut().enumerate() {
            *p /= total;
            kept += *p;
            if kept >= f64::from(o.top_p) {
                keep = n + 1;
                break;
            }
        }
        probs.truncate(keep);
        let mass: f64 = probs.iter().sum();
        let mut draw = self.rng.random::<f64>() * mass;
        for (n, p) in probs.iter().enumerate() {
            draw -= p;
            if draw <= 0.0 {
                return Ok(order[n] as u32);
            }
        }
        Ok(order[keep - 1] as u32)
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
        let draws: Vec<u32> = (0..300).map(|_| s.choose(&logits).unwrap()).collect();
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
        ] {
            assert!(matches!(Sampler::new(options), Err(Error::InvalidArgument(_))));
        }
    }
}
