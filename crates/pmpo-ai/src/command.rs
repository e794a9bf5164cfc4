//! The `command` endpoint: a local program gets the prompt on stdin and
//! writes the answer to stdout (e.g. an agent CLI in print mode).

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::endpoint::{CallInfo, Endpoint};
use crate::{
    AiError, ChatRequest, Completion, EndpointConfig, EndpointKind, ErrorKind, Finish, Role,
};

/// Longest answer kept from a command (more is an error, not a silent cut).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

pub struct CommandEndpoint {
    name: String,
    argv: Vec<String>,
}

impl CommandEndpoint {
    pub fn new(cfg: &EndpointConfig) -> Self {
        CommandEndpoint {
            name: cfg.name.clone(),
            argv: cfg.command.clone(),
        }
    }

    fn found(&self) -> bool {
        let Some(prog) = self.argv.first() else {
            return false;
        };
        if prog.contains('/') {
            return std::path::Path::new(prog).is_file();
        }
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(prog).is_file()))
    }
}

/// The conversation as one text: the system prompt, then each turn.
pub fn prompt_text(req: &ChatRequest) -> String {
    let mut out = String::new();
    if let Some(s) = &req.system {
        out.push_str(s);
        out.push_str("\n\n");
    }
    if req.messages.len() == 1 {
        out.push_str(&req.messages[0].content);
        return out;
    }
    for m in &req.messages {
        out.push_str(match m.role {
            Role::User => "## User\n\n",
            Role::Assistant => "## Assistant\n\n",
        });
        out.push_str(&m.content);
        out.push_str("\n\n");
    }
    out
}

#[async_trait]
impl Endpoint for CommandEndpoint {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> EndpointKind {
        EndpointKind::Command
    }

    fn location(&self) -> String {
        self.argv.join(" ")
    }

    async fn probe(&self, _timeout: Duration) -> Result<(), AiError> {
        if self.found() {
            Ok(())
        } else {
            Err(AiError::new(
                ErrorKind::NotConfigured,
                format!(
                    "endpoint `{}`: program `{}` is not found",
                    self.name,
                    self.argv.first().map(String::as_str).unwrap_or("")
                ),
            )
            .hint("install it or fix `command` in pmpo.toml"))
        }
    }

    async fn complete(
        &self,
        call: CallInfo<'_>,
        model: &str,
        req: &ChatRequest,
    ) -> Result<Completion, AiError> {
        let Some(prog) = self.argv.first() else {
            return Err(AiError::new(ErrorKind::NotConfigured, "empty command"));
        };
        let spec = pmpo_process::ProcessSpec {
            env: vec![
                ("PMPO_MODEL".to_string(), model.to_string()),
                ("PMPO_STAGE".to_string(), call.stage.to_string()),
                ("PMPO_PHASE".to_string(), call.phase.as_str().to_string()),
            ],
            // A program that does not read its stdin is not an error here.
            stdin: Some(prompt_text(req).into_bytes()),
            // The answer is kept up to its limit; a longer one is counted, not kept.
            capture_limit: MAX_ANSWER_BYTES,
            capture_tail: 0,
            ..pmpo_process::ProcessSpec::new(self.argv.iter().cloned())
        };
        // Through pmpo's one process runner, in its own process group: a
        // cancelled or timed-out call drops this future, and the program and
        // everything it started go with it.
        let out = pmpo_process::run(&spec, &CancellationToken::new())
            .await
            .map_err(|e| {
                AiError::new(
                    ErrorKind::CommandFailed,
                    format!("endpoint `{}`: cannot start `{prog}`: {e}", self.name),
                )
                .hint("install the program or fix `command` in pmpo.toml")
            })?;
        let status = match out.termination {
            pmpo_process::Termination::Exited(0) => None,
            pmpo_process::Termination::Exited(c) => Some(format!("exit status: {c}")),
            pmpo_process::Termination::Signaled(s) => Some(format!("signal: {s}")),
            // Neither a time limit nor a cancel token is given to the runner.
            t => Some(format!("{t:?}")),
        };
        if let Some(status) = status {
            let last = out.stderr.last_line().unwrap_or_default();
            return Err(AiError::new(
                ErrorKind::CommandFailed,
                format!(
                    "endpoint `{}`: `{prog}` exited with {status}{}",
                    self.name,
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(": {last}")
                    }
                ),
            ));
        }
        if out.stdout.total > MAX_ANSWER_BYTES as u64 {
            return Err(AiError::new(
                ErrorKind::BadResponse,
                format!(
                    "endpoint `{}`: the answer is larger than {MAX_ANSWER_BYTES} bytes",
                    self.name
                ),
            ));
        }
        Ok(Completion {
            text: String::from_utf8_lossy(&out.stdout.head).into_owned(),
            finish: Finish::Stop,
            tokens_in: None,
            tokens_out: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Phase;

    fn endpoint(argv: &[&str]) -> CommandEndpoint {
        CommandEndpoint {
            name: "cmd".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn call() -> CallInfo<'static> {
        CallInfo {
            stage: "s",
            phase: Phase::Execute,
            run_id: "r",
            workspace: None,
            brief: None,
        }
    }

    #[tokio::test]
    async fn the_prompt_goes_in_on_stdin_and_the_answer_comes_from_stdout() {
        let e = endpoint(&[
            "sh",
            "-c",
            "cat; printf ' [%s %s]' \"$PMPO_MODEL\" \"$PMPO_STAGE\"",
        ]);
        let c = e
            .complete(call(), "m1", &ChatRequest::user("hello"))
            .await
            .unwrap();
        assert_eq!(c.text, "hello [m1 s]");
    }

    #[tokio::test]
    async fn a_failing_program_says_how_with_its_last_stderr_line() {
        let e = endpoint(&["sh", "-c", "echo one >&2; echo boom >&2; exit 3"]);
        let err = e
            .complete(call(), "m", &ChatRequest::user("x"))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("`sh` exited with exit status: 3: boom"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_dropped_call_takes_everything_the_program_started_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        let script = format!("sleep 100 & echo $! > {}; sleep 100", pidfile.display());
        let e = endpoint(&["sh", "-c", &script]);
        let req = ChatRequest::user("x");
        let r =
            tokio::time::timeout(Duration::from_millis(500), e.complete(call(), "m", &req)).await;
        assert!(r.is_err(), "the call should have been cut off");
        let bg: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while pmpo_process::process_alive(bg) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !pmpo_process::process_alive(bg),
            "the program's child survived"
        );
    }
}
