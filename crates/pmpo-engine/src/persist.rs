//! Writing a run's results: `.state/execution_results.json`,
//! `artifact_manifest.json` and an entry appended to `refinement_log.md`.

use std::fmt::Write as _;
use std::time::Duration;

use pmpo_store::db::{ExecStore, PatchRow};
use pmpo_store::{Durability, LEDGER_FILE, Workspace, now_rfc3339};

use crate::events::StageStatus;
use crate::executor::ms;
use crate::outputs::Change;
use crate::results::{
    ErrorEntry, ExecutionResults, RESULTS_SCHEMA_VERSION, StageResult, Summary, ValidationOutput,
    build_manifest,
};
use crate::{EVENTS_LOG, EngineError, MANIFEST_FILE, REFINEMENT_LOG, RESULTS_FILE, STAGE_LOG_DIR};

pub(crate) struct RunRecord {
    pub notices: Vec<String>,
    pub run_id: String,
    pub started_at: String,
    pub duration: Duration,
    /// Time the tools took to release what they kept for the run (the browser).
    pub teardown: Duration,
    pub status: &'static str,
    pub stages: Vec<StageResult>,
    pub errors: Vec<ErrorEntry>,
    pub validations: Vec<ValidationOutput>,
}

/// Most stage rows written to one refinement log entry; the rest are counted.
const LOG_TABLE_ROWS: usize = 200;

/// The plan's path relative to the workspace when it is inside it (the key runs are found by).
pub(crate) fn plan_rel(ws: &Workspace, plan: &crate::CheckedPlan) -> String {
    let abs = std::fs::canonicalize(&plan.path).unwrap_or_else(|_| plan.path.clone());
    ws.relative(&abs)
        .unwrap_or_else(|| abs.to_string_lossy().into_owned())
}

/// Writes a user-visible file atomically, keeping the old content and recording the change.
pub(crate) fn write_ledgered(
    ws: &Workspace,
    db: &mut dyn ExecStore,
    rel: &str,
    bytes: &[u8],
    run_id: &str,
) -> Result<bool, EngineError> {
    let (before, after, backed_up) = ws.write_backed_up(rel, bytes)?;
    if before.as_ref() == Some(&after) {
        return Ok(false);
    }
    db.add_patch(&PatchRow {
        time: now_rfc3339(),
        run_id: run_id.to_string(),
        writer: "pmpo".into(),
        path: rel.to_string(),
        before_blake3: before.as_ref().map(|d| d.blake3.clone()),
        before_size: before.as_ref().map(|d| d.size as i64),
        after_blake3: Some(after.blake3),
        after_size: Some(after.size as i64),
        backed_up,
    })?;
    Ok(true)
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
) -> Result<ExecutionResults, EngineError> {
    let spec = &plan.doc.specification;
    let finished_at = now_rfc3339();
    let mut summary = Summary {
        total: run.stages.len(),
        ..Default::default()
    };
    for s in &run.stages {
        match s.status {
            StageStatus::Completed => summary.completed += 1,
            StageStatus::Cached => summary.cached += 1,
            StageStatus::Timeout => summary.timeout += 1,
            StageStatus::Skipped => summary.skipped += 1,
            _ => summary.failed += 1,
        }
    }
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
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    let mut changed = patched;
    changed |= write_ledgered(ws, db, MANIFEST_FILE, &manifest_json, &run.run_id)?;

    let mut validation_outputs = run.validations;
    // The validation_plan runs on the files as the stages left them (not after a cancel).
    let skip = (run.status == "cancelled").then_some("not run: the run was cancelled");
    let never = std::sync::atomic::AtomicBool::new(false);
    let evidence =
        crate::validation::Evidence::of_run(&run.run_id, &plan.doc.plan.stages, &run.stages);
    validation_outputs.extend(crate::validation::run_validation_plan(
        ws, &plan.doc, skip, &never, &evidence,
    ));
    let constraint_reports = crate::validation::constraint_reports(spec, &validation_outputs);

    let logs = log_entry(
        &run.run_id,
        plan_rel,
        &finished_at,
        run.status,
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

    let results = ExecutionResults {
        schema_version: RESULTS_SCHEMA_VERSION,
        run_id: run.run_id.clone(),
        plan: plan_rel.to_string(),
        plan_blake3: plan.blake3.clone(),
        artifact_name: spec.artifact_name.clone(),
        status: run.status.to_string(),
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
        errors: run.errors,
        notices: run.notices,
        state_updates: plan.doc.plan.state_updates.clone(),
    };

    let mut log = match std::fs::read(ws.root().join(REFINEMENT_LOG)) {
        Ok(bytes) => bytes,
        Err(_) => b"# Refinement log\n".to_vec(),
    };
    if !log.ends_with(b"\n") {
        log.push(b'\n');
    }
    log.push(b'\n');
    log.extend_from_slice(results.logs.as_bytes());
    changed |= write_ledgered(ws, db, REFINEMENT_LOG, &log, &results.run_id)?;
    db.flush()?;
    if changed || !ws.root().join(LEDGER_FILE).exists() {
        export_ledger(ws, db)?;
    }

    ws.write_atomic_with(RESULTS_FILE, Durability::Durable, |w| {
        serde_json::to_writer_pretty(w, &results).map_err(std::io::Error::from)
    })?;
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
fn log_entry(
    run_id: &str,
    plan: &str,
    at: &str,
    status: &str,
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
        "- Result: **{status}**: {} of {} stages completed ({} reused from earlier runs), {} failed, {} timed out, {} skipped, in {:.2}s",
        summary.completed + summary.cached,
        summary.total,
        summary.cached,
        summary.failed,
        summary.timeout,
        summary.skipped,
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

fn md_cell(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .take(300)
        .collect();
    one_line.replace('|', "\\|")
}
