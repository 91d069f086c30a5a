//! Whole-model checks: the engine against the official implementation's golden outputs
//! (tests/fixtures/v7, made by tools/make_fixtures.py), and against the CPU reference on
//! random models of many shapes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rwkv_wgpu::gpu::Gpu;
use rwkv_wgpu::model::reference::ReferenceModel;
use rwkv_wgpu::model::synthetic::{Shape, SyntheticV7};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::npy::{self, Array};
use rwkv_wgpu::runtime::Session;

/// The bound: at every position, max |ours − official| ≤ 1e-3 × std(official logits).
/// The official fp32 run itself is ~5e-6 × std from float64 (recorded in each meta.json).
const CONFORMANCE_BOUND: f64 = 1e-3;

fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v7").join(case)
}

fn load_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    match npy::read(path).unwrap() {
        Array::F32 { shape, data } => (shape, data),
        other => panic!("{}: expected float32, got {other:?}", path.display()),
    }
}

fn load_tokens(path: &Path) -> Vec<u32> {
    match npy::read(path).unwrap() {
        Array::I64 { data, .. } => data.into_iter().map(|t| u32::try_from(t).unwrap()).collect(),
        other => panic!("{}: expected integers, got {other:?}", path.display()),
    }
}

fn std_dev(values: &[f32]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    (values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Largest |found − expected| relative to std(expected).
fn relative_error(found: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(found.len(), expected.len());
    let worst =
        found.iter().zip(expected).map(|(&f, &e)| (f64::from(f) - f64::from(e)).abs()).fold(0.0, f64::max);
    if found.iter().any(|f| !f.is_finite()) {
        return f64::INFINITY;
    }
    worst / std_dev(expected).max(1e-12)
}

/// Runs one fixture file through the engine and checks every position's logits and the final
/// state; returns the worst relative logit error.
fn check_fixture(gpu: &Arc<Gpu>, case: &str, file: &str) -> f64 {
    let dir = fixture_dir(case);
    let model = Model::load(gpu.clone(), &dir.join(file), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{case}/{file}: {e}"));
    let tokens = load_tokens(&dir.join("tokens.npy"));
    let (shape, logits) = load_f32(&dir.join("logits.npy"));
    let vocab = shape[1];
    let mut session = Session::new(&model).unwrap();
    let mut worst: f64 = 0.0;
    for (position, &token) in tokens.iter().enumerate() {
        let ours = session.feed(token).unwrap();
        let official = &logits[position * vocab..(position + 1) * vocab];
        let error = relative_error(&ours, official);
        assert!(
            error <= CONFORMANCE_BOUND,
            "{case}/{file} on {}: position {position}: error {error:.2e} × std",
            gpu.describe()
        );
        worst = worst.max(error);
    }
    let state = session.read_state().unwrap();
    for (name, ours) in [("att_x", &state.att_x), ("wkv", &state.wkv), ("ffn_x", &state.ffn_x)] {
        let (_, official) = load_f32(&dir.join(format!("state_{name}.npy")));
        let error = relative_error(&ours.concat(), &official);
        assert!(error <= CONFORMANCE_BOUND, "{case}/{file}: final state {name}: error {error:.2e} × std");
    }
    println!(
        "{case}/{file} on {}: worst logit error {worst:.2e} × std over {} positions",
        common::describe(gpu),
        tokens.len()
    );
    worst
}

const TINY_FILES: [&str; 4] =
    ["model.pth", "model-f16.safetensors", "model-bf16.safetensors", "model-f32.safetensors"];
const SMALL_FILES: [&str; 2] = ["model.pth", "model-f16.safetensors"];

#[test]
fn golden_tiny_every_format_every_variant() {
    for gpu in common::variants() {
        let gpu = Arc::new(gpu);
        for file in TINY_FILES {
            check_fixture(&gpu, "tiny", file);
        }
    }
}

#[test]
fn golden_tiny_on_gl_without_f16_or_subgroups() {
    let gpu = Arc::new(common::gl_gpu());
    assert!(!gpu.f16 && !gpu.subgroups, "expected a baseline adapter, got {}", common::describe(&gpu));
    for file in TINY_FILES {
        check_fixture(&gpu, "tiny", file);
    }
}

#[test]
fn golden_small_every_format() {
    let gpu = Arc::new(common::default_gpu());
    for file in SMALL_FILES {
        check_fixture(&gpu, "small", file);
    }
}

fn shape(layers: usize, heads: usize, head_size: usize, ffn: usize, vocab: usize, lora: [usize; 4]) -> Shape {
    Shape { layers, heads, head_size, ffn, vocab, lora }
}

/// The GPU against the CPU reference on random models: one head, odd head sizes and LoRA ranks,
/// an FFN that is not 4·C, a single layer, and the full 65536-token vocabulary.
#[test]
fn random_shapes_match_cpu_reference() {
    let gpu = Arc::new(common::default_gpu());
    let shapes = [
        shape(1, 1, 8, 24, 50, [4, 4, 4, 4]),
        shape(2, 3, 5, 37, 97, [3, 5, 7, 9]),
        shape(3, 2, 32, 256, 300, [8, 8, 4, 16]),
        shape(2, 2, 64, 96, 65536, [16, 16, 8, 32]),
    ];
    for (seed, shape) in shapes.into_iter().enumerate() {
        let source = SyntheticV7::new(shape, seed as u64);
        let config = &source.config;
        let model = Model::from_source(gpu.clone(), &source, &LoadOptions::default()).unwrap();
        let reference = ReferenceModel::from_source(&source).unwrap();
        let mut session = Session::new(&model).unwrap();
        let mut state = reference.zero_state();
        for position in 0..12u32 {
            let token = (position * 7919 + 13) % config.vocab as u32;
            let ours = session.feed(token).unwrap();
            let expected = reference.forward(token, &mut state).unwrap();
            let error = relative_error(&ours, &expected);
            assert!(error <= 1e-4, "{config:?} seed {seed} position {position}: error {error:.2e} × std");
        }
        let ours = session.read_state().unwrap();
        for (name, found, expected) in [
            ("att_x", &ours.att_x, &state.att_x),
            ("wkv", &ours.wkv, &state.wkv),
            ("ffn_x", &ours.ffn_x, &state.ffn_x),
        ] {
            let error = relative_error(&found.concat(), &expected.concat());
            assert!(error <= 1e-4, "{config:?}: state {name}: error {error:.2e}");
        }
    }
}

#[test]
fn reset_returns_to_the_zero_state() {
    let gpu = Arc::new(common::default_gpu());
    let model = Model::load(gpu, &fixture_dir("tiny").join("model-f16.safetensors"), &LoadOptions::default())
        .unwrap();
    let mut session = Session::new(&model).unwrap();
    let first = session.feed_all(&[1, 2, 3]).unwrap();
    session.reset().unwrap();
    assert_eq!(session.feed_all(&[1, 2, 3]).unwrap(), first);
}
