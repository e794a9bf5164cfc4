//! The stage loop: resume, cache, run, verify, record.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use pmpo_plan::{OnFailure, Reference, Stage, execution_order, reference::visit_references};
use pmpo_store::db::{
    AttemptRow, CacheRow, EventRow, ExecStore, PatchRow, RunRow, SqliteStore, TaskRow,
};
use pmpo_store::lock::{self, LockHolder};
use pmpo_store::{Durability, FileDigest, Workspace, hash_file, now_rfc3339};
use pmpo_tools::{Captured, Termination, ToolContext, ToolOutcome};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use pmpo_store::states::FailureKind;

use crate::events::{Event, EventKind, EventSink, StageStatus};
use crate::kind::ErrorKind;
use crate::outputs::{self, Change, GeneratedFile};
use crate::recovery;
use crate::resolve::{StageData, resolve_inputs};
use crate::results::{ErrorEntry, RunStatus, StageResult, ValidationOutput};
use crate::{
    CheckedPlan, Decision, EVENTS_LOG, Engine, EngineError, ExecuteOptions, ExecutionResults,
    Force, HEARTBEAT_EVERY, Intervention, STAGE_LOG_DIR, persist,
};

/// Emits events to the event log, the store and the caller's sink.
pub(crate) struct Recorder<'a> {
    pub run_id: String,
    total: usize,
    log: File,
    pub db: Box<dyn ExecStore>,
    sink: &'a mut dyn EventSink,
}

impl Recorder<'_> {
    fn emit(
        &mut self,
        kind: EventKind,
        stage: Option<(&str, usize)>,
        status: Option<StageStatus>,
        duration: Option<Duration>,
        message: Option<String>,
    ) -> Result<(), EngineError> {
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
        // The JSONL log is a convenience copy; the store is the record.
        let _ = self.log.write_all(&line);
        self.db.add_event(&EventRow {
            run_id: event.run_id.clone(),
            stage_id: event.stage_id.clone(),
            kind: serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            status: status.map(|s| s.as_str().to_string()),
            timestamp: event.timestamp.clone(),
            duration_ms: event.duration_ms,
            message: event.message.clone(),
        })?;
        self.sink.on_event(&event);
        Ok(())
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
    Some(pmpo_store::secrets::redact(&lines[start..].join("\n")).into_owned())
}

/// The hash of what a stage is, independent of any run.
pub(crate) fn definition_hash(stage: &Stage, tool: &str) -> String {
    // The id is part of it: a stage reuses its own earlier results, not those of
    // another stage that happens to be written the same way.
    let def = json!({
        "id": stage.id,
        "tool": tool,
        "requires_execution": stage.requires_execution,
        "with": stage.inputs,
        "outputs": stage.outputs,
        "inputs": stage.input_files,
        "depends_on": stage.depends_on,
    });
    blake3::hash(&serde_json::to_vec(&def).expect("json"))
        .to_hex()
        .to_string()
}

/// Strings in the inputs that name an existing workspace file (a script a
/// command runs, a file it reads) are part of the cache key even when the
/// stage does not declare them.
fn mentioned_files(ws: &Workspace, value: &Value, out: &mut BTreeMap<String, FileDigest>) {
    match value {
        Value::String(s) => {
            if s.is_empty()
                || s.len() > 1024
                || s.contains(['\n', '\0'])
                || s.starts_with('-')
                || s.starts_with('/')
            {
                return;
            }
            if let Ok(path) = ws.resolve(s)
                && let Ok(m) = std::fs::metadata(&path)
                && m.is_file()
                && m.len() <= 64 * 1024 * 1024
                && let Ok(d) = hash_file(&path)
            {
                out.insert(s.clone(), d);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| mentioned_files(ws, v, out)),
        Value::Object(map) => map.values().for_each(|v| mentioned_files(ws, v, out)),
        _ => {}
    }
}

/// What a finished (or reused) stage leaves for the stages after it.
#[derive(Default, Clone)]
struct Done {
    status: Option<StageStatus>,
    files: Vec<(String, String)>,
}

/// Which earlier result a stage can reuse.
enum Reuse {
    /// Completed in the interrupted run this run continues.
    Carried(TaskRow),
    Cached(CacheRow),
}

fn files_intact(ws: &Workspace, stage: &Stage, files_json: &str) -> Option<Vec<GeneratedFile>> {
    let recorded: Vec<GeneratedFile> = serde_json::from_str::<Vec<Value>>(files_json)
        .ok()?
        .into_iter()
        .filter_map(|v| {
            Some(GeneratedFile {
                path: v.get("path")?.as_str()?.to_string(),
                size: v.get("size")?.as_u64()?,
                blake3: v.get("blake3")?.as_str()?.to_string(),
                stage: stage.id.clone(),
                change: Change::Unchanged,
                before: None,
            })
        })
        .collect();
    // The declared outputs must expand to recorded files only, and every
    // recorded file (the tool's own outputs too) must be there, unchanged.
    let now = outputs::expand(ws, &stage.outputs);
    if !now.missing.is_empty() || !now.problems.is_empty() {
        return None;
    }
    if now
        .files
        .keys()
        .any(|p| !recorded.iter().any(|f| &f.path == p))
    {
        return None;
    }
    for f in &recorded {
        let digest = match now.files.get(&f.path) {
            Some(d) => Some(d.clone()),
            None => ws.resolve(&f.path).ok().and_then(|p| hash_file(&p).ok()),
        };
        match digest {
            Some(d) if d.blake3 == f.blake3 => {}
            _ => return None,
        }
    }
    Some(recorded)
}

pub(crate) async fn run(
    engine: &Engine,
    plan: &CheckedPlan,
    opts: &ExecuteOptions,
    sink: &mut dyn EventSink,
) -> Result<ExecutionResults, EngineError> {
    let ws = Workspace::open(&opts.workspace)?;
    let plan_rel = persist::plan_rel(&ws, plan);
    let pid = std::process::id();
    let started_at = now_rfc3339();
    let mut holder = LockHolder {
        pid,
        run_id: String::new(),
        since: started_at.clone(),
        command: format!("pmpo execute {plan_rel}"),
    };
    let mut workspace_lock = lock::acquire(&ws, &holder, opts.wait).map_err(|e| match e {
        lock::LockError::Busy(h) => EngineError::Busy(h),
        lock::LockError::Store(s) => EngineError::Store(s),
    })?;
    let mut db: Box<dyn ExecStore> = Box::new(SqliteStore::open(ws.root())?);
    // Under the lock no other run is live: an intent still pending belongs to
    // a run that was killed, and stays on record as interrupted.
    let settled = crate::intents::settle_interrupted(&ws, db.as_mut())?;

    let stages = &plan.doc.plan.stages;
    let order = execution_order(stages);

    // A new run, or the continuation of an interrupted one.
    let resumed = match &opts.resume {
        Some(id) => {
            let run = db
                .run(id)?
                .ok_or_else(|| EngineError::NoSuchRun(id.clone()))?;
            if run.plan != plan_rel {
                return Err(EngineError::PlanMismatch {
                    run_id: id.clone(),
                    recorded: run.plan,
                    given: plan_rel,
                });
            }
            Some(run)
        }
        None => db.interrupted_run(&plan_rel)?,
    };
    let (run_id, prior): (String, HashMap<String, TaskRow>) = match &resumed {
        Some(run) => (
            run.run_id.clone(),
            db.tasks(&run.run_id)?
                .into_iter()
                .map(|t| (t.stage_id.clone(), t))
                .collect(),
        ),
        None => (new_run_id(), HashMap::new()),
    };
    // A run paused for a decision goes on only with one.
    if let Some(run) = &resumed
        && run.status == "awaiting_intervention"
        && opts.decision.is_none()
        && let Some(t) = prior.values().find(|t| t.status == "AWAITING_INTERVENTION")
    {
        return Err(EngineError::AwaitingDecision {
            run_id: run_id.clone(),
            stage: t.stage_id.clone(),
        });
    }
    holder.run_id = run_id.clone();
    workspace_lock.update(&holder)?;
    db.begin_run(&RunRow {
        run_id: run_id.clone(),
        plan: plan_rel.clone(),
        plan_blake3: plan.blake3.clone(),
        status: "running".into(),
        started_at: resumed
            .as_ref()
            .map_or_else(|| started_at.clone(), |r| r.started_at.clone()),
        finished_at: None,
        pid: pid as i64,
        stages: stages.len() as i64,
        heartbeat_at: Some(started_at.clone()),
    })?;
    let run_start = Instant::now();
    let wanted = referenced_fields(stages);

    let mut rec = Recorder {
        run_id: run_id.clone(),
        total: order.len(),
        log: ws.open_append(EVENTS_LOG)?,
        db,
        sink,
    };
    rec.emit(
        EventKind::ExecutionStarted,
        None,
        None,
        None,
        Some(plan.display.clone()),
    )?;
    if let Some(run) = &resumed {
        let mut changed: Vec<&str> = stages
            .iter()
            .filter(|s| {
                prior.get(&s.id).is_some_and(|t| {
                    t.def_hash != definition_hash(s, engine.registry.resolve_name(s.tool_name()))
                })
            })
            .map(|s| s.id.as_str())
            .collect();
        changed.extend(
            stages
                .iter()
                .filter(|s| !prior.contains_key(&s.id) && !prior.is_empty())
                .map(|s| s.id.as_str()),
        );
        let done = prior
            .values()
            .filter(|t| t.status == "COMPLETED" || t.status == "CACHED")
            .count();
        let mut msg = format!(
            "continuing run {} ({done} stage(s) already done)",
            run.run_id
        );
        if run.plan_blake3 != plan.blake3 {
            msg.push_str(&format!(
                "; the plan changed since then{}",
                if changed.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": stage(s) {} changed and will run again",
                        changed.join(", ")
                    )
                }
            ));
        }
        if let Some(prev) = &workspace_lock.previous {
            msg.push_str(&format!(
                "; the previous pmpo (pid {}) did not finish",
                prev.pid
            ));
            // Its stage processes outlived it (they run in their own process
            // groups); stop them before the stage runs again.
            // (Settling the killed run's intents may have stopped them
            // already; one still dying is found again, so not added twice.)
            let killed = kill_leftovers(&run.run_id, ws.root()).max(settled.stopped);
            if killed > 0 {
                msg.push_str(&format!(
                    "; stopped {killed} process(es) its stage left running"
                ));
            }
        }
        rec.emit(EventKind::ExecutionResumed, None, None, None, Some(msg))?;
    }
    ws.create_dir_all(STAGE_LOG_DIR)?;
    rec.db.touch_adapter("run", "tool", &started_at)?;

    let shared = RefCell::new(Shared {
        rec,
        results: vec![None; stages.len()],
        done: HashMap::with_capacity(stages.len()),
        data: HashMap::new(),
        errors: Vec::new(),
        validations: Vec::new(),
        first_failure: None,
        cancelled: false,
        patched: false,
        aborted_at: None,
        paused: None,
        notices: pmpo_sandbox::Mode::for_run()
            .fallback_reason()
            .map(|why| format!("sandbox: {why}; stages fall back to detection: a change outside a stage's declared outputs is found after it and fails it (see docs/architecture.md)"))
            .into_iter()
            .collect(),
    });
    let output_index = crate::validation::OutputIndex::new(stages);
    let cx = Cx {
        engine,
        plan,
        opts,
        ws: &ws,
        run_id: &run_id,
        prior: &prior,
        wanted: &wanted,
        outputs: &output_index,
    };
    let position: HashMap<usize, usize> = order
        .iter()
        .enumerate()
        .map(|(pos, &idx)| (idx, pos))
        .collect();
    let jobs = opts.jobs.max(1);
    // The execution order is the reference order (`--jobs 1` runs exactly it): among
    // the stages whose dependencies are done, the earliest in it starts first, as soon
    // as a slot is free. After a pause, only stages before the paused one still start,
    // so what precedes it ends the same whatever `--jobs` is.
    let mut waiting: std::collections::VecDeque<usize> = order.iter().copied().collect();
    let mut running = futures_util::stream::FuturesUnordered::new();
    loop {
        loop {
            if running.len() >= jobs {
                break;
            }
            let ready = {
                let sh = shared.borrow();
                let limit = sh.paused.map(|(_, at)| at);
                waiting.iter().position(|&i| {
                    limit.is_none_or(|p| position[&i] < p)
                        && stages[i]
                            .depends_on
                            .iter()
                            .all(|d| sh.done.contains_key(d.as_str()))
                })
            };
            let Some(k) = ready else { break };
            let idx = waiting.remove(k).expect("index from position");
            let pos = position[&idx];
            match prepare(&cx, &shared, idx, pos)? {
                None => continue,
                Some(prep) => {
                    let token = opts.cancel.child_token();
                    running.push(run_one(&cx, &shared, idx, pos, prep, token));
                }
            }
        }
        match futures_util::StreamExt::next(&mut running).await {
            Some(r) => r?,
            None => break,
        }
    }
    drop(running);
    // Tools release what they kept for the run (the preview tool's browser).
    let teardown_start = Instant::now();
    engine.registry.end_run().await;
    let teardown = teardown_start.elapsed();
    let Shared {
        mut rec,
        mut results,
        mut errors,
        mut validations,
        cancelled,
        patched,
        paused,
        notices,
        ..
    } = shared.into_inner();
    // Errors and checks in the plan's order, whatever order parallel stages finished in.
    let place: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(p, &i)| (stages[i].id.as_str(), p))
        .collect();
    errors.sort_by_key(|e| place.get(e.stage.as_str()).copied().unwrap_or(usize::MAX));
    validations.sort_by_key(|v| {
        v.stage
            .as_deref()
            .and_then(|s| place.get(s).copied())
            .unwrap_or(usize::MAX)
    });

    // Results in execution order; stages a pause left unstarted stay PENDING.
    let stage_results: Vec<StageResult> = order
        .iter()
        .map(|&i| {
            results[i].take().unwrap_or_else(|| {
                let mut r = StageResult::new(
                    &stages[i],
                    engine.registry.resolve_name(stages[i].tool_name()),
                );
                r.reason = Some("not started: the run is paused".into());
                r
            })
        })
        .collect();
    // What the stages say; the validation_plan may still fail the run (`persist::finish`).
    let status = if let Some((why, _)) = paused {
        why
    } else if cancelled {
        RunStatus::Cancelled
    } else if stage_results
        .iter()
        .any(|s| matches!(s.status, StageStatus::Failed | StageStatus::Timeout))
    {
        RunStatus::Failed
    } else if stage_results
        .iter()
        .all(|s| s.status.is_success() || s.optional_skip)
    {
        RunStatus::Completed
    } else {
        RunStatus::Incomplete
    };
    let results = persist::finish(
        &ws,
        plan,
        &plan_rel,
        rec.db.as_mut(),
        persist::RunRecord {
            notices,
            run_id: run_id.clone(),
            started_at,
            duration: run_start.elapsed(),
            teardown,
            status,
            stages: stage_results,
            errors,
            validations,
            owner: opts.owner.clone(),
        },
        patched,
        opts.allow_violations,
    )?;
    rec.db.set_run_status(
        &run_id,
        &results.status,
        Some(&results.finished_at),
        pid as i64,
    )?;
    rec.emit(
        EventKind::ExecutionFinished,
        None,
        None,
        Some(run_start.elapsed()),
        Some(format!(
            "{}: {}",
            results.status,
            results.summary.describe()
        )),
    )?;
    rec.db.flush()?;
    drop(workspace_lock);
    Ok(results)
}

mod stage;

use stage::run_one;

/// What every stage of a run reads.
struct Cx<'a> {
    engine: &'a Engine,
    plan: &'a CheckedPlan,
    opts: &'a ExecuteOptions,
    ws: &'a Workspace,
    run_id: &'a str,
    prior: &'a HashMap<String, TaskRow>,
    wanted: &'a HashSet<(String, String)>,
    /// Which stages own which files (the evidence rule of stages' checks).
    outputs: &'a crate::validation::OutputIndex,
}

/// What stages running at the same time share. Borrowed only between awaits.
struct Shared<'a> {
    rec: Recorder<'a>,
    results: Vec<Option<StageResult>>,
    done: HashMap<String, Done>,
    data: HashMap<String, StageData>,
    errors: Vec<ErrorEntry>,
    validations: Vec<ValidationOutput>,
    /// The failed stage earliest in the reference order: (position, id). Under
    /// fail-fast, stages after it do not start; the ones before it still do, and
    /// running stages finish.
    first_failure: Option<(usize, String)>,
    cancelled: bool,
    patched: bool,
    /// Where a person aborted the run: stages after it (reference order) do not start.
    aborted_at: Option<usize>,
    /// Why the run pauses, and the position of the stage earliest in the reference
    /// order that waits.
    paused: Option<(RunStatus, usize)>,
    notices: Vec<String>,
}

/// Where a skipped stage stands.
struct Skip<'a> {
    idx: usize,
    pos: usize,
    at: Option<(&'a str, usize)>,
    def_hash: &'a str,
    cache_key: Option<&'a str>,
    attempts: i64,
    duration: Option<Duration>,
}

impl Shared<'_> {
    /// Records a stage as SKIPPED with its reason (dependents are skipped in turn).
    fn record_skip(
        &mut self,
        run_id: &str,
        mut result: StageResult,
        skip: Skip<'_>,
        reason: String,
    ) -> Result<(), EngineError> {
        result.status = StageStatus::Skipped;
        result.reason = Some(reason.clone());
        result.duration_ms = skip.duration.map_or(0.0, ms);
        self.rec.db.put_task(&task_row(
            run_id,
            skip.pos,
            &result,
            skip.def_hash,
            skip.cache_key,
            "{}",
            skip.attempts,
        ))?;
        self.rec.emit(
            EventKind::TaskSkipped,
            skip.at,
            Some(StageStatus::Skipped),
            skip.duration,
            Some(reason),
        )?;
        self.record_done(skip.idx, result);
        self.rec.db.flush()?;
        Ok(())
    }

    /// A stage's final result: what its dependents see, and its place in the results.
    fn record_done(&mut self, idx: usize, result: StageResult) {
        let files = result
            .files
            .iter()
            .map(|f| (f.path.clone(), f.blake3.clone()))
            .collect();
        // Optional work its tool skipped (a preview with no browser) does not
        // hold back the stages that depend on it.
        let status = if result.optional_skip {
            StageStatus::Completed
        } else {
            result.status
        };
        self.done.insert(
            result.id.clone(),
            Done {
                status: Some(status),
                files,
            },
        );
        self.results[idx] = Some(result);
    }
}

/// A stage that must run, with what `prepare` worked out for it.
struct Prepared {
    result: StageResult,
    def_hash: String,
    cache_key: String,
    resolved: Result<Map<String, Value>, String>,
    input_problem: Option<String>,
}

/// Skips a stage, reuses an earlier result, or says it must run.
fn prepare(
    cx: &Cx<'_>,
    shared: &RefCell<Shared<'_>>,
    idx: usize,
    pos: usize,
) -> Result<Option<Prepared>, EngineError> {
    let stage = &cx.plan.doc.plan.stages[idx];
    let at = Some((stage.id.as_str(), pos + 1));
    let tool_name = cx.engine.registry.resolve_name(stage.tool_name());
    let mut result = StageResult::new(stage, tool_name);
    let mut guard = shared.borrow_mut();
    let sh = &mut *guard;
    let status_of = |d: &HashMap<String, Done>, id: &str| d.get(id).and_then(|x| x.status);
    // `pmpo resume --abort` answers this stage: nothing after it may start, even
    // before its own future first runs.
    if cx.opts.decision == Some(Decision::Abort)
        && cx
            .prior
            .get(&stage.id)
            .is_some_and(|t| t.status == "AWAITING_INTERVENTION")
        && sh.aborted_at.is_none_or(|p| pos < p)
    {
        sh.aborted_at = Some(pos);
    }

    // Skip: upstream failure, an earlier failure (fail-fast), or cancellation.
    let skip_reason = if sh.cancelled || cx.opts.cancel.is_cancelled() {
        sh.cancelled = true;
        Some("not run: the run was cancelled".to_string())
    } else if sh.aborted_at.is_some_and(|p| pos > p) {
        Some("not run: the run was aborted".to_string())
    } else if let Some(dep) = stage
        .depends_on
        .iter()
        .find(|d| status_of(&sh.done, d).is_some_and(|s| s.is_failure()))
    {
        Some(format!(
            "upstream stage `{dep}` {}",
            status_of(&sh.done, dep).map_or("FAILED", StageStatus::as_str)
        ))
    } else if let (Some((at_pos, f)), false) = (&sh.first_failure, cx.opts.keep_going)
        && pos > *at_pos
    {
        Some(format!(
            "not run: stage `{f}` failed and the run stops at the first failure (use --keep-going to run independent stages)"
        ))
    } else {
        None
    };
    if let Some(reason) = skip_reason {
        let skip = Skip {
            idx,
            pos,
            at,
            def_hash: "",
            cache_key: None,
            attempts: 0,
            duration: None,
        };
        sh.record_skip(cx.run_id, result, skip, reason)?;
        return Ok(None);
    }

    // Inputs and the cache key.
    let def_hash = definition_hash(stage, tool_name);
    let resolved = resolve_inputs(&stage.inputs, &sh.data);
    let mut input_files = BTreeMap::new();
    let mut input_problem = None;
    if !stage.input_files.is_empty() {
        let exp = outputs::expand(cx.ws, &stage.input_files);
        if let Some(m) = exp.missing.first() {
            input_problem = Some(format!("declared input missing: {m}"));
        } else if let Some(p) = exp.problems.first() {
            input_problem = Some(p.clone());
        }
        input_files.extend(exp.files);
    }
    if let Ok(r) = &resolved {
        mentioned_files(cx.ws, &Value::Object(r.clone()), &mut input_files);
    }
    let upstream: Vec<(&str, &Vec<(String, String)>)> = stage
        .depends_on
        .iter()
        .filter_map(|d| sh.done.get(d.as_str()).map(|x| (d.as_str(), &x.files)))
        .collect();
    let cache_key = blake3::hash(
        &serde_json::to_vec(&json!({
            "v": 1,
            "definition": def_hash,
            "resolved": resolved.as_ref().ok(),
            "input_files": input_files.iter().map(|(p, d)| (p, &d.blake3)).collect::<Vec<_>>(),
            "upstream": upstream,
        }))
        .expect("json"),
    )
    .to_hex()
    .to_string();

    let forced = match &cx.opts.force {
        Force::None => false,
        Force::All => true,
        Force::Stages(ids) => ids.iter().any(|i| i == &stage.id),
    };
    let needs = |json: &str| {
        let d: Map<String, Value> = serde_json::from_str(json).unwrap_or_default();
        cx.wanted
            .iter()
            .filter(|(s, _)| s == &stage.id)
            .all(|(_, f)| d.contains_key(f))
    };
    let reuse = if forced || resolved.is_err() || input_problem.is_some() {
        None
    } else if let Some(t) = cx.prior.get(&stage.id).filter(|t| {
        (t.status == "COMPLETED" || t.status == "CACHED")
            && t.cache_key.as_deref() == Some(&cache_key)
            && needs(&t.data)
    }) {
        Some(Reuse::Carried(t.clone()))
    } else if stage.cache {
        sh.rec
            .db
            .cache_get(&cache_key)?
            .filter(|c| needs(&c.data))
            .map(Reuse::Cached)
    } else {
        None
    };
    let reused = reuse.and_then(|r| {
        let files_json = match &r {
            Reuse::Carried(t) => &t.files,
            Reuse::Cached(c) => &c.files,
        };
        files_intact(cx.ws, stage, files_json).map(|files| (r, files))
    });
    let Some((r, files)) = reused else {
        return Ok(Some(Prepared {
            result,
            def_hash,
            cache_key,
            resolved,
            input_problem,
        }));
    };
    let (status, outputs_json, data_json, from, message) = match &r {
        Reuse::Carried(t) => (
            StageStatus::Completed,
            t.outputs.clone(),
            t.data.clone(),
            t.run_id.clone(),
            "completed before the interruption".to_string(),
        ),
        Reuse::Cached(c) => (
            StageStatus::Cached,
            c.outputs.clone(),
            c.data.clone(),
            c.run_id.clone(),
            format!("cached from run {}", c.run_id),
        ),
    };
    result.status = status;
    result.reason = None;
    result.outputs = serde_json::from_str(&outputs_json).unwrap_or_default();
    result.files = files;
    result.reused_from = Some(from);
    if let Reuse::Carried(t) = &r {
        result.started_at = t.started_at.clone();
        result.finished_at = t.finished_at.clone();
        result.duration_ms = t.duration_ms;
        result.exit_code = t.exit_code.map(|c| c as i32);
        result.attempts = t.attempts as u32;
    }
    if cx.wanted.iter().any(|(s, _)| s == &stage.id) {
        sh.data.insert(
            stage.id.clone(),
            serde_json::from_str(&data_json).unwrap_or_default(),
        );
    }
    // A stage carried over from the interrupted run already has its row; a
    // reused stage makes no attempt, so its stage log is left as it is.
    if status == StageStatus::Cached {
        sh.rec.db.put_task(&task_row(
            cx.run_id,
            pos,
            &result,
            &def_hash,
            Some(&cache_key),
            &data_json,
            0,
        ))?;
    }
    sh.rec.emit(
        EventKind::TaskCompleted,
        at,
        Some(status),
        Some(Duration::ZERO),
        Some(message),
    )?;
    sh.record_done(idx, result);
    Ok(None)
}

/// What later stages read of a stage's stdout and stderr. A stream cut by the
/// capture limit is never passed on as if whole: `$stage.stdout` then fails
/// with the sizes (see `resolve`), and `$stage.stdout_file` names a file with
/// all of it.
fn keep_streams(
    cx: &Cx<'_>,
    stage: &Stage,
    o: &ToolOutcome,
    keep: &dyn Fn(&str) -> bool,
    data: &mut StageData,
) -> Result<(), EngineError> {
    for (stream, cap) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let file_field = format!("{stream}_file");
        if !keep(stream) && !keep(&file_field) {
            continue;
        }
        if cap.truncated() {
            let kept = (cap.head.len() + cap.tail.len()) as u64;
            let entry = data
                .entry(crate::resolve::TRUNCATED_KEY)
                .or_insert_with(|| json!({}));
            entry[stream] = json!({"total": cap.total, "kept": kept});
        } else if keep(stream) {
            data.insert(
                stream.into(),
                Value::String(cap.text().trim_end().to_string()),
            );
        }
        if keep(&file_field) {
            let rel = match &cap.whole_file {
                Some(rel) => Some(rel.clone()),
                // Small enough to have been kept whole in memory: write it out.
                None if !cap.truncated() => {
                    let rel = pmpo_tools::run::whole_output_rel(cx.run_id, &stage.id, stream);
                    cx.ws.write_atomic(&rel, &cap.head, Durability::Relaxed)?;
                    Some(rel)
                }
                // Cut, and the tool could not keep it whole: nothing honest to name.
                None => None,
            };
            if let Some(rel) = rel {
                data.insert(file_field, Value::String(rel));
            }
        }
    }
    Ok(())
}

/// One call of a stage's tool, judged: declared outputs, then the stage's own
/// `validate:` checks. The run's heartbeat is refreshed while the tool runs.
async fn attempt(
    cx: &Cx<'_>,
    shared: &RefCell<Shared<'_>>,
    stage: &Stage,
    tool: &str,
    inputs: Map<String, Value>,
    token: &CancellationToken,
    at: Option<(&str, usize)>,
) -> Result<Tried, EngineError> {
    let beat = || {
        // No borrow is held while a tool runs, so this cannot clash.
        if let Ok(mut sh) = shared.try_borrow_mut() {
            let _ = sh.rec.db.heartbeat(cx.run_id, &now_rfc3339());
            let _ = sh.rec.db.flush();
        }
    };
    // The ledger leads the write: the intents are committed before the tool runs.
    let intend = |rows: &[PatchRow]| -> Result<Vec<i64>, String> {
        let mut sh = shared.try_borrow_mut().map_err(|e| e.to_string())?;
        let ids = rows
            .iter()
            .map(|r| sh.rec.db.add_patch(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        sh.rec.db.flush().map_err(|e| e.to_string())?;
        Ok(ids)
    };
    let a = run_stage(
        cx.engine, cx.ws, cx.run_id, stage, tool, cx.opts, inputs, cx.plan, token, &beat, &intend,
    )
    .await;
    let mut tried = {
        let mut sh = shared.borrow_mut();
        let Shared {
            rec, validations, ..
        } = &mut *sh;
        validate_attempt(cx.ws, stage, a, rec, at, validations)?
    };
    // The stage's own checks (`validate:`); a failing check fails the stage.
    if tried.failure.is_none() && !stage.validate.is_empty() {
        // The evidence rule: files of stages that have not succeeded (yet) in this run are not evidence.
        let evidence = {
            let sh = shared.borrow();
            let done = |id: &str| {
                sh.done.get(id).map(|d| crate::validation::Seen {
                    status: d.status,
                    files: d.files.clone(),
                    started_at: None,
                })
            };
            let stages = &cx.plan.doc.plan.stages;
            crate::validation::Evidence::for_stage_checks(
                cx.ws,
                cx.run_id,
                stages,
                cx.outputs,
                stage,
                &tried.files,
                done,
            )
        };
        let (checks, failed) = crate::validation::stage_checks(cx.ws, stage, token, evidence).await;
        shared.borrow_mut().validations.extend(checks);
        if let Some((kind, message)) = failed {
            tried.failure = Some(Failure {
                status: StageStatus::Failed,
                kind,
                message,
                hint: Some("see the check's evidence in validation_outputs of .state/execution_results.json".into()),
            });
        }
    }
    Ok(tried)
}

/// Kills processes started by stages of `run_id` in this workspace (they carry
/// `PMPO_RUN_ID` and `PMPO_WORKSPACE` in their environment). Linux only.
/// `pmpo restore` calls it too before it undoes an interrupted change, so that
/// no process the killed run left behind writes the file again.
pub fn kill_leftovers(run_id: &str, root: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let want_run = format!("PMPO_RUN_ID={run_id}");
    let want_ws = format!("PMPO_WORKSPACE={}", root.display());
    let me = std::process::id();
    let mut killed = 0;
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let Ok(environ) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if vars.contains(&want_run.as_bytes()) && vars.contains(&want_ws.as_bytes()) {
            // SAFETY: kill(2) on a pid; no memory is shared.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

fn append_stage_log(ws: &Workspace, record: &Value) -> Result<(), EngineError> {
    let stage = record["stage"].as_str().unwrap_or("unknown");
    // A configured key that a stage printed never reaches the log.
    let text = serde_json::to_string(record).expect("log records serialize");
    let mut line = pmpo_store::secrets::redact(&text).into_owned().into_bytes();
    line.push(b'\n');
    ws.append(&format!("{STAGE_LOG_DIR}/{stage}.jsonl"), &line)?;
    Ok(())
}

fn task_row(
    run_id: &str,
    pos: usize,
    r: &StageResult,
    def_hash: &str,
    cache_key: Option<&str>,
    data: &str,
    attempts: i64,
) -> TaskRow {
    TaskRow {
        run_id: run_id.to_string(),
        stage_id: r.id.clone(),
        position: pos as i64,
        status: r.status.as_str().to_string(),
        tool: r.tool.clone(),
        def_hash: def_hash.to_string(),
        cache_key: cache_key.map(str::to_string),
        reason: r.reason.clone(),
        started_at: r.started_at.clone(),
        finished_at: r.finished_at.clone(),
        duration_ms: r.duration_ms,
        exit_code: r.exit_code.map(i64::from),
        signal: r.signal.map(i64::from),
        attempts,
        outputs: serde_json::to_string(&r.outputs).expect("json"),
        files: serde_json::to_string(&r.files).expect("json"),
        data: data.to_string(),
    }
}

#[derive(Debug, Clone)]
struct Failure {
    status: StageStatus,
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
}

impl Failure {
    /// A FAILED stage's failure.
    fn new(kind: ErrorKind, message: String, hint: Option<String>) -> Failure {
        Failure {
            status: StageStatus::Failed,
            kind,
            message,
            hint,
        }
    }
}

/// What one call of a tool did, before the engine judged it.
#[derive(Default)]
struct Attempt {
    outcome: Option<ToolOutcome>,
    failure: Option<Failure>,
    /// The sandbox mode the stage's processes ran under.
    sandbox: Option<String>,
    /// Changes outside the declared outputs (detection).
    undeclared: Vec<pmpo_sandbox::snapshot::Difference>,
    /// Declared output files that were there before the stage and are gone.
    before: BTreeMap<String, FileDigest>,
    /// Content hashes of the files under the outputs that are in the backup store.
    backed_up: HashSet<String>,
    /// What the attempt may write: the declared outputs and the tool's own.
    watched: Vec<String>,
    /// Ledger intents committed before the tool ran, by path.
    intents: BTreeMap<String, i64>,
    resolved: Value,
    started_at: String,
    started: Option<Instant>,
}

impl Attempt {
    fn failed(kind: ErrorKind, message: String, hint: Option<String>) -> Attempt {
        Attempt {
            failure: Some(Failure::new(kind, message, hint)),
            started_at: now_rfc3339(),
            ..Default::default()
        }
    }
}

/// One judged attempt: the tool's outcome and the files under the declared outputs.
#[derive(Default)]
struct Tried {
    outcome: Option<ToolOutcome>,
    failure: Option<Failure>,
    sandbox: Option<String>,
    undeclared: Vec<pmpo_sandbox::snapshot::Difference>,
    files: Vec<GeneratedFile>,
    backed_up: HashSet<String>,
    /// Every file under the watched paths after the attempt, judged against
    /// before (also when the attempt failed), and the files that vanished.
    changes: Vec<GeneratedFile>,
    gone: Vec<(String, FileDigest)>,
    intents: BTreeMap<String, i64>,
    resolved: Value,
    exit_code: Option<i32>,
    signal: Option<i32>,
    started_at: String,
    finished_at: String,
    duration: Duration,
}

impl Tried {
    fn failed(kind: ErrorKind, message: String, hint: Option<String>) -> Tried {
        let now = now_rfc3339();
        Tried {
            failure: Some(Failure::new(kind, message, hint)),
            started_at: now.clone(),
            finished_at: now,
            ..Default::default()
        }
    }
}

/// VALIDATING: the tool finished; now the engine decides.
fn validate_attempt(
    ws: &Workspace,
    stage: &Stage,
    a: Attempt,
    rec: &mut Recorder<'_>,
    at: Option<(&str, usize)>,
    validations: &mut Vec<ValidationOutput>,
) -> Result<Tried, EngineError> {
    let mut failure = a.failure;
    let mut files = Vec::new();
    // What the attempt changed, whatever its outcome (only when the tool got
    // to run: `watched` is empty otherwise).
    let after = outputs::expand(ws, &a.watched);
    let changes = outputs::diff(&stage.id, &a.before, &after);
    let gone: Vec<(String, FileDigest)> = a
        .before
        .iter()
        .filter(|(p, _)| !after.files.contains_key(*p))
        .map(|(p, d)| (p.clone(), d.clone()))
        .collect();
    if failure.is_none() {
        rec.emit(
            EventKind::TaskValidating,
            at,
            Some(StageStatus::Validating),
            None,
            None,
        )?;
        let vt = Instant::now();
        files = changes.clone();
        // Only the plan's own `outputs:` must exist; the tool's are its business.
        let mut problems: Vec<String> = after
            .missing
            .iter()
            .filter(|m| stage.outputs.contains(m))
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
                kind: FailureKind::MissingOutput.into(),
                message: problems.join("; "),
                hint: Some("the stage must create every declared output; check its command and the paths under `outputs:`".into()),
            });
        }
    }
    let (exit_code, signal) = match a.outcome.as_ref().map(|o| o.termination) {
        Some(Termination::Exited(c)) => (Some(c), None),
        Some(Termination::Signaled(s)) => (None, Some(s)),
        _ => (None, None),
    };
    Ok(Tried {
        outcome: a.outcome,
        failure,
        sandbox: a.sandbox,
        undeclared: a.undeclared,
        files,
        backed_up: a.backed_up,
        changes,
        gone,
        intents: a.intents,
        resolved: a.resolved,
        exit_code,
        signal,
        started_at: a.started_at,
        finished_at: now_rfc3339(),
        duration: a.started.map_or(Duration::ZERO, |s| s.elapsed()),
    })
}

/// Records one attempt: the patch history, the stage log, the execution log.
/// Returns whether any file changed.
fn record_attempt(
    rec: &mut Recorder<'_>,
    ws: &Workspace,
    run_id: &str,
    stage: &Stage,
    tool: &str,
    attempt_no: i64,
    t: &Tried,
) -> Result<bool, EngineError> {
    let status = t
        .failure
        .as_ref()
        .map_or(StageStatus::Completed, |f| f.status);
    let mut patched = complete_intents(rec.db.as_mut(), run_id, stage, t)?;
    for d in &t.undeclared {
        patched = true;
        rec.db
            .add_patch(&undeclared_row(ws, run_id, stage, &t.finished_at, d))?;
    }
    let mut log_record = json!({
        "run_id": run_id,
        "stage": stage.id,
        "attempt": attempt_no,
        "tool": tool,
        "status": status,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "duration_ms": ms(t.duration),
        "inputs": t.resolved,
        "exit_code": t.exit_code,
        "signal": t.signal,
        "files": t.files,
    });
    if let Some(mode) = &t.sandbox {
        log_record["sandbox"] = json!(mode);
    }
    if !t.undeclared.is_empty() {
        log_record["undeclared"] = json!(
            t.undeclared
                .iter()
                .map(|d| json!({"path": d.path, "change": d.kind.as_str()}))
                .collect::<Vec<_>>()
        );
    }
    if let Some(o) = &t.outcome {
        log_record["invocation"] = o.invocation.clone();
        log_record["stdout"] = Value::String(o.stdout.text());
        log_record["stderr"] = Value::String(o.stderr.text());
        log_record["stdout_bytes"] = json!(o.stdout.total);
        log_record["stderr_bytes"] = json!(o.stderr.total);
        if !o.notes.is_empty() {
            log_record["notes"] = json!(o.notes);
        }
    }
    if let Some(f) = &t.failure {
        log_record["error"] = json!({"kind": f.kind, "message": f.message, "hint": f.hint});
    }
    append_stage_log(ws, &log_record)?;
    rec.db.add_attempt(&AttemptRow {
        run_id: run_id.to_string(),
        stage_id: stage.id.clone(),
        attempt: attempt_no,
        status: status.as_str().into(),
        started_at: t.started_at.clone(),
        finished_at: t.finished_at.clone(),
        duration_ms: ms(t.duration),
        exit_code: t.exit_code.map(i64::from),
        signal: t.signal.map(i64::from),
        error_kind: t.failure.as_ref().map(|f| f.kind.to_string()),
        error_message: t.failure.as_ref().map(|f| f.message.clone()),
        stdout_bytes: t.outcome.as_ref().map_or(0, |o| o.stdout.total as i64),
        stderr_bytes: t.outcome.as_ref().map_or(0, |o| o.stderr.total as i64),
    })?;
    Ok(patched)
}

/// Completes the ledger intents of one attempt: a file that changed gets its
/// after-digest (state `completed`, or `failed` when the attempt failed), an
/// intent for a file left as it was is dropped, and a changed file that had
/// no intent (new under a declared directory or glob) gets its entry now.
/// Returns whether any file changed.
fn complete_intents(
    db: &mut dyn ExecStore,
    run_id: &str,
    stage: &Stage,
    t: &Tried,
) -> Result<bool, EngineError> {
    let state = if t.failure.is_none() {
        pmpo_store::db::PATCH_COMPLETED
    } else {
        pmpo_store::db::PATCH_FAILED
    };
    let mut patched = false;
    let mut intents = t.intents.clone();
    for f in &t.changes {
        let intent = intents.remove(&f.path);
        if f.change == Change::Unchanged {
            if let Some(id) = intent {
                db.drop_patch(id)?;
            }
            continue;
        }
        patched = true;
        match intent {
            Some(id) => db.finish_patch(
                id,
                Some((f.blake3.as_str(), f.size as i64)),
                state,
                &t.finished_at,
            )?,
            None => {
                let backed_up = f
                    .before
                    .as_ref()
                    .is_some_and(|d| t.backed_up.contains(&d.blake3));
                let mut row = PatchRow::new(state, run_id, &stage.id, &f.path)
                    .before(f.before.as_ref(), backed_up)
                    .after(Some(&FileDigest {
                        size: f.size,
                        blake3: f.blake3.clone(),
                    }));
                row.time = t.finished_at.clone();
                db.add_patch(&row)?;
            }
        }
    }
    // Files the attempt removed.
    for (path, _) in &t.gone {
        if let Some(id) = intents.remove(path) {
            patched = true;
            db.finish_patch(id, None, state, &t.finished_at)?;
        }
    }
    // Intents for files that were never created.
    for id in intents.into_values() {
        db.drop_patch(id)?;
    }
    Ok(patched)
}

/// Commits ledger intents before a tool may write; returns their ids.
type Intend<'a> = dyn Fn(&[PatchRow]) -> Result<Vec<i64>, String> + 'a;

/// Calls the tool once. While it runs, the run's heartbeat is refreshed.
#[allow(clippy::too_many_arguments)]
async fn run_stage(
    engine: &Engine,
    ws: &Workspace,
    run_id: &str,
    stage: &Stage,
    tool_written: &str,
    opts: &ExecuteOptions,
    inputs: Map<String, Value>,
    plan: &crate::CheckedPlan,
    cancel: &CancellationToken,
    beat: &dyn Fn(),
    intend: &Intend<'_>,
) -> Attempt {
    let Some(tool) = engine.registry.get(tool_written) else {
        return Attempt::failed(
            FailureKind::InvalidInput.into(),
            format!("unknown tool `{tool_written}`"),
            None,
        );
    };
    if let Err(e) = tool.preflight() {
        return Attempt::failed(e.class.into(), e.message, e.hint);
    }
    let watch = match crate::sandbox::begin(ws, stage, tool.name()) {
        Ok(w) => w,
        Err((kind, message, hint)) => return Attempt::failed(kind, message, hint),
    };
    let confinement = watch.confinement.clone();
    let mut attempt = Attempt {
        resolved: Value::Object(inputs.clone()),
        started_at: now_rfc3339(),
        ..Default::default()
    };
    // Keep what the stage may overwrite, so `pmpo restore` can bring it back:
    // its declared outputs and the files the tool itself writes.
    let mut watched = stage.outputs.clone();
    for p in tool.written_paths(&inputs) {
        // A tool never writes pmpo's own files (the database, the backups):
        // that would be a change nobody could undo.
        if pmpo_store::is_own_path(&p) {
            return Attempt::failed(
                FailureKind::InvalidInput.into(),
                format!(
                    "`{tool_written}` would write `{p}`, inside pmpo's own directories ({})",
                    pmpo_store::OWN_DIRS.join(", ")
                ),
                Some("choose an output path outside them (e.g. under dist/)".into()),
            );
        }
        if !watched.contains(&p) {
            watched.push(p);
        }
    }
    attempt.before = outputs::expand(ws, &watched).files;
    for (rel, digest) in &attempt.before {
        match ws.backup(rel, digest) {
            Ok(true) => {
                attempt.backed_up.insert(digest.blake3.clone());
            }
            Ok(false) => {}
            Err(e) => {
                return Attempt::failed(
                    FailureKind::Io.into(),
                    format!("cannot back up `{rel}` before the stage may overwrite it: {e}"),
                    Some("check free space in the workspace".into()),
                );
            }
        }
    }
    // The intents: every file that exists (with its backup), and every
    // plain file path not there yet (so a file created by a killed stage is
    // known too). A directory or a glob's new files are recorded afterwards.
    let mut rows = Vec::new();
    for (rel, digest) in &attempt.before {
        let backed_up = attempt.backed_up.contains(&digest.blake3);
        rows.push(
            PatchRow::new(pmpo_store::db::PATCH_PENDING, run_id, &stage.id, rel)
                .before(Some(digest), backed_up),
        );
    }
    for raw in &watched {
        let rel = raw.trim_start_matches("./");
        if pmpo_store::is_own_path(rel) || attempt.before.contains_key(rel) {
            continue;
        }
        // A directory or a glob: one intent for the pattern, so that files a
        // killed stage created under it can be found afterwards
        // (`intents::settle_interrupted`).
        let is_dir = ws
            .resolve(rel.trim_end_matches('/'))
            .is_ok_and(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
        if crate::intents::is_pattern(rel) || is_dir {
            let pattern = if is_dir && !rel.ends_with('/') {
                format!("{rel}/")
            } else {
                rel.to_string()
            };
            rows.push(PatchRow::new(
                pmpo_store::db::PATCH_PENDING,
                run_id,
                &stage.id,
                &pattern,
            ));
            continue;
        }
        if let Ok(abs) = ws.resolve(rel)
            && std::fs::symlink_metadata(&abs).is_err()
        {
            rows.push(PatchRow::new(
                pmpo_store::db::PATCH_PENDING,
                run_id,
                &stage.id,
                rel,
            ));
        }
    }
    // Called even with no rows: it commits everything recorded so far, so the
    // store is durable before the tool starts.
    match intend(&rows) {
        Ok(ids) => {
            attempt.intents = rows.iter().map(|r| r.path.clone()).zip(ids).collect();
        }
        Err(e) => {
            return Attempt::failed(
                FailureKind::Io.into(),
                format!("cannot record in the ledger what the stage may change: {e}"),
                Some("check that the workspace is writable and has free space".into()),
            );
        }
    }
    attempt.watched = watched;
    let timeout = stage.timeout.map_or(opts.default_timeout, |t| t.0);
    let ctx = ToolContext {
        workspace: ws,
        run_id,
        stage_id: &stage.id,
        tool: tool_written,
        timeout,
        cancel,
        spec: Some(&plan.doc.specification),
        description: &stage.description,
        confine: confinement.as_ref(),
    };
    attempt.started = Some(Instant::now());
    let invoke = tool.invoke(&ctx, &inputs);
    tokio::pin!(invoke);
    // The first beat is one period away: awaiting an already-due tick would cost a
    // turn of the timer wheel (about a millisecond) on every stage.
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + HEARTBEAT_EVERY,
        HEARTBEAT_EVERY,
    );
    let result = loop {
        tokio::select! {
            r = &mut invoke => break r,
            _ = ticks.tick() => beat(),
        }
    };
    match result {
        Err(e) => {
            attempt.failure = Some(Failure {
                status: StageStatus::Failed,
                kind: e.class.into(),
                message: e.message,
                hint: e.hint,
            });
        }
        Ok(outcome) => {
            let fail = |kind: FailureKind, message: String, hint: Option<String>| {
                Some(Failure::new(kind.into(), message, hint))
            };
            attempt.failure = match outcome.termination {
                Termination::Exited(0) => None,
                Termination::Exited(code) => {
                    let first = tail_lines(&outcome.stderr, 1)
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default();
                    let message = format!("exited with code {code}{first}");
                    match recovery::classify(&outcome.stderr.text(), Some(code)) {
                        Some(c) => fail(c.kind, message, Some(c.hint)),
                        None => fail(FailureKind::ExitStatus, message, Some(exit_hint(code))),
                    }
                }
                Termination::Signaled(sig) => {
                    let oom = sig == 9 && !opts.cancel.is_cancelled();
                    fail(
                        if oom {
                            FailureKind::Killed
                        } else {
                            FailureKind::Signal
                        },
                        format!("killed by signal {sig}{}", signal_name(sig)),
                        Some(if oom {
                            "SIGKILL from outside pmpo is often the kernel's out-of-memory killer: check memory use (dmesg)".into()
                        } else {
                            "the process was killed; check whether something else stopped it".into()
                        }),
                    )
                }
                Termination::TimedOut => Some(Failure {
                    status: StageStatus::Timeout,
                    kind: FailureKind::Timeout.into(),
                    message: format!("timed out after {timeout:.1?}; it was stopped"),
                    hint: Some("raise the stage's `timeout:` or make the work faster".into()),
                }),
                Termination::Cancelled => fail(
                    FailureKind::Cancelled,
                    "cancelled by the user; its process group was killed".into(),
                    None,
                ),
            };
            attempt.outcome = Some(outcome);
        }
    }
    judge_sandbox(ws, stage, watch, &mut attempt);
    attempt
}

/// After the tool: what the sandbox saw. Changes outside the declared
/// outputs (detection) fail the stage; under Landlock, a stage that failed
/// on a refused write says so.
fn judge_sandbox(
    ws: &Workspace,
    stage: &Stage,
    watch: crate::sandbox::Watch,
    attempt: &mut Attempt,
) {
    let mode = watch.mode;
    attempt.sandbox = mode.map(|m| m.label());
    let refused = |p: &str| watch.refuses(ws, p);
    let refused_path = attempt.failure.as_ref().and_then(|f| {
        let stderr = attempt
            .outcome
            .as_ref()
            .map(|o| o.stderr.text())
            .unwrap_or_default();
        match pmpo_sandbox::refused_write(&format!("{stderr}\n{}", f.message)) {
            Some(Some(p)) if refused(&p) => Some(Some(p)),
            // A named path the stage may write: denied for another reason.
            Some(Some(_)) => None,
            other => other,
        }
    });
    let undeclared = watch.finish(ws);
    let hint = pmpo_sandbox::undeclared_write_hint();
    if !undeclared.is_empty() {
        attempt.failure = Some(Failure {
            status: StageStatus::Failed,
            kind: FailureKind::UndeclaredWrite.into(),
            message: format!(
                "stage `{}` {}",
                stage.id,
                crate::sandbox::describe(&undeclared)
            ),
            hint: Some(hint.into()),
        });
        attempt.undeclared = undeclared;
        return;
    }
    if !matches!(mode, Some(pmpo_sandbox::Mode::Landlock { .. })) {
        return;
    }
    let Some(f) = attempt.failure.as_mut() else {
        return;
    };
    if matches!(
        f.kind.shared(),
        Some(
            FailureKind::Timeout
                | FailureKind::Cancelled
                | FailureKind::Killed
                | FailureKind::Signal
        )
    ) {
        return;
    }
    let stderr = attempt
        .outcome
        .as_ref()
        .map(|o| o.stderr.text())
        .unwrap_or_default();
    let text = format!("{stderr}\n{}", f.message);
    if pmpo_sandbox::blocked_privileges(&text) {
        f.kind = FailureKind::PermissionDenied.into();
        f.hint = Some("sudo and other set-uid programs cannot gain privileges inside a sandboxed stage (Landlock needs no_new_privs); drop sudo, or set `sandbox: false` on the stage".into());
        return;
    }
    if let Some(path) = refused_path {
        f.kind = FailureKind::UndeclaredWrite.into();
        f.message = match path {
            Some(p) => format!(
                "the sandbox refused a write to `{p}`, outside the stage's declared outputs ({})",
                f.message
            ),
            None => format!(
                "the sandbox refused a write outside the stage's declared outputs ({})",
                f.message
            ),
        };
        f.hint = Some(hint.into());
    }
}

/// The ledger row of a change a stage made outside its declared outputs.
fn undeclared_row(
    ws: &Workspace,
    run_id: &str,
    stage: &Stage,
    time: &str,
    d: &pmpo_sandbox::snapshot::Difference,
) -> PatchRow {
    let after = if d.is_dir || d.kind == pmpo_sandbox::snapshot::Kind::Deleted {
        None
    } else {
        ws.resolve(&d.path)
            .ok()
            .and_then(|abs| pmpo_store::hash_file(&abs).ok())
            .map(|h| h.blake3)
    };
    PatchRow {
        time: time.to_string(),
        before_size: d.size_before.map(|s| s as i64),
        after_blake3: after,
        after_size: d.size_after.map(|s| s as i64),
        ..PatchRow::new(pmpo_store::db::PATCH_UNDECLARED, run_id, &stage.id, &d.path)
    }
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
        9 => " (SIGKILL; out of memory?)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        6 => " (SIGABRT)",
        _ => "",
    }
}
