//! Attempting: one call of a stage's tool, judged (declared outputs, the
//! stage's own checks).

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) status: StageStatus,
    pub(super) kind: FailureKind,
    pub(super) message: String,
    pub(super) hint: Option<String>,
}

impl Failure {
    /// A FAILED stage's failure.
    pub(super) fn new(kind: FailureKind, message: String, hint: Option<String>) -> Failure {
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
pub(super) struct Attempt {
    pub(super) outcome: Option<ToolOutcome>,
    pub(super) failure: Option<Failure>,
    /// The sandbox mode the stage's processes ran under.
    pub(super) sandbox: Option<String>,
    /// Changes outside the declared outputs (detection).
    pub(super) undeclared: Vec<pmpo_sandbox::snapshot::Difference>,
    /// Declared output files that were there before the stage and are gone.
    pub(super) before: BTreeMap<String, FileDigest>,
    /// Their metadata then, and the paths the tool writes itself: a file
    /// there before that the stage did not write is not its output.
    pub(super) stamps: BTreeMap<String, outputs::Stamp>,
    pub(super) own: Vec<String>,
    /// Content hashes of the files under the outputs that are in the backup store.
    pub(super) backed_up: HashSet<String>,
    /// What the attempt may write: the declared outputs and the tool's own.
    pub(super) watched: Vec<String>,
    /// Ledger intents committed before the tool ran, by path.
    pub(super) intents: BTreeMap<String, i64>,
    pub(super) resolved: Value,
    pub(super) started_at: String,
    pub(super) started: Option<Instant>,
}

impl Attempt {
    pub(super) fn failed(kind: FailureKind, message: String, hint: Option<String>) -> Attempt {
        Attempt {
            failure: Some(Failure::new(kind, message, hint)),
            started_at: now_rfc3339(),
            ..Default::default()
        }
    }
}

/// One judged attempt: the tool's outcome and the files under the declared outputs.
#[derive(Default)]
pub(super) struct Tried {
    pub(super) outcome: Option<ToolOutcome>,
    pub(super) failure: Option<Failure>,
    pub(super) sandbox: Option<String>,
    pub(super) undeclared: Vec<pmpo_sandbox::snapshot::Difference>,
    pub(super) files: Vec<GeneratedFile>,
    pub(super) backed_up: HashSet<String>,
    /// Every file under the watched paths after the attempt, judged against
    /// before (also when the attempt failed), and the files that vanished.
    pub(super) changes: Vec<GeneratedFile>,
    pub(super) gone: Vec<(String, FileDigest)>,
    pub(super) intents: BTreeMap<String, i64>,
    pub(super) resolved: Value,
    pub(super) exit_code: Option<i32>,
    pub(super) signal: Option<i32>,
    pub(super) started_at: String,
    pub(super) finished_at: String,
    pub(super) duration: Duration,
}

impl Tried {
    pub(super) fn failed(kind: FailureKind, message: String, hint: Option<String>) -> Tried {
        let now = now_rfc3339();
        Tried {
            failure: Some(Failure::new(kind, message, hint)),
            started_at: now.clone(),
            finished_at: now,
            ..Default::default()
        }
    }
}

/// One call of a stage's tool, judged: declared outputs, then the stage's own
/// `validate:` checks. The run's heartbeat is refreshed while the tool runs.
pub(super) async fn attempt(
    cx: &Cx<'_>,
    shared: &RefCell<Shared<'_>>,
    stage: &Stage,
    (tool, attempt_no): (&str, i64),
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
        cx.engine,
        cx.ws,
        cx.run_id,
        stage,
        (tool, attempt_no),
        cx.opts,
        inputs,
        cx.plan,
        token,
        &beat,
        &intend,
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

/// VALIDATING: the tool finished; now the engine decides.
pub(super) fn validate_attempt(
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
            What::TaskValidating,
            at,
            Some(StageStatus::Validating),
            None,
        )?;
        let vt = Instant::now();
        files = changes.clone();
        let not_written = outputs::not_written(ws, &a.stamps, &after, &a.own);
        files.retain(|f| !not_written.contains(&f.path));
        // Only the plan's own `outputs:` must exist; the tool's are its business.
        let mut problems: Vec<String> = after
            .missing
            .iter()
            .filter(|m| stage.outputs.contains(m))
            .map(|m| format!("declared output missing: {m}"))
            .collect();
        problems.extend(after.problems.iter().cloned());
        problems.extend(outputs::not_produced(ws, &stage.outputs, &not_written));
        if !stage.outputs.is_empty() {
            validations.push(ValidationOutput {
                check: "declared_outputs".into(),
                stage: Some(stage.id.clone()),
                constraint_id: None,
                status: if problems.is_empty() {
                    ValidationStatus::Passed
                } else {
                    ValidationStatus::Failed
                },
                evidence: json!({ "declared": stage.outputs, "found": files.iter().map(|f| &f.path).collect::<Vec<_>>(), "problems": problems }),
                duration_ms: ms(vt.elapsed()),
            });
        }
        if !problems.is_empty() {
            failure = Some(Failure {
                status: StageStatus::Failed,
                kind: FailureKind::MissingOutput,
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
