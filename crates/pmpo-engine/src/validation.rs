//! Validation: a stage's `validate:` checks (run in VALIDATING), the plan's
//! `validation_plan`, and what they mean for each constraint
//! (satisfied / violated / not_checked), written to `constraints.json` and
//! summarized in `refinement_log.md`.
//!
//! The checks themselves are in `pmpo-checks`; this module runs them, applies
//! the evidence rule ([`Evidence`]: a file that a stage of this run failed,
//! skipped or did not run to produce is not evidence, whatever is on disk) and
//! records their outcomes with the digests of the files they read.

use crate::kind::ErrorKind;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pmpo_plan::{CheckSpec, PlanDocument, Severity, Specification};
use pmpo_store::{Workspace, now_rfc3339};
use serde::Serialize;
use serde_json::{Map, Value, json};

use pmpo_checks::CheckStatus;

use crate::events::StageStatus;
use crate::exec::ms;
use crate::results::{StageResult, ValidationOutput};

/// Where constraint statuses are written.
pub const CONSTRAINTS_FILE: &str = "constraints.json";

/// What this run proved about the workspace's files: the evidence rule.
///
/// A file under the declared `outputs:` of a stage that FAILED, TIMED OUT, was
/// SKIPPED or did not run in this run is unproven (a copy left by an earlier
/// run is not evidence), unless a stage that succeeded in this run produced or
/// verified it with the digest it has now. A check whose file parameters name
/// an unproven file is `not_checked`, with the file, the stage and its status.
/// One exception keeps failures visible: a file that a stage which FAILED in
/// this run wrote during its attempt (modified after the stage started) is
/// checked, and a failure found in it stands; a pass on it is still
/// `not_checked`, since the stage that made it failed.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Files produced or verified by stages that succeeded, with their digests.
    proven: HashMap<String, String>,
    /// Stages that did not succeed.
    unproven: Vec<Unproven>,
}

#[derive(Debug, Clone)]
struct Unproven {
    stage: String,
    /// What happened to it ("FAILED in run R").
    what: String,
    outputs: Vec<OutputPattern>,
    /// For a stage that FAILED in this run: when it started.
    failed_since: Option<std::time::SystemTime>,
}

/// How a stage ended, as the evidence rule needs it.
pub struct Seen {
    pub status: Option<StageStatus>,
    /// Files under its declared outputs, with their digests (for a success).
    pub files: Vec<(String, String)>,
    /// When it started in this run (RFC 3339), if it did. A file modified
    /// since then was written by it; misjudging a file written just before
    /// can only keep a failure found in it, never make it pass.
    pub started_at: Option<String>,
}

/// File times come from the kernel's coarse clock, which can lag a fine
/// reading taken a moment earlier by up to one tick (10 ms at 100 Hz).
const COARSE_CLOCK: std::time::Duration = std::time::Duration::from_millis(10);

/// Why a file is not evidence, and whether this run's failed stage wrote it.
struct Doubt {
    reason: String,
    written_by_failed_stage: bool,
}

fn parse_time(rfc3339: &str) -> Option<std::time::SystemTime> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(std::time::SystemTime::from)
}

fn what_happened(status: Option<StageStatus>, run_id: &str) -> String {
    match status {
        None | Some(StageStatus::Pending) => format!("did not run in run {run_id}"),
        Some(StageStatus::AwaitingIntervention) => {
            format!("is awaiting a decision in run {run_id}")
        }
        Some(s) => format!("{} in run {run_id}", s.as_str()),
    }
}

impl Evidence {
    /// No run to judge by (`pmpo validate` on the workspace as it is).
    pub fn none() -> Evidence {
        Evidence::default()
    }

    /// At the end of a run, from every stage's result.
    pub fn of_run(run_id: &str, stages: &[pmpo_plan::Stage], results: &[StageResult]) -> Evidence {
        let by_id: HashMap<&str, &StageResult> =
            results.iter().map(|r| (r.id.as_str(), r)).collect();
        Evidence::build(run_id, stages, None, |id| {
            by_id.get(id).map(|r| Seen {
                status: Some(r.status),
                files: r
                    .files
                    .iter()
                    .map(|f| (f.path.clone(), f.blake3.clone()))
                    .collect(),
                started_at: r.started_at.clone(),
            })
        })
    }

    /// For `pmpo validate`, which runs no stage: the last run's results
    /// (`.state/execution_results.json`) say which files it proved. Stages
    /// the last run does not list are left out (no claim either way); no
    /// results file, no rule.
    pub fn of_last_run(ws: &Workspace, stages: &[pmpo_plan::Stage]) -> Evidence {
        let Some(last) = ws
            .read_own(crate::RESULTS_FILE)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            return Evidence::none();
        };
        let run_id = last["run_id"].as_str().unwrap_or("?").to_string();
        let listed: HashMap<&str, &Value> = last["stages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| Some((s["id"].as_str()?, s)))
                    .collect()
            })
            .unwrap_or_default();
        let known: Vec<pmpo_plan::Stage> = stages
            .iter()
            .filter(|s| listed.contains_key(s.id.as_str()))
            .cloned()
            .collect();
        Evidence::build(&run_id, &known, None, |id| {
            let s = listed.get(id)?;
            let status = s["status"].as_str().and_then(StageStatus::parse);
            let files = s["files"]
                .as_array()
                .map(|fs| {
                    fs.iter()
                        .filter_map(|f| {
                            Some((
                                f["path"].as_str()?.to_string(),
                                f["blake3"].as_str()?.to_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(Seen {
                status,
                files,
                started_at: s["started_at"].as_str().map(str::to_string),
            })
        })
    }

    /// For a stage's `validate:` checks, while the run goes on: stages that
    /// have not finished yet did not run; `own` are the files the validating
    /// stage itself just produced. Only the stages whose declared outputs
    /// cover a file the checks name are looked at, so the cost per stage does
    /// not grow with the plan.
    pub fn for_stage_checks(
        ws: &Workspace,
        run_id: &str,
        stages: &[pmpo_plan::Stage],
        index: &OutputIndex,
        current: &pmpo_plan::Stage,
        own: &[crate::outputs::GeneratedFile],
        done: impl Fn(&str) -> Option<Seen>,
    ) -> Evidence {
        let named: Vec<String> = current
            .validate
            .iter()
            .flat_map(|item| pmpo_checks::named_files(ws, &item.check, &item.inputs))
            .collect();
        if named.is_empty() {
            return Evidence::default();
        }
        let mut owners: Vec<usize> = named.iter().flat_map(|f| index.owners(f)).collect();
        owners.sort_unstable();
        owners.dedup();
        let relevant: Vec<pmpo_plan::Stage> = owners
            .into_iter()
            .filter_map(|i| stages.get(i))
            .filter(|s| s.id != current.id)
            .cloned()
            .collect();
        let mut e = Evidence::build(run_id, &relevant, None, done);
        e.proven.retain(|p, _| named.contains(p));
        e.proven.extend(
            own.iter()
                .filter(|f| named.contains(&f.path))
                .map(|f| (f.path.clone(), f.blake3.clone())),
        );
        e
    }

    fn build(
        run_id: &str,
        stages: &[pmpo_plan::Stage],
        skip: Option<&str>,
        status_of: impl Fn(&str) -> Option<Seen>,
    ) -> Evidence {
        let mut e = Evidence::default();
        for stage in stages.iter().filter(|s| Some(s.id.as_str()) != skip) {
            match status_of(&stage.id) {
                Some(seen) if seen.status.is_some_and(StageStatus::is_success) => {
                    e.proven.extend(seen.files)
                }
                other => {
                    if !stage.outputs.is_empty() {
                        let status = other.as_ref().and_then(|s| s.status);
                        let failed_since = other
                            .as_ref()
                            .filter(|s| s.status == Some(StageStatus::Failed))
                            .and_then(|s| s.started_at.as_deref())
                            .and_then(parse_time)
                            .map(|t| t - COARSE_CLOCK);
                        e.unproven.push(Unproven {
                            stage: stage.id.clone(),
                            what: what_happened(status, run_id),
                            outputs: stage
                                .outputs
                                .iter()
                                .map(|o| OutputPattern::new(o))
                                .collect(),
                            failed_since,
                        });
                    }
                }
            }
        }
        e
    }

    /// Why `file` (with its current digest and modification time, if it
    /// exists) is not evidence.
    fn doubt(
        &self,
        file: &str,
        digest: Option<&str>,
        modified: Option<std::time::SystemTime>,
    ) -> Option<Doubt> {
        if digest.is_some() && self.proven.get(file).map(String::as_str) == digest {
            return None;
        }
        let u = self
            .unproven
            .iter()
            .find(|u| u.outputs.iter().any(|o| o.covers(file)))?;
        let written_by_failed_stage = matches!(
            (u.failed_since, modified),
            (Some(since), Some(m)) if m >= since
        );
        let note = match (digest.is_some(), written_by_failed_stage) {
            (false, _) => "",
            (true, true) => " (written by that failed stage)",
            (true, false) => " (the file on disk is not from this run's work)",
        };
        Some(Doubt {
            reason: format!("`{file}` is unproven: stage `{}` {}{note}", u.stage, u.what),
            written_by_failed_stage,
        })
    }
}

/// A declared output (a file, a directory or a glob), compiled once.
#[derive(Debug, Clone)]
enum OutputPattern {
    /// A file, or a directory that covers everything under it.
    Path(String),
    Glob(globset::GlobMatcher),
    /// A glob that does not compile covers nothing (`pmpo check` reports it).
    Nothing,
}

impl OutputPattern {
    fn new(pattern: &str) -> OutputPattern {
        let p = pattern.replace('\\', "/");
        let p = p.trim_start_matches("./").trim_end_matches('/');
        if p.contains(['*', '?', '[', '{']) {
            globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_or(OutputPattern::Nothing, |g| {
                    OutputPattern::Glob(g.compile_matcher())
                })
        } else {
            OutputPattern::Path(p.to_string())
        }
    }

    /// Whether it covers `file`.
    fn covers(&self, file: &str) -> bool {
        match self {
            OutputPattern::Path(p) => {
                file == p
                    || file
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            OutputPattern::Glob(g) => g.is_match(file),
            OutputPattern::Nothing => false,
        }
    }
}

/// Whether a declared output (a file, a directory or a glob) covers `file`.
#[cfg(test)]
fn owns(pattern: &str, file: &str) -> bool {
    OutputPattern::new(pattern).covers(file)
}

/// Which stages declare outputs that cover a file, for a whole plan: built
/// once per run, so the evidence rule's cost per check does not grow with
/// the number of stages (a path is looked up with each of its parent
/// directories; only glob outputs are matched one by one).
pub struct OutputIndex {
    paths: HashMap<String, Vec<usize>>,
    globs: Vec<(OutputPattern, usize)>,
}

impl OutputIndex {
    pub fn new(stages: &[pmpo_plan::Stage]) -> OutputIndex {
        let mut index = OutputIndex {
            paths: HashMap::new(),
            globs: Vec::new(),
        };
        for (i, stage) in stages.iter().enumerate() {
            for o in &stage.outputs {
                match OutputPattern::new(o) {
                    OutputPattern::Path(p) => index.paths.entry(p).or_default().push(i),
                    g @ OutputPattern::Glob(_) => index.globs.push((g, i)),
                    OutputPattern::Nothing => {}
                }
            }
        }
        index
    }

    /// The stages (by index in the plan) whose declared outputs cover `file`.
    pub fn owners(&self, file: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let mut prefix = file;
        loop {
            if let Some(ids) = self.paths.get(prefix) {
                out.extend(ids);
            }
            match prefix.rfind('/') {
                Some(cut) => prefix = &prefix[..cut],
                None => break,
            }
        }
        out.extend(
            self.globs
                .iter()
                .filter(|(g, _)| g.covers(file))
                .map(|(_, i)| *i),
        );
        out
    }
}

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
        if out.status != CheckStatus::Failed.as_str() {
            out.status = CheckStatus::NotChecked.as_str().into();
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
            status: CheckStatus::NotChecked.as_str().into(),
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
        status: outcome.status.as_str().into(),
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
                    status: "not_checked".into(),
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
            let statuses: Vec<Option<CheckStatus>> = checks
                .iter()
                .map(|&i| CheckStatus::parse(&outputs[i].status))
                .collect();
            let status = if statuses.contains(&Some(CheckStatus::Failed)) {
                ConstraintStatus::Violated
            } else if statuses.is_empty()
                || statuses.iter().any(|s| *s != Some(CheckStatus::Passed))
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
                o.status == CheckStatus::NotChecked.as_str()
                    && o.evidence.get("not_run") != Some(&Value::Bool(true))
            })
        })
    }

    /// A blocking constraint this run did not prove: violated, or not checked
    /// because a check could not look. (One no check measured is left to Reflect.)
    pub fn blocking_unproven(&self, outputs: &[ValidationOutput]) -> bool {
        self.severity == Severity::Blocking
            && match self.status {
                ConstraintStatus::Satisfied => false,
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
    let passed = outputs.iter().filter(|o| o.status == "passed").count();
    let failed = outputs.iter().filter(|o| o.status == "failed").count();
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
    // The evidence rule holds here too: a file the last run failed to produce is not evidence.
    let evidence = Evidence::of_last_run(ws, &plan.doc.plan.stages);
    let outputs = run_validation_plan(ws, &plan.doc, None, cancel, &evidence);
    let reports = constraint_reports(spec, &outputs);
    let run_id = format!("validate-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    let doc = constraints_document(spec, &reports, &outputs, &run_id);
    write_constraints(spec, &reports, &outputs, &run_id, &mut |rel, bytes| {
        crate::persist::write_ledgered(ws, &mut db, rel, bytes, &run_id)
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
    evidence: Evidence,
) -> (Vec<ValidationOutput>, Option<(ErrorKind, String)>) {
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
                    ErrorKind::ValidationFailed,
                    format!("the stage's checks could not run: {e}"),
                )),
            );
        }
    };
    let failed: Vec<String> = outputs
        .iter()
        .filter(|o| o.status != CheckStatus::Passed.as_str())
        .map(|o| {
            let verb = if o.status == CheckStatus::NotChecked.as_str() {
                "could not check"
            } else {
                "failed"
            };
            format!("check `{}` {verb}: {}", o.check, message_of(o))
        })
        .collect();
    let kind = if cancel.is_cancelled() {
        ErrorKind::Stage(pmpo_store::states::FailureKind::Cancelled)
    } else {
        ErrorKind::ValidationFailed
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
