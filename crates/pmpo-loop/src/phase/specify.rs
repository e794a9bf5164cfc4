//! Specify: the adapter's default constraints, and the model's additions
//! when one is configured, become `specification.json` and `constraints.json`.

use std::time::Instant;

use pmpo_ai::Phase;
use pmpo_ai::host::Brief;
use pmpo_plan::{Constraint, Specification};
use serde_json::{Map, Value, json};

use crate::controller::{
    Controller, LoopError, LoopPhase, Outcome, SpecFile, constraint_lines, read_json, spec_path,
    write_json,
};
use crate::domain;
use crate::journal::REFINEMENT_LOG;
use crate::model::{self, Asked, Caller};

impl Controller<'_, '_> {
    /// `Some(Cancelled)` when Ctrl-C came while the model was asked: the
    /// phase is not checkpointed, so the next `pmpo refine` asks again.
    pub(crate) async fn specify(&mut self) -> Result<Option<Outcome>, LoopError> {
        let t = Instant::now();
        self.begin(LoopPhase::Specify);
        let inputs = self.ls.inputs.clone();
        let (defaults, _) =
            domain::build(&self.adapter_input(&inputs)).map_err(LoopError::Usage)?;
        let strategy = self.ls.evaluation_strategy.clone();
        let mut constraints = defaults.constraints.clone();
        let mut goals = defaults.goals.clone();
        let mut notes = defaults.notes.clone();
        let mut specified_by = "adapter".to_string();
        if let Some(client) = self.client.clone() {
            let prompt = self.specify_prompt(&constraints);
            let caller = Caller {
                client: &client,
                ws: self.ws,
                refinement_id: &self.state.refinement_id,
                cancel: &self.env.exec.cancel,
            };
            self.env.observer.note(&format!(
                "asking {} for a specification",
                caller.who(Phase::Specify, "specify")
            ));
            let t_model = Instant::now();
            let brief = Brief {
                schema: serde_json::from_str(model::SPECIFY_SCHEMA).ok(),
                files: inputs.clone(),
                measured: defaults
                    .checks
                    .iter()
                    .map(|c| c.constraint_id.clone())
                    .collect(),
            };
            let asked = caller
                .ask_json(Phase::Specify, "specify", prompt, &brief, &|v| {
                    model::tidy_specify(v);
                    model::schema_problems(model::SPECIFY_SCHEMA, v)
                })
                .await;
            self.timings.model_ms += t_model.elapsed().as_secs_f64() * 1000.0;
            match asked {
                Asked::Valid { value, repaired } => {
                    specified_by = if repaired { "model (after one repair)".into() } else { "model".into() };
                    merge_model_spec(&value, &mut constraints, &mut goals, &mut notes);
                }
                Asked::Invalid { problems } => notes.push(format!(
                    "the model's specification was invalid after one repair ({}); the adapter's defaults are used",
                    problems.join("; ")
                )),
                Asked::Failed(e) => notes.push(format!("no model specification ({e}); the adapter's defaults are used")),
                Asked::Cancelled => return Ok(Some(self.cancelled_in(LoopPhase::Specify))),
                Asked::AwaitingHost(q) => return self.awaiting_host(LoopPhase::Specify, *q).map(Some),
            }
        }
        let spec = Specification {
            artifact_name: self.state.artifact_name.clone(),
            artifact_type: self.state.artifact_type.clone(),
            content_type: Some(self.state.content_type.clone()),
            intent: self.ls.intent.clone(),
            constraints: constraints.clone(),
            metadata: self.spec_metadata(&goals, &strategy),
        };
        let ct = self.content_type_record(&inputs);
        let file = SpecFile {
            specification: spec,
            goals: goals.clone(),
            checks: defaults.checks.clone(),
            required_files: defaults.required_files.clone(),
            content_type: ct,
            specified_by: specified_by.clone(),
            notes: notes.clone(),
        };
        write_json(
            self.ws,
            &spec_path(&self.name()),
            &file,
            &self.state.refinement_id,
        )?;
        // constraints.json in the reference layout (the Execute phase adds statuses).
        write_json(
            self.ws,
            pmpo_engine::validation::CONSTRAINTS_FILE,
            &self.constraints_doc(&constraints),
            &self.state.refinement_id,
        )?;
        self.state.goals = goals;
        self.ls.respecify = false;
        self.state.constraints = constraints
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        let checked = file.checks.len();
        let summary = format!(
            "{} constraint(s), {} with a deterministic check; specified by {specified_by}",
            constraints.len(),
            checked
        );
        let mut body = self.specify_log(&specified_by, constraints.len(), checked);
        for n in &notes {
            body.push_str(&format!("- Note: {n}\n"));
            self.env.observer.note(n);
            // Also in the run's summary (a constraint left out, a tool missing).
            if !self.notes.contains(n) {
                self.notes.push(n.clone());
            }
        }
        self.log(
            REFINEMENT_LOG,
            &format!(
                "specify:{}:{}",
                self.state.current_iteration,
                self.state.checkpoints.len()
            ),
            &body,
        )?;
        self.end(LoopPhase::Specify, &summary, t)?;
        Ok(None)
    }

    /// The specification's `metadata`: its goals and how it is refined.
    fn spec_metadata(&self, goals: &[String], strategy: &str) -> Map<String, Value> {
        Map::from_iter([
            ("goals".to_string(), json!(goals)),
            ("evaluation_strategy".to_string(), json!(strategy)),
            ("refinement_id".to_string(), json!(self.state.refinement_id)),
            (
                "requires_approval".to_string(),
                json!(self.ls.requires_approval),
            ),
            (
                "max_iterations".to_string(),
                json!(self.state.max_iterations),
            ),
        ])
    }

    /// What `specification.json` says of the content type and its evaluation.
    fn content_type_record(&self, inputs: &[String]) -> Value {
        let mut ct = json!({
            "content_type": self.state.content_type,
            "evaluation_strategy": self.ls.evaluation_strategy,
            "test_generation": self.ls.test_generation && self.client.is_some(),
            "detected_by": self.ls.content_type_source,
        });
        if let Some(p) = &self.ls.target_platform {
            ct["target_platform"] = json!(p);
        }
        if !self.ls.components.is_empty() {
            ct["components"] = Value::Array(
                domain::component_strategies(&self.adapter_input(inputs))
                    .into_iter()
                    .map(|(slug, c, s)| json!({"id": slug, "content_type": c, "evaluation_strategy": s.as_str()}))
                    .collect(),
            );
        }
        ct
    }

    /// The head of the Specify entry of `refinement-log.md`.
    fn specify_log(&self, specified_by: &str, constraints: usize, checked: usize) -> String {
        format!(
            "## Iteration {} — Specify\n\n- Artifact: `{}` ({}, {}), evaluated by {}\n- Specified by: {specified_by}\n- Constraints: {constraints} ({checked} with a deterministic check)\n",
            self.state.current_iteration,
            self.state.artifact_name,
            self.state.artifact_type,
            self.state.content_type,
            self.ls.evaluation_strategy,
        )
    }

    /// `constraints.json` in the reference layout.
    fn constraints_doc(&self, constraints: &[Constraint]) -> Value {
        json!({
            "artifact_type": self.state.artifact_type,
            "artifact_name": self.state.artifact_name,
            "constraints": constraints,
            "global_rules": ["Deterministic checks decide; the model judges only what no check measures."],
            "termination_conditions": [
                "all blocking constraints satisfied, every required file in dist/, the manifest valid, no high constraint violated",
                format!("or {} iterations", self.state.max_iterations),
            ],
        })
    }

    fn specify_prompt(&self, defaults: &[Constraint]) -> String {
        format!(
            "Phase: Specify. Turn the intent into a structured specification.\n\n\
Artifact: {name} (type {t}, content type {ct}).\nIntent: {intent}\nInputs: {inputs}\n\n\
The domain adapter already sets these constraints (each with a deterministic check where one exists):\n{defaults}\n\n\
Answer with JSON: {{\"goals\": [\"...\"], \"constraints\": [{{\"id\": \"kebab-id\", \"description\": \"...\", \"severity\": \"blocking|high|medium|low\", \"type\": \"visual|structural|semantic|technical|brand|performance|accessibility\"}}]}}.\n\
List only constraints the defaults do not cover; each must be something a reviewer can judge from the artifact.",
            name = self.state.artifact_name,
            t = self.state.artifact_type,
            ct = self.state.content_type,
            intent = self.intent_text(),
            inputs = self.inputs_text(),
            defaults = constraint_lines(defaults),
        )
    }

    pub(crate) fn intent_text(&self) -> &str {
        self.ls.intent.as_deref().unwrap_or("(none given)")
    }

    pub(crate) fn inputs_text(&self) -> String {
        if self.ls.inputs.is_empty() {
            "(none)".to_string()
        } else {
            self.ls.inputs.join(", ")
        }
    }

    pub(crate) fn load_spec(&self) -> Result<SpecFile, LoopError> {
        read_json(self.ws, &spec_path(&self.name()))?.ok_or_else(|| LoopError::Corrupt {
            path: spec_path(&self.name()),
            detail: "missing".into(),
        })
    }
}

/// Adds the model's goals and constraints to the adapter's: a constraint
/// whose id the defaults already have is not taken (the default is kept), and
/// one that does not fit the constraint format is dropped, with a note.
fn merge_model_spec(
    answer: &Value,
    constraints: &mut Vec<Constraint>,
    goals: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    for g in answer["goals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !goals.iter().any(|x| x == g) {
            goals.push(g.to_string());
        }
    }
    let defaults = constraints.len();
    for c in answer["constraints"].as_array().into_iter().flatten() {
        match serde_json::from_value::<Constraint>(c.clone()) {
            Ok(c) if !constraints.iter().any(|x| x.id == c.id) => constraints.push(c),
            Ok(c) if constraints[..defaults].iter().any(|x| x.id == c.id) => notes.push(format!(
                "the model's constraint `{}` repeats a default one; the default is kept",
                c.id
            )),
            Ok(c) => notes.push(format!(
                "the model gives constraint `{}` twice; the first is kept",
                c.id
            )),
            Err(e) => notes.push(format!("a constraint of the model was dropped: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_adds_goals_and_constraints_but_never_replaces_a_default() {
        let mut constraints: Vec<Constraint> = serde_json::from_value(json!([
            {"id": "svg-valid", "description": "well-formed", "severity": "blocking"},
        ]))
        .unwrap();
        let mut goals = vec!["a logo".to_string()];
        let mut notes = Vec::new();
        let answer = json!({
            "goals": ["a logo", "reads at 16 px"],
            "constraints": [
                {"id": "svg-valid", "description": "valid", "severity": "low"},
                {"id": "legible", "description": "legible at 16 px", "severity": "high", "type": "visual"},
                {"id": "odd", "description": "x", "severity": "urgent"},
                {"id": "legible", "description": "anything", "severity": "low"},
            ],
        });
        merge_model_spec(&answer, &mut constraints, &mut goals, &mut notes);
        assert_eq!(goals, ["a logo", "reads at 16 px"]);
        let ids: Vec<&str> = constraints.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["svg-valid", "legible"]);
        assert_eq!(constraints[0].severity, pmpo_plan::Severity::Blocking);
        assert_eq!(constraints[1].severity, pmpo_plan::Severity::High);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].contains("`svg-valid` repeats a default one"));
        assert!(notes[1].starts_with("a constraint of the model was dropped"));
        assert_eq!(
            notes[2],
            "the model gives constraint `legible` twice; the first is kept"
        );
    }
}
