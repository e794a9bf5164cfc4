//! Writing a run's results: `.state/execution_results.json`,
//! `artifact_manifest.json` and an entry appended to `refinement_log.md`.

use std::fmt::Write as _;
use std::time::Duration;

use pmpo_store::{Durability, Workspace, now_rfc3339};

use crate::events::StageStatus;
use crate::executor::ms;
use crate::outputs::Change;
use crate::results::{
    ErrorEntry, ExecutionResults, RESULTS_SCHEMA_VERSION, StageResult, Summary, ValidationOutput,
    build_manifest,
};
use crate::{EVENTS_LOG, EngineError, MANIFEST_FILE, REFINEMENT_LOG, RESULTS_FILE, STAGE_LOG_DIR};

pub(crate) struct RunRecord {
    pub run_id: String,
    pub started_at: String,
    pub duration: Duration,
    pub status: &'static str,
    pub stages: Vec<StageResult>,
    pub errors: Vec<ErrorEntry>,
    pub validations: Vec<ValidationOutput>,
}

/// Most stage rows written to one refinement log entry; the rest are counted.
const LOG_TABLE_ROWS: usize = 200;

pub(crate) fn finish(
    ws: &Workspace,
    plan: &crate::CheckedPlan,
    run: RunRecord,
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
        .filter(|s| s.status == StageStatus::Completed)
        .flat_map(|s| s.files.iter().cloned())
        .collect();

    // The manifest goes first: the validation_plan may check it.
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    ws.write_recorded(MANIFEST_FILE, &manifest_json, &run.run_id)?;

    let mut validation_outputs = run.validations;
    // The validation_plan runs on the files as the stages left them (not after a cancel).
    let skip = (run.status == "cancelled").then_some("not run: the run was cancelled");
    let never = std::sync::atomic::AtomicBool::new(false);
    validation_outputs.extend(crate::validation::run_validation_plan(
        ws, &plan.doc, skip, &never,
    ));
    let constraint_reports = crate::validation::constraint_reports(spec, &validation_outputs);

    let plan_rel = ws
        .relative(&std::fs::canonicalize(&plan.path).unwrap_or_else(|_| plan.path.clone()))
        .unwrap_or_else(|| plan.display.clone());
    let logs = log_entry(
        &run.run_id,
        &plan_rel,
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
        crate::validation::write_constraints(
            ws,
            spec,
            &constraint_reports,
            &validation_outputs,
            &run.run_id,
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
        plan: plan_rel,
        plan_blake3: plan.blake3.clone(),
        artifact_name: spec.artifact_name.clone(),
        status: run.status.to_string(),
        started_at: run.started_at,
        finished_at,
        duration_ms: ms(run.duration),
        summary,
        stages: run.stages,
        generated_files,
        manifest,
        logs,
        log_files,
        validation_outputs,
        errors: run.errors,
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
    ws.write_recorded(REFINEMENT_LOG, &log, &results.run_id)?;

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
        "- Result: **{status}**: {} of {} stages completed, {} failed, {} timed out, {} skipped, in {:.2}s",
        summary.completed,
        summary.total,
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
    let interesting = |st: &StageResult| st.status != StageStatus::Completed;
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
