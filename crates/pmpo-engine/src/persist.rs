//! Writing a run's results: `.state/execution_results.json`,
//! `artifact_manifest.json` and an entry appended to `refinement_log.md`.

use pmpo_store::states::ValidationStatus;
use std::fmt::Write as _;
use std::time::Duration;

use pmpo_store::db::ExecStore;
use pmpo_store::{Durability, LEDGER_FILE, Workspace, Writer, now_rfc3339};

use crate::exec::ms;
use crate::outputs::Change;
use crate::results::{
    ErrorEntry, ExecutionResults, RESULTS_SCHEMA_VERSION, RunStatus, StageResult, Summary,
    ValidationOutput, Violation, ViolationCheck, build_manifest,
};
use crate::validation::ConstraintReport;
use crate::validation::md_cell;
use crate::{EVENTS_LOG, EngineError, MANIFEST_FILE, REFINEMENT_LOG, RESULTS_FILE, STAGE_LOG_DIR};

pub(crate) struct RunRecord {
    pub notices: Vec<String>,
    pub run_id: String,
    pub started_at: String,
    pub duration: Duration,
    /// Time the tools took to release what they kept for the run (the browser).
    pub teardown: Duration,
    /// What the stages say; a blocking constraint that the `validation_plan` did
    /// not prove turns `completed` or `incomplete` into `failed`.
    pub status: RunStatus,
    pub stages: Vec<StageResult>,
    pub errors: Vec<ErrorEntry>,
    pub validations: Vec<ValidationOutput>,
    /// Whose files these are (see `ExecuteOptions::owner`).
    pub owner: Option<String>,
}

/// Most stage rows written to one refinement log entry; the rest are counted.
const LOG_TABLE_ROWS: usize = 200;

/// The plan's path relative to the workspace when it is inside it (the key runs are found by).
pub(crate) fn plan_rel(ws: &Workspace, plan: &crate::CheckedPlan) -> String {
    let abs = std::fs::canonicalize(&plan.path).unwrap_or_else(|_| plan.path.clone());
    ws.relative(&abs)
        .unwrap_or_else(|| abs.to_string_lossy().into_owned())
}

/// Writes a user-visible file through the store's one recorded write path
/// (backup, ledger intent, atomic replace). Returns whether it changed.
pub(crate) fn write_ledgered(
    ws: &Workspace,
    db: &mut dyn ExecStore,
    rel: &str,
    bytes: &[u8],
    run_id: &str,
) -> Result<bool, EngineError> {
    let who = Writer {
        run_id,
        writer: "pmpo",
    };
    Ok(ws.write_recorded(db, rel, bytes, who)?.is_some())
}

/// Rewrites `.state/patch_ledger.jsonl` from the store's patch history.
pub fn export_ledger(ws: &Workspace, db: &mut dyn ExecStore) -> Result<usize, EngineError> {
    let rows = db.patches(None, None)?;
    ws.write_atomic_with(LEDGER_FILE, Durability::Durable, |w| {
        for r in &rows {
            serde_json::to_writer(&mut *w, r).map_err(std::io::Error::from)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    Ok(rows.len())
}

pub(crate) fn finish(
    ws: &Workspace,
    plan: &crate::CheckedPlan,
    plan_rel: &str,
    db: &mut dyn ExecStore,
    run: RunRecord,
    patched: bool,
    allow_violations: bool,
) -> Result<ExecutionResults, EngineError> {
    let spec = &plan.doc.specification;
    let finished_at = now_rfc3339();
    let summary = Summary::of(run.stages.iter().map(|s| s.status));
    let manifest = build_manifest(
        spec,
        &run.run_id,
        run.status,
        &run.stages,
        finished_at.clone(),
    );
    let generated_files = run
        .stages
        .iter()
        .filter(|s| s.status.is_success())
        .flat_map(|s| s.files.iter().cloned())
        .collect();

    // The manifest goes first: the validation_plan may check it.
    let manifest_json = shared_manifest(ws, &manifest, run.owner.as_deref());
    let mut changed = patched;
    changed |= write_ledgered(ws, db, MANIFEST_FILE, &manifest_json, &run.run_id)?;

    let mut validation_outputs = run.validations;
    // The validation_plan runs on the files as the stages left them (not after a cancel).
    let skip = (run.status == RunStatus::Cancelled).then_some("not run: the run was cancelled");
    let never = std::sync::atomic::AtomicBool::new(false);
    let evidence =
        crate::validation::Evidence::of_run(&run.run_id, &plan.doc.plan.stages, &run.stages);
    validation_outputs.extend(crate::validation::run_validation_plan(
        ws, &plan.doc, skip, &never, &evidence,
    ));
    let constraint_reports = crate::validation::constraint_reports(spec, &validation_outputs);
    // The final validation decides success (seed 003): a blocking constraint not proven fails the run.
    let violations = unproven_blocking(&constraint_reports, &validation_outputs);
    let status = match run.status {
        RunStatus::Completed | RunStatus::Incomplete
            if !violations.is_empty() && !allow_violations =>
        {
            RunStatus::Failed
        }
        s => s,
    };

    let logs = log_entry(
        &run.run_id,
        plan_rel,
        &finished_at,
        status,
        &summary,
        run.duration,
        &run.stages,
        &run.errors,
    );
    let logs = if validation_outputs.is_empty() && constraint_reports.is_empty() {
        logs
    } else {
        logs + &crate::validation::log_summary(&constraint_reports, &validation_outputs)
    };
    if !spec.constraints.is_empty() {
        changed |= crate::validation::write_constraints(
            spec,
            &constraint_reports,
            &validation_outputs,
            &run.run_id,
            &mut |rel, bytes| write_ledgered(ws, db, rel, bytes, &run.run_id),
        )?;
    }
    let mut log_files = vec![EVENTS_LOG.to_string(), REFINEMENT_LOG.to_string()];
    log_files.extend(
        run.stages
            .iter()
            .filter_map(|s| s.log.clone())
            .filter(|l| l.starts_with(STAGE_LOG_DIR)),
    );
    // Stages share their run's log: each file once, in the order first named.
    let mut seen = std::collections::HashSet::new();
    log_files.retain(|l| seen.insert(l.clone()));

    let results = ExecutionResults {
        schema_version: RESULTS_SCHEMA_VERSION,
        run_id: run.run_id.clone(),
        plan: plan_rel.to_string(),
        plan_blake3: plan.blake3.clone(),
        artifact_name: spec.artifact_name.clone(),
        status,
        started_at: run.started_at,
        finished_at,
        duration_ms: ms(run.duration),
        teardown_ms: ms(run.teardown),
        summary,
        stages: run.stages,
        generated_files,
        manifest,
        logs,
        log_files,
        validation_outputs,
        allowed_violations: allow_violations && !violations.is_empty(),
        violations,
        errors: run.errors,
        sandbox: pmpo_sandbox::Mode::for_run().label(),
        notices: run.notices,
        state_updates: plan.doc.plan.state_updates.clone(),
    };

    write_results(ws, db, &results, changed)?;
    Ok(results)
}

/// Writes what the run leaves: its entry in the refinement log, the ledger's
/// export (when something changed) and the results file.
fn write_results(
    ws: &Workspace,
    db: &mut dyn ExecStore,
    results: &ExecutionResults,
    changed: bool,
) -> Result<(), EngineError> {
    // Never through a link: its target would be copied into the workspace.
    let mut log = ws
        .read_own(REFINEMENT_LOG)?
        .unwrap_or_else(|| b"# Refinement log\n".to_vec());
    if !log.ends_with(b"\n") {
        log.push(b'\n');
    }
    log.push(b'\n');
    log.extend_from_slice(results.logs.as_bytes());
    let changed = changed | write_ledgered(ws, db, REFINEMENT_LOG, &log, &results.run_id)?;
    db.flush()?;
    if changed || !ws.root().join(LEDGER_FILE).exists() {
        export_ledger(ws, db)?;
    }

    // Redacted as it is written: a configured key a stage printed (an error's
    // stderr tail, a named output) never reaches the results file, and the
    // text of a run of thousands of stages is never held whole.
    ws.write_atomic_with(RESULTS_FILE, Durability::Durable, |w| {
        let mut out =
            std::io::BufWriter::with_capacity(64 * 1024, pmpo_store::secrets::Redacting::new(w));
        serde_json::to_writer_pretty(&mut out, results).map_err(std::io::Error::from)?;
        out.into_inner().map_err(|e| e.into_error())?.finish()?;
        Ok(())
    })?;
    Ok(())
}

/// The manifest to write: this run's entries (each with its owner, when the
/// run has one) and the entries of every other owner already in the
/// workspace's manifest. Several named artifacts share one `dist/` and one
/// manifest; a run replaces only its own owner's entries, so one artifact's
/// run never drops (or vouches for) another's files. Entries without an owner
/// are what a plain `pmpo execute` wrote: a run replaces them as before.
fn shared_manifest(
    ws: &Workspace,
    manifest: &crate::results::Manifest,
    owner: Option<&str>,
) -> Vec<u8> {
    use serde_json::Value;
    let before = ws.read_own(MANIFEST_FILE).ok().flatten();
    // No owner in this run nor any in the manifest there: nobody else's
    // entries to keep, and the manifest is written as it is (no JSON trees of
    // thousands of entries built and parsed at the end of a large run).
    let owned_before = before
        .as_deref()
        .is_some_and(|b| b.windows(7).any(|w| w == b"\"owner\""));
    if owner.is_none() && !owned_before {
        return serde_json::to_vec_pretty(manifest).unwrap_or_default();
    }
    let mut doc = serde_json::to_value(manifest).unwrap_or(Value::Null);
    for key in ["files", "variants"] {
        for entry in doc
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let (Some(o), Some(obj)) = (owner, entry.as_object_mut()) {
                obj.insert("owner".into(), Value::String(o.to_string()));
            }
        }
    }
    // A manifest that is missing, not JSON, or not inside the workspace (a
    // symlink out of it) has no entries to keep.
    let before: Value = before
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let other_owner = |e: &Value| match e.get("owner").and_then(Value::as_str) {
        Some(o) => Some(o) != owner,
        None => false,
    };
    let ours: std::collections::HashSet<String> = doc["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect();
    for key in ["files", "variants"] {
        let kept: Vec<Value> = before
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| other_owner(e))
            // A path this run wrote is this run's now, whoever listed it before.
            .filter(|e| key != "files" || !e["path"].as_str().is_some_and(|p| ours.contains(p)))
            .cloned()
            .collect();
        if kept.is_empty() {
            continue;
        }
        if let Some(list) = doc.get_mut(key).and_then(Value::as_array_mut) {
            let mine = std::mem::take(list);
            list.extend(kept);
            list.extend(mine);
        }
    }
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn log_entry(
    run_id: &str,
    plan: &str,
    at: &str,
    status: RunStatus,
    summary: &Summary,
    duration: Duration,
    stages: &[StageResult],
    errors: &[ErrorEntry],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Execute run {run_id} ({at})\n");
    let _ = writeln!(s, "- Plan: `{plan}`");
    let _ = writeln!(
        s,
        "- Result: **{status}**: {}, in {:.2}s",
        summary.describe(),
        duration.as_secs_f64()
    );
    let created: usize = stages
        .iter()
        .flat_map(|s| &s.files)
        .filter(|f| f.change == Change::Created)
        .count();
    let modified: usize = stages
        .iter()
        .flat_map(|s| &s.files)
        .filter(|f| f.change == Change::Modified)
        .count();
    let _ = writeln!(
        s,
        "- Files: {created} created, {modified} overwritten (recorded in `.state/patch_ledger.jsonl`)\n"
    );
    let _ = writeln!(
        s,
        "| # | Stage | Tool | Status | Duration | Detail |\n|---|---|---|---|---|---|"
    );
    let interesting = |st: &StageResult| !st.status.is_success();
    let show_all = stages.len() <= LOG_TABLE_ROWS;
    let mut hidden = 0;
    for (i, st) in stages.iter().enumerate() {
        if !show_all && !interesting(st) {
            hidden += 1;
            continue;
        }
        let detail = match &st.reason {
            Some(r) => md_cell(r),
            None => format!("{} file(s)", st.files.len()),
        };
        let _ = writeln!(
            s,
            "| {} | `{}` | {} | {} | {:.0} ms | {} |",
            i + 1,
            st.id,
            st.tool,
            st.status.as_str(),
            st.duration_ms,
            detail
        );
    }
    if hidden > 0 {
        let _ = writeln!(
            s,
            "\n({hidden} completed stages not listed; see `.state/execution_results.json`.)"
        );
    }
    if !errors.is_empty() {
        let _ = writeln!(s, "\nErrors:\n");
        for e in errors.iter().take(LOG_TABLE_ROWS) {
            let _ = write!(s, "- `{}` ({}): {}", e.stage, e.kind, md_cell(&e.message));
            if let Some(h) = &e.hint {
                let _ = write!(s, ". Hint: {}", md_cell(h));
            }
            s.push('\n');
        }
    }
    s
}

/// The blocking constraints this run did not prove: violated, or `not_checked`
/// because a check of this run could not look. A constraint no check of the
/// run measures (none names it, or only `execution_required: false` entries)
/// is left to the Reflect phase.
fn unproven_blocking(reports: &[ConstraintReport], outputs: &[ValidationOutput]) -> Vec<Violation> {
    reports
        .iter()
        .filter(|r| r.blocking_unproven(outputs))
        .map(|r| Violation {
            constraint_id: r.id.clone(),
            description: r.description.clone(),
            status: r.status,
            checks: r
                .checks
                .iter()
                .map(|&i| &outputs[i])
                .filter(|o| o.status != ValidationStatus::Passed)
                .map(|o| ViolationCheck {
                    check: o.check.clone(),
                    stage: o.stage.clone(),
                    status: o.status,
                    message: crate::validation::message_of(o).to_string(),
                })
                .collect(),
        })
        .collect()
}
