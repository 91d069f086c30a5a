//! The RWKV-7 forward pass on the CPU, built from the kernels' CPU references in the same order
//! as the GPU layer. The tests run it on random models of many shapes and compare with the GPU;
//! the golden fixtures check both against the official implementation.

use std::collections::HashMap;

use super::{self as v7, TimeMix7, ValueResidual};
use crate::error::{Error, Result};
use crate::kernels::{self, Activation, OperandRef, Prev};
use crate::model::block::Block;
use crate::model::config::ModelConfig;
use crate::model::embedding::Embedding;
use crate::model::loader::{Host, HostMatrix, Loader};
use crate::model::source::TensorSource;
use crate::quant::QuantPlan;
use crate::runtime::{LayerValues, State};

/// Zeros of one layer's channel-mix hidden vectors, summed over tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sparsity {
    pub channels: u64,
    pub zero_channels: u64,
    /// Groups of 4 channels, as the product reads them.
    pub groups: u64,
    pub zero_groups: u64,
}

impl Sparsity {
    fn count(&mut self, hidden: &[f32]) {
        self.channels += hidden.len() as u64;
        self.zero_channels += hidden.iter().filter(|&&h| h == 0.0).count() as u64;
        for group in hidden.chunks(4) {
            self.groups += 1;
            self.zero_groups += u64::from(group.iter().all(|&h| h == 0.0));
        }
    }

    /// The share of W_v's weights the one-token product skips with W_v stored by output: the
    /// columns of whole zero groups.
    pub fn skipped_by_output(&self) -> f64 {
        self.zero_groups as f64 / self.groups.max(1) as f64
    }

    /// The same with W_v stored by input (`quant::by_input_rows`): the row of every zero input.
    pub fn skipped_by_input(&self) -> f64 {
        self.zero_channels as f64 / self.channels.max(1) as f64
    }
}

pub struct ReferenceModel {
    pub config: ModelConfig,
    blocks: Vec<Block<Host, TimeMix7<Host>>>,
    ln_out: Vec<f32>,
    head: HostMatrix,
    embedding: Embedding,
}

fn matvec(m: &HostMatrix, x: &[f32], operand: OperandRef, activation: Activation) -> Vec<f32> {
    kernels::linear_ref(&m.values, m.cols, x, operand, activation, None)
}

fn plain(m: &HostMatrix, x: &[f32]) -> Vec<f32> {
    matvec(m, x, OperandRef::None, Activation::None)
}

fn add(x: &mut [f32], delta: &[f32]) {
    x.iter_mut().zip(delta).for_each(|(x, d)| *x += d);
}

/// A stacked [weight; bias] norm, applied.
fn layer_norm(x: &[f32], norm: &[f32]) -> Vec<f32> {
    let (weight, bias) = norm.split_at(norm.len() / 2);
    kernels::layer_norm_ref(x, weight, bias)
}

impl ReferenceModel {
    pub fn from_source(source: &dyn TensorSource) -> Result<ReferenceModel> {
        let config = ModelConfig::from_source(source)?;
        if !std::ptr::eq(config.version.architecture, &v7::ARCHITECTURE) {
            return Err(Error::UnsupportedModel(format!(
                "the CPU reference runs RWKV-7 only, not {}",
                config.version.name()
            )));
        }
        let blocks = Block::load_all(source, &config, &Host, &QuantPlan::default())?;
        let loader = Loader::new(source, &Host);
        Ok(ReferenceModel {
            ln_out: loader.norm("ln_out", config.embd)?,
            head: loader.linear("head.weight", config.vocab, config.embd)?,
            embedding: Embedding::load(
                source,
                config.vocab,
                config.embd,
                loader.norm_f32("blocks.0.ln0", config.embd)?,
                v7::ARCHITECTURE.embedding,
            )?,
            blocks,
            config,
        })
    }

    pub fn zero_state(&self) -> State {
        let c = &self.config;
        let layer = LayerValues { att_x: vec![0.0; c.embd], wkv: c.initial_wkv(), ffn_x: vec![0.0; c.embd] };
        State { version: c.version, embd: c.embd, layers: vec![layer; c.layers] }
    }

    /// Feeds one token and returns the logits.
    pub fn forward(&self, token: u32, state: &mut State) -> Result<Vec<f32>> {
        self.forward_observed(token, state, &mut |_, _| {})
    }

    /// How much of the channel mix the squared ReLU's zeros save over `tokens` read in order
    /// from the zero state: per layer, the zero entries of k = relu(W_k·x_k)² and the all-zero
    /// vec4 groups of it: the weights of W_v the one-token product skips reading, stored by input
    /// and by output.
    pub fn channel_mix_sparsity(&self, tokens: &[u32]) -> Result<Vec<Sparsity>> {
        let mut layers = vec![Sparsity::default(); self.config.layers];
        let mut state = self.zero_state();
        for &token in tokens {
            self.forward_observed(token, &mut state, &mut |layer, hidden| layers[layer].count(hidden))?;
        }
        Ok(layers)
    }

    /// [`ReferenceModel::forward`], handing each layer's channel-mix hidden vector k to `observe`.
    pub fn forward_observed(
        &self,
        token: u32,
        state: &mut State,
        observe: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<Vec<f32>> {
        let mut x = self.embedding.row(token)?;
        let mut v_first = Vec::new();
        for (layer, block) in self.blocks.iter().enumerate() {
            let xa = layer_norm(&x, &block.ln1);
            add(&mut x, &self.time_mix(layer, &block.att, &xa, &mut v_first, state));
            let xf = layer_norm(&x, &block.ln2);
            let ffn = &block.ffn;
            let shifted =
                kernels::token_shift_ref(&xf, &mut state.layers[layer].ffn_x, &ffn.mixes, Prev::Update);
            let hidden = matvec(&ffn.key, &shifted[0], OperandRef::None, Activation::ReluSquared);
            observe(layer, &hidden);
            add(&mut x, &plain(&ffn.value, &hidden));
        }
        Ok(plain(&self.head, &layer_norm(&x, &self.ln_out)))
    }

    fn time_mix(
        &self,
        layer: usize,
        att: &TimeMix7<Host>,
        xa: &[f32],
        v_first: &mut Vec<f32>,
        state: &mut State,
    ) -> Vec<f32> {
        let heads = self.config.heads;
        let mixed = kernels::token_shift_ref(xa, &mut state.layers[layer].att_x, &att.mixes, Prev::Update);
        let [xr, xw, xk, xv, xa, xg] = [0, 1, 2, 3, 4, 5].map(|i| &mixed[i][..]);
        let c = self.config.embd;
        let projections = att.rkv.split_rows(&[c; 3]);
        let (receptance, key, value) = (&projections[0], &projections[1], &projections[2]);
        let r = plain(receptance, xr);
        let k = plain(key, xk);
        let mut v = plain(value, xv);
        let (names, ranks): (Vec<&str>, Vec<usize>) = v7::lora_inputs(&self.config, layer).unzip();
        let lora_in: HashMap<&str, HostMatrix> =
            names.into_iter().zip(att.lora_in.split_rows(&ranks)).collect();
        let [w1, a1, g1] = ["w1", "a1", "g1"].map(|name| &lora_in[name]);
        let w_hidden = matvec(w1, xw, OperandRef::None, Activation::Tanh);
        let decay = matvec(&att.w2, &w_hidden, OperandRef::Bias(&att.w0), Activation::Decay7);
        let a = matvec(&att.a2, &plain(a1, xa), OperandRef::Bias(&att.a0), Activation::Sigmoid);
        match &att.value_residual {
            ValueResidual::First => *v_first = v.clone(),
            ValueResidual::Mix { v0, v2 } => {
                let mix = matvec(v2, &plain(&lora_in["v1"], xv), OperandRef::Bias(v0), Activation::Sigmoid);
                v = kernels::lerp_ref(&v, v_first, &mix);
            }
        }
        let g = plain(&att.g2, &matvec(g1, xg, OperandRef::None, Activation::Sigmoid));
        let (kk, k) = kernels::wkv7_keys_ref(heads, &k, &a, &att.k_k, &att.k_a);
        let y = kernels::wkv7_ref(heads, &mut state.layers[layer].wkv, &r, &decay, &k, &v, &kk, &a);
        let (weight, bias) = att.ln_x.split_at(att.ln_x.len() / 2);
        let y = kernels::group_norm_bonus_gate_ref(heads, &y, (weight, bias), &r, &k, &v, &att.r_k, &g);
        plain(&att.output, &y)
    }
}
