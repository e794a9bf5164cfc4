//! One trait for every way of reaching a model.

use std::time::Duration;

use async_trait::async_trait;

use pmpo_store::Workspace;

use crate::host::Brief;
use crate::{AiError, ChatRequest, Completion, EndpointKind, Phase};

/// Who is asking: for messages (a replay miss names the stage) and logs,
/// and, for the host, where a question is kept and what it is about.
#[derive(Debug, Clone, Copy)]
pub struct CallInfo<'a> {
    pub stage: &'a str,
    pub phase: Phase,
    pub run_id: &'a str,
    pub workspace: Option<&'a Workspace>,
    pub brief: Option<&'a Brief>,
}

/// A model endpoint. `complete` makes one attempt: retries, timeouts,
/// cancellation, fallback and logging are the client's (so every endpoint
/// gets them the same way, and a circuit breaker can wrap this trait later).
#[async_trait]
pub trait Endpoint: Send + Sync {
    fn name(&self) -> &str;
    fn kind(&self) -> EndpointKind;
    /// Where it is (a URL, a program, a file), without secrets.
    fn location(&self) -> String;
    /// Whether it can answer now. `timeout` bounds the probe.
    async fn probe(&self, timeout: Duration) -> Result<(), AiError>;
    /// The models the endpoint offers, when it can say (used when no model is configured).
    async fn models(&self, _timeout: Duration) -> Result<Vec<String>, AiError> {
        Ok(Vec::new())
    }
    /// The endpoint and model that originally answered this request, for an
    /// endpoint that replays recorded answers (so a replayed failure reads as
    /// the recorded one did).
    fn recorded_origin(&self, _req: &ChatRequest) -> Option<(String, String)> {
        None
    }
    /// One request; `model` is already chosen.
    async fn complete(
        &self,
        call: CallInfo<'_>,
        model: &str,
        req: &ChatRequest,
    ) -> Result<Completion, AiError>;
}
