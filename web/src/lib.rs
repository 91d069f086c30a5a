//! rwkv-wgpu in the browser: the same engine compiled to wasm32, on the page's WebGPU, behind a
//! JavaScript API made with wasm-bindgen.
//!
//! ```js
//! import init, { Model } from "./pkg/rwkv_wgpu_web.js";
//! await init();
//! const model = await Model.load(new Uint8Array(await file.arrayBuffer()), { quant: "int8" });
//! const result = await model.generate("User: Hi!\n\nAssistant:", { maxTokens: 100, stop: "\n\n" },
//!   (text) => output.append(text));
//! console.log(`${result.tokensPerSecond.toFixed(1)} tokens/s`);
//! ```
//!
//! Every method that waits for the GPU returns a promise: a browser completes GPU work only
//! through its event loop, so the page stays responsive between tokens. Errors are thrown as
//! JavaScript `Error`s carrying the library's one-line messages, the ones the CLI prints.

mod options;
mod types;

use std::cell::{RefCell, RefMut};
use std::sync::Arc;

use js_sys::{Float32Array, Function, Uint32Array, Uint8Array};
use wasm_bindgen::prelude::*;

use rwkv_wgpu::gpu::{Gpu, GpuOptions};
use rwkv_wgpu::grammar::Grammars;
use rwkv_wgpu::kernels::TokenLogprobs;
use rwkv_wgpu::model::source::{self, FileBytes};
use rwkv_wgpu::model::Progress;
use rwkv_wgpu::quant::{MatrixFormat, QuantPlan};
use rwkv_wgpu::runtime::{Engine, EngineOptions, Finish, Session, State};
use rwkv_wgpu::tokenizer::{HuggingFaceTokenizer, Tokenizer};

use options::{generate_options, object, JsOptions};
pub use types::{GenerateOptionsArg, LoadOptionsArg, OnToken};

/// A model on the page's GPU, with one conversation that `generate` continues.
#[wasm_bindgen]
pub struct Model {
    engine: Engine,
    tokenizer: Tokenizer,
    tokenizer_name: &'static str,
    /// Borrowed for the whole of a call that uses the GPU, so that a second call made before the
    /// first has finished fails with a clear message instead of interleaving with it.
    sessions: RefCell<Sessions>,
    /// The vocabulary indexed for grammars, on the first generation that has one.
    grammars: std::cell::OnceCell<Grammars>,
}

struct Sessions {
    /// The state `generate` continues, and saves and loads.
    conversation: Session,
    /// Every token the conversation has read, and the one it will read first (`pending`); unknown
    /// after `loadState`.
    history: Option<Vec<u32>>,
    /// A token the last generation chose but did not read: the next prompt starts with it.
    pending: Vec<u32>,
    /// For `logits`, reset before each use.
    scratch: Session,
}

thread_local! {
    /// The `onProgress` of the load in progress: loading runs on this thread, and the loader's
    /// progress callback must be `Send`, which a JavaScript function is not.
    static LOAD_PROGRESS: RefCell<Option<Function>> = const { RefCell::new(None) };
    /// The page's GPU devices, by the `f16` load option: models loaded with the same options
    /// share one device, and each kernel is compiled once.
    static PAGE_GPUS: RefCell<Vec<(Option<bool>, Arc<Gpu>)>> = const { RefCell::new(Vec::new()) };
}

/// The page's GPU for these options, opened on first use and again if it was lost.
async fn page_gpu(allow_f16: Option<bool>) -> Result<Arc<Gpu>, JsError> {
    let open = PAGE_GPUS.with_borrow(|gpus| {
        gpus.iter()
            .find(|(f16, gpu)| *f16 == allow_f16 && gpu.check_alive().is_ok())
            .map(|(_, gpu)| gpu.clone())
    });
    if let Some(gpu) = open {
        return Ok(gpu);
    }
    let gpu = Arc::new(Gpu::new_async(&GpuOptions { allow_f16, ..GpuOptions::default() }).await?);
    PAGE_GPUS.with_borrow_mut(|gpus| {
        gpus.retain(|(f16, _)| *f16 != allow_f16);
        gpus.push((allow_f16, gpu.clone()));
    });
    Ok(gpu)
}

fn report_load_progress(done: u64, total: u64) {
    LOAD_PROGRESS.with_borrow(|callback| {
        if let Some(callback) = callback {
            // A throwing callback must not fail the load; the page sees its own error in the console.
            let _ = callback.call2(&JsValue::NULL, &(done as f64).into(), &(total as f64).into());
        }
    });
}

fn seconds_since(start: f64) -> f64 {
    (js_sys::Date::now() - start) / 1000.0
}

// Each call holds the sessions' borrow across its awaits on purpose: a second call made meanwhile
// fails at once (`Model::sessions`) rather than interleaving GPU work with the first.
#[allow(clippy::await_holding_refcell_ref)]
#[wasm_bindgen]
impl Model {
    /// Loads a `.safetensors` or `.pth` model from its bytes onto the browser's GPU.
    pub async fn load(bytes: Uint8Array, options: Option<LoadOptionsArg>) -> Result<Model, JsError> {
        console_error_panic_hook::set_once();
        let options = JsOptions::new(
            options.into(),
            "load options",
            &["quant", "tokenizer", "name", "chunk", "f16", "onProgress"],
        )?;
        let quant = match options.string("quant")? {
            Some(name) => QuantPlan::with(MatrixFormat::parse(&name)?),
            None => QuantPlan::default(),
        };
        let chunk = options.count("chunk")?.map_or(EngineOptions::DEFAULT_CHUNK, |n| n as usize);
        let (tokenizer, tokenizer_name) = match options.bytes("tokenizer")? {
            Some(json) => {
                (Tokenizer::HuggingFace(Box::new(HuggingFaceTokenizer::from_json(&json)?)), "tokenizer.json")
            }
            None => (Tokenizer::world()?, "RWKV World"),
        };
        let name = options.string("name")?.unwrap_or_else(|| "the model file".into());

        let gpu = page_gpu(options.boolean("f16")?).await?;
        let source = source::from_bytes(name, FileBytes::Owned(bytes.to_vec()))?;
        let on_progress = options.function("onProgress")?;
        let progress = on_progress.is_some().then(|| Progress(Arc::new(report_load_progress)));
        let load = rwkv_wgpu::model::LoadOptions { quant, progress, ..Default::default() };
        LOAD_PROGRESS.with_borrow_mut(|callback| *callback = on_progress);
        let model = rwkv_wgpu::model::Model::from_source(gpu, source.as_ref(), &load);
        LOAD_PROGRESS.with_borrow_mut(|callback| *callback = None);
        let model = model?;
        drop(source);
        let engine = Engine::new(Arc::new(model), EngineOptions { slots: 2, chunk })?;
        let sessions = Sessions {
            conversation: Session::new(&engine)?,
            history: Some(Vec::new()),
            pending: Vec::new(),
            scratch: Session::new(&engine)?,
        };
        Ok(Model {
            engine,
            tokenizer,
            tokenizer_name,
            sessions: RefCell::new(sessions),
            grammars: Default::default(),
        })
    }

    /// The model's shape and how it runs.
    #[wasm_bindgen(unchecked_return_type = "ModelInfo")]
    pub fn info(&self) -> JsValue {
        let model = self.engine.model();
        let config = &model.config;
        let gpu = &model.gpu;
        let number = |n: usize| JsValue::from_f64(n as f64);
        object(&[
            ("version", config.version.name().into()),
            ("layers", number(config.layers)),
            ("embd", number(config.embd)),
            ("heads", number(config.heads)),
            ("headSize", number(config.head_size)),
            ("ffn", number(config.ffn)),
            ("vocab", number(config.vocab)),
            ("format", model.format.into()),
            ("fileDtype", model.file_dtype.as_str().into()),
            ("quant", model.storage.as_str().into()),
            ("tokenizer", self.tokenizer_name.into()),
            ("adapter", gpu.describe().into()),
            ("f16", gpu.f16.into()),
            ("subgroups", gpu.subgroups.into()),
            ("embedding", model.embedding.place_name().into()),
        ])
    }

    /// Reads `tokens` from the initial state (the conversation is not touched) and returns the
    /// logits that predict the token after the last.
    pub async fn logits(&self, tokens: Uint32Array) -> Result<Float32Array, JsError> {
        let mut sessions = self.sessions()?;
        sessions.scratch.reset()?;
        let logits = sessions.scratch.feed_async(&tokens.to_vec()).await?;
        Ok(Float32Array::from(&logits[..]))
    }

    pub fn tokenize(&self, text: &str) -> Result<Uint32Array, JsError> {
        Ok(Uint32Array::from(&self.encode(text)?[..]))
    }

    pub fn detokenize(&self, ids: Uint32Array) -> Result<String, JsError> {
        Ok(self.tokenizer.decode(&ids.to_vec())?)
    }

    /// Reads `prompt` after everything the conversation has read so far, then generates, calling
    /// `onToken(text, token)` for each token (the text may be empty: part of a character, or held
    /// back because it may begin a stop string), and its log-probabilities where `options.logprobs`
    /// asks. `onToken` returning `false` stops the generation, as does aborting `options.signal`.
    #[wasm_bindgen(unchecked_return_type = "GenerateResult")]
    pub async fn generate(
        &self,
        prompt: &str,
        options: Option<GenerateOptionsArg>,
        #[wasm_bindgen(js_name = onToken)] on_token: Option<OnToken>,
    ) -> Result<JsValue, JsError> {
        let (mut options, signal, grammar) = generate_options(options.into())?;
        if let Some(grammar) = grammar {
            options.grammar = Some(self.grammars()?.compile(&grammar)?);
        }
        let on_token: Option<Function> = on_token.map(|f| JsValue::from(f).into());
        let mut sessions = self.sessions()?;
        let sessions = &mut *sessions;
        let mut prompt_tokens = sessions.pending.clone();
        let new_tokens = self.encode(prompt)?;
        prompt_tokens.extend(&new_tokens);
        if let Some(history) = &mut sessions.history {
            history.extend(new_tokens);
        }

        let start = js_sys::Date::now();
        let mut generation =
            sessions.conversation.generate_tokens_async(&self.tokenizer, &prompt_tokens, &options).await?;
        sessions.pending.clear();
        let prompt_seconds = seconds_since(start);
        let start = js_sys::Date::now();
        let (mut text, mut tokens) = (String::new(), 0usize);
        let reports = js_sys::Array::new();
        loop {
            if signal.as_ref().is_some_and(|signal| signal.is_aborted()) {
                options.cancel.cancel();
            }
            let Some(piece) = generation.next_async().await else { break };
            let piece = piece?;
            tokens += 1;
            text += &piece.text;
            if let Some(history) = &mut sessions.history {
                history.push(piece.token);
            }
            let report = piece.logprobs.as_ref().map_or(JsValue::UNDEFINED, logprobs_object);
            if !report.is_undefined() {
                reports.push(&report);
            }
            if let Some(callback) = &on_token {
                let answer = callback
                    .call3(&JsValue::NULL, &piece.text.as_str().into(), &piece.token.into(), &report)
                    .map_err(|thrown| JsError::new(&format!("onToken threw: {}", describe(&thrown))))?;
                if answer.as_bool() == Some(false) {
                    options.cancel.cancel();
                }
            }
        }
        let finish = match generation.finish() {
            Some(Finish::Stop(_)) => "stop",
            Some(Finish::EndOfText) => "endOfText",
            Some(Finish::Cancelled) => "cancelled",
            Some(Finish::MaxTokens) | None => "maxTokens",
        };
        sessions.pending = generation.unfed_token().into_iter().collect();
        let seconds = seconds_since(start);
        Ok(object(&[
            ("text", text.into()),
            ("tokens", JsValue::from_f64(tokens as f64)),
            ("promptTokens", JsValue::from_f64(prompt_tokens.len() as f64)),
            ("finish", finish.into()),
            ("promptSeconds", prompt_seconds.into()),
            ("seconds", seconds.into()),
            ("tokensPerSecond", (if seconds > 0.0 { tokens as f64 / seconds } else { 0.0 }).into()),
            (
                "logprobs",
                if options.sampler.logprobs.is_some() { reports.into() } else { JsValue::UNDEFINED },
            ),
        ]))
    }

    /// The text of every token the conversation has read (including the token the last
    /// generation ended on, which the next prompt reads first), or `undefined` after
    /// `loadState`: a chat that re-sends the whole conversation continues from here when its text
    /// starts with this.
    #[wasm_bindgen(js_name = conversationText)]
    pub fn conversation_text(&self) -> Result<Option<String>, JsError> {
        let sessions = self.sessions()?;
        Ok(match &sessions.history {
            Some(tokens) => Some(self.tokenizer.decode(tokens)?),
            None => None,
        })
    }

    /// Forgets the conversation: back to the initial state.
    pub fn reset(&self) -> Result<(), JsError> {
        let mut sessions = self.sessions()?;
        sessions.pending.clear();
        sessions.history = Some(Vec::new());
        Ok(sessions.conversation.reset()?)
    }

    /// The conversation's state as bytes (a `.safetensors` file that `loadState` and the CLI's
    /// `chat --load-state` read).
    #[wasm_bindgen(js_name = saveState)]
    pub async fn save_state(&self) -> Result<Uint8Array, JsError> {
        let mut sessions = self.sessions()?;
        // The state must include the token the last generation chose, as the next prompt would.
        let pending = std::mem::take(&mut sessions.pending);
        if !pending.is_empty() {
            sessions.conversation.feed_async(&pending).await?;
        }
        let bytes = sessions.conversation.state_async().await?.to_bytes()?;
        Ok(Uint8Array::from(&bytes[..]))
    }

    /// Replaces the conversation's state with one saved by `saveState` (or the CLI) for a model of
    /// this shape.
    #[wasm_bindgen(js_name = loadState)]
    pub fn load_state(&self, bytes: Uint8Array) -> Result<(), JsError> {
        let state = State::from_bytes("the state", &bytes.to_vec())?;
        let mut sessions = self.sessions()?;
        sessions.conversation.set_state(&state)?;
        sessions.pending.clear();
        sessions.history = None;
        Ok(())
    }
}

impl Model {
    fn grammars(&self) -> Result<&Grammars, JsError> {
        if let Some(grammars) = self.grammars.get() {
            return Ok(grammars);
        }
        let grammars = Grammars::new(&self.tokenizer, self.engine.model().config.vocab)?;
        Ok(self.grammars.get_or_init(|| grammars))
    }

    fn sessions(&self) -> Result<RefMut<'_, Sessions>, JsError> {
        self.sessions.try_borrow_mut().map_err(|_| {
            JsError::new("the model is busy: await the previous call (generate, logits, saveState) first")
        })
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, JsError> {
        let tokens = self.tokenizer.encode(text)?;
        let vocab = self.engine.model().config.vocab;
        if let Some(id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(JsError::new(&format!(
                "the text encodes to token {id}, outside the model's vocabulary of {vocab}: is this the model's \
                 tokenizer? (pass the model's tokenizer.json as the `tokenizer` load option)"
            )));
        }
        Ok(tokens)
    }
}

/// `{ logprob, top: [{ token, logprob }] }`.
fn logprobs_object(logprobs: &TokenLogprobs) -> JsValue {
    let top = js_sys::Array::new();
    for &(token, logprob) in &logprobs.top {
        top.push(&object(&[("token", token.into()), ("logprob", f64::from(logprob).into())]));
    }
    object(&[("logprob", f64::from(logprobs.logprob).into()), ("top", top.into())])
}

/// A thrown JavaScript value as text: an `Error`'s message, or the value itself.
fn describe(thrown: &JsValue) -> String {
    thrown
        .dyn_ref::<js_sys::Error>()
        .map(|error| String::from(error.message()))
        .or_else(|| thrown.as_string())
        .unwrap_or_else(|| format!("{thrown:?}"))
}
