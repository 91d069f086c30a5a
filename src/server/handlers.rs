//! The endpoints: a request becomes a job for the scheduler, and its events become OpenAI's
//! response, whole or as server-sent events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc::unbounded_channel;

use super::api::{self, ChatRequest, Checked, CompletionRequest, Sampling};
use super::error::ApiError;
use super::logprobs::Reports;
use super::metrics::Metrics;
use super::scheduler::{FinishReason, Job, JobEvent};
use super::{App, Events};

pub async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{ "id": app.options.model_id, "object": "model", "created": now(), "owned_by": "rwkv-wgpu" }],
    }))
}

pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let text = app.metrics.render(app.options.max_batch);
    ([("content-type", "text/plain; version=0.0.4")], text)
}

pub async fn completions(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    answer(&app, complete(&app, body, Endpoint::Completion).await)
}

pub async fn chat_completions(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    answer(&app, complete(&app, body, Endpoint::Chat).await)
}

fn answer(app: &App, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|error| {
        // The scheduler counts the jobs it fails (500), streamed or not.
        if error.status != StatusCode::INTERNAL_SERVER_ERROR {
            Metrics::add(&app.metrics.failed_requests, 1);
        }
        error.into_response()
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Completion,
    Chat,
}

/// What a response needs besides the generated text.
struct Reply {
    endpoint: Endpoint,
    id: String,
    model: String,
    created: u64,
    prompt_tokens: usize,
    /// Whether the request asked for log-probabilities.
    logprobs: bool,
}

async fn complete(
    app: &App,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    Metrics::add(&app.metrics.requests, 1);
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(format!(
            "the request body is larger than {} bytes",
            app.options.max_body_bytes
        )),
        _ => ApiError::bad_request(rejection.body_text()),
    })?;
    let (pieces, checkpoints_wanted, sampling, default_max, mut stop) = match endpoint {
        Endpoint::Completion => {
            let (prompt, sampling) = api::parse::<CompletionRequest>(&body)?.prompt()?;
            (vec![prompt], false, sampling, 16.min(app.options.max_tokens), Vec::new())
        }
        Endpoint::Chat => {
            let request = api::parse::<ChatRequest>(&body)?;
            let pieces = app.options.template.render(&request.messages()?)?;
            (
                pieces,
                true,
                request.sampling,
                app.options.max_tokens.min(1024),
                app.options.template.stop.clone(),
            )
        }
    };
    check_model(app, &sampling)?;
    let checked: Checked = sampling.check(default_max, app.options.max_tokens)?;
    if let Some((id, _)) = checked.sampler.bias().iter().find(|&&(id, _)| id as usize >= app.vocab) {
        return Err(ApiError::bad_param(
            "logit_bias",
            format!("token {id} is beyond the vocabulary of {}", app.vocab),
        ));
    }
    stop.extend(checked.stop.iter().cloned());

    let mut prompt = Vec::new();
    let mut checkpoints = Vec::new();
    for piece in &pieces {
        prompt.extend(app.tokenizer.encode(piece).map_err(|e| ApiError::bad_request(e.to_string()))?);
        checkpoints.push(prompt.len());
    }
    // Worth keeping: the end of the first message (a system prompt many requests share) and of
    // the last two (where the previous turn ended); a checkpoint per message of a long
    // conversation would split its prompt into as many steps and fill the cache.
    let boundaries = checkpoints.len().saturating_sub(1);
    checkpoints.truncate(boundaries);
    if !checkpoints_wanted {
        checkpoints.clear();
    } else if boundaries > 3 {
        checkpoints.drain(1..boundaries - 2);
    }
    if prompt.is_empty() {
        return Err(ApiError::bad_param("prompt", "the prompt is empty"));
    }
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= app.vocab) {
        return Err(ApiError::bad_param(
            "prompt",
            format!("token {id} is beyond the model's vocabulary of {}", app.vocab),
        ));
    }
    if prompt.len() > app.options.max_prompt_tokens {
        return Err(ApiError::too_large(format!(
            "the prompt is {} tokens; this server takes at most {}",
            prompt.len(),
            app.options.max_prompt_tokens
        )));
    }
    let grammar = checked.grammar.as_ref().map(|grammar| app.compile(grammar)).transpose()?;
    let wants_logprobs = checked.sampler.logprobs.is_some();
    let (events, mut receiver) = unbounded_channel();
    let job = Job {
        prompt: prompt.clone(),
        checkpoints,
        max_tokens: checked.max_tokens,
        stop,
        sampler: checked.sampler,
        grammar,
        events,
    };
    app.submit(job)?;
    let prefix = if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
    let reply = Reply {
        endpoint,
        id: format!("{prefix}-{}", app.next_id.fetch_add(1, Ordering::Relaxed)),
        model: app.options.model_id.clone(),
        created: now(),
        prompt_tokens: prompt.len(),
        logprobs: wants_logprobs,
    };
    let cached_tokens = match receiver.recv().await {
        Some(JobEvent::Started { cached_tokens }) => cached_tokens,
        Some(JobEvent::Failed(message)) => return Err(ApiError::internal(message)),
        _ => return Err(ApiError::unavailable("the engine stopped before the request started")),
    };
    if checked.stream {
        Ok(stream(reply, cached_tokens, checked.include_usage, receiver).into_response())
    } else {
        whole(reply, cached_tokens, receiver).await
    }
}

fn check_model(app: &App, sampling: &Sampling) -> Result<(), ApiError> {
    match &sampling.model {
        Some(model) if model != &app.options.model_id => {
            Err(ApiError::unknown_model(model, &app.options.model_id))
        }
        _ => Ok(()),
    }
}

/// The whole response, once the job has ended.
async fn whole(reply: Reply, cached_tokens: usize, mut events: Events) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut reports = Reports::default();
    loop {
        match events.recv().await {
            Some(JobEvent::Text(piece)) => text += &piece,
            Some(JobEvent::Logprobs(report)) => reports.push(report),
            Some(JobEvent::Finished { reason, completion_tokens }) => {
                let usage = usage(reply.prompt_tokens, cached_tokens, completion_tokens);
                let choice = match reply.endpoint {
                    Endpoint::Completion => {
                        json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": reason.as_str() })
                    }
                    Endpoint::Chat => json!({
                        "index": 0,
                        "message": { "role": "assistant", "content": text },
                        "logprobs": null,
                        "finish_reason": reason.as_str(),
                    }),
                };
                let mut body = reply.envelope(false);
                body["choices"] = json!([choice]);
                if reply.logprobs {
                    body["choices"][0]["logprobs"] = reports.take(reply.endpoint == Endpoint::Chat);
                }
                body["usage"] = usage;
                return Ok(Json(body).into_response());
            }
            Some(JobEvent::Failed(message)) => return Err(ApiError::internal(message)),
            Some(JobEvent::Started { .. }) => {}
            None => return Err(ApiError::unavailable("the engine stopped during the request")),
        }
    }
}

/// The response as server-sent events: a chunk per piece of text, one with the finish reason,
/// one with the usage when asked for, then `[DONE]`. Dropping it (the client went away) drops
/// the events' receiver, which cancels the job.
fn stream(reply: Reply, cached_tokens: usize, include_usage: bool, events: Events) -> impl IntoResponse {
    let first = (reply.endpoint == Endpoint::Chat)
        .then(|| reply.chunk(json!({ "role": "assistant", "content": "" }), None));
    let state = Streaming {
        events,
        reply,
        queued: first.into_iter().collect(),
        done: false,
        reports: Reports::default(),
        cached_tokens,
        include_usage,
    };
    Sse::new(futures_util::stream::unfold(state, Streaming::next)).keep_alive(KeepAlive::default())
}

/// Where a stream is: the events still to come and the chunks ready to go.
struct Streaming {
    events: Events,
    reply: Reply,
    queued: VecDeque<Value>,
    done: bool,
    reports: Reports,
    cached_tokens: usize,
    include_usage: bool,
}

impl Streaming {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Streaming)> {
        loop {
            if let Some(next) = self.queued.pop_front() {
                return Some((Ok(event(&next)), self));
            }
            if self.done {
                return None;
            }
            match self.events.recv().await {
                Some(JobEvent::Logprobs(report)) => self.reports.push(report),
                Some(JobEvent::Text(text)) => {
                    let chunk = self.with_logprobs(self.reply.text_chunk(&text));
                    self.queued.push_back(chunk);
                }
                Some(JobEvent::Started { .. }) => {}
                Some(JobEvent::Finished { reason, completion_tokens }) => {
                    let chunk = self.with_logprobs(self.reply.finish_chunk(reason));
                    self.queued.push_back(chunk);
                    if self.include_usage {
                        let mut last = self.reply.envelope(true);
                        last["choices"] = json!([]);
                        last["usage"] =
                            usage(self.reply.prompt_tokens, self.cached_tokens, completion_tokens);
                        self.queued.push_back(last);
                    }
                    self.queued.push_back(Value::String("[DONE]".into()));
                    self.done = true;
                }
                Some(JobEvent::Failed(message)) => {
                    self.queued.push_back(ApiError::internal(message).body());
                    self.queued.push_back(Value::String("[DONE]".into()));
                    self.done = true;
                }
                None => return None,
            }
        }
    }

    /// The chunk with the log-probabilities of the tokens since the last one, when asked for.
    fn with_logprobs(&mut self, mut chunk: Value) -> Value {
        if self.reply.logprobs {
            chunk["choices"][0]["logprobs"] = self.reports.take(self.reply.endpoint == Endpoint::Chat);
        }
        chunk
    }
}

/// `[DONE]` goes out as is, everything else as JSON.
fn event(value: &Value) -> Event {
    match value {
        Value::String(done) => Event::default().data(done.as_str()),
        other => Event::default().data(other.to_string()),
    }
}

impl Reply {
    fn envelope(&self, chunk: bool) -> Value {
        let object = match (self.endpoint, chunk) {
            (Endpoint::Completion, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        };
        json!({ "id": self.id, "object": object, "created": self.created, "model": self.model })
    }

    fn chunk(&self, delta: Value, finish: Option<FinishReason>) -> Value {
        let finish = finish.map(FinishReason::as_str);
        let choice = match self.endpoint {
            Endpoint::Completion => {
                json!({ "index": 0, "text": delta["content"], "logprobs": null, "finish_reason": finish })
            }
            Endpoint::Chat => {
                json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
            }
        };
        let mut body = self.envelope(true);
        body["choices"] = json!([choice]);
        body
    }

    fn text_chunk(&self, text: &str) -> Value {
        self.chunk(json!({ "content": text }), None)
    }

    fn finish_chunk(&self, reason: FinishReason) -> Value {
        let delta = match self.endpoint {
            Endpoint::Completion => json!({ "content": "" }),
            Endpoint::Chat => json!({}),
        };
        self.chunk(delta, Some(reason))
    }
}

fn usage(prompt_tokens: usize, cached_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": { "cached_tokens": cached_tokens },
    })
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
