//! Errors as OpenAI's API returns them: a status and `{"error": {message, type, param, code}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<&'static str>,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: String) -> ApiError {
        ApiError { status, kind, code, param: None, message }
    }

    /// 400: malformed JSON or a bad parameter.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, message.into())
    }

    /// 400 naming the parameter at fault.
    pub fn bad_param(param: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { param: Some(param), ..Self::bad_request(message) }
    }

    pub fn unauthorized() -> ApiError {
        let message = "missing or wrong API key: send `Authorization: Bearer <key>`".to_string();
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", Some("invalid_api_key"), message)
    }

    pub fn unknown_model(asked: &str, served: &str) -> ApiError {
        let message = format!("the model `{asked}` does not exist here; this server runs `{served}`");
        ApiError {
            param: Some("model"),
            ..Self::new(StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found"), message)
        }
    }

    pub fn not_found(path: &str) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", None, format!("no endpoint {path}"))
    }

    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        let message = format!("{path} does not take {method}");
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", None, message)
    }

    /// 413: a body or a prompt larger than the server takes.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", Some("too_large"), message.into())
    }

    /// 429: the queue of waiting requests is full.
    pub fn queue_full(limit: usize) -> ApiError {
        let message = format!("the server is busy: {limit} requests are already waiting; retry later");
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("queue_full"), message)
    }

    /// 503: the engine has stopped.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", None, message.into())
    }

    /// 500: the engine failed while running the request.
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, message.into())
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
