//! The engine: one model's recurrent states on the GPU, in slots, and the steps that advance
//! them.
//!
//! A step takes the tokens of one or more sequences at once: each sequence contributes as many
//! rows as it has tokens (a whole prompt chunk, or the one token it is generating), the
//! projections run as matrix-matrix products over all rows, and the recurrences walk each
//! sequence's rows in order. A step of a given shape (rows, sequences, which logits) is recorded
//! once and replayed: each run only uploads the embedding rows and the sequence table, encodes
//! the recorded dispatches, and submits once. A sequence that only wants its next token has it
//! chosen on the GPU (kernels::sample): 4 bytes come back instead of a row of logits.

use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::lock::Mutex as AsyncMutex;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor, Readback, ScratchPool};
use crate::grammar::Constraint;
use crate::kernels::{mask_words, Choice, TokenLogprobs, LOGPROB_COLS, MAX_SEQUENCES};
use crate::model::block::LayerState;
use crate::model::Model;

mod block;
mod encode;
#[cfg(not(target_arch = "wasm32"))]
mod inspect;
mod recording;
mod slots;

use self::block::BlockBuffers;
pub use self::block::{BlockSequence, Snapshot, MAX_BLOCK};
use self::encode::{Encoded, Encoding};
use self::recording::StepCache;
pub use self::recording::STEP_CACHE_CAPACITY;
use self::slots::SlotTable;

/// How many sequences and tokens an engine serves at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// States kept on the GPU: the most sessions that can be open at once.
    pub slots: usize,
    /// The most tokens of one sequence read in one step; longer prompts are split into chunks
    /// of this size. Also the most rows of any step.
    pub chunk: usize,
}

impl EngineOptions {
    /// 128 tokens per chunk: enough rows for the matrix-matrix kernels to reach their speed,
    /// small enough that a chunk's scratch memory and logits stay modest.
    pub const DEFAULT_CHUNK: usize = 128;
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { slots: 8, chunk: Self::DEFAULT_CHUNK }
    }
}

/// Which logits a sequence wants back from a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Logits {
    /// None: the tokens only advance the state.
    None,
    /// After its last token (predicting the next one).
    Last,
    /// After each of its tokens.
    All,
}

/// One sequence's part of a step.
#[derive(Debug, Clone, Copy)]
pub struct Work<'a> {
    pub slot: usize,
    pub tokens: &'a [u32],
    pub logits: Logits,
    /// Choose the next token on the GPU, from the logits after the last of `tokens`.
    pub sample: Option<Choice>,
    /// Choose only a token this constraint allows (with `sample`). Its mask is computed while
    /// the GPU runs the step's forward pass.
    pub constraint: Option<&'a Constraint>,
}

impl<'a> Work<'a> {
    /// Work that reads `tokens` and returns `logits`, choosing no token.
    pub fn new(slot: usize, tokens: &'a [u32], logits: Logits) -> Self {
        Work { slot, tokens, logits, sample: None, constraint: None }
    }
}

/// What a step returns for one sequence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// The logits it asked for (see [`Logits`]).
    pub logits: Vec<f32>,
    /// The token chosen on the GPU, when it asked for one.
    pub token: Option<u32>,
    /// Its log-probabilities, when its choice asked for them.
    pub logprobs: Option<TokenLogprobs>,
}

/// What runs steps; one at a time, since steps share the scratch memory.
struct Runner {
    steps: StepCache,
    readback: Readback,
    tokens_readback: Readback,
    logprobs_readback: Readback,
    counters: Counters,
    block: BlockBuffers,
    /// The next step's command buffer, encoded while the GPU ran the last one.
    ahead: Option<Encoded>,
}

/// What an engine's steps have cost since it was made (or since [`Engine::reset_counters`]):
/// for benchmarks and for tests that hold the per-token overhead down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub steps: u64,
    /// Tokens read, over all sequences.
    pub tokens: u64,
    pub submits: u64,
    pub dispatches: u64,
    /// Bytes copied back to the CPU (logits and chosen tokens).
    pub bytes_read_back: u64,
}

/// The GPU side of choosing tokens: each row's choice and mask of allowed tokens, each slot's
/// occurrences of the tokens it generated (for the penalties) and logit bias, and the chosen
/// tokens (u32).
struct Sampling {
    choices: GpuTensor,
    masks: GpuTensor,
    counts: GpuTensor,
    bias: GpuTensor,
    tokens: GpuTensor,
    logprobs: GpuTensor,
}

struct Inner {
    model: Arc<Model>,
    options: EngineOptions,
    max_rows: usize,
    /// The most rows whose every position's logits one step returns: their logits must fit one
    /// storage binding.
    logit_rows: usize,
    pool: ScratchPool,
    state: Vec<LayerState>,
    initial_wkv: Vec<f32>,
    /// Room for one slot's whole state: a buffer cannot be copied onto itself, so copies between
    /// slots go through here.
    staging: wgpu::Buffer,
    sampling: Sampling,
    /// A step's token ids (u32 bits), which it gathers its rows by where the embedding table is
    /// on the GPU.
    ids: GpuTensor,
    slots: SlotTable,
    runner: AsyncMutex<Runner>,
}

/// A model ready to run: its state slots and recorded steps. Cheap to clone; clones share
/// everything.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Engine {
    /// An engine with `options.slots` state slots for `model`. Running out of GPU memory while
    /// allocating them is `Error::TooBig`.
    pub fn new(model: Arc<Model>, options: EngineOptions) -> Result<Engine> {
        let gpu = model.gpu.clone();
        gpu.scoped("creating an engine", || Self::allocate_engine(model, options))
    }

    fn allocate_engine(model: Arc<Model>, options: EngineOptions) -> Result<Engine> {
        if options.slots == 0 || options.chunk == 0 {
            return Err(Error::InvalidArgument(
                "an engine needs at least one slot and a chunk of one token".into(),
            ));
        }
        let gpu = model.gpu.as_ref();
        let config = &model.config;
        let max_rows = options.chunk.max(options.slots.min(MAX_SEQUENCES));
        // A step's rows are a grid dimension of the row-wise kernels.
        let grid_limit = gpu.max_workgroups_per_dimension() as usize;
        if max_rows > grid_limit {
            return Err(Error::TooBig(format!(
                "a chunk of {max_rows} tokens is more rows than this adapter runs in one step ({grid_limit}, its \
                 workgroups per grid dimension): use a chunk of at most {grid_limit}"
            )));
        }
        let binding_limit = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
        let logit_rows = GpuTensor::stack_rows_within_binding(gpu, 1, config.vocab).clamp(1, max_rows);
        if let Some((label, fits)) = model.scratch_shortfall(max_rows)? {
            let advice = match fits {
                0 => "not even one row fits".to_string(),
                // Decode steps have a row per sequence.
                _ if options.slots.min(MAX_SEQUENCES) > fits => {
                    format!("use a chunk of at most {fits} tokens and at most {fits} slots")
                }
                _ => format!("use a chunk of at most {fits} tokens"),
            };
            return Err(Error::TooBig(format!(
                "steps of {max_rows} rows need more than one storage binding of this adapter ({binding_limit} \
                 bytes) for the scratch tensor `{label}`: {advice}"
            )));
        }
        let initial_wkv = model.initial_wkv();
        // Checked before anything is allocated: one buffer holds a layer's states of every slot.
        let widest = initial_wkv.len().max(config.vocab).max(config.embd);
        let limit = gpu.limits.max_buffer_size;
        if widest
            .checked_mul(options.slots)
            .and_then(|n| n.checked_mul(4))
            .is_none_or(|bytes| bytes as u64 > limit)
        {
            return Err(Error::TooBig(format!(
                "{} slots need {widest} values each in one buffer, more than the adapter's {limit}-byte buffers hold",
                options.slots
            )));
        }
        let state = (0..config.layers)
            .map(|layer| {
                let wkv =
                    GpuTensor::zeros(gpu, &format!("L{layer}.state.wkv"), options.slots, initial_wkv.len())?;
                write_initial_state(gpu, &wkv, &initial_wkv)?;
                Ok(LayerState {
                    att_x: GpuTensor::zeros(
                        gpu,
                        &format!("L{layer}.state.att_x"),
                        options.slots,
                        config.embd,
                    )?,
                    wkv,
                    ffn_x: GpuTensor::zeros(
                        gpu,
                        &format!("L{layer}.state.ffn_x"),
                        options.slots,
                        config.embd,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let slot_bytes: u64 = state
            .iter()
            .flat_map(|layer| [&layer.att_x, &layer.wkv, &layer.ffn_x])
            .map(|tensor| (tensor.stride() * 4) as u64)
            .sum();
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("state copy"),
            size: slot_bytes,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let most_sequences = max_rows.min(MAX_SEQUENCES);
        let readback = Readback::new(gpu, "logits readback", logit_rows.max(most_sequences), config.vocab)?;
        let sampling = Sampling {
            choices: GpuTensor::zeros(gpu, "sample choices", most_sequences, Choice::COLS)?,
            masks: GpuTensor::zeros(gpu, "allowed tokens", most_sequences, mask_words(config.vocab))?,
            counts: GpuTensor::zeros(gpu, "generated token counts", options.slots, config.vocab)?,
            bias: GpuTensor::zeros(gpu, "logit bias", options.slots, config.vocab)?,
            tokens: GpuTensor::zeros(gpu, "sampled tokens", 1, most_sequences)?,
            logprobs: GpuTensor::zeros(
                gpu,
                "sampled tokens' log-probabilities",
                most_sequences,
                LOGPROB_COLS,
            )?,
        };
        let ids = GpuTensor::zeros(gpu, "token ids", 1, max_rows)?;
        let tokens_readback = Readback::new(gpu, "token readback", 1, most_sequences)?;
        let logprobs_readback = Readback::new(gpu, "logprob readback", most_sequences, LOGPROB_COLS)?;
        gpu.check()?;
        let runner = AsyncMutex::new(Runner {
            steps: StepCache::default(),
            readback,
            tokens_readback,
            logprobs_readback,
            counters: Counters::default(),
            block: BlockBuffers::new(gpu, options.slots.min(most_sequences))?,
            ahead: None,
        });
        let inner = Inner {
            pool: ScratchPool::new(max_rows),
            max_rows,
            logit_rows,
            options,
            state,
            initial_wkv,
            staging,
            sampling,
            ids,
            slots: SlotTable::new(options.slots),
            runner,
            model,
        };
        Ok(Engine { inner: Arc::new(inner) })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.inner.model
    }

    pub fn options(&self) -> EngineOptions {
        self.inner.options
    }

    /// The most tokens one step can hold, over all its sequences.
    pub fn max_rows(&self) -> usize {
        self.inner.max_rows
    }

    /// The most tokens of one step whose every position's logits it returns ([`Logits::All`]):
    /// the chunk, or fewer where a chunk's logits would not fit one storage binding of the
    /// adapter (a 65536-token vocabulary takes 256 KiB per position).
    pub fn max_logit_rows(&self) -> usize {
        self.inner.logit_rows
    }

    fn gpu(&self) -> &Gpu {
        self.inner.model.gpu.as_ref()
    }

    /// The number of values of one layer's `wkv` state.
    pub fn wkv_len(&self) -> usize {
        self.inner.initial_wkv.len()
    }

    /// Advances each sequence of `work` by its tokens, all in one step, and returns what each asked
    /// for: logits (`V` values for [`Logits::Last`], `tokens × V` for [`Logits::All`], none for
    /// [`Logits::None`]) and, with `sample`, the token chosen on the GPU.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step(&self, work: &[Work]) -> Result<Vec<Output>> {
        pollster::block_on(self.step_async(work))
    }

    /// [`Engine::step`] without blocking: in a browser, waiting for the GPU means awaiting, and
    /// natively the caller's thread is free while the GPU works (another thread waits for it).
    // The runner stays locked until the step's results are read: steps share the scratch memory
    // and readback buffers. Natively another task's step awaits the lock; in a browser a second
    // step started before the first is awaited is an error instead, as the page's calls are
    // meant to be awaited one by one.
    pub async fn step_async(&self, work: &[Work<'_>]) -> Result<Vec<Output>> {
        let shape = self.check(work)?;
        let inner = &*self.inner;
        let gpu = inner.model.gpu.as_ref();
        let vocab = inner.model.config.vocab;
        let mut runner = self.lock_runner().await?;
        let Runner { steps, readback, tokens_readback, logprobs_readback, counters, ahead, .. } =
            &mut *runner;
        let readbacks = (&*readback, &*tokens_readback, &*logprobs_readback);
        let recorded = steps.get_or_record(shape, |id| self.record(shape, id))?;
        let entries = self.upload(recorded, work, shape)?;
        let sampled = work.iter().any(|item| item.sample.is_some());
        let wants_logits = work.iter().any(|item| item.logits != Logits::None);
        let reported = work.iter().any(|item| item.sample.is_some_and(|c| c.logprobs > 0));
        let constrained = work.iter().any(|item| item.constraint.is_some());
        let encoding = Encoding { step: recorded.id, shape, wants_logits, sampled, reported, constrained };
        let encoded = match ahead.take() {
            Some(encoded) if encoded.encoding == encoding => encoded,
            _ => self.encode(recorded, readbacks, encoding),
        };
        gpu.queue.submit([encoded.commands]);
        let submits = 1 + u64::from(encoded.sampling.is_some());
        if let Some(sampling) = encoded.sampling {
            // The masks are computed while the GPU runs the forward pass, and written before
            // the sampling runs.
            self.upload_masks(work)?;
            gpu.queue.submit([sampling]);
        }
        *counters = Counters {
            steps: counters.steps + 1,
            tokens: counters.tokens + shape.rows as u64,
            submits: counters.submits + submits,
            dispatches: counters.dispatches + encoded.dispatches as u64,
            bytes_read_back: counters.bytes_read_back + encoded.bytes_read_back,
        };
        // Decoding repeats the same step: encode the next one while the GPU runs this one.
        *ahead = Some(self.encode(recorded, readbacks, encoding));

        let tokens: Vec<u32> = if sampled {
            tokens_readback.read_rows_async(gpu, 1).await?.into_iter().map(f32::to_bits).collect()
        } else {
            Vec::new()
        };
        if let Some(s) = work.iter().enumerate().position(|(s, item)| {
            item.sample.is_some() && tokens[s] == Choice::NOTHING_ALLOWED && item.constraint.is_none()
        }) {
            return Err(Error::Internal(format!(
                "an unconstrained choice in slot {} found no token",
                work[s].slot
            )));
        }
        if let Some(s) = work
            .iter()
            .enumerate()
            .position(|(s, item)| item.sample.is_some() && tokens[s] == Choice::NON_FINITE_LOGITS)
        {
            return Err(Error::NonFiniteLogits(format!("for the sequence in slot {}", work[s].slot)));
        }
        let values = match (&recorded.head, wants_logits) {
            (Some((_, logits)), true) => readback.read_rows_async(gpu, logits.rows).await?,
            _ => {
                gpu.check()?;
                Vec::new()
            }
        };
        let reports = if reported {
            logprobs_readback.read_rows_async(gpu, shape.sequences).await?
        } else {
            Vec::new()
        };
        let row = |r: usize| values[r * vocab..(r + 1) * vocab].to_vec();
        Ok(work
            .iter()
            .zip(&entries)
            .enumerate()
            .map(|(s, (item, entry))| Output {
                logits: match (item.logits, shape.logits) {
                    (Logits::None, _) => Vec::new(),
                    (Logits::Last, Logits::Last) => row(s),
                    (Logits::Last, _) => row(entry.first_row + entry.rows - 1),
                    (Logits::All, _) => {
                        values[entry.first_row * vocab..(entry.first_row + entry.rows) * vocab].to_vec()
                    }
                },
                // A constrained sequence whose grammar can only end gets NOTHING_ALLOWED.
                token: item.sample.map(|_| tokens[s]),
                logprobs: item.sample.filter(|c| c.logprobs > 0).map(|c| {
                    TokenLogprobs::from_row(
                        &reports[s * LOGPROB_COLS..(s + 1) * LOGPROB_COLS],
                        c.logprobs,
                        vocab,
                    )
                }),
            })
            .collect())
    }

    /// The runner, once no other step holds it.
    async fn lock_runner(&self) -> Result<futures_util::lock::MutexGuard<'_, Runner>> {
        if cfg!(target_arch = "wasm32") {
            self.inner.runner.try_lock().ok_or_else(|| {
                Error::InvalidArgument(
                    "the engine is running another step: await each call before making the next".into(),
                )
            })
        } else {
            Ok(self.inner.runner.lock().await)
        }
    }
}

/// Writes `initial` into every slot of `wkv` (which starts zeroed) a few slots at a time: the
/// state of thousands of slots must not be built in host memory first.
fn write_initial_state(gpu: &Gpu, wkv: &GpuTensor, initial: &[f32]) -> Result<()> {
    if initial.iter().all(|&value| value == 0.0) {
        return Ok(());
    }
    const BATCH_VALUES: usize = 1 << 18;
    let batch = (BATCH_VALUES / initial.len().max(1)).clamp(1, wkv.rows.max(1));
    let values = initial.repeat(batch);
    (0..wkv.rows).step_by(batch).try_for_each(|first| {
        let slots = batch.min(wkv.rows - first);
        wkv.write_rows(gpu, first, &values[..slots * initial.len()])
    })
}
