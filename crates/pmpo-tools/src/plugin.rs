//! Plugins: external executables that speak a small JSON protocol.
//!
//! A stage with `tool: plugin:NAME` runs the first of `plugins/NAME`,
//! `plugins/pmpo-plugin-NAME` (in the workspace) and `pmpo-plugin-NAME` (on
//! PATH). The plugin reads `{"inputs": {...}}` (the stage's resolved `with:`)
//! on stdin and prints `{"success": true|false, "outputs": {...}, "files":
//! [...], "error": "..."}` on stdout (the whole of stdout, or its last line).
//! `NAME --health` exits 0 when the plugin can work. See docs/plugins.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use pmpo_plan::InputIssue;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::capture::DEFAULT_LIMIT;
use crate::process::{ProcessSpec, Termination, run_process};
use crate::{ErrorClass, Tool, ToolContext, ToolError, ToolOutcome};

pub struct PluginTool;

/// Plugin names use the stage-id alphabet.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where a plugin is, and every place looked at.
pub fn locate(workspace: &Path, name: &str) -> Result<PathBuf, Vec<String>> {
    let mut looked = Vec::new();
    for candidate in [
        workspace.join("plugins").join(name),
        workspace
            .join("plugins")
            .join(format!("pmpo-plugin-{name}")),
    ] {
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        looked.push(candidate.display().to_string());
    }
    let exe = format!("pmpo-plugin-{name}");
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(&exe);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    looked.push(format!("{exe} on PATH"));
    Err(looked)
}

/// Runs `PLUGIN --health`: `Ok` when it exits 0 within the time limit.
pub async fn health(workspace: &Path, name: &str) -> Result<String, String> {
    let exe = locate(workspace, name)
        .map_err(|looked| format!("not found (looked in {})", looked.join(", ")))?;
    let spec = ProcessSpec {
        argv: vec![exe.to_string_lossy().into_owned(), "--health".into()],
        cwd: workspace.to_path_buf(),
        env: vec![],
        stdin: None,
        capture_limit: 64 * 1024,
        pre_exec: None,
    };
    let r = run_process(&spec, Duration::from_secs(10), &CancellationToken::new())
        .await
        .map_err(|e| e.to_string())?;
    match r.termination {
        Termination::Exited(0) => Ok(r.stdout.text().trim().to_string()),
        other => Err(format!(
            "--health ended with {other:?}: {}",
            r.stderr.text().trim()
        )),
    }
}

#[derive(Deserialize)]
struct Reply {
    success: bool,
    #[serde(default)]
    outputs: Map<String, Value>,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    error: Option<String>,
}

fn parse_reply(stdout: &str) -> Option<Reply> {
    serde_json::from_str(stdout.trim()).ok().or_else(|| {
        let last = stdout.lines().rev().find(|l| !l.trim().is_empty())?;
        serde_json::from_str(last.trim()).ok()
    })
}

#[async_trait]
impl Tool for PluginTool {
    fn name(&self) -> &'static str {
        "plugin"
    }

    fn check_inputs(&self, _inputs: &Map<String, Value>) -> Vec<InputIssue> {
        // A plugin's inputs are its own business.
        Vec::new()
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        let name = ctx.tool.strip_prefix("plugin:").unwrap_or(ctx.tool);
        let exe = locate(ctx.workspace.root(), name).map_err(|looked| {
            ToolError::new(
                ErrorClass::MissingDependency,
                format!("plugin `{name}` not found"),
            )
            .hint(format!(
                "looked in: {}; add an executable there (see docs/plugins.md)",
                looked.join(", ")
            ))
        })?;
        let request = serde_json::to_vec(&json!({ "inputs": inputs })).expect("json");
        let mut env = vec![
            (
                "PMPO_WORKSPACE".into(),
                ctx.workspace.root().to_string_lossy().into_owned(),
            ),
            ("PMPO_RUN_ID".into(), ctx.run_id.into()),
            ("PMPO_STAGE".into(), ctx.stage_id.into()),
        ];
        if let Some(c) = ctx.confine {
            env.extend(c.env.iter().cloned());
        }
        let spec = ProcessSpec {
            argv: vec![exe.to_string_lossy().into_owned()],
            cwd: ctx.workspace.root().to_path_buf(),
            env,
            stdin: Some(request),
            capture_limit: DEFAULT_LIMIT,
            pre_exec: ctx.confine.and_then(|c| c.pre_exec.clone()),
        };
        let mut r = run_process(&spec, ctx.timeout, ctx.cancel)
            .await
            .map_err(|e| {
                ToolError::new(
                    ErrorClass::Io,
                    format!("cannot start plugin `{name}` ({}): {e}", exe.display()),
                )
            })?;
        crate::run::redact_captured(&mut r.stdout);
        crate::run::redact_captured(&mut r.stderr);
        let mut outcome = ToolOutcome {
            termination: r.termination,
            stdout: r.stdout,
            stderr: r.stderr,
            duration: r.duration,
            outputs: Map::new(),
            invocation: json!({ "plugin": name, "path": exe }),
            notes: r.note.into_iter().collect(),
            skipped: None,
        };
        if outcome.termination != Termination::Exited(0) {
            // Exit status, timeout and signals are judged by the engine.
            return Ok(outcome);
        }
        let text = outcome.stdout.text();
        let reply = parse_reply(&text).ok_or_else(|| {
            let shown: String = text.trim().chars().take(200).collect();
            ToolError::new(ErrorClass::BadToolOutput, format!("plugin `{name}` did not answer with the plugin protocol: {shown:?}"))
                .hint("a plugin prints one JSON object: {\"success\": true, \"outputs\": {...}, \"files\": [...]}")
        })?;
        if !reply.success {
            return Err(ToolError::new(
                ErrorClass::ToolFailed,
                format!(
                    "plugin `{name}` reported failure: {}",
                    reply.error.as_deref().unwrap_or("(no error given)")
                ),
            ));
        }
        // A plugin may not claim files that are not there.
        for f in &reply.files {
            let ok = ctx
                .workspace
                .resolve(f)
                .map(|p| p.is_file())
                .unwrap_or(false);
            if !ok {
                return Err(ToolError::new(
                    ErrorClass::BadToolOutput,
                    format!("plugin `{name}` reported file `{f}`, which is not in the workspace"),
                ));
            }
        }
        outcome.outputs = reply.outputs;
        outcome
            .outputs
            .entry("files_reported")
            .or_insert_with(|| json!(reply.files));
        Ok(outcome)
    }
}
