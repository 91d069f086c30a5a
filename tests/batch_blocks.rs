//! A batch decoding in blocks (several decode steps per submit, runtime::batch::blocks): the
//! tokens and states of one step per submit, also for a request that ends inside a block by its
//! stop token or leaves there after a stop string; fewer submits.

mod common;

use std::sync::Arc;

use common::{fixture_dir, Rng};
use rwkv_wgpu::model::{EmbeddingPlace, LoadOptions, Model};
use rwkv_wgpu::runtime::{
    Batch, BatchEvent, Engine, EngineOptions, Finish, Left, RequestOptions, SamplerOptions, State,
};

fn engine() -> Engine {
    let gpu = Arc::new(common::default_gpu());
    let path = fixture_dir("v7", "tiny").join("model-f16.safetensors");
    let options = LoadOptions { embedding: EmbeddingPlace::Gpu, ..LoadOptions::default() };
    let model = Model::load(gpu, &path, &options).unwrap();
    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 4, chunk: 16 }).unwrap();
    assert!(engine.decodes_in_blocks());
    engine
}

/// Sampled with penalties and its own seed, so that each step's draw and counts matter.
fn request(max_tokens: usize, stop_token: Option<u32>, seed: u64) -> RequestOptions {
    let sampler = SamplerOptions {
        temperature: 0.9,
        top_p: 0.95,
        presence_penalty: 0.3,
        frequency_penalty: 0.2,
        penalty_decay: 0.99,
        seed: Some(seed),
        ..SamplerOptions::default()
    };
    RequestOptions { max_tokens, stop_token, sampler, ..RequestOptions::default() }
}

/// What a batch run gives each request: its tokens, how it finished, its state when it left.
type Outcome = (Vec<u32>, Option<Finish>, State);

/// Runs `requests` to the end in a batch of `steps` decode steps per submit.
fn run(engine: &Engine, prompts: &[Vec<u32>], requests: &[RequestOptions], steps: usize) -> Vec<Outcome> {
    let mut batch = Batch::new(engine);
    batch.set_steps_per_submit(steps).unwrap();
    for (prompt, options) in prompts.iter().zip(requests) {
        batch.add(prompt.clone(), options.clone()).unwrap();
    }
    let mut tokens = vec![Vec::new(); requests.len()];
    let mut finishes = vec![None; requests.len()];
    let mut states: Vec<Option<State>> = vec![None; requests.len()];
    while !batch.is_empty() {
        for event in batch.step().unwrap() {
            match event {
                BatchEvent::Token { request, token, .. } => tokens[request as usize].push(token),
                BatchEvent::Finished { request, finish } => finishes[request as usize] = Some(finish),
                BatchEvent::Checkpoint { .. } => panic!("no checkpoint was asked for"),
            }
        }
        for Left { request, session, .. } in batch.take_finished() {
            states[request as usize] = Some(session.state().unwrap());
        }
    }
    let states = states.into_iter().map(|s| s.expect("every request finished"));
    tokens.into_iter().zip(finishes).zip(states).map(|((t, f), s)| (t, f, s)).collect()
}

fn assert_same_state(what: &str, found: &State, expected: &State) {
    for (layer, (f, e)) in found.layers.iter().zip(&expected.layers).enumerate() {
        assert!(
            f.att_x == e.att_x && f.wkv == e.wkv && f.ffn_x == e.ffn_x,
            "{what}: layer {layer}'s state differs from one step per submit"
        );
    }
}

fn prompts(engine: &Engine, lengths: &[usize]) -> Vec<Vec<u32>> {
    let vocab = engine.model().config.vocab as u64;
    let mut rng = Rng::new(3);
    lengths.iter().map(|&n| (0..n).map(|_| (rng.next_u64() % vocab) as u32).collect()).collect()
}

/// Three requests whose prompts take different numbers of steps to read, so that they start
/// generating at different steps and reach their limits at different blocks: the same tokens
/// and states as one decode step per submit, in fewer submits.
#[test]
fn a_batch_in_blocks_gives_the_tokens_and_states_of_single_steps() {
    let engine = engine();
    let prompts = prompts(&engine, &[20, 3, 40]);
    let requests = [request(19, None, 1), request(19, None, 2), request(19, None, 3)];
    engine.reset_counters();
    let single = run(&engine, &prompts, &requests, 1);
    let single_submits = engine.counters().submits;
    engine.reset_counters();
    let blocks = run(&engine, &prompts, &requests, 8);
    let block_submits = engine.counters().submits;
    for (index, (found, expected)) in blocks.iter().zip(&single).enumerate() {
        assert_eq!(found.0, expected.0, "request {index}: other tokens");
        assert_eq!((found.0.len(), found.1.clone()), (19, Some(Finish::MaxTokens)), "request {index}");
        assert_same_state(&format!("request {index}"), &found.2, &expected.2);
    }
    assert!(
        block_submits * 2 < single_submits,
        "{block_submits} submits in blocks, {single_submits} one by one"
    );
}

/// A request that meets its stop token inside a block ends there, with the state after exactly
/// the tokens it returned.
#[test]
fn a_stop_token_inside_a_block_ends_the_request_with_its_state() {
    let engine = engine();
    let prompts = prompts(&engine, &[7]);
    let free = run(&engine, &prompts, &[request(30, None, 9)], 1);
    let tokens = &free[0].0;
    // A token first generated at a position that is not a block's last.
    let stop = (2..tokens.len())
        .map(|i| (i, tokens[i]))
        .find(|&(i, t)| !tokens[..i].contains(&t) && i % 8 != 0)
        .map(|(_, t)| t)
        .expect("a token that appears first mid-block");
    let single = run(&engine, &prompts, &[request(30, Some(stop), 9)], 1);
    let blocks = run(&engine, &prompts, &[request(30, Some(stop), 9)], 8);
    assert_eq!(blocks[0].0, single[0].0);
    assert_eq!(*blocks[0].0.last().unwrap(), stop);
    assert_eq!(blocks[0].1, Some(Finish::EndOfText));
    assert_same_state("stopped inside a block", &blocks[0].2, &single[0].2);
}

/// A request taken out after fewer tokens than its last block generated (a stop string ended
/// it) leaves with the state after exactly those tokens, also when the block finished it; more
/// than it generated is an error (and it leaves).
#[test]
fn removing_a_request_inside_a_block_rewinds_its_state() {
    let engine = engine();
    let prompts = prompts(&engine, &[5]);
    let state_after = |steps: usize, keep: usize| {
        let mut batch = Batch::new(&engine);
        batch.set_steps_per_submit(steps).unwrap();
        let id = batch.add(prompts[0].clone(), request(30, None, 4)).unwrap();
        let mut generated = 0;
        while generated < keep {
            generated +=
                batch.step().unwrap().iter().filter(|e| matches!(e, BatchEvent::Token { .. })).count();
        }
        batch.remove_after(id, keep).unwrap().expect("in the batch").session.state().unwrap()
    };
    // One token from the prompt's step, then blocks of 8: 6 lies inside the first block.
    let expected = state_after(1, 6);
    assert_same_state("removed inside a block", &state_after(8, 6), &expected);
    // The same when that block also finished the request (its 9 tokens are its limit), before
    // the batch hands it back.
    let mut batch = Batch::new(&engine);
    let id = batch.add(prompts[0].clone(), request(9, None, 4)).unwrap();
    while !batch.step().unwrap().iter().any(|e| matches!(e, BatchEvent::Finished { .. })) {}
    let left = batch.remove_after(id, 6).unwrap().expect("finished in the last step");
    assert_same_state("finished, then removed inside its block", &left.session.state().unwrap(), &expected);
    assert!(batch.take_finished().is_empty());
    // Tokens never generated: an error, and the request leaves all the same.
    let id = batch.add(prompts[0].clone(), request(30, None, 4)).unwrap();
    batch.step().unwrap();
    assert!(batch.remove_after(id, 2).is_err(), "removed after tokens never generated");
    assert!(batch.is_empty());
    assert!(Batch::new(&engine).set_steps_per_submit(17).is_err());
}
