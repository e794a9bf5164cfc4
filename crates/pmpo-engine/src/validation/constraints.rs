//! What the checks mean for each constraint (satisfied / violated /
//! not_checked), written to `constraints.json` and summarized in
//! `refinement_log.md`.

use super::*;

/// A constraint's status: after validation it is satisfied, violated or not
/// checked (`Pending` is for constraints not judged yet, never written here).
pub use pmpo_store::states::ConstraintStatus;

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

/// Statuses of every constraint of the specification, from the validation
/// outputs (an unknown status string counts as not checked, never as a pass).
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
            // Satisfied only when every check that names it ran and passed; a
            // failure violates it; otherwise one check that could not look
            // (or no check at all) leaves it not checked.
            let statuses: Vec<ValidationStatus> =
                checks.iter().map(|&i| outputs[i].status).collect();
            let status = if statuses.contains(&ValidationStatus::Failed) {
                ConstraintStatus::Violated
            } else if statuses.is_empty() || statuses.iter().any(|s| *s != ValidationStatus::Passed)
            {
                ConstraintStatus::NotChecked
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
    /// Blocking constraints left not checked because a check that ran could
    /// not look (no diagnostics, a file too large, an unproven file): not
    /// satisfied, so not a success either. Constraints whose checks were not
    /// run on purpose (`execution_required: false`, a cancel) are not counted.
    pub blocking_not_checked: usize,
}

impl ConstraintReport {
    /// Whether a check that ran could not look (no diagnostics, a file too large,
    /// an unproven file), as opposed to checks not run on purpose
    /// (`execution_required: false`, a cancel) or no check at all.
    pub fn could_not_look(&self, outputs: &[ValidationOutput]) -> bool {
        self.checks.iter().any(|&i| {
            outputs.get(i).is_some_and(|o| {
                o.status == ValidationStatus::NotChecked
                    && o.evidence.get("not_run") != Some(&Value::Bool(true))
            })
        })
    }

    /// A blocking constraint this run did not prove: violated, or not checked
    /// because a check could not look. (One no check measured is left to Reflect.)
    pub fn blocking_unproven(&self, outputs: &[ValidationOutput]) -> bool {
        self.severity == Severity::Blocking
            && match self.status {
                // Validation never leaves a constraint pending.
                ConstraintStatus::Satisfied | ConstraintStatus::Pending => false,
                ConstraintStatus::Violated => true,
                ConstraintStatus::NotChecked => self.could_not_look(outputs),
            }
    }
}

/// Counts by status; `outputs` are the validation outputs the reports index.
pub fn summarize(reports: &[ConstraintReport], outputs: &[ValidationOutput]) -> ConstraintSummary {
    let mut s = ConstraintSummary {
        total: reports.len(),
        ..Default::default()
    };
    for r in reports {
        match r.status {
            ConstraintStatus::Satisfied => s.satisfied += 1,
            ConstraintStatus::Pending => {}
            ConstraintStatus::NotChecked => {
                s.not_checked += 1;
                if r.severity == Severity::Blocking && r.could_not_look(outputs) {
                    s.blocking_not_checked += 1;
                }
            }
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
                        let mut c = json!({
                            "check": out.check,
                            "stage": out.stage,
                            "status": out.status,
                            "message": message_of(out),
                            "duration_ms": out.duration_ms,
                        });
                        // The files the check read, with their digests: the evidence.
                        if let (Some(files), Some(m)) =
                            (out.evidence.get("read_files"), c.as_object_mut())
                        {
                            m.insert("files".into(), files.clone());
                        }
                        c
                    })
                    .collect();
                // The run whose checks decided this status.
                o.insert("run_id".into(), json!(run_id));
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
        "summary": summarize(reports, outputs),
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
    let sum = summarize(reports, outputs);
    let passed = outputs
        .iter()
        .filter(|o| o.status == ValidationStatus::Passed)
        .count();
    let failed = outputs
        .iter()
        .filter(|o| o.status == ValidationStatus::Failed)
        .count();
    let unseen = outputs.len() - passed - failed;
    let _ = writeln!(
        s,
        "\nValidation: {passed} check(s) passed, {failed} failed, {unseen} not checked. Constraints: {} satisfied, {} violated ({} blocking), {} not checked ({} blocking) (details in `constraints.json`).\n",
        sum.satisfied,
        sum.violated,
        sum.blocking_violated,
        sum.not_checked,
        sum.blocking_not_checked
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

/// Text for one cell of a Markdown table: one line, at most 300 characters,
/// `|` escaped.
pub(crate) fn md_cell(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .take(300)
        .collect();
    one_line.replace('|', "\\|")
}
