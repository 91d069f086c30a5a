//! The trained demo model (assets/demo, made by tools/train_demo.py) against the official package
//! on held-out text: the same logits, the same greedy continuation, through the public API.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{load_f32, load_tokens, relative_error};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{Engine, EngineOptions, GenerateOptions, Session};
use rwkv_wgpu::tokenizer::Tokenizer;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/demo")
}

fn engine(gpu: rwkv_wgpu::gpu::Gpu) -> Engine {
    let model =
        Model::load(Arc::new(gpu), &root().join("assets/demo/model.safetensors"), &LoadOptions::default())
            .unwrap();
    Engine::new(Arc::new(model), EngineOptions { slots: 1, chunk: 64 }).unwrap()
}

#[test]
fn demo_logits_match_the_official_package_on_both_backends() {
    let tokens = load_tokens(&fixtures().join("tokens.npy"));
    let (_, official) = load_f32(&fixtures().join("logits.npy"));
    for gpu in [common::default_gpu(), common::gl_gpu()] {
        let describe = gpu.describe();
        let ours = Session::new(&engine(gpu)).unwrap().feed_positions(&tokens).unwrap();
        let error = relative_error(&ours, &official);
        assert!(error <= 1e-3, "{describe}: logits differ from the official package by {error:.1e} × std");
    }
}

#[test]
fn demo_greedy_continuation_is_the_official_one() {
    #[derive(serde::Deserialize)]
    struct Greedy {
        prompt: String,
        prompt_tokens: Vec<u32>,
        continuation_tokens: Vec<u32>,
        continuation: String,
    }
    let greedy: Greedy =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("greedy.json")).unwrap()).unwrap();
    let tokenizer = Tokenizer::from_file(&root().join("tests/fixtures/tokenizer/bytes256.json")).unwrap();
    assert_eq!(tokenizer.encode(&greedy.prompt).unwrap(), greedy.prompt_tokens);
    let engine = engine(common::default_gpu());
    let mut session = Session::new(&engine).unwrap();
    let options = GenerateOptions {
        max_tokens: greedy.continuation_tokens.len(),
        stop_at_end_of_text: false,
        ..GenerateOptions::default()
    };
    let pieces: Vec<_> =
        session.generate(&tokenizer, &greedy.prompt, &options).unwrap().map(Result::unwrap).collect();
    assert_eq!(pieces.iter().map(|p| p.token).collect::<Vec<_>>(), greedy.continuation_tokens);
    assert_eq!(pieces.iter().map(|p| p.text.as_str()).collect::<String>(), greedy.continuation);
}
