//! The JavaScript API in a real browser (headless Chromium and Firefox through
//! wasm-bindgen-test-runner; see web/test.sh): the conformance test against the official
//! package's logits, generation, state and errors, called as a page would call them.
#![cfg(target_arch = "wasm32")]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

use js_sys::{Object, Reflect, Uint32Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

use rwkv_wgpu::npy::{self, Array};
use rwkv_wgpu_web::Model;

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/v7/", $path)).as_slice()
    };
}

/// A committed RWKV-7 fixture: its model files, and the official package's logits for its tokens
/// (forward one token at a time from the zero state).
struct Fixture {
    case: &'static str,
    files: &'static [(&'static str, &'static [u8])],
    tokens: &'static [u8],
    logits: &'static [u8],
}

const FIXTURES: [Fixture; 2] = [
    Fixture {
        case: "tiny",
        files: &[
            ("model.pth", fixture!("tiny/model.pth")),
            ("model-f16.safetensors", fixture!("tiny/model-f16.safetensors")),
            ("model-bf16.safetensors", fixture!("tiny/model-bf16.safetensors")),
            ("model-f32.safetensors", fixture!("tiny/model-f32.safetensors")),
        ],
        tokens: fixture!("tiny/tokens.npy"),
        logits: fixture!("tiny/logits.npy"),
    },
    Fixture {
        case: "small",
        files: &[
            ("model.pth", fixture!("small/model.pth")),
            ("model-f16.safetensors", fixture!("small/model-f16.safetensors")),
        ],
        tokens: fixture!("small/tokens.npy"),
        logits: fixture!("small/logits.npy"),
    },
];

/// The same bound as the native conformance test: at every position,
/// max |ours − official| ≤ 1e-3 × std(official logits).
const CONFORMANCE_BOUND: f64 = 1e-3;

static DEMO_MODEL: &[u8] = include_bytes!("../../assets/demo/model.safetensors");
static DEMO_TOKENIZER: &[u8] = include_bytes!("../../assets/demo/tokenizer.json");
/// The official package's greedy continuation of a prompt on the demo model
/// (tools/make_demo_fixtures.py), whose recorded top-1/top-2 margins (at least 2.5e-3) leave f32
/// rounding no room to flip a choice.
static DEMO_GREEDY: &str = include_str!("../../tests/fixtures/demo/greedy.json");

/// The official greedy fixture's prompt and continuation.
fn official_greedy() -> (String, String) {
    let fixture = js_sys::JSON::parse(DEMO_GREEDY).unwrap();
    (field(&fixture, "prompt").as_string().unwrap(), field(&fixture, "continuation").as_string().unwrap())
}

fn options(fields: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (key, value) in fields {
        Reflect::set(&object, &(*key).into(), value).unwrap();
    }
    object.into()
}

fn field(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &key.into()).unwrap()
}

fn message(error: JsError) -> String {
    JsValue::from(error).dyn_into::<js_sys::Error>().expect("a JavaScript Error").message().into()
}

async fn load(bytes: &[u8], fields: &[(&str, JsValue)]) -> Result<Model, String> {
    Model::load(Uint8Array::from(bytes), Some(options(fields).unchecked_into())).await.map_err(message)
}

async fn demo_model() -> Model {
    load(DEMO_MODEL, &[("tokenizer", Uint8Array::from(DEMO_TOKENIZER).into())]).await.unwrap()
}

fn greedy(max_tokens: usize) -> Option<rwkv_wgpu_web::GenerateOptionsArg> {
    Some(options(&[("greedy", true.into()), ("maxTokens", (max_tokens as f64).into())]).unchecked_into())
}

fn f32s(bytes: &[u8]) -> (Vec<usize>, Vec<f32>) {
    match npy::parse(bytes).unwrap() {
        Array::F32 { shape, data } => (shape, data),
        other => panic!("expected f32, got {other:?}"),
    }
}

fn token_ids(bytes: &[u8]) -> Vec<u32> {
    match npy::parse(bytes).unwrap() {
        Array::I64 { data, .. } => data.into_iter().map(|t| t as u32).collect(),
        other => panic!("expected integers, got {other:?}"),
    }
}

fn relative_error(found: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(found.len(), expected.len());
    if found.iter().any(|f| !f.is_finite()) {
        return f64::INFINITY;
    }
    let n = expected.len() as f64;
    let mean = expected.iter().map(|&e| f64::from(e)).sum::<f64>() / n;
    let std = (expected.iter().map(|&e| (f64::from(e) - mean).powi(2)).sum::<f64>() / n).sqrt();
    let worst =
        found.iter().zip(expected).map(|(&f, &e)| (f64::from(f) - f64::from(e)).abs()).fold(0.0, f64::max);
    worst / std.max(1e-12)
}

#[wasm_bindgen_test]
async fn logits_match_the_official_package() {
    for Fixture { case, files, tokens, logits } in FIXTURES {
        let tokens = token_ids(tokens);
        let (shape, official) = f32s(logits);
        let vocab = shape[1];
        // Every file on the default kernels, and the f16 file on the native-f16 kernels too where
        // the adapter has shader-f16 (Firefox; Chromium's software adapter has none and falls back).
        let native_f16 = files.iter().filter(|(file, _)| *file == "model-f16.safetensors");
        let runs = files
            .iter()
            .map(|&(file, bytes)| (file, bytes, None))
            .chain(native_f16.map(|&(f, b)| (f, b, Some(true))));
        for (file, bytes, f16) in runs {
            let mut fields = vec![("name", JsValue::from(file))];
            fields.extend(f16.map(|f16| ("f16", JsValue::from(f16))));
            let model = load(bytes, &fields).await.unwrap();
            let info = model.info();
            let mut worst: f64 = 0.0;
            for position in 0..tokens.len() {
                let ours = model.logits(Uint32Array::from(&tokens[..=position])).await.unwrap().to_vec();
                let error = relative_error(&ours, &official[position * vocab..(position + 1) * vocab]);
                assert!(
                    error <= CONFORMANCE_BOUND,
                    "{case}/{file}: position {position}: error {error:.2e} × std"
                );
                worst = worst.max(error);
            }
            console_log!(
                "{case}/{file} (f16 option {f16:?}) on {}, f16 kernels {}: worst logit error {worst:.2e} × std over {} positions",
                field(&info, "adapter").as_string().unwrap(),
                field(&info, "f16").as_bool().unwrap(),
                tokens.len()
            );
        }
    }
}

#[wasm_bindgen_test]
async fn info_describes_the_model() {
    let model = demo_model().await;
    let info = model.info();
    assert_eq!(field(&info, "version").as_string().unwrap(), "RWKV-7 (x070)");
    assert_eq!(field(&info, "layers").as_f64(), Some(4.0));
    assert_eq!(field(&info, "embd").as_f64(), Some(256.0));
    assert_eq!(field(&info, "vocab").as_f64(), Some(256.0));
    assert_eq!(field(&info, "format").as_string().unwrap(), "safetensors");
    assert_eq!(field(&info, "tokenizer").as_string().unwrap(), "tokenizer.json");
    assert_eq!(field(&info, "quant").as_string().unwrap(), "f16");
    assert!(field(&info, "f16").as_bool().is_some() && field(&info, "subgroups").as_bool() == Some(false));
}

#[wasm_bindgen_test]
async fn world_tokenizer_matches_the_official_one() {
    let model = load(fixture!("tiny/model-f16.safetensors"), &[]).await.unwrap();
    let text = "Hello, world! 你好 RWKV";
    // TRIE_TOKENIZER of the rwkv package 0.8.32 with rwkv_vocab_v20230424.txt.
    let official = [33155, 45, 40213, 34, 33, 10464, 11685, 4171, 1184];
    // The tiny model's vocabulary is 256 tokens: World ids beyond it are refused by name.
    let error = message(model.tokenize(text).unwrap_err());
    assert!(error.contains("outside the model's vocabulary of 256"), "{error}");
    let ids = Uint32Array::from(&official[..]);
    assert_eq!(model.detokenize(ids).unwrap(), text);
    assert_eq!(model.tokenize("a").unwrap().to_vec(), [98]);
}

#[wasm_bindgen_test]
async fn generates_what_the_cli_generates() {
    let model = demo_model().await;
    let pieces = js_sys::Array::new();
    let collect = Closure::<dyn FnMut(String, u32)>::new({
        let pieces = pieces.clone();
        move |text: String, _token: u32| {
            pieces.push(&text.into());
        }
    });
    let on_token = Some(collect.as_ref().clone().unchecked_into());
    let (prompt, continuation) = official_greedy();
    // The demo tokenizer is bytes: a token per character of this ASCII text.
    let expected: String = continuation.chars().take(40).collect();
    let result = model.generate(&prompt, greedy(40), on_token).await.unwrap();
    assert_eq!(field(&result, "text").as_string().unwrap(), expected);
    assert_eq!(pieces.join("").as_string().unwrap(), expected);
    assert_eq!(pieces.length(), 40);
    assert_eq!(field(&result, "tokens").as_f64(), Some(40.0));
    assert_eq!(field(&result, "promptTokens").as_f64(), Some(prompt.len() as f64));
    assert_eq!(field(&result, "finish").as_string().unwrap(), "maxTokens");
    console_log!(
        "demo model, 40 greedy tokens: {:.1} tokens/s",
        field(&result, "tokensPerSecond").as_f64().unwrap()
    );

    // Sampling is reproducible with a seed.
    let sampled = |seed: f64| {
        options(&[("seed", seed.into()), ("maxTokens", 30.0.into()), ("topK", 20.0.into())]).unchecked_into()
    };
    model.reset().unwrap();
    let first = model.generate("ROMEO:", Some(sampled(7.0)), None).await.unwrap();
    model.reset().unwrap();
    let again = model.generate("ROMEO:", Some(sampled(7.0)), None).await.unwrap();
    assert_eq!(field(&first, "text").as_string(), field(&again, "text").as_string());

    // A banned token never comes (the demo's tokens are bytes): greedy takes the next best.
    let first_byte = u32::from(expected.as_bytes()[0]);
    let banned = options(&[
        ("greedy", true.into()),
        ("maxTokens", 20.0.into()),
        ("bannedTokens", js_sys::Array::of1(&first_byte.into()).into()),
        ("logitBias", options(&[("32", (-1.5).into())])),
        ("minP", 0.05.into()),
        ("typicalP", 0.95.into()),
        ("penaltyDecay", 0.996.into()),
    ]);
    model.reset().unwrap();
    let result = model.generate(&prompt, Some(banned.unchecked_into()), None).await.unwrap();
    let text = field(&result, "text").as_string().unwrap();
    assert!(!text.as_bytes().contains(&(first_byte as u8)), "{text:?} holds a banned byte");
}

/// Constrained generation: JSON of a schema (given as an object), a regular expression, and
/// log-probabilities per token, through the result and `onToken`.
#[wasm_bindgen_test]
async fn follows_a_json_schema_and_reports_logprobs() {
    let model = demo_model().await;
    let schema = js_sys::JSON::parse(
        r#"{"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
            "age": {"type": "integer", "minimum": 0, "maximum": 99}},
            "required": ["name", "age"], "additionalProperties": false}"#,
    )
    .unwrap();
    for seed in [1.0, 2.0] {
        let fields = [("jsonSchema", schema.clone()), ("seed", seed.into()), ("maxTokens", 200.0.into())];
        model.reset().unwrap();
        let result = model.generate("ROMEO:", Some(options(&fields).unchecked_into()), None).await.unwrap();
        let text = field(&result, "text").as_string().unwrap();
        let value = js_sys::JSON::parse(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        assert!(field(&value, "name").as_string().is_some_and(|n| n.chars().count() <= 8), "{text}");
        assert!(
            field(&value, "age").as_f64().is_some_and(|a| (0.0..=99.0).contains(&a) && a.fract() == 0.0),
            "{text}"
        );
        assert_eq!(Object::keys(value.unchecked_ref::<Object>()).length(), 2, "{text}");
        assert_eq!(field(&result, "finish").as_string().unwrap(), "endOfText", "{text}");
    }
    model.reset().unwrap();
    let digits = options(&[("regex", "[0-9]{3}-[0-9]{2}".into()), ("seed", 3.0.into())]);
    let result = model.generate("ROMEO:", Some(digits.unchecked_into()), None).await.unwrap();
    let text = field(&result, "text").as_string().unwrap();
    assert!(
        text.len() == 6
            && text.char_indices().all(|(i, c)| if i == 3 { c == '-' } else { c.is_ascii_digit() }),
        "{text:?}"
    );

    let reports = js_sys::Array::new();
    let collect = Closure::<dyn FnMut(String, u32, JsValue)>::new({
        let reports = reports.clone();
        move |_text: String, token: u32, logprobs: JsValue| {
            reports.push(&options(&[("token", token.into()), ("logprobs", logprobs)]));
        }
    });
    model.reset().unwrap();
    let scored = options(&[("greedy", true.into()), ("maxTokens", 6.0.into()), ("logprobs", 2.0.into())]);
    let result = model
        .generate("ROMEO:", Some(scored.unchecked_into()), Some(collect.as_ref().clone().unchecked_into()))
        .await
        .unwrap();
    let logprobs: js_sys::Array = field(&result, "logprobs").unchecked_into();
    assert_eq!((logprobs.length(), reports.length()), (6, 6));
    for (report, logprobs) in reports.iter().zip(logprobs.iter()) {
        assert_eq!(
            js_sys::JSON::stringify(&field(&report, "logprobs")).unwrap(),
            js_sys::JSON::stringify(&logprobs).unwrap()
        );
        let top: js_sys::Array = field(&logprobs, "top").unchecked_into();
        assert_eq!(top.length(), 2);
        // Greedy: the chosen token is the most likely.
        assert_eq!(field(&top.get(0), "token").as_f64(), field(&report, "token").as_f64());
        let logprob = field(&logprobs, "logprob").as_f64().unwrap();
        assert!(logprob <= 0.0 && (logprob - field(&top.get(0), "logprob").as_f64().unwrap()).abs() < 1e-6);
    }
}

#[wasm_bindgen_test]
async fn generation_stops_and_cancels() {
    let model = demo_model().await;
    let stop = options(&[("greedy", true.into()), ("stop", "shall".into())]).unchecked_into();
    let (prompt, continuation) = official_greedy();
    let result = model.generate(&prompt, Some(stop), None).await.unwrap();
    let before_stop = &continuation[..continuation.find("shall").expect("the fixture says `shall`")];
    assert_eq!(field(&result, "text").as_string().unwrap(), before_stop);
    assert_eq!(field(&result, "finish").as_string().unwrap(), "stop");

    // onToken returning false stops before the next token.
    model.reset().unwrap();
    let mut seen = 0;
    let stop_at_three = Closure::<dyn FnMut(String, u32) -> bool>::new(move |_: String, _: u32| {
        seen += 1;
        seen < 3
    });
    let on_token = Some(stop_at_three.as_ref().clone().unchecked_into());
    let result = model.generate("ROMEO:", greedy(40), on_token).await.unwrap();
    assert_eq!(field(&result, "tokens").as_f64(), Some(3.0));
    assert_eq!(field(&result, "finish").as_string().unwrap(), "cancelled");

    // So does an abort signal.
    model.reset().unwrap();
    let controller = js_sys::eval("new AbortController()").unwrap();
    let signal = field(&controller, "signal");
    let abort = js_sys::Function::from(field(&controller, "abort"));
    let abort_at_five = Closure::<dyn FnMut(String, u32)>::new({
        let mut seen = 0;
        move |_: String, _: u32| {
            seen += 1;
            if seen == 5 {
                abort.call0(&controller).unwrap();
            }
        }
    });
    let with_signal = options(&[("greedy", true.into()), ("signal", signal)]).unchecked_into();
    let on_token = Some(abort_at_five.as_ref().clone().unchecked_into());
    let result = model.generate("ROMEO:", Some(with_signal), on_token).await.unwrap();
    assert_eq!(field(&result, "tokens").as_f64(), Some(5.0));
    assert_eq!(field(&result, "finish").as_string().unwrap(), "cancelled");
}

/// Several decode steps per submit (the default, 8) give what one step per submit gives, and the
/// same state when a stop string ends the generation inside a block; `conversationText` is what
/// the conversation read; loading reports its progress.
#[wasm_bindgen_test]
async fn decodes_in_blocks_with_one_steps_state() {
    let reports = js_sys::Array::new();
    let on_progress = Closure::<dyn FnMut(f64, f64)>::new({
        let reports = reports.clone();
        move |done: f64, total: f64| {
            reports.push(&js_sys::Array::of2(&done.into(), &total.into()));
        }
    });
    let model = load(
        DEMO_MODEL,
        &[
            ("tokenizer", Uint8Array::from(DEMO_TOKENIZER).into()),
            ("onProgress", on_progress.as_ref().clone()),
        ],
    )
    .await
    .unwrap();
    assert!(reports.length() > 2, "onProgress was called {} times", reports.length());
    let last = js_sys::Array::from(&reports.get(reports.length() - 1));
    assert_eq!(last.get(0).as_f64(), last.get(1).as_f64(), "the last report is not 100%");
    assert_eq!(field(&model.info(), "embedding").as_string().unwrap(), "GPU");

    let (prompt, continuation) = official_greedy();
    let before_stop = &continuation[..continuation.find("shall").expect("the fixture says `shall`")];
    let mut states = Vec::new();
    for steps in [1.0, 8.0] {
        model.reset().unwrap();
        let stop =
            options(&[("greedy", true.into()), ("stop", "shall".into()), ("stepsPerSubmit", steps.into())]);
        let result = model.generate(&prompt, Some(stop.unchecked_into()), None).await.unwrap();
        assert_eq!(field(&result, "text").as_string().unwrap(), before_stop, "{steps} steps per submit");
        // The conversation read the prompt and the reply up to the token that completed the stop.
        let read = model.conversation_text().unwrap().unwrap();
        assert!(read.starts_with(&format!("{prompt}{before_stop}")) && read.ends_with("shall"), "{read:?}");
        states.push(model.save_state().await.unwrap().to_vec());
    }
    assert!(states[0] == states[1], "the state after a stop inside a block differs from one step per submit");
    model.load_state(Uint8Array::from(&states[0][..])).unwrap();
    assert_eq!(model.conversation_text().unwrap(), None);
    let wrong = options(&[("stepsPerSubmit", 17.0.into())]).unchecked_into();
    let error = message(model.generate("x", Some(wrong), None).await.unwrap_err());
    assert!(error.contains("stepsPerSubmit is 1 to 16"), "{error}");
}

#[wasm_bindgen_test]
async fn state_saves_and_restores() {
    let model = demo_model().await;
    model.generate("ROMEO:", greedy(10), None).await.unwrap();
    let saved = model.save_state().await.unwrap();
    let after = model.generate("\n", greedy(20), None).await.unwrap();
    model.reset().unwrap();
    model.load_state(saved.clone()).unwrap();
    let again = model.generate("\n", greedy(20), None).await.unwrap();
    assert_eq!(field(&after, "text").as_string(), field(&again, "text").as_string());

    let garbage = message(model.load_state(Uint8Array::from(&b"not a state at all"[..])).unwrap_err());
    assert!(garbage.starts_with("the state: not a state file"), "{garbage}");
    let tiny = load(fixture!("tiny/model-f16.safetensors"), &[]).await.unwrap();
    let other = message(tiny.load_state(saved).unwrap_err());
    assert!(other.contains("another model"), "{other}");
}

#[wasm_bindgen_test]
async fn errors_are_exceptions_with_the_library_messages() {
    type Case<'a> = (&'a [u8], &'a [(&'a str, JsValue)], &'a str);
    let cases: [Case; 5] = [
        (b"", &[], "the model file: the file is empty"),
        (b"0123456789 not a model", &[("name", "x.bin".into())], "x.bin: "),
        (fixture!("tiny/model-f16.safetensors"), &[("quant", "int4".into())], "unknown weight format `int4`"),
        (fixture!("tiny/model-f16.safetensors"), &[("quantize", "int8".into())], "unknown option `quantize`"),
        (
            fixture!("tiny/model-f16.safetensors"),
            &[("chunk", (-1.0).into())],
            "`chunk` must be a whole number",
        ),
    ];
    for (bytes, fields, expected) in cases {
        let error =
            load(bytes, fields).await.err().unwrap_or_else(|| panic!("loading should fail with {expected}"));
        assert!(error.contains(expected), "{error:?} should contain {expected:?}");
        assert!(!error.contains('\n'), "{error:?}");
    }

    let model = load(fixture!("tiny/model-f16.safetensors"), &[]).await.unwrap();
    let error = message(model.logits(Uint32Array::from(&[1, 300][..])).await.unwrap_err());
    assert_eq!(error, "token id 300 is out of range: the vocabulary has 256 tokens (ids 0..256)");
    let error = message(model.logits(Uint32Array::new_with_length(0)).await.unwrap_err());
    assert!(error.contains("no tokens"), "{error}");
    for (fields, expected) in [
        (vec![("topP", 1.5.into())], "top-p must be in (0, 1]"),
        (vec![("temperature", 0.0.into())], "temperature must be a positive number"),
        (vec![("top_p", 0.5.into())], "unknown option `top_p`"),
        (vec![("maxTokens", "ten".into())], "`maxTokens` must be a whole number"),
        (vec![("stop", 5.0.into())], "`stop` must be a string or an array of strings"),
        (vec![("minP", 1.0.into())], "min-p must be in [0, 1)"),
        (vec![("bannedTokens", "x".into())], "`bannedTokens` must be an array of token ids"),
        (vec![("logitBias", 5.0.into())], "`logitBias` must be an object of token id: number"),
        (vec![("bannedTokens", js_sys::Array::of1(&300.into()).into())], "token id 300 is out of range"),
        (vec![("jsonSchema", "{not json".into())], "`jsonSchema` is not JSON"),
        (vec![("jsonSchema", "{\"type\": \"nonsense\"}".into())], "the JSON schema"),
        (vec![("regex", "[a-".into())], "the regular expression"),
        (
            vec![("regex", "a".into()), ("grammar", "start: \"a\"".into())],
            "one of jsonSchema, grammar and regex",
        ),
        (vec![("logprobs", 21.0.into())], "at most 20"),
    ] {
        let error =
            message(model.generate("a", Some(options(&fields).unchecked_into()), None).await.unwrap_err());
        assert!(error.contains(expected), "{error:?} should contain {expected:?}");
    }

    // A call made while another is still waiting for the GPU is refused, not interleaved.
    let mut first = pin!(model.logits(Uint32Array::from(&[1, 2, 3][..])));
    let polled = first.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending(), "logits should wait for the GPU's readback");
    let error = message(model.logits(Uint32Array::from(&[1][..])).await.unwrap_err());
    assert!(error.starts_with("the model is busy"), "{error}");
    assert_eq!(first.await.unwrap().length(), 256);
}
