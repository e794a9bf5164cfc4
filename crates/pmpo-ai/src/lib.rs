//! pmpo's model client.
//!
//! ```text
//! AiConfig::load(pmpo.toml + environment + flags)
//!   -> Client::new(config)            endpoints behind one trait, per-phase routes
//!   -> client.complete(&call, &req)   route (probe + fallback), retry, record/replay, routing log
//! ```
//!
//! Endpoints: OpenAI-compatible chat completions (OpenAI and local servers such
//! as Ollama, vLLM, llama.cpp's server, LM Studio), the Anthropic Messages API,
//! a local `command` (prompt on stdin, answer on stdout) and `replay` (answers
//! from a recorded cassette). API keys live in [`Secret`]s: they are sent in
//! request headers and never written to a log, a cassette, an event or an error.

pub mod answer;
pub mod cassette;
pub mod client;
pub mod command;
pub mod config;
pub mod endpoint;
pub mod host;
pub mod http;
pub mod schema;
pub mod template;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::{ANSWERS_DIR, Answer, CallContext, Client, EndpointHealth, ROUTING_LOG};
pub use config::{AiConfig, ConfigError, EndpointConfig, EndpointKind, Overrides, Route};
pub use endpoint::Endpoint;

/// The phases of the PMPO loop; each may be routed to its own endpoint and model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Specify,
    Plan,
    Execute,
    Reflect,
    Persist,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Specify,
        Phase::Plan,
        Phase::Execute,
        Phase::Reflect,
        Phase::Persist,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Specify => "specify",
            Phase::Plan => "plan",
            Phase::Execute => "execute",
            Phase::Reflect => "reflect",
            Phase::Persist => "persist",
        }
    }

    /// Accepts `execute` and the reference layout's `refiner-execute`.
    pub fn parse(name: &str) -> Option<Phase> {
        let name = name.strip_prefix("refiner-").unwrap_or(name);
        Phase::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// What is asked of a model; the same on every endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

impl ChatRequest {
    pub fn user(prompt: impl Into<String>) -> Self {
        ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: prompt.into(),
            }],
            ..Default::default()
        }
    }

    /// The hash a cassette matches on: everything that shapes the answer
    /// except where it is sent (so a replay needs no endpoint configuration).
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        blake3::hash(&bytes).to_hex()[..32].to_string()
    }

    /// The first user message, shortened, for messages about this request.
    pub fn gist(&self) -> String {
        let text = self
            .messages
            .first()
            .map(|m| m.content.as_str())
            .unwrap_or("");
        let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() > 120 {
            format!("{}...", one_line.chars().take(120).collect::<String>())
        } else {
            one_line
        }
    }
}

/// Why a model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    Stop,
    /// The answer hit the token limit and is cut off.
    Length,
    /// The model or the provider refused.
    Refused,
    Other,
}

/// One answer from an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub finish: Finish,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<u64>,
}

/// A secret (an API key). It prints as `***` and is never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for a request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every occurrence of a secret in text that may come back from a
/// server or a program (an echoed header, a URL) before it is shown or logged.
pub fn redact(text: &str, secret: Option<&Secret>) -> String {
    match secret {
        Some(s) if s.0.len() >= 4 && text.contains(&s.0) => text.replace(&s.0, "[redacted]"),
        _ => text.to_string(),
    }
}

/// Kinds of model-call failure; each has its own message and hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotConfigured,
    /// 401/403: the key is wrong or lacks access.
    Auth,
    UnknownModel,
    /// The provider or the model refused (content policy, refusal).
    Refused,
    /// 400 and similar: the request was not accepted.
    BadRequest,
    RateLimited,
    ServerError,
    Unreachable,
    Timeout,
    Cancelled,
    EmptyAnswer,
    Truncated,
    /// The server answered something that is not the expected wire format.
    BadResponse,
    /// Replay: the cassette has no answer for this request.
    NotRecorded,
    /// A local `command` endpoint failed.
    CommandFailed,
    Io,
    /// The host (`via = "host"`) has not answered yet: the caller pauses
    /// with the question ([`AiError::question`]).
    AwaitingHost,
}

impl ErrorKind {
    /// Worth another attempt at the same endpoint.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorKind::RateLimited | ErrorKind::ServerError)
    }
    /// An outage: the endpoint could not be reached, did not answer in time or
    /// failed on its side (a local command that failed to run included). Only
    /// these count against the endpoint's circuit breaker.
    pub fn outage(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::ServerError
                | ErrorKind::Unreachable
                | ErrorKind::Timeout
                | ErrorKind::CommandFailed
        )
    }
    /// The endpoint answered, but the answer cannot be used (cut off, refused,
    /// empty): a fact about this answer, not about the endpoint's health.
    pub fn answer_quality(self) -> bool {
        matches!(
            self,
            ErrorKind::Truncated | ErrorKind::Refused | ErrorKind::EmptyAnswer
        )
    }
    /// The endpoint itself answered with this failure (an HTTP error, a
    /// malformed answer, a failing command): what a cassette records of a
    /// call that got no answer.
    pub fn said_by_endpoint(self) -> bool {
        matches!(
            self,
            ErrorKind::Auth
                | ErrorKind::UnknownModel
                | ErrorKind::Refused
                | ErrorKind::BadRequest
                | ErrorKind::RateLimited
                | ErrorKind::ServerError
                | ErrorKind::BadResponse
                | ErrorKind::CommandFailed
        )
    }
    /// The kind a name (`as_str`) stands for.
    pub fn parse(name: &str) -> Option<ErrorKind> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }
    /// A failure of the endpoint itself (not of this request): a fallback may help.
    pub fn endpoint_down(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::ServerError
                | ErrorKind::Unreachable
                | ErrorKind::Timeout
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotConfigured => "not_configured",
            ErrorKind::Auth => "auth",
            ErrorKind::UnknownModel => "unknown_model",
            ErrorKind::Refused => "refused",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::EmptyAnswer => "empty_answer",
            ErrorKind::Truncated => "truncated",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::NotRecorded => "not_recorded",
            ErrorKind::CommandFailed => "command_failed",
            ErrorKind::Io => "io",
            ErrorKind::AwaitingHost => "awaiting_host",
        }
    }
}

/// A model call failed. Messages never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AiError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    /// The server's Retry-After, when it sent one.
    pub retry_after: Option<Duration>,
    /// The answer that was received and rejected (cut off, refused, empty),
    /// so the caller can keep it and say where.
    pub answer: Option<Box<Rejected>>,
    /// The question the host must answer ([`ErrorKind::AwaitingHost`]).
    pub question: Option<Box<host::Question>>,
}

/// An answer the client received but did not accept, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub completion: Completion,
    pub endpoint: String,
    pub model: String,
    pub request_hash: String,
    /// Where the client kept it (`.state/ai/<run>/<stage>/answer-N.txt`), when it could.
    pub kept: Option<String>,
}

impl AiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AiError {
            kind,
            message: message.into(),
            hint: None,
            retry_after: None,
            answer: None,
            question: None,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}
