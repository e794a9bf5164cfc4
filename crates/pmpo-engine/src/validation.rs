//! Validation: a stage's `validate:` checks (run in VALIDATING), the plan's
//! `validation_plan`, and what they mean for each constraint
//! (satisfied / violated / not_checked), written to `constraints.json` and
//! summarized in `refinement_log.md`.
//!
//! The checks themselves are in `pmpo-checks`; this module only runs them and
//! records their outcomes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pmpo_plan::{CheckSpec, PlanDocument, Severity, Specification};
use pmpo_store::{Workspace, now_rfc3339};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::executor::ms;
use crate::results::ValidationOutput;

/// Where constraint statuses are written.
pub const CONSTRAINTS_FILE: &str = "constraints.json";

fn output(
    outcome: pmpo_checks::CheckOutcome,
    stage: Option<&str>,
    constraint: Option<&str>,
) -> ValidationOutput {
    let mut evidence = Map::new();
    evidence.insert("message".into(), Value::String(outcome.message));
    match outcome.evidence {
        Value::Object(m) => evidence.extend(m),
        Value::Null => {}
        other => {
            evidence.insert("detail".into(), other);
        }
    }
    ValidationOutput {
        check: outcome.check,
        stage: stage.map(str::to_string),
        constraint_id: constraint.map(str::to_string),
        status: if outcome.passed { "passed" } else { "failed" }.into(),
        evidence: Value::Object(evidence),
        duration_ms: ms(outcome.duration),
    }
}

/// Runs a stage's `validate:` items in order (all of them, so the evidence is
/// complete); once `cancel` is set, running checks stop and fail.
pub fn run_stage_checks(
    ws: &Workspace,
    stage_id: &str,
    items: &[CheckSpec],
    cancel: &AtomicBool,
) -> Vec<ValidationOutput> {
    items
        .iter()
        .map(|item| {
            let o = pmpo_checks::run_check_cancellable(ws, &item.check, &item.inputs, cancel);
            output(o, Some(stage_id), item.constraint_id.as_deref())
        })
        .collect()
}

/// The message of a validation output (what the check found).
pub fn message_of(v: &ValidationOutput) -> &str {
    v.evidence
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Runs every `validation_plan` entry on the files as they are now. Entries with
/// `execution_required: false` (judged by the Reflect phase) are recorded as `not_checked`;
/// so is everything when `skip` gives a reason (a cancelled run).
pub fn run_validation_plan(
    ws: &Workspace,
    doc: &PlanDocument,
    skip: Option<&str>,
    cancel: &AtomicBool,
) -> Vec<ValidationOutput> {
    doc.plan
        .validation_plan
        .iter()
        .map(|item| {
            let reason = match skip {
                Some(r) => Some(r.to_string()),
                None if cancel.load(Ordering::Relaxed) => {
                    Some("not run: validation was cancelled".to_string())
                }
                None if !item.execution_required => Some(
                    "not executed: `execution_required: false` (judged in the Reflect phase)"
                        .to_string(),
                ),
                None => None,
            };
            match reason {
                Some(r) => ValidationOutput {
                    check: pmpo_checks::find(&item.validation_method)
                        .map_or(item.validation_method.clone(), |c| c.name.to_string()),
                    stage: None,
                    constraint_id: Some(item.constraint_id.clone()),
                    status: "not_checked".into(),
                    evidence: json!({ "message": r }),
                    duration_ms: 0.0,
                },
                None => {
                    let o = pmpo_checks::run_check_cancellable(
                        ws,
                        &item.validation_method,
                        &item.inputs,
                        cancel,
                    );
                    output(o, None, Some(&item.constraint_id))
                }
            }
        })
        .collect()
}

/// A constraint's status after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintStatus {
    Satisfied,
    Violated,
    NotChecked,
}

impl ConstraintStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConstraintStatus::Satisfied => "satisfied",
            ConstraintStatus::Violated => "violated",
            ConstraintStatus::NotChecked => "not_checked",
        }
    }
}

/// One constraint with its status and the checks that decided it.
#[derive(Debug, Clone, Serialize)]
pub struct ConstraintReport {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    pub status: ConstraintStatus,
    /// Indexes into the validation outputs that name this constraint.
    #[serde(skip)]
    pub checks: Vec<usize>,
}

/// Statuses of every constraint of the specification, from the validation outputs.
pub fn constraint_reports(
    spec: &Specification,
    outputs: &[ValidationOutput],
) -> Vec<ConstraintReport> {
    spec.constraints
        .iter()
        .map(|c| {
            let checks: Vec<usize> = outputs
                .iter()
                .enumerate()
                .filter(|(_, o)| o.constraint_id.as_deref() == Some(c.id.as_str()))
                .map(|(i, _)| i)
                .collect();
            let ran: Vec<&ValidationOutput> = checks
                .iter()
                .map(|&i| &outputs[i])
                .filter(|o| o.status != "not_checked")
                .collect();
            let status = if ran.is_empty() {
                ConstraintStatus::NotChecked
            } else if ran.iter().any(|o| o.status != "passed") {
                ConstraintStatus::Violated
            } else {
                ConstraintStatus::Satisfied
            };
            ConstraintReport {
                id: c.id.clone(),
                description: c.description.clone(),
                severity: c.severity,
                status,
                checks,
            }
        })
        .collect()
}

/// Counts by status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConstraintSummary {
    pub total: usize,
    pub satisfied: usize,
    pub violated: usize,
    pub not_checked: usize,
    /// Violated constraints with severity `blocking`.
    pub blocking_violated: usize,
}

pub fn summarize(reports: &[ConstraintReport]) -> ConstraintSummary {
    let mut s = ConstraintSummary {
        total: reports.len(),
        ..Default::default()
    };
    for r in reports {
        match r.status {
            ConstraintStatus::Satisfied => s.satisfied += 1,
            ConstraintStatus::NotChecked => s.not_checked += 1,
            ConstraintStatus::Violated => {
                s.violated += 1;
                if r.severity == Severity::Blocking {
                    s.blocking_violated += 1;
                }
            }
        }
    }
    s
}

/// `constraints.json`: the specification's constraints (in the reference
/// constraints layout) with each one's status, severity and checks.
pub fn constraints_document(
    spec: &Specification,
    reports: &[ConstraintReport],
    outputs: &[ValidationOutput],
    run_id: &str,
) -> Value {
    let constraints: Vec<Value> = spec
        .constraints
        .iter()
        .zip(reports)
        .map(|(c, r)| {
            let mut v = serde_json::to_value(c).unwrap_or_else(|_| json!({"id": c.id}));
            if let Some(o) = v.as_object_mut() {
                o.insert("status".into(), json!(r.status));
                let checks: Vec<Value> = r
                    .checks
                    .iter()
                    .map(|&i| {
                        let out = &outputs[i];
                        json!({
                            "check": out.check,
                            "stage": out.stage,
                            "status": out.status,
                            "message": message_of(out),
                            "duration_ms": out.duration_ms,
                        })
                    })
                    .collect();
                o.insert("checks".into(), Value::Array(checks));
            }
            v
        })
        .collect();
    json!({
        "artifact_type": spec.artifact_type,
        "artifact_name": spec.artifact_name,
        "run_id": run_id,
        "checked_at": now_rfc3339(),
        "summary": summarize(reports),
        "constraints": constraints,
    })
}

/// Writes a workspace file through the store (returns whether it changed).
pub type WriteFile<'a> = &'a mut dyn FnMut(&str, &[u8]) -> Result<bool, crate::EngineError>;

/// Writes `constraints.json` (atomically, recorded in the ledger).
pub fn write_constraints(
    spec: &Specification,
    reports: &[ConstraintReport],
    outputs: &[ValidationOutput],
    run_id: &str,
    write: WriteFile<'_>,
) -> Result<bool, crate::EngineError> {
    let doc = constraints_document(spec, reports, outputs, run_id);
    let bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    write(CONSTRAINTS_FILE, &bytes)
}

/// The refinement log's summary of constraints and checks.
pub fn log_summary(reports: &[ConstraintReport], outputs: &[ValidationOutput]) -> String {
    let mut s = String::new();
    let sum = summarize(reports);
    let passed = outputs.iter().filter(|o| o.status == "passed").count();
    let failed = outputs.iter().filter(|o| o.status == "failed").count();
    let _ = writeln!(
        s,
        "\nValidation: {passed} check(s) passed, {failed} failed. Constraints: {} satisfied, {} violated ({} blocking), {} not checked (details in `constraints.json`).\n",
        sum.satisfied, sum.violated, sum.blocking_violated, sum.not_checked
    );
    if reports.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "| Constraint | Severity | Status | Evidence |\n|---|---|---|---|"
    );
    for r in reports.iter().take(200) {
        let evidence: Vec<String> = r
            .checks
            .iter()
            .map(|&i| &outputs[i])
            .map(|o| format!("{} {}: {}", o.check, o.status, message_of(o)))
            .collect();
        let evidence = if evidence.is_empty() {
            "no check".to_string()
        } else {
            evidence.join("; ")
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} |",
            r.id,
            r.severity,
            r.status.as_str(),
            md_cell(&evidence)
        );
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

/// What `pmpo validate` found.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    pub ok: bool,
    pub plan: String,
    pub checked_at: String,
    pub summary: ConstraintSummary,
    pub constraints: Vec<Value>,
    pub validation_outputs: Vec<ValidationOutput>,
    #[serde(skip)]
    pub reports: Vec<ConstraintReport>,
}

/// Where `pmpo validate` keeps its last results.
pub const VALIDATION_RESULTS_FILE: &str = ".state/validation_results.json";

/// Runs the plan's `validation_plan` on the workspace as it is, writes
/// `constraints.json`, `.state/validation_results.json` and a refinement log entry.
pub fn validate_workspace(
    ws: &Workspace,
    plan: &crate::CheckedPlan,
    cancel: &AtomicBool,
) -> Result<ValidationReport, crate::EngineError> {
    use pmpo_store::db::ExecStore;
    // One writer per workspace, and every write recorded in the store's ledger.
    let holder = pmpo_store::lock::LockHolder {
        pid: std::process::id(),
        run_id: String::new(),
        since: now_rfc3339(),
        command: format!("pmpo validate {}", plan.display),
    };
    let _lock = pmpo_store::lock::acquire(ws, &holder, false).map_err(|e| match e {
        pmpo_store::lock::LockError::Busy(h) => crate::EngineError::Busy(h),
        pmpo_store::lock::LockError::Store(s) => crate::EngineError::Store(s),
    })?;
    let mut db = pmpo_store::db::SqliteStore::open(ws.root())?;
    let spec = &plan.doc.specification;
    let outputs = run_validation_plan(ws, &plan.doc, None, cancel);
    let reports = constraint_reports(spec, &outputs);
    let run_id = format!("validate-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    let doc = constraints_document(spec, &reports, &outputs, &run_id);
    write_constraints(spec, &reports, &outputs, &run_id, &mut |rel, bytes| {
        crate::persist::write_ledgered(ws, &mut db, rel, bytes, &run_id)
    })?;
    let summary = summarize(&reports);
    let report = ValidationReport {
        ok: summary.blocking_violated == 0,
        plan: plan.display.clone(),
        checked_at: now_rfc3339(),
        summary,
        constraints: doc
            .get("constraints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        validation_outputs: outputs,
        reports,
    };
    let bytes = serde_json::to_vec_pretty(&report).unwrap_or_default();
    ws.write_atomic(
        VALIDATION_RESULTS_FILE,
        &bytes,
        pmpo_store::Durability::Durable,
    )?;

    let mut log = match std::fs::read(ws.root().join(crate::REFINEMENT_LOG)) {
        Ok(b) => b,
        Err(_) => b"# Refinement log\n".to_vec(),
    };
    if !log.ends_with(b"\n") {
        log.push(b'\n');
    }
    let entry = format!(
        "\n## Validate {run_id} ({})\n\n- Plan: `{}`\n- Result: **{}**\n{}",
        report.checked_at,
        plan.display,
        if report.ok {
            "passed"
        } else {
            "blocking constraint violated"
        },
        log_summary(&report.reports, &report.validation_outputs)
    );
    log.extend_from_slice(entry.as_bytes());
    crate::persist::write_ledgered(ws, &mut db, crate::REFINEMENT_LOG, &log, &run_id)?;
    db.flush()?;
    crate::persist::export_ledger(ws, &mut db)?;
    Ok(report)
}

/// Runs a stage's `validate:` items off the async threads; returns the outputs
/// and, when a check failed, the failure's kind (`validation_failed`, or
/// `cancelled`) and message. Cancelling the run
/// stops the running check (a command's process group is killed).
pub(crate) async fn stage_checks(
    ws: &Workspace,
    stage: &pmpo_plan::Stage,
    cancel: &tokio_util::sync::CancellationToken,
) -> (Vec<ValidationOutput>, Option<(&'static str, String)>) {
    let flag = Arc::new(AtomicBool::new(cancel.is_cancelled()));
    let (ws2, id, items, flag2) = (
        ws.clone(),
        stage.id.clone(),
        stage.validate.clone(),
        flag.clone(),
    );
    let mut handle =
        tokio::task::spawn_blocking(move || run_stage_checks(&ws2, &id, &items, &flag2));
    let joined = tokio::select! {
        r = &mut handle => r,
        _ = cancel.cancelled() => {
            flag.store(true, Ordering::Relaxed);
            handle.await
        }
    };
    let outputs = match joined {
        Ok(o) => o,
        Err(e) => {
            return (
                Vec::new(),
                Some((
                    "validation_failed",
                    format!("the stage's checks could not run: {e}"),
                )),
            );
        }
    };
    let failed: Vec<String> = outputs
        .iter()
        .filter(|o| o.status != "passed")
        .map(|o| format!("check `{}` failed: {}", o.check, message_of(o)))
        .collect();
    let kind = if cancel.is_cancelled() {
        "cancelled"
    } else {
        "validation_failed"
    };
    let failure = (!failed.is_empty()).then(|| (kind, failed.join("; ")));
    (outputs, failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Specification {
        serde_json::from_value(json!({
            "artifact_name": "t", "artifact_type": "logo",
            "constraints": [
                {"id": "a", "description": "d", "severity": "blocking"},
                {"id": "b", "description": "d", "severity": "high"},
                {"id": "c", "description": "d", "severity": "low"},
                {"id": "d", "description": "d", "severity": "blocking"}
            ]
        }))
        .unwrap()
    }

    fn out(constraint: &str, status: &str) -> ValidationOutput {
        ValidationOutput {
            check: "x".into(),
            stage: None,
            constraint_id: Some(constraint.into()),
            status: status.into(),
            evidence: json!({"message": status}),
            duration_ms: 0.0,
        }
    }

    #[test]
    fn statuses_follow_the_executed_checks() {
        let outputs = vec![
            out("a", "passed"),
            out("a", "passed"),
            out("b", "passed"),
            out("b", "failed"),
            out("c", "not_checked"),
            out("d", "failed"),
            out("d", "not_checked"),
        ];
        let r = constraint_reports(&spec(), &outputs);
        let st: Vec<&str> = r.iter().map(|c| c.status.as_str()).collect();
        assert_eq!(st, ["satisfied", "violated", "not_checked", "violated"]);
        assert_eq!(r[1].checks, [2, 3]);
        let s = summarize(&r);
        assert_eq!(
            (s.satisfied, s.violated, s.not_checked, s.blocking_violated),
            (1, 2, 1, 1)
        );
        let log = log_summary(&r, &outputs);
        assert!(
            log.contains(
                "| `d` | blocking | violated | x failed: failed; x not_checked: not_checked |"
            ),
            "{log}"
        );
        let doc = constraints_document(&spec(), &r, &outputs, "run");
        assert_eq!(doc["constraints"][1]["checks"][1]["status"], "failed");
        assert_eq!(doc["summary"]["blocking_violated"], 1);
    }
}
