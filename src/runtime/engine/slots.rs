//! State slots: which are taken, and a slot's state reset, copied, read and written.

use std::sync::Mutex;

use super::{locked, Engine};
use crate::error::{Error, Result};
use crate::gpu::GpuTensor;

/// Which state slots are taken (by sessions or batch requests).
pub(super) struct SlotTable {
    in_use: Mutex<Vec<bool>>,
}

impl SlotTable {
    pub fn new(slots: usize) -> SlotTable {
        SlotTable { in_use: Mutex::new(vec![false; slots]) }
    }

    /// Takes a free slot.
    fn take(&self) -> Result<usize> {
        let mut in_use = locked(&self.in_use);
        let slot = in_use.iter().position(|used| !used).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "all {} state slots are in use: close a session or make the engine with more slots",
                in_use.len()
            ))
        })?;
        in_use[slot] = true;
        Ok(slot)
    }

    fn free(&self, slot: usize) {
        if let Some(used) = locked(&self.in_use).get_mut(slot) {
            *used = false;
        }
    }

    /// An error unless `slot` is taken.
    pub fn check(&self, slot: usize) -> Result<()> {
        let in_use = locked(&self.in_use);
        match in_use.get(slot) {
            Some(true) => Ok(()),
            Some(false) => Err(Error::InvalidArgument(format!("state slot {slot} is not allocated"))),
            None => Err(Error::InvalidArgument(format!(
                "state slot {slot} is out of range: the engine has {} slots",
                in_use.len()
            ))),
        }
    }
}

impl Engine {
    /// Takes a free slot and sets it to the initial state.
    pub fn allocate(&self) -> Result<usize> {
        let slot = self.inner.slots.take()?;
        self.reset(slot)?;
        Ok(slot)
    }

    /// Returns a slot to the free list.
    pub fn release(&self, slot: usize) {
        self.inner.slots.free(slot);
    }

    pub(super) fn check_slot(&self, slot: usize) -> Result<()> {
        self.inner.slots.check(slot)
    }

    /// Sets a slot to the initial state, with no logit bias and no generated tokens counted.
    pub fn reset(&self, slot: usize) -> Result<()> {
        self.check_slot(slot)?;
        let zeros = vec![0.0; self.inner.model.config.embd];
        let gpu = self.gpu();
        for layer in &self.inner.state {
            layer.att_x.write_rows(gpu, slot, &zeros)?;
            layer.wkv.write_rows(gpu, slot, &self.inner.initial_wkv)?;
            layer.ffn_x.write_rows(gpu, slot, &zeros)?;
        }
        self.set_logit_bias(slot, &[])?;
        self.clear_counts(slot)
    }

    /// Forgets which tokens a slot generated: the penalties of GPU sampling start afresh.
    pub fn clear_counts(&self, slot: usize) -> Result<()> {
        self.check_slot(slot)?;
        let gpu = self.gpu();
        let zeros = vec![0.0; self.inner.model.config.vocab];
        self.inner.sampling.counts.write_rows(gpu, slot, &zeros)?;
        gpu.check()
    }

    /// Sets the logit bias GPU sampling adds for `slot`: `bias` for the tokens listed (summed
    /// where a token repeats), 0 for the others.
    pub fn set_logit_bias(&self, slot: usize, bias: &[(u32, f32)]) -> Result<()> {
        self.check_slot(slot)?;
        let vocab = self.inner.model.config.vocab;
        let mut row = vec![0.0; vocab];
        for &(token, value) in bias {
            let entry = row.get_mut(token as usize).ok_or(Error::TokenOutOfRange { id: token, vocab })?;
            *entry += value;
        }
        let gpu = self.gpu();
        self.inner.sampling.bias.write_rows(gpu, slot, &row)?;
        gpu.check()
    }

    /// Copies slot `from`'s state into slot `to` on the GPU.
    pub fn copy_slot(&self, from: usize, to: usize) -> Result<()> {
        self.check_slot(from)?;
        self.check_slot(to)?;
        let gpu = self.gpu();
        let mut encoder =
            gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("copy state") });
        let staging = &self.inner.staging;
        self.encode_state_copy(&mut encoder, from, staging, StateCopy::SlotToBuffer);
        self.encode_state_copy(&mut encoder, to, staging, StateCopy::BufferToSlot);
        gpu.queue.submit([encoder.finish()]);
        gpu.check()
    }

    /// Encodes copying one slot's whole state into `buffer` (layer after layer, as the staging
    /// buffer holds it) or back.
    pub(super) fn encode_state_copy(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        slot: usize,
        buffer: &wgpu::Buffer,
        direction: StateCopy,
    ) {
        let tensors = self.inner.state.iter().flat_map(|layer| [&layer.att_x, &layer.wkv, &layer.ffn_x]);
        let mut at = 0;
        for tensor in tensors {
            let row = (tensor.stride() * 4) as u64;
            let in_slot = tensor.offset + slot as u64 * row;
            match direction {
                StateCopy::SlotToBuffer => {
                    encoder.copy_buffer_to_buffer(&tensor.buffer, in_slot, buffer, at, Some(row))
                }
                StateCopy::BufferToSlot => {
                    encoder.copy_buffer_to_buffer(buffer, at, &tensor.buffer, in_slot, Some(row))
                }
            }
            at += row;
        }
    }

    /// Bytes of one slot's whole state.
    pub(super) fn slot_bytes(&self) -> u64 {
        self.inner.staging.size()
    }

    /// A slot's state, per layer: (att_x, wkv, ffn_x).
    pub(crate) async fn read_slot(&self, slot: usize) -> Result<Vec<[Vec<f32>; 3]>> {
        self.check_slot(slot)?;
        let gpu = self.gpu();
        let row = |tensor: &GpuTensor| GpuTensor {
            offset: tensor.offset + (slot * tensor.stride() * 4) as u64,
            rows: 1,
            ..tensor.clone()
        };
        let mut layers = Vec::with_capacity(self.inner.state.len());
        for layer in &self.inner.state {
            layers.push([
                row(&layer.att_x).read_async(gpu).await?,
                row(&layer.wkv).read_async(gpu).await?,
                row(&layer.ffn_x).read_async(gpu).await?,
            ]);
        }
        Ok(layers)
    }

    /// Overwrites a slot's state, per layer: (att_x, wkv, ffn_x).
    pub(crate) fn write_slot(&self, slot: usize, layers: &[[Vec<f32>; 3]]) -> Result<()> {
        self.check_slot(slot)?;
        if layers.len() != self.inner.state.len() {
            return Err(Error::InvalidArgument(format!(
                "a state of {} layers for a model of {}",
                layers.len(),
                self.inner.state.len()
            )));
        }
        let gpu = self.gpu();
        for (layer, [att_x, wkv, ffn_x]) in self.inner.state.iter().zip(layers) {
            layer.att_x.write_rows(gpu, slot, att_x)?;
            layer.wkv.write_rows(gpu, slot, wkv)?;
            layer.ffn_x.write_rows(gpu, slot, ffn_x)?;
        }
        gpu.check()
    }
}

/// Which way [`Engine::encode_state_copy`] copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StateCopy {
    SlotToBuffer,
    BufferToSlot,
}
