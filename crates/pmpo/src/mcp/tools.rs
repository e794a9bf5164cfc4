//! The tools: their input schemas, the checking of their arguments, and what
//! each one does.
//!
//! `artifact_status`, `artifact_list`, `approve`, `refine` and `answer` run
//! in this process (the last two drive the loop with the host as its model,
//! `refine.rs`). `check_plan`, `execute`, `validate`, `preview`, `ledger`
//! and `restore` run this very binary's command (`pmpo check --json`, ...)
//! as a child process with its output captured: the result is the CLI's JSON
//! and an error is the CLI's own message and hint, the work is confined to
//! its process (a cancel is the CLI's own clean SIGTERM path, which leaves a
//! run that `pmpo resume` continues), and nothing it prints can reach the
//! protocol.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ListToolsResult, MetaObject, ProgressToken,
};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use super::Server;
use crate::error::CliError;

/// Each tool: its name, what it does, and its input schema's properties and
/// required ones.
fn table() -> Vec<(&'static str, &'static str, Value, Vec<&'static str>)> {
    let s = |d: &str| json!({"type": "string", "description": d});
    let b = |d: &str| json!({"type": "boolean", "description": d});
    let answer = json!({"description": "The answer: the JSON the question's schema asks for (an object, or its text)",
                        "type": ["object", "array", "string"]});
    vec![
        (
            "check_plan",
            "Check a plan file without running anything (as `pmpo check`).",
            json!({"plan": s("The plan file (YAML or JSON), relative to the workspace")}),
            vec!["plan"],
        ),
        (
            "execute",
            "Run a plan (as `pmpo execute --json`): the summary, each stage's status and the errors. Sends progress notifications when the request has a progressToken. A plan that loosens confinement (sandbox: false, network, env_passthrough) is refused.",
            json!({"plan": s("The plan file, relative to the workspace"),
                "force": {"description": "true: run every stage again; or the stage ids to run again",
                          "type": ["boolean", "array"], "items": {"type": "string"}},
                "keep_going": b("Go on with independent stages after a failure"),
                "jobs": {"type": "integer", "minimum": 1, "maximum": 1024, "description": "Stages run at once"},
                "via": s("Route every model call to this endpoint (`host`: questions for you)")}),
            vec!["plan"],
        ),
        (
            "validate",
            "Run the plan's validation_plan on the current files (as `pmpo validate --json`).",
            json!({"plan": s("The plan file, relative to the workspace")}),
            vec!["plan"],
        ),
        (
            "preview",
            "Render a page (.html) or component (.tsx/.jsx) in headless Chromium: the screenshot as a PNG image, the console, page errors, failed requests and the accessibility violations (axe-core: rule, impact, selectors).",
            json!({"input": s("The page, relative to the workspace"),
                "id": s("The preview's name (its directory under dist/previews/)"),
                "viewport": s("WIDTHxHEIGHT, e.g. 1024x768")}),
            vec!["input"],
        ),
        (
            "artifact_status",
            "Where a named artifact stands: its state (iteration, constraints, last decision) and any pending question.",
            json!({"name": s("The artifact's name")}),
            vec!["name"],
        ),
        (
            "artifact_list",
            "The workspace's named artifacts.",
            json!({}),
            vec![],
        ),
        (
            "refine",
            "Start or continue a named artifact's PMPO loop with you as the model. The result is the loop's report; when `pending` is set, answer it with the `answer` tool.",
            json!({"name": s("The artifact's name (letters, digits, -, _, .)"),
                "type": s("logo | ui | a2ui | image | content | code | meta-prompt (for a new artifact)"),
                "inputs": {"type": "array", "items": {"type": "string"}, "description": "Input files, relative to the workspace"},
                "intent": s("What the artifact is for"),
                "max_iterations": {"type": "integer", "minimum": 1, "description": "Iterations before the loop stops"},
                "content_type": s("e.g. direct:image, direct:html, meta:image-prompt")}),
            vec!["name"],
        ),
        (
            "answer",
            "Answer a pending question and go on: {name, answer} for an artifact's refinement (returns the next report), or {run_id, stage, answer} for an `ai` stage of a run (returns the run's results).",
            json!({"name": s("The artifact whose question this answers"),
                "run_id": s("The run whose `ai` stage waits (with stage)"),
                "stage": s("The `ai` stage of run_id that waits"),
                "answer": answer}),
            vec!["answer"],
        ),
        (
            "approve",
            "Answer an artifact's approval gate.",
            json!({"name": s("The artifact waiting for approval"),
                "decision": {"type": "string", "enum": ["continue", "terminate"]},
                "note": s("Kept with the answer in decisions.md")}),
            vec!["name", "decision"],
        ),
        (
            "ledger",
            "The patch ledger: every change pmpo made to the workspace's files (as `pmpo ledger --json`).",
            json!({"path": s("Only this file"), "run": s("Only this run (or restore)")}),
            vec![],
        ),
        (
            "restore",
            "Bring back a file as a run found it, or roll back a whole run (as `pmpo restore --json`).",
            json!({"path": s("The file to bring back, relative to the workspace"),
                "run": s("With path: what this run found there; alone: roll back the whole run")}),
            vec![],
        ),
    ]
}

pub(super) fn list() -> ListToolsResult {
    let tools: Vec<Value> = table()
        .into_iter()
        .map(|(name, description, props, required)| {
            json!({"name": name, "description": description,
                   "inputSchema": {"type": "object", "properties": props, "required": required,
                                   "additionalProperties": false}})
        })
        .collect();
    serde_json::from_value(json!({ "tools": tools })).unwrap_or_default()
}

/// A tool's arguments, checked as they are read.
pub(super) struct Args(Map<String, Value>);

impl Args {
    pub(super) fn new(tool: &str, given: Option<Map<String, Value>>) -> Result<Self, String> {
        let Some((_, _, props, required)) = table().into_iter().find(|t| t.0 == tool) else {
            let names: Vec<_> = table().iter().map(|t| t.0).collect();
            return Err(format!(
                "error: there is no tool `{tool}`\n  help: the tools are {}",
                names.join(", ")
            ));
        };
        let given = given.unwrap_or_default();
        let known: Vec<&String> = props
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        for k in given.keys() {
            if !known.contains(&k) {
                return Err(format!(
                    "error: `{tool}` has no argument `{k}`\n  help: its arguments are {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ));
            }
        }
        for r in required {
            if given.get(r).is_none_or(Value::is_null) {
                return Err(format!("error: `{tool}` needs the argument `{r}`"));
            }
        }
        Ok(Args(given))
    }

    pub(super) fn str(&self, key: &str) -> Result<Option<String>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!("error: `{key}` must be a string, not `{v}`")),
        }
    }

    pub(super) fn need(&self, key: &str) -> Result<String, String> {
        self.str(key)?
            .ok_or_else(|| format!("error: the argument `{key}` is missing"))
    }

    fn bool(&self, key: &str) -> Result<bool, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!("error: `{key}` must be true or false, not `{v}`")),
        }
    }

    pub(super) fn uint(&self, key: &str, max: u64) -> Result<Option<u64>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(format!(
                    "error: `{key}` must be a whole number from 1 to {max}, not `{v}`"
                )),
            },
        }
    }

    pub(super) fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        format!("error: `{key}` must be a list of strings; `{v}` is not a string")
                    })
                })
                .collect(),
            Some(v) => Err(format!(
                "error: `{key}` must be a list of strings, not `{v}`"
            )),
        }
    }

    /// The answer's text: a string as it is, anything else as its JSON.
    pub(super) fn answer_text(&self) -> Result<String, String> {
        match self.0.get("answer") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v @ (Value::Object(_) | Value::Array(_))) => Ok(v.to_string()),
            _ => Err("error: `answer` must be the JSON the question's schema asks for (an object, or its text)".into()),
        }
    }
}

/// A workspace-relative path from a tool argument, refused when it would
/// reach outside the workspace (`..`, an absolute path elsewhere, a
/// symbolic link that leads out).
pub(super) fn rel_path(root: &Path, arg: &str, what: &str) -> Result<String, String> {
    let p = Path::new(arg);
    let rel = if p.is_absolute() {
        match p.strip_prefix(root) {
            Ok(r) => r.to_string_lossy().into_owned(),
            Err(_) => {
                return Err(format!(
                    "error: {what} `{arg}` is outside the workspace `{}`\n  help: give a path inside the workspace, relative to it",
                    root.display()
                ));
            }
        }
    } else {
        arg.to_string()
    };
    let ws = pmpo_store::Workspace::open(root).map_err(|e| format!("error: {e}"))?;
    let full = ws.resolve(&rel).map_err(|e| {
        format!("error: {what} `{arg}` is refused: {e}\n  help: give a path inside the workspace, relative to it")
    })?;
    if let Ok(real) = std::fs::canonicalize(&full)
        && !real.starts_with(root)
    {
        return Err(format!(
            "error: {what} `{arg}` leads outside the workspace (to `{}`) through a symbolic link",
            real.display()
        ));
    }
    Ok(rel)
}

pub(super) fn ok(value: Value, text: impl Into<String>) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(value);
    r
}

pub(super) fn fail(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// Sends progress notifications for one request, when it asked for them.
#[derive(Clone)]
pub(super) struct Progress {
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
    count: Arc<std::sync::atomic::AtomicU64>,
    handle: tokio::runtime::Handle,
}

impl Progress {
    pub(super) fn new(context: &RequestContext<RoleServer>) -> Self {
        Progress {
            peer: context.peer.clone(),
            token: context.meta.get_progress_token(),
            count: Arc::default(),
            handle: tokio::runtime::Handle::current(),
        }
    }

    pub(super) fn peer(&self) -> &Peer<RoleServer> {
        &self.peer
    }

    /// Tells the client what happens now (from any thread).
    pub(super) fn say(&self, message: &str) {
        let Some(token) = &self.token else { return };
        let n = self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let param = serde_json::from_value(json!({
            "progressToken": token, "progress": n, "message": message
        }));
        if let Ok(param) = param {
            let peer = self.peer.clone();
            self.handle.spawn(async move {
                let _ = peer.notify_progress(param).await;
            });
        }
    }
}

pub(super) async fn call(
    server: &Server,
    request: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> CallToolResult {
    let name = request.name.to_string();
    let args = match Args::new(&name, request.arguments) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let cancel = server.stop.child_token();
    let on_request = context.ct.clone();
    let job = cancel.clone();
    let watch = tokio::spawn(async move {
        on_request.cancelled().await;
        job.cancel();
    });
    let progress = Progress::new(&context);
    let started = std::time::Instant::now();
    let result = dispatch(server, &name, &args, progress, cancel).await;
    // The time the operation itself took, so a client (and bench/mcp.sh) can
    // tell it from the protocol's cost.
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    watch.abort();
    let mut r = result.unwrap_or_else(fail);
    let mut meta = Map::new();
    meta.insert(
        "pmpo/duration_ms".into(),
        json!((ms * 1000.0).round() / 1000.0),
    );
    r.meta = Some(MetaObject(meta));
    r
}

async fn dispatch(
    server: &Server,
    name: &str,
    a: &Args,
    progress: Progress,
    cancel: CancellationToken,
) -> Result<CallToolResult, String> {
    let root = &server.root;
    let cli = |argv: Vec<String>| Cli {
        argv,
        progress: progress.clone(),
        cancel: cancel.clone(),
    };
    match name {
        "check_plan" => {
            let plan = rel_path(root, &a.need("plan")?, "the plan")?;
            cli(vec!["check".into(), plan, "--json".into()])
                .run(root, None)
                .await
        }
        "validate" => {
            let plan = rel_path(root, &a.need("plan")?, "the plan")?;
            super::plan_guard::refuse(root, &plan)?;
            cli(vec!["validate".into(), plan, "--json".into(), ws_arg(root)])
                .run(root, None)
                .await
        }
        "execute" => cli(execute_argv(root, a)?).run(root, None).await,
        "preview" => super::resources::preview(root, a, cli(Vec::new())).await,
        "ledger" => {
            let mut argv = vec!["ledger".into(), "--json".into(), ws_arg(root)];
            if let Some(p) = a.str("path")? {
                argv.push(format!("--path={}", rel_path(root, &p, "the path")?));
            }
            if let Some(r) = a.str("run")? {
                argv.push(format!("--run={r}"));
            }
            cli(argv).run(root, Some("entries")).await
        }
        "restore" => {
            let mut argv = vec!["restore".into(), "--json".into(), ws_arg(root)];
            let (path, run) = (a.str("path")?, a.str("run")?);
            if path.is_none() && run.is_none() {
                return Err("error: `restore` needs `path`, `run`, or both\n  help: `path` brings back one file; `run` alone rolls back a whole run".into());
            }
            if let Some(r) = run {
                argv.push(format!("--run={r}"));
            }
            if let Some(p) = path {
                argv.extend(["--".into(), rel_path(root, &p, "the path")?]);
            }
            cli(argv).run(root, Some("restored")).await
        }
        "artifact_status" => super::resources::status(root, &a.need("name")?),
        "artifact_list" => super::resources::artifact_list(root),
        "approve" => approve(root, a).await,
        "refine" => super::refine::refine(server, a, progress, cancel).await,
        "answer" => super::refine::answer(server, a, progress, cancel).await,
        other => Err(format!("error: there is no tool `{other}`")),
    }
}

fn ws_arg(root: &Path) -> String {
    format!("--workspace={}", root.display())
}

fn execute_argv(root: &Path, a: &Args) -> Result<Vec<String>, String> {
    let plan = rel_path(root, &a.need("plan")?, "the plan")?;
    super::plan_guard::refuse(root, &plan)?;
    let mut argv = vec!["execute".into(), "--json".into(), ws_arg(root)];
    match a.0.get("force") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => argv.push("--force".into()),
        Some(Value::Array(_)) => {
            let ids = a.strings("force")?;
            if ids.iter().any(|s| s.is_empty() || s.contains(',')) {
                return Err("error: `force` stage ids must be non-empty and without commas".into());
            }
            argv.push(format!("--force={}", ids.join(",")));
        }
        Some(v) => {
            return Err(format!(
                "error: `force` must be true or a list of stage ids, not `{v}`"
            ));
        }
    }
    if a.bool("keep_going")? {
        argv.push("--keep-going".into());
    }
    if let Some(j) = a.uint("jobs", 1024)? {
        argv.push(format!("--jobs={j}"));
    }
    if let Some(v) = a.str("via")? {
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "error: `via` must be an endpoint name (letters, digits, -, _, .), not `{v}`"
            ));
        }
        argv.push(format!("--via={v}"));
    }
    argv.extend(["--".into(), plan]);
    Ok(argv)
}

async fn approve(root: &Path, a: &Args) -> Result<CallToolResult, String> {
    let name = a.need("name")?;
    let answer = match a.need("decision")?.as_str() {
        "continue" => pmpo_loop::Approval::Continue,
        "terminate" => pmpo_loop::Approval::Terminate,
        d => {
            return Err(format!(
                "error: `decision` must be `continue` or `terminate`, not `{d}`"
            ));
        }
    };
    let note = a.str("note")?;
    let root = root.to_path_buf();
    let done = tokio::task::spawn_blocking(move || {
        pmpo_loop::approve(&root, &name, answer, note.as_deref())
            .map_err(|e| CliError::invalid(&e).hint(e.hint()).to_string())
    })
    .await
    .map_err(|e| format!("error: internal: {e}"))??;
    let text = format!(
        "`{}` iteration {}: {} recorded; call `refine` with this name to go on",
        done.artifact_name, done.iteration, done.decision
    );
    Ok(ok(serde_json::to_value(&done).unwrap_or_default(), text))
}

/// One command of this binary, run as a child process in the workspace.
pub(super) struct Cli {
    pub(super) argv: Vec<String>,
    pub(super) progress: Progress,
    pub(super) cancel: CancellationToken,
}

/// What a command said: its exit code, its JSON (stdout) and its stderr.
pub(super) struct Said {
    pub(super) code: i32,
    pub(super) json: Option<Value>,
    pub(super) stderr: String,
    pub(super) cancelled: bool,
}

impl Cli {
    pub(super) async fn output(self, root: &Path) -> Result<Said, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("error: cannot find pmpo itself: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .args(&self.argv)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("error: cannot start `pmpo {}`: {e}", self.argv.join(" ")))?;
        let mut stdout = child.stdout.take().ok_or("error: no stdout")?;
        let stderr = child.stderr.take().ok_or("error: no stderr")?;
        let out = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s).await;
            s
        });
        let progress = self.progress.clone();
        let err = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let mut all = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.trim().is_empty() {
                    progress.say(line.trim());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut cancelled = false;
        let status = tokio::select! {
            s = child.wait() => s,
            _ = self.cancel.cancelled() => {
                cancelled = true;
                if let Some(pid) = child.id() {
                    // SAFETY: a signal to our own child, still running.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                match tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await {
                    Ok(s) => s,
                    Err(_) => { let _ = child.kill().await; child.wait().await }
                }
            }
        }
        .map_err(|e| format!("error: `pmpo {}` failed: {e}", self.argv.join(" ")))?;
        let stdout = out.await.unwrap_or_default();
        let stderr = err.await.unwrap_or_default();
        Ok(Said {
            code: status.code().unwrap_or(crate::EXIT_CANCELLED as i32),
            json: serde_json::from_str(stdout.trim()).ok(),
            stderr,
            cancelled,
        })
    }

    /// The command's result as a tool result: its JSON (under `key` when it
    /// is not an object) with its exit code, or its error.
    async fn run(self, root: &Path, key: Option<&str>) -> Result<CallToolResult, String> {
        let what = format!("pmpo {}", self.argv.first().cloned().unwrap_or_default());
        let said = self.output(root).await?;
        Ok(said.into_result(&what, key))
    }
}

impl Said {
    /// The error lines of the CLI (from the first `error`), or its last words.
    pub(super) fn error_text(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        let from = lines
            .iter()
            .position(|l| l.starts_with("error"))
            .unwrap_or(0);
        let text = lines[from..].join("\n");
        let skip = text.chars().count().saturating_sub(4000);
        text.chars().skip(skip).collect()
    }

    pub(super) fn into_result(self, what: &str, key: Option<&str>) -> CallToolResult {
        if self.cancelled {
            return fail(format!(
                "error: `{what}` was cancelled; its state is kept\n  help: call the tool again to go on (a run resumes where it stopped)"
            ));
        }
        let value = match (self.json.clone(), key) {
            (Some(Value::Object(mut o)), _) => {
                o.insert("exit_code".into(), json!(self.code));
                Some(Value::Object(o))
            }
            (Some(v), k) => Some(json!({ k.unwrap_or("result"): v, "exit_code": self.code })),
            (None, _) => None,
        };
        match (self.code, value) {
            (0 | 1 | 3, Some(v)) => {
                let text = format!(
                    "`{what}` exited {}{}\n{}",
                    self.code,
                    match self.code {
                        0 => " (ok)",
                        1 => " (failed: see the result)",
                        _ => " (paused)",
                    },
                    v
                );
                ok(v, text)
            }
            (_, v) => {
                let mut r = fail(if self.stderr.trim().is_empty() {
                    format!("error: `{what}` exited {}", self.code)
                } else {
                    self.error_text()
                });
                r.structured_content = v;
                r
            }
        }
    }
}
