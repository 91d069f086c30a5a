//! The OpenAI request bodies this server reads, checked into what the scheduler runs.

use serde::Deserialize;

use super::error::ApiError;
use crate::grammar::Grammar;
use crate::runtime::SamplerOptions;

/// A string or a list of strings (`prompt`, `stop`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(text) => vec![text],
            OneOrMany::Many(texts) => texts,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// What both endpoints share. Unknown fields are ignored, as clients send many.
#[derive(Debug, Deserialize)]
pub struct Sampling {
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    /// The chat endpoint's newer name for `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Not OpenAI's: the penalties' counts decay by this per token (the official `alpha_decay`).
    pub penalty_decay: Option<f32>,
    /// Not OpenAI's: keep tokens at least this share as likely as the most likely.
    pub min_p: Option<f32>,
    /// Not OpenAI's: typical sampling's share of the mass.
    pub typical_p: Option<f32>,
    /// Token id (as a string) to a bias in [-100, 100] added to its logit; -100 bans it.
    pub logit_bias: Option<std::collections::HashMap<String, f32>>,
    pub seed: Option<u64>,
    /// Chat: `true` to report each token's log-probability; completions: how many of the most
    /// likely tokens to report with it.
    pub logprobs: Option<serde_json::Value>,
    /// Chat: how many of the most likely tokens to report (0 to 20).
    pub top_logprobs: Option<usize>,
    pub stop: Option<OneOrMany>,
    /// `{"type": "text" | "json_object"}`, `{"type": "json_schema", "json_schema": {"schema":
    /// …}}`, or (not OpenAI's) `{"type": "regex", "regex": …}` and `{"type": "grammar",
    /// "grammar": …}` (Lark syntax).
    pub response_format: Option<serde_json::Value>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: OneOrMany,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// A message's content: text, or a list of parts of which only text is supported.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// Parses a body, as OpenAI's 400 when it is not the JSON the endpoint reads.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("malformed request body: {error}")))
}

impl CompletionRequest {
    pub fn prompt(self) -> Result<(String, Sampling), ApiError> {
        let mut prompts = self.prompt.into_vec();
        if prompts.len() != 1 {
            return Err(ApiError::bad_param("prompt", "give one prompt per request (a string)"));
        }
        Ok((prompts.remove(0), self.sampling))
    }
}

impl ChatRequest {
    /// The messages as (role, text).
    pub fn messages(&self) -> Result<Vec<(String, String)>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_param("messages", "`messages` must hold at least one message"));
        }
        self.messages
            .iter()
            .map(|message| {
                let text = match &message.content {
                    None => String::new(),
                    Some(Content::Text(text)) => text.clone(),
                    Some(Content::Parts(parts)) => parts
                        .iter()
                        .map(|part| match (&*part.kind, &part.text) {
                            ("text", Some(text)) => Ok(text.as_str()),
                            (kind, _) => Err(ApiError::bad_param(
                                "messages",
                                format!(
                                    "content parts of type `{kind}` are not supported: this model reads text"
                                ),
                            )),
                        })
                        .collect::<Result<String, _>>()?,
                };
                Ok((message.role.clone(), text))
            })
            .collect()
    }
}

/// The sampling a request asks for, checked.
pub struct Checked {
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub sampler: SamplerOptions,
    /// What the output must follow.
    pub grammar: Option<Grammar>,
    pub stream: bool,
    pub include_usage: bool,
}

impl Sampling {
    /// `default_max` when the request gives no `max_tokens`; `limit` bounds it.
    pub fn check(self, default_max: usize, limit: usize) -> Result<Checked, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_param("n", "this server returns one choice per request (n = 1)"));
        }
        let max_tokens = self.max_completion_tokens.or(self.max_tokens).unwrap_or(default_max);
        if max_tokens == 0 || max_tokens > limit {
            return Err(ApiError::bad_param(
                "max_tokens",
                format!("max_tokens must be 1 to {limit}, got {max_tokens}"),
            ));
        }
        let stop = self.stop.map(OneOrMany::into_vec).unwrap_or_default();
        if stop.len() > 4 || stop.iter().any(String::is_empty) {
            return Err(ApiError::bad_param("stop", "give up to 4 stop strings, none empty"));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad_param(
                "temperature",
                format!("temperature must be 0 to 2, got {temperature}"),
            ));
        }
        let penalty = |name: &'static str, value: Option<f32>| match value.unwrap_or(0.0) {
            p if (-2.0..=2.0).contains(&p) => Ok(p),
            p => Err(ApiError::bad_param(name, format!("{name} must be -2 to 2, got {p}"))),
        };
        let mut logit_bias = Vec::new();
        let mut banned = Vec::new();
        for (token, &bias) in self.logit_bias.iter().flatten() {
            let id: u32 = token
                .parse()
                .map_err(|_| ApiError::bad_param("logit_bias", format!("`{token}` is not a token id")))?;
            if !(-100.0..=100.0).contains(&bias) {
                return Err(ApiError::bad_param(
                    "logit_bias",
                    format!("bias {bias} of token {id} is not in [-100, 100]"),
                ));
            }
            if bias <= -100.0 {
                banned.push(id);
            } else {
                logit_bias.push((id, bias));
            }
        }
        use serde_json::Value;
        let logprobs = match &self.logprobs {
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(self.top_logprobs.unwrap_or(0)),
            Some(Value::Number(n)) => {
                let n =
                    n.as_u64().ok_or_else(|| ApiError::bad_param("logprobs", "logprobs must be 0 to 20"))?;
                Some(n as usize)
            }
            Some(_) => {
                return Err(ApiError::bad_param("logprobs", "logprobs must be true, false or 0 to 20"))
            }
        };
        if logprobs.is_some_and(|n| n > crate::kernels::MAX_TOP_LOGPROBS) {
            return Err(ApiError::bad_param("top_logprobs", "at most 20 top log-probabilities"));
        }
        let sampler = SamplerOptions {
            // Temperature 0 means the most likely token, as in OpenAI's API.
            greedy: temperature == 0.0,
            temperature: if temperature == 0.0 { 1.0 } else { temperature },
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
            presence_penalty: penalty("presence_penalty", self.presence_penalty)?,
            frequency_penalty: penalty("frequency_penalty", self.frequency_penalty)?,
            penalty_decay: self.penalty_decay.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            typical_p: self.typical_p.unwrap_or(1.0),
            logit_bias,
            banned,
            logprobs,
            seed: self.seed,
        };
        sampler.validate().map_err(|error| ApiError::bad_request(error.to_string()))?;
        Ok(Checked {
            max_tokens,
            stop,
            sampler,
            grammar: self.response_format.as_ref().map(response_format).transpose()?.flatten(),
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

/// The grammar a `response_format` asks for; `None` for plain text.
fn response_format(format: &serde_json::Value) -> Result<Option<Grammar>, ApiError> {
    use serde_json::Value;
    let bad = |message: &str| ApiError::bad_param("response_format", message.to_string());
    let text = |name: &str| match &format[name] {
        Value::String(text) => Ok(text.clone()),
        _ => Err(bad(&format!("a response_format of type `{name}` needs `{name}`: a string"))),
    };
    match format["type"].as_str() {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Grammar::JsonSchema(serde_json::json!({"type": "object"})))),
        Some("json_schema") => match &format["json_schema"]["schema"] {
            schema @ (Value::Object(_) | Value::Bool(_)) => Ok(Some(Grammar::JsonSchema(schema.clone()))),
            _ => {
                Err(bad("a response_format of type `json_schema` needs `json_schema.schema`: a JSON schema"))
            }
        },
        Some("regex") => Ok(Some(Grammar::Regex(text("regex")?))),
        Some("grammar") => Ok(Some(Grammar::Lark(text("grammar")?))),
        _ => Err(bad("response_format.type must be text, json_object, json_schema, regex or grammar")),
    }
}
