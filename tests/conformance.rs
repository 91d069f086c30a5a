//! Whole-model checks against the official implementation's golden outputs
//! (tests/fixtures/<version>/<case>, made by tools/make_fixtures.py), one token at a time and
//! through prefill in chunks of many sizes.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{fixture_dir, golden, load_f32, load_tokens, relative_error};
use rwkv_wgpu::gpu::Gpu;
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Session, State};

/// The bound: at every position, max |ours − official| ≤ 1e-3 × std(official logits).
/// The official fp32 run itself is ~5e-6 × std from float64 (recorded in each meta.json).
const CONFORMANCE_BOUND: f64 = 1e-3;

/// Every RWKV version's fixture folder, with the smallest case, which also runs on every kernel
/// variant and on the GL backend.
const VERSIONS: [(&str, &str); 6] =
    [("v4", "A"), ("v5.0", "A"), ("v5.1", "A"), ("v5.2", "A"), ("v6", "A"), ("v7", "tiny")];

/// The cases of a version that keep every position's logits, each with its model files (every
/// format it was saved in). (The long-prompt cases keep every 10th: tests/long_prompts.rs.)
fn cases(version: &str) -> Vec<(String, Vec<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(version);
    let every_position = |dir: &Path| {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
        meta["logit_positions"].is_null()
    };
    let mut cases: Vec<(String, Vec<String>)> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|dir| every_position(dir))
        .map(|dir| {
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

/// How a fixture's tokens are fed: one step per token (RNN mode), or through prefill in chunks.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Rnn,
    Prefill { chunk: usize },
}

fn engine(gpu: &Arc<Gpu>, path: &Path, chunk: usize) -> Engine {
    let model = Model::load(gpu.clone(), path, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Engine::new(Arc::new(model), EngineOptions { slots: 4, chunk }).unwrap()
}

/// The logits after every token, `tokens.len() × V`.
fn all_logits(session: &mut Session, tokens: &[u32], mode: Mode) -> Vec<f32> {
    match mode {
        Mode::Rnn => tokens.iter().flat_map(|&t| session.feed(&[t]).unwrap()).collect(),
        Mode::Prefill { .. } => session.feed_positions(tokens).unwrap(),
    }
}

/// The concatenated layers of one part of a state.
fn state_part(state: &State, part: &str) -> Vec<f32> {
    state
        .layers
        .iter()
        .flat_map(|l| match part {
            "att_x" => l.att_x.clone(),
            "wkv" => l.wkv.clone(),
            _ => l.ffn_x.clone(),
        })
        .collect()
}

/// Runs one fixture file through the engine and checks every position's logits and the final
/// state; returns the worst relative logit error.
fn check_fixture(gpu: &Arc<Gpu>, (version, case): (&str, &str), file: &str, mode: Mode) -> f64 {
    let dir = fixture_dir(version, case);
    let case = format!("{version}/{case}");
    let chunk = match mode {
        Mode::Rnn => EngineOptions::DEFAULT_CHUNK,
        Mode::Prefill { chunk } => chunk,
    };
    let engine = engine(gpu, &dir.join(file), chunk);
    let tokens = load_tokens(&dir.join("tokens.npy"));
    let (shape, logits) = load_f32(&golden(&dir, file, "logits"));
    let vocab = shape[1];
    let mut session = Session::new(&engine).unwrap();
    let ours = all_logits(&mut session, &tokens, mode);
    let mut worst: f64 = 0.0;
    for position in 0..tokens.len() {
        let at = position * vocab..(position + 1) * vocab;
        let error = relative_error(&ours[at.clone()], &logits[at]);
        assert!(
            error <= CONFORMANCE_BOUND,
            "{case}/{file} {mode:?} on {}: position {position}: error {error:.2e} × std",
            gpu.describe()
        );
        worst = worst.max(error);
    }
    let state = session.state().unwrap();
    for name in ["att_x", "wkv", "ffn_x"] {
        let (_, official) = load_f32(&golden(&dir, file, &format!("state_{name}")));
        let error = relative_error(&state_part(&state, name), &official);
        assert!(
            error <= CONFORMANCE_BOUND,
            "{case}/{file} {mode:?}: final state {name}: error {error:.2e} × std"
        );
    }
    println!(
        "{case}/{file} {mode:?} on {}: worst logit error {worst:.2e} × std over {} positions",
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
                let worst = check_fixture(&gpu, (version, &case), &file, Mode::Rnn);
                figures.push(format!("{version}/{case}/{file}: {worst:.1e}"));
            }
        }
    }
    println!("worst logit error × std, per fixture and format:\n  {}", figures.join("\n  "));
}

/// Every case of every version read as a prompt, in chunks of 1 token, 7, 32, the whole prompt
/// and more (the fixtures have 64 to 72 tokens; 256 and 300 exceed them).
#[test]
fn golden_every_version_through_prefill() {
    let gpu = Arc::new(common::default_gpu());
    for (version, _) in VERSIONS {
        for (case, files) in cases(version) {
            for chunk in [1, 7, 32, 64, 256, 300] {
                check_fixture(&gpu, (version, &case), &files[0], Mode::Prefill { chunk });
            }
        }
    }
}

/// The smallest case of each version on every shipped kernel variant (f16 or packed weights,
/// thread or workgroup per row); steps of 64 tokens take RWKV-7's chunked recurrence on the
/// variants that stand for GPUs.
#[test]
fn golden_every_version_every_kernel_variant() {
    for gpu in common::variants() {
        let gpu = Arc::new(gpu);
        for (version, case) in VERSIONS {
            for mode in [Mode::Rnn, Mode::Prefill { chunk: 7 }, Mode::Prefill { chunk: 64 }] {
                check_fixture(&gpu, (version, case), "model-f16.safetensors", mode);
            }
        }
    }
}

/// The smallest case of each version with prompts multiplied on cooperative matrices (tensor
/// cores), exact by default: steps of 7 and of 64 tokens, which RWKV-7 walks in chunks (see
/// common::coop_gpus for where they run), on each size of cooperative matrices.
#[test]
fn golden_every_version_on_cooperative_matrices() {
    for gpu in common::coop_gpus(false) {
        let gpu = Arc::new(gpu);
        for (version, case) in VERSIONS {
            for chunk in [7, 64] {
                check_fixture(&gpu, (version, case), "model-f16.safetensors", Mode::Prefill { chunk });
            }
        }
    }
}

#[test]
fn golden_every_version_on_gl_without_f16_or_subgroups() {
    let gpu = Arc::new(common::gl_gpu());
    assert!(!gpu.f16 && !gpu.subgroups, "expected a baseline adapter, got {}", common::describe(&gpu));
    for (version, case) in VERSIONS {
        check_fixture(&gpu, (version, case), "model.pth", Mode::Rnn);
        check_fixture(&gpu, (version, case), "model-f16.safetensors", Mode::Prefill { chunk: 32 });
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
    check_fixture(&gpu, ("v6", "deep"), "model.pth", Mode::Rnn);
    check_fixture(&gpu, ("v6", "deep"), "model.pth", Mode::Prefill { chunk: 64 });
}

/// Resetting restores each version's initial state (RWKV-4's starts at pp = −1e30, not zero).
#[test]
fn reset_returns_to_the_initial_state() {
    let gpu = Arc::new(common::default_gpu());
    for (version, case) in VERSIONS {
        let engine = engine(&gpu, &fixture_dir(version, case).join("model-f16.safetensors"), 8);
        let mut session = Session::new(&engine).unwrap();
        let first = session.feed(&[1, 2, 3]).unwrap();
        session.reset().unwrap();
        assert_eq!(session.feed(&[1, 2, 3]).unwrap(), first, "{version}");
    }
}
