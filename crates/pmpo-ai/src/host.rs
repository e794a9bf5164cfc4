//! The agent host as the model (`via = "host"`).
//!
//! An agent host (Claude Code, Codex, Cursor...) already has a strong model.
//! A call routed to the endpoint named [`HOST`] is answered, in this order:
//!
//! 1. by an answer already given to this very question (`pmpo answer`, or the
//!    MCP `answer` tool), kept in [`ANSWERS_DIR`] under the question's id;
//! 2. by the host's model through MCP sampling, when the MCP client declared
//!    that capability (a [`Sampler`]);
//! 3. otherwise the question is written to [`QUESTIONS_DIR`] and the call
//!    fails with [`ErrorKind::AwaitingHost`], carrying the [`Question`]: the
//!    caller pauses durably and a re-run asks again, finding the answer.
//!
//! A question's id is the hash of who asks (the run or refinement, the step)
//! and of the request ([`ChatRequest::hash`]), so a re-run that asks the same
//! thing finds the answer, while a changed question (another iteration, a
//! repair round, a new cycle) is a new one that the host answers afresh. The answer goes
//! through the same client path as any model's: checked, logged, recorded to
//! a cassette, so a host-driven run replays offline.
//!
//! The host only answers questions. What it says is read by the phase that
//! asked, with the phase's schema and its limits; it never sets a stage's
//! status or a measured constraint.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pmpo_store::{Durability, Workspace, now_rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::endpoint::{CallInfo, Endpoint};
use crate::{AiError, ChatRequest, Completion, EndpointKind, ErrorKind, Finish, Message, Phase};

/// The reserved endpoint name of the host.
pub const HOST: &str = "host";
/// Where questions for the host are kept, one `<id>.json` each.
pub const QUESTIONS_DIR: &str = ".state/host/questions";
/// Where answers given to the host's questions are kept, one `<id>.txt` each.
pub const ANSWERS_DIR: &str = ".state/host/answers";
/// The largest answer the host may give (a phase's answer is a few KB).
pub const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Every exchange with the host in this workspace, as a cassette (JSON
/// lines, as `--record` writes): `--replay` it to run a host-driven
/// refinement again offline.
pub const CASSETTE: &str = ".state/host/cassette.jsonl";

/// What a question is about, beyond its prompt; given by the caller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Brief {
    /// The JSON Schema the answer must satisfy (a JSON object in the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Workspace-relative files the question refers to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Constraints a check measures: not the host's to judge (any verdict
    /// the host gives for them is ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measured: Vec<String>,
}

/// A question waiting for the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// The question's id (see the module docs).
    pub id: String,
    /// The run (or refinement) that asks.
    pub run_id: String,
    pub phase: Phase,
    /// The stage (or the loop step, such as `plan-2`) that asks.
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The conversation so far; the last message is the question. A repair
    /// round carries the rejected answer and its problems.
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub brief: Brief,
    pub asked_at: String,
}

impl Question {
    /// The question made from a request.
    pub fn new(run_id: &str, phase: Phase, stage: &str, req: &ChatRequest, brief: Brief) -> Self {
        let who = format!("{run_id}\n{stage}\n{}", req.hash());
        Question {
            id: blake3::hash(who.as_bytes()).to_hex()[..32].to_string(),
            run_id: run_id.to_string(),
            phase,
            stage: stage.to_string(),
            system: req.system.clone(),
            messages: req.messages.clone(),
            brief,
            asked_at: now_rfc3339(),
        }
    }

    /// The text of the last message: what is asked now.
    pub fn prompt(&self) -> &str {
        self.messages.last().map_or("", |m| m.content.as_str())
    }

    /// The file of this question in the workspace.
    pub fn path(id: &str) -> String {
        format!("{QUESTIONS_DIR}/{id}.json")
    }
}

/// Asks the host's model directly (MCP `sampling/createMessage`).
#[async_trait]
pub trait Sampler: Send + Sync {
    /// One answer to the question (the request it was made from is given too).
    async fn sample(&self, question: &Question, req: &ChatRequest) -> Result<Completion, AiError>;
}

/// The endpoint that stands for the host.
pub struct HostEndpoint {
    name: String,
    sampler: Option<Arc<dyn Sampler>>,
}

impl HostEndpoint {
    /// The host answering through pending questions only.
    pub fn new(name: &str) -> Self {
        HostEndpoint {
            name: name.to_string(),
            sampler: None,
        }
    }

    /// The host answering through sampling (and given answers first).
    pub fn with_sampler(name: &str, sampler: Arc<dyn Sampler>) -> Self {
        HostEndpoint {
            name: name.to_string(),
            sampler: Some(sampler),
        }
    }
}

/// The file an answer to question `id` is kept in.
pub fn answer_path(id: &str) -> String {
    format!("{ANSWERS_DIR}/{id}.txt")
}

/// Whether `id` can be a question id (hex, as [`ChatRequest::hash`] makes).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The answer given to question `id`, if any.
pub fn given_answer(ws: &Workspace, id: &str) -> Option<String> {
    if !valid_id(id) {
        return None;
    }
    let bytes = ws.read_own(&answer_path(id)).ok().flatten()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A question kept in the workspace.
pub fn read_question(ws: &Workspace, id: &str) -> Option<Question> {
    if !valid_id(id) {
        return None;
    }
    let bytes = ws.read_own(&Question::path(id)).ok().flatten()?;
    serde_json::from_slice(&bytes).ok()
}

/// The question a step (`stage`) of a run waits on: the newest one it asked
/// in that run that has no answer yet.
pub fn waiting_question(ws: &Workspace, run_id: &str, stage: &str) -> Option<Question> {
    let dir = ws.resolve(QUESTIONS_DIR).ok()?;
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            read_question(ws, name.strip_suffix(".json")?)
        })
        .filter(|q| q.run_id == run_id && q.stage == stage)
        .filter(|q| given_answer(ws, &q.id).is_none())
        .max_by(|a, b| a.asked_at.cmp(&b.asked_at))
}

/// Keeps a question (durably: a re-run and `pmpo answer` read it).
pub fn keep_question(ws: &Workspace, q: &Question) -> Result<(), pmpo_store::StoreError> {
    ws.create_dir_all(QUESTIONS_DIR)?;
    let mut bytes = serde_json::to_vec_pretty(q).unwrap_or_default();
    bytes.push(b'\n');
    // A key an input holds is not kept in the question (as in a cassette).
    let bytes = pmpo_store::secrets::redact_bytes(&bytes);
    ws.write_atomic(&Question::path(&q.id), &bytes, Durability::Durable)?;
    Ok(())
}

/// Keeps the answer to question `id` (durably, before the run goes on).
/// The question must have been asked in this workspace.
pub fn give_answer(ws: &Workspace, id: &str, text: &str) -> Result<(), String> {
    if read_question(ws, id).is_none() {
        return Err(format!(
            "no question `{id}` was asked in this workspace (questions are in {QUESTIONS_DIR}/)"
        ));
    }
    if text.len() > MAX_ANSWER_BYTES {
        return Err(format!(
            "the answer is {} bytes; an answer may be at most {} MiB",
            text.len(),
            MAX_ANSWER_BYTES >> 20
        ));
    }
    ws.create_dir_all(ANSWERS_DIR).map_err(|e| e.to_string())?;
    // A key in the answer is not kept (the phase reads the kept answer).
    let text = pmpo_store::secrets::redact(text);
    ws.write_atomic(&answer_path(id), text.as_bytes(), Durability::Durable)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Appends an exchange with the host to the workspace's host cassette.
pub fn record(ws: &Workspace, entry: &crate::cassette::CassetteEntry) -> Result<(), AiError> {
    let io = |e: pmpo_store::StoreError| {
        AiError::new(
            ErrorKind::Io,
            format!("cannot keep the host's answer in {CASSETTE}: {e}"),
        )
    };
    let mut line = serde_json::to_vec(entry)
        .map_err(|e| AiError::new(ErrorKind::Io, format!("cassette entry: {e}")))?;
    line.push(b'\n');
    let line = pmpo_store::secrets::redact_bytes(&line).into_owned();
    ws.create_dir_all(".state/host").map_err(io)?;
    ws.append(CASSETTE, &line).map_err(io)
}

/// The error that says a question waits for the host.
pub fn awaiting(q: Question) -> AiError {
    let mut e = AiError::new(
        ErrorKind::AwaitingHost,
        format!(
            "the {} step `{}` waits for the host's answer (question {})",
            q.phase, q.stage, q.id
        ),
    )
    .hint(format!(
        "answer with `pmpo answer` (the question is in {}), or through the MCP `answer` tool",
        Question::path(&q.id)
    ));
    e.question = Some(Box::new(q));
    e
}

#[async_trait]
impl Endpoint for HostEndpoint {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> EndpointKind {
        EndpointKind::Host
    }
    fn location(&self) -> String {
        match self.sampler {
            Some(_) => "the agent host (MCP sampling)".into(),
            None => "the agent host (pending questions)".into(),
        }
    }
    async fn probe(&self, _timeout: Duration) -> Result<(), AiError> {
        Ok(())
    }
    async fn complete(
        &self,
        call: CallInfo<'_>,
        _model: &str,
        req: &ChatRequest,
    ) -> Result<Completion, AiError> {
        let question = Question::new(
            call.run_id,
            call.phase,
            call.stage,
            req,
            call.brief.cloned().unwrap_or_default(),
        );
        if let Some(ws) = call.workspace
            && let Some(text) = given_answer(ws, &question.id)
        {
            return Ok(Completion {
                text,
                finish: Finish::Stop,
                tokens_in: None,
                tokens_out: None,
            });
        }
        if let Some(s) = &self.sampler {
            return s.sample(&question, req).await;
        }
        let Some(ws) = call.workspace else {
            return Err(AiError::new(
                ErrorKind::NotConfigured,
                "the host can answer only a call made in a workspace",
            ));
        };
        keep_question(ws, &question).map_err(|e| {
            AiError::new(
                ErrorKind::Io,
                format!("the question for the host could not be kept: {e}"),
            )
        })?;
        Err(awaiting(question))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        (dir, ws)
    }

    fn call<'a>(ws: &'a Workspace, brief: Option<&'a Brief>) -> CallInfo<'a> {
        CallInfo {
            stage: "plan-1",
            phase: Phase::Plan,
            run_id: "r1",
            workspace: Some(ws),
            brief,
        }
    }

    #[tokio::test]
    async fn a_question_waits_until_it_is_answered_then_the_answer_is_given() {
        let (_d, ws) = ws();
        let ep = HostEndpoint::new(HOST);
        let req = ChatRequest::user("plan it");
        let brief = Brief {
            schema: Some(serde_json::json!({"type": "object"})),
            files: vec!["logo.svg".into()],
            measured: vec!["size".into()],
        };
        let e = ep
            .complete(call(&ws, Some(&brief)), "", &req)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::AwaitingHost);
        let q = e.question.unwrap();
        assert_eq!(
            q.id,
            Question::new("r1", Phase::Plan, "plan-1", &req, Brief::default()).id
        );
        // Another run, or another step, asking the same is another question.
        assert_ne!(
            q.id,
            Question::new("r2", Phase::Plan, "plan-1", &req, Brief::default()).id
        );
        assert_ne!(
            q.id,
            Question::new("r1", Phase::Plan, "plan-2", &req, Brief::default()).id
        );
        assert_eq!(q.prompt(), "plan it");
        assert_eq!(read_question(&ws, &q.id).unwrap().brief, brief);
        // An answer to an unknown question is refused.
        assert!(give_answer(&ws, "abcdef", "{}").is_err());
        assert!(give_answer(&ws, "../x", "{}").is_err());
        give_answer(&ws, &q.id, "{\"stages\": []}").unwrap();
        let c = ep
            .complete(call(&ws, Some(&brief)), "", &req)
            .await
            .unwrap();
        assert_eq!(c.text, "{\"stages\": []}");
        // Another question is not answered by it.
        let other = ChatRequest::user("plan it again");
        let e = ep.complete(call(&ws, None), "", &other).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::AwaitingHost);
    }

    struct Echo;
    #[async_trait]
    impl Sampler for Echo {
        async fn sample(&self, q: &Question, _req: &ChatRequest) -> Result<Completion, AiError> {
            Ok(Completion {
                text: format!("sampled {}", q.stage),
                finish: Finish::Stop,
                tokens_in: None,
                tokens_out: None,
            })
        }
    }

    #[tokio::test]
    async fn a_sampler_answers_without_pausing() {
        let (_d, ws) = ws();
        let ep = HostEndpoint::with_sampler(HOST, Arc::new(Echo));
        let c = ep
            .complete(call(&ws, None), "", &ChatRequest::user("x"))
            .await
            .unwrap();
        assert_eq!(c.text, "sampled plan-1");
        assert!(ws.read_own(QUESTIONS_DIR).ok().flatten().is_none());
    }
}
