//! Prompts longer than the largest chunk, read in chunks of up to and beyond 4096 tokens, against
//! the official implementation (tests/fixtures/<version>/long: a 4500-token prompt, the official
//! logits of every 10th position and the final state), for every version on both of CI's
//! drivers. One dispatch of a recurrence walks a bounded number of tokens: llvmpipe ends a
//! kernel's loops after 65535 iterations, and a 500-token chunk once left every later logit
//! wrong. Also: where a chunk passes an adapter's limit, an error or a smaller step, never wrong
//! numbers.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{fixture_dir, load_f32, load_tokens, relative_error};
use rwkv_wgpu::gpu::{Backend, Gpu, GpuOptions};
use rwkv_wgpu::kernels;
use rwkv_wgpu::model::synthetic::{Shape, SyntheticV7};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Logits, Session};
use rwkv_wgpu::Error;

/// The conformance bound: at every checked position, max |ours − official| ≤ 1e-3 × std.
const CONFORMANCE_BOUND: f64 = 1e-3;

const VERSIONS: [&str; 6] = ["v4", "v5.0", "v5.1", "v5.2", "v6", "v7"];

/// The long case of a version: its model, prompt, the positions with official logits and those
/// logits, and the official final state per part.
struct LongCase {
    name: String,
    model: std::path::PathBuf,
    tokens: Vec<u32>,
    positions: Vec<usize>,
    logits: Vec<f32>,
    vocab: usize,
    states: Vec<(&'static str, Vec<f32>)>,
}

fn long_case(version: &str) -> LongCase {
    let dir = fixture_dir(version, "long");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let (first, step) = (&meta["logit_positions"]["first"], &meta["logit_positions"]["step"]);
    let (first, step) = (first.as_u64().unwrap() as usize, step.as_u64().unwrap() as usize);
    let tokens = load_tokens(&dir.join("tokens.npy"));
    let (shape, logits) = load_f32(&dir.join("logits.npy"));
    let positions: Vec<usize> = (first..tokens.len()).step_by(step).collect();
    assert_eq!(shape[0], positions.len(), "{version}/long: logits rows");
    let states = ["att_x", "wkv", "ffn_x"]
        .map(|part| (part, load_f32(&dir.join(format!("state_{part}.npy"))).1))
        .into();
    LongCase {
        name: format!("{version}/long"),
        model: dir.join("model.pth"),
        tokens,
        positions,
        logits,
        vocab: shape[1],
        states,
    }
}

fn load(gpu: &Arc<Gpu>, path: &Path) -> Arc<Model> {
    let model = Model::load(gpu.clone(), path, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Arc::new(model)
}

/// Reads the case's prompt in chunks of `chunk` and checks the official positions and the final
/// state; returns the worst logit error.
fn check(gpu: &Arc<Gpu>, case: &LongCase, model: &Arc<Model>, chunk: usize) -> f64 {
    let engine = Engine::new(model.clone(), EngineOptions { slots: 1, chunk }).unwrap();
    let mut session = Session::new(&engine).unwrap();
    let ours = session.feed_positions(&case.tokens).unwrap();
    let vocab = case.vocab;
    let mut worst: f64 = 0.0;
    for (row, &position) in case.positions.iter().enumerate() {
        let found = &ours[position * vocab..(position + 1) * vocab];
        let error = relative_error(found, &case.logits[row * vocab..(row + 1) * vocab]);
        assert!(
            error <= CONFORMANCE_BOUND,
            "{} chunk {chunk} on {}: position {position}: error {error:.2e} × std",
            case.name,
            gpu.describe()
        );
        worst = worst.max(error);
    }
    let state = session.state().unwrap();
    for (part, official) in &case.states {
        let found: Vec<f32> = state
            .layers
            .iter()
            .flat_map(|l| match *part {
                "att_x" => l.att_x.clone(),
                "wkv" => l.wkv.clone(),
                _ => l.ffn_x.clone(),
            })
            .collect();
        let error = relative_error(&found, official);
        assert!(
            error <= CONFORMANCE_BOUND,
            "{} chunk {chunk}: final state {part}: error {error:.2e}",
            case.name
        );
    }
    worst
}

/// Chunks from a few hundred tokens to more than the whole prompt: 4096 and 4200 leave a second
/// chunk, 8192 reads all 4500 tokens in one step.
#[test]
fn long_prompts_match_official_in_chunks_up_to_8192() {
    let gpu = Arc::new(common::default_gpu());
    let mut figures = Vec::new();
    for version in VERSIONS {
        let case = long_case(version);
        let model = load(&gpu, &case.model);
        for chunk in [333, 1024, 4096, 4200, 8192] {
            let worst = check(&gpu, &case, &model, chunk);
            figures.push(format!("{} chunk {chunk}: {worst:.1e}", case.name));
        }
    }
    println!("worst logit error × std on {}:\n  {}", common::describe(&gpu), figures.join("\n  "));
}

#[test]
fn long_prompts_match_official_on_gl() {
    let gpu = Arc::new(common::gl_gpu());
    for version in VERSIONS {
        let case = long_case(version);
        let model = load(&gpu, &case.model);
        for chunk in [1024, 4096] {
            let worst = check(&gpu, &case, &model, chunk);
            println!("{} chunk {chunk} on {}: worst {worst:.1e} × std", case.name, common::describe(&gpu));
        }
    }
}

/// RWKV-7's recurrence in chunks side by side (the default on GPUs) against the official logits
/// and final state, on both drivers; each layer of a long step then records the three chunk
/// kernels, plus one more state dispatch per window, instead of the serial walk's windows.
#[test]
fn v7_long_prompts_in_chunks_match_official() {
    let case = long_case("v7");
    for backend in [Backend::Vulkan, Backend::Gl] {
        let open = |wkv_chunks| {
            let options =
                GpuOptions { backend: Some(backend), wkv_chunks: Some(wkv_chunks), ..GpuOptions::default() };
            Arc::new(common::open(&options))
        };
        let (gpu, serial_gpu) = (open(true), open(false));
        let model = load(&gpu, &case.model);
        for chunk in [333, 4096] {
            let worst = check(&gpu, &case, &model, chunk);
            println!(
                "{} chunk {chunk} in wkv chunks on {}: worst {worst:.1e} × std",
                case.name,
                gpu.describe()
            );
        }
        let dispatches = |model: &Arc<Model>| {
            let engine = Engine::new(model.clone(), EngineOptions { slots: 1, chunk: 333 }).unwrap();
            engine.prepare(333, Logits::Last).unwrap()
        };
        let (layers, n) = (model.config.layers, model.config.head_size);
        let serial_walk = kernels::windows(333, 2 * n).len();
        let chunked_walk =
            2 + kernels::windows(333usize.div_ceil(kernels::WKV7_CHUNK), n * n / 4 + n + n / 2).len();
        let (chunked, serial) = (dispatches(&model), dispatches(&load(&serial_gpu, &case.model)));
        assert_eq!(chunked + layers * serial_walk, serial + layers * chunked_walk, "{backend:?}");
    }
}

/// A chunk is a grid dimension of the row-wise kernels: one beyond the adapter's workgroups per
/// dimension is refused when the engine is made, naming the limit.
#[test]
fn a_chunk_beyond_the_grid_limit_is_an_error() {
    let gpu = Arc::new(common::default_gpu());
    let shape = Shape { layers: 1, heads: 1, head_size: 8, ffn: 16, vocab: 32, lora: [4, 4, 4, 4] };
    let model = Arc::new(
        Model::from_source(gpu.clone(), &SyntheticV7::new(shape, 3), &LoadOptions::default()).unwrap(),
    );
    let limit = gpu.max_workgroups_per_dimension() as usize;
    let error =
        Engine::new(model.clone(), EngineOptions { slots: 1, chunk: limit + 1 }).err().expect("accepted");
    assert!(matches!(error, Error::TooBig(_)), "{error}");
    assert!(error.to_string().contains(&format!("at most {limit}")), "{error}");
    Engine::new(model, EngineOptions { slots: 1, chunk: limit }).expect("the largest chunk");
}

/// Where a chunk's every-position logits would not fit one storage binding, a session reads
/// fewer positions per step and returns the same logits; a single step asking for more is an
/// error naming the limit.
#[test]
fn every_position_logits_larger_than_a_binding_come_in_smaller_steps() {
    let shape = Shape { layers: 2, heads: 2, head_size: 16, ffn: 64, vocab: 1000, lora: [4, 4, 4, 4] };
    let source = SyntheticV7::new(shape, 4);
    let tokens: Vec<u32> = (0..700u32).map(|p| (p * 7919 + 13) % 1000).collect();
    let logits = |binding_limit: Option<u64>| {
        let options = GpuOptions { binding_limit, ..common::default_options() };
        let gpu = Arc::new(common::open(&options));
        let model = Arc::new(Model::from_source(gpu, &source, &LoadOptions::default()).unwrap());
        let engine = Engine::new(model, EngineOptions { slots: 1, chunk: 512 }).unwrap();
        let mut session = Session::new(&engine).unwrap();
        (engine.max_logit_rows(), session.feed_positions(&tokens).unwrap(), engine.clone())
    };
    let (rows, expected, _) = logits(None);
    assert_eq!(rows, 512);
    // 1000 logits take 4000 bytes a row: a 400 kB binding holds 100 rows.
    let (rows, found, engine) = logits(Some(400_000));
    assert_eq!(rows, 100);
    assert_eq!(found, expected);
    let session = Session::new(&engine).unwrap();
    let work =
        [rwkv_wgpu::runtime::Work::new(session.slot(), &tokens[..101], rwkv_wgpu::runtime::Logits::All)];
    let error = engine.step(&work).expect_err("a step of 101 positions was accepted");
    assert!(error.to_string().contains("at most 100 tokens per step"), "{error}");
}

/// A chunk whose scratch memory passes one storage binding is refused when the engine is made,
/// naming the largest chunk that fits (also for a limit that is no multiple of the adapter's
/// offset alignment); that chunk runs, and reads a prompt as a chunk of one token at a time does.
/// Where the slots make the steps too large, the error says so.
#[test]
fn a_chunk_whose_scratch_passes_a_binding_is_refused_naming_the_chunk_that_fits() {
    let shape = Shape { layers: 1, heads: 2, head_size: 16, ffn: 64, vocab: 64, lora: [4, 4, 4, 4] };
    let model = |binding_limit| {
        let gpu = Arc::new(common::open(&GpuOptions { binding_limit, ..common::default_options() }));
        Arc::new(Model::from_source(gpu, &SyntheticV7::new(shape, 5), &LoadOptions::default()).unwrap())
    };
    let prompt: Vec<u32> = (0..512u32).map(|p| (p * 37 + 5) % 64).collect();
    let one_at_a_time = Engine::new(model(None), EngineOptions { slots: 1, chunk: 1 }).unwrap();
    let expected = Session::new(&one_at_a_time).unwrap().feed(&prompt).unwrap();
    for limit in [64 * 1024, 50_001] {
        let limited = model(Some(limit));
        let error =
            Engine::new(limited.clone(), EngineOptions { slots: 1, chunk: 512 }).err().expect("accepted");
        assert!(matches!(error, Error::TooBig(_)), "{error}");
        let text = error.to_string();
        let fits: usize = text
            .rsplit_once("a chunk of at most ")
            .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no chunk named in: {text}"));
        assert!((2..512).contains(&fits), "{text}");
        let beyond = Engine::new(limited.clone(), EngineOptions { slots: 1, chunk: fits + 1 });
        assert!(matches!(beyond, Err(Error::TooBig(_))), "a chunk of {} was accepted", fits + 1);
        let slots = Engine::new(limited.clone(), EngineOptions { slots: fits + 1, chunk: 1 }).err();
        let slots = slots.map(|e| e.to_string()).unwrap_or_default();
        assert!(slots.contains(&format!("at most {fits} slots")), "{fits} + 1 slots: {slots}");
        // The whole prompt in chunks of `fits` rows, the first of them a full one.
        let engine =
            Engine::new(limited, EngineOptions { slots: 1, chunk: fits }).expect("the chunk that fits");
        let found = Session::new(&engine).unwrap().feed(&prompt).unwrap();
        let error = relative_error(&found, &expected);
        assert!(error <= CONFORMANCE_BOUND, "chunks of {fits} against one token at a time: {error}");
    }
}
