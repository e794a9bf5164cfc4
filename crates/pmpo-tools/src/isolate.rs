//! Tools that can run long run in a child process of pmpo (issue 15, item 2).
//!
//! A thread cannot be killed, and the template engine, the SVG renderer,
//! the Markdown renderer and the A2UI checker have no cancel hook; a template
//! with two nested `range(100000)` loops would hold pmpo past its timeout and
//! past Ctrl-C. So the binary re-invokes itself for one tool call
//! (`pmpo __tool`, through the one process runner), with the stage's timeout,
//! the run's cancel, SIGKILL at once (`kill_grace` zero) and a memory limit
//! (`RLIMIT_AS`, [`MEMORY_VAR`]).
//!
//! The child never writes a user file: its workspace keeps every write in
//! memory (`pmpo_store::staging`) and it hands what it staged back with its
//! answer. Only the parent, once the child answered, puts the staged files in
//! place (in the order written, each atomically). A tool error is an answer
//! too: what the tool wrote before it (the A2UI report of an invalid
//! specification) is put in place, as it would have been in process. On a
//! timeout, a cancel or a crash there is no answer and nothing is written: a
//! killed tool can never write after its end was reported.
//!
//! Library users (and the crate's tests) get the tools in process: only a
//! binary that calls [`run_tools_in_child`] gets the wrapped ones.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use pmpo_plan::{InputIssue, NamedOutputs, TemplateFile, TemplateReport};
use pmpo_store::Workspace;
use pmpo_store::staging::StagedFile;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::{Captured, ErrorClass, Termination, Tool, ToolContext, ToolError, ToolOutcome};

/// The hidden subcommand the binary answers with one tool call.
pub const SUBCOMMAND: &str = "__tool";
/// The tools run in a child process (each can run long on hostile input).
pub const ISOLATED: &[&str] = &["template", "markdown", "rasterize", "prompt", "a2ui"];
pub use pmpo_process::limits::{DEFAULT_MEMORY_LIMIT, ISOLATION_VAR, MEMORY_VAR};

static CHILD_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Makes the registries built from now on run the [`ISOLATED`] tools in a
/// child process started from `exe` (the running pmpo binary), unless
/// [`ISOLATION_VAR`] is `off`.
pub fn run_tools_in_child(exe: PathBuf) {
    if !pmpo_process::limits::isolation_off() {
        let _ = CHILD_EXE.set(exe);
    }
}

/// `tool` wrapped to run in a child process, when this binary asked for it.
pub(crate) fn wrap(tool: Arc<dyn Tool>) -> Arc<dyn Tool> {
    match CHILD_EXE.get() {
        Some(exe) if ISOLATED.contains(&tool.name()) => Arc::new(Isolated {
            inner: tool,
            exe: exe.clone(),
        }),
        _ => tool,
    }
}

/// One tool call, as the parent sends it to the child on stdin.
#[derive(Serialize, Deserialize)]
struct Request {
    tool: String,
    written: String,
    inputs: Map<String, Value>,
    root: PathBuf,
    run_id: String,
    stage_id: String,
    timeout_ms: u64,
}

/// The child's answer on stdout.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Done(Box<Done>),
    Failed {
        class: ErrorClass,
        message: String,
        hint: Option<String>,
        /// What the tool wrote before it failed (an A2UI report that says
        /// why the specification is invalid): put in place as it would have
        /// been in process.
        staged: Vec<Staged>,
    },
}

/// A tool call that ended with the tool's outcome.
#[derive(Serialize, Deserialize)]
struct Done {
    exit_code: i32,
    stdout: String,
    stderr: String,
    duration_us: u64,
    outputs: Map<String, Value>,
    invocation: Value,
    notes: Vec<String>,
    skipped: Option<String>,
    staged: Vec<Staged>,
}

/// One staged write in the answer: the workspace path and the content.
#[derive(Serialize, Deserialize)]
struct Staged {
    path: String,
    base64: String,
}

/// A tool that runs in a child process.
pub struct Isolated {
    inner: Arc<dyn Tool>,
    exe: PathBuf,
}

#[async_trait]
impl Tool for Isolated {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn aliases(&self) -> &'static [&'static str] {
        self.inner.aliases()
    }
    fn is_ai(&self) -> bool {
        self.inner.is_ai()
    }
    fn check_inputs(&self, inputs: &Map<String, Value>) -> Vec<InputIssue> {
        self.inner.check_inputs(inputs)
    }
    fn named_outputs(&self, inputs: &Map<String, Value>) -> NamedOutputs {
        self.inner.named_outputs(inputs)
    }
    fn check_templates(
        &self,
        inputs: &Map<String, Value>,
        file: &mut dyn FnMut(&str) -> TemplateFile,
    ) -> TemplateReport {
        self.inner.check_templates(inputs, file)
    }
    fn written_paths(&self, inputs: &Map<String, Value>) -> Vec<String> {
        self.inner.written_paths(inputs)
    }
    fn preflight(&self) -> Result<(), ToolError> {
        self.inner.preflight()
    }
    async fn end_run(&self) {
        self.inner.end_run().await
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        let started = Instant::now();
        let limit = pmpo_process::limits::memory_limit().map_err(|e| {
            ToolError::new(ErrorClass::NotConfigured, format!("{MEMORY_VAR}: {e}")).hint(format!(
                "set {MEMORY_VAR} to a size such as 4G or 512M, or 0 for no limit"
            ))
        })?;
        let ws = ctx.workspace;
        let request = Request {
            tool: self.inner.name().to_string(),
            written: ctx.tool.to_string(),
            inputs: inputs.clone(),
            root: ws.root().to_path_buf(),
            run_id: ctx.run_id.to_string(),
            stage_id: ctx.stage_id.to_string(),
            timeout_ms: ctx.timeout.as_millis().min(u64::MAX as u128) as u64,
        };
        let stdin = serde_json::to_vec(&request).map_err(|e| {
            ToolError::new(ErrorClass::Io, format!("cannot encode the tool call: {e}"))
        })?;
        let spec = pmpo_process::ProcessSpec {
            cwd: Some(ws.root().to_path_buf()),
            env_remove: pmpo_store::secrets::hidden_variables(),
            stdin: Some(stdin),
            // The answer carries the named outputs (a rendered page's HTML).
            capture_limit: 1 << 30,
            capture_tail: 0,
            timeout: Some(ctx.timeout),
            kill_grace: Duration::ZERO,
            // The child sets its memory limit itself (see `child_argv`).
            ..pmpo_process::ProcessSpec::new(pmpo_process::limits::child_argv(
                &self.exe, SUBCOMMAND, limit,
            ))
        };
        let result = pmpo_process::run(&spec, ctx.cancel).await;
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                return Err(ToolError::new(
                    ErrorClass::Io,
                    format!(
                        "cannot start the child process for the `{}` tool ({}): {e}",
                        self.name(),
                        self.exe.display()
                    ),
                )
                .hint(format!(
                    "the pmpo binary must stay in place while it runs; or set {ISOLATION_VAR}=off to run tools in pmpo's own process"
                )));
            }
        };
        let ended = |termination: Termination| ToolOutcome {
            termination,
            stdout: Captured::default(),
            stderr: result.stderr.clone(),
            duration: started.elapsed(),
            outputs: Map::new(),
            invocation: json!({"tool": self.name(), "process": "child", "pid": result.pid}),
            notes: Vec::new(),
            skipped: None,
        };
        match result.termination {
            t @ (Termination::TimedOut | Termination::Cancelled) => Ok(ended(t)),
            Termination::Exited(0) => {
                let reply: Reply = match serde_json::from_slice(&result.stdout.kept()) {
                    Ok(r) => r,
                    Err(e) => {
                        return Err(ToolError::new(
                            ErrorClass::BadToolOutput,
                            format!(
                                "the child process of the `{}` tool gave no readable answer: {e}",
                                self.name()
                            ),
                        ));
                    }
                };
                self.finish(ws, reply, started)
            }
            Termination::Exited(_) | Termination::Signaled(_) => Err(self.crashed(&result, limit)),
        }
    }
}

impl Isolated {
    fn finish(
        &self,
        ws: &Workspace,
        reply: Reply,
        started: Instant,
    ) -> Result<ToolOutcome, ToolError> {
        match reply {
            Reply::Failed {
                class,
                message,
                hint,
                staged,
            } => {
                self.commit(ws, staged)?;
                Err(ToolError {
                    class,
                    message,
                    hint,
                })
            }
            Reply::Done(done) => {
                let Done {
                    exit_code,
                    stdout,
                    stderr,
                    duration_us: _,
                    outputs,
                    invocation,
                    notes,
                    skipped,
                    staged,
                } = *done;
                self.commit(ws, staged)?;
                Ok(ToolOutcome {
                    termination: Termination::Exited(exit_code),
                    stdout: Captured::from_bytes(stdout.as_bytes()),
                    stderr: Captured::from_bytes(stderr.as_bytes()),
                    duration: started.elapsed(),
                    outputs,
                    invocation,
                    notes,
                    skipped,
                })
            }
        }
    }

    /// Puts what the child staged in place, in order.
    fn commit(&self, ws: &Workspace, staged: Vec<Staged>) -> Result<(), ToolError> {
        let mut files = Vec::with_capacity(staged.len());
        for f in staged {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(f.base64.as_bytes())
                .map_err(|e| {
                    ToolError::new(
                        ErrorClass::BadToolOutput,
                        format!(
                            "the child process of the `{}` tool gave unreadable content for `{}`: {e}; nothing was written",
                            self.name(),
                            f.path
                        ),
                    )
                })?;
            files.push(StagedFile {
                path: f.path,
                bytes,
            });
        }
        ws.commit_staged(&files).map_err(|e| {
            ToolError::new(
                ErrorClass::Io,
                format!(
                    "cannot put the `{}` tool's output in place: {e}",
                    self.name()
                ),
            )
            .hint(e.hint())
        })
    }

    /// The child ended without an answer: out of memory, or a crash.
    fn crashed(&self, result: &pmpo_process::ProcessResult, limit: Option<u64>) -> ToolError {
        let err = result.stderr.text();
        let out_of_memory = pmpo_process::limits::died_of_memory(&err);
        let how = match result.termination {
            Termination::Signaled(sig) => format!("was killed by signal {sig}"),
            Termination::Exited(code) => format!("exited with code {code}"),
            _ => "ended".into(),
        };
        if out_of_memory {
            let limit = limit.map_or("no limit".to_string(), pmpo_process::limits::human_size);
            return ToolError::new(
                ErrorClass::ToolFailed,
                format!(
                    "the `{}` tool ran out of memory: it needed more than its limit of {limit} ({MEMORY_VAR}); nothing was written",
                    self.name()
                ),
            )
            .hint(format!(
                "make the input smaller, or raise the limit: {MEMORY_VAR}=8G (0 for none)"
            ));
        }
        let last = result
            .stderr
            .last_line()
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        let under = limit.map_or(String::new(), |l| {
            format!(
                " (its memory limit is {}, {MEMORY_VAR}: too low a limit can stop it this way)",
                pmpo_process::limits::human_size(l)
            )
        });
        ToolError::new(
            ErrorClass::ToolFailed,
            format!(
                "the child process of the `{}` tool {how}{last}{under}; nothing was written",
                self.name()
            ),
        )
        .hint("this is a bug in pmpo or its libraries: please report it with the stage's inputs")
    }
}

/// The start of a child's side (`pmpo __tool`, `pmpo __check`): the memory
/// limit its parent passed applied to itself, then its one request read
/// from stdin. `Err` is the exit code, after saying what went wrong.
pub fn read_child_request<T: serde::de::DeserializeOwned>(
    subcommand: &str,
    what: &str,
    runs: &str,
) -> Result<T, i32> {
    use std::io::Read;
    if let Err(e) = pmpo_process::limits::apply_limit_from_args() {
        eprintln!("pmpo {subcommand}: {e}");
        return Err(2);
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("pmpo {subcommand}: cannot read the request: {e}");
        return Err(2);
    }
    serde_json::from_slice(&input).map_err(|e| {
        eprintln!(
            "pmpo {subcommand}: not a {what} ({e}); this subcommand is pmpo's own, for running {runs} in a child process"
        );
        2
    })
}

/// The child's side: reads one request on stdin, runs the tool in this
/// process with a staging workspace, prints the answer on stdout. Returns the
/// exit code (0 whenever an answer was printed, also for a tool error).
pub fn serve_child() -> i32 {
    use std::io::Write;
    let request: Request = match read_child_request(SUBCOMMAND, "tool call", "one tool") {
        Ok(r) => r,
        Err(code) => return code,
    };
    let reply = answer(&request);
    let mut out = std::io::stdout().lock();
    match serde_json::to_writer(&mut out, &reply) {
        Ok(()) => {
            let _ = out.flush();
            0
        }
        Err(e) => {
            eprintln!("pmpo {SUBCOMMAND}: cannot write the answer: {e}");
            2
        }
    }
}

fn answer(request: &Request) -> Reply {
    let failed = |e: ToolError, staged: Vec<Staged>| Reply::Failed {
        class: e.class,
        message: e.message,
        hint: e.hint,
        staged,
    };
    let tool: Arc<dyn Tool> = match request.tool.as_str() {
        "template" => Arc::new(crate::template::TemplateTool),
        "markdown" => Arc::new(crate::markdown::MarkdownTool),
        "rasterize" => Arc::new(crate::rasterize::RasterizeTool),
        "prompt" => Arc::new(crate::prompt::PromptTool),
        "a2ui" => Arc::new(crate::a2ui::A2uiTool),
        other => {
            return failed(
                ToolError::new(
                    ErrorClass::InvalidInput,
                    format!("`{other}` is not a tool that runs in a child process"),
                ),
                Vec::new(),
            );
        }
    };
    let ws = match Workspace::open(&request.root).map(|w| w.staging()) {
        Ok(w) => w,
        Err(e) => {
            let hint = e.hint();
            return failed(
                ToolError::new(ErrorClass::Io, e.to_string()).hint(hint),
                Vec::new(),
            );
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return failed(
                ToolError::new(
                    ErrorClass::Io,
                    format!("cannot start the tool's runtime: {e}"),
                ),
                Vec::new(),
            );
        }
    };
    let cancel = CancellationToken::new();
    let ctx = ToolContext {
        workspace: &ws,
        run_id: &request.run_id,
        stage_id: &request.stage_id,
        tool: &request.written,
        timeout: Duration::from_millis(request.timeout_ms),
        cancel: &cancel,
        spec: None,
        validation: &[],
        description: "",
        // The isolated tools start no process.
        confine: None,
    };
    let result = rt.block_on(tool.invoke(&ctx, &request.inputs));
    let staged: Vec<Staged> = ws
        .staged_files()
        .into_iter()
        .map(|f| Staged {
            base64: base64::engine::general_purpose::STANDARD.encode(&f.bytes),
            path: f.path,
        })
        .collect();
    match result {
        Ok(o) => Reply::Done(Box::new(Done {
            exit_code: match o.termination {
                Termination::Exited(c) => c,
                _ => 1,
            },
            stdout: String::from_utf8_lossy(&o.stdout.kept()).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr.kept()).into_owned(),
            duration_us: o.duration.as_micros().min(u64::MAX as u128) as u64,
            outputs: o.outputs,
            invocation: o.invocation,
            notes: o.notes,
            skipped: o.skipped,
            staged,
        })),
        Err(e) => failed(e, staged),
    }
}
