//! The OpenAI-compatible server on the demo model: answers equal the engine's own, many clients
//! at once each get what they get alone, a conversation's next turn reads only its new tokens,
//! and bad requests get OpenAI's errors without disturbing anyone else.

mod common;
mod serve;

use std::time::{Duration, Instant};

use rwkv_wgpu::runtime::{Engine, EngineOptions, GenerateOptions, SamplerOptions, Session};
use rwkv_wgpu::server::ServerOptions;
use serde_json::{json, Value};

use serve::{start, text};

#[test]
fn completions_and_chat_answer_as_the_engine_does() {
    let served = start(ServerOptions::default());
    let prompt = "ROMEO:\nBut soft, what light";
    let answer =
        served.ok("/v1/completions", &json!({ "prompt": prompt, "max_tokens": 40, "temperature": 0 }));

    // The same greedy generation without the server.
    let tokenizer = serve::demo_tokenizer();
    let engine = Engine::new(serve::demo_model(), EngineOptions::default()).unwrap();
    let mut session = Session::new(&engine).unwrap();
    let options =
        GenerateOptions { max_tokens: 40, sampler: SamplerOptions::default(), ..GenerateOptions::default() };
    let expected: String =
        session.generate(&tokenizer, prompt, &options).unwrap().map(|piece| piece.unwrap().text).collect();
    assert_eq!(text(&answer), expected);
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["model"], "demo");
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    let prompt_tokens = tokenizer.encode(prompt).unwrap().len();
    assert_eq!(answer["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(answer["usage"]["completion_tokens"], 40);
    assert_eq!(answer["usage"]["total_tokens"], prompt_tokens + 40);

    // Chat: the messages in RWKV's form, the reply ending at the template's blank line.
    let messages = json!([{ "role": "system", "content": "Speak as in a play." }, { "role": "user", "content": "Who goes there?" }]);
    let answer = served
        .ok("/v1/chat/completions", &json!({ "messages": messages, "max_tokens": 200, "temperature": 0 }));
    let chat_prompt = "System: Speak as in a play.\n\nUser: Who goes there?\n\nAssistant:";
    let options = GenerateOptions { max_tokens: 200, stop: vec!["\n\n".into()], ..options };
    let mut session = Session::new(&engine).unwrap();
    let expected: String = session
        .generate(&tokenizer, chat_prompt, &options)
        .unwrap()
        .map(|piece| piece.unwrap().text)
        .collect();
    assert_eq!(text(&answer), expected);
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    let finish = if expected.len() < 200 { "stop" } else { "length" };
    assert_eq!(answer["choices"][0]["finish_reason"], finish);

    // Streaming gives the same text in pieces, then the usage and [DONE].
    let body = json!({ "prompt": prompt, "max_tokens": 40, "temperature": 0, "stream": true,
                       "stream_options": { "include_usage": true } });
    let events: Vec<String> = served.stream("/v1/completions", &body).collect();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    let completion =
        served.ok("/v1/completions", &json!({ "prompt": prompt, "max_tokens": 40, "temperature": 0 }));
    assert_eq!(streamed, text(&completion));
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 40);

    // logit_bias -100 bans a token: the greedy answer's first byte (the demo's tokens are bytes)
    // never comes; min-p and decaying penalties are accepted.
    let first = expected_first_byte(&text(&answer_of(&served, prompt)));
    let banned = json!({ "prompt": prompt, "max_tokens": 40, "temperature": 0, "logit_bias": { first.to_string(): -100 } });
    let answer = served.ok("/v1/completions", &banned);
    assert!(!text(&answer).as_bytes().contains(&first), "{answer}");
    let extras = json!({ "prompt": prompt, "max_tokens": 8, "min_p": 0.1, "penalty_decay": 0.996,
                         "presence_penalty": 0.5, "seed": 3 });
    assert_eq!(text(&served.ok("/v1/completions", &extras)), text(&served.ok("/v1/completions", &extras)));

    // A seed reproduces a sampled answer.
    let sampled = json!({ "prompt": prompt, "max_tokens": 30, "temperature": 1.0, "top_p": 0.9, "seed": 7 });
    assert_eq!(text(&served.ok("/v1/completions", &sampled)), text(&served.ok("/v1/completions", &sampled)));

    let (status, health) = served.get("/health");
    assert_eq!((status, health.as_str()), (200, r#"{"status":"ok"}"#));
    let (_, models) = served.get("/v1/models");
    assert_eq!(serde_json::from_str::<Value>(&models).unwrap()["data"][0]["id"], "demo");
    assert!(served.metric("requests_total") >= 6.0);
    assert!(served.metric("completion_tokens_total") >= 150.0);
}

#[test]
fn a_test_fixture_of_the_official_shapes_serves_too() {
    // RWKV-7 "tiny" (2 layers, 4 heads of 16, vocabulary 256: the demo's bytes fit it).
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v7/tiny/model-f16.safetensors");
    let gpu = std::sync::Arc::new(common::default_gpu());
    let model = std::sync::Arc::new(rwkv_wgpu::model::Model::load(gpu, &path, &Default::default()).unwrap());
    let served = serve::start_with(model.clone(), ServerOptions { max_batch: 4, ..ServerOptions::default() });
    let prompts = ["ab", "The cat", "0123456789"];
    let answers: Vec<Value> = prompts
        .iter()
        .map(|p| served.ok("/v1/completions", &json!({ "prompt": p, "max_tokens": 12, "temperature": 0 })))
        .collect();
    let engine = Engine::new(model, EngineOptions::default()).unwrap();
    let tokenizer = serve::demo_tokenizer();
    for (prompt, answer) in prompts.iter().zip(&answers) {
        let options =
            GenerateOptions { max_tokens: 12, stop_at_end_of_text: true, ..GenerateOptions::default() };
        let mut session = Session::new(&engine).unwrap();
        let expected: String = session
            .generate(&tokenizer, prompt, &options)
            .unwrap()
            .map(|piece| piece.unwrap().text)
            .collect();
        assert_eq!(text(answer), expected, "{prompt}");
    }
}

fn answer_of(served: &serve::Served, prompt: &str) -> Value {
    served.ok("/v1/completions", &json!({ "prompt": prompt, "max_tokens": 40, "temperature": 0 }))
}

fn expected_first_byte(text: &str) -> u8 {
    text.as_bytes()[0]
}

#[test]
fn thirty_two_concurrent_clients_each_get_what_they_get_alone() {
    let served = start(ServerOptions { max_batch: 32, ..ServerOptions::default() });
    let body = |i: usize| {
        let prompt = format!("{}:\n", ["ROMEO", "JULIET", "HAMLET", "KING LEAR"][i % 4]).repeat(1 + i / 4);
        json!({ "prompt": prompt, "max_tokens": 24, "temperature": 0 })
    };
    let alone: Vec<String> = (0..32).map(|i| text(&served.ok("/v1/completions", &body(i)))).collect();
    let together: Vec<(String, String)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let (served, body) = (&served, body(i));
                scope.spawn(move || {
                    let answer = served.ok("/v1/completions", &body);
                    (answer["id"].as_str().unwrap().to_string(), text(&answer))
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let texts: Vec<String> = together.iter().map(|(_, text)| text.clone()).collect();
    assert_eq!(texts, alone);
    let mut ids: Vec<&String> = together.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 32, "duplicate response ids");
}

#[test]
fn a_second_turn_reads_only_its_new_tokens_and_answers_as_a_cold_run() {
    let served = start(ServerOptions::default());
    let first = json!([{ "role": "user", "content": "Tell me of the king." }]);
    let turn =
        served.ok("/v1/chat/completions", &json!({ "messages": first, "max_tokens": 16, "temperature": 0 }));
    let reply = text(&turn);
    assert_eq!(turn["choices"][0]["finish_reason"], "length", "{reply:?}");
    assert_eq!(reply, reply.trim_end(), "a reply ending in spaces would be trimmed by the template");
    let second = json!([
        { "role": "user", "content": "Tell me of the king." },
        { "role": "assistant", "content": reply },
        { "role": "user", "content": "And the queen?" },
    ]);
    let request = json!({ "messages": second, "max_tokens": 30, "temperature": 0 });
    let warm = served.ok("/v1/chat/completions", &request);
    // The state after the first turn's prompt and its reply (but the last token, sampled and
    // never read) was kept: the second turn reads the rest.
    let kept = turn["usage"]["prompt_tokens"].as_u64().unwrap() + 16 - 1;
    assert_eq!(warm["usage"]["prompt_tokens_details"]["cached_tokens"], kept);
    assert!(served.metric("cache_hits_total") >= 1.0);
    assert!(served.metric("cached_prompt_tokens_total") >= kept as f64);

    let cold_server = start(ServerOptions { cache_mib: 0, host_cache_mib: 0, ..ServerOptions::default() });
    let cold = cold_server.ok("/v1/chat/completions", &request);
    assert_eq!(cold["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(text(&warm), text(&cold));
}

#[test]
fn states_spill_to_host_memory_and_still_serve() {
    // 1 MiB holds seven of the demo's states (0.14 MB each) on the GPU: later prompts push earlier
    // states to host memory, from where they are restored.
    let served = start(ServerOptions { cache_mib: 1, host_cache_mib: 64, ..ServerOptions::default() });
    let request =
        |n: usize| json!({ "prompt": format!("{n}: ").repeat(40), "max_tokens": 8, "temperature": 0 });
    let cold: Vec<String> = (0..12).map(|n| text(&served.ok("/v1/completions", &request(n)))).collect();
    assert!(served.metric("cache_host_entries") >= 1.0);
    for (n, cold) in cold.iter().enumerate() {
        let again = served.ok("/v1/completions", &request(n));
        assert!(again["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0);
        assert_eq!(&text(&again), cold);
    }
}

#[test]
fn bad_requests_get_openai_errors() {
    let served = start(ServerOptions {
        api_key: Some("sesame".into()),
        max_prompt_tokens: 64,
        max_body_bytes: 4096,
        ..ServerOptions::default()
    });
    let good = json!({ "prompt": "ROMEO:", "max_tokens": 4 }).to_string();
    let expect = |(status, answer): (u16, Value), code: u16, needle: &str| {
        assert_eq!(status, code, "{answer}");
        let message =
            answer["error"]["message"].as_str().unwrap_or_else(|| panic!("no error message: {answer}"));
        assert!(message.contains(needle), "{message}");
        assert!(answer["error"]["type"].is_string());
    };
    expect(served.post_text("/v1/completions", &good, None), 401, "API key");
    expect(served.post_text("/v1/completions", &good, Some("wrong")), 401, "API key");
    assert_eq!(served.post_text("/v1/completions", &good, Some("sesame")).0, 200);
    let post = |body: &str| served.post_text("/v1/completions", body, Some("sesame"));
    expect(post("{\"prompt\": "), 400, "malformed");
    expect(post("[1, 2]"), 400, "malformed");
    expect(post(&json!({ "prompt": "x", "model": "gpt-4" }).to_string()), 404, "gpt-4");
    expect(post(&json!({ "prompt": "x", "temperature": 5 }).to_string()), 400, "temperature");
    expect(post(&json!({ "prompt": "x", "top_p": 0 }).to_string()), 400, "top-p");
    expect(post(&json!({ "prompt": "x", "n": 2 }).to_string()), 400, "n = 1");
    expect(post(&json!({ "prompt": "x", "max_tokens": 0 }).to_string()), 400, "max_tokens");
    expect(post(&json!({ "prompt": "x", "logit_bias": { "x": 1 } }).to_string()), 400, "not a token id");
    expect(
        post(&json!({ "prompt": "x", "logit_bias": { "99999": 1 } }).to_string()),
        400,
        "beyond the vocabulary",
    );
    expect(post(&json!({ "prompt": "x", "logit_bias": { "5": 500 } }).to_string()), 400, "[-100, 100]");
    expect(post(&json!({ "prompt": "x", "min_p": 1.5 }).to_string()), 400, "min-p");
    expect(post(&json!({ "prompt": "" }).to_string()), 400, "empty");
    expect(post(&json!({ "prompt": "x".repeat(100) }).to_string()), 413, "at most 64");
    expect(post(&json!({ "prompt": "x".repeat(10_000) }).to_string()), 413, "larger than 4096 bytes");
    let chat = |body: Value| served.post_text("/v1/chat/completions", &body.to_string(), Some("sesame"));
    expect(chat(json!({ "messages": [] })), 400, "at least one");
    expect(chat(json!({ "messages": [{ "role": "robot", "content": "hi" }] })), 400, "unknown role");
    expect(
        chat(json!({ "messages": [{ "role": "user", "content": [{ "type": "image_url" }] }] })),
        400,
        "image_url",
    );
    let (status, body) = served.get("/v2/nothing");
    assert_eq!(status, 404, "{body}");
    // After all that, the server still answers.
    assert_eq!(served.post_text("/v1/completions", &good, Some("sesame")).0, 200);
    assert!(served.metric("failed_requests_total") >= 19.0);
}

#[test]
fn a_full_queue_is_429_and_a_client_that_leaves_frees_its_place() {
    let served = start(ServerOptions { max_batch: 1, max_queue: 1, ..ServerOptions::default() });
    let long = json!({ "prompt": "ROMEO:", "max_tokens": 4000, "temperature": 0, "stream": true });
    // The first client generates (its first chunk has come), the second waits in the queue.
    let mut first = served.stream("/v1/completions", &long);
    assert!(first.next().is_some());
    let waiting = std::thread::scope(|scope| {
        let second =
            scope.spawn(|| served.ok("/v1/completions", &json!({ "prompt": "JULIET:", "max_tokens": 5 })));
        let deadline = Instant::now() + Duration::from_secs(60);
        while served.metric("queue_depth") < 1.0 {
            assert!(Instant::now() < deadline, "the second request never queued");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (status, answer) = served.post("/v1/completions", &json!({ "prompt": "HAMLET:" }));
        assert_eq!(status, 429, "{answer}");
        assert_eq!(answer["error"]["code"], "queue_full");
        // The first client leaves mid-stream: its sequence is cancelled and the second runs.
        drop(first);
        second.join().unwrap()
    });
    assert_eq!(waiting["usage"]["completion_tokens"], 5);
    assert!(served.metric("completion_tokens_total") < 4000.0, "the cancelled stream kept generating");
    // The scheduler counts its batch after the step that answered the second client.
    let deadline = Instant::now() + Duration::from_secs(10);
    while served.metric("active_sequences") > 0.0 {
        assert!(Instant::now() < deadline, "a sequence stayed in the batch");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn long_prompts_and_long_conversations_keep_the_cache_bounded() {
    // A 16,000-token prompt's states are evicted by later ones (the cache holds 1 MiB of keys and
    // spilled states in host memory): the server keeps answering. A trie with a node per token
    // once overflowed the scheduler's stack here, freeing such a key.
    let served = start(ServerOptions { cache_mib: 1, host_cache_mib: 1, ..ServerOptions::default() });
    let long =
        served.ok("/v1/completions", &json!({ "prompt": "To be, or not. ".repeat(1067), "max_tokens": 1 }));
    assert!(long["usage"]["prompt_tokens"].as_u64().unwrap() >= 16_000);
    for n in 0..12 {
        served.ok("/v1/completions", &json!({ "prompt": format!("{n}: what light"), "max_tokens": 2 }));
    }
    assert!(served.metric("cache_host_bytes") <= (1 << 20) as f64);
    assert_eq!(served.get("/health").0, 200);

    // A conversation of 40 messages keeps the states at its first message's end, its last two
    // messages' ends and its prompt's end (and all of it but the last token), and its reply's.
    let fresh = start(ServerOptions::default());
    let messages: Vec<Value> = (0..40)
        .map(|i| json!({ "role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("line {i}") }))
        .collect();
    fresh.ok("/v1/chat/completions", &json!({ "messages": messages, "max_tokens": 4 }));
    assert_eq!(fresh.metric("cache_gpu_entries"), 6.0);
    assert!(fresh.metric("steps_total") < 20.0, "the prompt was read in many small steps");

    // A wrong method on a known path is OpenAI's JSON too.
    let (status, body) = served.get("/v1/completions");
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("does not take GET"), "{body}");
}

#[test]
fn log_probabilities_of_chosen_and_most_likely_tokens() {
    let served = start(ServerOptions::default());
    let messages = json!([{ "role": "user", "content": "Who goes there?" }]);
    let body = json!({ "messages": messages, "max_tokens": 12, "temperature": 0, "logprobs": true, "top_logprobs": 3 });
    let answer = served.ok("/v1/chat/completions", &body);
    let content = answer["choices"][0]["logprobs"]["content"].as_array().unwrap().clone();
    let generated = answer["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    assert!(content.len() == generated || content.len() + 1 == generated, "{answer}");
    let tokens: String = content.iter().map(|e| e["token"].as_str().unwrap()).collect();
    assert!(tokens.starts_with(&text(&answer)), "{tokens:?} vs {:?}", text(&answer));
    for entry in &content {
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let logprob = entry["logprob"].as_f64().unwrap();
        assert!(logprob <= 0.0);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(entry["token"], top[0]["token"]);
        assert!((logprob - top[0]["logprob"].as_f64().unwrap()).abs() < 1e-6);
        let values: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
        assert_eq!(entry["bytes"].as_array().unwrap().len(), entry["token"].as_str().unwrap().len());
    }

    // The same reports, streamed.
    let streamed = json!({ "messages": messages, "max_tokens": 12, "temperature": 0, "logprobs": true,
                           "top_logprobs": 3, "stream": true });
    let chunks: Vec<Value> = served
        .stream("/v1/chat/completions", &streamed)
        .filter(|e| e != "[DONE]")
        .map(|e| serde_json::from_str(&e).unwrap())
        .collect();
    let streamed_content: Vec<Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(streamed_content, content);

    // Completions' columns: tokens, their log-probabilities, the most likely, offsets.
    let body = json!({ "prompt": "ROMEO:", "max_tokens": 8, "temperature": 0, "logprobs": 2 });
    let answer = served.ok("/v1/completions", &body);
    let logprobs = &answer["choices"][0]["logprobs"];
    let tokens: Vec<&str> =
        logprobs["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tokens.concat(), text(&answer));
    assert_eq!(logprobs["token_logprobs"].as_array().unwrap().len(), 8);
    assert!(logprobs["top_logprobs"].as_array().unwrap().iter().all(|t| t.as_object().unwrap().len() <= 2));
    let offsets: Vec<u64> =
        logprobs["text_offset"].as_array().unwrap().iter().map(|o| o.as_u64().unwrap()).collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));

    let (status, _) = served
        .post("/v1/chat/completions", &json!({ "messages": messages, "logprobs": true, "top_logprobs": 21 }));
    assert_eq!(status, 400);
}

/// `response_format`: JSON of a schema, any JSON object, a regular expression and a grammar,
/// whole and streamed; a bad one is a 400 naming it, before any token.
#[test]
fn response_format_constrains_the_answer() {
    let served = start(ServerOptions::default());
    let messages = json!([{ "role": "user", "content": "Who goes there?" }]);
    let schema = json!({
        "type": "object",
        "properties": { "name": { "type": "string", "maxLength": 10 }, "friend": { "type": "boolean" } },
        "required": ["name", "friend"],
        "additionalProperties": false
    });
    for seed in 1..=3 {
        let format = json!({ "type": "json_schema", "json_schema": { "name": "who", "schema": schema, "strict": true } });
        let body =
            json!({ "messages": messages, "max_tokens": 200, "seed": seed, "response_format": format });
        let answer = served.ok("/v1/chat/completions", &body);
        let value: Value = serde_json::from_str(&text(&answer)).unwrap_or_else(|e| panic!("{e}: {answer}"));
        assert!(value["name"].as_str().is_some_and(|n| n.chars().count() <= 10), "{value}");
        assert!(value["friend"].is_boolean() && value.as_object().unwrap().len() == 2, "{value}");
        assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
    }
    let object = json!({ "prompt": "ROMEO:", "max_tokens": 200, "seed": 4, "response_format": { "type": "json_object" } });
    let answer = served.ok("/v1/completions", &object);
    // Any object: the demo model may not close its keys within the limit, but what it wrote is
    // the start of a JSON object.
    match serde_json::from_str::<Value>(&text(&answer)) {
        Ok(value) => assert!(value.is_object(), "{value}"),
        Err(error) => {
            assert!(error.is_eof() && text(&answer).starts_with('{'), "{error}: {answer}");
            assert_eq!(answer["choices"][0]["finish_reason"], "length", "{answer}");
        }
    }

    let regex = json!({ "prompt": "ROMEO:", "max_tokens": 50, "response_format": { "type": "regex", "regex": "[0-9]{4}" } });
    assert!(text(&served.ok("/v1/completions", &regex)).bytes().filter(u8::is_ascii_digit).count() == 4);
    let lark = "start: (\"ay\" | \"nay\") \", my lord\"";
    let grammar = json!({ "prompt": "ROMEO:", "max_tokens": 50, "stream": true,
                          "response_format": { "type": "grammar", "grammar": lark } });
    let streamed: String = served
        .stream("/v1/completions", &grammar)
        .filter(|e| e != "[DONE]")
        .map(|e| {
            serde_json::from_str::<Value>(&e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(streamed == "ay, my lord" || streamed == "nay, my lord", "{streamed:?}");

    for (format, needle) in [
        (
            json!({ "type": "json_schema", "json_schema": { "schema": { "type": "nonsense" } } }),
            "JSON schema",
        ),
        (json!({ "type": "json_schema" }), "json_schema.schema"),
        (json!({ "type": "regex", "regex": "[a-" }), "regular expression"),
        (json!({ "type": "yaml" }), "response_format.type"),
    ] {
        let (status, answer) =
            served.post("/v1/completions", &json!({ "prompt": "x", "response_format": format }));
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(needle), "{answer}");
        assert_eq!(answer["error"]["param"], "response_format", "{answer}");
    }
}
