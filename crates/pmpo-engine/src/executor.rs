//! The stage loop.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use pmpo_plan::{Reference, Stage, execution_order, reference::visit_references};
use pmpo_store::{LedgerEntry, Workspace, now_rfc3339};
use pmpo_tools::{Captured, Termination, ToolContext, ToolOutcome};
use serde_json::{Map, Value, json};

use crate::events::{Event, EventKind, EventSink, StageStatus};
use crate::outputs::{self, Change};
use crate::resolve::{StageData, resolve_inputs};
use crate::results::{ErrorEntry, StageResult, ValidationOutput};
use crate::{
    EVENTS_LOG, Engine, EngineError, ExecuteOptions, ExecutionResults, STAGE_LOG_DIR, persist,
};

/// Emits events to the run's event log and to the caller's sink.
struct Emitter<'a> {
    run_id: String,
    total: usize,
    log: File,
    sink: &'a mut dyn EventSink,
}

impl Emitter<'_> {
    fn emit(
        &mut self,
        kind: EventKind,
        stage: Option<(&str, usize)>,
        status: Option<StageStatus>,
        duration: Option<Duration>,
        message: Option<String>,
    ) {
        let event = Event {
            event: kind,
            run_id: self.run_id.clone(),
            stage_id: stage.map(|(id, _)| id.to_string()),
            timestamp: now_rfc3339(),
            index: stage.map(|(_, i)| i),
            total: self.total,
            status,
            duration_ms: duration.map(ms),
            message,
        };
        let mut line = serde_json::to_vec(&event).expect("events serialize");
        line.push(b'\n');
        // One write per event; a failing log must not stop the run, so it is reported once at the end.
        let _ = self.log.write_all(&line);
        self.sink.on_event(&event);
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let nanos = now.timestamp_nanos_opt().unwrap_or_default();
    let salt = blake3::hash(format!("{nanos}-{}", std::process::id()).as_bytes());
    format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), &salt.to_hex()[..6])
}

/// Which `(stage, field)` pairs later stages read; only these are kept in memory.
fn referenced_fields(stages: &[Stage]) -> HashSet<(String, String)> {
    let mut set = HashSet::new();
    for stage in stages {
        for value in stage.inputs.values() {
            visit_references(value, &mut Vec::new(), &mut |_, r: Reference<'_>| {
                set.insert((r.stage.to_string(), r.field[0].to_string()));
            });
        }
    }
    set
}

fn tail_lines(c: &Captured, n: usize) -> Option<String> {
    let text = c.text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let start = lines.len().saturating_sub(n);
    Some(lines[start..].join("\n"))
}

pub(crate) async fn run(
    engine: &Engine,
    plan: &crate::CheckedPlan,
    opts: &ExecuteOptions,
    sink: &mut dyn EventSink,
) -> Result<ExecutionResults, EngineError> {
    let ws = Workspace::open(&opts.workspace)?;
    let stages = &plan.doc.plan.stages;
    let order = execution_order(stages);
    let run_id = new_run_id();
    let started_at = now_rfc3339();
    let run_start = Instant::now();
    let wanted = referenced_fields(stages);

    let mut emitter = Emitter {
        run_id: run_id.clone(),
        total: order.len(),
        log: ws.open_append(EVENTS_LOG)?,
        sink,
    };
    emitter.emit(
        EventKind::ExecutionStarted,
        None,
        None,
        None,
        Some(plan.display.clone()),
    );
    ws.create_dir_all(STAGE_LOG_DIR)?;

    let mut results: Vec<Option<StageResult>> = vec![None; stages.len()];
    let mut status_of: HashMap<&str, StageStatus> = HashMap::with_capacity(stages.len());
    let mut data: HashMap<String, StageData> = HashMap::new();
    let mut errors: Vec<ErrorEntry> = Vec::new();
    let mut validations: Vec<ValidationOutput> = Vec::new();
    let mut first_failure: Option<String> = None;
    let mut cancelled = false;

    for (pos, &idx) in order.iter().enumerate() {
        let stage = &stages[idx];
        let at = Some((stage.id.as_str(), pos + 1));
        let tool_name = engine.registry.resolve_name(stage.tool_name());

        // Skip: upstream failure, an earlier failure (fail-fast), or cancellation.
        let skip_reason = if cancelled || opts.cancel.is_cancelled() {
            cancelled = true;
            Some("not run: the run was cancelled".to_string())
        } else if let Some(dep) = stage
            .depends_on
            .iter()
            .find(|d| status_of.get(d.as_str()).is_some_and(|s| s.is_failure()))
        {
            Some(format!(
                "upstream stage `{dep}` {}",
                status_of[dep.as_str()].as_str()
            ))
        } else if let (Some(f), false) = (&first_failure, opts.keep_going) {
            Some(format!(
                "not run: stage `{f}` failed and the run stops at the first failure (use --keep-going to run independent stages)"
            ))
        } else {
            None
        };
        if let Some(reason) = skip_reason {
            emitter.emit(
                EventKind::TaskSkipped,
                at,
                Some(StageStatus::Skipped),
                None,
                Some(reason.clone()),
            );
            status_of.insert(&stage.id, StageStatus::Skipped);
            results[idx] = Some(StageResult {
                id: stage.id.clone(),
                description: stage.description.clone(),
                tool: tool_name.to_string(),
                status: StageStatus::Skipped,
                reason: Some(reason),
                started_at: None,
                finished_at: None,
                duration_ms: 0.0,
                exit_code: None,
                signal: None,
                outputs: Map::new(),
                files: Vec::new(),
                stdout_bytes: 0,
                stderr_bytes: 0,
                log: None,
            });
            continue;
        }

        emitter.emit(
            EventKind::TaskStarted,
            at,
            Some(StageStatus::InProgress),
            None,
            Some(stage.description.clone()).filter(|d| !d.is_empty()),
        );
        let stage_started_at = now_rfc3339();
        let t0 = Instant::now();
        let attempt = run_stage(engine, &ws, &run_id, stage, opts, &data).await;
        let mut outcome = attempt.outcome;
        let mut failure = attempt.failure;

        // VALIDATING: the tool finished; now the engine decides.
        let mut files = Vec::new();
        if failure.is_none() {
            emitter.emit(
                EventKind::TaskValidating,
                at,
                Some(StageStatus::Validating),
                None,
                None,
            );
            let vt = Instant::now();
            let after = outputs::expand(&ws, &stage.outputs);
            files = outputs::diff(&stage.id, &attempt.before, &after);
            let mut problems: Vec<String> = after
                .missing
                .iter()
                .map(|m| format!("declared output missing: {m}"))
                .collect();
            problems.extend(after.problems.iter().cloned());
            if !stage.outputs.is_empty() {
                validations.push(ValidationOutput {
                    check: "declared_outputs".into(),
                    stage: Some(stage.id.clone()),
                    constraint_id: None,
                    status: if problems.is_empty() { "passed" } else { "failed" }.into(),
                    evidence: json!({ "declared": stage.outputs, "found": files.iter().map(|f| &f.path).collect::<Vec<_>>(), "problems": problems }),
                    duration_ms: ms(vt.elapsed()),
                });
            }
            if !problems.is_empty() {
                failure = Some(Failure {
                    status: StageStatus::Failed,
                    kind: "missing_output".into(),
                    message: problems.join("; "),
                    hint: Some("the stage must create every declared output; check its command and the paths under `outputs:`".into()),
                });
            }
        }
        let duration = t0.elapsed();
        let finished_at = now_rfc3339();
        let status = failure
            .as_ref()
            .map_or(StageStatus::Completed, |f| f.status);

        // Record changed files in the ledger (before/after digests).
        let ledger: Vec<LedgerEntry> = files
            .iter()
            .filter(|f| f.change != Change::Unchanged)
            .map(|f| LedgerEntry {
                time: finished_at.clone(),
                run_id: run_id.clone(),
                writer: stage.id.clone(),
                path: f.path.clone(),
                before: f.before.clone(),
                after: Some(pmpo_store::FileDigest {
                    size: f.size,
                    blake3: f.blake3.clone(),
                }),
            })
            .collect();
        ws.record(&ledger)?;

        let (exit_code, signal) = match outcome.as_ref().map(|o| o.termination) {
            Some(Termination::Exited(c)) => (Some(c), None),
            Some(Termination::Signaled(s)) => (None, Some(s)),
            _ => (None, None),
        };
        let stage_log = format!("{STAGE_LOG_DIR}/{}.jsonl", stage.id);
        let mut log_record = json!({
            "run_id": run_id,
            "stage": stage.id,
            "attempt": 1,
            "tool": tool_name,
            "status": status,
            "started_at": stage_started_at,
            "finished_at": finished_at,
            "duration_ms": ms(duration),
            "inputs": attempt.resolved,
            "exit_code": exit_code,
            "signal": signal,
            "files": files,
        });
        if let Some(o) = &outcome {
            log_record["invocation"] = o.invocation.clone();
            log_record["stdout"] = Value::String(o.stdout.text());
            log_record["stderr"] = Value::String(o.stderr.text());
            log_record["stdout_bytes"] = json!(o.stdout.total);
            log_record["stderr_bytes"] = json!(o.stderr.total);
            if !o.notes.is_empty() {
                log_record["notes"] = json!(o.notes);
            }
        }
        if let Some(f) = &failure {
            log_record["error"] = json!({"kind": f.kind, "message": f.message, "hint": f.hint});
        }
        let mut line = serde_json::to_vec(&log_record).expect("log records serialize");
        line.push(b'\n');
        ws.append(&stage_log, &line)?;

        if let Some(f) = &failure {
            errors.push(ErrorEntry {
                stage: stage.id.clone(),
                kind: f.kind.clone(),
                message: f.message.clone(),
                hint: f.hint.clone(),
                stderr_tail: outcome.as_ref().and_then(|o| tail_lines(&o.stderr, 10)),
            });
            if f.kind == "cancelled" {
                cancelled = true;
            }
            first_failure.get_or_insert_with(|| stage.id.clone());
            emitter.emit(
                EventKind::TaskFailed,
                at,
                Some(status),
                Some(duration),
                Some(f.message.clone()),
            );
        } else {
            emitter.emit(
                EventKind::TaskCompleted,
                at,
                Some(status),
                Some(duration),
                None,
            );
        }
        status_of.insert(&stage.id, status);

        // Keep what later stages read.
        let named = outcome
            .as_mut()
            .map(|o| std::mem::take(&mut o.outputs))
            .unwrap_or_default();
        if status == StageStatus::Completed && wanted.iter().any(|(s, _)| s == &stage.id) {
            let mut d: StageData = named.clone();
            let keep = |f: &str| wanted.contains(&(stage.id.clone(), f.to_string()));
            if let Some(o) = &outcome {
                if keep("stdout") {
                    d.insert(
                        "stdout".into(),
                        Value::String(o.stdout.text().trim_end().to_string()),
                    );
                }
                if keep("stderr") {
                    d.insert(
                        "stderr".into(),
                        Value::String(o.stderr.text().trim_end().to_string()),
                    );
                }
            }
            d.insert("exit_code".into(), json!(exit_code));
            d.insert(
                "files".into(),
                json!(files.iter().map(|f| &f.path).collect::<Vec<_>>()),
            );
            d.insert("duration_ms".into(), json!(ms(duration)));
            data.insert(stage.id.clone(), d);
        }

        results[idx] = Some(StageResult {
            id: stage.id.clone(),
            description: stage.description.clone(),
            tool: tool_name.to_string(),
            status,
            reason: failure.map(|f| f.message),
            started_at: Some(stage_started_at),
            finished_at: Some(finished_at),
            duration_ms: ms(duration),
            exit_code,
            signal,
            outputs: named,
            files,
            stdout_bytes: outcome.as_ref().map_or(0, |o| o.stdout.total),
            stderr_bytes: outcome.as_ref().map_or(0, |o| o.stderr.total),
            log: Some(stage_log),
        });
    }

    // Tools release what they kept for the run (the preview tool's browser).
    engine.registry.end_run().await;

    // Results in execution order.
    let stage_results: Vec<StageResult> = order.iter().filter_map(|&i| results[i].take()).collect();
    let status = if cancelled {
        "cancelled"
    } else if stage_results
        .iter()
        .all(|s| s.status == StageStatus::Completed)
    {
        "completed"
    } else {
        "failed"
    };
    let results = persist::finish(
        &ws,
        plan,
        persist::RunRecord {
            run_id: run_id.clone(),
            started_at,
            duration: run_start.elapsed(),
            status,
            stages: stage_results,
            errors,
            validations,
        },
    )?;
    emitter.emit(
        EventKind::ExecutionFinished,
        None,
        None,
        Some(run_start.elapsed()),
        Some(status.to_string()),
    );
    Ok(results)
}

struct Failure {
    status: StageStatus,
    kind: String,
    message: String,
    hint: Option<String>,
}

struct Attempt {
    outcome: Option<ToolOutcome>,
    failure: Option<Failure>,
    before: std::collections::BTreeMap<String, pmpo_store::FileDigest>,
    resolved: Value,
}

async fn run_stage(
    engine: &Engine,
    ws: &Workspace,
    run_id: &str,
    stage: &Stage,
    opts: &ExecuteOptions,
    data: &HashMap<String, StageData>,
) -> Attempt {
    let mut attempt = Attempt {
        outcome: None,
        failure: None,
        before: Default::default(),
        resolved: Value::Null,
    };
    let fail = |kind: &str, message: String, hint: Option<String>| Failure {
        status: StageStatus::Failed,
        kind: kind.into(),
        message,
        hint,
    };
    let Some(tool) = engine.registry.get(stage.tool_name()) else {
        attempt.failure = Some(fail(
            "invalid_input",
            format!("unknown tool `{}`", stage.tool_name()),
            None,
        ));
        return attempt;
    };
    if let Err(e) = tool.preflight() {
        attempt.failure = Some(fail(&class_name(e.class), e.message, e.hint));
        return attempt;
    }
    let inputs = match resolve_inputs(&stage.inputs, data) {
        Ok(i) => i,
        Err(msg) => {
            attempt.failure = Some(fail(
                "invalid_input",
                msg,
                Some("check the upstream stage's outputs in its log".into()),
            ));
            return attempt;
        }
    };
    attempt.resolved = Value::Object(inputs.clone());
    attempt.before = outputs::expand(ws, &stage.outputs).files;
    let timeout = stage.timeout.map_or(opts.default_timeout, |t| t.0);
    let ctx = ToolContext {
        workspace: ws,
        run_id,
        stage_id: &stage.id,
        timeout,
        cancel: &opts.cancel,
    };
    match tool.invoke(&ctx, &inputs).await {
        Err(e) => attempt.failure = Some(fail(&class_name(e.class), e.message, e.hint)),
        Ok(outcome) => {
            attempt.failure = match outcome.termination {
                Termination::Exited(0) => None,
                Termination::Exited(code) => Some(fail(
                    "exit_status",
                    format!("exited with code {code}{}", tail_lines(&outcome.stderr, 1).map(|l| format!(": {l}")).unwrap_or_default()),
                    Some(exit_hint(code)),
                )),
                Termination::Signaled(sig) => Some(fail("signal", format!("killed by signal {sig}{}", signal_name(sig)), Some("the process was killed; check memory limits and whether something else stopped it".into()))),
                Termination::TimedOut => Some(Failure {
                    status: StageStatus::Timeout,
                    kind: "timeout".into(),
                    message: format!("timed out after {:.1?}; its process group was killed", timeout),
                    hint: Some("raise the stage's `timeout:` or make the work faster".into()),
                }),
                Termination::Cancelled => Some(fail("cancelled", "cancelled by the user; its process group was killed".into(), None)),
            };
            attempt.outcome = Some(outcome);
        }
    }
    attempt
}

fn class_name(c: pmpo_tools::ErrorClass) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn exit_hint(code: i32) -> String {
    match code {
        127 => "exit 127 means a command was not found: install it or fix its name".into(),
        126 => "exit 126 means a command was found but could not run: check its permissions".into(),
        _ => "see the stage's stderr in its log under logs/execution/".into(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc_sig::SIGKILL => " (SIGKILL; out of memory?)",
        libc_sig::SIGSEGV => " (SIGSEGV)",
        libc_sig::SIGTERM => " (SIGTERM)",
        libc_sig::SIGABRT => " (SIGABRT)",
        _ => "",
    }
}

mod libc_sig {
    pub const SIGABRT: i32 = 6;
    pub const SIGKILL: i32 = 9;
    pub const SIGSEGV: i32 = 11;
    pub const SIGTERM: i32 = 15;
}
