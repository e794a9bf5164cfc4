//! Reflect's judge: the model judges the constraints no check measures, and
//! only when this iteration's run completed (a judge would otherwise read
//! files the run did not produce).

use std::time::Instant;

use pmpo_ai::Phase;
use pmpo_ai::host::{Brief, Question};
use pmpo_store::states::ConstraintStatus;
use serde_json::Value;

use crate::content_type::Strategy;
use crate::controller::{Controller, SpecFile};
use crate::evidence::RunEvidence;
use crate::model::{self, Asked, Caller};
use crate::reflect::{Basis, ConstraintState};
use crate::startup::head_text;

/// How judging went.
#[derive(Debug, PartialEq)]
pub(crate) enum Judged {
    /// The model's judgements are in the constraints.
    Done,
    /// Nothing was judged, for the reason the note gives.
    Note(String),
    /// Ctrl-C while the model was asked.
    Cancelled,
    /// The host has not answered yet (`via = "host"`).
    AwaitingHost(Box<Question>),
}

impl Controller<'_, '_> {
    /// Judges the `open` constraints (indices into `constraints`).
    pub(crate) async fn judge(
        &mut self,
        spec: &SpecFile,
        constraints: &mut [ConstraintState],
        open: &[usize],
        ev: &RunEvidence,
        run_id: &str,
    ) -> Judged {
        let ids = |c: &[ConstraintState]| {
            open.iter()
                .map(|&i| c[i].id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !ev.complete() {
            // A judge would read files this run did not produce: no judgement.
            let why = format!(
                "this iteration's run `{run_id}` did not complete ({}): its files are not there to judge",
                crate::reflect::status_words(ev.status)
            );
            for &i in open {
                constraints[i].unproven = vec![why.clone()];
                constraints[i].run_id = run_id.to_string();
            }
            return Judged::Note(format!(
                "{} constraint(s) without a check are not judged: {why} ({})",
                open.len(),
                ids(constraints)
            ));
        }
        let Some(client) = self.client.clone() else {
            return Judged::Note(format!(
                "{} constraint(s) have no deterministic check and no model is configured: they stay not_checked ({})",
                open.len(),
                ids(constraints)
            ));
        };
        let prompt = self.judge_prompt(spec, constraints, open);
        let ids: Vec<String> = open.iter().map(|&i| constraints[i].id.clone()).collect();
        let caller = Caller {
            client: &client,
            ws: self.ws,
            refinement_id: &self.state.refinement_id,
            cancel: &self.env.exec.cancel,
        };
        // Only the open constraints are the host's (or model's) to judge;
        // the others are measured, and a verdict on them is refused.
        let brief = Brief {
            schema: serde_json::from_str(model::JUDGEMENT_SCHEMA).ok(),
            files: spec.required_files.clone(),
            measured: constraints
                .iter()
                .filter(|c| !ids.contains(&c.id))
                .map(|c| c.id.clone())
                .collect(),
        };
        let measured: Vec<(String, ConstraintStatus)> = constraints
            .iter()
            .filter(|c| !ids.contains(&c.id))
            .map(|c| (c.id.clone(), c.status))
            .collect();
        let open_ids = ids.clone();
        let check = move |v: &mut Value| judgement_problems(v, &ids, &measured);
        self.env.observer.note(&format!(
            "asking {} to judge {} constraint(s) no check measures",
            caller.who(
                Phase::Reflect,
                &format!("reflect-{}", self.state.current_iteration)
            ),
            open.len()
        ));
        let t_model = Instant::now();
        let iteration = self.state.current_iteration;
        let asked = caller
            .ask_json(
                Phase::Reflect,
                &format!("reflect-{iteration}"),
                prompt,
                &brief,
                &check,
            )
            .await;
        self.timings.model_ms += t_model.elapsed().as_secs_f64() * 1000.0;
        match asked {
            Asked::Valid { value, .. } => {
                apply_judgements(constraints, &value, &open_ids);
                Judged::Done
            }
            Asked::Invalid { problems } => Judged::Note(format!(
                "the model's judgement was invalid after one repair ({}); those constraints stay not_checked",
                problems.join("; ")
            )),
            Asked::Failed(e) => Judged::Note(format!(
                "no model judgement ({e}); those constraints stay not_checked"
            )),
            Asked::Cancelled => Judged::Cancelled,
            Asked::AwaitingHost(q) => Judged::AwaitingHost(q),
        }
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
                .filter(|c| c.status != ConstraintStatus::NotChecked)
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
}

/// What is wrong with a judgement answer: its schema, a verdict on a
/// constraint a check measures (its status is the check's), on one that does
/// not exist, or more than one verdict on the same constraint.
fn judgement_problems(
    v: &mut Value,
    ids: &[String],
    measured: &[(String, ConstraintStatus)],
) -> Vec<String> {
    model::tidy_judgement(v);
    let mut p = model::schema_problems(model::JUDGEMENT_SCHEMA, v);
    if !p.is_empty() {
        return p;
    }
    let only = format!("judge only: {}", ids.join(", "));
    let mut seen: Vec<&str> = Vec::new();
    for j in v["judgements"].as_array().into_iter().flatten() {
        let id = j["id"].as_str().unwrap_or("");
        if let Some((_, status)) = measured.iter().find(|(m, _)| m == id) {
            p.push(format!(
                "`{id}` is measured by a deterministic check (it is {status}): its status comes from the check, never from a judgement; {only}"
            ));
        } else if !ids.iter().any(|x| x == id) {
            p.push(format!(
                "`{id}` is not one of the constraints to judge (it is not a constraint of this artifact); {only}"
            ));
        } else if seen.contains(&id) {
            p.push(format!(
                "`{id}` is judged more than once: give one judgement per constraint"
            ));
        }
        seen.push(id);
    }
    p
}

/// The model's judgements of the `open` constraints, marked judged. A
/// verdict on any other constraint is never applied (the check above refuses
/// it first; this holds even if it did not).
fn apply_judgements(constraints: &mut [ConstraintState], answer: &Value, open: &[String]) {
    for j in answer["judgements"].as_array().into_iter().flatten() {
        let Some(id) = j["id"].as_str().filter(|id| open.iter().any(|o| o == id)) else {
            continue;
        };
        if let Some(c) = constraints
            .iter_mut()
            .find(|c| c.id == id && c.basis != Basis::Measured)
        {
            c.status = j["status"]
                .as_str()
                .and_then(ConstraintStatus::parse)
                .unwrap_or(ConstraintStatus::NotChecked);
            c.basis = Basis::Judged;
            c.evidence = format!(
                "judged by the model: {}",
                j["reason"].as_str().unwrap_or("")
            );
        }
    }
}

/// What the Reflect phase asks the model to look at, by strategy.
fn strategy_focus(strategy: &str) -> &'static str {
    match Strategy::parse(strategy) {
        Some(Strategy::PromptQuality) => {
            "Judge the prompt itself: clarity, specificity, fit for its target platform."
        }
        Some(Strategy::TestExecution) => "Judge the prompt and the test output it produced.",
        Some(Strategy::OutputInspection) | None => "Judge the generated artifact itself.",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn open(id: &str) -> ConstraintState {
        ConstraintState {
            id: id.into(),
            description: String::new(),
            severity: pmpo_plan::Severity::Medium,
            status: ConstraintStatus::NotChecked,
            basis: Basis::None,
            evidence: "no deterministic check".into(),
            run_id: String::new(),
            files: Vec::new(),
            unproven: Vec::new(),
        }
    }

    #[test]
    fn a_judgement_may_name_only_the_constraints_asked_about() {
        let ids = vec!["style".to_string()];
        let measured = vec![("png-sizes".to_string(), ConstraintStatus::Violated)];
        let mut ok = json!({"judgements": [{"id": "style", "status": "satisfied", "reason": "r"}]});
        assert!(judgement_problems(&mut ok, &ids, &measured).is_empty());
        let mut other = json!({"judgements": [
            {"id": "tests", "status": "satisfied", "reason": "r"},
            {"id": "png-sizes", "status": "satisfied", "reason": "looks fine"},
            {"id": "style", "status": "satisfied"},
            {"id": "style", "status": "violated"},
        ]});
        assert_eq!(
            judgement_problems(&mut other, &ids, &measured),
            [
                "`tests` is not one of the constraints to judge (it is not a constraint of this artifact); judge only: style",
                "`png-sizes` is measured by a deterministic check (it is violated): its status comes from the check, never from a judgement; judge only: style",
                "`style` is judged more than once: give one judgement per constraint",
            ]
        );
    }

    #[test]
    fn judgements_are_marked_judged_with_the_reason() {
        let mut cs = vec![open("style"), open("tone")];
        let ids = vec!["style".to_string(), "tone".to_string()];
        apply_judgements(
            &mut cs,
            &json!({"judgements": [{"id": "tone", "status": "violated", "reason": "too dry"}]}),
            &ids,
        );
        assert_eq!(cs[0], open("style"));
        assert_eq!(
            (cs[1].status, cs[1].basis, cs[1].evidence.as_str()),
            (
                ConstraintStatus::Violated,
                Basis::Judged,
                "judged by the model: too dry"
            )
        );
    }

    #[test]
    fn a_verdict_on_a_measured_or_unasked_constraint_is_never_applied() {
        let mut measured = open("svg-valid");
        measured.status = ConstraintStatus::Violated;
        measured.basis = Basis::Measured;
        let mut cs = vec![measured.clone(), open("style"), open("tone")];
        apply_judgements(
            &mut cs,
            &json!({"judgements": [
                {"id": "svg-valid", "status": "satisfied", "reason": "trust me"},
                {"id": "tone", "status": "satisfied", "reason": "not asked"},
            ]}),
            &["style".to_string(), "svg-valid".to_string()],
        );
        assert_eq!(cs[0], measured);
        assert_eq!(cs[2], open("tone"));
    }

    #[test]
    fn each_strategy_asks_the_judge_to_look_at_its_own_thing() {
        assert!(strategy_focus("prompt_quality").contains("the prompt itself"));
        assert!(strategy_focus("test_execution").contains("test output"));
        assert_eq!(
            strategy_focus("output_inspection"),
            "Judge the generated artifact itself."
        );
        for s in [
            Strategy::OutputInspection,
            Strategy::PromptQuality,
            Strategy::TestExecution,
        ] {
            assert_eq!(Strategy::parse(s.as_str()), Some(s));
        }
    }
}
