//! RWKV-7 on random models of many shapes against the CPU reference: one head, odd head sizes
//! and LoRA ranks, an FFN that is not 4·C, a single layer, and the full 65536-token vocabulary;
//! one token at a time and through prefill.

mod common;

use std::sync::Arc;

use common::relative_error;
use rwkv_wgpu::model::synthetic::{Shape, SyntheticV7};
use rwkv_wgpu::model::v7::reference::ReferenceModel;
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Session};

const SHAPES: [Shape; 4] = [
    Shape { layers: 1, heads: 1, head_size: 8, ffn: 24, vocab: 50, lora: [4, 4, 4, 4] },
    Shape { layers: 2, heads: 3, head_size: 5, ffn: 37, vocab: 97, lora: [3, 5, 7, 9] },
    Shape { layers: 3, heads: 2, head_size: 32, ffn: 256, vocab: 300, lora: [8, 8, 4, 16] },
    Shape { layers: 2, heads: 2, head_size: 64, ffn: 96, vocab: 65536, lora: [16, 16, 8, 32] },
];

/// The GPU's f32 arithmetic against the f64 reference, in a different order.
const BOUND: f64 = 1e-4;

#[test]
fn random_shapes_match_cpu_reference() {
    let gpu = Arc::new(common::default_gpu());
    for (seed, shape) in SHAPES.into_iter().enumerate() {
        let source = SyntheticV7::new(shape, seed as u64);
        let config = source.config.clone();
        let model = Arc::new(Model::from_source(gpu.clone(), &source, &LoadOptions::default()).unwrap());
        let reference = ReferenceModel::from_source(&source).unwrap();
        let tokens: Vec<u32> = (0..12u32).map(|p| (p * 7919 + 13) % config.vocab as u32).collect();
        let mut state = reference.zero_state();
        let expected: Vec<Vec<f32>> =
            tokens.iter().map(|&t| reference.forward(t, &mut state).unwrap()).collect();

        // One token at a time, then the same tokens as one prompt in chunks of 5.
        for chunk in [1, 5] {
            let engine = Engine::new(model.clone(), EngineOptions { slots: 1, chunk }).unwrap();
            let mut session = Session::new(&engine).unwrap();
            let ours = if chunk == 1 {
                tokens.iter().flat_map(|&t| session.feed(&[t]).unwrap()).collect()
            } else {
                session.feed_positions(&tokens).unwrap()
            };
            for (position, expected) in expected.iter().enumerate() {
                let found = &ours[position * config.vocab..(position + 1) * config.vocab];
                let error = relative_error(found, expected);
                assert!(
                    error <= BOUND,
                    "{shape:?} chunk {chunk} position {position}: error {error:.2e} × std"
                );
            }
            let ours = session.state().unwrap();
            for (layer, (found, expected)) in ours.layers.iter().zip(&state.layers).enumerate() {
                for (name, found, expected) in [
                    ("att_x", &found.att_x, &expected.att_x),
                    ("wkv", &found.wkv, &expected.wkv),
                    ("ffn_x", &found.ffn_x, &expected.ffn_x),
                ] {
                    let error = relative_error(found, expected);
                    assert!(
                        error <= BOUND,
                        "{shape:?} chunk {chunk}: layer {layer} state {name}: error {error:.2e}"
                    );
                }
            }
        }
    }
}

/// The squared ReLU's zeros on a trained model (the demo model over its held-out text): what
/// the one-token value product skips is counted in whole groups of 4 inputs, never more than the
/// zero entries allow, and on this model more than a third of W_v's columns in every layer
/// (`cargo run --release --example sparsity` prints the figures).
#[test]
fn a_trained_models_channel_mix_is_mostly_zeros() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let source = rwkv_wgpu::model::source::open(&root.join("model.safetensors")).unwrap();
    let reference = ReferenceModel::from_source(source.as_ref()).unwrap();
    let tokenizer = rwkv_wgpu::tokenizer::Tokenizer::from_file(&root.join("tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(root.join("heldout.txt")).unwrap();
    let tokens = &tokenizer.encode(&text).unwrap()[..256];
    let ffn = reference.config.ffn as u64;
    for (layer, s) in reference.channel_mix_sparsity(tokens).unwrap().iter().enumerate() {
        assert_eq!((s.channels, s.groups), (256 * ffn, 256 * ffn / 4), "layer {layer}");
        assert!(4 * s.zero_groups <= s.zero_channels, "layer {layer}: {s:?}");
        assert!(s.skipped_by_output() > 0.33 && s.skipped_by_output() < 1.0, "layer {layer}: {s:?}");
        assert!(s.skipped_by_input() >= s.skipped_by_output(), "layer {layer}: {s:?}");
        assert!(s.skipped_by_input() > 0.75 && s.skipped_by_input() < 1.0, "layer {layer}: {s:?}");
    }
}
