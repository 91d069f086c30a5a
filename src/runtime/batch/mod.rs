//! Continuous batching: many generation requests advanced together, one step at a time.
//!
//! Each step gives every generating request one row (its last token) and fills the rest of the
//! step with prompt chunks of requests still reading, so a new request's prompt is read while
//! the others keep generating. Requests join with [`Batch::add`] (or [`Batch::add_session`], from
//! a state of the caller's) and leave when they finish or with [`Batch::remove`], between any two
//! steps. A request's state can be kept: at checkpoints of its prompt, and when it leaves.
//!
//! Once every request is generating without a grammar or log-probabilities, a step runs several
//! decode steps in one submit ([`Engine::decode_blocks`], see `blocks.rs`): each request's events
//! come for the whole block, and a request that ends inside it leaves with the state after
//! exactly its returned tokens.
//!
//! ```no_run
//! # use rwkv_wgpu::runtime::{Batch, BatchEvent, Engine, RequestOptions};
//! # fn demo(engine: &Engine, prompts: Vec<Vec<u32>>) -> rwkv_wgpu::Result<()> {
//! let mut batch = Batch::new(engine);
//! for prompt in prompts {
//!     batch.add(prompt, RequestOptions::default())?;
//! }
//! while !batch.is_empty() {
//!     for event in batch.step()? {
//!         if let BatchEvent::Token { request, token, .. } = event {
//!             println!("request {request}: token {token}");
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod blocks;

use super::engine::{Engine, Logits, Snapshot, Work};
use super::generate::{Finish, GenerateOptions};
use super::sampler::{Sampler, SamplerOptions};
use super::session::Session;
use crate::error::{Error, Result};
use crate::grammar::{CompiledGrammar, Constraint};
use crate::kernels::{Choice, TokenLogprobs, MAX_SEQUENCES};

/// What a request generates.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    pub max_tokens: usize,
    /// Finish when this token is generated (e.g. end of text).
    pub stop_token: Option<u32>,
    pub sampler: SamplerOptions,
    /// Prompt lengths after which the step reports a [`BatchEvent::Checkpoint`]: the request's
    /// state then holds exactly that much of its prompt (a shared system prompt, say).
    pub checkpoints: Vec<usize>,
    /// Generate only what this grammar allows; the request finishes where the grammar ends.
    pub grammar: Option<CompiledGrammar>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            max_tokens: 200,
            stop_token: Some(0),
            sampler: SamplerOptions::default(),
            checkpoints: Vec::new(),
            grammar: None,
        }
    }
}

/// Something that happened to a request during a step.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchEvent {
    /// A generated token, with its log-probabilities where the request's sampler asks for them.
    Token {
        request: u64,
        token: u32,
        logprobs: Option<TokenLogprobs>,
    },
    Finished {
        request: u64,
        finish: Finish,
    },
    /// The request's state holds its first `tokens` prompt tokens and nothing more; it is in
    /// slot [`Batch::slot`] until the next step.
    Checkpoint {
        request: u64,
        tokens: usize,
    },
}

/// A request that left the batch, with the state it reached.
pub struct Left {
    pub request: u64,
    /// Holds the state after the request's prompt and every generated token but the last
    /// (which was sampled, never fed).
    pub session: Session,
    /// The tokens the state has read since the request joined, in order.
    pub fed: Vec<u32>,
}

struct Request {
    id: u64,
    session: Session,
    /// Tokens to read before generating (the prompt, or the last generated token).
    input: Vec<u32>,
    read: usize,
    sampler: Sampler,
    options: RequestOptions,
    generated: usize,
    fed: Vec<u32>,
    constraint: Option<Constraint>,
    /// The state before the last block, made by the request's first block, and how many tokens
    /// `fed` held then; `None` once a step of one token moved the state on.
    snapshot: Option<Snapshot>,
    snapshot_fed: Option<usize>,
}

impl Request {
    /// Why the request ends with `token`, its latest, if it does.
    fn finish_after(&self, token: u32, grammar_ends: bool) -> Option<Finish> {
        if Some(token) == self.options.stop_token || grammar_ends {
            Some(Finish::EndOfText)
        } else if self.generated >= self.options.max_tokens {
            Some(Finish::MaxTokens)
        } else {
            None
        }
    }

    fn leave(self) -> Left {
        Left { request: self.id, session: self.session, fed: self.fed }
    }
}

/// Generation requests served together on one engine.
pub struct Batch {
    engine: Engine,
    requests: Vec<Request>,
    /// Requests that finished in the last step, until [`Batch::take_finished`] or the next step.
    finished: Vec<Request>,
    next_id: u64,
    /// Decode steps per submit once every request generates (1: one per step).
    steps_per_submit: usize,
}

impl Batch {
    pub fn new(engine: &Engine) -> Batch {
        Batch {
            engine: engine.clone(),
            requests: Vec::new(),
            finished: Vec::new(),
            next_id: 0,
            steps_per_submit: GenerateOptions::DEFAULT_STEPS_PER_SUBMIT,
        }
    }

    /// Sets how many decode steps a step may run in one submit once every request generates
    /// (1 to [`super::MAX_BLOCK`]; 1 turns blocks off).
    pub fn set_steps_per_submit(&mut self, steps: usize) -> Result<()> {
        if steps == 0 || steps > super::MAX_BLOCK {
            return Err(Error::InvalidArgument(format!(
                "steps per submit must be 1 to {}, not {steps}",
                super::MAX_BLOCK
            )));
        }
        self.steps_per_submit = steps;
        Ok(())
    }

    pub fn steps_per_submit(&self) -> usize {
        self.steps_per_submit
    }

    /// Queues a request; its prompt is read over the next steps. Returns its id.
    pub fn add(&mut self, prompt: Vec<u32>, options: RequestOptions) -> Result<u64> {
        self.add_session(Session::new(&self.engine)?, prompt, options)
    }

    /// Queues a request that continues from `session`'s state (which the batch then owns).
    pub fn add_session(
        &mut self,
        session: Session,
        prompt: Vec<u32>,
        options: RequestOptions,
    ) -> Result<u64> {
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("a request needs a prompt of at least one token".into()));
        }
        let vocab = self.engine.model().config.vocab;
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id, vocab });
        }
        let sampler = Sampler::new(options.sampler.clone())?;
        self.engine.clear_counts(session.slot())?;
        self.engine.set_logit_bias(session.slot(), &options.sampler.bias())?;
        let id = self.next_id;
        self.next_id += 1;
        let (input, read, generated, fed) = (prompt, 0, 0, Vec::new());
        let constraint = options.grammar.as_ref().map(CompiledGrammar::start);
        self.requests.push(Request {
            id,
            session,
            input,
            read,
            sampler,
            options,
            generated,
            fed,
            constraint,
            snapshot: None,
            snapshot_fed: None,
        });
        Ok(id)
    }

    /// Takes a request out of the batch, with its state.
    pub fn remove(&mut self, request: u64) -> Option<Left> {
        let at = self.requests.iter().position(|r| r.id == request)?;
        Some(self.requests.remove(at).leave())
    }

    /// The requests that finished in the last step, with their states.
    pub fn take_finished(&mut self) -> Vec<Left> {
        self.finished.drain(..).map(Request::leave).collect()
    }

    /// The state slot of a request in the batch.
    pub fn slot(&self, request: u64) -> Option<usize> {
        self.requests.iter().find(|r| r.id == request).map(|r| r.session.slot())
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Runs one step and returns its events.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step(&mut self) -> Result<Vec<BatchEvent>> {
        pollster::block_on(self.step_async())
    }

    /// [`Batch::step`] without blocking.
    pub async fn step_async(&mut self) -> Result<Vec<BatchEvent>> {
        self.finished.clear();
        if self.requests.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(steps) = self.block_steps() {
            return self.step_block(steps).await;
        }
        let chunk = self.engine.options().chunk;
        let mut budget = self.engine.max_rows();
        // Generating requests first (one row each), so prompts never starve them.
        let mut order: Vec<usize> = (0..self.requests.len()).collect();
        order.sort_by_key(|&i| self.requests[i].input.len() - self.requests[i].read > 1);
        let mut plan = Vec::new();
        for i in order {
            if plan.len() == MAX_SEQUENCES {
                break;
            }
            let request = &self.requests[i];
            let left = request.input.len() - request.read;
            let next_checkpoint = request.options.checkpoints.iter().find(|&&at| at > request.fed.len());
            let before_checkpoint = next_checkpoint.map_or(usize::MAX, |&at| at - request.fed.len());
            let take = left.min(chunk).min(budget).min(before_checkpoint);
            if take == 0 {
                continue;
            }
            budget -= take;
            plan.push((i, take, take == left));
        }
        let choices: Vec<_> =
            plan.iter().map(|&(i, _, chooses)| chooses.then(|| self.requests[i].sampler.choice())).collect();
        let work: Vec<Work> = plan
            .iter()
            .zip(choices)
            .map(|(&(i, take, _), sample)| {
                let request = &self.requests[i];
                let tokens = &request.input[request.read..request.read + take];
                let constraint = request.constraint.as_ref().filter(|_| sample.is_some());
                Work { sample, constraint, ..Work::new(request.session.slot(), tokens, Logits::None) }
            })
            .collect();
        let results = self.engine.step_async(&work).await?;

        let mut events = Vec::new();
        let mut finished = Vec::new();
        for (&(i, take, _), output) in plan.iter().zip(results) {
            let request = &mut self.requests[i];
            request.snapshot_fed = None;
            request.fed.extend_from_slice(&request.input[request.read..request.read + take]);
            request.read += take;
            if request.generated == 0 && request.options.checkpoints.contains(&request.fed.len()) {
                events.push(BatchEvent::Checkpoint { request: request.id, tokens: request.fed.len() });
            }
            let Some(token) = output.token else {
                continue;
            };
            if token == Choice::NOTHING_ALLOWED {
                // Its grammar can only end here.
                events.push(BatchEvent::Finished { request: request.id, finish: Finish::EndOfText });
                finished.push(request.id);
                continue;
            }
            request.sampler.count(token);
            request.generated += 1;
            events.push(BatchEvent::Token { request: request.id, token, logprobs: output.logprobs });
            let constraint = request.constraint.as_ref();
            let grammar_ends = match constraint {
                Some(constraint) if constraint.is_end(token) => true,
                // The mask allowed the token, so this cannot fail; if it did, the request ends
                // rather than the whole batch.
                Some(constraint) => constraint.accept(token).map_or_else(
                    |error| {
                        log::warn!("request {}: {error}", request.id);
                        true
                    },
                    |()| constraint.is_finished(),
                ),
                None => false,
            };
            match request.finish_after(token, grammar_ends) {
                Some(finish) => {
                    events.push(BatchEvent::Finished { request: request.id, finish });
                    finished.push(request.id);
                }
                None => {
                    request.input = vec![token];
                    request.read = 0;
                }
            }
        }
        self.retire(&finished);
        Ok(events)
    }

    /// Moves the requests `finished` out of the batch, until [`Batch::take_finished`].
    fn retire(&mut self, finished: &[u64]) {
        let (done, active) =
            std::mem::take(&mut self.requests).into_iter().partition(|r| finished.contains(&r.id));
        (self.finished, self.requests) = (done, active);
    }
}
