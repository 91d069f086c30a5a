//! Constrained decoding: generated text follows its JSON schema, grammar or regular expression on
//! the byte-level demo model and on a model of the World vocabulary (65536 tokens), sampled with
//! several seeds; the mask agrees with the library's own token checker; a mask that allows every
//! token changes nothing; bad grammars are errors before any token.

mod common;

use std::sync::Arc;

use rwkv_wgpu::grammar::{Grammar, Grammars};
use rwkv_wgpu::model::synthetic::{Shape, SyntheticV7};
use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::runtime::{
    Batch, BatchEvent, Engine, EngineOptions, Finish, GenerateOptions, RequestOptions, SamplerOptions,
    Session,
};
use rwkv_wgpu::tokenizer::{Tokenizer, WorldTokenizer};
use rwkv_wgpu::Error;
use serde_json::{json, Value};

fn demo() -> (Engine, Tokenizer) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let gpu = Arc::new(common::default_gpu());
    let model =
        Model::load(gpu, &root.join("assets/demo/model.safetensors"), &LoadOptions::default()).unwrap();
    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 4, chunk: 32 }).unwrap();
    (engine, Tokenizer::from_file(&root.join("assets/demo/tokenizer.json")).unwrap())
}

/// A random-weight RWKV-7 with the World vocabulary: without the mask it would write noise.
fn world() -> (Engine, Tokenizer) {
    let gpu = Arc::new(common::default_gpu());
    let source = SyntheticV7::new(Shape::rwkv7(1, 64, 65536, 32), 11);
    let model = Model::from_source(gpu, &source, &LoadOptions::default()).unwrap();
    let engine = Engine::new(Arc::new(model), EngineOptions { slots: 4, chunk: 32 }).unwrap();
    (engine, Tokenizer::world().unwrap())
}

/// A person: a short name, an age, up to three tags from a list. (JSON comes compact, so that
/// even a random model's text ends within the token limit.)
fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3}
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    })
}

/// The schema's checks, by hand.
fn assert_person(text: &str) {
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    let object = value.as_object().unwrap_or_else(|| panic!("not an object: {text:?}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["age", "name", "tags"], "{text:?}");
    assert!(object["name"].as_str().is_some_and(|name| name.chars().count() <= 8), "{text:?}");
    assert!(object["age"].as_u64().is_some_and(|age| age <= 150), "{text:?}");
    let tags = object["tags"].as_array().unwrap_or_else(|| panic!("tags: {text:?}"));
    assert!(tags.len() <= 3, "{text:?}");
    assert!(tags.iter().all(|t| matches!(t.as_str(), Some("red" | "green" | "blue"))), "{text:?}");
}

fn generate(
    engine: &Engine,
    tokenizer: &Tokenizer,
    prompt: &str,
    options: &GenerateOptions,
) -> (String, Finish) {
    let mut session = Session::new(engine).unwrap();
    let mut generation = session.generate(tokenizer, prompt, options).unwrap();
    let text: String = generation.by_ref().map(|piece| piece.unwrap().text).collect();
    (text, generation.finish().unwrap_or(Finish::MaxTokens))
}

fn sampled(seed: u64) -> SamplerOptions {
    SamplerOptions { greedy: false, temperature: 1.0, seed: Some(seed), ..SamplerOptions::default() }
}

#[test]
fn generated_json_validates_against_its_schema() {
    for (name, (engine, tokenizer)) in [("demo", demo()), ("World vocabulary", world())] {
        let grammars = Grammars::new(&tokenizer, engine.model().config.vocab).unwrap();
        let grammar = grammars.compile(&Grammar::JsonSchema(person_schema())).unwrap();
        for seed in 1..=4 {
            let options = GenerateOptions {
                max_tokens: 400,
                sampler: sampled(seed),
                grammar: Some(grammar.clone()),
                ..GenerateOptions::default()
            };
            let (text, finish) = generate(&engine, &tokenizer, "Person: ", &options);
            assert_eq!(finish, Finish::EndOfText, "{name}, seed {seed}: {text:?}");
            assert_person(&text);
        }
    }
}

#[test]
fn regular_expressions_and_grammars_shape_the_text() {
    let (engine, tokenizer) = demo();
    let grammars = Grammars::new(&tokenizer, engine.model().config.vocab).unwrap();
    let lark = "start: greeting \" \" name \"!\"\ngreeting: \"Hail\" | \"Farewell\"\nname: /[A-Z][a-z]{2,6}/";
    for (grammar, check) in [
        (
            Grammar::Regex("(yes|no), my lord".into()),
            &(|t: &str| t == "yes, my lord" || t == "no, my lord") as &dyn Fn(&str) -> bool,
        ),
        (Grammar::Regex("[0-9]{3}-[0-9]{4}".into()), &|t: &str| {
            t.len() == 8 && t.char_indices().all(|(i, c)| if i == 3 { c == '-' } else { c.is_ascii_digit() })
        }),
        (Grammar::Lark(lark.into()), &|t: &str| {
            let rest = t.strip_prefix("Hail ").or_else(|| t.strip_prefix("Farewell "));
            rest.and_then(|r| r.strip_suffix('!')).is_some_and(|name| {
                (3..=7).contains(&name.len())
                    && name.starts_with(|c: char| c.is_ascii_uppercase())
                    && name[1..].chars().all(|c| c.is_ascii_lowercase())
            })
        }),
    ] {
        let compiled = grammars.compile(&grammar).unwrap();
        for seed in 1..=3 {
            let options = GenerateOptions {
                max_tokens: 100,
                sampler: sampled(seed),
                grammar: Some(compiled.clone()),
                ..GenerateOptions::default()
            };
            let (text, finish) = generate(&engine, &tokenizer, "KING: ", &options);
            assert!(check(&text), "{grammar:?}, seed {seed}: {text:?}");
            assert_eq!(finish, Finish::EndOfText, "{grammar:?}, seed {seed}: {text:?}");
        }
    }
}

/// Along texts the grammar accepts, every token the mask allows is one the library's
/// token-by-token checker accepts, and every token it leaves out (all of them for the demo
/// vocabulary, a sample of the World one's) is one the checker refuses.
#[test]
fn the_mask_agrees_with_the_library_checker() {
    let mut rng = common::Rng::new(5);
    for (tokenizer, vocab) in [
        (
            Tokenizer::from_file(
                &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/tokenizer.json"),
            )
            .unwrap(),
            256,
        ),
        (Tokenizer::world().unwrap(), 65536),
    ] {
        let grammars = Grammars::new(&tokenizer, vocab).unwrap();
        for grammar in [Grammar::JsonSchema(person_schema()), Grammar::JsonSchema(json!({"type": "object"}))]
        {
            let compiled = grammars.compile(&grammar).unwrap();
            for _ in 0..3 {
                let constraint = compiled.start();
                let mut steps = 0;
                while !constraint.is_finished() && steps < 60 {
                    let allowed = constraint.allowed_list().unwrap();
                    assert!(!allowed.is_empty() || constraint.is_finished(), "{grammar:?}: no token allowed");
                    let outside: Vec<u32> =
                        (0..vocab as u32).filter(|t| allowed.binary_search(t).is_err()).collect();
                    let sample = |list: &[u32], rng: &mut common::Rng| -> Vec<u32> {
                        if list.len() <= 300 {
                            list.to_vec()
                        } else {
                            (0..300).map(|_| list[rng.next_u64() as usize % list.len()]).collect()
                        }
                    };
                    for token in sample(&allowed, &mut rng) {
                        if token != compiled.end_token() {
                            assert!(
                                constraint.accepts(token).unwrap(),
                                "{grammar:?}: the mask allows {token}, the checker refuses it"
                            );
                        }
                    }
                    for token in sample(&outside, &mut rng) {
                        assert!(
                            !constraint.accepts(token).unwrap(),
                            "{grammar:?}: the mask leaves out {token}, the checker accepts it"
                        );
                    }
                    let text_tokens: Vec<u32> =
                        allowed.iter().copied().filter(|&t| t != compiled.end_token()).collect();
                    if text_tokens.is_empty() {
                        break;
                    }
                    constraint.accept(text_tokens[rng.next_u64() as usize % text_tokens.len()]).unwrap();
                    steps += 1;
                }
            }
        }
    }
}

/// A grammar that admits any ASCII text leaves a sampled generation as it was, token for token.
#[test]
fn a_mask_that_allows_everything_changes_nothing() {
    let (engine, tokenizer) = demo();
    let grammars = Grammars::new(&tokenizer, engine.model().config.vocab).unwrap();
    let anything = grammars.compile(&Grammar::Regex("[\\x00-\\x7f]*".into())).unwrap();
    for seed in [3, 4] {
        let free = GenerateOptions { max_tokens: 60, sampler: sampled(seed), ..GenerateOptions::default() };
        let (text, _) = generate(&engine, &tokenizer, "ROMEO: ", &free);
        assert!(text.is_ascii(), "the check needs ASCII text: {text:?}");
        let constrained = GenerateOptions { grammar: Some(anything.clone()), ..free.clone() };
        assert_eq!(generate(&engine, &tokenizer, "ROMEO: ", &constrained).0, text, "seed {seed}");
    }
}

#[test]
fn bad_grammars_are_errors_that_name_the_problem() {
    let (engine, tokenizer) = demo();
    let grammars = Grammars::new(&tokenizer, engine.model().config.vocab).unwrap();
    for (grammar, kind) in [
        (Grammar::JsonSchema(json!({"type": "nonsense"})), "JSON schema"),
        (Grammar::JsonSchema(json!({"type": "string", "minLength": 5, "maxLength": 2})), "JSON schema"),
        (Grammar::Lark("start: (".into()), "grammar"),
        (Grammar::Regex("[a-".into()), "regular expression"),
    ] {
        match grammars.compile(&grammar) {
            Err(error @ Error::Grammar(_)) => {
                assert!(error.to_string().contains(kind), "{grammar:?}: {error}")
            }
            other => panic!("{grammar:?}: expected a grammar error, got {other:?}"),
        }
    }
}

/// In one batch, each request follows its own grammar (or none), and each constrained step
/// submits its sampling apart from its forward pass.
#[test]
fn each_request_of_a_batch_follows_its_own_grammar() {
    let (engine, tokenizer) = demo();
    let grammars = Grammars::new(&tokenizer, engine.model().config.vocab).unwrap();
    let digits = grammars.compile(&Grammar::Regex("[0-9]{5}".into())).unwrap();
    let person = grammars.compile(&Grammar::JsonSchema(person_schema())).unwrap();
    let mut batch = Batch::new(&engine);
    let mut texts = vec![Vec::new(); 3];
    for (grammar, seed) in [(Some(digits), 1), (Some(person), 2), (None, 3)] {
        let options = RequestOptions {
            max_tokens: 300,
            stop_token: None,
            sampler: sampled(seed),
            grammar,
            ..RequestOptions::default()
        };
        batch.add(tokenizer.encode("Number: ").unwrap(), options).unwrap();
    }
    let mut finishes = vec![None; 3];
    engine.reset_counters();
    let (mut steps, mut split) = (0, 0);
    while !batch.is_empty() {
        steps += 1;
        split += u64::from(finishes[0].is_none() || finishes[1].is_none());
        for event in batch.step().unwrap() {
            match event {
                BatchEvent::Token { request, token, .. } => texts[request as usize].push(token),
                BatchEvent::Finished { request, finish } => finishes[request as usize] = Some(finish),
                BatchEvent::Checkpoint { .. } => {}
            }
        }
    }
    let text = |i: usize| tokenizer.decode(&texts[i]).unwrap();
    assert!(text(0).len() == 5 && text(0).bytes().all(|b| b.is_ascii_digit()), "{:?}", text(0));
    assert_eq!(finishes[0], Some(Finish::EndOfText));
    assert_person(&text(1));
    assert_eq!(finishes[1], Some(Finish::EndOfText));
    assert_eq!((texts[2].len(), &finishes[2]), (300, &Some(Finish::MaxTokens)));
    assert!(split > 5, "the constrained requests ran {split} steps");
    assert_eq!(engine.counters().submits, steps + split, "a constrained step submits its sampling apart");
}

/// A tokenizer whose tokens' bytes are unknown (word-level, no byte decoder) cannot constrain:
/// a clear error, not a wrong mask.
#[test]
fn a_tokenizer_without_token_bytes_is_an_error() {
    let path = common::fixture_dir("tokenizer", "").join("hf_word_level.json");
    let tokenizer = Tokenizer::from_file(&path).unwrap();
    match Grammars::new(&tokenizer, tokenizer.vocab_size()) {
        Err(error @ Error::Grammar(_)) => {
            assert!(error.to_string().contains("bytes of each token"), "{error}")
        }
        other => panic!("expected a grammar error, got {:?}", other.map(|_| ())),
    }
}

/// A vocabulary that the grammar library cannot index (here one with a token of 4 KiB) is an
/// error when grammars are set up, not a panic.
#[test]
fn a_vocabulary_the_grammar_library_cannot_index_is_an_error() {
    // Every byte is a token, as the format requires (from 0x80 on, as bytes literals).
    let mut text: String = (0..=255u32)
        .map(|b| format!("{} {}'\\x{b:02x}' 1\n", b + 1, if b < 128 { "" } else { "b" }))
        .collect();
    text += &format!("257 '{}' 4096\n", "a".repeat(4096));
    let tokenizer = Tokenizer::World(WorldTokenizer::from_vocab_text(&text).unwrap());
    let error = Grammars::new(&tokenizer, 258).expect_err("the vocabulary was indexed");
    assert!(matches!(error, Error::Grammar(_)), "{error}");
}
