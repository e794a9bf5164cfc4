//! The Reflect phase's records and the loop/terminate rule.
//!
//! Deterministic first: a constraint with a check takes its status from the
//! check's result (measured); only a constraint without one is judged by the
//! model (and marked judged). The regression checklist compares this
//! iteration with the previous one.

use pmpo_plan::Severity;
use pmpo_store::states::{ConstraintStatus, RunStatus};
use serde::{Deserialize, Serialize};

use crate::evidence::EvidenceFile;

/// What a constraint's status rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// A deterministic check decided.
    Measured,
    /// The model decided.
    Judged,
    /// Nothing decided.
    None,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Measured => "measured",
            Basis::Judged => "judged",
            Basis::None => "none",
        }
    }
}

impl std::fmt::Display for Basis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One constraint after reflection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConstraintState {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    /// `satisfied`, `violated` or `not_checked`.
    pub status: ConstraintStatus,
    pub basis: Basis,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub evidence: String,
    /// The Execute run whose checks (and files) this status rests on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// The files the status rests on, with the digest that run recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<EvidenceFile>,
    /// Why a check's result is not evidence: the files it read were not
    /// produced or verified by this iteration's run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unproven: Vec<String>,
}

/// What the Execute phase did, as far as Reflect needs it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecutionSummary {
    pub run_id: String,
    /// How the run ended; `None` (written `""`) when there were no results
    /// of this run.
    #[serde(with = "empty_is_none")]
    pub status: Option<RunStatus>,
    pub stages: usize,
    pub failed_stages: Vec<String>,
    pub errors: Vec<String>,
}

impl ExecutionSummary {
    /// The run's status, `None` when there were no results of this run.
    pub fn run_status(&self) -> Option<RunStatus> {
        self.status
    }
}

/// A run status written as before the type: `""` for none. Reading is as
/// lenient as the string was: an empty or unknown status reads as none
/// (no results of this run), so an old reflection file still loads.
pub(crate) mod empty_is_none {
    use pmpo_store::states::RunStatus;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(status: &Option<RunStatus>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(status.map_or("", RunStatus::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RunStatus>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(RunStatus::parse(&text))
    }
}

/// The words for a run's status in a reason: the status, or `no results`.
pub fn status_words(status: Option<RunStatus>) -> &'static str {
    status.map_or("no results", RunStatus::as_str)
}

/// `reflections/iteration-N.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reflection {
    pub iteration: u64,
    pub strategy: String,
    pub constraints: Vec<ConstraintState>,
    pub execution: ExecutionSummary,
    pub required_missing: Vec<String>,
    /// The artifact's outputs this iteration's run did not produce or
    /// verify, each with why (a stage failed, was skipped, never ran).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unproven: Vec<String>,
    pub manifest_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_problem: Option<String>,
    pub manifest_files: usize,
    pub dist_files: Vec<String>,
    pub empty_files: Vec<String>,
    pub regressions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// `meta:composite`: each component with its own strategy and counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentSummary>,
    pub reflected_at: String,
}

/// One component of a `meta:composite` artifact after reflection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ComponentSummary {
    /// The prefix of the component's stage and constraint ids (`c1-image-prompt`).
    pub id: String,
    pub content_type: String,
    pub strategy: String,
    pub satisfied: usize,
    pub violated: usize,
    pub not_checked: usize,
}

impl Reflection {
    pub fn count(&self, status: ConstraintStatus) -> usize {
        self.constraints
            .iter()
            .filter(|c| c.status == status)
            .count()
    }

    /// Constraints that keep the artifact from converging: blocking ones not
    /// satisfied, and any violated one.
    pub fn unsatisfied(&self) -> Vec<String> {
        self.constraints
            .iter()
            .filter(|c| {
                c.status == ConstraintStatus::Violated
                    || (c.severity == Severity::Blocking && c.status != ConstraintStatus::Satisfied)
            })
            .map(|c| c.id.clone())
            .collect()
    }
}

fn rank(severity: Severity) -> u8 {
    match severity {
        Severity::Blocking => 4,
        Severity::High => 3,
        Severity::Medium => 2,
        Severity::Low => 1,
    }
}

/// The reflect phase's regression checklist, against the previous iteration.
pub fn regressions(now: &Reflection, before: Option<&Reflection>) -> Vec<String> {
    let mut out = Vec::new();
    for f in &now.empty_files {
        out.push(format!("output file `{f}` is empty"));
    }
    let Some(before) = before else {
        return out;
    };
    for c in &now.constraints {
        let Some(prev) = before.constraints.iter().find(|p| p.id == c.id) else {
            continue;
        };
        if prev.status == ConstraintStatus::Satisfied && c.status == ConstraintStatus::Violated {
            out.push(format!(
                "constraint `{}` was satisfied in iteration {} and is now violated",
                c.id, before.iteration
            ));
        }
        if rank(c.severity) < rank(prev.severity) {
            out.push(format!(
                "constraint `{}` was downgraded from {} to {}",
                c.id, prev.severity, c.severity
            ));
        }
    }
    for f in &before.dist_files {
        if !now.dist_files.contains(f) {
            out.push(format!("`{f}` was deleted from dist/"));
        }
    }
    if now.manifest_files < before.manifest_files {
        out.push(format!(
            "the manifest lists {} file(s), fewer than the {} of iteration {}",
            now.manifest_files, before.manifest_files, before.iteration
        ));
    }
    out
}

/// Loop back to Plan, or end the cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Continue,
    Terminate,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Continue => "continue",
            Decision::Terminate => "terminate",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why a cycle ended (its convergence status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Termination {
    Converged,
    MaxIterationsExceeded,
    UserTerminated,
}

impl Termination {
    pub fn as_str(self) -> &'static str {
        match self {
            Termination::Converged => "converged",
            Termination::MaxIterationsExceeded => "max_iterations_exceeded",
            Termination::UserTerminated => "user_terminated",
        }
    }
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The loop/terminate decision of one iteration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecisionRecord {
    pub iteration: u64,
    pub decision: Decision,
    /// Set with `terminate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Termination>,
    pub reason: String,
    pub unsatisfied: Vec<String>,
    pub regressions: Vec<String>,
    pub decided_at: String,
}

/// The seed's rule: terminate when every blocking constraint is satisfied,
/// every required file is in `dist/`, the manifest is valid and no high
/// constraint is violated (and nothing regressed); or when `max_iterations`
/// is reached; or when a person said so. Otherwise loop back to Plan.
pub fn decide(r: &Reflection, max_iterations: u64, user_terminated: bool) -> DecisionRecord {
    let blocking_open: Vec<&ConstraintState> = r
        .constraints
        .iter()
        .filter(|c| c.severity == Severity::Blocking && c.status != ConstraintStatus::Satisfied)
        .collect();
    let high_violated: Vec<&ConstraintState> = r
        .constraints
        .iter()
        .filter(|c| c.severity == Severity::High && c.status == ConstraintStatus::Violated)
        .collect();
    let mut why_not = Vec::new();
    // Files left by an earlier run are no evidence: an Execute that did not
    // complete leaves the artifact unproven, whatever the checks said.
    if r.execution.run_status() != Some(RunStatus::Completed) {
        let status = status_words(r.execution.status);
        let mut why = format!(
            "this iteration's Execute did not complete (run `{}`: {status})",
            r.execution.run_id
        );
        if !r.unproven.is_empty() {
            why.push_str(&format!(
                "; unproven: {}",
                r.unproven
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        why_not.push(why);
    }
    if !blocking_open.is_empty() {
        why_not.push(format!(
            "blocking constraint(s) not satisfied: {}",
            blocking_open
                .iter()
                .map(|c| format!("{} ({})", c.id, c.status))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !r.required_missing.is_empty() {
        why_not.push(format!(
            "required file(s) not produced or verified by this iteration's run: {}",
            r.required_missing.join(", ")
        ));
    }
    if !r.manifest_valid {
        why_not.push(format!(
            "the manifest does not validate{}",
            r.manifest_problem
                .as_deref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        ));
    }
    if !high_violated.is_empty() {
        why_not.push(format!(
            "high constraint(s) violated: {}",
            high_violated
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !r.regressions.is_empty() {
        why_not.push(format!("regression(s): {}", r.regressions.join("; ")));
    }
    let mut d = DecisionRecord {
        iteration: r.iteration,
        decision: Decision::Terminate,
        status: None,
        reason: String::new(),
        unsatisfied: r.unsatisfied(),
        regressions: r.regressions.clone(),
        decided_at: pmpo_store::now_rfc3339(),
    };
    if user_terminated {
        d.status = Some(Termination::UserTerminated);
        d.reason = "a person answered the approval gate with terminate".into();
    } else if why_not.is_empty() {
        d.status = Some(Termination::Converged);
        d.reason = format!(
            "converged: all {} blocking constraint(s) satisfied by checks of run `{}` on files it produced or verified, every required file is among them, the manifest validates, no high constraint violated",
            r.constraints
                .iter()
                .filter(|c| c.severity == Severity::Blocking)
                .count(),
            r.execution.run_id
        );
    } else if r.iteration >= max_iterations {
        d.status = Some(Termination::MaxIterationsExceeded);
        d.reason = format!(
            "Maximum iterations reached — forcing termination (iteration {} of {}); still open: {}",
            r.iteration,
            max_iterations,
            why_not.join("; ")
        );
    } else {
        d.decision = Decision::Continue;
        d.reason = why_not.join("; ");
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_execution_status_is_written_as_before() {
        let none = ExecutionSummary::default();
        let json = serde_json::to_value(&none).unwrap();
        assert_eq!(json["status"], "");
        let failed = ExecutionSummary {
            status: Some(RunStatus::Failed),
            ..Default::default()
        };
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["status"], "failed");
        let back: ExecutionSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back.status, Some(RunStatus::Failed));
        let mut old = serde_json::to_value(&none).unwrap();
        old["status"] = "success".into();
        let back: ExecutionSummary = serde_json::from_value(old).unwrap();
        assert_eq!(back.status, None, "an unknown status reads as none");
    }

    fn c(id: &str, sev: &str, status: &str) -> ConstraintState {
        ConstraintState {
            id: id.into(),
            description: String::new(),
            severity: serde_json::from_value(serde_json::json!(sev)).unwrap(),
            status: status.parse().unwrap(),
            basis: Basis::Measured,
            evidence: String::new(),
            run_id: String::new(),
            files: Vec::new(),
            unproven: Vec::new(),
        }
    }

    fn r(iteration: u64, cs: Vec<ConstraintState>) -> Reflection {
        Reflection {
            iteration,
            constraints: cs,
            manifest_valid: true,
            execution: ExecutionSummary {
                run_id: "r1".into(),
                status: Some(RunStatus::Completed),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_rule_terminates_only_when_everything_holds() {
        let ok = r(
            1,
            vec![
                c("a", "blocking", "satisfied"),
                c("b", "medium", "violated"),
            ],
        );
        let d = decide(&ok, 5, false);
        assert_eq!(
            (d.decision, d.status),
            (Decision::Terminate, Some(Termination::Converged))
        );

        let not_checked = r(1, vec![c("a", "blocking", "not_checked")]);
        assert_eq!(decide(&not_checked, 5, false).decision, Decision::Continue);

        let high = r(
            2,
            vec![c("a", "blocking", "satisfied"), c("h", "high", "violated")],
        );
        let d = decide(&high, 5, false);
        assert_eq!(d.decision, Decision::Continue);
        assert_eq!(d.unsatisfied, vec!["h".to_string()]);

        let at_max = r(5, vec![c("h", "high", "violated")]);
        let d = decide(&at_max, 5, false);
        assert_eq!(d.status, Some(Termination::MaxIterationsExceeded));
        assert!(
            d.reason
                .starts_with("Maximum iterations reached — forcing termination")
        );

        let mut missing = ok.clone();
        missing.required_missing = vec!["dist/x".into()];
        assert_eq!(decide(&missing, 5, false).decision, Decision::Continue);
        let mut bad_manifest = ok.clone();
        bad_manifest.manifest_valid = false;
        assert_eq!(decide(&bad_manifest, 5, false).decision, Decision::Continue);
        assert_eq!(
            decide(&missing, 5, true).status,
            Some(Termination::UserTerminated)
        );

        // Everything measured satisfied, but the run failed: not converged.
        let mut failed = ok.clone();
        failed.execution.status = Some(RunStatus::Failed);
        failed.unproven = vec!["`dist/logo.svg`: stage `import` failed".into()];
        let d = decide(&failed, 5, false);
        assert_eq!(d.decision, Decision::Continue);
        assert!(d.reason.contains("did not complete"), "{}", d.reason);
        assert!(d.reason.contains("`dist/logo.svg`: stage `import` failed"));
        let mut none = ok.clone();
        none.execution.status = None;
        assert_eq!(
            decide(&none, 1, false).status,
            Some(Termination::MaxIterationsExceeded)
        );
    }

    #[test]
    fn the_regression_checklist() {
        let mut before = r(
            1,
            vec![c("a", "blocking", "satisfied"), c("b", "high", "satisfied")],
        );
        before.dist_files = vec!["dist/a".into(), "dist/b".into()];
        before.manifest_files = 3;
        let mut now = r(
            2,
            vec![c("a", "blocking", "violated"), c("b", "low", "satisfied")],
        );
        now.dist_files = vec!["dist/a".into()];
        now.manifest_files = 2;
        now.empty_files = vec!["dist/a".into()];
        let found = regressions(&now, Some(&before));
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found.iter().any(|f| f.contains("`a` was satisfied")));
        assert!(
            found
                .iter()
                .any(|f| f.contains("downgraded from high to low"))
        );
        assert!(found.iter().any(|f| f.contains("`dist/b` was deleted")));
        assert!(found.iter().any(|f| f.contains("fewer than the 3")));
        assert!(found.iter().any(|f| f.contains("is empty")));
        assert!(regressions(&before, None).is_empty());
    }
}
