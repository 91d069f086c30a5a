//! A step's inputs and command buffer: the embedding rows and sequence table it reads, and its
//! recorded dispatches with the copies of what it reads back, in one compute pass.

use super::recording::{Recorded, Shape};
use super::{Engine, Work};
use crate::error::Result;
use crate::gpu::{GpuTensor, Readback};
use crate::kernels::{Choice, SequenceEntry};
use crate::model::EmbeddingTable;

/// What a step's command buffer holds besides its shape's dispatches; steps alike share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Encoding {
    /// The recorded step's id (see `Recorded::id`).
    pub step: u64,
    pub shape: Shape,
    pub wants_logits: bool,
    pub sampled: bool,
    /// Some choice asks for log-probabilities.
    pub reported: bool,
    /// Some sequence is constrained: its sampling is a command buffer of its own, submitted once
    /// its mask is written.
    pub constrained: bool,
}

/// A step's command buffer, encoded ahead of its inputs (they are written by the queue before it
/// runs), with what it costs.
pub(super) struct Encoded {
    pub encoding: Encoding,
    pub commands: wgpu::CommandBuffer,
    /// The sampling and its readback, where it runs on its own (see [`Encoding::constrained`]).
    pub sampling: Option<wgpu::CommandBuffer>,
    pub dispatches: usize,
    pub bytes_read_back: u64,
}

impl Engine {
    /// Encodes a step: its dispatches and the copies of what it reads back.
    pub(super) fn encode(
        &self,
        recorded: &Recorded,
        (readback, tokens_readback, logprobs_readback): (&Readback, &Readback, &Readback),
        e: Encoding,
    ) -> Encoded {
        let gpu = self.gpu();
        let mut encoder =
            gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        let head = recorded.head.as_ref();
        let sample = recorded.sample.as_ref().filter(|_| e.sampled);
        let together = if e.constrained { None } else { sample };
        let parts = [Some(&recorded.body), head.map(|(step, _)| step), together];
        // One compute pass for the whole step: every pass boundary costs on real GPUs.
        let mut pass = encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("step"), timestamp_writes: None });
        for step in parts.iter().flatten() {
            step.encode_into(&mut pass);
        }
        drop(pass);
        let mut dispatches = parts.iter().flatten().map(|step| step.len()).sum();
        let mut bytes_read_back = 0;
        if let (true, Some((_, logits))) = (e.wants_logits, head) {
            bytes_read_back += readback.copy_from(&mut encoder, logits);
        }
        let mut sampling = None;
        if let (true, Some(sample)) = (e.constrained, sample) {
            let commands = encoder.finish();
            encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step sampling") });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step sampling"),
                timestamp_writes: None,
            });
            sample.encode_into(&mut pass);
            drop(pass);
            dispatches += sample.len();
            sampling = Some(commands);
        }
        if sample.is_some() {
            let chosen = GpuTensor { cols: e.shape.sequences, ..self.inner.sampling.tokens.clone() };
            bytes_read_back += tokens_readback.copy_from(&mut encoder, &chosen);
            if e.reported {
                let reports = GpuTensor { rows: e.shape.sequences, ..self.inner.sampling.logprobs.clone() };
                bytes_read_back += logprobs_readback.copy_from(&mut encoder, &reports);
            }
        }
        // `sampling` holds the forward pass until here: the encoder now holds the sampling.
        let (commands, sampling) = match sampling {
            Some(forward) => (forward, Some(encoder.finish())),
            None => (encoder.finish(), None),
        };
        Encoded { encoding: e, commands, sampling, dispatches, bytes_read_back }
    }

    /// Writes the allowed tokens of each constrained sequence of a step (row s: `work[s]`),
    /// asking each constraint for its mask.
    pub(super) fn upload_masks(&self, work: &[Work]) -> Result<()> {
        let masks = &self.inner.sampling.masks;
        let cols = masks.cols;
        let mut words = vec![0u32; work.len() * cols];
        for (row, item) in work.iter().enumerate() {
            if let Some(constraint) = item.constraint {
                constraint.allowed_tokens(&mut words[row * cols..(row + 1) * cols])?;
            }
        }
        masks.write_rows(self.gpu(), 0, bytemuck::cast_slice(&words))
    }

    /// Writes a step's inputs: its token ids (or, with the embedding table in host memory, their
    /// normalized rows), its sequence table and, for GPU sampling, its choices. Returns the
    /// sequence table.
    pub(super) fn upload(
        &self,
        recorded: &Recorded,
        work: &[Work],
        shape: Shape,
    ) -> Result<Vec<SequenceEntry>> {
        let inner = &*self.inner;
        let gpu = inner.model.gpu.as_ref();
        let embd = inner.model.config.embd;
        let mut entries = Vec::with_capacity(work.len());
        let mut first_row = 0;
        for item in work {
            entries.push(SequenceEntry { slot: item.slot, first_row, rows: item.tokens.len() });
            first_row += item.tokens.len();
        }
        let tokens = work.iter().flat_map(|item| item.tokens.iter().copied());
        match &inner.model.embedding {
            // The step gathers its rows itself (see `record`).
            EmbeddingTable::Gpu(_) => {
                let ids: Vec<f32> = tokens.map(f32::from_bits).collect();
                inner.ids.write_rows(gpu, 0, &[ids, vec![0.0; inner.ids.cols - shape.rows]].concat())?;
            }
            EmbeddingTable::Host(embedding) => {
                let mut rows = Vec::with_capacity(shape.rows * embd);
                for token in tokens {
                    rows.extend(embedding.row(token)?);
                }
                inner.pool.tensor(gpu, "x", shape.rows, embd)?.write(gpu, &rows)?;
            }
        }
        recorded.sequences.write(gpu, &entries)?;
        if work.iter().any(|item| item.sample.is_some()) {
            let choices: Vec<Choice> = work
                .iter()
                .map(|item| {
                    let masked = u32::from(item.constraint.is_some());
                    item.sample.map_or_else(Choice::skip, |c| Choice { slot: item.slot as u32, masked, ..c })
                })
                .collect();
            inner.sampling.choices.write_rows(gpu, 0, bytemuck::cast_slice::<Choice, f32>(&choices))?;
        }
        Ok(entries)
    }
}
