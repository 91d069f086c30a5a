//! Running the server on the demo model, and a small HTTP client for it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use rwkv_wgpu::model::{LoadOptions, Model};
use rwkv_wgpu::server::{Server, ServerOptions};
use rwkv_wgpu::tokenizer::Tokenizer;
use serde_json::Value;

use super::common;

pub fn demo_tokenizer() -> Tokenizer {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/tokenizer.json");
    Tokenizer::from_file(&path).unwrap()
}

pub fn demo_model() -> Arc<Model> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/model.safetensors");
    Arc::new(Model::load(Arc::new(common::default_gpu()), &path, &LoadOptions::default()).unwrap())
}

/// The demo model served on a free port of 127.0.0.1.
pub fn start(options: ServerOptions) -> Served {
    start_with(demo_model(), options)
}

/// `model` served with the demo's byte-level tokenizer on a free port of 127.0.0.1.
pub fn start_with(model: Arc<Model>, options: ServerOptions) -> Served {
    let options = ServerOptions { port: 0, model_id: "demo".into(), ..options };
    let server = Server::start(model, demo_tokenizer(), options).unwrap();
    let base = format!("http://{}", server.addr());
    Served { server, base }
}

pub struct Served {
    pub server: Server,
    pub base: String,
}

impl Served {
    /// POSTs `body` (JSON text) and returns the status and the JSON answer.
    pub fn post_text(&self, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = ureq::post(&format!("{}{path}", self.base)).set("content-type", "application/json");
        if let Some(key) = key {
            request = request.set("authorization", &format!("Bearer {key}"));
        }
        let response = match request.send_string(body) {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(error) => panic!("POST {path}: {error}"),
        };
        let status = response.status();
        let text = response.into_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_text(path, &body.to_string(), None)
    }

    /// POSTs and expects 200, returning the answer.
    pub fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, answer) = self.post(path, body);
        assert_eq!(status, 200, "{answer}");
        answer
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&format!("{}{path}", self.base)).call() {
            Ok(response) => (response.status(), response.into_string().unwrap()),
            Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap()),
            Err(error) => panic!("GET {path}: {error}"),
        }
    }

    /// A Prometheus value from `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("rwkv_{name} ")))
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
            .parse()
            .unwrap()
    }

    /// Opens a streamed request; the reader yields the `data:` payloads.
    pub fn stream(&self, path: &str, body: &Value) -> impl Iterator<Item = String> {
        let response = ureq::post(&format!("{}{path}", self.base))
            .set("content-type", "application/json")
            .send_string(&body.to_string())
            .unwrap();
        assert_eq!(response.header("content-type"), Some("text/event-stream"));
        BufReader::new(response.into_reader())
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| line.strip_prefix("data: ").map(str::to_string))
    }
}

/// The text of a completion or chat answer.
pub fn text(answer: &Value) -> String {
    let choice = &answer["choices"][0];
    choice["text"].as_str().or(choice["message"]["content"].as_str()).unwrap().to_string()
}
