//! MCP sampling: the host's model answers a phase's question directly
//! (`sampling/createMessage`), when the client declared the `sampling`
//! capability in `initialize`, and only then.
//!
//! The question's system prompt and conversation go as they are, with the
//! JSON schema the answer must satisfy added to the system prompt. The answer
//! is read by the phase exactly as a model's: schema check, one repair
//! question, the adapter's fallback. A client that refuses, fails, goes away
//! or does not answer in time gives an [`AiError`], never a hang.
//!
//! The SDK marks sampling deprecated (a later protocol replaces it), but it is
//! what the hosts of today offer; the capability check keeps it to clients
//! that declare it.
#![allow(deprecated)]

use std::time::Duration;

use async_trait::async_trait;
use pmpo_ai::host::{Question, Sampler};
use pmpo_ai::{AiError, ChatRequest, Completion, ErrorKind, Finish};
use rmcp::model::CreateMessageRequestParams;
use rmcp::{Peer, RoleServer, ServiceError};
use serde_json::{Value, json};

/// How long the host's model may take for one answer.
const ANSWER_TIME: Duration = Duration::from_secs(600);

/// Whether the client declared the sampling capability.
pub(super) fn client_samples(peer: &Peer<RoleServer>) -> bool {
    peer.peer_info()
        .is_some_and(|info| info.capabilities.sampling.is_some())
}

/// Asks the client's model through `sampling/createMessage`.
pub(super) struct McpSampler {
    pub(super) peer: Peer<RoleServer>,
    /// The server's runtime (the loop runs on a runtime of its own thread).
    pub(super) handle: tokio::runtime::Handle,
    /// The refinement's: a client that goes away (or cancels) ends the wait.
    pub(super) cancel: tokio_util::sync::CancellationToken,
}

/// The request the question becomes.
fn params(q: &Question) -> Result<CreateMessageRequestParams, AiError> {
    let mut system = q.system.clone().unwrap_or_default();
    if let Some(schema) = &q.brief.schema {
        system.push_str("\n\nAnswer with one JSON object that satisfies this JSON Schema:\n");
        system.push_str(&schema.to_string());
    }
    if !q.brief.measured.is_empty() {
        system.push_str(&format!(
            "\n\nThese constraints are measured by checks, not judged by you: {}.",
            q.brief.measured.join(", ")
        ));
    }
    let messages: Vec<Value> = q
        .messages
        .iter()
        .map(|m| json!({"role": m.role, "content": {"type": "text", "text": m.content}}))
        .collect();
    serde_json::from_value(json!({
        "messages": messages,
        "systemPrompt": system,
        "includeContext": "none",
        "maxTokens": 8192,
        "metadata": {"pmpo_question": q.id, "phase": q.phase, "stage": q.stage},
    }))
    .map_err(|e| {
        AiError::new(
            ErrorKind::BadRequest,
            format!("cannot make the sampling request: {e}"),
        )
    })
}

/// The text of the client's answer (one text block, or the text blocks of a list).
fn answer_text(result: &Value) -> Option<String> {
    let content = &result["content"];
    let blocks: Vec<&Value> = match content {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    let text: Vec<&str> = blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect();
    (!text.is_empty()).then(|| text.join("\n"))
}

#[async_trait]
impl Sampler for McpSampler {
    async fn sample(&self, question: &Question, _req: &ChatRequest) -> Result<Completion, AiError> {
        let params = params(question)?;
        let peer = self.peer.clone();
        let asked = self
            .handle
            .spawn(async move { peer.create_message(params).await });
        let answered = tokio::select! {
            a = tokio::time::timeout(ANSWER_TIME, asked) => a,
            _ = self.cancel.cancelled() => {
                return Err(AiError::new(ErrorKind::Cancelled, "the refinement was cancelled while the host's model was asked (sampling)"));
            }
        };
        let result = match answered {
            Err(_) => {
                return Err(AiError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the host's model did not answer within {} s (sampling)",
                        ANSWER_TIME.as_secs()
                    ),
                ));
            }
            Ok(Err(e)) => return Err(AiError::new(ErrorKind::Io, format!("sampling: {e}"))),
            Ok(Ok(Err(ServiceError::McpError(e)))) => {
                return Err(AiError::new(
                    ErrorKind::Refused,
                    format!("the host refused the sampling request: {}", e.message),
                )
                .hint("answer through the pending question instead: a client without the sampling capability gets one"));
            }
            Ok(Ok(Err(e))) => {
                return Err(AiError::new(
                    ErrorKind::Unreachable,
                    format!("the host's model could not be asked (sampling): {e}"),
                ));
            }
            Ok(Ok(Ok(r))) => r,
        };
        let value = serde_json::to_value(&result).unwrap_or_default();
        let text = answer_text(&value).ok_or_else(|| {
            AiError::new(
                ErrorKind::EmptyAnswer,
                "the host's sampling answer has no text",
            )
        })?;
        let finish = match value["stopReason"].as_str() {
            Some("maxTokens") => Finish::Length,
            _ => Finish::Stop,
        };
        Ok(Completion {
            text,
            finish,
            tokens_in: None,
            tokens_out: None,
        })
    }
}
