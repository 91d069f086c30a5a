//! Steps recorded once per shape and replayed: the shape of a step's work, the recording of the
//! whole forward pass for it, and a bounded cache of the recordings.

use super::{Engine, Logits, Sampling, Work};
use crate::error::{Error, Result};
use crate::gpu::{GpuTensor, Step};
use crate::kernels::{self, Recorder, Sequences, MAX_SEQUENCES, MAX_TOP_LOGPROBS};
use crate::model::block::StepTensors;
use crate::model::EmbeddingTable;

/// The shape a step is recorded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Shape {
    pub rows: usize,
    pub sequences: usize,
    pub logits: Logits,
}

/// A step recorded for one shape.
pub(super) struct Recorded {
    /// Unique among an engine's recorded steps: a command buffer encoded for one is replayed
    /// only for that one (another recording of the same shape has other bind groups).
    pub id: u64,
    pub sequences: Sequences,
    pub body: Step,
    pub head: Option<(Step, GpuTensor)>,
    /// Choosing tokens from the head's rows (steps whose head gives one row per sequence).
    pub sample: Option<Step>,
}

/// The most recorded steps an engine keeps. Each holds bind groups and a sequence table; a server
/// meets a new shape with every prompt's last chunk, so an unbounded cache would grow for as
/// long as it runs. Decoding and full chunks reuse a handful of shapes, which stay.
pub const STEP_CACHE_CAPACITY: usize = 32;

/// Recorded steps by shape, the least recently used evicted first.
#[derive(Default)]
pub(super) struct StepCache {
    /// Most recently used last.
    entries: Vec<(Shape, Recorded)>,
    recorded: u64,
}

impl StepCache {
    /// The step recorded for `shape`, recording it with `record` (given a fresh id) if absent.
    pub fn get_or_record(
        &mut self,
        shape: Shape,
        record: impl FnOnce(u64) -> Result<Recorded>,
    ) -> Result<&Recorded> {
        match self.entries.iter().position(|(s, _)| *s == shape) {
            Some(index) => {
                let entry = self.entries.remove(index);
                self.entries.push(entry);
            }
            None => {
                self.recorded += 1;
                let recorded = record(self.recorded)?;
                if self.entries.len() == STEP_CACHE_CAPACITY {
                    self.entries.remove(0);
                }
                self.entries.push((shape, recorded));
            }
        }
        Ok(&self.entries.last().expect("an entry was just pushed").1)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Engine {
    /// Validates a step's work and returns its shape.
    pub(super) fn check(&self, work: &[Work]) -> Result<Shape> {
        if work.is_empty() || work.len() > MAX_SEQUENCES {
            return Err(Error::InvalidArgument(format!(
                "a step holds 1 to {MAX_SEQUENCES} sequences, not {}",
                work.len()
            )));
        }
        let vocab = self.inner.model.config.vocab;
        let mut seen = Vec::with_capacity(work.len());
        for item in work {
            self.check_slot(item.slot)?;
            if seen.contains(&item.slot) {
                return Err(Error::InvalidArgument(format!(
                    "state slot {} appears twice in one step",
                    item.slot
                )));
            }
            seen.push(item.slot);
            if let Some(choice) = item.sample {
                if choice.logprobs as usize > 1 + MAX_TOP_LOGPROBS {
                    return Err(Error::InvalidArgument(format!(
                        "a choice reports at most {MAX_TOP_LOGPROBS} top log-probabilities (logprobs ≤ {}), not {}",
                        1 + MAX_TOP_LOGPROBS,
                        choice.logprobs
                    )));
                }
            } else if item.constraint.is_some() {
                return Err(Error::InvalidArgument("a constraint needs a token to choose (sample)".into()));
            }
            if item.sample.is_some() && item.logits == Logits::All {
                return Err(Error::InvalidArgument(
                    "a token is chosen from the logits after the last token: ask for Logits::Last or None with it"
                        .into(),
                ));
            }
            if item.tokens.is_empty() {
                return Err(Error::InvalidArgument("a sequence in a step has no tokens".into()));
            }
            if let Some(&id) = item.tokens.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::TokenOutOfRange { id, vocab });
            }
        }
        let rows: usize = work.iter().map(|item| item.tokens.len()).sum();
        if rows > self.inner.max_rows {
            return Err(Error::InvalidArgument(format!(
                "a step of {rows} tokens exceeds the engine's {} (split prompts into chunks)",
                self.inner.max_rows
            )));
        }
        let wants = |kind| work.iter().any(|item| item.logits == kind);
        if wants(Logits::All) && rows > self.inner.logit_rows {
            return Err(Error::TooBig(format!(
                "every position's logits of {rows} tokens do not fit one storage binding of this adapter \
                 ({} bytes): read at most {} tokens per step",
                self.gpu().limits.max_storage_buffer_binding_size,
                self.inner.logit_rows
            )));
        }
        let sampled = work.iter().any(|item| item.sample.is_some());
        let logits = if wants(Logits::All) {
            if sampled {
                return Err(Error::InvalidArgument(
                    "a step cannot both return every position's logits and choose tokens".into(),
                ));
            }
            Logits::All
        } else if wants(Logits::Last) || sampled {
            Logits::Last
        } else {
            Logits::None
        };
        Ok(Shape { rows, sequences: work.len(), logits })
    }

    /// Records the step for one shape: every block, and the head for the rows whose logits are
    /// read.
    pub(super) fn record(&self, shape: Shape, id: u64) -> Result<Recorded> {
        let inner = &*self.inner;
        let model = &inner.model;
        let gpu = model.gpu.as_ref();
        let (pool, c, vocab) = (&inner.pool, model.config.embd, model.config.vocab);
        let sequences = Sequences::new(gpu, shape.sequences)?;
        let mut rec = Recorder::with_sequences(gpu, &sequences);
        // The rows are normalized by ln0 already (see model::embedding); with the table on the
        // GPU the step gathers them from the uploaded ids, else they are uploaded.
        let x = pool.tensor(gpu, "x", shape.rows, c)?;
        if let EmbeddingTable::Gpu(parts) = &model.embedding {
            let ids = GpuTensor { cols: shape.rows, ..inner.ids.clone() };
            kernels::embed(&mut rec, "embed", parts, &ids, &x)?;
        }
        model.record_blocks(&mut rec, pool, StepTensors { x: &x, state: &inner.state })?;
        let body = std::mem::take(&mut rec.step);

        // The last rows' tensors hold one row per sequence, whatever the chunk: with a large
        // vocabulary, a chunk's worth of logits may not fit one binding.
        let most_sequences = MAX_SEQUENCES.min(inner.max_rows);
        let head_rows = match shape.logits {
            Logits::None => None,
            Logits::Last => {
                let last = pool.tensor_of_capacity(gpu, "x_last", most_sequences, shape.sequences, c)?;
                kernels::gather_last_rows(&mut rec, "gather", &x, &last)?;
                Some((last, most_sequences, ["x_out_last", "logits_last"]))
            }
            Logits::All => Some((x, inner.logit_rows, ["x_out", "logits"])),
        };
        let head = match head_rows {
            None => None,
            Some((rows, capacity, [normed_name, logits_name])) => {
                let normed = pool.tensor_of_capacity(gpu, normed_name, capacity, rows.rows, c)?;
                let logits = pool.tensor_of_capacity(gpu, logits_name, capacity, rows.rows, vocab)?;
                model.record_head(&mut rec, &rows, &normed, &logits)?;
                Some((std::mem::take(&mut rec.step), logits))
            }
        };
        let sample = match (&head, shape.logits) {
            (Some((_, logits)), Logits::Last) => {
                let Sampling { choices, masks, counts, bias, tokens, logprobs } = &inner.sampling;
                let rows = logits.rows;
                let choices = GpuTensor { rows, ..choices.clone() };
                let masks = GpuTensor { rows, ..masks.clone() };
                let tokens = GpuTensor { cols: rows, ..tokens.clone() };
                let logprobs = GpuTensor { rows, ..logprobs.clone() };
                let slots = kernels::SlotSampling { counts, bias };
                let outputs = kernels::SampleOutputs { tokens: &tokens, logprobs: &logprobs };
                let inputs = (logits, &choices, kernels::RowMasks(&masks));
                kernels::sample(&mut rec, "sample", inputs, slots, outputs)?;
                Some(std::mem::take(&mut rec.step))
            }
            _ => None,
        };
        drop(rec);
        gpu.check()?;
        Ok(Recorded { id, sequences, body, head, sample })
    }
}
