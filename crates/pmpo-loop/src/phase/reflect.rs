//! Reflect: each constraint's status from the run's checks (measured), the
//! model's judgement of those no check measures (judged), the evidence rule,
//! the artifact's files and the regression checklist, written as
//! `reflections/iteration-N.json`.

use std::time::Instant;

use pmpo_ai::Phase;
use pmpo_store::{Workspace, now_rfc3339};
use serde_json::{Map, Value, json};

use crate::controller::{
    Controller, LoopError, Outcome, SpecFile, plan_path, read_json, reflection_path, write_json,
};
use crate::domain;
use crate::evidence::{PathPattern, RunEvidence};
use crate::journal::{DECISIONS, REFINEMENT_LOG, cell};
use crate::model::{self, Asked, Caller};
use crate::reflect::{self, ConstraintState, ExecutionSummary, Reflection};
use crate::startup::head_text;

impl Controller<'_, '_> {
    /// `Some(Cancelled)` when Ctrl-C came while the model was judging.
    pub(crate) async fn reflect(&mut self) -> Result<Option<Outcome>, LoopError> {
        let t = Instant::now();
        self.begin("reflect");
        let iteration = self.state.current_iteration;
        let spec = self.load_spec()?;
        let run_id = self.ls.run_id.clone().unwrap_or_default();
        // The Execute phase's constraint statuses, if they are this run's.
        let measured: Value = read_json(self.ws, pmpo_engine::validation::CONSTRAINTS_FILE)
            .ok()
            .flatten()
            .filter(|v: &Value| v["run_id"].as_str() == Some(run_id.as_str()))
            .unwrap_or(Value::Null);
        let checked_ids: Vec<&str> = spec
            .checks
            .iter()
            .map(|c| c.constraint_id.as_str())
            .collect();
        let mut constraints: Vec<ConstraintState> = spec
            .specification
            .constraints
            .iter()
            .map(|c| {
                let m = measured["constraints"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["id"].as_str() == Some(c.id.as_str())));
                let status = m
                    .and_then(|x| x["status"].as_str())
                    .unwrap_or("not_checked")
                    .to_string();
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
                let basis = if status == "not_checked" {
                    "none"
                } else {
                    "measured"
                };
                ConstraintState {
                    id: c.id.clone(),
                    description: c.description.clone(),
                    severity: c.severity.to_string(),
                    status,
                    basis: basis.into(),
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
            .collect();
        let results: Value = read_json(self.ws, pmpo_engine::RESULTS_FILE)
            .ok()
            .flatten()
            .unwrap_or(Value::Null);
        let same_run = results["run_id"].as_str() == Some(run_id.as_str());
        let execution = if same_run {
            ExecutionSummary {
                run_id: run_id.clone(),
                status: results["status"].as_str().unwrap_or("").into(),
                stages: results["stages"].as_array().map_or(0, Vec::len),
                failed_stages: results["stages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| {
                        s["status"].as_str().is_some_and(|st| {
                            st.eq_ignore_ascii_case("failed") || st.eq_ignore_ascii_case("timeout")
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
        } else {
            ExecutionSummary {
                run_id: run_id.clone(),
                ..Default::default()
            }
        };
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
        // Every constraint a check measures (or tried to: the engine may already
        // have found its files unproven) names the run and the files it rests on.
        for c in constraints.iter_mut() {
            let mine: Vec<&Value> = checks_run
                .iter()
                .filter(|k| k["constraint_id"].as_str() == Some(c.id.as_str()))
                .collect();
            if c.basis != "measured" && mine.is_empty() {
                continue;
            }
            let mut files = Vec::new();
            let mut unproven = Vec::new();
            for k in mine {
                let (f, u) = ev.assess(&k["with"]);
                files.extend(f);
                unproven.extend(u);
            }
            c.run_id = run_id.clone();
            if c.basis != "measured" {
                // Not measured: nothing to overrule, only the files to name.
                c.unproven = unproven;
                continue;
            }
            if unproven.is_empty() {
                c.files = files;
                c.files.dedup();
            } else if c.status == "violated" {
                // A violation is never a false success: it stands, and says
                // that the files it was seen on are not this run's own.
                c.unproven = unproven;
            } else {
                c.evidence = format!(
                    "not evidence: its check read files this iteration did not produce or verify (the check said {}: {})",
                    c.status, c.evidence
                );
                c.status = "not_checked".into();
                c.basis = "none".into();
                c.unproven = unproven;
            }
        }
        let mut notes = Vec::new();
        // Only constraints without a check go to the model, and are marked
        // judged. A check that ran and could not observe (`not_checked`), or
        // read unproven files, is not handed to a judge who cannot observe
        // either: it stays not_checked.
        // (`execution_required: false` items are the plan's way of asking
        // for a judgement: they are not checks.)
        let has_check = |id: &str| {
            spec.checks
                .iter()
                .any(|k| k.constraint_id == id && k.execution_required)
                || checks_run.iter().any(|k| {
                    k["constraint_id"].as_str() == Some(id)
                        && k["execution_required"].as_bool() != Some(false)
                })
        };
        let open: Vec<usize> = constraints
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.status == "not_checked" && c.unproven.is_empty() && !has_check(&c.id)
            })
            .map(|(i, _)| i)
            .collect();
        if !open.is_empty() && !ev.complete() {
            // A judge would read files this run did not produce: no judgement.
            let why = format!(
                "this iteration's run `{run_id}` did not complete ({}): its files are not there to judge",
                if ev.status.is_empty() {
                    "no results"
                } else {
                    ev.status.as_str()
                }
            );
            for &i in &open {
                constraints[i].unproven = vec![why.clone()];
                constraints[i].run_id = run_id.clone();
            }
            notes.push(format!(
                "{} constraint(s) without a check are not judged: {why} ({})",
                open.len(),
                open.iter()
                    .map(|&i| constraints[i].id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        } else if !open.is_empty() {
            if let Some(client) = self.client.clone() {
                let prompt = self.judge_prompt(&spec, &constraints, &open);
                let ids: Vec<String> = open.iter().map(|&i| constraints[i].id.clone()).collect();
                let caller = Caller {
                    client: &client,
                    ws: self.ws,
                    refinement_id: &self.state.refinement_id,
                    cancel: &self.env.exec.cancel,
                };
                let check = move |v: &mut Value| -> Vec<String> {
                    model::tidy_judgement(v);
                    let mut p = model::schema_problems(model::JUDGEMENT_SCHEMA, v);
                    if p.is_empty() {
                        for j in v["judgements"].as_array().into_iter().flatten() {
                            let id = j["id"].as_str().unwrap_or("");
                            if !ids.iter().any(|x| x == id) {
                                p.push(format!(
                                    "`{id}` is not one of the constraints to judge ({})",
                                    ids.join(", ")
                                ));
                            }
                        }
                    }
                    p
                };
                self.env.observer.note(&format!(
                    "asking the model to judge {} constraint(s) no check measures",
                    open.len()
                ));
                let t_model = Instant::now();
                let asked = caller
                    .ask_json(
                        Phase::Reflect,
                        &format!("reflect-{iteration}"),
                        prompt,
                        &check,
                    )
                    .await;
                self.timings.model_ms += t_model.elapsed().as_secs_f64() * 1000.0;
                match asked {
                    Asked::Valid { value, .. } => {
                        for j in value["judgements"].as_array().into_iter().flatten() {
                            if let Some(c) = constraints.iter_mut().find(|c| Some(c.id.as_str()) == j["id"].as_str()) {
                                c.status = j["status"].as_str().unwrap_or("not_checked").into();
                                c.basis = "judged".into();
                                c.evidence = format!("judged by the model: {}", j["reason"].as_str().unwrap_or(""));
                            }
                        }
                    }
                    Asked::Invalid { problems } => notes.push(format!(
                        "the model's judgement was invalid after one repair ({}); those constraints stay not_checked",
                        problems.join("; ")
                    )),
                    Asked::Failed(e) => notes.push(format!("no model judgement ({e}); those constraints stay not_checked")),
                    Asked::Cancelled => return Ok(Some(self.cancelled_in("reflect"))),
                }
            } else {
                notes.push(format!(
                    "{} constraint(s) have no deterministic check and no model is configured: they stay not_checked ({})",
                    open.len(),
                    open.iter().map(|&i| constraints[i].id.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        // Files: required ones (present only when this run recorded them),
        // this artifact's own outputs in dist/, empty ones, its manifest entries.
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
            .filter(|f| owned_entry(f, &manifest, &name, &run_id))
            .count();
        let mut params = Map::new();
        params.insert("path".into(), json!(pmpo_engine::MANIFEST_FILE));
        params.insert("verify_digests".into(), json!(true));
        params.insert("owner".into(), json!(name));
        let outcome = pmpo_checks::run_check(self.ws, "manifest", &params);
        let mut r = Reflection {
            iteration,
            strategy: self.ls.evaluation_strategy.clone(),
            constraints,
            execution,
            required_missing,
            unproven: {
                let mut u: Vec<String> = ev
                    .unproven
                    .iter()
                    .map(|(o, why)| format!("`{o}`: {why}"))
                    .collect();
                u.dedup();
                u
            },
            manifest_valid: outcome.passed(),
            manifest_problem: (!outcome.passed()).then(|| outcome.message.clone()),
            manifest_files,
            dist_files,
            empty_files,
            regressions: vec![],
            components: vec![],
            notes: notes.clone(),
            reflected_at: now_rfc3339(),
        };
        r.regressions = reflect::regressions(&r, before.as_ref());
        r.components = self
            .components()
            .into_iter()
            .map(|(id, content_type, strategy)| {
                let mine: Vec<&ConstraintState> = r
                    .constraints
                    .iter()
                    .filter(|c| c.id.starts_with(&format!("{id}_")))
                    .collect();
                let n = |s: &str| mine.iter().filter(|c| c.status == s).count();
                reflect::ComponentSummary {
                    satisfied: n("satisfied"),
                    violated: n("violated"),
                    not_checked: n("not_checked"),
                    id,
                    content_type,
                    strategy,
                }
            })
            .collect();
        write_json(
            self.ws,
            &reflection_path(&self.name(), iteration),
            &r,
            &self.state.refinement_id,
        )?;
        for n in &notes {
            self.env.observer.note(n);
        }
        let summary = format!(
            "{} satisfied, {} violated, {} not checked of {}; {} regression(s)",
            r.count("satisfied"),
            r.count("violated"),
            r.count("not_checked"),
            r.constraints.len(),
            r.regressions.len()
        );
        let mut body = format!(
            "## Iteration {iteration} — Reflect\n\nStrategy: {}. {summary}.\n\n| Constraint | Severity | Status | Basis | Evidence |\n|---|---|---|---|---|\n",
            r.strategy
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
        for n in &notes {
            body.push_str(&format!("\nNote: {n}\n"));
        }
        self.log(REFINEMENT_LOG, &format!("reflect:{iteration}"), &body)?;
        let mut d = format!("## Iteration {iteration} — Reflect\n\n- {summary}\n");
        if !r.unsatisfied().is_empty() {
            d.push_str(&format!(
                "- Not satisfied (violated, or blocking and not measured): {}\n",
                r.unsatisfied().join(", ")
            ));
        }
        for g in &r.regressions {
            d.push_str(&format!("- Regression: {g}\n"));
        }
        self.log(DECISIONS, &format!("reflect:{iteration}"), &d)?;
        if !r.regressions.is_empty() {
            self.fire(
                "on_regression",
                Some("reflect"),
                json!({"regressions": r.regressions, "count": r.regressions.len()}),
            );
        }
        self.end("reflect", &summary, t)?;
        Ok(None)
    }

    fn judge_prompt(
        &self,
        spec: &SpecFile,
        constraints: &[ConstraintState],
        open: &[usize],
    ) -> String {
        let mut artifact = String::new();
        let mut budget = 16_000usize;
        for f in &spec.required_files {
            let text = head_text(self.ws, f, 4000);
            if text.is_empty() || budget == 0 {
                continue;
            }
            let take: String = text.chars().take(budget.min(4000)).collect();
            budget = budget.saturating_sub(take.len());
            artifact.push_str(&format!("--- {f}\n{take}\n"));
        }
        let focus = strategy_focus(&self.ls.evaluation_strategy);
        let comps = self.components();
        let component_of = |id: &str| comps.iter().find(|c| id.starts_with(&format!("{}_", c.0)));
        let mut focus = focus.to_string();
        if !comps.is_empty() {
            focus = "This is a composite: judge each component by its own strategy.".into();
            for (slug, ct, strategy) in &comps {
                focus.push_str(&format!("\n- {slug} ({ct}): {}", strategy_focus(strategy)));
            }
        }
        format!(
            "Phase: Reflect. {focus}\n\nArtifact: {name} ({t}, {ct}). Intent: {intent}\n\n\
Measured by deterministic checks (do not re-judge these):\n{measured}\n\n\
Judge only these constraints:\n{open}\n\nThe artifact's files:\n{artifact}\n\
Answer with JSON: {{\"judgements\": [{{\"id\": \"...\", \"status\": \"satisfied|violated\", \"reason\": \"...\"}}]}}.",
            name = self.state.artifact_name,
            t = self.state.artifact_type,
            ct = self.state.content_type,
            intent = self.ls.intent.as_deref().unwrap_or("(none given)"),
            measured = constraints
                .iter()
                .filter(|c| c.status != "not_checked")
                .map(|c| format!("- {} {}", c.id, c.status))
                .collect::<Vec<_>>()
                .join("\n"),
            open = open
                .iter()
                .map(|&i| match component_of(&constraints[i].id) {
                    Some((_, _, strategy)) => format!(
                        "- {}: {} (evaluate by {strategy})",
                        constraints[i].id, constraints[i].description
                    ),
                    None => format!("- {}: {}", constraints[i].id, constraints[i].description),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
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

/// What the Reflect phase asks the model to look at, by strategy.
fn strategy_focus(strategy: &str) -> &'static str {
    match strategy {
        "prompt_quality" => {
            "Judge the prompt itself: clarity, specificity, fit for its target platform."
        }
        "test_execution" => "Judge the prompt and the test output it produced.",
        _ => "Judge the generated artifact itself.",
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
