//! Running one stage to its end: the executor asks the recovery policy
//! ([`recovery::next_step`]) what to do after each attempt and does it.

use super::*;
use crate::recovery::{Gate, Halt, History, Next, Policy, Step, Tool};

/// How a stage's attempts ended.
enum Ending {
    /// The stage is done (succeeded, failed for good, or cancelled).
    Finish,
    /// It waits: for a person, or for its adapters (safe mode).
    Halt(Halt),
    /// A person decided to skip it or to abort the run.
    Decided(Decision),
}

/// What the attempts of one stage left.
struct Progress {
    last: Option<Tried>,
    fallback_used: Option<String>,
    /// Adapters found open in this round: (adapter, open until).
    blocked: Vec<(String, String)>,
    correction_used: bool,
    /// Attempts of the stage, this run and the interrupted one it continues.
    attempt_no: i64,
}

impl Progress {
    fn last_message(&self) -> Option<String> {
        self.last
            .as_ref()
            .and_then(|t| t.failure.as_ref())
            .map(|f| f.message.clone())
    }
}

/// A stage's inputs for one of its tools, or why they cannot be had.
type Inputs = Result<Map<String, Value>, (FailureKind, String, &'static str)>;

const CHECK_UPSTREAM: &str = "check the upstream stage's outputs in its log";

/// Runs one stage to its end: retries, then the fallback, then (if the plan says so) a person.
pub(super) async fn run_one(
    cx: &Cx<'_>,
    shared: &RefCell<Shared<'_>>,
    idx: usize,
    pos: usize,
    prep: Prepared,
    token: CancellationToken,
) -> Result<(), EngineError> {
    let stage = &cx.plan.doc.plan.stages[idx];
    let at = Some((stage.id.as_str(), pos + 1));
    let Prepared {
        mut result,
        def_hash,
        cache_key,
        resolved,
        input_problem,
    } = prep;
    result.started_at = Some(now_rfc3339());
    result.status = StageStatus::InProgress;
    let mut progress = Progress {
        last: None,
        fallback_used: None,
        blocked: Vec::new(),
        correction_used: false,
        attempt_no: cx.prior.get(&stage.id).map_or(0, |t| t.attempts),
    };
    {
        let mut sh = shared.borrow_mut();
        let row = task_row(
            cx.run_id,
            pos,
            &result,
            &def_hash,
            Some(&cache_key),
            "{}",
            progress.attempt_no,
        );
        sh.rec.db.put_task(&row)?;
        let started = What::TaskStarted {
            description: stage.description.clone(),
        };
        // Committed with the first attempt's ledger intents, before its tool
        // starts (see `guard_writes`), or with the stage's end: one commit
        // fewer per stage, and nothing runs in between.
        sh.rec
            .emit(started, at, Some(StageStatus::InProgress), None)?;
    }
    let t0 = Instant::now();

    // A decision given with `pmpo resume --skip|--abort` for the stage that awaited it.
    let awaited = cx.prior.get(&stage.id).is_some_and(awaits);
    let ending = match (awaited, cx.opts.decision) {
        (true, Some(d @ (Decision::Skip | Decision::Abort))) => Ending::Decided(d),
        _ => {
            let primary: Inputs = match (&resolved, &input_problem) {
                (Err(msg), _) => Err((FailureKind::InvalidInput, msg.clone(), CHECK_UPSTREAM)),
                (_, Some(msg)) => Err((
                    FailureKind::MissingInput,
                    msg.clone(),
                    "create the file, or fix the path under `inputs:`",
                )),
                (Ok(i), None) => Ok(i.clone()),
            };
            let attempts = Attempts {
                cx,
                shared,
                stage,
                at,
                primary,
                resolved: &resolved,
                token: &token,
            };
            attempts.recover(&mut progress).await?
        }
    };
    let end = StageEnd {
        idx,
        pos,
        at,
        def_hash: &def_hash,
        cache_key: &cache_key,
        duration: t0.elapsed(),
    };
    let mut guard = shared.borrow_mut();
    match ending {
        Ending::Halt(h @ (Halt::SafeMode | Halt::AwaitDecision | Halt::AwaitAnswer)) => {
            halt_stage(cx, &mut guard, stage, end, result, progress, h)
        }
        Ending::Decided(Decision::Skip) => skipped_by_person(cx, &mut guard, end, result, progress),
        Ending::Decided(_) | Ending::Finish | Ending::Halt(Halt::Cancelled) => {
            let aborted = matches!(ending, Ending::Decided(Decision::Abort));
            finish_stage(cx, &mut guard, stage, end, result, progress, aborted)
        }
    }
}

/// What the attempts of one stage work with.
struct Attempts<'c, 'a, 's> {
    cx: &'c Cx<'a>,
    shared: &'c RefCell<Shared<'s>>,
    stage: &'a Stage,
    at: Option<(&'a str, usize)>,
    primary: Inputs,
    resolved: &'c Result<Map<String, Value>, String>,
    token: &'c CancellationToken,
}

impl Attempts<'_, '_, '_> {
    fn policy(&self) -> Policy {
        let stage = self.stage;
        let salt = blake3::hash(format!("{}-{}", self.cx.run_id, stage.id).as_bytes());
        let b = salt.as_bytes();
        Policy {
            retry: stage.retry.clone(),
            fallback: stage.fallback.is_some(),
            correct: stage.correct,
            manual: stage.on_failure == OnFailure::Manual,
            can_ask: self.cx.opts.ask.is_some(),
            salt: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        }
    }

    /// The tool in use, as written, and its inputs.
    fn candidate(&self, tool: Tool) -> (String, Inputs) {
        match (tool, &self.stage.fallback) {
            (Tool::Fallback, Some(fb)) => {
                let inputs = resolve_inputs(&fb.inputs, &self.shared.borrow().data)
                    .map_err(|m| (FailureKind::InvalidInput, m, CHECK_UPSTREAM));
                (fb.tool.clone(), inputs)
            }
            _ => (self.stage.tool_name().to_string(), self.primary.clone()),
        }
    }

    fn emit(&self, what: What) -> Result<(), EngineError> {
        let mut sh = self.shared.borrow_mut();
        sh.rec
            .emit(what, self.at, Some(StageStatus::InProgress), None)?;
        sh.rec.db.flush()?;
        Ok(())
    }

    /// Asks the policy after each step and does what it says.
    async fn recover(&self, p: &mut Progress) -> Result<Ending, EngineError> {
        let policy = self.policy();
        let mut history = History::default();
        let registry = &self.cx.engine.registry;
        loop {
            let (tool, inputs) = self.candidate(history.tool());
            let (adapter, kind) = match &inputs {
                Ok(i) => registry.adapter_id(&tool, &self.stage.id, i),
                Err(_) => registry.adapter_id(&tool, &self.stage.id, &Map::new()),
            };
            let gate = if recovery::needs_gate(&policy, &history) {
                let mut sh = self.shared.borrow_mut();
                recovery::gate(sh.rec.db.as_mut(), &adapter, kind)?
            } else {
                Gate::Closed
            };
            let next = recovery::next_step(&policy, &history, &gate);
            if let Gate::Open(until) = &gate {
                p.blocked.push((adapter.clone(), until.clone()));
                history.steps.push(Step::Blocked);
            }
            match next {
                Next::Retry { attempt, of, delay } => {
                    if attempt > 1 && !self.wait(p, attempt - 1, of, delay).await? {
                        history.cancelled = true;
                        continue;
                    }
                    let (adapter, kind) = (adapter.as_str(), kind);
                    let tried = self.call(p, &tool, inputs, (adapter, kind)).await?;
                    history.steps.push(Step::Ran(tried));
                }
                Next::Fallback => {
                    let (fallback, _) = self.candidate(Tool::Fallback);
                    let what = What::TaskFallback {
                        tool: self.stage.tool_name().to_string(),
                        why: p.last_message(),
                        fallback: fallback.clone(),
                    };
                    let status = Some(StageStatus::InProgress);
                    self.shared
                        .borrow_mut()
                        .rec
                        .emit(what, self.at, status, None)?;
                    p.fallback_used = Some(fallback);
                    history.steps.push(Step::FellBack);
                }
                Next::Correct => history.steps.push(self.correct(p).await?),
                Next::AskPerson => match self.ask(p) {
                    Some(Decision::Retry) => {
                        self.emit(What::TaskRetrying(Retry::AsAsked))?;
                        p.blocked.clear();
                        history.steps.push(Step::PersonRetry);
                    }
                    Some(d) => return Ok(Ending::Decided(d)),
                    None => return Ok(Ending::Halt(Halt::AwaitDecision)),
                },
                Next::Halt(h) => return Ok(Ending::Halt(h)),
                Next::Finish => return Ok(Ending::Finish),
            }
        }
    }

    /// Waits before a retry; false when the run was cancelled meanwhile.
    async fn wait(
        &self,
        p: &mut Progress,
        failed: u32,
        of: u32,
        delay: Duration,
    ) -> Result<bool, EngineError> {
        self.emit(What::TaskRetrying(Retry::AttemptFailed {
            attempt: failed,
            of,
            error: p.last_message().unwrap_or_default(),
            delay,
        }))?;
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(true),
            _ = self.token.cancelled() => {
                if let Some(t) = p.last.as_mut() {
                    t.failure = Some(Failure::new(
                        FailureKind::Cancelled,
                        "cancelled while waiting to retry".into(),
                        None,
                    ));
                }
                Ok(false)
            }
        }
    }

    /// Records one attempt (its log, task row and ledger rows) and notes
    /// whether it changed the workspace.
    fn record(
        &self,
        sh: &mut Shared<'_>,
        tool: &str,
        attempt_no: i64,
        tried: &Tried,
    ) -> Result<(), EngineError> {
        let changed = record_attempt(
            &mut sh.rec,
            self.cx.ws,
            self.cx.run_id,
            self.stage,
            tool,
            attempt_no,
            tried,
        )?;
        sh.patched |= changed;
        Ok(())
    }

    /// One call of the tool in use, recorded, with its result on the adapter's breaker.
    async fn call(
        &self,
        p: &mut Progress,
        tool: &str,
        inputs: Inputs,
        (adapter, kind): (&str, &'static str),
    ) -> Result<Option<FailureKind>, EngineError> {
        // Committed with the attempt's ledger intents, before the tool starts (see `run_stage`).
        p.attempt_no += 1;
        let tried = match inputs {
            Err((k, m, h)) => Tried::failed(k, m, Some(h.to_string())),
            Ok(i) => {
                attempt(
                    self.cx,
                    self.shared,
                    self.stage,
                    (tool, p.attempt_no),
                    i,
                    self.token,
                    self.at,
                )
                .await?
            }
        };
        let mut sh = self.shared.borrow_mut();
        self.record(&mut sh, tool, p.attempt_no, &tried)?;
        // Which results go on the breaker (outages only, for a model endpoint) is recovery's rule.
        let failure_kind = tried.failure.as_ref().map(|f| f.kind);
        if recovery::counts_for_breaker(kind, failure_kind, tried.outcome.is_some()) {
            let err = tried.failure.as_ref().map(|f| f.message.as_str());
            let ok = tried.failure.is_none();
            recovery::record(
                sh.rec.db.as_mut(),
                adapter,
                kind,
                ok,
                err,
                self.cx.opts.breaker,
            )?;
        }
        p.last = Some(tried);
        Ok(failure_kind)
    }

    /// Level 2b (seed 001): one minimal correction of the stage's code by the
    /// model (the `run` tool's correction hook), run once.
    async fn correct(&self, p: &mut Progress) -> Result<Step, EngineError> {
        let stage = self.stage;
        let error = p.last_message().unwrap_or_default();
        let stderr = p
            .last
            .as_ref()
            .and_then(|t| t.outcome.as_ref())
            .map(|o| o.stderr.text())
            .unwrap_or_default();
        let request = pmpo_tools::run::Correction {
            workspace: self.cx.ws,
            run_id: self.cx.run_id,
            stage: &stage.id,
            inputs: &stage.inputs,
            error: &error,
            stderr: &stderr,
            deadline: Instant::now() + stage.timeout.map_or(self.cx.opts.default_timeout, |t| t.0),
        };
        let client = self.cx.engine.registry.model_client();
        // What is recorded is committed before the model is waited for.
        self.shared.borrow_mut().rec.db.flush()?;
        let code = pmpo_tools::run::correct_code(client, &request, self.token).await;
        let (inputs, code) = match (self.resolved, code) {
            (Ok(inputs), Ok(code)) => (inputs, code),
            (_, Err(why)) => {
                let note = format!("stage `{}`: correction skipped: {why}", stage.id);
                self.shared.borrow_mut().notices.push(note);
                return Ok(Step::NoCorrection);
            }
            (Err(_), _) => return Ok(Step::NoCorrection),
        };
        {
            let mut sh = self.shared.borrow_mut();
            let what = What::TaskRetrying(Retry::Corrected);
            sh.rec
                .emit(what, self.at, Some(StageStatus::InProgress), None)?;
            p.attempt_no += 1;
            sh.rec.db.flush()?;
        }
        let mut fixed = inputs.clone();
        fixed.insert("code".into(), Value::String(code));
        let tool = stage.tool_name();
        let tried = attempt(
            self.cx,
            self.shared,
            stage,
            (tool, p.attempt_no),
            fixed,
            self.token,
            self.at,
        )
        .await?;
        let mut sh = self.shared.borrow_mut();
        self.record(&mut sh, tool, p.attempt_no, &tried)?;
        let failure = tried.failure.as_ref().map(|f| f.kind);
        sh.notices.push(match failure {
            None => format!("stage `{}` passed after one correction of its code by the model (both attempts are in its log)", stage.id),
            Some(_) => format!("stage `{}`: the model's correction of its code failed too (both attempts are in its log)", stage.id),
        });
        p.correction_used = true;
        p.last = Some(tried);
        Ok(Step::Corrected(failure))
    }

    /// Asks a person; `None` when nobody can be asked. Everything recorded
    /// so far is committed first: a person may take long to answer.
    fn ask(&self, p: &Progress) -> Option<Decision> {
        if self.cx.opts.ask.is_some() {
            let _ = self.shared.borrow_mut().rec.db.flush();
        }
        let failure = p.last.as_ref().and_then(|t| t.failure.as_ref());
        let request = Intervention {
            run_id: self.cx.run_id.to_string(),
            stage: self.stage.id.clone(),
            error: failure.map(|f| f.message.clone()).unwrap_or_default(),
            hint: failure.and_then(|f| f.hint.clone()),
        };
        self.cx.opts.ask.as_ref().map(|ask| ask(&request))
    }
}

/// `pmpo resume --skip` (or a person's answer): the stage is SKIPPED after its failure.
fn skipped_by_person(
    cx: &Cx<'_>,
    sh: &mut Shared<'_>,
    end: StageEnd<'_>,
    mut result: StageResult,
    p: Progress,
) -> Result<(), EngineError> {
    let why = p
        .last_message()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    result.finished_at = Some(now_rfc3339());
    if let Some(t) = p.last.as_ref() {
        result.sandbox = t.sandbox.clone();
        result.undeclared = t.undeclared.iter().map(|d| d.path.clone()).collect();
    }
    let skip = Skip {
        idx: end.idx,
        pos: end.pos,
        at: end.at,
        def_hash: end.def_hash,
        cache_key: Some(end.cache_key),
        attempts: p.attempt_no,
        duration: Some(end.duration),
    };
    let reason = format!("skipped by the user after a failure{why}");
    sh.record_skip(cx.run_id, result, skip, reason)
}

/// Where a stage that ends stands.
struct StageEnd<'a> {
    idx: usize,
    pos: usize,
    at: Option<(&'a str, usize)>,
    def_hash: &'a str,
    cache_key: &'a str,
    duration: Duration,
}

/// What a halted stage waits for: its reason, the run's status, the kind
/// and hint of its error entry.
fn halt_words(run_id: &str, halt: Halt, p: &Progress) -> (String, RunStatus, FailureKind, String) {
    match halt {
        Halt::SafeMode => {
            let open: Vec<String> = p
                .blocked
                .iter()
                .map(|(a, u)| format!("circuit open for adapter {a} until {u}"))
                .collect();
            let reason = format!(
                "safe mode: every adapter this stage can use is unavailable ({}); resume after the cool-down",
                open.join("; ")
            );
            let hint = format!("after the cool-down, `pmpo resume {run_id}` tries again");
            (reason, RunStatus::Paused, FailureKind::SafeMode, hint)
        }
        // The tool's own words name the question's file and the command that answers it.
        Halt::AwaitAnswer => {
            let failure = p.last.as_ref().and_then(|t| t.failure.as_ref());
            let reason = failure.map_or_else(
                || "the stage waits for the host's answer".to_string(),
                |f| f.message.clone(),
            );
            let hint = failure.and_then(|f| f.hint.clone()).unwrap_or_else(|| {
                format!("answer with `pmpo answer --run {run_id} --stage STAGE --file ANSWER.json`")
            });
            let status = RunStatus::AwaitingIntervention;
            (reason, status, FailureKind::AwaitingAnswer, hint)
        }
        Halt::AwaitDecision | Halt::Cancelled => {
            let err = p.last_message().unwrap_or_default();
            let reason = format!(
                "awaiting a decision after: {err}; answer with `pmpo resume {run_id} --retry|--skip|--abort`"
            );
            let hint = format!("decide with `pmpo resume {run_id} --retry`, `--skip` or `--abort`");
            let status = RunStatus::AwaitingIntervention;
            (reason, status, FailureKind::AwaitingDecision, hint)
        }
    }
}

/// A stage that will not finish now: a person must decide, the host must
/// answer, or every adapter is open.
fn halt_stage(
    cx: &Cx<'_>,
    sh: &mut Shared<'_>,
    stage: &Stage,
    end: StageEnd<'_>,
    mut result: StageResult,
    p: Progress,
    halt: Halt,
) -> Result<(), EngineError> {
    let run_id = cx.run_id;
    let (reason, why, kind, hint) = halt_words(run_id, halt, &p);
    result.status = StageStatus::AwaitingIntervention;
    result.reason = Some(reason.clone());
    result.finished_at = None;
    result.attempts = p.attempt_no as u32;
    result.log = (p.attempt_no > 0).then(|| crate::stage_log(run_id));
    let row = task_row(
        run_id,
        end.pos,
        &result,
        end.def_hash,
        Some(end.cache_key),
        "{}",
        p.attempt_no,
    );
    sh.rec.db.put_task(&row)?;
    sh.rec.emit(
        What::TaskAwaitingIntervention {
            reason: reason.clone(),
        },
        end.at,
        Some(StageStatus::AwaitingIntervention),
        Some(end.duration),
    )?;
    sh.rec.db.flush()?;
    // The stage earliest in the reference order decides what else may start.
    sh.paused = Some(match sh.paused {
        Some((w, at)) if at < end.pos => (w, at),
        _ => (why, end.pos),
    });
    // What the run waits for is in its errors, with what to do.
    sh.errors.push(ErrorEntry {
        stage: stage.id.clone(),
        kind,
        message: reason,
        hint: Some(hint),
        stderr_tail: p
            .last
            .as_ref()
            .and_then(|t| t.outcome.as_ref())
            .and_then(|o| tail_lines(&o.stderr, 10)),
    });
    sh.results[end.idx] = Some(result);
    Ok(())
}

/// What the last attempt left: its failure, outcome, files, exit code and signal.
type Left = (
    Option<Failure>,
    Option<ToolOutcome>,
    Vec<GeneratedFile>,
    Option<i32>,
    Option<i32>,
);

/// What a stage that ends now leaves, from its last attempt (or a person's abort).
fn left_by(sh: &mut Shared<'_>, pos: usize, last: Option<Tried>, aborted: bool) -> Left {
    if aborted {
        if sh.aborted_at.is_none_or(|p| pos < p) {
            sh.aborted_at = Some(pos);
        }
        let mut f = last
            .as_ref()
            .and_then(|t| t.failure.clone())
            .unwrap_or_else(|| Failure::new(FailureKind::Aborted, String::new(), None));
        f.message = format!(
            "aborted by the user{}",
            if f.message.is_empty() {
                String::new()
            } else {
                format!(" after: {}", f.message)
            }
        );
        f.kind = FailureKind::Aborted;
        let (o, files, e, s) = last.map_or((None, vec![], None, None), |t| {
            (t.outcome, t.files, t.exit_code, t.signal)
        });
        return (Some(f), o, files, e, s);
    }
    match last {
        Some(t) => (t.failure, t.outcome, t.files, t.exit_code, t.signal),
        None => {
            let message = "the stage made no attempt".to_string();
            let f = Failure::new(FailureKind::Internal, message, None);
            (Some(f), None, vec![], None, None)
        }
    }
}

/// Records a stage that ended: its result, its row, the cache, its errors and its event.
fn finish_stage(
    cx: &Cx<'_>,
    sh: &mut Shared<'_>,
    stage: &Stage,
    end: StageEnd<'_>,
    mut result: StageResult,
    mut p: Progress,
    aborted: bool,
) -> Result<(), EngineError> {
    let run_id = cx.run_id;
    let finished_at = now_rfc3339();
    if let Some(t) = p.last.as_ref() {
        result.sandbox = t.sandbox.clone();
        result.undeclared = t.undeclared.iter().map(|d| d.path.clone()).collect();
    }
    let (mut failure, mut outcome, files, exit_code, signal) =
        left_by(sh, end.pos, p.last.take(), aborted);
    // A tool that skipped optional work (a preview with no browser) says so:
    // the stage is SKIPPED with its reason, not COMPLETED.
    let tool_skip = outcome
        .as_ref()
        .and_then(|o| o.skipped.clone())
        .filter(|_| failure.is_none());
    let status = match (&failure, &tool_skip) {
        // Stopped by the user's cancel: not a failure of the stage.
        (Some(f), _) if f.kind == FailureKind::Cancelled => StageStatus::Cancelled,
        (Some(f), _) => f.status,
        (None, Some(_)) => StageStatus::Skipped,
        (None, None) => StageStatus::Completed,
    };
    if let (Some(f), Some(fb)) = (failure.as_mut(), &p.fallback_used) {
        f.message = format!("{} (the fallback `{fb}` was tried too)", f.message);
    }

    // What later stages (and a later resume) may read.
    let named = outcome
        .as_mut()
        .map(|o| std::mem::take(&mut o.outputs))
        .unwrap_or_default();
    let mut stage_data: StageData = named.clone();
    let keep = |f: &str| cx.wanted.contains(&(stage.id.clone(), f.to_string()));
    if let Some(o) = &outcome {
        keep_streams(cx, stage, o, &keep, &mut stage_data)?;
    }
    stage_data.insert("exit_code".into(), json!(exit_code));
    stage_data.insert(
        "files".into(),
        json!(files.iter().map(|f| &f.path).collect::<Vec<_>>()),
    );
    stage_data.insert("duration_ms".into(), json!(ms(end.duration)));
    let data_json = serde_json::to_string(&stage_data).expect("json");

    result.status = status;
    result.reason = failure
        .as_ref()
        .map(|f| f.message.clone())
        .or(tool_skip.clone());
    result.optional_skip = tool_skip.is_some();
    result.finished_at = Some(finished_at.clone());
    result.duration_ms = ms(end.duration);
    result.exit_code = exit_code;
    result.signal = signal;
    result.outputs = named;
    result.files = files;
    result.attempts = p.attempt_no as u32;
    result.fallback_used = p.fallback_used.clone();
    result.stdout_bytes = outcome.as_ref().map_or(0, |o| o.stdout.total);
    result.stderr_bytes = outcome.as_ref().map_or(0, |o| o.stderr.total);
    let row = task_row(
        run_id,
        end.pos,
        &result,
        end.def_hash,
        Some(end.cache_key),
        &data_json,
        p.attempt_no,
    );
    sh.rec.db.put_task(&row)?;
    // A result reached through a fallback is not what the stage itself would give.
    if status == StageStatus::Completed
        && stage.cache
        && p.fallback_used.is_none()
        && !p.correction_used
    {
        sh.rec.db.cache_put(&CacheRow {
            cache_key: end.cache_key.to_string(),
            stage_id: stage.id.clone(),
            run_id: run_id.to_string(),
            created_at: finished_at.clone(),
            outputs: serde_json::to_string(&result.outputs).expect("json"),
            files: serde_json::to_string(&result.files).expect("json"),
            data: data_json,
        })?;
    }
    let ended = Ended {
        status,
        failure: failure.as_ref(),
        tool_skip: tool_skip.as_deref(),
        fallback_used: p.fallback_used.as_deref(),
        stderr_tail: outcome.as_ref().and_then(|o| tail_lines(&o.stderr, 10)),
    };
    report_end(sh, stage, &end, ended)?;
    if status == StageStatus::Completed && cx.wanted.iter().any(|(s, _)| s == &stage.id) {
        sh.data.insert(stage.id.clone(), stage_data);
    }
    sh.record_done(end.idx, result);
    // Committed before anything else starts or pmpo waits (see `schedule`).
    Ok(())
}

/// How a stage ended, for its errors, notices and event.
struct Ended<'a> {
    status: StageStatus,
    failure: Option<&'a Failure>,
    tool_skip: Option<&'a str>,
    fallback_used: Option<&'a str>,
    stderr_tail: Option<String>,
}

fn report_end(
    sh: &mut Shared<'_>,
    stage: &Stage,
    end: &StageEnd<'_>,
    e: Ended<'_>,
) -> Result<(), EngineError> {
    let (at, status, duration) = (end.at, Some(e.status), Some(end.duration));
    if let Some(fb) = e.fallback_used
        && e.status == StageStatus::Completed
    {
        sh.notices
            .push(format!("stage `{}` used its fallback `{fb}`", stage.id));
    }
    if let Some(f) = e.failure {
        sh.errors.push(ErrorEntry {
            stage: stage.id.clone(),
            kind: f.kind,
            message: f.message.clone(),
            hint: f.hint.clone(),
            stderr_tail: e.stderr_tail,
        });
        if f.kind == FailureKind::Cancelled {
            sh.cancelled = true;
        }
        // A failure never stops a stage that is already running: fail-fast only
        // keeps later stages (in the reference order) from starting.
        if sh.first_failure.as_ref().is_none_or(|(p, _)| end.pos < *p) {
            sh.first_failure = Some((end.pos, stage.id.clone()));
        }
        let failed = What::TaskFailed {
            error: f.message.clone(),
        };
        sh.rec.emit(failed, at, status, duration)?;
    } else if let Some(why) = e.tool_skip {
        let skipped = What::TaskSkipped {
            reason: why.to_string(),
        };
        sh.rec.emit(skipped, at, status, duration)?;
    } else {
        let completed = What::TaskCompleted {
            reused: None,
            fallback: e.fallback_used.map(str::to_string),
        };
        sh.rec.emit(completed, at, status, duration)?;
    }
    Ok(())
}
