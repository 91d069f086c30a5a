//! A session: one sequence's recurrent state on the GPU, and the recorded step that advances it.

use crate::error::{Error, Result};
use crate::gpu::{GpuVector, Readback, Step};
use crate::kernels::{self, Epilogue, Recorder};
use crate::model::block::LayerState;
use crate::model::Model;

/// The recurrent state copied to the CPU, one entry per layer, in the official layout:
/// `wkv` is [H, N (key), N (value)] for RWKV-5/6, [H, N (value), N (key)] for RWKV-7, and
/// [aa; bb; pp] (3 × C) for RWKV-4.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSnapshot {
    /// The last LN1 output, [C] per layer.
    pub att_x: Vec<Vec<f32>>,
    /// The time mix's own state.
    pub wkv: Vec<Vec<f32>>,
    /// The last LN2 output, [C] per layer.
    pub ffn_x: Vec<Vec<f32>>,
}

/// One sequence being read or generated. Feeding tokens advances its state, which stays on the
/// GPU; logits come back only when asked for.
pub struct Session<'m> {
    model: &'m Model,
    state: Vec<LayerState>,
    /// The `wkv` state of a layer before the first token.
    initial_wkv: Vec<f32>,
    /// The embedding row of the token being fed, uploaded each step.
    input: GpuVector,
    logits: GpuVector,
    /// Embedding norm → every layer: recorded once, replayed for every token.
    layers: Step,
    /// Final norm and head: only run when logits are wanted.
    head: Step,
    readback: Readback,
}

impl<'m> Session<'m> {
    /// A session starting from the initial state.
    pub fn new(model: &'m Model) -> Result<Session<'m>> {
        let gpu = model.gpu.as_ref();
        let config = &model.config;
        let c = config.embd;
        let initial_wkv = model.layers.initial_state();
        let state = (0..config.layers)
            .map(|layer| {
                Ok(LayerState {
                    att_x: GpuVector::zeros(gpu, &format!("L{layer}.state.att_x"), c)?,
                    wkv: GpuVector::from_slice(gpu, &format!("L{layer}.state.wkv"), &initial_wkv)?,
                    ffn_x: GpuVector::zeros(gpu, &format!("L{layer}.state.ffn_x"), c)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let input = GpuVector::zeros(gpu, "embedding row", c)?;
        let x = GpuVector::zeros(gpu, "x", c)?;
        let x_out = GpuVector::zeros(gpu, "x_out", c)?;
        let logits = GpuVector::zeros(gpu, "logits", config.vocab)?;

        // Bind groups keep the buffers they bind alive, so the recorded steps own x, x_out and
        // the scratch buffers from here on.
        let mut rec = Recorder::new(gpu);
        kernels::layer_norm(&mut rec, "ln0", &input, &model.ln0, &x)?;
        model.layers.record(&mut rec, &x, &state)?;
        let layers = rec.finish();

        let mut rec = Recorder::new(gpu);
        kernels::layer_norm(&mut rec, "ln_out", &x, &model.ln_out, &x_out)?;
        kernels::matvec(&mut rec, "head", &model.head, &x_out, &logits, Epilogue::PLAIN)?;
        let head = rec.finish();

        let readback = Readback::new(gpu, "logits readback", config.vocab)?;
        gpu.check()?;
        Ok(Session { model, state, initial_wkv, input, logits, layers, head, readback })
    }

    pub fn model(&self) -> &Model {
        self.model
    }

    /// Dispatches per token: (without the head, with it).
    pub fn dispatches(&self) -> (usize, usize) {
        (self.layers.len(), self.layers.len() + self.head.len())
    }

    /// Feeds one token and returns the logits that predict the next one.
    pub fn feed(&mut self, token: u32) -> Result<Vec<f32>> {
        self.run(token, true)?;
        self.readback.read(&self.model.gpu)
    }

    /// Feeds one token without computing or reading logits (for all but the last prompt token).
    pub fn advance(&mut self, token: u32) -> Result<()> {
        self.run(token, false)?;
        self.model.gpu.check()
    }

    /// Feeds tokens in order and returns the logits after the last one.
    pub fn feed_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let Some((&last, rest)) = tokens.split_last() else {
            return Err(Error::InvalidArgument("no tokens to feed".into()));
        };
        for &token in rest {
            self.advance(token)?;
        }
        self.feed(last)
    }

    /// One submit per token: the embedding row upload, every layer, and (if wanted) the head
    /// plus the copy of the logits into the readback buffer.
    fn run(&mut self, token: u32, with_logits: bool) -> Result<()> {
        let gpu = self.model.gpu.as_ref();
        let row = self.model.embedding.row(token)?;
        self.input.write(gpu, &row)?;
        let mut encoder =
            gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("token") });
        self.layers.encode(&mut encoder);
        if with_logits {
            self.head.encode(&mut encoder);
            self.readback.copy_from(&mut encoder, &self.logits);
        }
        gpu.queue.submit([encoder.finish()]);
        Ok(())
    }

    /// Back to the initial state.
    pub fn reset(&mut self) -> Result<()> {
        let gpu = self.model.gpu.as_ref();
        let zeros = vec![0.0; self.model.config.embd];
        for layer in &self.state {
            layer.att_x.write(gpu, &zeros)?;
            layer.wkv.write(gpu, &self.initial_wkv)?;
            layer.ffn_x.write(gpu, &zeros)?;
        }
        gpu.check()
    }

    /// Copies the state to the CPU.
    pub fn read_state(&self) -> Result<StateSnapshot> {
        let gpu = self.model.gpu.as_ref();
        let read = |pick: fn(&LayerState) -> &GpuVector| -> Result<Vec<Vec<f32>>> {
            self.state.iter().map(|layer| pick(layer).read(gpu)).collect()
        };
        Ok(StateSnapshot { att_x: read(|l| &l.att_x)?, wkv: read(|l| &l.wkv)?, ffn_x: read(|l| &l.ffn_x)? })
    }
}
