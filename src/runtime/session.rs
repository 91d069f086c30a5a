//! A session: one sequence, its state in one of the engine's slots.

use super::engine::{Engine, Logits, Work};
use super::sampler::{Sampler, SamplerOptions};
use super::state::{LayerValues, State};
use crate::error::{Error, Result};
use crate::grammar::Constraint;
use crate::kernels::{Choice, TokenLogprobs};

/// One sequence being read or generated. Feeding tokens advances its state, which stays on the
/// GPU; long inputs are read in chunks of the engine's chunk size, and logits come back only
/// when asked for. Dropping the session frees its slot.
pub struct Session {
    engine: Engine,
    slot: usize,
}

impl Session {
    /// A session in the initial state.
    pub fn new(engine: &Engine) -> Result<Session> {
        Ok(Session { slot: engine.allocate()?, engine: engine.clone() })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine slot holding this session's state (for [`Engine::step`]).
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Reads `tokens` and returns the logits that predict the next token.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        pollster::block_on(self.feed_async(tokens))
    }

    /// [`Session::feed`] without blocking (what a browser must call).
    pub async fn feed_async(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut logits = self.read(tokens, Logits::Last).await?;
        logits.pop().ok_or_else(|| Error::InvalidArgument("no tokens to feed".into()))
    }

    /// Reads `tokens` and returns the logits after each of them, `tokens.len() × V` values.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn feed_positions(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut all = Vec::with_capacity(tokens.len() * self.engine.model().config.vocab);
        self.feed_positions_with(tokens, |_, logits| {
            all.extend_from_slice(logits);
            Ok(())
        })?;
        Ok(all)
    }

    /// Reads `tokens` chunk by chunk and hands each chunk's logits (its tokens × V values) to
    /// `each`, with the position of the chunk's first token, so that memory stays one chunk's
    /// worth however long the input.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn feed_positions_with(
        &mut self,
        tokens: &[u32],
        mut each: impl FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to feed".into()));
        }
        let chunk = self.positions_per_step();
        for (index, tokens) in tokens.chunks(chunk).enumerate() {
            let mut outputs = self.engine.step(&[Work::new(self.slot, tokens, Logits::All)])?;
            each(index * chunk, &outputs.pop().map(|o| o.logits).unwrap_or_default())?;
        }
        Ok(())
    }

    /// Reads `tokens` without computing logits.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn advance(&mut self, tokens: &[u32]) -> Result<()> {
        pollster::block_on(self.read(tokens, Logits::None)).map(drop)
    }

    /// Reads `tokens` and returns the next token, chosen by `sampler` on the GPU: no logits come
    /// back. The sampler counts it towards its penalties. The slot's logit bias is the one
    /// [`Session::start_sampling`] set (none after [`Session::new`] or [`Session::reset`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn feed_and_sample(&mut self, tokens: &[u32], sampler: &mut Sampler) -> Result<u32> {
        pollster::block_on(self.feed_and_sample_async(tokens, sampler, None))
    }

    /// [`Session::feed_and_sample`] without blocking, choosing only what `constraint` allows
    /// where there is one: then [`Choice::NOTHING_ALLOWED`](crate::kernels::Choice) means that
    /// its grammar can only end. The caller tells the constraint the token
    /// ([`Constraint::accept`]).
    pub async fn feed_and_sample_async(
        &mut self,
        tokens: &[u32],
        sampler: &mut Sampler,
        constraint: Option<&Constraint>,
    ) -> Result<u32> {
        Ok(self.feed_and_choose(tokens, sampler, constraint).await?.0)
    }

    /// [`Session::feed_and_sample_async`], with the token's log-probabilities where the sampler
    /// asks for them.
    pub async fn feed_and_choose(
        &mut self,
        tokens: &[u32],
        sampler: &mut Sampler,
        constraint: Option<&Constraint>,
    ) -> Result<(u32, Option<TokenLogprobs>)> {
        let Some((last, before)) = split_last_chunk(tokens, self.engine.options().chunk) else {
            return Err(Error::InvalidArgument("no tokens to feed".into()));
        };
        if !before.is_empty() {
            self.read(before, Logits::None).await?;
        }
        let work =
            Work { sample: Some(sampler.choice()), constraint, ..Work::new(self.slot, last, Logits::None) };
        let output = self.engine.step_async(&[work]).await?.pop().unwrap_or_default();
        let token = output
            .token
            .ok_or_else(|| Error::Internal("a step asked to choose a token returned none".into()))?;
        if token != Choice::NOTHING_ALLOWED {
            sampler.count(token);
        }
        Ok((token, output.logprobs))
    }

    /// Forgets the tokens generated so far, for GPU sampling's penalties (a new generation).
    pub fn clear_counts(&mut self) -> Result<()> {
        self.engine.clear_counts(self.slot)
    }

    /// Starts a generation sampled as `options` say on the GPU: no tokens counted yet, and the
    /// options' logit bias and banned tokens.
    pub fn start_sampling(&mut self, options: &SamplerOptions) -> Result<()> {
        self.engine.clear_counts(self.slot)?;
        self.engine.set_logit_bias(self.slot, &options.bias())
    }

    /// Tokens per step when every position's logits come back: a chunk, unless its logits
    /// would not fit one binding.
    fn positions_per_step(&self) -> usize {
        self.engine.options().chunk.min(self.engine.max_logit_rows())
    }

    /// Reads `tokens` chunk by chunk; returns the last chunk's logits for [`Logits::Last`].
    async fn read(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<Vec<f32>>> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to feed".into()));
        }
        let chunk = match logits {
            Logits::All => self.positions_per_step(),
            _ => self.engine.options().chunk,
        };
        let chunks = tokens.chunks(chunk).count();
        let mut out = Vec::with_capacity(chunks);
        for (index, tokens) in tokens.chunks(chunk).enumerate() {
            let wanted = match logits {
                Logits::Last if index + 1 < chunks => Logits::None,
                other => other,
            };
            let result = self.engine.step_async(&[Work::new(self.slot, tokens, wanted)]).await?;
            if wanted != Logits::None {
                out.extend(result.into_iter().map(|o| o.logits));
            }
        }
        Ok(out)
    }

    /// Back to the initial state.
    pub fn reset(&mut self) -> Result<()> {
        self.engine.reset(self.slot)
    }

    /// A new session starting from this one's state (copied on the GPU).
    pub fn fork(&self) -> Result<Session> {
        let copy = Session::new(&self.engine)?;
        self.engine.copy_slot(self.slot, copy.slot)?;
        Ok(copy)
    }

    /// Copies the state to the CPU.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn state(&self) -> Result<State> {
        pollster::block_on(self.state_async())
    }

    /// [`Session::state`] without blocking.
    pub async fn state_async(&self) -> Result<State> {
        let config = &self.engine.model().config;
        let layers = self
            .engine
            .read_slot(self.slot)
            .await?
            .into_iter()
            .map(|[att_x, wkv, ffn_x]| LayerValues { att_x, wkv, ffn_x })
            .collect();
        Ok(State { version: config.version, embd: config.embd, layers })
    }

    /// Replaces the state, which must belong to a model of this shape.
    pub fn set_state(&mut self, state: &State) -> Result<()> {
        state.check_fits(&self.engine.model().config, self.engine.wkv_len())?;
        let layers: Vec<[Vec<f32>; 3]> =
            state.layers.iter().map(|l| [l.att_x.clone(), l.wkv.clone(), l.ffn_x.clone()]).collect();
        self.engine.write_slot(self.slot, &layers)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.engine.release(self.slot);
    }
}

/// `tokens` as (the last chunk, everything before it), chunks counted from the start as
/// [`Session::advance`] reads them.
fn split_last_chunk(tokens: &[u32], chunk: usize) -> Option<(&[u32], &[u32])> {
    if tokens.is_empty() {
        return None;
    }
    let at = (tokens.len() - 1) / chunk * chunk;
    Some((&tokens[at..], &tokens[..at]))
}
