//! The RWKV-7 forward pass on the CPU, built from the kernels' CPU references in the same order
//! as the GPU layer. The tests run it on random models of many shapes and compare with the GPU;
//! the golden fixtures check both against the official implementation.

use super::config::V7Config;
use super::embedding::Embedding;
use super::loader::{Host, HostMatrix};
use super::source::TensorSource;
use super::v7::{Block, ValueResidual};
use super::{v7_config, V7Weights};
use crate::error::Result;
use crate::kernels::{self, Activation};
use crate::runtime::StateSnapshot;

pub struct ReferenceModel {
    pub config: V7Config,
    pub weights: V7Weights<Host>,
    pub embedding: Embedding,
}

fn matvec(m: &HostMatrix, x: &[f32], bias: Option<&[f32]>, activation: Activation) -> Vec<f32> {
    kernels::matvec_ref(&m.data, x, bias, activation, None)
}

fn add(x: &mut [f32], delta: &[f32]) {
    x.iter_mut().zip(delta).for_each(|(x, d)| *x += d);
}

/// Splits a stacked [weight; bias] norm.
fn halves(norm: &[f32]) -> (&[f32], &[f32]) {
    norm.split_at(norm.len() / 2)
}

impl ReferenceModel {
    pub fn from_source(source: &dyn TensorSource) -> Result<ReferenceModel> {
        let (_, config) = v7_config(source)?;
        let weights = V7Weights::load(source, &config, &Host)?;
        let embedding = Embedding::load(source, config.vocab, config.embd)?;
        Ok(ReferenceModel { config, weights, embedding })
    }

    pub fn zero_state(&self) -> StateSnapshot {
        let c = &self.config;
        let layers = |len: usize| vec![vec![0.0; len]; c.layers];
        StateSnapshot { att_x: layers(c.embd), wkv: layers(c.embd * c.head_size), ffn_x: layers(c.embd) }
    }

    /// Feeds one token and returns the logits.
    pub fn forward(&self, token: u32, state: &mut StateSnapshot) -> Result<Vec<f32>> {
        let (w, b) = halves(&self.weights.ln0);
        let mut x = kernels::layer_norm_ref(&self.embedding.row(token)?, w, b);
        let mut v_first = Vec::new();
        for (layer, block) in self.weights.blocks.iter().enumerate() {
            self.block(layer, block, &mut x, &mut v_first, state);
        }
        let (w, b) = halves(&self.weights.ln_out);
        Ok(matvec(&self.weights.head, &kernels::layer_norm_ref(&x, w, b), None, Activation::None))
    }

    fn block(
        &self,
        layer: usize,
        block: &Block<Host>,
        x: &mut [f32],
        v_first: &mut Vec<f32>,
        state: &mut StateSnapshot,
    ) {
        let heads = self.config.heads;
        let att = &block.att;
        let (w, b) = halves(&block.ln1);
        let xa = kernels::layer_norm_ref(x, w, b);
        let mixed = kernels::token_shift_ref(&xa, &mut state.att_x[layer], &att.mixes);
        let [xr, xw, xk, xv, xa, xg] = [0, 1, 2, 3, 4, 5].map(|i| &mixed[i][..]);
        let r = matvec(&att.receptance, xr, None, Activation::None);
        let k = matvec(&att.key, xk, None, Activation::None);
        let mut v = matvec(&att.value, xv, None, Activation::None);
        let decay =
            matvec(&att.w2, &matvec(&att.w1, xw, None, Activation::Tanh), Some(&att.w0), Activation::Decay7);
        let a =
            matvec(&att.a2, &matvec(&att.a1, xa, None, Activation::None), Some(&att.a0), Activation::Sigmoid);
        match &att.value_residual {
            ValueResidual::First => *v_first = v.clone(),
            ValueResidual::Mix { v0, v1, v2 } => {
                let mix = matvec(v2, &matvec(v1, xv, None, Activation::None), Some(v0), Activation::Sigmoid);
                v = kernels::lerp_ref(&v, v_first, &mix);
            }
        }
        let g = matvec(&att.g2, &matvec(&att.g1, xg, None, Activation::Sigmoid), None, Activation::None);
        let (kk, k) = kernels::wkv7_keys_ref(heads, &k, &a, &att.k_k, &att.k_a);
        let y = kernels::wkv7_ref(heads, &mut state.wkv[layer], &r, &decay, &k, &v, &kk, &a);
        let y = kernels::group_norm_bonus_gate_ref(heads, &y, halves(&att.ln_x), &r, &k, &v, &att.r_k, &g);
        add(x, &matvec(&att.output, &y, None, Activation::None));

        let (w, b) = halves(&block.ln2);
        let xf = kernels::layer_norm_ref(x, w, b);
        let shifted = kernels::token_shift_ref(&xf, &mut state.ffn_x[layer], &block.ffn.x_k);
        let hidden = matvec(&block.ffn.key, &shifted[0], None, Activation::ReluSquared);
        add(x, &matvec(&block.ffn.value, &hidden, None, Activation::None));
    }
}
