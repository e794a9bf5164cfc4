//! Reflect: each constraint's status from the run's checks (measured), the
//! model's judgement of those no check measures (judged, in `judge`), the
//! evidence rule, the artifact's files and the regression checklist, written
//! as `reflections/iteration-N.json`.

use std::time::Instant;

use pmpo_store::states::{ConstraintStatus, RunStatus, StageStatus};
use pmpo_store::{Workspace, now_rfc3339};
use serde_json::{Map, Value, json};

use crate::controller::{
    Controller, LoopError, LoopPhase, Outcome, SpecFile, plan_path, read_json, reflection_path,
    write_json,
};
use crate::domain;
use crate::evidence::{PathPattern, RunEvidence};
use crate::journal::{DECISIONS, REFINEMENT_LOG, cell};
use crate::phase::judge::Judged;
use crate::reflect::{
    self, Basis, ComponentSummary, ConstraintState, ExecutionSummary, Reflection,
};

impl Controller<'_, '_> {
    /// `Some(Cancelled)` when Ctrl-C came while the model was judging.
    pub(crate) async fn reflect(&mut self) -> Result<Option<Outcome>, LoopError> {
        let t = Instant::now();
        self.begin(LoopPhase::Reflect);
        let iteration = self.state.current_iteration;
        let spec = self.load_spec()?;
        let run_id = self.ls.run_id.clone().unwrap_or_default();
        // The Execute phase's constraint statuses, if they are this run's.
        let measured: Value = read_json(self.ws, pmpo_engine::validation::CONSTRAINTS_FILE)
            .ok()
            .flatten()
            .filter(|v: &Value| v["run_id"].as_str() == Some(run_id.as_str()))
            .unwrap_or(Value::Null);
        let mut constraints = measured_states(&spec, &measured);
        let results: Value = read_json(self.ws, pmpo_engine::RESULTS_FILE)
            .ok()
            .flatten()
            .unwrap_or(Value::Null);
        let execution = execution_summary(&results, &run_id);
        // The evidence rule: a measured status stands only when every file
        // its checks read was produced or verified by this iteration's run.
        let plan_doc: Value = read_json(self.ws, &plan_path(&self.name(), iteration))
            .ok()
            .flatten()
            .unwrap_or(Value::Null);
        let ev = RunEvidence::of_run(&plan_doc, &results, &run_id);
        let checks_run: Vec<Value> = plan_doc["plan"]["validation_plan"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        apply_evidence(&mut constraints, &checks_run, &ev, &run_id);
        let mut notes = Vec::new();
        let open = open_to_judge(&spec, &checks_run, &constraints);
        if !open.is_empty() {
            match self
                .judge(&spec, &mut constraints, &open, &ev, &run_id)
                .await
            {
                Judged::Cancelled => return Ok(Some(self.cancelled_in(LoopPhase::Reflect))),
                Judged::AwaitingHost(q) => {
                    return self.awaiting_host(LoopPhase::Reflect, *q).map(Some);
                }
                Judged::Note(note) => notes.push(note),
                Judged::Done => {}
            }
        }
        let r = self.reflection(&spec, &ev, &run_id, constraints, execution, &notes);
        write_json(
            self.ws,
            &reflection_path(&self.name(), iteration),
            &r,
            &self.state.refinement_id,
        )?;
        for n in &notes {
            self.env.observer.note(n);
        }
        let summary = reflect_summary(&r);
        self.log(
            REFINEMENT_LOG,
            &format!("reflect:{iteration}"),
            &reflect_log(&r, &summary, &notes),
        )?;
        self.log(
            DECISIONS,
            &format!("reflect:{iteration}"),
            &reflect_decision_log(&r, &summary),
        )?;
        if !r.regressions.is_empty() {
            self.fire(
                "on_regression",
                Some(LoopPhase::Reflect.as_str()),
                json!({"regressions": r.regressions, "count": r.regressions.len()}),
            );
        }
        self.end(LoopPhase::Reflect, &summary, t)?;
        Ok(None)
    }

    /// The reflection record: the constraints as reflected, the artifact's
    /// files (required ones present only when this run recorded them, its
    /// own outputs in dist/, empty ones, its manifest entries), the
    /// regression checklist and the composite's components.
    fn reflection(
        &self,
        spec: &SpecFile,
        ev: &RunEvidence,
        run_id: &str,
        constraints: Vec<ConstraintState>,
        execution: ExecutionSummary,
        notes: &[String],
    ) -> Reflection {
        let iteration = self.state.current_iteration;
        let required_missing: Vec<String> = spec
            .required_files
            .iter()
            .filter(|f| ev.proven_under(f).is_empty())
            .cloned()
            .collect();
        let before: Option<Reflection> = if iteration > 1 {
            read_json(self.ws, &reflection_path(&self.name(), iteration - 1))
                .ok()
                .flatten()
        } else {
            None
        };
        let mut owned_patterns = ev.declared.clone();
        owned_patterns.extend(spec.required_files.iter().cloned());
        // A file the last iteration listed is still this artifact's (its
        // deletion is a regression even when the new plan stopped declaring it).
        owned_patterns.extend(before.iter().flat_map(|b| b.dist_files.iter().cloned()));
        let (dist_files, empty_files) = list_owned(self.ws, &owned_patterns);
        let manifest: Value = read_json(self.ws, pmpo_engine::MANIFEST_FILE)
            .ok()
            .flatten()
            .unwrap_or(Value::Null);
        let name = self.name();
        let manifest_files = manifest["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| owned_entry(f, &manifest, &name, run_id))
            .count();
        let mut params = Map::new();
        params.insert("path".into(), json!(pmpo_engine::MANIFEST_FILE));
        params.insert("verify_digests".into(), json!(true));
        params.insert("owner".into(), json!(name));
        let outcome = pmpo_checks::run_check(self.ws, "manifest", &params);
        let mut unproven: Vec<String> = ev
            .unproven
            .iter()
            .map(|(o, why)| format!("`{o}`: {why}"))
            .collect();
        unproven.dedup();
        let mut r = Reflection {
            iteration,
            strategy: self.ls.evaluation_strategy.clone(),
            constraints,
            execution,
            required_missing,
            unproven,
            manifest_valid: outcome.passed(),
            manifest_problem: (!outcome.passed()).then(|| outcome.message.clone()),
            manifest_files,
            dist_files,
            empty_files,
            regressions: vec![],
            components: vec![],
            notes: notes.to_vec(),
            reflected_at: now_rfc3339(),
        };
        r.regressions = reflect::regressions(&r, before.as_ref());
        r.components = component_summaries(&self.components(), &r.constraints);
        r
    }

    /// A composite's components: (id prefix, content type, strategy).
    pub(crate) fn components(&self) -> Vec<(String, String, String)> {
        if self.state.content_type != "meta:composite" {
            return Vec::new();
        }
        let inputs = self.ls.inputs.clone();
        domain::component_strategies(&self.adapter_input(&inputs))
            .into_iter()
            .map(|(slug, ct, s)| (slug, ct, s.as_str().to_string()))
            .collect()
    }

    pub(crate) fn load_reflection(&self) -> Result<Reflection, LoopError> {
        let rel = reflection_path(&self.name(), self.state.current_iteration);
        read_json(self.ws, &rel)?.ok_or(LoopError::Corrupt {
            path: rel,
            detail: "missing".into(),
        })
    }
}

/// Whether a manifest entry is this artifact's: its owner says so, or it has
/// none and the manifest is this run's (a run finished by `pmpo resume`,
/// which knows no owner).
fn owned_entry(entry: &Value, manifest: &Value, name: &str, run_id: &str) -> bool {
    match entry["owner"].as_str() {
        Some(o) => o == name,
        None => !run_id.is_empty() && manifest["run_id"].as_str() == Some(run_id),
    }
}

/// The artifact's files under `dist/` (those its plan declares; sorted) and
/// the empty ones among them. Other artifacts share `dist/`: their files are
/// theirs to judge.
fn list_owned(ws: &Workspace, patterns: &[String]) -> (Vec<String>, Vec<String>) {
    let (files, empty) = list_dist(ws);
    let patterns: Vec<PathPattern> = patterns.iter().map(|p| PathPattern::new(p)).collect();
    let mine = |f: &String| patterns.iter().any(|p| p.covers(f));
    (
        files.into_iter().filter(mine).collect(),
        empty.into_iter().filter(mine).collect(),
    )
}

/// Files under `dist/` (sorted) and the empty ones among them.
fn list_dist(ws: &Workspace) -> (Vec<String>, Vec<String>) {
    let mut files = Vec::new();
    let mut empty = Vec::new();
    let walk = walkdir::WalkDir::new(ws.root().join("dist"))
        .max_depth(32)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        // A killed writer may leave its temporary file behind; it is not output.
        .filter(|e| !pmpo_store::is_temp_name(&e.file_name().to_string_lossy()));
    for e in walk.take(20_000) {
        if let Some(rel) = ws.relative(e.path()) {
            if e.metadata().is_ok_and(|m| m.len() == 0) {
                empty.push(rel.clone());
            }
            files.push(rel);
        }
    }
    files.sort();
    empty.sort();
    (files, empty)
}

/// Each constraint of the specification with the status the Execute phase
/// measured for it (`constraints.json` of this run), or `not_checked`.
fn measured_states(spec: &SpecFile, measured: &Value) -> Vec<ConstraintState> {
    let checked_ids: Vec<&str> = spec
        .checks
        .iter()
        .map(|c| c.constraint_id.as_str())
        .collect();
    spec.specification
        .constraints
        .iter()
        .map(|c| {
            let m = measured["constraints"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["id"].as_str() == Some(c.id.as_str())));
            let status = m
                .and_then(|x| x["status"].as_str())
                .and_then(ConstraintStatus::parse)
                .unwrap_or(ConstraintStatus::NotChecked);
            let evidence = m
                .and_then(|x| x["checks"].as_array())
                .map(|checks| {
                    checks
                        .iter()
                        .map(|k| {
                            format!(
                                "{} {}: {}",
                                k["check"].as_str().unwrap_or("?"),
                                k["status"].as_str().unwrap_or("?"),
                                k["message"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            let basis = if status == ConstraintStatus::NotChecked {
                Basis::None
            } else {
                Basis::Measured
            };
            ConstraintState {
                id: c.id.clone(),
                description: c.description.clone(),
                severity: c.severity,
                status,
                basis,
                evidence: if evidence.is_empty() && !checked_ids.contains(&c.id.as_str()) {
                    "no deterministic check".into()
                } else {
                    evidence
                },
                run_id: String::new(),
                files: Vec::new(),
                unproven: Vec::new(),
            }
        })
        .collect()
}

/// What the results file says of `run_id` (nothing when it is another run's).
fn execution_summary(results: &Value, run_id: &str) -> ExecutionSummary {
    if results["run_id"].as_str() != Some(run_id) {
        return ExecutionSummary {
            run_id: run_id.to_string(),
            ..Default::default()
        };
    }
    ExecutionSummary {
        run_id: run_id.to_string(),
        status: results["status"].as_str().and_then(RunStatus::parse),
        stages: results["stages"].as_array().map_or(0, Vec::len),
        failed_stages: results["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                s["status"].as_str().is_some_and(|st| {
                    matches!(
                        StageStatus::parse(&st.to_ascii_uppercase()),
                        Some(StageStatus::Failed | StageStatus::Timeout)
                    )
                })
            })
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect(),
        errors: results["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["stage"].as_str().unwrap_or("?"),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .take(20)
            .collect(),
    }
}

/// The evidence rule. Every constraint a check measures (or tried to: the
/// engine may already have found its files unproven) names the run and the
/// files it rests on; a measured status whose check read files this run did
/// not produce or verify is not evidence (a violation stands, and says so).
fn apply_evidence(
    constraints: &mut [ConstraintState],
    checks_run: &[Value],
    ev: &RunEvidence,
    run_id: &str,
) {
    for c in constraints.iter_mut() {
        let mine: Vec<&Value> = checks_run
            .iter()
            .filter(|k| k["constraint_id"].as_str() == Some(c.id.as_str()))
            .collect();
        if c.basis != Basis::Measured && mine.is_empty() {
            continue;
        }
        let mut files = Vec::new();
        let mut unproven = Vec::new();
        for k in mine {
            let (f, u) = ev.assess(&k["with"]);
            files.extend(f);
            unproven.extend(u);
        }
        c.run_id = run_id.to_string();
        if c.basis != Basis::Measured {
            // Not measured: nothing to overrule, only the files to name.
            c.unproven = unproven;
            continue;
        }
        if unproven.is_empty() {
            c.files = files;
            c.files.dedup();
        } else if c.status == ConstraintStatus::Violated {
            // A violation is never a false success: it stands, and says
            // that the files it was seen on are not this run's own.
            c.unproven = unproven;
        } else {
            c.evidence = format!(
                "not evidence: its check read files this iteration did not produce or verify (the check said {}: {})",
                c.status, c.evidence
            );
            c.status = ConstraintStatus::NotChecked;
            c.basis = Basis::None;
            c.unproven = unproven;
        }
    }
}

/// The constraints the model may judge: only those without a check. A check
/// that ran and could not observe (`not_checked`), or read unproven files, is
/// not handed to a judge who cannot observe either: it stays not_checked.
/// (`execution_required: false` items are the plan's way of asking for a
/// judgement: they are not checks.)
fn open_to_judge(
    spec: &SpecFile,
    checks_run: &[Value],
    constraints: &[ConstraintState],
) -> Vec<usize> {
    let has_check = |id: &str| {
        spec.checks
            .iter()
            .any(|k| k.constraint_id == id && k.execution_required)
            || checks_run.iter().any(|k| {
                k["constraint_id"].as_str() == Some(id)
                    && k["execution_required"].as_bool() != Some(false)
            })
    };
    constraints
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.status == ConstraintStatus::NotChecked && c.unproven.is_empty() && !has_check(&c.id)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Each component of a composite with its constraints' counts.
fn component_summaries(
    components: &[(String, String, String)],
    constraints: &[ConstraintState],
) -> Vec<ComponentSummary> {
    components
        .iter()
        .cloned()
        .map(|(id, content_type, strategy)| {
            let prefix = format!("{id}_");
            let n = |s: ConstraintStatus| {
                constraints
                    .iter()
                    .filter(|c| c.id.starts_with(&prefix) && c.status == s)
                    .count()
            };
            ComponentSummary {
                satisfied: n(ConstraintStatus::Satisfied),
                violated: n(ConstraintStatus::Violated),
                not_checked: n(ConstraintStatus::NotChecked),
                id,
                content_type,
                strategy,
            }
        })
        .collect()
}

/// The one-line summary of a reflection.
fn reflect_summary(r: &Reflection) -> String {
    format!(
        "{} satisfied, {} violated, {} not checked of {}; {} regression(s)",
        r.count(ConstraintStatus::Satisfied),
        r.count(ConstraintStatus::Violated),
        r.count(ConstraintStatus::NotChecked),
        r.constraints.len(),
        r.regressions.len()
    )
}

/// The Reflect entry of `refinement-log.md`: every constraint in a table.
fn reflect_log(r: &Reflection, summary: &str, notes: &[String]) -> String {
    let mut body = format!(
        "## Iteration {} — Reflect\n\nStrategy: {}. {summary}.\n\n| Constraint | Severity | Status | Basis | Evidence |\n|---|---|---|---|---|\n",
        r.iteration, r.strategy
    );
    for c in &r.constraints {
        body.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            c.id,
            c.severity,
            c.status,
            c.basis,
            cell(&c.evidence)
        ));
    }
    for c in &r.components {
        body.push_str(&format!(
            "\nComponent `{}` ({}, evaluated by {}): {} satisfied, {} violated, {} not checked\n",
            c.id, c.content_type, c.strategy, c.satisfied, c.violated, c.not_checked
        ));
    }
    if !r.required_missing.is_empty() {
        body.push_str(&format!(
            "\nRequired files not produced or verified by run `{}`: {}\n",
            r.execution.run_id,
            r.required_missing.join(", ")
        ));
    }
    for u in &r.unproven {
        body.push_str(&format!("\nUnproven: {u}\n"));
    }
    if !r.manifest_valid {
        body.push_str(&format!(
            "\nManifest: {}\n",
            r.manifest_problem.as_deref().unwrap_or("invalid")
        ));
    }
    for g in &r.regressions {
        body.push_str(&format!("\nRegression: {g}\n"));
    }
    for n in notes {
        body.push_str(&format!("\nNote: {n}\n"));
    }
    body
}

/// The Reflect entry of `decisions.md`.
fn reflect_decision_log(r: &Reflection, summary: &str) -> String {
    let mut d = format!("## Iteration {} — Reflect\n\n- {summary}\n", r.iteration);
    if !r.unsatisfied().is_empty() {
        d.push_str(&format!(
            "- Not satisfied (violated, or blocking and not measured): {}\n",
            r.unsatisfied().join(", ")
        ));
    }
    for g in &r.regressions {
        d.push_str(&format!("- Regression: {g}\n"));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A specification of three constraints; `a` and `b` have checks.
    fn spec() -> SpecFile {
        super::super::test_spec(
            "logo",
            json!([
                {"id": "a", "description": "A", "severity": "blocking"},
                {"id": "b", "description": "B", "severity": "high"},
                {"id": "c", "description": "C", "severity": "medium"},
            ]),
            json!([
                {"constraint_id": "a", "validation_method": "xml", "with": {"path": "dist/a.svg"}},
                {"constraint_id": "b", "validation_method": "non_empty", "with": {"path": "dist/b"}},
            ]),
            json!(["dist/a.svg"]),
        )
    }

    fn measured() -> Value {
        json!({"run_id": "r1", "constraints": [
            {"id": "a", "status": "satisfied", "checks": [{"check": "xml", "status": "passed", "message": "ok"}]},
            {"id": "b", "status": "violated", "checks": [{"check": "non_empty", "status": "failed", "message": "empty"}]},
        ]})
    }

    #[test]
    fn measured_statuses_come_from_the_run_and_the_rest_are_not_checked() {
        let states = measured_states(&spec(), &measured());
        let got: Vec<(&str, ConstraintStatus, Basis, &str)> = states
            .iter()
            .map(|c| (c.id.as_str(), c.status, c.basis, c.evidence.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "a",
                    ConstraintStatus::Satisfied,
                    Basis::Measured,
                    "xml passed: ok"
                ),
                (
                    "b",
                    ConstraintStatus::Violated,
                    Basis::Measured,
                    "non_empty failed: empty"
                ),
                (
                    "c",
                    ConstraintStatus::NotChecked,
                    Basis::None,
                    "no deterministic check"
                ),
            ]
        );
        // Nothing measured: every status is not_checked, and a checked
        // constraint says nothing of a check that did not run.
        let none = measured_states(&spec(), &Value::Null);
        assert!(
            none.iter()
                .all(|c| c.status == ConstraintStatus::NotChecked && c.basis == Basis::None)
        );
        assert_eq!(none[0].evidence, "");
    }

    #[test]
    fn the_execution_summary_is_of_this_run_only() {
        let results = json!({"run_id": "r1", "status": "failed",
            "stages": [{"id": "x", "status": "FAILED"}, {"id": "y", "status": "timeout"}, {"id": "z", "status": "COMPLETED"}],
            "errors": [{"stage": "x", "message": "boom"}]});
        let e = execution_summary(&results, "r1");
        assert_eq!(e.status, Some(RunStatus::Failed));
        assert_eq!(e.stages, 3);
        assert_eq!(e.failed_stages, ["x", "y"]);
        assert_eq!(e.errors, ["x: boom"]);
        let other = execution_summary(&results, "r2");
        assert_eq!((other.run_id.as_str(), other.status), ("r2", None));
        assert_eq!(other.run_status(), None);
    }

    #[test]
    fn a_measured_success_on_files_the_run_did_not_prove_is_not_evidence_but_a_violation_stands() {
        let plan = json!({"plan": {"stages": [
            {"id": "make", "outputs": ["dist/a.svg", "dist/b"]},
        ]}});
        let results = json!({"run_id": "r1", "status": "failed", "stages": [
            {"id": "make", "status": "FAILED", "reason": "exit 1", "files": []},
        ]});
        let ev = RunEvidence::of_run(&plan, &results, "r1");
        let checks_run = vec![
            json!({"constraint_id": "a", "with": {"path": "dist/a.svg"}}),
            json!({"constraint_id": "b", "with": {"path": "dist/b"}}),
        ];
        let mut states = measured_states(&spec(), &measured());
        apply_evidence(&mut states, &checks_run, &ev, "r1");
        let a = &states[0];
        assert_eq!(
            (a.status, a.basis),
            (ConstraintStatus::NotChecked, Basis::None)
        );
        assert!(a.evidence.starts_with("not evidence:"), "{}", a.evidence);
        assert!(!a.unproven.is_empty());
        let b = &states[1];
        assert_eq!(
            (b.status, b.basis),
            (ConstraintStatus::Violated, Basis::Measured)
        );
        assert!(!b.unproven.is_empty());
        assert_eq!(states[2].run_id, "", "no check of `c` ran");

        // Proven files: the status stands and names them.
        let ok = json!({"run_id": "r1", "status": "completed", "stages": [
            {"id": "make", "status": "COMPLETED", "files": [
                {"path": "dist/a.svg", "blake3": "aa"}, {"path": "dist/b", "blake3": "bb"}]},
        ]});
        let ev = RunEvidence::of_run(&plan, &ok, "r1");
        let mut states = measured_states(&spec(), &measured());
        apply_evidence(&mut states, &checks_run, &ev, "r1");
        assert_eq!(states[0].status, ConstraintStatus::Satisfied);
        assert_eq!(states[0].files.len(), 1);
        assert_eq!(states[0].run_id, "r1");
    }

    #[test]
    fn only_constraints_without_a_check_go_to_the_judge() {
        let spec = spec();
        let mut states = measured_states(&spec, &Value::Null);
        // `a` and `b` have checks (they stay not_checked); `c` has none.
        assert_eq!(open_to_judge(&spec, &[], &states), [2]);
        // The plan asks for a judgement of `c` (not a check): still open.
        let judged = [json!({"constraint_id": "c", "execution_required": false})];
        assert_eq!(open_to_judge(&spec, &judged, &states), [2]);
        // The plan checks `c`: nothing is open.
        let checked = [json!({"constraint_id": "c", "validation_method": "regex"})];
        assert!(open_to_judge(&spec, &checked, &states).is_empty());
        // Unproven files are not handed to a judge.
        states[2].unproven = vec!["why".into()];
        assert!(open_to_judge(&spec, &[], &states).is_empty());
    }

    #[test]
    fn components_count_their_own_constraints() {
        let mut states = measured_states(&spec(), &Value::Null);
        states[0].id = "c1-image-prompt_a".into();
        states[0].status = ConstraintStatus::Satisfied;
        states[1].id = "c1-image-prompt_b".into();
        states[1].status = ConstraintStatus::Violated;
        states[2].id = "c2-content_c".into();
        let comps = vec![
            (
                "c1-image-prompt".to_string(),
                "meta:image-prompt".to_string(),
                "prompt_quality".to_string(),
            ),
            (
                "c2-content".to_string(),
                "direct:content".to_string(),
                "direct_eval".to_string(),
            ),
        ];
        let got: Vec<(String, usize, usize, usize)> = component_summaries(&comps, &states)
            .into_iter()
            .map(|c| (c.id, c.satisfied, c.violated, c.not_checked))
            .collect();
        assert_eq!(
            got,
            [
                ("c1-image-prompt".to_string(), 1, 1, 0),
                ("c2-content".to_string(), 0, 0, 1)
            ]
        );
    }

    #[test]
    fn the_log_entries_show_every_constraint_and_what_keeps_the_artifact_open() {
        let r = Reflection {
            iteration: 2,
            strategy: "direct_eval".into(),
            constraints: measured_states(&spec(), &measured()),
            required_missing: vec!["dist/a.svg".into()],
            regressions: vec!["`dist/x` was deleted from dist/".into()],
            ..Default::default()
        };
        let summary = reflect_summary(&r);
        assert_eq!(
            summary,
            "1 satisfied, 1 violated, 1 not checked of 3; 1 regression(s)"
        );
        let log = reflect_log(&r, &summary, &["a note".to_string()]);
        assert!(log.starts_with("## Iteration 2 — Reflect\n\nStrategy: direct_eval. 1 satisfied"));
        assert!(log.contains("| `b` | high | violated | measured | non_empty failed: empty |\n"));
        assert!(log.contains("\nRequired files not produced or verified by run ``: dist/a.svg\n"));
        assert!(log.contains("\nManifest: invalid\n"));
        assert!(log.ends_with("\nNote: a note\n"));
        assert_eq!(
            reflect_decision_log(&r, &summary),
            format!(
                "## Iteration 2 — Reflect\n\n- {summary}\n- Not satisfied (violated, or blocking and not measured): b\n- Regression: `dist/x` was deleted from dist/\n"
            )
        );
    }
}
