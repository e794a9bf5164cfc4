//! Calling the tool: the ledger's intents and backups before, the heartbeat
//! while it runs, what its end means, and what the sandbox saw.

use super::*;

/// Commits ledger intents before a tool may write; returns their ids.
pub(super) type Intend<'a> = dyn Fn(&[PatchRow]) -> Result<Vec<i64>, String> + 'a;

/// Calls the tool once (or, with `opts.remote`, has a worker call it). While
/// it runs, the run's heartbeat is refreshed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_stage(
    engine: &Engine,
    ws: &Workspace,
    run_id: &str,
    stage: &Stage,
    (tool_written, attempt_no): (&str, i64),
    opts: &ExecuteOptions,
    inputs: Map<String, Value>,
    plan: &crate::CheckedPlan,
    cancel: &CancellationToken,
    beat: &dyn Fn(),
    intend: &Intend<'_>,
) -> Attempt {
    let Some(tool) = engine.registry.get(tool_written) else {
        return Attempt::failed(
            FailureKind::InvalidInput,
            format!("unknown tool `{tool_written}`"),
            None,
        );
    };
    // A worker's machine, not this one, must be able to run the tool.
    if let (None, Err(e)) = (&opts.remote, tool.preflight()) {
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
    let watched = match guard_writes(
        ws,
        run_id,
        stage,
        tool.as_ref(),
        tool_written,
        &inputs,
        &mut attempt,
        intend,
    ) {
        Ok(w) => w,
        Err(f) => return Attempt::failed(f.kind, f.message, f.hint),
    };
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
        validation: &plan.doc.plan.validation_plan,
        description: &stage.description,
        confine: confinement.as_ref(),
    };
    attempt.started = Some(Instant::now());
    let watched_now = attempt.watched.clone();
    let worker_sandbox = std::sync::Mutex::new(None);
    let invoke = match &opts.remote {
        Some(runner) => Box::pin(super::remote::submit(
            runner.as_ref(),
            &worker_sandbox,
            ws,
            plan,
            run_id,
            stage,
            (tool_written, attempt_no),
            &inputs,
            timeout,
            &watched_now,
            cancel,
        )),
        None => tool.invoke(&ctx, &inputs),
    };
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
            attempt.failure = ended(&outcome, timeout, opts.cancel.is_cancelled());
            attempt.outcome = Some(outcome);
        }
    }
    judge_sandbox(ws, stage, watch, &mut attempt);
    // A worker's stage: the results say how the worker confined it.
    if opts.remote.is_some() {
        let theirs = worker_sandbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        attempt.sandbox = theirs.or(attempt.sandbox.take());
    }
    attempt
}

/// Before the tool may write: what it may overwrite (its declared outputs and
/// the files the tool itself writes) is backed up and committed to the ledger
/// as intents. Returns the watched paths, or why the stage cannot run.
#[allow(clippy::too_many_arguments)]
fn guard_writes(
    ws: &Workspace,
    run_id: &str,
    stage: &Stage,
    tool: &dyn pmpo_tools::Tool,
    tool_written: &str,
    inputs: &Map<String, Value>,
    attempt: &mut Attempt,
    intend: &Intend<'_>,
) -> Result<Vec<String>, Failure> {
    // Keep what the stage may overwrite, so `pmpo restore` can bring it back:
    // its declared outputs and the files the tool itself writes.
    let mut watched = stage.outputs.clone();
    let own = tool.written_paths(inputs);
    for p in &own {
        // A tool never writes pmpo's own files (the database, the backups):
        // that would be a change nobody could undo.
        if pmpo_store::is_own_path(p) {
            return Err(Failure::new(
                FailureKind::InvalidInput,
                format!(
                    "`{tool_written}` would write `{p}`, inside pmpo's own directories ({})",
                    pmpo_store::OWN_DIRS.join(", ")
                ),
                Some("choose an output path outside them (e.g. under dist/)".into()),
            ));
        }
        if !watched.contains(p) {
            watched.push(p.clone());
        }
    }
    attempt.before = outputs::expand(ws, &watched).files;
    attempt.stamps = outputs::stamps(ws, attempt.before.keys());
    attempt.own = own;
    for (rel, digest) in &attempt.before {
        match ws.backup(rel, digest) {
            Ok(true) => {
                attempt.backed_up.insert(digest.blake3.clone());
            }
            Ok(false) => {}
            Err(e) => {
                return Err(Failure::new(
                    FailureKind::Io,
                    format!("cannot back up `{rel}` before the stage may overwrite it: {e}"),
                    Some("check free space in the workspace".into()),
                ));
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
            return Err(Failure::new(
                FailureKind::Io,
                format!("cannot record in the ledger what the stage may change: {e}"),
                Some("check that the workspace is writable and has free space".into()),
            ));
        }
    }
    Ok(watched)
}

/// What the end of a tool's process means: nothing (exit 0), or the failure,
/// classified with a hint.
fn ended(outcome: &ToolOutcome, timeout: Duration, cancelled: bool) -> Option<Failure> {
    let fail = |kind: FailureKind, message: String, hint: Option<String>| {
        Some(Failure::new(kind, message, hint))
    };
    match outcome.termination {
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
            let oom = sig == 9 && !cancelled;
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
            kind: FailureKind::Timeout,
            message: format!("timed out after {timeout:.1?}; it was stopped"),
            hint: Some("raise the stage's `timeout:` or make the work faster".into()),
        }),
        Termination::Cancelled => fail(
            FailureKind::Cancelled,
            "cancelled by the user; its process group was killed".into(),
            None,
        ),
    }
}

/// After the tool: what the sandbox saw. Changes outside the declared
/// outputs (detection) fail the stage; under Landlock, a stage that failed
/// on a refused write says so.
pub(super) fn judge_sandbox(
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
            kind: FailureKind::UndeclaredWrite,
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
        f.kind,
        FailureKind::Timeout | FailureKind::Cancelled | FailureKind::Killed | FailureKind::Signal
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
        f.kind = FailureKind::PermissionDenied;
        f.hint = Some("sudo and other set-uid programs cannot gain privileges inside a sandboxed stage (Landlock needs no_new_privs); drop sudo, or set `sandbox: false` on the stage".into());
        return;
    }
    if let Some(path) = refused_path {
        f.kind = FailureKind::UndeclaredWrite;
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

pub(super) fn exit_hint(code: i32) -> String {
    match code {
        127 => "exit 127 means a command was not found: install it or fix its name".into(),
        126 => "exit 126 means a command was found but could not run: check its permissions".into(),
        _ => "see the stage's stderr in its log under logs/execution/".into(),
    }
}

pub(super) fn signal_name(sig: i32) -> &'static str {
    match sig {
        9 => " (SIGKILL; out of memory?)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        6 => " (SIGABRT)",
        _ => "",
    }
}
