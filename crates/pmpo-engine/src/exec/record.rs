//! Recording: events through the recorder, each attempt in the stage log,
//! the ledger and the store, and what later stages may read of a stage.

use super::*;

/// Emits events to the event log, the store and the caller's sink.
pub(crate) struct Recorder<'a> {
    pub run_id: String,
    pub(super) total: usize,
    pub(super) log: File,
    /// The run's stage log, opened at the first attempt that ends.
    pub(super) stage_log: Option<File>,
    pub db: Box<dyn ExecStore>,
    pub(super) sink: &'a mut dyn EventSink,
}

impl Recorder<'_> {
    /// Emits what happened; its words in the log are the reporter's.
    pub(super) fn emit(
        &mut self,
        what: What,
        stage: Option<(&str, usize)>,
        status: Option<StageStatus>,
        duration: Option<Duration>,
    ) -> Result<(), EngineError> {
        let kind = what.kind();
        let event = Event {
            event: kind,
            run_id: self.run_id.clone(),
            stage_id: stage.map(|(id, _)| id.to_string()),
            timestamp: now_rfc3339(),
            index: stage.map(|(_, i)| i),
            total: self.total,
            status,
            duration_ms: duration.map(ms),
            message: crate::words::message(&what),
            what,
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

pub(super) fn tail_lines(c: &Captured, n: usize) -> Option<String> {
    let text = c.text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let start = lines.len().saturating_sub(n);
    Some(pmpo_store::secrets::redact(&lines[start..].join("\n")).into_owned())
}

/// What later stages read of a stage's stdout and stderr. A stream cut by the
/// capture limit is never passed on as if whole: `$stage.stdout` then fails
/// with the sizes (see `resolve`), and `$stage.stdout_file` names a file with
/// all of it.
pub(super) fn keep_streams(
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

impl Recorder<'_> {
    /// Appends one attempt to the run's stage log. The line is written (in
    /// the kernel's cache, which a kill -9 of pmpo does not lose) before the
    /// transaction that records the stage's end commits.
    pub(super) fn append_stage_log(
        &mut self,
        ws: &Workspace,
        record: &Value,
    ) -> Result<(), EngineError> {
        // A configured key that a stage printed never reaches the log.
        let text = serde_json::to_string(record).expect("log records serialize");
        let mut line = pmpo_store::secrets::redact(&text).into_owned().into_bytes();
        line.push(b'\n');
        let rel = crate::stage_log(&self.run_id);
        let file = match &mut self.stage_log {
            Some(f) => f,
            None => self.stage_log.insert(ws.open_append(&rel)?),
        };
        file.write_all(&line)
            .map_err(|e| pmpo_store::StoreError::io("append to", &ws.root().join(&rel), e))?;
        Ok(())
    }
}

pub(super) fn task_row(
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
        status: r.status,
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

/// Records one attempt: the patch history, the stage log, the execution log.
/// Returns whether any file changed.
pub(super) fn record_attempt(
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
    rec.append_stage_log(ws, &log_record)?;
    rec.db.add_attempt(&AttemptRow {
        run_id: run_id.to_string(),
        stage_id: stage.id.clone(),
        attempt: attempt_no,
        status,
        started_at: t.started_at.clone(),
        finished_at: t.finished_at.clone(),
        duration_ms: ms(t.duration),
        exit_code: t.exit_code.map(i64::from),
        signal: t.signal.map(i64::from),
        error_kind: t.failure.as_ref().map(|f| f.kind),
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
pub(super) fn complete_intents(
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

/// The ledger row of a change a stage made outside its declared outputs.
pub(super) fn undeclared_row(
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
