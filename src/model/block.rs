//! What every RWKV version shares: a stack of blocks, each `x += TimeMix(LN1(x))` then
//! `x += ChannelMix(LN2(x))`. A version supplies only its time mix, through [`TimeMix`].

use std::sync::Arc;

use super::channel_mix::{ChannelMix, ChannelScratch};
use super::config::ModelConfig;
use super::loader::{Inventory, Loader, Store};
use super::source::TensorSource;
use crate::error::Result;
use crate::gpu::{Gpu, GpuTensor, ScratchPool};
use crate::kernels::{NormInput, Recorder};
use crate::quant::QuantPlan;

/// A layer's recurrent states on the GPU, one row per state slot: the last LN1 output
/// (`att_x`, [slots, C]), the time mix's own state (`wkv`, its layout chosen by the version) and
/// the last LN2 output (`ffn_x`, [slots, C]).
pub struct LayerState {
    pub att_x: GpuTensor,
    pub wkv: GpuTensor,
    pub ffn_x: GpuTensor,
}

/// Reading a version's time-mix weights into any store.
pub trait LoadTimeMix<S: Store>: Sized {
    fn load(loader: &Loader<S>, config: &ModelConfig, layer: usize) -> Result<Self>;
}

/// A version's time mix on the GPU.
pub trait TimeMix: LoadTimeMix<Gpu> + Send + Sync + 'static {
    /// Intermediate values of a step of `rows` rows, shared by all layers.
    type Scratch;
    fn scratch(gpu: &Gpu, pool: &ScratchPool, config: &ModelConfig, rows: usize) -> Result<Self::Scratch>;
    /// Records `x += TimeMix(LN1(x))` for the rows of a step, updating the sequences' `att_x`
    /// and `wkv`.
    fn record(&self, rec: &mut Recorder, step: LayerStep, scratch: &Self::Scratch) -> Result<()>;
}

/// One layer's part of a step, as its time mix records it.
pub struct LayerStep<'a> {
    pub config: &'a ModelConfig,
    pub layer: usize,
    /// The residual stream (`input.x`, [rows, C]) and LN1 (`input.norm`).
    pub input: NormInput<'a>,
    pub state: &'a LayerState,
}

/// What a step's pass through the blocks reads and updates.
pub struct StepTensors<'a> {
    /// The residual stream, [rows, C]: the normalized embedding rows on the way in.
    pub x: &'a GpuTensor,
    /// Every layer's state, each sequence's in its slot.
    pub state: &'a [LayerState],
}

/// `blocks.N.*`
pub struct Block<S: Store, T> {
    /// [weight; bias]
    pub ln1: S::Vector,
    pub ln2: S::Vector,
    pub att: T,
    pub ffn: ChannelMix<S>,
}

impl<S: Store, T: LoadTimeMix<S>> Block<S, T> {
    pub fn load(loader: &Loader<S>, config: &ModelConfig, layer: usize) -> Result<Self> {
        Ok(Block {
            ln1: loader.norm(&format!("blocks.{layer}.ln1"), config.embd)?,
            ln2: loader.norm(&format!("blocks.{layer}.ln2"), config.embd)?,
            att: T::load(loader, config, layer)?,
            ffn: ChannelMix::load(loader, config, layer)?,
        })
    }

    /// Every block of the model, its large matrices stored as `plan` says.
    pub fn load_all(
        source: &dyn TensorSource,
        config: &ModelConfig,
        store: &S,
        plan: &QuantPlan,
    ) -> Result<Vec<Self>> {
        let loader = Loader::with_plan(source, store, plan.clone());
        (0..config.layers).map(|layer| Self::load(&loader, config, layer)).collect()
    }
}

/// The blocks of a loaded model, whatever its version.
pub trait Layers: Send + Sync {
    /// Records a step's pass through every block, with scratch tensors from `pool`.
    fn record(&self, rec: &mut Recorder, pool: &ScratchPool, step: StepTensors) -> Result<()>;
    /// Asks `pool` for the scratch tensors of its largest step (of `pool.max_rows` rows).
    fn reserve(&self, gpu: &Gpu, pool: &ScratchPool) -> Result<()>;
}

/// The blocks of one version.
pub struct Blocks<T> {
    pub config: Arc<ModelConfig>,
    pub blocks: Vec<Block<Gpu, T>>,
}

/// Uploads every block of a version whose time mix is `T` (an [`super::architecture::Architecture`]'s
/// `upload`).
pub fn upload<T: TimeMix>(
    source: &dyn TensorSource,
    config: &Arc<ModelConfig>,
    gpu: &Gpu,
    plan: &QuantPlan,
) -> Result<Box<dyn Layers>> {
    let blocks = Block::<Gpu, T>::load_all(source, config, gpu, plan)?;
    Ok(Box::new(Blocks { config: config.clone(), blocks }))
}

/// Reads every block of a version whose time mix is `T` into an inventory (an
/// [`super::architecture::Architecture`]'s `inventory`).
pub fn inventory<T: LoadTimeMix<Inventory>>(
    source: &dyn TensorSource,
    config: &ModelConfig,
    store: &Inventory,
    plan: &QuantPlan,
) -> Result<()> {
    Block::<Inventory, T>::load_all(source, config, store, plan).map(drop)
}

impl<T: TimeMix> Layers for Blocks<T> {
    fn record(&self, rec: &mut Recorder, pool: &ScratchPool, step: StepTensors) -> Result<()> {
        let (gpu, StepTensors { x, state }) = (rec.gpu, step);
        let config = &self.config;
        let (att_scratch, ffn_scratch, [xa, xf]) = self.scratch(gpu, pool, x.rows)?;
        for (layer, (block, state)) in self.blocks.iter().zip(state).enumerate() {
            let ln1 = NormInput { x, norm: &block.ln1, normed: &xa };
            block.att.record(rec, LayerStep { config, layer, input: ln1, state }, &att_scratch)?;
            let ln2 = NormInput { x, norm: &block.ln2, normed: &xf };
            block.ffn.record(rec, layer, (ln2, &state.ffn_x), &ffn_scratch)?;
        }
        Ok(())
    }

    fn reserve(&self, gpu: &Gpu, pool: &ScratchPool) -> Result<()> {
        self.scratch(gpu, pool, pool.max_rows).map(drop)
    }
}

impl<T: TimeMix> Blocks<T> {
    /// A step's intermediate values: the time mix's, the channel mix's, and the normalized
    /// inputs of both.
    fn scratch(
        &self,
        gpu: &Gpu,
        pool: &ScratchPool,
        rows: usize,
    ) -> Result<(T::Scratch, ChannelScratch, [GpuTensor; 2])> {
        let config = &self.config;
        let normed = [pool.tensor(gpu, "xa", rows, config.embd)?, pool.tensor(gpu, "xf", rows, config.embd)?];
        Ok((T::scratch(gpu, pool, config, rows)?, ChannelScratch::new(gpu, pool, config, rows)?, normed))
    }
}
