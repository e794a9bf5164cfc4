//! Validation: a stage's `validate:` checks (run in VALIDATING), the plan's
//! `validation_plan`, and what they mean for each constraint
//! (satisfied / violated / not_checked), written to `constraints.json` and
//! summarized in `refinement_log.md`.
//!
//! The checks themselves are in `pmpo-checks`; this module runs them, applies
//! the evidence rule ([`Evidence`]: a file that a stage of this run failed,
//! skipped or did not run to produce is not evidence, whatever is on disk) and
//! records their outcomes with the digests of the files they read.

use std::collections::HashMap;

use std::fmt::Write as _;

use std::sync::Arc;

use std::sync::atomic::{AtomicBool, Ordering};

use pmpo_plan::{CheckSpec, PlanDocument, Severity, Specification};

use pmpo_store::{Workspace, now_rfc3339};

use serde::Serialize;

use serde_json::{Map, Value, json};

use pmpo_checks::CheckStatus;

use pmpo_store::states::{FailureKind, ValidationStatus};

mod constraints;
pub(crate) use constraints::md_cell;
mod evidence;

pub use constraints::*;
pub use evidence::*;

/// A check's verdict in the run's vocabulary.
pub fn validation_status(c: CheckStatus) -> ValidationStatus {
    match c {
        CheckStatus::Passed => ValidationStatus::Passed,
        CheckStatus::Failed => ValidationStatus::Failed,
        CheckStatus::NotChecked => ValidationStatus::NotChecked,
    }
}

use crate::events::StageStatus;

use crate::exec::ms;

use crate::results::{StageResult, ValidationOutput};

/// Where constraint statuses are written.
pub const CONSTRAINTS_FILE: &str = "constraints.json";

/// Runs one check under the evidence rule and records the files it read
/// (`read_files` in its evidence: path and blake3, null for a missing file).
fn run_one_check(
    ws: &Workspace,
    name: &str,
    params: &Map<String, Value>,
    cancel: &AtomicBool,
    evidence: &Evidence,
    stage: Option<&str>,
    constraint: Option<&str>,
) -> ValidationOutput {
    let start = std::time::Instant::now();
    let files = pmpo_checks::named_files(ws, name, params);
    type Read = (String, Option<String>, Option<std::time::SystemTime>);
    let digests: Vec<Read> = files
        .into_iter()
        .map(|f| {
            let abs = ws.resolve(&f).ok().filter(|a| a.is_file());
            let d = abs
                .as_ref()
                .and_then(|a| pmpo_store::hash_file(a).ok())
                .map(|d| d.blake3);
            let modified = abs
                .and_then(|a| std::fs::metadata(a).ok())
                .and_then(|m| m.modified().ok());
            (f, d, modified)
        })
        .collect();
    let read: Vec<Value> = digests
        .iter()
        .map(|(f, d, _)| json!({"path": f, "blake3": d}))
        .collect();
    let doubts: Vec<Doubt> = digests
        .iter()
        .filter_map(|(f, d, m)| evidence.doubt(f, d.as_deref(), *m))
        .collect();
    let unproven: Vec<String> = doubts.iter().map(|d| d.reason.clone()).collect();
    // Every doubtful file is this run's (a failed stage wrote it): look, and
    // keep a failure; a pass still proves nothing.
    let look_anyway = !doubts.is_empty() && doubts.iter().all(|d| d.written_by_failed_stage);
    if look_anyway {
        let o = pmpo_checks::run_check_cancellable(ws, name, params, cancel);
        let mut out = output(o, stage, constraint);
        if out.status != ValidationStatus::Failed {
            out.status = ValidationStatus::NotChecked;
            if let Some(m) = out.evidence.as_object_mut() {
                let was = m
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                m.insert(
                    "message".into(),
                    json!(format!("not checked: {} ({was})", unproven.join("; "))),
                );
            }
        }
        if let Some(m) = out.evidence.as_object_mut() {
            m.insert("unproven".into(), json!(unproven));
            m.insert("read_files".into(), Value::Array(read));
        }
        return out;
    }
    if !unproven.is_empty() {
        return ValidationOutput {
            check: pmpo_checks::find(name).map_or(name.to_string(), |c| c.name.to_string()),
            stage: stage.map(str::to_string),
            constraint_id: constraint.map(str::to_string),
            status: ValidationStatus::NotChecked,
            evidence: json!({
                "message": format!("not checked: {}", unproven.join("; ")),
                "unproven": unproven,
                "read_files": read,
            }),
            duration_ms: ms(start.elapsed()),
        };
    }
    let o = pmpo_checks::run_check_cancellable(ws, name, params, cancel);
    let mut out = output(o, stage, constraint);
    if !read.is_empty()
        && let Some(m) = out.evidence.as_object_mut()
    {
        m.insert("read_files".into(), Value::Array(read));
    }
    out
}

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
        status: validation_status(outcome.status),
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
    evidence: &Evidence,
) -> Vec<ValidationOutput> {
    items
        .iter()
        .map(|item| {
            run_one_check(
                ws,
                &item.check,
                &item.inputs,
                cancel,
                evidence,
                Some(stage_id),
                item.constraint_id.as_deref(),
            )
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

/// Runs every `validation_plan` entry on the files as they are now, under the
/// evidence rule of `evidence`. Entries with
/// `execution_required: false` (judged by the Reflect phase) are recorded as `not_checked`;
/// so is everything when `skip` gives a reason (a cancelled run).
pub fn run_validation_plan(
    ws: &Workspace,
    doc: &PlanDocument,
    skip: Option<&str>,
    cancel: &AtomicBool,
    evidence: &Evidence,
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
                    status: ValidationStatus::NotChecked,
                    // Not run on purpose (judged in Reflect, or cancelled): not a check that failed to look.
                    evidence: json!({ "message": r, "not_run": true }),
                    duration_ms: 0.0,
                },
                None => run_one_check(
                    ws,
                    &item.validation_method,
                    &item.inputs,
                    cancel,
                    evidence,
                    None,
                    Some(&item.constraint_id),
                ),
            }
        })
        .collect()
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
    // One writer per workspace, and every write recorded in the store's ledger.
    let holder = pmpo_store::lock::LockHolder {
        pid: std::process::id(),
        run_id: String::new(),
        since: now_rfc3339(),
        command: format!("pmpo validate {}", plan.display),
        host: String::new(),
    };
    let _lock = pmpo_store::lock::acquire(ws, &holder, false)?;
    let mut db = pmpo_store::db::open_store(ws.root())?;
    let spec = &plan.doc.specification;
    // The evidence rule holds here too: a file the last run failed to produce is not evidence.
    let evidence = Evidence::of_last_run(ws, &plan.doc.plan.stages);
    let outputs = run_validation_plan(ws, &plan.doc, None, cancel, &evidence);
    let reports = constraint_reports(spec, &outputs);
    let run_id = format!("validate-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    let doc = constraints_document(spec, &reports, &outputs, &run_id);
    write_constraints(spec, &reports, &outputs, &run_id, &mut |rel, bytes| {
        crate::persist::write_ledgered(ws, db.as_mut(), rel, bytes, &run_id)
    })?;
    let summary = summarize(&reports, &outputs);
    let report = ValidationReport {
        // A blocking constraint that could not be checked is not a success either.
        ok: summary.blocking_violated == 0 && summary.blocking_not_checked == 0,
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

    // Never through a link: its target would be copied into the workspace.
    let mut log = ws
        .read_own(crate::REFINEMENT_LOG)?
        .unwrap_or_else(|| b"# Refinement log\n".to_vec());
    if !log.ends_with(b"\n") {
        log.push(b'\n');
    }
    let entry = format!(
        "\n## Validate {run_id} ({})\n\n- Plan: `{}`\n- Result: **{}**\n{}",
        report.checked_at,
        plan.display,
        if report.ok {
            "passed"
        } else if report.summary.blocking_violated > 0 {
            "blocking constraint violated"
        } else {
            "blocking constraint not checked"
        },
        log_summary(&report.reports, &report.validation_outputs)
    );
    log.extend_from_slice(entry.as_bytes());
    crate::persist::write_ledgered(ws, db.as_mut(), crate::REFINEMENT_LOG, &log, &run_id)?;
    db.flush()?;
    crate::persist::export_ledger(ws, db.as_mut())?;
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
    evidence: Evidence,
) -> (Vec<ValidationOutput>, Option<(FailureKind, String)>) {
    let flag = Arc::new(AtomicBool::new(cancel.is_cancelled()));
    let (ws2, id, items, flag2) = (
        ws.clone(),
        stage.id.clone(),
        stage.validate.clone(),
        flag.clone(),
    );
    let mut handle =
        tokio::task::spawn_blocking(move || run_stage_checks(&ws2, &id, &items, &flag2, &evidence));
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
                    FailureKind::ValidationFailed,
                    format!("the stage's checks could not run: {e}"),
                )),
            );
        }
    };
    let failed: Vec<String> = outputs
        .iter()
        .filter(|o| o.status != ValidationStatus::Passed)
        .map(|o| {
            let verb = if o.status == ValidationStatus::NotChecked {
                "could not check"
            } else {
                "failed"
            };
            format!("check `{}` {verb}: {}", o.check, message_of(o))
        })
        .collect();
    let kind = if cancel.is_cancelled() {
        FailureKind::Cancelled
    } else {
        FailureKind::ValidationFailed
    };
    let failure = (!failed.is_empty()).then(|| (kind, failed.join("; ")));
    (outputs, failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_outputs_own_files() {
        assert!(owns("dist/x.txt", "dist/x.txt"));
        assert!(owns("./dist/", "dist/previews/p/a.png"));
        assert!(!owns("dist/x", "dist/x.txt"));
        assert!(owns("dist/*.png", "dist/a.png"));
        assert!(!owns("dist/*.png", "dist/sub/a.png"));
        assert!(owns("dist/**/*.png", "dist/sub/a.png"));
        let stages: Vec<pmpo_plan::Stage> = [
            vec!["dist/x.txt"],
            vec!["dist/"],
            vec!["dist/*.png", "out/a"],
            vec!["dist/[oops"],
        ]
        .into_iter()
        .enumerate()
        .map(|(i, outputs)| {
            serde_json::from_value(json!({
                "id": format!("s{i}"), "with": {"command": ["true"]}, "outputs": outputs
            }))
            .unwrap()
        })
        .collect();
        let index = OutputIndex::new(&stages);
        let sorted = |mut v: Vec<usize>| {
            v.sort_unstable();
            v
        };
        assert_eq!(sorted(index.owners("dist/x.txt")), [0, 1]);
        assert_eq!(sorted(index.owners("dist/a.png")), [1, 2]);
        assert_eq!(sorted(index.owners("dist/sub/a.png")), [1]);
        assert_eq!(sorted(index.owners("out/a/b/c")), [2]);
        assert!(index.owners("other.txt").is_empty());
    }

    fn spec() -> Specification {
        serde_json::from_value(json!({
            "artifact_name": "t", "artifact_type": "logo",
            "constraints": [
                {"id": "a", "description": "d", "severity": "blocking"},
                {"id": "b", "description": "d", "severity": "high"},
                {"id": "c", "description": "d", "severity": "low"},
                {"id": "d", "description": "d", "severity": "blocking"},
                {"id": "e", "description": "d", "severity": "blocking"}
            ]
        }))
        .unwrap()
    }

    fn out(constraint: &str, status: &str) -> ValidationOutput {
        ValidationOutput {
            check: "x".into(),
            stage: None,
            constraint_id: Some(constraint.into()),
            status: status.parse().unwrap(),
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
            // One check that could not look: the constraint is not satisfied.
            out("e", "passed"),
            out("e", "not_checked"),
        ];
        let r = constraint_reports(&spec(), &outputs);
        let st: Vec<&str> = r.iter().map(|c| c.status.as_str()).collect();
        assert_eq!(
            st,
            [
                "satisfied",
                "violated",
                "not_checked",
                "violated",
                "not_checked"
            ]
        );
        assert_eq!(r[1].checks, [2, 3]);
        let s = summarize(&r, &outputs);
        assert_eq!(
            (s.satisfied, s.violated, s.not_checked, s.blocking_violated),
            (1, 2, 2, 1)
        );
        // `e` is blocking and one of its checks could not look.
        assert_eq!(s.blocking_not_checked, 1);
        let log = log_summary(&r, &outputs);
        assert!(
            log.contains(
                "| `d` | blocking | violated | x failed: failed; x not_checked: not_checked |"
            ),
            "{log}"
        );
        let doc = constraints_document(&spec(), &r, &outputs, "run");
        assert_eq!(doc["constraints"][1]["checks"][1]["status"], "failed");
        assert_eq!(doc["constraints"][1]["run_id"], "run");
        assert_eq!(doc["summary"]["blocking_violated"], 1);
    }
}
