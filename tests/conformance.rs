//! Whole-model checks: the engine against the official implementation's golden outputs
//! (tests/fixtures/<version>/<case>, made by tools/make_fixtures.py), and RWKV-7 against the CPU
//! reference on random models of many shapes.

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

/// Every RWKV version's fixture folder, with the smallest case, which also runs on every kernel
/// variant and on the GL backend.
const VERSIONS: [(&str, &str); 6] =
    [("v4", "A"), ("v5.0", "A"), ("v5.1", "A"), ("v5.2", "A"), ("v6", "A"), ("v7", "tiny")];

fn fixture_dir(version: &str, case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(version).join(case)
}

/// The cases of a version, each with its model files (every format it was saved in).
fn cases(version: &str) -> Vec<(String, Vec<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(version);
    let mut cases: Vec<(String, Vec<String>)> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| {
            let dir = entry.unwrap().path();
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("model"))
                .collect();
            files.sort();
            (dir.file_name().unwrap().to_string_lossy().into_owned(), files)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 2, "{}: expected at least two fixture cases", root.display());
    for (case, files) in &cases {
        assert!(!files.is_empty(), "{version}/{case}: no model files");
    }
    cases
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
fn check_fixture(gpu: &Arc<Gpu>, (version, case): (&str, &str), file: &str) -> f64 {
    let dir = fixture_dir(version, case);
    let case = format!("{version}/{case}");
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

#[test]
fn golden_every_version_case_and_format() {
    let gpu = Arc::new(common::default_gpu());
    let mut figures = Vec::new();
    for (version, _) in VERSIONS {
        for (case, files) in cases(version) {
            for file in files {
                let worst = check_fixture(&gpu, (version, &case), &file);
                figures.push(format!("{version}/{case}/{file}: {worst:.1e}"));
            }
        }
    }
    println!("worst logit error × std, per fixture and format:\n  {}", figures.join("\n  "));
}

/// The smallest case of each version on every shipped kernel variant (f16 or packed weights,
/// thread or workgroup per row).
#[test]
fn golden_every_version_every_kernel_variant() {
    for gpu in common::variants() {
        let gpu = Arc::new(gpu);
        for (version, case) in VERSIONS {
            check_fixture(&gpu, (version, case), "model-f16.safetensors");
        }
    }
}

#[test]
fn golden_every_version_on_gl_without_f16_or_subgroups() {
    let gpu = Arc::new(common::gl_gpu());
    assert!(!gpu.f16 && !gpu.subgroups, "expected a baseline adapter, got {}", common::describe(&gpu));
    for (version, case) in VERSIONS {
        for file in ["model.pth", "model-f16.safetensors"] {
            check_fixture(&gpu, (version, case), file);
        }
    }
}

/// Activations grow with depth; the official fp16 path halves them every 6 layers to avoid
/// overflow. Ours stay in f32: a 24-layer model must match exactly at every position.
#[test]
fn deep_model_matches_without_rescaling() {
    let gpu = Arc::new(common::default_gpu());
    let dir = fixture_dir("v6", "deep");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let layers = meta["layers"].as_u64().unwrap();
    assert!(layers >= 24, "the deep fixture has only {layers} layers");
    check_fixture(&gpu, ("v6", "deep"), "model.pth");
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

/// Resetting restores each version's initial state (RWKV-4's starts at pp = −1e30, not zero).
#[test]
fn reset_returns_to_the_initial_state() {
    let gpu = Arc::new(common::default_gpu());
    for (version, case) in VERSIONS {
        let path = fixture_dir(version, case).join("model-f16.safetensors");
        let model = Model::load(gpu.clone(), &path, &LoadOptions::default()).unwrap();
        let mut session = Session::new(&model).unwrap();
        let first = session.feed_all(&[1, 2, 3]).unwrap();
        session.reset().unwrap();
        assert_eq!(session.feed_all(&[1, 2, 3]).unwrap(), first, "{version}");
    }
}
