//! The trained demo model (assets/demo, made by tools/train_demo.py) against the official package
//! on held-out text: the same logits, the same held-out loss, the same greedy continuation, through
//! the public API.

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
    engine_with_chunk(gpu, 64)
}

/// `chunk` 1 reads every token through the one-token (matrix-vector) path, larger chunks through
/// prefill (matrix-matrix).
fn engine_with_chunk(gpu: rwkv_wgpu::gpu::Gpu, chunk: usize) -> Engine {
    let model =
        Model::load(Arc::new(gpu), &root().join("assets/demo/model.safetensors"), &LoadOptions::default())
            .unwrap();
    Engine::new(Arc::new(model), EngineOptions { slots: 1, chunk }).unwrap()
}

/// Mean cross-entropy in nats of each position's logits predicting the next token.
fn nats_per_token(logits: &[f32], tokens: &[u32]) -> f64 {
    let vocab = logits.len() / tokens.len();
    let total: f64 = logits
        .chunks(vocab)
        .zip(&tokens[1..])
        .map(|(row, &next)| {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
            max + sum.ln() - row[next as usize] as f64
        })
        .sum();
    total / (tokens.len() - 1) as f64
}

#[derive(serde::Deserialize)]
struct Loss {
    positions: usize,
    official_nats_per_byte: f64,
}

#[test]
fn demo_heldout_loss_is_the_official_one_through_prefill_and_one_token_steps() {
    #[derive(serde::Deserialize)]
    struct HeldoutLoss {
        whole: Loss,
        prefix: Loss,
    }
    let official: HeldoutLoss =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("heldout_loss.json")).unwrap())
            .unwrap();
    let text = std::fs::read(root().join("assets/demo/heldout.txt")).unwrap();
    let bytes: Vec<u32> = text.iter().map(|&b| b as u32).collect();
    let checks = [
        ("prefill, whole held-out text", 64, &bytes[..], &official.whole),
        ("one token per step, prefix", 1, &bytes[..official.prefix.positions + 1], &official.prefix),
    ];
    for (path, chunk, tokens, loss) in checks {
        assert_eq!(tokens.len(), loss.positions + 1, "{path}: the fixture covers other text");
        let logits = Session::new(&engine_with_chunk(common::default_gpu(), chunk))
            .unwrap()
            .feed_positions(tokens)
            .unwrap();
        let ours = nats_per_token(&logits, tokens);
        let relative = (ours - loss.official_nats_per_byte).abs() / loss.official_nats_per_byte;
        println!(
            "{path}: ours {ours:.6} nats/byte, official {:.6} ({relative:.1e})",
            loss.official_nats_per_byte
        );
        // The fixture's six decimals resolve 3e-7 of it; measured 2.0e-7 (prefill, whole text)
        // and 1.1e-7 (one token per step). It is the only check on positions 512 to 4095.
        assert!(
            relative <= 1e-5,
            "{path}: held-out loss {ours:.7} is not within 1e-5 of the official {:.6}",
            loss.official_nats_per_byte
        );
    }
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
        /// The official run's gap between its top two logits at each generated token.
        margins: Vec<f64>,
    }
    let greedy: Greedy =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("greedy.json")).unwrap()).unwrap();
    let tokenizer = Tokenizer::from_file(&root().join("assets/demo/tokenizer.json")).unwrap();
    assert_eq!(tokenizer.encode(&greedy.prompt).unwrap(), greedy.prompt_tokens);
    assert!(
        greedy.continuation_tokens.len() >= 100 && greedy.margins.len() == greedy.continuation_tokens.len()
    );
    // Our logits are within ~1e-5 of the official ones, so a gap this wide cannot flip a choice:
    // any difference below would be a real divergence, not rounding.
    let narrowest = greedy.margins.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(narrowest >= 1e-3, "the fixture's prompt has a near tie ({narrowest:.1e}): choose another");
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

/// `f16_arithmetic` (prefill multiplies in f16) is an opt-in trade of accuracy for speed, held to
/// the official package's own half precision: its `fp16` path on this model and these positions
/// (tests/fixtures/demo/official_fp16.json, tools/make_demo_fp16_fixture.py) lands 1.9e-3 × std
/// from its fp32 logits and moves the loss by 3.0e-5; ours must do no worse on either (on
/// lavapipe: 1.1e-3 and ~1e-5 on the tiled kernels, 5.4e-4 and 4.8e-6 on tensor cores; our
/// activations stay f32, only the products' inputs are rounded). The exact path is held to
/// 1e-3 × std above.
#[test]
fn demo_prefill_with_f16_arithmetic_stays_close() {
    let options = rwkv_wgpu::gpu::GpuOptions {
        backend: Some(rwkv_wgpu::gpu::Backend::Vulkan),
        allow_f16: Some(true),
        row_mapping: Some(rwkv_wgpu::gpu::RowMapping::WorkgroupPerRow),
        f16_arithmetic: true,
        // The tiled kernels even on a GPU with tensor cores.
        coop: Some(false),
        ..Default::default()
    };
    let tiled = common::open(&options);
    assert!(tiled.f16_arithmetic, "the test adapter needs SHADER_F16");
    let official_fp16: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("official_fp16.json")).unwrap())
            .unwrap();
    let bound = |what: &str| official_fp16["prefill"][what].as_f64().expect("official_fp16.json: prefill");
    let (error_bound, loss_bound) = (bound("logits_error_x_std"), bound("loss_change"));
    println!(
        "the official fp16 path: logits {error_bound:.1e} × std, held-out loss {loss_bound:.1e} relative"
    );
    let tokens = load_tokens(&fixtures().join("tokens.npy"));
    let (_, official) = load_f32(&fixtures().join("logits.npy"));
    // The tiled kernels' f16 tiles, then the single f16 product on tensor cores.
    for gpu in std::iter::once(tiled).chain(common::coop_gpus(true)) {
        let what = common::describe(&gpu);
        let ours = Session::new(&engine(gpu)).unwrap().feed_positions(&tokens).unwrap();
        let error = relative_error(&ours, &official);
        let (loss_ours, loss_official) = (nats_per_token(&ours, &tokens), nats_per_token(&official, &tokens));
        let loss_change = (loss_ours - loss_official).abs() / loss_official;
        println!("f16 arithmetic on {what}: logits {error:.1e} × std from official, held-out loss {loss_change:.1e} relative");
        assert!(
            error <= error_bound,
            "f16 arithmetic on {what}: logits {error:.1e} × std from the official ones, the official fp16 path {error_bound:.1e}"
        );
        assert!(
            loss_change <= loss_bound,
            "f16 arithmetic on {what} changes the held-out loss by {loss_change:.1e}, the official fp16 path by {loss_bound:.1e}"
        );
    }
}
