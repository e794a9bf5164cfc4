//! Stages run by workers (`pmpo execute --workers`, `pmpo worker`).
//!
//! The submitter runs the whole engine except the tool call: where the
//! engine would invoke the tool, it hands a [`RemoteJob`] to its
//! [`RemoteRunner`] (a queue that workers on any machine claim from) and
//! waits for the [`RemoteOutcome`]. A worker runs the tool with
//! [`run_job`]: the same tool, the same confinement, the same time limit
//! and cancel as the engine, after checking that the files the stage reads
//! are the ones the submitter recorded (a shared filesystem that is not
//! coherent is an error, never a silent difference), and digests the
//! stage's declared outputs after the tool ended. The submitter compares
//! those digests with what it reads on its own disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use pmpo_plan::Stage;
use pmpo_store::Workspace;
use pmpo_tools::{Captured, ErrorClass, Termination, ToolContext, ToolError, ToolOutcome};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::{CheckedPlan, Engine};

/// Where stages' tools run when they do not run in this process.
pub trait RemoteRunner: Send + Sync {
    /// Submits one attempt of a stage and waits for its outcome. `cancel`
    /// (the run's cancel or the stage's) withdraws the job: its worker kills
    /// the stage. An `Err` is a failure of the queue, not of the stage's tool.
    fn run<'a>(
        &'a self,
        job: RemoteJob,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<RemoteOutcome, ToolError>>;
}

/// One attempt of a stage, as a worker needs it.
#[derive(Debug, Clone)]
pub struct RemoteJob {
    pub run_id: String,
    pub stage_id: String,
    pub attempt: i64,
    /// The plan's path relative to the workspace (workers read it there).
    pub plan: String,
    /// blake3 of the plan's text.
    pub plan_blake3: String,
    pub payload: JobPayload,
}

/// What a job asks, besides where its plan is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobPayload {
    /// The tool as the plan wrote it.
    pub tool: String,
    /// The resolved inputs.
    pub inputs: Map<String, Value>,
    pub timeout_ms: u64,
    /// `{path: blake3}` of the files recorded as the outputs of the stages
    /// this one depends on: the worker checks them before it runs the tool.
    pub reads: BTreeMap<String, String>,
    /// The submitter's `--no-sandbox`.
    #[serde(default)]
    pub no_sandbox: bool,
}

/// How the tool's process ended, as it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireTermination {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Cancelled,
}

/// A captured stream, as it travels (its bytes as text).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireCaptured {
    pub head: String,
    pub tail: String,
    pub total: u64,
    pub whole_file: Option<String>,
}

/// A tool's error, as it travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub class: ErrorClass,
    pub message: String,
    pub hint: Option<String>,
}

/// What a worker did with a job: the tool's outcome or its error, and the
/// digests of the stage's declared outputs as the worker read them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoteOutcome {
    pub termination: Option<WireTermination>,
    pub stdout: WireCaptured,
    pub stderr: WireCaptured,
    pub duration_ms: f64,
    pub outputs: Map<String, Value>,
    pub invocation: Value,
    pub notes: Vec<String>,
    pub skipped: Option<String>,
    pub error: Option<WireError>,
    /// `{path: blake3}` of the declared outputs after the tool ended.
    pub digests: BTreeMap<String, String>,
    /// Who ran it (`host:pid:start`).
    pub worker: String,
    /// From the claim to the tool's start, on the worker.
    pub claim_to_start_ms: Option<f64>,
    /// How the worker confined the stage's processes (`landlock ABI 7`,
    /// `detection`, `off`); `None` for a tool that is not confined.
    #[serde(default)]
    pub sandbox: Option<String>,
}

impl RemoteOutcome {
    /// An outcome that is only an error.
    pub fn error(class: ErrorClass, message: String, hint: Option<String>) -> RemoteOutcome {
        RemoteOutcome {
            error: Some(WireError {
                class,
                message,
                hint,
            }),
            ..Default::default()
        }
    }

    /// The tool's result, as the engine judges a local call.
    pub fn into_result(self) -> Result<ToolOutcome, ToolError> {
        if let Some(e) = self.error {
            return Err(ToolError {
                class: e.class,
                message: e.message,
                hint: e.hint,
            });
        }
        let termination = match self.termination {
            Some(WireTermination::Exited(c)) => Termination::Exited(c),
            Some(WireTermination::Signaled(s)) => Termination::Signaled(s),
            Some(WireTermination::TimedOut) => Termination::TimedOut,
            Some(WireTermination::Cancelled) => Termination::Cancelled,
            None => {
                return Err(ToolError::new(
                    ErrorClass::BadToolOutput,
                    "the worker's outcome names no end of the tool",
                ));
            }
        };
        let captured = |w: WireCaptured| Captured {
            head: w.head.into_bytes(),
            tail: w.tail.into_bytes(),
            total: w.total,
            whole_file: w.whole_file,
        };
        Ok(ToolOutcome {
            termination,
            stdout: captured(self.stdout),
            stderr: captured(self.stderr),
            duration: Duration::from_secs_f64(self.duration_ms.max(0.0) / 1e3),
            outputs: self.outputs,
            invocation: self.invocation,
            notes: self.notes,
            skipped: self.skipped,
        })
    }

    fn from_result(r: Result<ToolOutcome, ToolError>) -> RemoteOutcome {
        match r {
            Err(e) => RemoteOutcome::error(e.class, e.message, e.hint),
            Ok(o) => {
                let wire = |c: &Captured| WireCaptured {
                    head: String::from_utf8_lossy(&c.head).into_owned(),
                    tail: String::from_utf8_lossy(&c.tail).into_owned(),
                    total: c.total,
                    whole_file: c.whole_file.clone(),
                };
                RemoteOutcome {
                    termination: Some(match o.termination {
                        Termination::Exited(c) => WireTermination::Exited(c),
                        Termination::Signaled(s) => WireTermination::Signaled(s),
                        Termination::TimedOut => WireTermination::TimedOut,
                        Termination::Cancelled => WireTermination::Cancelled,
                    }),
                    stdout: wire(&o.stdout),
                    stderr: wire(&o.stderr),
                    duration_ms: o.duration.as_secs_f64() * 1e3,
                    outputs: o.outputs,
                    invocation: o.invocation,
                    notes: o.notes,
                    skipped: o.skipped,
                    ..Default::default()
                }
            }
        }
    }
}

/// The stage a job names, or why the plan does not fit the job.
pub fn job_stage<'a>(plan: &'a CheckedPlan, job: &RemoteJob) -> Result<&'a Stage, String> {
    if plan.blake3 != job.plan_blake3 {
        return Err(format!(
            "the plan changed under the run: `{}` has blake3 {} here, the run was submitted with {}",
            job.plan, plan.blake3, job.plan_blake3
        ));
    }
    let stage = plan
        .doc
        .plan
        .stages
        .iter()
        .find(|s| s.id == job.stage_id)
        .ok_or_else(|| {
            format!(
                "the plan changed under the run: `{}` has no stage `{}`",
                job.plan, job.stage_id
            )
        })?;
    // A job runs only a tool its stage names (its own or its fallback).
    let tool = job.payload.tool.as_str();
    if tool != stage.tool_name() && stage.fallback.as_ref().is_none_or(|f| f.tool != tool) {
        return Err(format!(
            "the job asks for tool `{tool}`, which stage `{}` of `{}` does not name",
            job.stage_id, job.plan
        ));
    }
    Ok(stage)
}

/// Runs a job's tool on this machine, as the engine would: the files it
/// reads checked first, the tool confined, timed and cancellable, its
/// declared outputs digested after. `claimed` is when the job was claimed;
/// `host` names this machine in messages. The job's `no_sandbox` is set for
/// the whole process (a worker runs one job at a time).
pub async fn run_job(
    engine: &Engine,
    ws: &Workspace,
    plan: &CheckedPlan,
    job: &RemoteJob,
    cancel: &CancellationToken,
    claimed: Instant,
    host: &str,
) -> RemoteOutcome {
    let stage = match job_stage(plan, job) {
        Ok(s) => s,
        Err(message) => {
            return RemoteOutcome::error(
                ErrorClass::InvalidInput,
                message,
                Some("do not edit a plan while its run goes on; start a new run".into()),
            );
        }
    };
    if let Err(message) = check_reads(ws, &job.payload.reads, host) {
        return RemoteOutcome::error(
            ErrorClass::Io,
            message,
            Some("every machine must see the same files: mount the workspace from one shared filesystem with close-to-open consistency (NFS defaults), not a copy".into()),
        );
    }
    pmpo_sandbox::set_disabled(job.payload.no_sandbox);
    let tool_written = job.payload.tool.as_str();
    let inputs = &job.payload.inputs;
    let Some(tool) = engine.registry.get(tool_written) else {
        return RemoteOutcome::error(
            ErrorClass::InvalidInput,
            format!("unknown tool `{tool_written}` on this worker"),
            Some("run the same pmpo version everywhere".into()),
        );
    };
    if let Err(e) = tool.preflight() {
        return RemoteOutcome::error(e.class, e.message, e.hint);
    }
    let watch = match crate::sandbox::begin(ws, stage, tool.name()) {
        Ok(w) => w,
        Err((_, message, hint)) => {
            return RemoteOutcome::error(ErrorClass::PermissionDenied, message, hint);
        }
    };
    let confinement = watch.confinement.clone();
    let sandbox = watch.mode.map(|m| m.label());
    let ctx = ToolContext {
        workspace: ws,
        run_id: &job.run_id,
        stage_id: &stage.id,
        tool: tool_written,
        timeout: Duration::from_millis(job.payload.timeout_ms),
        cancel,
        spec: Some(&plan.doc.specification),
        validation: &plan.doc.plan.validation_plan,
        description: &stage.description,
        confine: confinement.as_ref(),
    };
    let claim_to_start = claimed.elapsed();
    let result = tool.invoke(&ctx, inputs).await;
    // The submitter judges what the sandbox saw on the shared files; here
    // the watch only ends (directories it made for outputs are tidied).
    let _ = watch.finish(ws);
    let mut outcome = RemoteOutcome::from_result(result);
    let mut watched = stage.outputs.clone();
    for p in tool.written_paths(inputs) {
        if !watched.contains(&p) {
            watched.push(p);
        }
    }
    outcome.digests = digests(ws, &watched);
    outcome.claim_to_start_ms = Some(claim_to_start.as_secs_f64() * 1e3);
    outcome.sandbox = sandbox;
    outcome
}

/// `{path: blake3}` of the files under `patterns` now.
pub fn digests(ws: &Workspace, patterns: &[String]) -> BTreeMap<String, String> {
    crate::outputs::expand(ws, patterns)
        .files
        .into_iter()
        .map(|(p, d)| (p, d.blake3))
        .collect()
}

/// Checks that every file a job reads has the digest the submitter recorded.
fn check_reads(ws: &Workspace, reads: &BTreeMap<String, String>, host: &str) -> Result<(), String> {
    for (path, expected) in reads {
        let found = ws
            .resolve(path)
            .ok()
            .and_then(|abs| pmpo_store::hash_file(&abs).ok())
            .map_or_else(|| "no readable file".to_string(), |d| d.blake3);
        if &found != expected {
            return Err(format!(
                "the shared filesystem is not coherent: `{path}` has blake3 {expected} for the submitter, but {found} on worker host {host}"
            ));
        }
    }
    Ok(())
}

/// What the submitter sends for one attempt, and what it does with the
/// answer: the job is built from the stage and its inputs, and the worker's
/// digests are compared with the files here. How the worker confined the
/// stage goes to `sandbox`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn submit(
    runner: &dyn RemoteRunner,
    sandbox: &std::sync::Mutex<Option<String>>,
    ws: &Workspace,
    plan: &CheckedPlan,
    run_id: &str,
    stage: &Stage,
    (tool_written, attempt): (&str, i64),
    inputs: &Map<String, Value>,
    timeout: Duration,
    watched: &[String],
    cancel: &CancellationToken,
) -> Result<ToolOutcome, ToolError> {
    let plan_rel = relative_plan(ws, &plan.path)?;
    let mut reads = BTreeMap::new();
    for dep in &stage.depends_on {
        if let Some(d) = plan.doc.plan.stages.iter().find(|s| &s.id == dep) {
            reads.extend(digests(ws, &d.outputs));
        }
    }
    let job = RemoteJob {
        run_id: run_id.to_string(),
        stage_id: stage.id.clone(),
        attempt,
        plan: plan_rel,
        plan_blake3: plan.blake3.clone(),
        payload: JobPayload {
            tool: tool_written.to_string(),
            inputs: inputs.clone(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            reads,
            no_sandbox: pmpo_sandbox::disabled(),
        },
    };
    let outcome = runner.run(job, cancel).await?;
    let theirs = outcome.digests.clone();
    let worker = outcome.worker.clone();
    *sandbox.lock().unwrap_or_else(|p| p.into_inner()) = outcome.sandbox.clone();
    let claim_to_start = outcome.claim_to_start_ms;
    let mut result = outcome.into_result()?;
    // The stage's log says where it ran.
    if let Value::Object(inv) = &mut result.invocation {
        inv.insert("worker".into(), Value::String(worker.clone()));
        if let Some(ms) = claim_to_start {
            inv.insert("claim_to_start_ms".into(), serde_json::json!(ms));
        }
    }
    let ours = digests(ws, watched);
    for (path, digest) in &theirs {
        let here = ours.get(path).map_or("no file", String::as_str);
        if here != digest {
            return Err(ToolError::new(
                ErrorClass::Io,
                format!(
                    "the shared filesystem is not coherent: worker {worker} wrote `{path}` with blake3 {digest}, but this machine reads {here}"
                ),
            )
            .hint("mount the workspace from one shared filesystem on every machine (the submitter's and the workers'), not copies"));
        }
    }
    Ok(result)
}

/// The plan's path relative to the workspace (workers find it there).
fn relative_plan(ws: &Workspace, plan: &Path) -> Result<String, ToolError> {
    let abs = plan.canonicalize().unwrap_or_else(|_| plan.to_path_buf());
    let root = ws
        .root()
        .canonicalize()
        .unwrap_or_else(|_| ws.root().to_path_buf());
    abs.strip_prefix(&root)
        .ok()
        .and_then(|p| p.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            ToolError::new(
                ErrorClass::InvalidInput,
                format!(
                    "the plan `{}` is outside the workspace `{}`: workers read it from the shared workspace",
                    plan.display(),
                    ws.root().display()
                ),
            )
            .hint("put the plan in the workspace (or pass --workspace to a directory that holds it)")
        })
}
