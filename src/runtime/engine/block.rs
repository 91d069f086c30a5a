//! Several decode steps of one or more sequences in one submit. Each step gathers its input rows
//! from the embedding table on the GPU by the tokens the step before it sampled there, so nothing
//! comes back between steps: a block of K steps of B sequences costs one submit and one readback
//! of K·B token ids. A browser completes a readback only every so often (Firefox: ~100 ms), which
//! caps one token per submit at that rate; a server saves a round trip per token of its batch.
//!
//! A block runs past a token at which the generation may end (a stop string, the end of text, a
//! cancel). Before each block the sequence's state is copied aside ([`Snapshot`]), so that
//! [`Engine::rewind`] can put it back and read again exactly the tokens the generation returned.

use super::slots::StateCopy;
use super::{Counters, Engine, Logits, Runner, Work};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor, Readback};
use crate::kernels::Choice;
use crate::model::EmbeddingTable;

/// The most decode steps of one block.
pub const MAX_BLOCK: usize = 16;

/// A copy of one slot's state, taken at the start of a block.
pub struct Snapshot {
    buffer: wgpu::Buffer,
}

/// The GPU side of a block: each step's choices (one row per sequence), and the tokens sampled,
/// read back together.
pub(super) struct BlockBuffers {
    /// The most sequences of a block.
    sequences: usize,
    choices: GpuTensor,
    tokens: GpuTensor,
    readback: Readback,
}

impl BlockBuffers {
    pub fn new(gpu: &Gpu, sequences: usize) -> Result<BlockBuffers> {
        let most = MAX_BLOCK * sequences;
        Ok(BlockBuffers {
            sequences,
            choices: GpuTensor::zeros(gpu, "block choices", most, Choice::COLS)?,
            tokens: GpuTensor::zeros(gpu, "block tokens", 1, most)?,
            readback: Readback::new(gpu, "block token readback", 1, most)?,
        })
    }
}

/// One sequence of [`Engine::decode_blocks`].
pub struct BlockSequence<'a> {
    pub slot: usize,
    /// The token it reads first.
    pub first: u32,
    /// How each step chooses its next token; every sequence of a block has as many.
    pub choices: &'a [Choice],
    /// Receives the slot's state before the block.
    pub snapshot: &'a Snapshot,
}

impl Engine {
    /// Whether [`Engine::decode_block`] can run: the embedding table is on the GPU.
    pub fn decodes_in_blocks(&self) -> bool {
        matches!(self.inner.model.embedding, EmbeddingTable::Gpu(_))
    }

    /// Room for one slot's state, for [`Engine::decode_block`].
    pub fn snapshot(&self) -> Result<Snapshot> {
        let gpu = self.gpu();
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("state snapshot"),
            size: self.slot_bytes(),
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        gpu.check()?;
        Ok(Snapshot { buffer })
    }

    /// Copies the state of `slot` into `snapshot`, then reads `first` and, `choices.len()` times,
    /// chooses the next token as that step's choice says and reads it: all in one submit.
    /// Returns the chosen tokens, the last of them not read. Unconstrained choices only, without
    /// log-probabilities.
    pub async fn decode_block(
        &self,
        slot: usize,
        first: u32,
        choices: &[Choice],
        snapshot: &Snapshot,
    ) -> Result<Vec<u32>> {
        let sequence = BlockSequence { slot, first, choices, snapshot };
        let mut chosen = self.decode_blocks(&[sequence]).await?;
        chosen.pop().ok_or_else(|| Error::Internal("a block returned nothing".into()))
    }

    /// [`Engine::decode_block`] for several sequences at once, each step a batch of one token
    /// per sequence: one submit for the whole block. Returns each sequence's chosen tokens.
    pub async fn decode_blocks(&self, sequences: &[BlockSequence<'_>]) -> Result<Vec<Vec<u32>>> {
        if !self.decodes_in_blocks() {
            return Err(Error::InvalidArgument(
                "decoding in blocks needs the embedding table on the GPU".into(),
            ));
        }
        let steps = sequences.first().map_or(0, |s| s.choices.len());
        if steps == 0 || steps > MAX_BLOCK {
            return Err(Error::InvalidArgument(format!("a block has 1 to {MAX_BLOCK} steps, not {steps}")));
        }
        if sequences.iter().any(|s| s.choices.len() != steps) {
            return Err(Error::InvalidArgument("the sequences of a block take as many steps".into()));
        }
        let choices = sequences.iter().flat_map(|s| s.choices);
        if let Some(choice) = choices.clone().find(|c| c.logprobs > 0 || c.masked != 0) {
            return Err(Error::InvalidArgument(format!(
                "a block's choices report no log-probabilities and follow no grammar: {choice:?}"
            )));
        }
        let firsts: Vec<[u32; 1]> = sequences.iter().map(|s| [s.first]).collect();
        let work: Vec<Work> = sequences
            .iter()
            .zip(&firsts)
            .map(|(s, first)| Work { sample: Some(s.choices[0]), ..Work::new(s.slot, first, Logits::None) })
            .collect();
        let shape = self.check(&work)?;
        let gpu = self.gpu();
        let mut runner = self.lock_runner().await?;
        let Runner { steps: recordings, block, counters, .. } = &mut *runner;
        let batch = sequences.len();
        if batch > block.sequences {
            return Err(Error::InvalidArgument(format!(
                "a block holds at most {} sequences, not {batch}",
                block.sequences
            )));
        }
        let recorded = recordings.get_or_record(shape, |id| self.record(shape, id))?;
        self.upload(recorded, &work, shape)?;
        // Row `step · batch + b`: sequence b's choice at that step.
        let own: Vec<Choice> = (0..steps)
            .flat_map(|step| sequences.iter().map(move |s| Choice { slot: s.slot as u32, ..s.choices[step] }))
            .collect();
        block.choices.write_rows(gpu, 0, bytemuck::cast_slice::<Choice, f32>(&own))?;

        let sampling = &self.inner.sampling;
        let sample = recorded
            .sample
            .as_ref()
            .ok_or_else(|| Error::Internal("a decode step was recorded without sampling".into()))?;
        let head = recorded.head.as_ref().map(|(head, _)| head);
        let parts: Vec<_> = [Some(&recorded.body), head, Some(sample)].into_iter().flatten().collect();
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("decode block") });
        for sequence in sequences {
            self.encode_state_copy(
                &mut encoder,
                sequence.slot,
                &sequence.snapshot.buffer,
                StateCopy::SlotToBuffer,
            );
        }
        let step_choices = (batch * block.choices.stride() * 4) as u64;
        for step in 0..steps {
            encoder.copy_buffer_to_buffer(
                &block.choices.buffer,
                block.choices.offset + step as u64 * step_choices,
                &sampling.choices.buffer,
                sampling.choices.offset,
                Some(step_choices),
            );
            if step > 0 {
                copy_ids(&mut encoder, (&sampling.tokens, 0), (&self.inner.ids, 0), batch);
            }
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("decode step"),
                timestamp_writes: None,
            });
            for part in &parts {
                part.encode_into(&mut pass);
            }
            drop(pass);
            copy_ids(&mut encoder, (&sampling.tokens, 0), (&block.tokens, step * batch), batch);
        }
        let chosen = GpuTensor { cols: steps * batch, ..block.tokens.clone() };
        let bytes_read_back = block.readback.copy_from(&mut encoder, &chosen);
        gpu.queue.submit([encoder.finish()]);
        let per_step: usize = parts.iter().map(|part| part.len()).sum();
        add(counters, (steps, steps * batch), per_step * steps, bytes_read_back);

        let row = block.readback.read_rows_async(gpu, 1).await?;
        let ids: Vec<u32> = row[..steps * batch].iter().map(|id| id.to_bits()).collect();
        let mut chosen = Vec::with_capacity(batch);
        for (b, sequence) in sequences.iter().enumerate() {
            let tokens: Vec<u32> = (0..steps).map(|step| ids[step * batch + b]).collect();
            if tokens.contains(&Choice::NON_FINITE_LOGITS) {
                return Err(Error::NonFiniteLogits(format!("for the sequence in slot {}", sequence.slot)));
            }
            if tokens.contains(&Choice::NOTHING_ALLOWED) {
                return Err(Error::Internal(format!(
                    "an unconstrained choice in slot {} found no token",
                    sequence.slot
                )));
            }
            chosen.push(tokens);
        }
        Ok(chosen)
    }

    /// Puts `snapshot` back into `slot` and reads `tokens` one step each (as a block read them),
    /// in one submit: the state after exactly the tokens a generation returned.
    pub async fn rewind(&self, slot: usize, snapshot: &Snapshot, tokens: &[u32]) -> Result<()> {
        if tokens.len() > MAX_BLOCK {
            return Err(Error::InvalidArgument(format!(
                "a rewind reads at most {MAX_BLOCK} tokens, not {}",
                tokens.len()
            )));
        }
        self.check_slot(slot)?;
        let gpu = self.gpu();
        let mut encoder =
            gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("rewind") });
        self.encode_state_copy(&mut encoder, slot, &snapshot.buffer, StateCopy::BufferToSlot);
        let mut runner = self.lock_runner().await?;
        let Runner { steps, block, counters, .. } = &mut *runner;
        let mut dispatches = 0;
        if let Some(&first) = tokens.first() {
            let first = [first];
            let work = [Work::new(slot, &first, Logits::None)];
            let shape = self.check(&work)?;
            let vocab = self.inner.model.config.vocab;
            if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::TokenOutOfRange { id, vocab });
            }
            let recorded = steps.get_or_record(shape, |id| self.record(shape, id))?;
            self.upload(recorded, &work, shape)?;
            let ids: Vec<f32> = tokens.iter().map(|&id| f32::from_bits(id)).collect();
            block.tokens.write_rows(gpu, 0, &[ids, vec![0.0; block.tokens.cols - tokens.len()]].concat())?;
            for step in 0..tokens.len() {
                copy_ids(&mut encoder, (&block.tokens, step), (&self.inner.ids, 0), 1);
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("rewind step"),
                    timestamp_writes: None,
                });
                recorded.body.encode_into(&mut pass);
            }
            dispatches = recorded.body.len() * tokens.len();
        }
        gpu.queue.submit([encoder.finish()]);
        add(counters, (tokens.len(), tokens.len()), dispatches, 0);
        gpu.check()
    }
}

/// Encodes copying `count` token ids from index `from.1` of the one-row `from.0` to index `to.1`
/// of `to.0`.
fn copy_ids(
    encoder: &mut wgpu::CommandEncoder,
    (from, from_index): (&GpuTensor, usize),
    (to, to_index): (&GpuTensor, usize),
    count: usize,
) {
    encoder.copy_buffer_to_buffer(
        &from.buffer,
        from.offset + from_index as u64 * 4,
        &to.buffer,
        to.offset + to_index as u64 * 4,
        Some(count as u64 * 4),
    );
}

/// Counts one submit of `steps` steps reading `tokens` tokens in all.
fn add(counters: &mut Counters, (steps, tokens): (usize, usize), dispatches: usize, bytes_read_back: u64) {
    *counters = Counters {
        steps: counters.steps + steps as u64,
        tokens: counters.tokens + tokens as u64,
        submits: counters.submits + 1,
        dispatches: counters.dispatches + dispatches as u64,
        bytes_read_back: counters.bytes_read_back + bytes_read_back,
    };
}
