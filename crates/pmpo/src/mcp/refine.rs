//! `refine` and `answer`: the PMPO loop with the host as its model.
//!
//! The route is the one `pmpo answer` goes on with
//! ([`answer_cmd::continue_args`]): `--via host`, unless `pmpo.toml` already
//! routes a phase to the host (then its routes stand as written). A
//! refinement started here and one continued from a shell ask the same way.
//!
//! The loop runs on a thread of its own (its own runtime), so the protocol
//! stays responsive; its progress goes to the client as progress
//! notifications, never to stdout. When the client declared sampling, the
//! host's model answers directly ([`super::sampling`]); otherwise the loop
//! pauses and the result carries the pending question.

use std::path::Path;
use std::sync::Arc;

use pmpo_ai::host::{self, Sampler};
use pmpo_engine::Event;
use pmpo_loop::pending::Pending;
use pmpo_loop::{Observer, Outcome, Report};
use pmpo_store::Workspace;
use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Server;
use super::sampling::{McpSampler, client_samples};
use super::tools::{Args, Cli, Progress, ok, rel_path};
use crate::answer_cmd;
use crate::error::CliError;
use crate::refine_cmd::{self, Driver, RefineArgs};

/// The loop's progress, as progress notifications.
struct Notes(Progress);

impl Observer for Notes {
    fn phase_start(&mut self, iteration: u64, max: u64, phase: &str) {
        self.0
            .say(&format!("[iteration {iteration}/{max}] {phase}"));
    }
    fn phase_done(&mut self, _iteration: u64, phase: &str, summary: &str, _ms: f64) {
        self.0.say(&format!("{phase}: {summary}"));
    }
    fn note(&mut self, text: &str) {
        self.0.say(text);
    }
    fn on_event(&mut self, event: &Event) {
        use pmpo_engine::EventKind as K;
        let word = match event.event {
            K::TaskStarted => "started",
            K::TaskCompleted => "completed",
            K::TaskFailed => "FAILED",
            K::TaskSkipped => "skipped",
            K::TaskRetrying => "retrying",
            K::TaskFallback => "falls back",
            K::TaskAwaitingIntervention => "awaits a decision",
            _ => return,
        };
        let (Some(stage), Some(i)) = (&event.stage_id, event.index) else {
            return;
        };
        let tail = event
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        self.0
            .say(&format!("[{i}/{}] {stage} {word}{tail}", event.total));
    }
}

/// What the host needs to answer a pending question.
pub(super) fn pending_value(p: &Pending) -> Value {
    let q = &p.question;
    json!({
        "artifact": p.artifact,
        "iteration": p.iteration,
        "question_id": q.id,
        "phase": q.phase,
        "stage": q.stage,
        "system": q.system,
        "prompt": q.prompt(),
        "messages": q.messages,
        "schema": q.brief.schema,
        "files": q.brief.files,
        "measured": q.brief.measured,
        "how_to_answer": format!(
            "call the `answer` tool with {{\"name\": \"{}\", \"answer\": <a JSON object satisfying `schema`>}}; \
             constraints in `measured` are decided by checks: a verdict on them is ignored",
            p.artifact
        ),
    })
}

/// The loop's report as a tool result, with the pending question when it waits for one.
fn report_result(root: &Path, report: &Report) -> CallToolResult {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    let code = refine_cmd::outcome_code(report.outcome);
    let mut text = format!(
        "`{}` {} (iteration {} of at most {})",
        report.artifact_name,
        serde_json::to_value(report.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        report.iteration,
        report.max_iterations
    );
    if let Some(d) = &report.last_decision {
        text.push_str(&format!("\ndecision: {} — {}", d.decision, d.reason));
    }
    let pending = (report.outcome == Outcome::AwaitingAnswer)
        .then(|| Workspace::open(root).ok())
        .flatten()
        .and_then(|ws| {
            pmpo_loop::pending::read(&ws, &report.artifact_name)
                .ok()
                .flatten()
        });
    if let Value::Object(o) = &mut value {
        o.insert("exit_code".into(), json!(code));
        if let Some(p) = &pending {
            let pv = pending_value(p);
            text.push_str(&format!(
                "\nthe {} phase waits for your answer:\n{}\n\n{}",
                p.question.phase,
                p.question.prompt(),
                pv["how_to_answer"].as_str().unwrap_or_default()
            ));
            o.insert("pending".into(), pv);
        }
    }
    if let Some(n) = &report.next_step
        && pending.is_none()
    {
        text.push_str(&format!("\nnext: {n}"));
    }
    ok(value, text)
}

/// Runs the loop on a thread of its own; the report, or the CLI's error.
async fn run_loop(
    server: &Server,
    args: RefineArgs,
    progress: Progress,
    cancel: CancellationToken,
) -> Result<CallToolResult, String> {
    let sampler: Option<Arc<dyn Sampler>> = client_samples(progress.peer()).then(|| {
        Arc::new(McpSampler {
            peer: progress.peer().clone(),
            handle: tokio::runtime::Handle::current(),
            cancel: cancel.clone(),
        }) as Arc<dyn Sampler>
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("pmpo-mcp-refine".into())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Err(e) => Err(CliError::failed(format!(
                    "cannot start the async runtime: {e}"
                ))),
                Ok(rt) => {
                    let mut notes = Notes(progress);
                    rt.block_on(refine_cmd::run_refine(
                        &args,
                        Driver {
                            observer: &mut notes,
                            sampler,
                            cancel,
                            interactive: false,
                        },
                    ))
                }
            };
            let _ = tx.send(result);
        })
        .map_err(|e| format!("error: cannot start the refinement: {e}"))?;
    if let Ok(mut jobs) = server.jobs.lock() {
        jobs.retain(|j| !j.is_finished());
        jobs.push(thread);
    }
    match rx.await {
        Ok(Ok(report)) => Ok(report_result(&server.root, &report)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("error: the refinement stopped without a report".into()),
    }
}

/// The arguments of `pmpo refine NAME` with the host as the model.
fn refine_args(root: &Path, name: &str) -> Result<RefineArgs, String> {
    pmpo_store::artifacts::Artifacts::check_name(name)
        .map_err(|e| CliError::invalid(&e).hint(e.hint()).to_string())?;
    let mut args = answer_cmd::continue_args(name, root, false, true).map_err(|e| e.to_string())?;
    args.workspace = root.to_path_buf();
    Ok(args)
}

pub(super) async fn refine(
    server: &Server,
    a: &Args,
    progress: Progress,
    cancel: CancellationToken,
) -> Result<CallToolResult, String> {
    let name = a.need("name")?;
    let mut args = refine_args(&server.root, &name)?;
    args.artifact_type = a.str("type")?;
    args.content_type = a.str("content_type")?;
    args.intent = a.str("intent")?;
    args.max_iterations = a.uint("max_iterations", 1000)?;
    args.inputs = a
        .strings("inputs")?
        .iter()
        .map(|i| rel_path(&server.root, i, "the input"))
        .collect::<Result<_, _>>()?;
    run_loop(server, args, progress, cancel).await
}

pub(super) async fn answer(
    server: &Server,
    a: &Args,
    progress: Progress,
    cancel: CancellationToken,
) -> Result<CallToolResult, String> {
    let text = a.answer_text()?;
    if text.trim().is_empty() {
        return Err(
            "error: the answer is empty\n  help: give the JSON the question's schema asks for"
                .into(),
        );
    }
    let ws = Workspace::open(&server.root).map_err(|e| CliError::invalid(e).to_string())?;
    let (name, run, stage) = (a.str("name")?, a.str("run_id")?, a.str("stage")?);
    match (name, run, stage) {
        (Some(name), None, None) => {
            let args = refine_args(&server.root, &name)?;
            pmpo_loop::pending::answer(&ws, &name, &text)
                .map_err(|e| CliError::invalid(&e).hint(e.hint()).to_string())?;
            run_loop(server, args, progress, cancel).await
        }
        (None, Some(run), Some(stage)) => {
            let q = answer_cmd::stage_question(&ws, &run, &stage).map_err(|e| e.to_string())?;
            host::give_answer(&ws, &q.id, &text).map_err(|e| format!("error: {e}"))?;
            let argv = vec![
                "resume".into(), "--retry".into(), "--via=host".into(), "--json".into(),
                format!("--workspace={}", server.root.display()), "--".into(), run,
            ];
            let said = Cli { argv, progress, cancel }.output(&server.root).await?;
            Ok(said.into_result("pmpo resume", None))
        }
        _ => Err("error: `answer` needs either `name` (an artifact's question) or both `run_id` and `stage` (an `ai` stage of a run)".into()),
    }
}
