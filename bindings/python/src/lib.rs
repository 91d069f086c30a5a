//! The Python module `rwkv_wgpu._native` (re-exported by `rwkv_wgpu`): `Model`, whose
//! `forward(tokens, state)` is the official `rwkv.model.RWKV.forward` with numpy logits, `State`,
//! and `RwkvError`, which carries the library's messages.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::{self, ThreadId};

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use rwkv_wgpu::model::lora::Lora;
use rwkv_wgpu::runtime::{GenerateOptions, SamplerOptions, Session, TextModel, TextModelOptions};

pyo3::create_exception!(
    rwkv_wgpu,
    RwkvError,
    PyException,
    "An error of the rwkv-wgpu library (its message says what went wrong)."
);

fn error(e: impl std::fmt::Display) -> PyErr {
    RwkvError::new_err(e.to_string())
}

/// A recurrent state: what `Model.forward` returns and takes. Copy it (`copy.deepcopy`) to
/// branch; `to_bytes`/`from_bytes` and `save`/`load` keep it.
#[pyclass(module = "rwkv_wgpu", frozen)]
#[derive(Clone)]
struct State {
    inner: rwkv_wgpu::runtime::State,
    /// Which values these are: the model skips uploading a state its session already holds.
    id: u64,
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[pymethods]
impl State {
    /// The state in the library's state file format.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.inner.to_bytes().map_err(error)?))
    }

    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<State> {
        let inner = rwkv_wgpu::runtime::State::from_bytes("state bytes", data).map_err(error)?;
        Ok(State { inner, id: next_id() })
    }

    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.inner.save(&path).map_err(error)
    }

    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<State> {
        Ok(State { inner: rwkv_wgpu::runtime::State::load(&path).map_err(error)?, id: next_id() })
    }

    fn __copy__(&self) -> State {
        self.clone()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> State {
        self.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "State({}, {} layers of {} channels)",
            self.inner.version.name(),
            self.inner.layers.len(),
            self.inner.embd
        )
    }
}

/// The session and which state's values it holds.
struct Held {
    session: Session,
    state: Option<u64>,
}

/// An RWKV model on the GPU, as the official `rwkv.model.RWKV`:
/// `Model(model, strategy=None)` and `forward(tokens, state) -> (logits, state)`.
#[pyclass(module = "rwkv_wgpu", frozen)]
struct Model {
    text: TextModel,
    held: Mutex<Held>,
    /// The thread running `generate`, whose callback must not wait for the session it holds.
    generating_on: Mutex<Option<ThreadId>>,
}

/// `--quant` from an official strategy string ("cuda fp16", "cpu fp32", "cuda fp16i8 *10 -> cpu
/// fp32"): its first part's precision; devices do not apply (the model runs on the GPU).
fn quant_of_strategy(strategy: &str) -> PyResult<Option<String>> {
    let first = strategy.split("->").next().unwrap_or("");
    for word in first.split_whitespace() {
        let quant = match word {
            "fp32" => "f32",
            "bf16" => "bf16",
            "fp16" => "f16",
            w if w.ends_with("i8") => "int8",
            _ => continue,
        };
        return Ok(Some(quant.to_string()));
    }
    if first.trim().is_empty() {
        return Ok(None);
    }
    Err(RwkvError::new_err(format!("strategy `{strategy}` names no precision (fp32, bf16, fp16 or fp16i8)")))
}

impl Model {
    /// The session, once another thread's call is done with it; from a `generate` callback, which
    /// runs while its own thread holds it, an error rather than a wait that never ends.
    fn held(&self) -> rwkv_wgpu::Result<MutexGuard<'_, Held>> {
        match self.held.try_lock() {
            Ok(held) => Ok(held),
            Err(TryLockError::Poisoned(poisoned)) => Ok(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => {
                let generating_on = *self.generating_on.lock().unwrap_or_else(PoisonError::into_inner);
                if generating_on == Some(thread::current().id()) {
                    return Err(rwkv_wgpu::Error::InvalidArgument(
                        "the model is generating: a generate callback cannot call it".into(),
                    ));
                }
                Ok(self.held.lock().unwrap_or_else(PoisonError::into_inner))
            }
        }
    }

    fn set_generating_on(&self, thread: Option<ThreadId>) {
        *self.generating_on.lock().unwrap_or_else(PoisonError::into_inner) = thread;
    }
}

#[pymethods]
impl Model {
    /// Loads `model` (a .pth, .safetensors or .gguf file or a Hugging Face folder; like the
    /// official class, a path without `.pth` finds the `.pth`). `strategy`'s precision maps to
    /// `quant`; `quant` ("f32", "bf16", "f16", "int8", "nf4") wins over it.
    #[new]
    #[pyo3(signature = (model, strategy=None, *, quant=None, backend=None, adapter=None, tokenizer=None, lora=None, verbose=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: PathBuf,
        strategy: Option<&str>,
        quant: Option<String>,
        backend: Option<String>,
        adapter: Option<String>,
        tokenizer: Option<PathBuf>,
        lora: Option<Vec<String>>,
        verbose: bool,
    ) -> PyResult<Model> {
        let with_pth = PathBuf::from(format!("{}.pth", model.display()));
        let path = if !model.exists() && with_pth.exists() { with_pth } else { model };
        let quant = match quant {
            Some(quant) => Some(quant),
            None => strategy.map(quant_of_strategy).transpose()?.flatten(),
        };
        let lora = lora
            .unwrap_or_default()
            .iter()
            .map(|spec| spec.parse::<Lora>().map_err(RwkvError::new_err))
            .collect::<PyResult<Vec<_>>>()?;
        let options = TextModelOptions {
            quant,
            backend,
            adapter,
            tokenizer,
            lora,
            slots: 1,
            ..TextModelOptions::default()
        };
        let text = py.detach(|| TextModel::open(Path::new(&path), &options)).map_err(error)?;
        if verbose {
            let model = text.engine.model();
            eprintln!(
                "rwkv_wgpu: {} ({}), {} on {}",
                path.display(),
                model.config.version.name(),
                model.storage,
                model.gpu.describe()
            );
        }
        let session = Session::new(&text.engine).map_err(error)?;
        Ok(Model { text, held: Mutex::new(Held { session, state: None }), generating_on: Mutex::new(None) })
    }

    /// Reads `tokens` from `state` (None: the initial state) and returns the logits that predict
    /// the next token (numpy float32, [vocabulary]; with `full_output`, [len(tokens),
    /// vocabulary]: after every token) and the new state.
    #[pyo3(signature = (tokens, state=None, full_output=false))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        tokens: Vec<u32>,
        state: Option<PyRef<'_, State>>,
        full_output: bool,
    ) -> PyResult<(Bound<'py, PyAny>, State)> {
        if tokens.is_empty() {
            return Err(RwkvError::new_err("forward needs at least one token"));
        }
        let start = state.as_ref().map(|s| (s.id, s.inner.clone()));
        let (logits, new_state) = py
            .detach(|| {
                let mut held = self.held()?;
                match &start {
                    None => held.session.reset()?,
                    Some((id, _)) if held.state == Some(*id) => {}
                    Some((_, values)) => held.session.set_state(values)?,
                }
                held.state = None;
                let logits = if full_output {
                    held.session.feed_positions(&tokens)?
                } else {
                    held.session.feed(&tokens)?
                };
                let values = held.session.state()?;
                let id = next_id();
                held.state = Some(id);
                Ok::<_, rwkv_wgpu::Error>((logits, State { inner: values, id }))
            })
            .map_err(error)?;
        let array = PyArray1::from_vec(py, logits);
        let array = if full_output {
            array.reshape([tokens.len(), self.vocab_size()])?.into_any()
        } else {
            array.into_any()
        };
        Ok((array, new_state))
    }

    /// Generates text after `prompt` with the CLI's sampling options and returns it. `callback`,
    /// if given, is called with each piece of text as it is made (an exception from it stops the
    /// generation and is raised). Starts from `state` (None: the initial state).
    #[pyo3(signature = (prompt, max_tokens=200, *, temperature=1.0, top_p=0.85, top_k=0, min_p=0.0, typical_p=1.0,
        presence_penalty=0.0, frequency_penalty=0.0, penalty_decay=1.0, greedy=false, seed=None, stop=None,
        state=None, callback=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_p: f32,
        top_k: usize,
        min_p: f32,
        typical_p: f32,
        presence_penalty: f32,
        frequency_penalty: f32,
        penalty_decay: f32,
        greedy: bool,
        seed: Option<u64>,
        stop: Option<Vec<String>>,
        state: Option<PyRef<'_, State>>,
        callback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let sampler = SamplerOptions {
            greedy,
            temperature,
            top_p,
            top_k,
            min_p,
            typical_p,
            presence_penalty,
            frequency_penalty,
            penalty_decay,
            seed,
            ..SamplerOptions::default()
        };
        let options = GenerateOptions {
            max_tokens,
            stop: stop.unwrap_or_default(),
            sampler,
            ..GenerateOptions::default()
        };
        let mut held = self.held().map_err(error)?;
        match &state {
            None => held.session.reset().map_err(error)?,
            Some(state) => held.session.set_state(&state.inner).map_err(error)?,
        }
        held.state = None;
        let mut text = String::new();
        let mut raised = None;
        self.set_generating_on(Some(thread::current().id()));
        let generated = held.session.generate_with(&self.text.tokenizer, prompt, &options, |piece| {
            text.push_str(&piece.text);
            if let Some(callback) = &callback {
                if let Err(e) = callback.call1((piece.text.as_str(),)) {
                    raised = Some(e);
                    return std::ops::ControlFlow::Break(());
                }
            }
            std::ops::ControlFlow::Continue(())
        });
        self.set_generating_on(None);
        generated.map_err(error)?;
        match raised {
            Some(e) => Err(e),
            None => Ok(text),
        }
    }

    /// The token ids of `text`.
    fn encode(&self, text: &str) -> PyResult<Vec<u32>> {
        self.text.tokenizer.encode(text).map_err(error)
    }

    /// The text of `tokens`.
    fn decode(&self, tokens: Vec<u32>) -> PyResult<String> {
        self.text.tokenizer.decode(&tokens).map_err(error)
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.text.engine.model().config.vocab
    }

    #[getter]
    fn n_layer(&self) -> usize {
        self.text.engine.model().config.layers
    }

    #[getter]
    fn n_embd(&self) -> usize {
        self.text.engine.model().config.embd
    }

    #[getter]
    fn n_head(&self) -> usize {
        self.text.engine.model().config.heads
    }

    /// The RWKV version, as `info` names it ("RWKV-7 (x070)").
    #[getter]
    fn version(&self) -> &'static str {
        self.text.engine.model().config.version.name()
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<State>()?;
    m.add("RwkvError", m.py().get_type::<RwkvError>())?;
    Ok(())
}
