//! `rwkv-wgpu serve`: an OpenAI-compatible HTTP server. Every request runs on one engine: a
//! scheduler thread batches them continuously ([`scheduler`]) and starts each from the longest
//! cached state of its prompt's prefixes ([`cache`]).
//!
//! Endpoints: `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (both with
//! `stream`), `GET /health`, `GET /metrics` (Prometheus).

pub mod api;
pub mod cache;
pub mod error;
mod handlers;
mod logprobs;
pub mod metrics;
pub mod scheduler;
pub mod template;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use self::error::ApiError;
use self::metrics::Metrics;
use self::scheduler::{Job, JobEvent, SchedulerOptions};
use self::template::ChatTemplate;
use crate::error::{Error, Result};
use crate::grammar::{CompiledGrammar, Grammar, Grammars};
use crate::model::Model;
use crate::runtime::{Engine, EngineOptions};
use crate::tokenizer::Tokenizer;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub host: String,
    pub port: u16,
    /// Required as `Authorization: Bearer <key>` on `/v1/*` when set.
    pub api_key: Option<String>,
    /// The name `/v1/models` lists and requests may give as `model`.
    pub model_id: String,
    /// The most requests generating together; more wait in the queue.
    pub max_batch: usize,
    /// The most requests waiting; beyond it requests get 429.
    pub max_queue: usize,
    /// GPU memory for cached states, in MiB.
    pub cache_mib: u64,
    /// Host memory for cached states spilled from the GPU, in MiB.
    pub host_cache_mib: u64,
    /// Longer prompts get 413.
    pub max_prompt_tokens: usize,
    /// The most tokens one request may generate.
    pub max_tokens: usize,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    pub template: ChatTemplate,
    /// Prompt tokens read per step.
    pub chunk: usize,
    /// Decode steps per submit once every request of the batch generates (1 to
    /// `runtime::MAX_BLOCK`; 1: a submit and a readback per token).
    pub steps_per_submit: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            model_id: "rwkv".into(),
            max_batch: 64,
            max_queue: 256,
            cache_mib: 256,
            host_cache_mib: 1024,
            max_prompt_tokens: 32768,
            max_tokens: 4096,
            max_body_bytes: 4 << 20,
            template: ChatTemplate::default(),
            steps_per_submit: crate::runtime::GenerateOptions::DEFAULT_STEPS_PER_SUBMIT,
            chunk: EngineOptions::DEFAULT_CHUNK,
        }
    }
}

/// What the handlers share.
struct App {
    options: ServerOptions,
    tokenizer: Arc<Tokenizer>,
    vocab: usize,
    jobs: UnboundedSender<Job>,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
    /// Indexed on the first request with a `response_format` (a moment for 65536 tokens).
    grammars: std::sync::OnceLock<std::result::Result<Grammars, String>>,
}

impl App {
    /// Compiles a request's grammar; a bad one is a 400 naming it.
    fn compile(&self, grammar: &Grammar) -> std::result::Result<CompiledGrammar, ApiError> {
        let grammars = self
            .grammars
            .get_or_init(|| Grammars::new(&self.tokenizer, self.vocab).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|error| ApiError::bad_param("response_format", error.clone()))?;
        grammars.compile(grammar).map_err(|error| ApiError::bad_param("response_format", error.to_string()))
    }

    /// Queues a job, or refuses it when the queue is full.
    fn submit(&self, job: Job) -> std::result::Result<(), ApiError> {
        let queued = self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        if queued >= self.options.max_queue as u64 {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::queue_full(self.options.max_queue));
        }
        self.jobs.send(job).map_err(|_| {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            ApiError::unavailable("the engine has stopped")
        })
    }
}

/// The engine for `model` with room for the batch, the cache's GPU states and one slot to read
/// states back through; and how many states the cache keeps on the GPU.
pub fn engine_for(model: Arc<Model>, options: &ServerOptions) -> Result<(Engine, usize)> {
    let config = &model.config;
    let gpu = &model.gpu;
    let state_bytes = (config.layers * (2 * config.embd + config.initial_wkv().len()) * 4) as u64;
    let widest = config.initial_wkv().len().max(config.embd) as u64 * 4;
    let limit = gpu.limits.max_storage_buffer_binding_size.min(gpu.limits.max_buffer_size);
    let most_slots = (limit / widest) as usize;
    let needed = options.max_batch.saturating_add(1);
    if options.steps_per_submit == 0 || options.steps_per_submit > crate::runtime::MAX_BLOCK {
        return Err(Error::InvalidArgument(format!(
            "steps per submit must be 1 to {}, not {}",
            crate::runtime::MAX_BLOCK,
            options.steps_per_submit
        )));
    }
    if options.max_batch == 0 || needed > most_slots {
        return Err(Error::TooBig(format!(
            "a batch of {} needs {needed} state slots; this model's states fit {most_slots} on this adapter",
            options.max_batch
        )));
    }
    let cached = ((options.cache_mib << 20) / state_bytes.max(1)) as usize;
    let cached = cached.min(most_slots - needed);
    let engine = Engine::new(model, EngineOptions { slots: needed + cached, chunk: options.chunk })?;
    Ok((engine, cached))
}

/// A server running on a thread of its own; it stops when dropped.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `options.host:options.port` (port 0 picks a free one) and serves on a thread.
    pub fn start(model: Arc<Model>, tokenizer: Tokenizer, options: ServerOptions) -> Result<Server> {
        let (router, _) = build(model, tokenizer, &options)?;
        let runtime = runtime()?;
        let listener = runtime.block_on(bind(&options))?;
        let addr = listener.local_addr().map_err(|e| Error::InvalidArgument(format!("binding: {e}")))?;
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let stopped = async move {
                    let _ = stop.await;
                };
                if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
                    log::error!("server: {error}");
                }
            });
        });
        Ok(Server { addr, shutdown: Some(shutdown), thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves on this thread until Ctrl-C, announcing the address through `ready`.
pub fn serve(
    model: Arc<Model>,
    tokenizer: Tokenizer,
    options: ServerOptions,
    ready: impl FnOnce(SocketAddr, usize),
) -> Result<()> {
    let (router, cached_slots) = build(model, tokenizer, &options)?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let listener = bind(&options).await?;
        let addr = listener.local_addr().map_err(|e| Error::InvalidArgument(format!("binding: {e}")))?;
        ready(addr, cached_slots);
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        axum::serve(listener, router)
            .with_graceful_shutdown(ctrl_c)
            .await
            .map_err(|e| Error::InvalidArgument(format!("serving: {e}")))
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidArgument(format!("starting the server's runtime: {e}")))
}

async fn bind(options: &ServerOptions) -> Result<tokio::net::TcpListener> {
    let address = format!("{}:{}", options.host, options.port);
    tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| Error::InvalidArgument(format!("cannot listen on {address}: {e}")))
}

/// The routes, and the scheduler thread behind them; also how many states the cache keeps on
/// the GPU.
fn build(model: Arc<Model>, tokenizer: Tokenizer, options: &ServerOptions) -> Result<(Router, usize)> {
    let vocab = model.config.vocab;
    let (engine, cached_slots) = engine_for(model, options)?;
    let tokenizer = Arc::new(tokenizer);
    let metrics = Arc::new(Metrics::default());
    let (jobs, receiver): (_, UnboundedReceiver<Job>) = unbounded_channel();
    let scheduler_options = SchedulerOptions {
        max_batch: options.max_batch,
        cache_gpu_slots: cached_slots,
        cache_host_bytes: options.host_cache_mib << 20,
        steps_per_submit: options.steps_per_submit,
    };
    let (scheduler_tokenizer, scheduler_metrics) = (tokenizer.clone(), metrics.clone());
    std::thread::Builder::new()
        .name("rwkv-scheduler".into())
        .spawn(move || {
            scheduler::run(engine, scheduler_tokenizer, scheduler_options, scheduler_metrics, receiver)
        })
        .map_err(|e| Error::InvalidArgument(format!("starting the scheduler: {e}")))?;
    let app = Arc::new(App {
        options: options.clone(),
        tokenizer,
        vocab,
        jobs,
        metrics,
        next_id: AtomicU64::new(1),
        grammars: std::sync::OnceLock::new(),
    });
    let api = Router::new()
        .route("/v1/models", get(handlers::models))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize));
    let router = Router::new()
        .merge(api)
        .route("/health", get(health))
        .route("/metrics", get(handlers::metrics))
        .fallback(|request: Request| async move { ApiError::not_found(request.uri().path()) })
        .method_not_allowed_fallback(|request: Request| async move {
            ApiError::method_not_allowed(request.method().as_str(), request.uri().path())
        })
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .with_state(app);
    Ok((router, cached_slots))
}

/// 200 while the engine runs, 503 once it has stopped.
async fn health(State(app): State<Arc<App>>) -> Response {
    if app.jobs.is_closed() {
        return ApiError::unavailable("the engine has stopped").into_response();
    }
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Refuses `/v1/*` without the API key, when the server has one.
async fn authorize(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(key) = &app.options.api_key {
        let given = request.headers().get("authorization").and_then(|v| v.to_str().ok());
        if given.and_then(|v| v.strip_prefix("Bearer ")) != Some(key.as_str()) {
            Metrics::add(&app.metrics.failed_requests, 1);
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Events of a job until it ends.
type Events = UnboundedReceiver<JobEvent>;
