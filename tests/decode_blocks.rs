//! Several decode steps per submit (runtime::engine::block): the same tokens and the same state
//! as one step per submit, also when a stop string, a cancel or the length limit ends the
//! generation inside a block; one submit and 4 bytes read back per token's block share.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use common::fixture_dir;
use rwkv_wgpu::gpu::{Gpu, GpuOptions};
use rwkv_wgpu::model::{EmbeddingPlace, LoadOptions, Model};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Finish, GenerateOptions, SamplerOptions, Session, State};
use rwkv_wgpu::tokenizer::Tokenizer;

const PROMPT: &str = "Hello, world";

fn engine(embedding: EmbeddingPlace) -> Engine {
    engine_on(common::default_gpu(), embedding)
}

fn engine_on(gpu: Gpu, embedding: EmbeddingPlace) -> Engine {
    let gpu = Arc::new(gpu);
    let path = fixture_dir("v7", "tiny").join("model-f16.safetensors");
    let model = Model::load(gpu, &path, &LoadOptions { embedding, ..LoadOptions::default() }).unwrap();
    Engine::new(Arc::new(model), EngineOptions { slots: 4, chunk: 16 }).unwrap()
}

fn tokenizer() -> Tokenizer {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/tokenizer.json");
    Tokenizer::from_file(&path).unwrap()
}

/// Sampled with penalties and a seed, so that each step's draw and counts matter.
fn sampled(max_tokens: usize, steps_per_submit: usize) -> GenerateOptions {
    let sampler = SamplerOptions {
        temperature: 0.8,
        top_p: 0.9,
        presence_penalty: 0.3,
        frequency_penalty: 0.2,
        penalty_decay: 0.99,
        seed: Some(11),
        ..SamplerOptions::default()
    };
    GenerateOptions { max_tokens, sampler, steps_per_submit, ..GenerateOptions::default() }
}

/// The tokens generated, why it ended, the token left unread, and the state after.
fn run(engine: &Engine, options: &GenerateOptions) -> (Vec<u32>, Option<Finish>, Option<u32>, State) {
    let tokenizer = tokenizer();
    let mut session = Session::new(engine).unwrap();
    let mut generation = session.generate(&tokenizer, PROMPT, options).unwrap();
    let tokens: Vec<u32> = generation.by_ref().map(|piece| piece.unwrap().token).collect();
    let (finish, unfed) = (generation.finish(), generation.unfed_token());
    drop(generation);
    (tokens, finish, unfed, session.state().unwrap())
}

fn assert_same_state(what: &str, found: &State, expected: &State) {
    for (layer, (f, e)) in found.layers.iter().zip(&expected.layers).enumerate() {
        assert!(
            f.att_x == e.att_x && f.wkv == e.wkv && f.ffn_x == e.ffn_x,
            "{what}: layer {layer}'s state differs from one step per submit"
        );
    }
}

#[test]
fn blocks_give_the_tokens_and_state_of_one_step_per_submit() {
    let engine = engine(EmbeddingPlace::Gpu);
    assert!(engine.decodes_in_blocks());
    // 13 tokens: the last block is cut short by the length limit.
    let (tokens, finish, unfed, state) = run(&engine, &sampled(13, 1));
    assert_eq!((tokens.len(), finish.clone()), (13, Some(Finish::MaxTokens)));
    for steps in [2, 5, 8, 16] {
        let found = run(&engine, &sampled(13, steps));
        assert_eq!(found.0, tokens, "{steps} steps per submit: other tokens");
        assert_eq!((&found.1, found.2), (&finish, unfed));
        assert_same_state(&format!("{steps} steps per submit"), &found.3, &state);
    }
}

#[test]
fn a_stop_inside_a_block_leaves_the_state_after_the_returned_tokens() {
    let engine = engine(EmbeddingPlace::Gpu);
    let tokenizer = tokenizer();
    let (tokens, ..) = run(&engine, &sampled(40, 1));
    let text = tokenizer.decode(&tokens).unwrap();
    // A stop string first met at the 20th character or later: the generation ends mid-block
    // for some of the block sizes below.
    let chars: Vec<char> = text.chars().collect();
    let stop = (20..chars.len() - 2)
        .map(|at| chars[at..at + 2].iter().collect::<String>())
        .find(|stop| text.find(stop.as_str()).unwrap() >= 20)
        .expect("no stop string in the generated text");
    let options = |steps| GenerateOptions { stop: vec![stop.clone()], ..sampled(40, steps) };
    let (expected_tokens, finish, unfed, state) = run(&engine, &options(1));
    assert!(matches!(finish, Some(Finish::Stop(_))), "{finish:?}");
    let stopped_at = expected_tokens.len() - 1;
    let mut inside = 0;
    for steps in [3, 4, 7, 8] {
        inside += usize::from(stopped_at % steps != 0);
        let found = run(&engine, &options(steps));
        assert_eq!(found.0, expected_tokens, "{steps} steps per submit");
        assert_eq!((&found.1, found.2), (&finish, unfed));
        assert_same_state(&format!("a stop with {steps} steps per submit"), &found.3, &state);
    }
    assert!(inside > 0, "the stop fell on a block boundary for every size: the test proves nothing");
}

#[test]
fn cancelling_or_dropping_inside_a_block_keeps_the_returned_tokens() {
    let engine = engine(EmbeddingPlace::Gpu);
    let tokenizer = tokenizer();
    let end_after = |steps: usize, pieces: usize, by_cancel: bool| {
        let mut session = Session::new(&engine).unwrap();
        let options = sampled(30, steps);
        let cancel = options.cancel.clone();
        let mut seen = Vec::new();
        if by_cancel {
            let mut generation = session.generate(&tokenizer, PROMPT, &options).unwrap();
            for piece in generation.by_ref() {
                seen.push(piece.unwrap().token);
                if seen.len() == pieces {
                    cancel.cancel();
                }
            }
            assert_eq!(generation.finish(), Some(Finish::Cancelled));
        } else {
            let finish = session
                .generate_with(&tokenizer, PROMPT, &options, |piece| {
                    seen.push(piece.token);
                    if seen.len() == pieces {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .unwrap();
            assert_eq!(finish, Finish::Cancelled);
        }
        (seen, session.state().unwrap())
    };
    for by_cancel in [true, false] {
        let (tokens, state) = end_after(1, 5, by_cancel);
        assert_eq!(tokens.len(), 5);
        let (found, found_state) = end_after(8, 5, by_cancel);
        assert_eq!(found, tokens);
        assert_same_state(&format!("ended after 5 tokens (cancel: {by_cancel})"), &found_state, &state);
    }
}

#[test]
fn a_block_costs_one_submit_and_reads_back_only_token_ids() {
    let engine = engine(EmbeddingPlace::Gpu);
    let tokenizer = tokenizer();
    let prompt = tokenizer.encode(PROMPT).unwrap();
    let mut session = Session::new(&engine).unwrap();
    let (tokens, steps) = (33, 8);
    // The prompt's step first, so that its recording is not counted.
    session.advance(&prompt).unwrap();
    session.reset().unwrap();
    engine.reset_counters();
    let options = GenerateOptions { steps_per_submit: steps, ..sampled(tokens, steps) };
    let generation = session.generate_tokens(&tokenizer, &prompt, &options).unwrap();
    let pieces: Vec<_> = generation.collect::<Result<_, _>>().unwrap();
    assert_eq!(pieces.len(), tokens);
    let counters = engine.counters();
    // One step and submit for the prompt, which chooses the first token; then blocks choose the
    // other 32.
    assert_eq!(counters.submits, 1 + (tokens as u64 - 1).div_ceil(steps as u64), "{counters:?}");
    // The prompt's step reads back its token in a row padded to 4 ids; a block its ids only.
    assert_eq!(counters.bytes_read_back, 16 + 4 * (tokens as u64 - 1), "{counters:?}");
    assert_eq!(counters.tokens, (prompt.len() + tokens - 1) as u64, "{counters:?}");
}

#[test]
fn the_embedding_in_host_memory_gives_the_same_logits_and_tokens() {
    let (gpu_table, host_table) = (engine(EmbeddingPlace::Gpu), engine(EmbeddingPlace::Host));
    assert!(!host_table.decodes_in_blocks());
    let prompt = tokenizer().encode(PROMPT).unwrap();
    let logits = |engine: &Engine| Session::new(engine).unwrap().feed(&prompt).unwrap();
    assert_eq!(logits(&gpu_table), logits(&host_table));
    let (tokens, _, _, state) = run(&host_table, &sampled(12, 8));
    let found = run(&gpu_table, &sampled(12, 8));
    assert_eq!(found.0, tokens);
    assert_same_state("the embedding on the GPU", &found.3, &state);
}

/// A table larger than one storage binding is kept in parts (here 2 of the tiny model's 256 rows
/// of 64 values each, bindings limited to 32 KiB), which the embedding kernel reads alike.
#[test]
fn a_table_in_parts_gives_the_same_tokens_and_state() {
    let limited = || common::open(&GpuOptions { binding_limit: Some(32_768), ..common::default_options() });
    let (parts, host) =
        (engine_on(limited(), EmbeddingPlace::Gpu), engine_on(limited(), EmbeddingPlace::Host));
    match &parts.model().embedding {
        rwkv_wgpu::model::EmbeddingTable::Gpu(tensors) => assert_eq!(tensors.len(), 2),
        _ => panic!("the table should be on the GPU"),
    }
    let (tokens, _, _, state) = run(&host, &sampled(12, 1));
    let found = run(&parts, &sampled(12, 8));
    assert_eq!(found.0, tokens);
    assert_same_state("the table in 2 parts", &found.3, &state);
}
