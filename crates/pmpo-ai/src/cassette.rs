//! Record and replay. A cassette is JSON lines, one model exchange each,
//! keyed by the request's hash. It holds prompts and answers, never keys or
//! headers. Every answer is recorded, the rejected ones too (cut off at the
//! token limit, refused, empty: `rejected` names why, `response` keeps the
//! finish reason and token counts), and so is an error the endpoint answered
//! with (`error`: kind, message, hint), so a replay reproduces the recorded
//! run, failures included. What no endpoint said (unreachable, timed out,
//! cancelled) is not recorded. Replaying answers every request from the cassette, in
//! the order recorded when the same request was made several times.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use pmpo_store::{Durability, Workspace};
use serde::{Deserialize, Serialize};

use crate::endpoint::{CallInfo, Endpoint};
use crate::{AiError, ChatRequest, Completion, EndpointKind, ErrorKind, Phase};

/// One recorded exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CassetteEntry {
    pub hash: String,
    pub stage: String,
    pub phase: Phase,
    pub endpoint: String,
    pub model: String,
    pub request: ChatRequest,
    /// The answer; absent when the endpoint answered with an error instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Completion>,
    /// Why the client rejected this answer (`truncated`, `refused`,
    /// `empty_answer`); absent for an accepted answer and in older cassettes.
    /// Informative only: a replay checks the answer again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// The error the endpoint answered with (an HTTP error, a malformed
    /// answer), when there was no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordedError>,
}

/// An endpoint's error as recorded: replayed with the same kind, message and hint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedError {
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl RecordedError {
    pub fn of(e: &AiError) -> RecordedError {
        RecordedError {
            kind: e.kind.as_str().to_string(),
            message: e.message.clone(),
            hint: e.hint.clone(),
        }
    }

    fn to_error(&self) -> AiError {
        // A kind this pmpo does not know still fails the call, as the endpoint's fault.
        let kind = ErrorKind::parse(&self.kind).unwrap_or(ErrorKind::BadResponse);
        let mut e = AiError::new(kind, self.message.clone());
        e.hint = self.hint.clone();
        e
    }
}

fn split(path: &Path) -> Result<(Workspace, String), AiError> {
    let io = |m: String| AiError::new(ErrorKind::Io, m);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io(format!("`{}` is not a file name", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let ws = Workspace::open(&dir).map_err(|e| io(format!("cassette: {e}")))?;
    Ok((ws, name))
}

/// Appends exchanges to a cassette (through the store, like every write).
pub struct Recorder {
    dir: Workspace,
    file: String,
    path: PathBuf,
    lock: Mutex<()>,
}

impl Recorder {
    /// Starts a new cassette at `path`, replacing an old one.
    pub fn create(path: &Path) -> Result<Recorder, AiError> {
        let (dir, file) = split(path)?;
        dir.write_atomic(&file, b"", Durability::Relaxed)
            .map_err(|e| AiError::new(ErrorKind::Io, format!("cannot start the cassette: {e}")))?;
        Ok(Recorder {
            dir,
            file,
            path: path.to_path_buf(),
            lock: Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&self, entry: &CassetteEntry) -> Result<(), AiError> {
        let mut line = serde_json::to_vec(entry)
            .map_err(|e| AiError::new(ErrorKind::Io, format!("cassette entry: {e}")))?;
        line.push(b'\n');
        // A key the prompt or the answer holds is not kept in the recording.
        let line = pmpo_store::secrets::redact_bytes(&line).into_owned();
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.dir
            .append(&self.file, &line)
            .map_err(|e| AiError::new(ErrorKind::Io, format!("cannot write the cassette: {e}")))
    }
}

/// Answers from a cassette; contacts nothing.
pub struct ReplayEndpoint {
    name: String,
    path: PathBuf,
    answers: HashMap<String, Vec<Result<Completion, RecordedError>>>,
    /// The endpoint and model each request was answered by when recorded.
    origins: HashMap<String, (String, String)>,
    /// The stages that asked anything in the recorded run.
    stages: HashMap<String, usize>,
    next: Mutex<HashMap<String, usize>>,
}

impl ReplayEndpoint {
    pub fn load(name: &str, path: &Path) -> Result<ReplayEndpoint, AiError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            AiError::new(
                ErrorKind::NotConfigured,
                format!("cannot read the cassette `{}`: {e}", path.display()),
            )
            .hint("record one first: pmpo execute PLAN --record FILE")
        })?;
        let mut answers: HashMap<String, Vec<Result<Completion, RecordedError>>> = HashMap::new();
        let mut origins = HashMap::new();
        let mut stages: HashMap<String, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: CassetteEntry = serde_json::from_str(line).map_err(|e| {
                AiError::new(
                    ErrorKind::NotConfigured,
                    format!("cassette `{}` line {}: {e}", path.display(), i + 1),
                )
                .hint("a cassette is written by --record; re-record it")
            })?;
            let said = match (entry.response, entry.error) {
                (Some(c), _) => Ok(c),
                (None, Some(e)) => Err(e),
                (None, None) => {
                    return Err(AiError::new(
                        ErrorKind::NotConfigured,
                        format!(
                            "cassette `{}` line {}: the exchange has neither a `response` nor an `error`",
                            path.display(),
                            i + 1
                        ),
                    )
                    .hint("a cassette is written by --record; re-record it"));
                }
            };
            *stages.entry(entry.stage).or_default() += 1;
            origins
                .entry(entry.hash.clone())
                .or_insert((entry.endpoint, entry.model));
            answers.entry(entry.hash).or_default().push(said);
        }
        Ok(ReplayEndpoint {
            name: name.to_string(),
            path: path.to_path_buf(),
            answers,
            origins,
            stages,
            next: Mutex::new(HashMap::new()),
        })
    }

    pub fn len(&self) -> usize {
        self.answers.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

#[async_trait]
impl Endpoint for ReplayEndpoint {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> EndpointKind {
        EndpointKind::Replay
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn probe(&self, _timeout: Duration) -> Result<(), AiError> {
        Ok(())
    }

    fn recorded_origin(&self, req: &ChatRequest) -> Option<(String, String)> {
        self.origins.get(&req.hash()).cloned()
    }

    async fn complete(
        &self,
        call: CallInfo<'_>,
        _model: &str,
        req: &ChatRequest,
    ) -> Result<Completion, AiError> {
        let hash = req.hash();
        let Some(list) = self.answers.get(&hash) else {
            // Say which of the two it is: a stage that asked other things
            // (its prompt changed) or one that never asked in the recording.
            let hint = match self.stages.get(call.stage) {
                Some(n) => format!(
                    "the cassette has {n} other exchange(s) of stage `{}`: its prompt changed since the recording; record again with --record FILE",
                    call.stage
                ),
                None => format!(
                    "stage `{}` has no exchange in the cassette: it is new, the recorded run stopped before it, or its endpoint could not be reached then (nothing was said, so nothing was recorded); record again with --record FILE",
                    call.stage
                ),
            };
            return Err(AiError::new(
                ErrorKind::NotRecorded,
                format!(
                    "the cassette `{}` has no answer for stage `{}` (phase {}), request {hash}: \"{}\"",
                    self.path.display(),
                    call.stage,
                    call.phase,
                    req.gist()
                ),
            )
            .hint(hint));
        };
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let i = next.entry(hash).or_insert(0);
        // Asked more often than recorded: the last answer stands.
        let answer = list[(*i).min(list.len() - 1)].clone();
        *i += 1;
        answer.map_err(|e| e.to_error())
    }
}
