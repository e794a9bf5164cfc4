//! The `command` endpoint: a local program gets the prompt on stdin and
//! writes the answer to stdout (e.g. an agent CLI in print mode).

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

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
        let Some((prog, args)) = self.argv.split_first() else {
            return Err(AiError::new(ErrorKind::NotConfigured, "empty command"));
        };
        let mut child = tokio::process::Command::new(prog)
            .args(args)
            .env("PMPO_MODEL", model)
            .env("PMPO_STAGE", call.stage)
            .env("PMPO_PHASE", call.phase.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A cancelled or timed-out call drops this future: the program goes with it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                AiError::new(
                    ErrorKind::CommandFailed,
                    format!("endpoint `{}`: cannot start `{prog}`: {e}", self.name),
                )
                .hint("install the program or fix `command` in pmpo.toml")
            })?;
        let prompt = prompt_text(req);
        if let Some(mut stdin) = child.stdin.take() {
            // A program that does not read its stdin is not an error here.
            let _ = stdin.write_all(prompt.as_bytes()).await;
            drop(stdin);
        }
        let out = child.wait_with_output().await.map_err(|e| {
            AiError::new(
                ErrorKind::CommandFailed,
                format!("endpoint `{}`: `{prog}` failed: {e}", self.name),
            )
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(AiError::new(
                ErrorKind::CommandFailed,
                format!(
                    "endpoint `{}`: `{prog}` exited with {}{}",
                    self.name,
                    out.status,
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(": {last}")
                    }
                ),
            ));
        }
        if out.stdout.len() > MAX_ANSWER_BYTES {
            return Err(AiError::new(
                ErrorKind::BadResponse,
                format!(
                    "endpoint `{}`: the answer is larger than {MAX_ANSWER_BYTES} bytes",
                    self.name
                ),
            ));
        }
        Ok(Completion {
            text: String::from_utf8_lossy(&out.stdout).into_owned(),
            finish: Finish::Stop,
            tokens_in: None,
            tokens_out: None,
        })
    }
}
