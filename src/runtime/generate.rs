//! Generating text from a session: an iterator of pieces, a callback, or an async stream, with
//! stop strings, a length limit and cancellation.
//!
//! ```no_run
//! use std::sync::Arc;
//! use rwkv_wgpu::gpu::{Gpu, GpuOptions};
//! use rwkv_wgpu::model::{LoadOptions, Model};
//! use rwkv_wgpu::runtime::{Engine, EngineOptions, GenerateOptions, Session};
//! use rwkv_wgpu::tokenizer::Tokenizer;
//!
//! # fn main() -> rwkv_wgpu::Result<()> {
//! let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
//! let model = Model::load(gpu, "rwkv7-g1-0.1b.pth".as_ref(), &LoadOptions::default())?;
//! let engine = Engine::new(Arc::new(model), EngineOptions::default())?;
//! let tokenizer = Tokenizer::world()?;
//! let mut session = Session::new(&engine)?;
//!
//! let options = GenerateOptions { max_tokens: 100, stop: vec!["\n\n".into()], ..Default::default() };
//! for piece in session.generate(&tokenizer, "User: Hi!\n\nAssistant:", &options)? {
//!     print!("{}", piece?.text);
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
#[cfg(not(target_arch = "wasm32"))]
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::engine::{Snapshot, MAX_BLOCK};
use super::sampler::{Sampler, SamplerOptions};
use super::session::Session;
use super::stops::StopScanner;
use crate::error::{Error, Result};
use crate::grammar::{CompiledGrammar, Constraint};
use crate::kernels::{Choice, TokenLogprobs};
use crate::tokenizer::{TextStream, Tokenizer};

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Stop before the first occurrence of any of these in the generated text (which is not
    /// returned).
    pub stop: Vec<String>,
    /// Stop at the tokenizer's end-of-text token.
    pub stop_at_end_of_text: bool,
    pub sampler: SamplerOptions,
    /// Generate only text this grammar allows (see [`crate::grammar`]); the generation ends
    /// where the grammar does.
    pub grammar: Option<CompiledGrammar>,
    /// Set it from anywhere to stop the generation before its next token.
    pub cancel: CancelToken,
    /// Decode steps run per submit where they can be (the embedding table on the GPU, no grammar,
    /// no log-probabilities), their tokens read back together; 1 reads back every token.
    pub steps_per_submit: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 200,
            stop: Vec::new(),
            stop_at_end_of_text: true,
            sampler: SamplerOptions::default(),
            grammar: None,
            cancel: CancelToken::default(),
            steps_per_submit: GenerateOptions::DEFAULT_STEPS_PER_SUBMIT,
        }
    }
}

impl GenerateOptions {
    /// Eight steps per submit: a browser that completes a readback every 100 ms then decodes up
    /// to 80 tokens/s, and a stop inside a block re-reads at most seven tokens.
    pub const DEFAULT_STEPS_PER_SUBMIT: usize = 8;
}

/// A flag that stops a generation; clones share it.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// One generated token and the text it completes (possibly empty: part of a character, or text
/// held back because it may begin a stop string).
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub token: u32,
    pub text: String,
    /// Its log-probabilities, where the sampler options ask for them.
    pub logprobs: Option<TokenLogprobs>,
}

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    MaxTokens,
    /// The generated text reached this stop string.
    Stop(String),
    /// The end-of-text token, or the end of the grammar the generation follows.
    EndOfText,
    Cancelled,
}

/// The generation in progress, yielding one [`Piece`] per token. The prompt has been read when
/// it is made; each `next` returns the token chosen on the GPU and feeds it back, which chooses
/// the one after.
pub struct Generation<'s> {
    session: &'s mut Session,
    tokenizer: &'s Tokenizer,
    text: TextStream<'s>,
    sampler: Sampler,
    options: GenerateOptions,
    /// The token chosen but not yet returned, and its log-probabilities.
    next: (u32, Option<TokenLogprobs>),
    generated: usize,
    stops: StopScanner,
    finish: Option<Finish>,
    /// The last token, when the generation ended without feeding it to the session.
    unfed: Option<u32>,
    constraint: Option<Constraint>,
    /// Where the generation decodes several steps per submit.
    blocks: Option<Blocks>,
}

/// A generation's blocks of decode steps ([`Engine::decode_block`]).
struct Blocks {
    steps: usize,
    /// The state before the current block's first token; made by the first block, so that a
    /// generation that ends at its first token allocates nothing.
    snapshot: Option<Snapshot>,
    /// The tokens the block chose after `Generation::next`; the state has read `next` and all of
    /// these but the last.
    queue: VecDeque<u32>,
    /// The tokens returned since the snapshot.
    returned: Vec<u32>,
}

impl Session {
    /// Reads `prompt` and returns the generation that continues it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate<'s>(
        &'s mut self,
        tokenizer: &'s Tokenizer,
        prompt: &str,
        options: &GenerateOptions,
    ) -> Result<Generation<'s>> {
        let tokens = tokenizer.encode(prompt)?;
        self.generate_tokens(tokenizer, &tokens, options)
    }

    /// Like [`Session::generate`], from prompt tokens.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_tokens<'s>(
        &'s mut self,
        tokenizer: &'s Tokenizer,
        prompt: &[u32],
        options: &GenerateOptions,
    ) -> Result<Generation<'s>> {
        pollster::block_on(self.generate_tokens_async(tokenizer, prompt, options))
    }

    /// [`Session::generate_tokens`] without blocking; take the pieces with
    /// [`Generation::next_async`].
    pub async fn generate_tokens_async<'s>(
        &'s mut self,
        tokenizer: &'s Tokenizer,
        prompt: &[u32],
        options: &GenerateOptions,
    ) -> Result<Generation<'s>> {
        let mut sampler = Sampler::new(options.sampler.clone())?;
        self.start_sampling(&options.sampler)?;
        let constraint = options.grammar.as_ref().map(CompiledGrammar::start);
        let next = self.feed_and_choose(prompt, &mut sampler, constraint.as_ref()).await?;
        let in_blocks = options.steps_per_submit > 1
            && self.engine().decodes_in_blocks()
            && constraint.is_none()
            && options.sampler.logprobs.is_none();
        let blocks = match in_blocks {
            true => Some(Blocks {
                steps: options.steps_per_submit.min(MAX_BLOCK),
                snapshot: None,
                queue: VecDeque::new(),
                returned: Vec::new(),
            }),
            false => None,
        };
        Ok(Generation {
            session: self,
            tokenizer,
            text: tokenizer.stream(),
            sampler,
            options: options.clone(),
            next,
            generated: 0,
            stops: StopScanner::new(options.stop.clone()),
            finish: None,
            unfed: None,
            constraint,
            blocks,
        })
    }

    /// Generates with a callback that receives each piece and may stop the generation by
    /// returning [`ControlFlow::Break`]. Returns why it ended.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_with(
        &mut self,
        tokenizer: &Tokenizer,
        prompt: &str,
        options: &GenerateOptions,
        mut on_piece: impl FnMut(&Piece) -> ControlFlow<()>,
    ) -> Result<Finish> {
        let mut generation = self.generate(tokenizer, prompt, options)?;
        for piece in generation.by_ref() {
            if on_piece(&piece?).is_break() {
                return Ok(Finish::Cancelled);
            }
        }
        Ok(generation.finish().unwrap_or(Finish::MaxTokens))
    }
}

impl Generation<'_> {
    /// Why the generation ended, once it has.
    pub fn finish(&self) -> Option<Finish> {
        self.finish.clone()
    }

    /// The last generated token, if the generation ended before feeding it to the session: a
    /// conversation that goes on should feed it first.
    pub fn unfed_token(&self) -> Option<u32> {
        self.unfed
    }

    /// The next piece, or `None` once the generation has ended.
    pub async fn next_async(&mut self) -> Option<Result<Piece>> {
        if self.finish.is_none() && self.options.cancel.is_cancelled() {
            self.finish = Some(Finish::Cancelled);
            if let Err(error) = self.rewind().await {
                return Some(Err(error));
            }
        }
        if self.finish.is_none() && self.next.0 == Choice::NOTHING_ALLOWED {
            // The grammar could only end right after the prompt.
            self.finish = Some(Finish::EndOfText);
        }
        if self.finish.is_some() || self.generated >= self.options.max_tokens {
            return None;
        }
        let piece = self.step().await;
        if piece.is_err() {
            self.finish = Some(Finish::Cancelled);
        }
        Some(piece)
    }

    async fn step(&mut self) -> Result<Piece> {
        let (token, logprobs) = (self.next.0, self.next.1.take());
        self.generated += 1;
        let grammar_ends = self.constraint.as_ref().is_some_and(|c| c.is_end(token));
        if grammar_ends || (self.options.stop_at_end_of_text && Some(token) == self.tokenizer.end_of_text()) {
            self.finish = Some(Finish::EndOfText);
            self.unfed = Some(token);
            self.rewind().await?;
            let text = self.stops.finish() + &self.text.finish()?;
            return Ok(Piece { token, text, logprobs });
        }
        if let Some(constraint) = &self.constraint {
            constraint.accept(token)?;
        }
        let (mut text, stop) = self.stops.push(&self.text.push(token)?);
        let complete = self.constraint.as_ref().is_some_and(Constraint::is_finished);
        if let Some(stop) = stop {
            self.finish = Some(Finish::Stop(stop));
            self.unfed = Some(token);
            self.rewind().await?;
        } else if self.generated >= self.options.max_tokens || complete {
            self.finish = Some(if complete { Finish::EndOfText } else { Finish::MaxTokens });
            self.unfed = Some(token);
            self.rewind().await?;
            let rest = self.text.finish()?;
            text += &(self.stops.finish() + &rest);
        } else {
            self.advance(token).await?;
            if self.next.0 == Choice::NOTHING_ALLOWED {
                // The grammar can only end here: so does the text.
                self.finish = Some(Finish::EndOfText);
                let rest = self.text.finish()?;
                text += &(self.stops.finish() + &rest);
            }
        }
        Ok(Piece { token, text, logprobs })
    }

    /// Reads `token`, which the generation goes on after, and chooses the next: from the block
    /// in flight if there is one, else by a new block, or one step where blocks are off.
    async fn advance(&mut self, token: u32) -> Result<()> {
        let Some(blocks) = &mut self.blocks else {
            let constraint = self.constraint.as_ref();
            self.next = self.session.feed_and_choose(&[token], &mut self.sampler, constraint).await?;
            return Ok(());
        };
        if let Some(next) = blocks.queue.pop_front() {
            blocks.returned.push(token);
            self.next = (next, None);
            return Ok(());
        }
        // No more steps than tokens the generation may still return.
        let steps = blocks.steps.min(self.options.max_tokens - self.generated);
        let choices: Vec<Choice> = (0..steps).map(|_| self.sampler.choice()).collect();
        let slot = self.session.slot();
        let engine = self.session.engine();
        let snapshot = match &mut blocks.snapshot {
            Some(snapshot) => snapshot,
            empty => empty.insert(engine.snapshot()?),
        };
        let chosen = engine.decode_block(slot, token, &choices, snapshot).await?;
        chosen.iter().for_each(|&t| self.sampler.count(t));
        blocks.returned = vec![token];
        blocks.queue = chosen.into();
        let next =
            blocks.queue.pop_front().ok_or_else(|| Error::Internal("a block chose no token".into()))?;
        self.next = (next, None);
        Ok(())
    }

    /// Once the generation has ended inside a block, which has read past its last token: back to
    /// the state after exactly the tokens returned (see [`Generation::unfed_token`]).
    async fn rewind(&mut self) -> Result<()> {
        let Some(blocks) = &mut self.blocks else { return Ok(()) };
        if blocks.queue.is_empty() {
            return Ok(());
        }
        blocks.queue.clear();
        let slot = self.session.slot();
        let snapshot = blocks
            .snapshot
            .as_ref()
            .ok_or_else(|| Error::Internal("a block ran without a snapshot".into()))?;
        self.session.engine().rewind(slot, snapshot, &blocks.returned).await
    }
}

/// A generation dropped before it ended keeps the state after the tokens it returned, as one
/// decoding a token per submit does.
#[cfg(not(target_arch = "wasm32"))]
impl Drop for Generation<'_> {
    fn drop(&mut self) {
        if self.finish.is_none() {
            // Dropping cannot report an error; the next step on the session will.
            let _ = pollster::block_on(self.rewind());
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Iterator for Generation<'_> {
    type Item = Result<Piece>;

    fn next(&mut self) -> Option<Result<Piece>> {
        pollster::block_on(self.next_async())
    }
}

/// Generates on a thread of its own and streams the pieces, for async code: it awaits each piece
/// instead of blocking on the GPU. Dropping the stream, or cancelling through the options, stops
/// the generation; the session lives on that thread and is dropped when the generation ends.
#[cfg(not(target_arch = "wasm32"))]
pub fn generate_stream(
    mut session: Session,
    tokenizer: Arc<Tokenizer>,
    prompt: String,
    options: GenerateOptions,
) -> impl futures_core::Stream<Item = Result<Piece>> + Send + 'static {
    let (sender, receiver) = futures_channel::mpsc::unbounded();
    std::thread::spawn(move || {
        let generation = match session.generate(&tokenizer, &prompt, &options) {
            Ok(generation) => generation,
            Err(error) => {
                let _ = sender.unbounded_send(Err(error));
                return;
            }
        };
        for piece in generation {
            // A closed receiver means the stream was dropped: stop generating.
            if sender.unbounded_send(piece).is_err() {
                break;
            }
        }
    });
    receiver
}
