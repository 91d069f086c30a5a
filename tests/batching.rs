//! Many sequences in one step, long prompts through prefill, and states as values: each
//! sequence's logits must equal what it gets alone, one token at a time.

mod common;

use std::sync::Arc;

use common::{fixture_dir, load_f32, load_tokens, relative_error, Rng};
use rwkv_wgpu::gpu::{Gpu, GpuOptions};
use rwkv_wgpu::model::source;
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{
    Batch, BatchEvent, Engine, EngineOptions, Finish, Logits, RequestOptions, Session, State, Work,
    STEP_CACHE_CAPACITY,
};

/// Batched and chunked paths against the one-token path: the same f32 math in other orders.
const BOUND: f64 = 1e-4;

const VERSIONS: [(&str, &str); 6] =
    [("v4", "A"), ("v5.0", "A"), ("v5.1", "A"), ("v5.2", "A"), ("v6", "A"), ("v7", "tiny")];

fn engine(gpu: &Arc<Gpu>, version: &str, case: &str, options: EngineOptions) -> Engine {
    let path = fixture_dir(version, case).join("model-f16.safetensors");
    let model = Model::load(gpu.clone(), &path, &LoadOptions::default()).unwrap();
    Engine::new(Arc::new(model), options).unwrap()
}

/// The logits after every token, one token per step.
fn one_at_a_time(engine: &Engine, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut session = Session::new(engine).unwrap();
    tokens.iter().map(|&t| session.feed(&[t]).unwrap()).collect()
}

fn random_tokens(rng: &mut Rng, vocab: usize, count: usize) -> Vec<u32> {
    (0..count).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()
}

/// Continuous batching: a long prompt read in chunks shares steps with a sequence generating one
/// token per step, a third joins late and leaves early, and a fourth reuses its slot and then
/// shares steps of one token per sequence with the second; also with the fused one-token kernels
/// GPUs run.
#[test]
fn batched_sequences_match_running_alone() {
    let fused = GpuOptions { fused_decode: Some(true), ..common::default_options() };
    for options in [common::default_options(), fused] {
        let gpu = Arc::new(Gpu::new(&options).unwrap());
        for (version, case) in VERSIONS {
            let engine = engine(&gpu, version, case, EngineOptions { slots: 3, chunk: 16 });
            let vocab = engine.model().config.vocab;
            let mut rng = Rng::new(77);
            // (tokens, tokens per step, step it joins at)
            let plans: [(Vec<u32>, usize, usize); 4] = [
                (random_tokens(&mut rng, vocab, 40), 7, 0),
                (random_tokens(&mut rng, vocab, 12), 1, 0),
                (random_tokens(&mut rng, vocab, 9), 5, 2),
                (random_tokens(&mut rng, vocab, 6), 1, 5),
            ];
            let alone: Vec<Vec<Vec<f32>>> =
                plans.iter().map(|(tokens, _, _)| one_at_a_time(&engine, tokens)).collect();

            let mut sessions: Vec<Option<Session>> = (0..plans.len()).map(|_| None).collect();
            let mut fed = vec![0usize; plans.len()];
            for step in 0.. {
                // Join: a session opens when its plan starts; slots are freed when sessions finish.
                for (index, (_, _, start)) in plans.iter().enumerate() {
                    if step == *start {
                        sessions[index] = Some(Session::new(&engine).unwrap());
                    }
                }
                let active: Vec<usize> = (0..plans.len())
                    .filter(|&i| sessions[i].is_some() && fed[i] < plans[i].0.len())
                    .collect();
                if active.is_empty() && step > 5 {
                    break;
                }
                let work: Vec<Work> = active
                    .iter()
                    .map(|&i| {
                        let (tokens, per_step, _) = &plans[i];
                        let end = (fed[i] + per_step).min(tokens.len());
                        Work::new(sessions[i].as_ref().unwrap().slot(), &tokens[fed[i]..end], Logits::All)
                    })
                    .collect();
                if work.is_empty() {
                    continue;
                }
                let results = engine.step(&work).unwrap();
                for (&i, (item, output)) in active.iter().zip(work.iter().zip(&results)) {
                    for (t, row) in output.logits.chunks_exact(vocab).enumerate() {
                        let position = fed[i] + t;
                        let error = relative_error(row, &alone[i][position]);
                        assert!(
                        error <= BOUND,
                        "{version}, {options:?}: sequence {i} position {position} in step {step}: {error:.2e}"
                    );
                    }
                    fed[i] += item.tokens.len();
                    if fed[i] == plans[i].0.len() {
                        sessions[i] = None;
                    }
                }
            }
            assert!(
                fed.iter().zip(&plans).all(|(&fed, plan)| fed == plan.0.len()),
                "{version}: not every sequence finished"
            );
        }
    }
}

/// More than 2000 tokens through prefill in chunks of 256 and 300 match the one-token path at
/// every position, across many chunk boundaries.
#[test]
fn long_prompt_through_prefill_matches_one_token_path() {
    let gpu = Arc::new(common::default_gpu());
    for (version, case) in [("v7", "tiny"), ("v6", "A")] {
        let engine = engine(&gpu, version, case, EngineOptions { slots: 1, chunk: 256 });
        let vocab = engine.model().config.vocab;
        let tokens = random_tokens(&mut Rng::new(2048), vocab, 2100);
        let alone = one_at_a_time(&engine, &tokens);
        for chunk in [256, 300] {
            let engine = Engine::new(engine.model().clone(), EngineOptions { slots: 1, chunk }).unwrap();
            let mut session = Session::new(&engine).unwrap();
            let all = session.feed_positions(&tokens).unwrap();
            for (position, expected) in alone.iter().enumerate() {
                let error = relative_error(&all[position * vocab..(position + 1) * vocab], expected);
                assert!(error <= BOUND, "{version} chunk {chunk}: position {position}: {error:.2e} × std");
            }
        }
    }
}

#[test]
fn forked_sessions_continue_independently() {
    let gpu = Arc::new(common::default_gpu());
    for (version, case) in VERSIONS {
        let engine = engine(&gpu, version, case, EngineOptions { slots: 4, chunk: 8 });
        let mut original = Session::new(&engine).unwrap();
        original.feed(&[1, 2, 3, 4, 5]).unwrap();
        let mut fork = original.fork().unwrap();
        let from_original = original.feed(&[9, 8, 7]).unwrap();
        // The original moved on; the fork still holds the state after 1..5.
        assert_eq!(fork.feed(&[9, 8, 7]).unwrap(), from_original, "{version}");
        let mut fresh = Session::new(&engine).unwrap();
        let expected = fresh.feed(&[1, 2, 3, 4, 5, 9, 8, 7]).unwrap();
        assert!(
            relative_error(&from_original, &expected) <= BOUND,
            "{version}: fork differs from reading it all"
        );
    }
}

#[test]
fn states_round_trip_through_files() {
    let gpu = Arc::new(common::default_gpu());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("states");
    std::fs::create_dir_all(&dir).unwrap();
    for (version, case) in VERSIONS {
        let engine = engine(&gpu, version, case, EngineOptions { slots: 2, chunk: 8 });
        let mut session = Session::new(&engine).unwrap();
        session.feed(&[3, 1, 4, 1, 5]).unwrap();
        let state = session.state().unwrap();
        let path = dir.join(format!("{version}.state"));
        state.save(&path).unwrap();
        let loaded = State::load(&path).unwrap();
        assert_eq!(loaded, state, "{version}");
        let expected = session.feed(&[9, 2, 6]).unwrap();
        let mut restored = Session::new(&engine).unwrap();
        restored.set_state(&loaded).unwrap();
        assert_eq!(restored.feed(&[9, 2, 6]).unwrap(), expected, "{version}");
    }
}

/// Found by the state fuzz target (`tools/fuzz.sh`, seeded with this file, a state of the v7/tiny
/// fixture saved by `chat --save-state`): writing one state twice gave different bytes, because
/// the metadata came out in hash order. A state must always give the same bytes, and read back
/// equal.
#[test]
fn a_state_file_is_byte_stable() {
    let seed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz/state-hash-order.state");
    let state = State::from_bytes("seed", &std::fs::read(seed).unwrap()).unwrap();
    let bytes = state.to_bytes().unwrap();
    for _ in 0..8 {
        let again = State::from_bytes("again", &bytes).unwrap();
        assert_eq!(again, state);
        assert_eq!(again.to_bytes().unwrap(), bytes);
    }
}

#[test]
fn a_state_from_another_model_is_refused() {
    let gpu = Arc::new(common::default_gpu());
    let v6 = engine(&gpu, "v6", "A", EngineOptions { slots: 1, chunk: 8 });
    let v7 = engine(&gpu, "v7", "tiny", EngineOptions { slots: 1, chunk: 8 });
    let state = Session::new(&v7).unwrap().state().unwrap();
    let error = Session::new(&v6).unwrap().set_state(&state).unwrap_err();
    assert!(error.to_string().contains("this state belongs to another model: RWKV-7"), "{error}");
    // A layer after the first holding more values than the model's (it would spill into the
    // next slot).
    let mut wider = state.clone();
    let extra = wider.layers[1].wkv.clone();
    wider.layers[1].wkv.extend(extra);
    let error = Session::new(&v7).unwrap().set_state(&wider).unwrap_err();
    assert!(error.to_string().contains("state layer 1"), "{error}");

    let error = State::from_bytes("junk.state", b"not a state").unwrap_err();
    assert!(error.to_string().contains("junk.state"), "{error}");
}

/// A state-tuned RWKV-6: the official package starting from `time_state` tensors
/// (tools/make_state_fixture.py) against our session starting from the same tensors.
#[test]
fn time_state_matches_the_official_package() {
    let gpu = Arc::new(common::default_gpu());
    // The fixture ran on the weights in f32 (an f16 file's embedding is normalized in f16).
    let path = fixture_dir("v6", "A").join("model-f32.safetensors");
    let model = Model::load(gpu.clone(), &path, &LoadOptions::default()).unwrap();
    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 1, chunk: 8 }).unwrap();
    let dir = fixture_dir("state", "v6-time-state");
    let tuned = source::open(&dir.join("time_state.safetensors")).unwrap();
    let state = State::from_time_state(&engine.model().config, tuned.as_ref()).unwrap();
    let tokens = load_tokens(&dir.join("tokens.npy"));
    let (shape, official) = load_f32(&dir.join("logits.npy"));
    let vocab = shape[1];
    let mut session = Session::new(&engine).unwrap();
    session.set_state(&state).unwrap();
    let ours = session.feed_positions(&tokens).unwrap();
    for position in 0..tokens.len() {
        let at = position * vocab..(position + 1) * vocab;
        let error = relative_error(&ours[at.clone()], &official[at]);
        assert!(error <= 1e-3, "position {position}: {error:.2e} × std");
    }
}

/// `step_async` leaves its thread while the GPU works (the device's waiting thread blocks
/// instead): its first poll is pending, where a blocking wait inside it would have finished the
/// whole step. Two steps awaited together on one thread, as an async server's tasks would be,
/// both finish, the second awaiting the engine's lock while the first awaits the GPU, and each
/// gives what it gives alone.
#[test]
fn step_async_leaves_the_thread_while_the_gpu_works() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let gpu = Arc::new(common::default_gpu());
    let engine = engine(&gpu, "v7", "tiny", EngineOptions { slots: 4, chunk: 8 });
    let (first, second): (Vec<u32>, Vec<u32>) = ((0..7).map(|i| i * 11).collect(), vec![5, 9, 13]);
    let alone: Vec<Vec<f32>> =
        [&first, &second].map(|tokens| Session::new(&engine).unwrap().feed(tokens).unwrap()).into();
    // A blocking step is never pending. A non-blocking one is pending unless the GPU finished
    // and its waiting thread ran before the first poll returned, which a loaded machine can
    // allow once: so the step must be pending in one of a few tries.
    let mut pending = 0;
    for _ in 0..5 {
        let (a, b) = (Session::new(&engine).unwrap(), Session::new(&engine).unwrap());
        let work_a = [Work::new(a.slot(), &first, Logits::Last)];
        let work_b = [Work::new(b.slot(), &second, Logits::Last)];
        let mut step = std::pin::pin!(engine.step_async(&work_a));
        let first_poll = step.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        let (out_a, out_b) = match first_poll {
            Poll::Pending => {
                pending += 1;
                pollster::block_on(futures_util::future::join(step, engine.step_async(&work_b)))
            }
            Poll::Ready(out_a) => (out_a, pollster::block_on(engine.step_async(&work_b))),
        };
        assert_eq!(out_a.unwrap()[0].logits, alone[0]);
        assert_eq!(out_b.unwrap()[0].logits, alone[1]);
    }
    assert!(pending > 0, "the step never waited for the GPU off its thread");
}

/// An engine keeps at most STEP_CACHE_CAPACITY recorded steps (a server meets a new shape with
/// every prompt's last chunk): prompts of 40 lengths, a shape each, leave it full, and a shape
/// evicted and recorded again gives the same logits.
#[test]
fn the_step_cache_is_bounded() {
    let gpu = Arc::new(common::default_gpu());
    let engine = engine(&gpu, "v7", "tiny", EngineOptions { slots: 1, chunk: 64 });
    let tokens: Vec<u32> = (0..64).map(|i| i * 5 % 200).collect();
    let first = Session::new(&engine).unwrap().feed(&tokens[..1]).unwrap();
    for len in 2..=STEP_CACHE_CAPACITY + 8 {
        Session::new(&engine).unwrap().feed(&tokens[..len]).unwrap();
        assert!(engine.recorded_steps() <= STEP_CACHE_CAPACITY);
    }
    assert_eq!(engine.recorded_steps(), STEP_CACHE_CAPACITY);
    let again = Session::new(&engine).unwrap().feed(&tokens[..1]).unwrap();
    assert_eq!(first, again, "a step recorded again after its eviction");
}

#[test]
fn bad_steps_are_errors() {
    let gpu = Arc::new(common::default_gpu());
    let engine = engine(&gpu, "v7", "tiny", EngineOptions { slots: 2, chunk: 4 });
    let session = Session::new(&engine).unwrap();
    let slot = session.slot();
    let too_long = [1u32; 5];
    let cases: [(&[Work], &str); 4] = [
        (&[Work::new(slot, &too_long, Logits::Last)], "exceeds"),
        (&[Work::new(1, &[1], Logits::Last)], "not allocated"),
        (&[Work::new(9, &[1], Logits::Last)], "out of range"),
        (&[Work::new(slot, &[1], Logits::Last), Work::new(slot, &[2], Logits::Last)], "twice"),
    ];
    for (work, expected) in cases {
        let error = engine.step(work).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
    let _second = Session::new(&engine).unwrap();
    let error = Session::new(&engine).err().expect("a third session on two slots").to_string();
    assert!(error.contains("all 2 state slots are in use"), "{error}");
}

/// The continuous-batching scheduler: requests of different prompt lengths and limits, greedy,
/// generate exactly what each generates alone.
#[test]
fn batch_scheduler_generates_what_each_request_generates_alone() {
    let gpu = Arc::new(common::default_gpu());
    for (version, case) in [("v7", "tiny"), ("v5.2", "A")] {
        let engine = engine(&gpu, version, case, EngineOptions { slots: 3, chunk: 8 });
        let vocab = engine.model().config.vocab;
        let mut rng = Rng::new(5);
        let requests: Vec<(Vec<u32>, usize)> = vec![
            (random_tokens(&mut rng, vocab, 20), 6),
            (random_tokens(&mut rng, vocab, 3), 10),
            (random_tokens(&mut rng, vocab, 11), 4),
        ];
        let alone: Vec<Vec<u32>> = requests
            .iter()
            .map(|(prompt, max)| {
                let mut session = Session::new(&engine).unwrap();
                let mut logits = session.feed(prompt).unwrap();
                let mut tokens = Vec::new();
                for _ in 0..*max {
                    let best = (0..vocab).fold(0, |b, i| if logits[i] > logits[b] { i } else { b }) as u32;
                    tokens.push(best);
                    logits = session.feed(&[best]).unwrap();
                }
                tokens
            })
            .collect();
        let mut batch = Batch::new(&engine);
        let ids: Vec<u64> = requests
            .iter()
            .map(|(prompt, max)| {
                let options =
                    RequestOptions { max_tokens: *max, stop_token: None, ..RequestOptions::default() };
                batch.add(prompt.clone(), options).unwrap()
            })
            .collect();
        let mut generated: Vec<Vec<u32>> = vec![Vec::new(); ids.len()];
        let mut finished = 0;
        while !batch.is_empty() {
            for event in batch.step().unwrap() {
                match event {
                    BatchEvent::Token { request, token, .. } => generated[request as usize].push(token),
                    BatchEvent::Finished { finish, .. } => {
                        assert_eq!(finish, Finish::MaxTokens);
                        finished += 1;
                    }
                    BatchEvent::Checkpoint { .. } => panic!("no checkpoint was asked for"),
                }
            }
        }
        assert_eq!(finished, ids.len());
        assert_eq!(generated, alone, "{version}");
    }
}
