//! The generation API: iterator, callback and async stream agree with a plain greedy loop, and
//! stop strings, the length limit and cancellation end it where they should.

mod common;

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;

use common::fixture_dir;
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{generate_stream, Engine, EngineOptions, Finish, GenerateOptions, Session};
use rwkv_wgpu::tokenizer::Tokenizer;

fn setup() -> (Engine, Tokenizer) {
    let gpu = Arc::new(common::default_gpu());
    let model =
        Model::load(gpu, &fixture_dir("v7", "tiny").join("model-f16.safetensors"), &LoadOptions::default())
            .unwrap();
    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 4, chunk: 16 }).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/tokenizer.json");
    (engine, Tokenizer::from_file(&path).unwrap())
}

const PROMPT: &str = "Hello, world";

/// Greedy tokens by hand: feed the prompt, then argmax and feed back.
fn greedy_by_hand(engine: &Engine, tokenizer: &Tokenizer, count: usize) -> Vec<u32> {
    let mut session = Session::new(engine).unwrap();
    let mut logits = session.feed(&tokenizer.encode(PROMPT).unwrap()).unwrap();
    let mut tokens = Vec::new();
    for _ in 0..count {
        let best =
            (0..logits.len()).fold(0, |best, i| if logits[i] > logits[best] { i } else { best }) as u32;
        tokens.push(best);
        logits = session.feed(&[best]).unwrap();
    }
    tokens
}

#[test]
fn iterator_matches_greedy_loop_and_stops_at_max_tokens() {
    let (engine, tokenizer) = setup();
    let expected = greedy_by_hand(&engine, &tokenizer, 20);
    let mut session = Session::new(&engine).unwrap();
    let options = GenerateOptions { max_tokens: 20, ..GenerateOptions::default() };
    let mut generation = session.generate(&tokenizer, PROMPT, &options).unwrap();
    let pieces: Vec<_> = generation.by_ref().map(Result::unwrap).collect();
    assert_eq!(pieces.iter().map(|p| p.token).collect::<Vec<_>>(), expected);
    assert_eq!(generation.finish(), Some(Finish::MaxTokens));
    let text: String = pieces.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(text, tokenizer.decode(&expected).unwrap());
}

#[test]
fn stop_strings_end_the_text_before_them() {
    let (engine, tokenizer) = setup();
    let full = tokenizer.decode(&greedy_by_hand(&engine, &tokenizer, 30)).unwrap();
    // A stop string taken from the middle of what greedy decoding produces.
    let chars: Vec<char> = full.chars().collect();
    let stop: String = chars[10..12].iter().collect();
    let before = &full[..full.find(&stop).unwrap()];
    let mut session = Session::new(&engine).unwrap();
    let options = GenerateOptions { max_tokens: 30, stop: vec![stop.clone()], ..GenerateOptions::default() };
    let mut generation = session.generate(&tokenizer, PROMPT, &options).unwrap();
    let text: String = generation.by_ref().map(|p| p.unwrap().text).collect();
    assert_eq!(text, before);
    assert_eq!(generation.finish(), Some(Finish::Stop(stop)));
}

#[test]
fn cancelling_and_breaking_stop_the_generation() {
    let (engine, tokenizer) = setup();
    let mut session = Session::new(&engine).unwrap();
    let options = GenerateOptions { max_tokens: 50, ..GenerateOptions::default() };
    let cancel = options.cancel.clone();
    let mut generation = session.generate(&tokenizer, PROMPT, &options).unwrap();
    let mut count = 0;
    for piece in generation.by_ref() {
        piece.unwrap();
        count += 1;
        if count == 3 {
            cancel.cancel();
        }
    }
    assert_eq!(count, 3);
    assert_eq!(generation.finish(), Some(Finish::Cancelled));
    drop(generation);

    let mut seen = 0;
    let finish = session
        .generate_with(&tokenizer, PROMPT, &GenerateOptions::default(), |_| {
            seen += 1;
            if seen == 4 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!((seen, finish), (4, Finish::Cancelled));
}

#[test]
fn async_stream_yields_the_same_tokens() {
    let (engine, tokenizer) = setup();
    let expected = greedy_by_hand(&engine, &tokenizer, 12);
    let session = Session::new(&engine).unwrap();
    let options = GenerateOptions { max_tokens: 12, ..GenerateOptions::default() };
    let mut stream = Box::pin(generate_stream(session, Arc::new(tokenizer), PROMPT.into(), options));
    let tokens = pollster::block_on(async {
        let mut tokens = Vec::new();
        while let Some(piece) =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::as_mut(&mut stream), cx)).await
        {
            tokens.push(piece.unwrap().token);
        }
        tokens
    });
    assert_eq!(tokens, expected);
}
