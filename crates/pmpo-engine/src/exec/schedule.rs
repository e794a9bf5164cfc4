//! Scheduling: the run from its lock to its results. Which stage starts
//! next (dependencies, `--jobs`, a pause), and what the run ends as.

use super::*;

pub(super) fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let nanos = now.timestamp_nanos_opt().unwrap_or_default();
    let salt = blake3::hash(format!("{nanos}-{}", std::process::id()).as_bytes());
    format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), &salt.to_hex()[..6])
}

/// Which `(stage, field)` pairs later stages read; only these are kept in memory.
pub(super) fn referenced_fields(stages: &[Stage]) -> HashSet<(String, String)> {
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

/// The run this execution is: a new one, or the interrupted (or paused) one it continues.
struct Continued {
    run_id: String,
    resumed: Option<RunRow>,
    /// The continued run's stage rows, by stage.
    prior: HashMap<String, TaskRow>,
}

/// Finds the run to continue (`--resume RUN_ID`, or the newest interrupted
/// run of the plan), or names a new one.
fn continued(
    db: &mut dyn ExecStore,
    opts: &ExecuteOptions,
    plan_rel: &str,
) -> Result<Continued, EngineError> {
    let resumed = match &opts.resume {
        Some(id) => {
            let run = db
                .run(id)?
                .ok_or_else(|| EngineError::NoSuchRun(id.clone()))?;
            if run.plan != plan_rel {
                return Err(EngineError::PlanMismatch {
                    run_id: id.clone(),
                    recorded: run.plan,
                    given: plan_rel.to_string(),
                });
            }
            Some(run)
        }
        None => db.interrupted_run(plan_rel)?,
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
        && run.status == RunStatus::AwaitingIntervention
        && opts.decision.is_none()
        && let Some(t) = prior.values().find(|t| awaits(t))
    {
        return Err(EngineError::AwaitingDecision {
            run_id: run_id.clone(),
            stage: t.stage_id.clone(),
        });
    }
    Ok(Continued {
        run_id,
        resumed,
        prior,
    })
}

/// What the ExecutionResumed event says: what was done, what changed, and
/// what the previous pmpo left (its stage processes are stopped here).
fn resumed(
    engine: &Engine,
    plan: &CheckedPlan,
    ws: &Workspace,
    c: &Continued,
    run: &RunRow,
    previous: Option<&LockHolder>,
    already_stopped: usize,
) -> What {
    let (stages, prior) = (&plan.doc.plan.stages, &c.prior);
    let mut changed: Vec<String> = stages
        .iter()
        .filter(|s| {
            prior.get(&s.id).is_some_and(|t| {
                t.def_hash != definition_hash(s, engine.registry.resolve_name(s.tool_name()))
            })
        })
        .map(|s| s.id.clone())
        .collect();
    changed.extend(
        stages
            .iter()
            .filter(|s| !prior.contains_key(&s.id) && !prior.is_empty())
            .map(|s| s.id.clone()),
    );
    // Its stage processes outlived it (they run in their own process
    // groups); stop them before the stage runs again. (Settling the killed
    // run's intents may have stopped them already; one still dying is found
    // again, so not added twice.)
    let stopped = previous.map_or(0, |_| {
        kill_leftovers(&run.run_id, ws.root()).max(already_stopped)
    });
    What::ExecutionResumed {
        run_id: run.run_id.clone(),
        done: prior.values().filter(|t| succeeded(t)).count(),
        plan_changed: run.plan_blake3 != plan.blake3,
        changed,
        previous_pid: previous.map(|p| p.pid),
        stopped,
    }
}

/// The state stages share, empty.
fn shared_state<'a>(rec: Recorder<'a>, stages: usize) -> Shared<'a> {
    Shared {
        rec,
        results: vec![None; stages],
        done: HashMap::with_capacity(stages),
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
    }
}

/// The run's row as it starts (a continued run keeps its start time).
fn run_row(c: &Continued, plan: &CheckedPlan, plan_rel: &str, now: &str, stages: usize) -> RunRow {
    RunRow {
        run_id: c.run_id.clone(),
        plan: plan_rel.to_string(),
        plan_blake3: plan.blake3.clone(),
        status: RunStatus::Running,
        started_at: c
            .resumed
            .as_ref()
            .map_or(now, |r| &r.started_at)
            .to_string(),
        finished_at: None,
        pid: std::process::id() as i64,
        stages: stages as i64,
        heartbeat_at: Some(now.to_string()),
    }
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
        host: String::new(),
    };
    let mut workspace_lock = lock::acquire(&ws, &holder, opts.wait).map_err(EngineError::from)?;
    let mut db: Box<dyn ExecStore> = pmpo_store::db::open_store(ws.root())?;
    // Under the lock no other run is live: an intent still pending belongs to
    // a run that was killed, and stays on record as interrupted.
    let settled = crate::intents::settle_interrupted(&ws, db.as_mut())?;
    let stages = &plan.doc.plan.stages;
    let order = execution_order(stages);
    let c = continued(db.as_mut(), opts, &plan_rel)?;
    let run_id = c.run_id.clone();
    holder.run_id = run_id.clone();
    workspace_lock.update(&holder)?;
    db.begin_run(&run_row(&c, plan, &plan_rel, &started_at, stages.len()))?;
    let run_start = Instant::now();
    let wanted = referenced_fields(stages);
    let mut rec = Recorder {
        run_id: run_id.clone(),
        total: order.len(),
        log: ws.open_append(EVENTS_LOG)?,
        stage_log: None,
        db,
        sink,
    };
    let started = What::ExecutionStarted {
        plan: plan.display.clone(),
    };
    rec.emit(started, None, None, None)?;
    if let Some(run) = &c.resumed {
        let previous = workspace_lock.previous.as_ref();
        let what = resumed(engine, plan, &ws, &c, run, previous, settled.stopped);
        rec.emit(what, None, None, None)?;
    }
    // The stage log is created at the first attempt (a run where every stage
    // is reused writes none); a link on its way is refused before any stage runs.
    ws.resolve_own(&crate::stage_log(&run_id))?;
    rec.db.touch_adapter("run", "tool", &started_at)?;

    let _scratch = crate::sandbox::ScratchForRun;
    let shared = RefCell::new(shared_state(rec, stages.len()));
    let output_index = crate::validation::OutputIndex::new(stages);
    let cx = Cx {
        engine,
        plan,
        opts,
        ws: &ws,
        run_id: &run_id,
        prior: &c.prior,
        wanted: &wanted,
        outputs: &output_index,
    };
    schedule(&cx, &shared, &order).await?;
    // Tools release what they kept for the run (the preview tool's browser).
    let teardown_start = Instant::now();
    engine.registry.end_run().await;
    let teardown = teardown_start.elapsed();
    let sh = shared.into_inner();
    let mut rec = sh.rec;
    let ended = Ended {
        results: sh.results,
        errors: sh.errors,
        validations: sh.validations,
        cancelled: sh.cancelled,
        paused: sh.paused,
    };
    let (status, stage_results, errors, validations) = conclude(engine, stages, &order, ended);
    let results = persist::finish(
        &ws,
        plan,
        &plan_rel,
        rec.db.as_mut(),
        persist::RunRecord {
            notices: sh.notices,
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
        sh.patched,
        opts.allow_violations,
    )?;
    rec.db.set_run_status(
        &run_id,
        results.status,
        Some(&results.finished_at),
        pid as i64,
    )?;
    let finished = What::ExecutionFinished {
        status: results.status,
        summary: results.summary.describe(),
    };
    rec.emit(finished, None, None, Some(run_start.elapsed()))?;
    rec.db.flush()?;
    drop(workspace_lock);
    Ok(results)
}

/// Starts stages as their dependencies are done and a slot is free, until none is left.
async fn schedule(
    cx: &Cx<'_>,
    shared: &RefCell<Shared<'_>>,
    order: &[usize],
) -> Result<(), EngineError> {
    let stages = &cx.plan.doc.plan.stages;
    let position: HashMap<usize, usize> = order
        .iter()
        .enumerate()
        .map(|(pos, &idx)| (idx, pos))
        .collect();
    let jobs = cx.opts.jobs.max(1);
    // The execution order is the reference order (`--jobs 1` runs exactly it): among
    // the stages whose dependencies are done, the earliest in it starts first, as soon
    // as a slot is free. After a pause, only stages before the paused one still start,
    // so what precedes it ends the same whatever `--jobs` is.
    let mut waiting: std::collections::VecDeque<usize> = order.iter().copied().collect();
    let mut running = futures_util::stream::FuturesUnordered::new();
    loop {
        let mut started = false;
        while running.len() < jobs {
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
            if let Some(prep) = prepare(cx, shared, idx, pos)? {
                let token = cx.opts.cancel.child_token();
                running.push(run_one(cx, shared, idx, pos, prep, token));
                started = true;
            }
        }
        // What ended (completions, reused stages) is committed before pmpo
        // waits for anything: here when no stage starts now, else with the
        // starting stage's ledger intents, before its tool runs (`run_one`
        // reaches them without waiting). One commit per stage, not two, and
        // a completion is still durable before any dependant starts.
        if !started {
            shared.borrow_mut().rec.db.flush()?;
        }
        match futures_util::StreamExt::next(&mut running).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                // What the other stages recorded stays recorded.
                let _ = shared.borrow_mut().rec.db.flush();
                return Err(e);
            }
            None => return Ok(()),
        }
    }
}

/// What the stages left when the last one ended.
struct Ended {
    results: Vec<Option<StageResult>>,
    errors: Vec<ErrorEntry>,
    validations: Vec<ValidationOutput>,
    cancelled: bool,
    paused: Option<(RunStatus, usize)>,
}

/// The run's status, its stage results in execution order, and its errors
/// and checks in the plan's order, whatever order parallel stages finished in.
fn conclude(
    engine: &Engine,
    stages: &[Stage],
    order: &[usize],
    mut e: Ended,
) -> (
    RunStatus,
    Vec<StageResult>,
    Vec<ErrorEntry>,
    Vec<ValidationOutput>,
) {
    let place: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(p, &i)| (stages[i].id.as_str(), p))
        .collect();
    e.errors
        .sort_by_key(|e| place.get(e.stage.as_str()).copied().unwrap_or(usize::MAX));
    e.validations.sort_by_key(|v| {
        v.stage
            .as_deref()
            .and_then(|s| place.get(s).copied())
            .unwrap_or(usize::MAX)
    });
    // Results in execution order; stages a pause left unstarted stay PENDING.
    let stage_results: Vec<StageResult> = order
        .iter()
        .map(|&i| {
            e.results[i].take().unwrap_or_else(|| {
                let tool = engine.registry.resolve_name(stages[i].tool_name());
                let mut r = StageResult::new(&stages[i], tool);
                r.reason = Some("not started: the run is paused".into());
                r
            })
        })
        .collect();
    // What the stages say; the validation_plan may still fail the run (`persist::finish`).
    let status = if let Some((why, _)) = e.paused {
        why
    } else if e.cancelled {
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
    (status, stage_results, e.errors, e.validations)
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
