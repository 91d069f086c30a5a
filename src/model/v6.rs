//! RWKV-6 "Finch": RWKV-5's state and read-out, with a data-dependent token shift and decay,
//! both generated per token by low-rank projections.
//!
//! Reference: `RWKV.att_one_v6_0` in BlinkDL's `rwkv` package 0.8.32.

use super::architecture::{
    zero_matrices, Architecture, ChannelMixLayout, StateLayout, TensorNames, TimeMixShape, TunedState, Widths,
};
use super::block::{self, LayerStep, LoadTimeMix, TimeMix};
use super::config::{heads_from, lora_rank, ModelConfig};
use super::embedding::NormalizedIn;
use super::loader::{Inventory, Loader, Store};
use super::source::TensorSource;
use super::v5::{per_channel, Core5, CoreScratch, Shifted};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuTensor, ScratchPool};
use crate::kernels::Activation::{Decay6, None, Tanh};
use crate::kernels::{
    self, Epilogue, Mixes, Prev, Recorder, Remember, Segment, ShiftedInput, ShiftedSegment,
};

/// The five data-dependent mixes, in the order `time_maa_w1/w2` produce them.
pub const MIXES: [&str; 5] = ["w", "k", "v", "r", "g"];

pub static ARCHITECTURE: Architecture = Architecture {
    revisions: &["RWKV-6"],
    detect: |names: &TensorNames| names.any_containing("time_maa").then_some("RWKV-6"),
    time_mix_shape,
    embedding: NormalizedIn::FileDtype,
    channel_mix: ChannelMixLayout { mixes: &["time_maa_k", "time_maa_r"], complement: false, gated: true },
    state: StateLayout { initial_wkv: zero_matrices, tuned: Some(TunedState::Transposed) },
    upload: block::upload::<TimeMix6<Gpu>>,
    inventory: block::inventory::<TimeMix6<Inventory>>,
};

fn time_mix_shape(source: &dyn TensorSource, widths: &Widths) -> Result<TimeMixShape> {
    let (heads, head_size) = heads_from(source, "blocks.0.att.time_faaaa", widths.embd)?;
    let lora = vec![
        lora_rank(source, "token shift", "blocks.0.att.time_maa_w1", MIXES.len())?,
        lora_rank(source, "decay", "blocks.0.att.time_decay_w1", 1)?,
    ];
    Ok(TimeMixShape { heads, head_size, lora })
}

/// `blocks.N.att.*`
pub struct TimeMix6<S: Store> {
    /// time_maa_x: the shift that feeds the mix projection.
    pub maa_x: S::Vector,
    /// time_maa_{w,k,v,r,g}: each mix's static part, the bias of its projection, as one row
    /// [5·C].
    pub maa: S::Vector,
    /// time_maa_w1 as [5·D, C].
    pub maa_w1: S::Matrix,
    /// time_maa_w2 as five [C, D], stacked by rows: one pass reads them all.
    pub maa_w2: S::Matrix,
    /// time_decay [C], the bias of the decay projection.
    pub decay: S::Vector,
    /// time_decay_w1 as [Dd, C], time_decay_w2 as [C, Dd].
    pub decay_w1: S::Matrix,
    pub decay_w2: S::Matrix,
    /// Projections, bonus, group norm and output, as in RWKV-5.2.
    pub core: Core5<S>,
}

impl<S: Store> LoadTimeMix<S> for TimeMix6<S> {
    fn load(loader: &Loader<S>, config: &ModelConfig, layer: usize) -> Result<Self> {
        let c = config.embd;
        let (mix_rank, decay_rank) = (config.rank("token shift"), config.rank("decay"));
        let att = |name: &str| format!("blocks.{layer}.att.{name}");
        let mut maa = Vec::with_capacity(MIXES.len() * c);
        for m in MIXES {
            maa.extend(loader.vector_f32(&att(&format!("time_maa_{m}")), c)?);
        }
        let decay = per_channel(loader, &att("time_decay"), config)?;
        let core = Core5::load(loader, config, layer)?;
        if !core.gated {
            return Err(Error::MissingTensor { name: att("gate.weight"), hint: String::new() });
        }
        Ok(TimeMix6 {
            maa_x: loader.vector(&att("time_maa_x"), c)?,
            maa: loader.store.vector(&att("time_maa_*"), maa)?,
            maa_w1: loader.matrix_transposed(&att("time_maa_w1"), c, MIXES.len() * mix_rank)?,
            maa_w2: loader.matrices_transposed_stacked_parts(
                &att("time_maa_w2"),
                MIXES.len(),
                mix_rank,
                c,
            )?,
            decay: loader.store.vector(&att("time_decay"), decay)?,
            decay_w1: loader.matrix_transposed(&att("time_decay_w1"), c, decay_rank)?,
            decay_w2: loader.matrix_transposed(&att("time_decay_w2"), decay_rank, c)?,
            core,
        })
    }
}

/// Intermediate values of one token's time mix, shared by every layer.
pub struct Scratch6 {
    xxx: [GpuTensor; 1],
    xxx_stride: usize,
    /// tanh(xxx·W1), one row of D per mix.
    mix_hidden: [GpuTensor; 5],
    /// The five mixes of this token.
    mixes: [GpuTensor; 5],
    mixes_stride: usize,
    /// The same for a step of one token, as the rows of one [5, C] tensor: the products that
    /// shift their own input read it as their mixes ([`ShiftedInput::mixes`]). It lies in
    /// `shifted`'s stack, which such a step does not use: 5 entries of at least one row each.
    mixes_one: GpuTensor,
    /// x_w, x_k, x_v, x_r, x_g.
    shifted: [GpuTensor; 5],
    shifted_stride: usize,
    decay_hidden: GpuTensor,
    w: GpuTensor,
    core: CoreScratch,
}

impl TimeMix for TimeMix6<Gpu> {
    type Scratch = Scratch6;

    fn scratch(gpu: &Gpu, pool: &ScratchPool, config: &ModelConfig, rows: usize) -> Result<Scratch6> {
        let c = config.embd;
        let (xxx, xxx_stride) = pool.stack_of(gpu, "att.xxx", rows, c)?;
        let (mix_hidden, _) = pool.stack_of(gpu, "att.mix_hidden", rows, config.rank("token shift"))?;
        let (mixes, mixes_stride) = pool.stack_of(gpu, "att.mixes", rows, c)?;
        let (shifted, shifted_stride) = pool.stack_of(gpu, "att.shifted", rows, c)?;
        // A step of one token leaves `shifted` unused: its stack holds the [5, C] rows.
        let mixes_one = GpuTensor { rows: MIXES.len(), ..shifted[0].clone() };
        Ok(Scratch6 {
            xxx,
            xxx_stride,
            mix_hidden,
            mixes,
            mixes_stride,
            mixes_one,
            shifted,
            shifted_stride,
            decay_hidden: pool.tensor(gpu, "att.decay_hidden", rows, config.rank("decay"))?,
            w: pool.tensor(gpu, "att.w", rows, c)?,
            core: CoreScratch::new(gpu, pool, config, rows)?,
        })
    }

    fn record(&self, rec: &mut Recorder, step: LayerStep, s: &Scratch6) -> Result<()> {
        let LayerStep { config, layer, input, state } = step;
        let label = |op: &str| format!("L{layer}.att.{op}");
        // 1. xxx = xa + (xa_prev − xa) ⊙ time_maa_x with xa = LN1(x), keeping xa_prev for the
        //    second shift; 2. m_* = time_maa_* + tanh(xxx·W1)_* · W2_*
        let shifted = ShiftedInput { input, prev: &state.att_x, mixes: &self.maa_x };
        let hidden: Vec<_> =
            s.mix_hidden.iter().map(|y| ShiftedSegment { mix: 0, y, activation: Tanh }).collect();
        let products = [("maa_w1", &self.maa_w1, &hidden[..])];
        let xxx = (&s.xxx[..], s.xxx_stride);
        // The state changes after the second shift.
        kernels::shifted_products(rec, label, (shifted, Prev::Keep), xxx, &products)?;
        // One token: the products below shift their input themselves, by the mixes as the rows
        // of one tensor.
        let one_token = input.x.rows == 1 && rec.gpu.fused_decode;
        let mixes = if one_token { s.mixes_one_rows() } else { s.mixes.to_vec() };
        let mixes: Vec<_> =
            s.mix_hidden.iter().zip(&mixes).map(|(x, y)| Segment { x, y, activation: None }).collect();
        kernels::linear_grouped(
            rec,
            &label("maa_w2"),
            &self.maa_w2,
            &mixes,
            Epilogue::bias(&self.maa, None),
        )?;
        // 3. x_* = xa + (xa_prev − xa) ⊙ m_*; 4. r, k, v = W·x_*, g = silu(W_g·x_g);
        // 5. w = exp(−exp(time_decay + tanh(x_w·w1)·w2))
        let remember = if one_token {
            Some(self.shift_and_project_one(
                rec,
                layer,
                ShiftedInput { mixes: &s.mixes_one, ..shifted },
                s,
            )?)
        } else {
            self.shift_and_project(rec, layer, (input.normed, &state.att_x), s)?;
            Option::None
        };
        let decay = Epilogue::bias(&self.decay, Decay6);
        kernels::linear(rec, &label("decay_w2"), &self.decay_w2, &s.decay_hidden, &s.w, decay)?;
        // 6. y = r·(u⊙k vᵀ + S); S ← k vᵀ + w⊙S; x += W_o·(GroupNorm(y) ⊙ g)
        //    (the sequence remembers xa there, unless the shift stored it)
        self.core.read_out(rec, (layer, config.heads), &s.w, (&state.wkv, input.x), (&s.core, remember))
    }
}

impl TimeMix6<Gpu> {
    /// Steps 3–5 up to the decay LoRA's hidden vector: the second token shift (updating the
    /// state), the projections, and tanh(x_w·w1).
    fn shift_and_project(
        &self,
        rec: &mut Recorder,
        layer: usize,
        (xa, prev): (&GpuTensor, &GpuTensor),
        s: &Scratch6,
    ) -> Result<()> {
        let label = |op: &str| format!("L{layer}.att.{op}");
        let mixes = Mixes::Rows(&s.mixes, s.mixes_stride);
        let shifted = (&s.shifted[..], s.shifted_stride);
        kernels::token_shift(rec, &label("shift"), (xa, prev), mixes, shifted.0, shifted.1, Prev::Update)?;
        let [xw, xk, xv, xr, xg] = &s.shifted;
        self.core.project(rec, layer, Shifted { r: xr, k: xk, v: xv, g: xg }, &s.core)?;
        let hidden = Epilogue::then(Tanh);
        kernels::linear(rec, &label("decay_w1"), &self.decay_w1, xw, &s.decay_hidden, hidden)
    }

    /// The same for one token, in two products that shift their input in their prologue
    /// (`shifted.mixes` is the token's [5, C] mixes); the state is left for the output product.
    fn shift_and_project_one<'a>(
        &self,
        rec: &mut Recorder,
        layer: usize,
        shifted: ShiftedInput<'a>,
        s: &Scratch6,
    ) -> Result<Remember<'a>> {
        let label = |op: &str| format!("L{layer}.att.{op}");
        // MIXES is w, k, v, r, g; the projections are r, k, v, g.
        let projections: Vec<ShiftedSegment> = (s.core)
            .projections(&self.core, [3, 1, 2, 4])
            .into_iter()
            .map(|(mix, y, activation)| ShiftedSegment { mix, y, activation })
            .collect();
        // Both normalize the same input: either's `remember` stands for both.
        let _ = kernels::linear_shifted(rec, &label("rkvg"), &self.core.projections, shifted, &projections)?;
        let hidden = [ShiftedSegment { mix: 0, y: &s.decay_hidden, activation: Tanh }];
        kernels::linear_shifted(rec, &label("decay_w1"), &self.decay_w1, shifted, &hidden)
    }
}

impl Scratch6 {
    /// [`Scratch6::mixes_one`]'s rows, each a tensor.
    fn mixes_one_rows(&self) -> Vec<GpuTensor> {
        let row_bytes = (crate::gpu::padded4(self.mixes_one.cols) * 4) as u64;
        (0..MIXES.len() as u64)
            .map(|m| GpuTensor {
                offset: self.mixes_one.offset + m * row_bytes,
                rows: 1,
                ..self.mixes_one.clone()
            })
            .collect()
    }
}
