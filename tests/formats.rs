//! The layouts users download, against the official package's logits on the same weights
//! (tests/fixtures/formats, made by tools/make_format_fixtures.py with each project's own tools):
//! Hugging Face folders (fla-hub, sharded; Transformers' RWKV-7 port), GGUF files of llama.cpp's
//! converter and quantizer, and LoRA adapters (PEFT, RWKV-LM).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{fixture_dir, load_f32, load_tokens, relative_error};
use rwkv_wgpu::gpu::Gpu;
use rwkv_wgpu::model::lora::{self, Lora};
use rwkv_wgpu::model::source::{self, TensorSource};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::quant::{MatrixFormat, QuantPlan};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Session};
use rwkv_wgpu::tokenizer::Tokenizer;

/// The conformance bound of tests/conformance.rs: max |ours − official| ≤ 1e-3 × std.
const CONFORMANCE_BOUND: f64 = 1e-3;

fn formats_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats")
}

/// Our logits after each of `tokens`, fed one at a time (`chunk` 1) or as a prompt.
fn logits(
    gpu: &Arc<Gpu>,
    source: &dyn TensorSource,
    options: &LoadOptions,
    tokens: &[u32],
    chunk: usize,
) -> Vec<f32> {
    let model = Model::from_source(gpu.clone(), source, options).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 1, chunk }).unwrap();
    let mut session = Session::new(&engine).unwrap();
    if chunk == 1 {
        tokens.iter().flat_map(|&t| session.feed(&[t]).unwrap()).collect()
    } else {
        session.feed_positions(tokens).unwrap()
    }
}

/// The worst error over positions of `ours` against `golden` ([T, V]).
fn worst_error(ours: &[f32], golden: &[f32], vocab: usize) -> f64 {
    ours.chunks(vocab).zip(golden.chunks(vocab)).map(|(o, g)| relative_error(o, g)).fold(0.0, f64::max)
}

/// Loads `path` and checks every position against `golden` within the conformance bound, read
/// token by token and as a prompt in chunks of 7.
fn check(gpu: &Arc<Gpu>, path: &Path, golden: &Path, tokens: &[u32], expected_layout: &str) {
    let source = source::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(source.layout(), expected_layout, "{}", path.display());
    let (shape, golden) = load_f32(golden);
    let golden = &golden[..tokens.len() * shape[1]];
    for chunk in [1, 7] {
        let ours = logits(gpu, source.as_ref(), &LoadOptions::default(), tokens, chunk);
        let error = worst_error(&ours, golden, shape[1]);
        println!("{} (chunk {chunk}): worst logit error {error:.2e} × std", path.display());
        assert!(error <= CONFORMANCE_BOUND, "{} (chunk {chunk}): error {error:.2e} × std", path.display());
    }
}

#[test]
fn hugging_face_folders_match_the_official_logits() {
    let gpu = Arc::new(common::default_gpu());
    let tiny = fixture_dir("v7", "tiny");
    let tokens = load_tokens(&tiny.join("tokens.npy"));
    // fla-hub's layout in three shards with an index; Transformers' port in one file.
    let fla = formats_dir().join("fla");
    assert!(
        fla.join("model.safetensors.index.json").exists()
            && fla.join("model-00003-of-00003.safetensors").exists()
    );
    check(&gpu, &fla, &tiny.join("logits.npy"), &tokens, "fla-hub (Hugging Face)");
    let transformers = formats_dir().join("transformers");
    check(&gpu, &transformers, &tiny.join("logits.npy"), &tokens, "Transformers RWKV-7 (Hugging Face)");
}

#[test]
fn gguf_float_files_match_the_official_logits() {
    let gpu = Arc::new(common::default_gpu());
    let tiny = fixture_dir("v7", "tiny");
    let tokens = load_tokens(&tiny.join("tokens.npy"));
    for dtype in ["f32", "f16", "bf16"] {
        let path = formats_dir().join(format!("gguf/v7-tiny-{dtype}.gguf"));
        check(&gpu, &path, &tiny.join("logits.npy"), &tokens, "llama.cpp GGUF");
    }
    let v6 = fixture_dir("v6", "A");
    let tokens = load_tokens(&v6.join("tokens.npy"));
    check(
        &gpu,
        &formats_dir().join("gguf/v6-A-f32.gguf"),
        &v6.join("logits.f32.npy"),
        &tokens,
        "llama.cpp GGUF",
    );
}

/// Every quantized type, read with its blocks decoded into f32 storage, gives the official
/// logits of the weights gguf-py decodes from the same file, and in the default f16 storage those
/// of the decoded weights rounded to f16.
#[test]
fn gguf_quantized_types_match_the_official_logits_of_their_decoded_weights() {
    let gpu = Arc::new(common::default_gpu());
    let dir = formats_dir().join("gguf/quantized");
    let tokens = load_tokens(&dir.join("tokens.npy"));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let types: Vec<&String> = meta["types"].as_object().unwrap().keys().collect();
    assert_eq!(types.len(), 8, "{types:?}");
    let mut seen = std::collections::BTreeSet::new();
    let (_, unquantized) = load_f32(&dir.join("logits-f32.npy"));
    for name in types {
        let path = dir.join(format!("model-{name}.gguf"));
        let source = source::open(&path).unwrap();
        for tensor in source.names() {
            seen.insert(source.stored_type(&tensor).unwrap());
        }
        let (shape, golden) = load_f32(&dir.join(format!("logits-{name}.npy")));
        let exact = LoadOptions { quant: QuantPlan::with(MatrixFormat::F32), ..LoadOptions::default() };
        let error = worst_error(&logits(&gpu, source.as_ref(), &exact, &tokens, 1), &golden, shape[1]);
        println!("{name} in f32: worst logit error {error:.2e} × std");
        assert!(error <= CONFORMANCE_BOUND, "{name}: error {error:.2e} × std");
        // In f16, the official logits of the decoded weights rounded to f16.
        let (_, rounded) = load_f32(&dir.join(format!("logits-{name}-f16.npy")));
        let f16 = LoadOptions { quant: QuantPlan::with(MatrixFormat::F16), ..LoadOptions::default() };
        let error = worst_error(&logits(&gpu, source.as_ref(), &f16, &tokens, 7), &rounded, shape[1]);
        println!("{name} in f16: worst logit error {error:.2e} × std");
        assert!(error <= CONFORMANCE_BOUND, "{name} stored in f16: error {error:.2e} × std");
        // By default each decoded matrix is stored in int8: what that adds to the file's own
        // quantization, held to what was measured plus a fifth (this random-weight model is far
        // more sensitive than trained ones: on the demo model int8 moves no type's held-out loss
        // by more than 0.007%, README).
        let ours = logits(&gpu, source.as_ref(), &LoadOptions::default(), &tokens, 7);
        let (kl, agreement) = common::divergence(&golden, &ours, shape[1]);
        let (file_kl, _) = common::divergence(&unquantized, &golden, shape[1]);
        println!(
            "{name} by default (int8): KL {kl:.2e} from the decoded weights (the file's own: {file_kl:.2e}), argmax agreement {agreement:.3}"
        );
        let (_, measured_kl, measured_agreement) =
            DEFAULT_STORAGE.iter().find(|(kind, ..)| kind == name).expect("a measured bound per type");
        assert!(kl <= measured_kl * 1.2, "{name}: KL {kl:.2e} from the decoded weights");
        assert!(agreement >= *measured_agreement, "{name}: argmax agreement {agreement}");
    }
    let expected = ["F32", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0"];
    assert_eq!(seen.iter().map(String::as_str).collect::<Vec<_>>(), expected);
}

/// Each type's divergence from its decoded weights when stored in int8 (the default), and argmax
/// agreement, as measured on the random-weight fixture over its 16 positions.
const DEFAULT_STORAGE: [(&str, f64, f64); 8] = [
    ("q8_0", 1.27e-3, 0.93),
    ("q6_k", 1.00e-3, 0.93),
    ("q5_k_m", 7.34e-4, 0.93),
    ("q5_1", 6.54e-4, 1.0),
    ("q5_0", 1.05e-3, 1.0),
    ("q4_k_m", 6.80e-4, 1.0),
    ("q4_1", 1.01e-1, 0.75),
    ("q4_0", 3.15e-3, 0.93),
];

/// A GGUF made by the unmodified converter carries the World vocabulary: read from its metadata
/// it is the built-in World tokenizer, token for token.
#[test]
fn gguf_world_vocabulary_is_the_world_tokenizer() {
    let path = formats_dir().join("gguf/world-q8_0.gguf");
    let source = source::open(&path).unwrap();
    let Some(Ok(Tokenizer::World(from_file))) = source.tokenizer() else {
        panic!("no World tokenizer in the file")
    };
    let Tokenizer::World(built_in) = Tokenizer::world().unwrap() else { unreachable!() };
    assert_eq!(from_file.vocab_size(), built_in.vocab_size());
    for id in 1..65530u32 {
        assert_eq!(from_file.token_bytes(id).unwrap(), built_in.token_bytes(id).unwrap(), "token {id}");
    }
    let text = "The quick brown fox — 敏捷的狐狸 — jumps\n\nUser: it's \"quoted\"\\ok";
    assert_eq!(from_file.encode(text), built_in.encode(text));
    // The model itself loads and runs.
    let gpu = Arc::new(common::default_gpu());
    let ours = logits(&gpu, source.as_ref(), &LoadOptions::default(), &built_in.encode(text)[..4], 1);
    assert!(ours.len() == 4 * 65536 && ours.iter().all(|v| v.is_finite()));
}

/// LoRA adapters written by PEFT (on the fla model) and in RWKV-LM's format, merged at load,
/// give the official logits of the weights their own tools merge.
#[test]
fn lora_adapters_match_the_official_logits_of_the_merged_weights() {
    let gpu = Arc::new(common::default_gpu());
    let dir = formats_dir().join("lora");
    let tokens = load_tokens(&dir.join("tokens.npy"));
    let cases = [
        (formats_dir().join("fla"), "peft".parse::<Lora>().unwrap(), "logits-peft"),
        (fixture_dir("v7", "tiny").join("model.pth"), "rwkv-lm.pth:0.5".parse().unwrap(), "logits-rwkv-lm"),
    ];
    for (base, mut lora, golden) in cases {
        lora.path = dir.join(&lora.path);
        let merged = lora::merge(source::open(&base).unwrap(), &[lora.clone()]).unwrap();
        // Merged matrices stay in the base file's precision (bf16 here) unless --quant says
        // otherwise: the golden logits of the merged weights rounded the same way, and in f32.
        let exact = LoadOptions { quant: QuantPlan::with(MatrixFormat::F32), ..LoadOptions::default() };
        for (options, golden) in
            [(LoadOptions::default(), format!("{golden}-bf16.npy")), (exact, format!("{golden}.npy"))]
        {
            let (shape, golden) = load_f32(&dir.join(golden));
            let ours = logits(&gpu, merged.as_ref(), &options, &tokens, 1);
            let error = worst_error(&ours, &golden, shape[1]);
            println!("{} + {}: worst logit error {error:.2e} × std", base.display(), lora.path.display());
            assert!(error <= CONFORMANCE_BOUND, "{}: error {error:.2e} × std", lora.path.display());
        }
        let (shape, golden) = load_f32(&dir.join(format!("{golden}.npy")));
        // Without the adapter the logits differ: the merge did something.
        let plain = logits(&gpu, source::open(&base).unwrap().as_ref(), &LoadOptions::default(), &tokens, 1);
        assert!(
            worst_error(&plain, &golden, shape[1]) > 0.1,
            "{}: the adapter changes nothing",
            lora.path.display()
        );
    }
    // Model::load takes the adapters in its options.
    let options = LoadOptions {
        lora: vec![Lora { path: dir.join("rwkv-lm.pth"), scale: 0.5 }],
        ..LoadOptions::default()
    };
    let model = Model::load(gpu.clone(), &fixture_dir("v7", "tiny").join("model.pth"), &options).unwrap();
    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 1, chunk: 1 }).unwrap();
    let first = Session::new(&engine).unwrap().feed(&tokens[..1]).unwrap();
    let (shape, golden) = load_f32(&dir.join("logits-rwkv-lm-bf16.npy"));
    assert!(relative_error(&first, &golden[..shape[1]]) <= CONFORMANCE_BOUND);
}
