//! Plan: the adapter's deterministic plan, or the model's when it passes
//! every static check, written as `plans/iteration-N.json`.

use std::path::PathBuf;
use std::time::Instant;

use pmpo_ai::Phase;
use pmpo_ai::host::Brief;
use pmpo_engine::Engine;
use pmpo_plan::{PlanDocument, ValidationItem};
use pmpo_store::states::ConstraintStatus;
use serde::Serialize;
use serde_json::{Value, json};

use crate::controller::{
    Controller, LoopError, LoopPhase, Outcome, SpecFile, constraint_lines, plan_path, read_json,
    reflection_path, write_json,
};
use crate::domain;
use crate::journal::REFINEMENT_LOG;
use crate::model::{self, Asked, Caller};
use crate::reflect::Reflection;

impl Controller<'_, '_> {
    /// `Some(Cancelled)` when Ctrl-C came while the model was asked.
    pub(crate) async fn plan(&mut self) -> Result<Option<Outcome>, LoopError> {
        let t = Instant::now();
        self.begin(LoopPhase::Plan);
        let spec = self.load_spec()?;
        let inputs = self.ls.inputs.clone();
        let (_, deterministic) =
            domain::build(&self.adapter_input(&inputs)).map_err(LoopError::Usage)?;
        let iteration = self.state.current_iteration;
        let mut notes = Vec::new();
        let mut planned_by = "adapter".to_string();
        let mut stages = deterministic.stages.clone();
        let mut extra_checks: Vec<ValidationItem> = Vec::new();
        if let Some(client) = self.client.clone() {
            let prompt = self.plan_prompt(&spec, &deterministic.stages);
            let caller = Caller {
                client: &client,
                ws: self.ws,
                refinement_id: &self.state.refinement_id,
                cancel: &self.env.exec.cancel,
            };
            let engine = self.env.engine.clone();
            let spec_for_check = spec.clone();
            let name = self.name();
            let check = move |v: &mut Value| -> Vec<String> {
                // What a proposed plan may not do comes first, in its own
                // words: the host sees why in the repair question.
                let refused = refusals(v);
                if !refused.is_empty() {
                    return refused;
                }
                match assemble(&spec_for_check, v) {
                    Err(e) => vec![e],
                    Ok(doc) => plan_problems(&engine, &doc, &name, iteration),
                }
            };
            let who = caller.who(Phase::Plan, &format!("plan-{iteration}"));
            self.env.observer.note(&format!("asking {who} for a plan"));
            let t_model = Instant::now();
            let brief = Brief {
                schema: serde_json::from_str(model::PLAN_SCHEMA).ok(),
                files: self.ls.inputs.clone(),
                measured: spec
                    .checks
                    .iter()
                    .map(|c| c.constraint_id.clone())
                    .collect(),
            };
            let asked = caller
                .ask_json(
                    Phase::Plan,
                    &format!("plan-{iteration}"),
                    prompt,
                    &brief,
                    &check,
                )
                .await;
            self.timings.model_ms += t_model.elapsed().as_secs_f64() * 1000.0;
            match asked {
                Asked::Valid { value, repaired } => {
                    if let Ok(doc) = assemble(&spec, &value) {
                        stages = doc.plan.stages;
                        extra_checks = doc.plan.validation_plan;
                        planned_by = if repaired { "model (after one repair)".into() } else { "model".into() };
                    }
                }
                Asked::Invalid { problems } => notes.push(format!(
                    "the model's plan was invalid after one repair ({}); the adapter's plan is used",
                    problems.join("; ")
                )),
                Asked::Failed(e) => notes.push(format!("no model plan ({e}); the adapter's plan is used")),
                Asked::Cancelled => return Ok(Some(self.cancelled_in(LoopPhase::Plan))),
                Asked::AwaitingHost(q) => return self.awaiting_host(LoopPhase::Plan, *q).map(Some),
            }
        }
        let validation_plan = validation_plan(&spec, extra_checks, &mut notes);
        let tool_invocations: Vec<Value> = stages
            .iter()
            .map(|s| json!({"stage": s.id, "tool": s.tool_name(), "purpose": s.description}))
            .collect();
        let doc = json!({
            "specification": spec.specification,
            "plan": {
                "stages": stages,
                "tool_invocations": tool_invocations,
                "state_updates": {"iteration": iteration, "focus": self.ls.focus, "planned_by": planned_by},
                "validation_plan": validation_plan,
            }
        });
        let rel = plan_path(&self.name(), iteration);
        write_json(self.ws, &rel, &doc, &self.state.refinement_id)?;
        let problems = plan_problems(&self.env.engine, &doc, &self.name(), iteration);
        if !problems.is_empty() {
            return Err(LoopError::Plan {
                iteration,
                diagnostics: problems.join("\n"),
            });
        }
        let n = doc["plan"]["stages"].as_array().map_or(0, Vec::len);
        let summary = format!("{n} stage(s) by {planned_by}; plan in {rel}");
        let mut body = format!(
            "## Iteration {iteration} — Plan\n\n- Planned by: {planned_by}\n- Stages: {}\n- Plan: `{rel}`\n",
            doc["plan"]["stages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| format!("`{}`", s["id"].as_str().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !self.ls.focus.is_empty() {
            body.push_str(&format!("- Focus: {}\n", self.ls.focus.join(", ")));
        }
        for n in &notes {
            body.push_str(&format!("- Note: {n}\n"));
            self.env.observer.note(n);
        }
        self.log(REFINEMENT_LOG, &format!("plan:{iteration}"), &body)?;
        self.end(LoopPhase::Plan, &summary, t)?;
        Ok(None)
    }

    fn plan_prompt(&self, spec: &SpecFile, baseline: &[pmpo_plan::Stage]) -> String {
        let last = self.state.current_iteration.checked_sub(1).and_then(|i| {
            read_json::<Reflection>(self.ws, &reflection_path(&self.name(), i))
                .ok()
                .flatten()
        });
        let findings = match &last {
            Some(r) => r
                .constraints
                .iter()
                .filter(|c| c.status != ConstraintStatus::Satisfied)
                .map(|c| format!("- {} [{}] {}: {}", c.id, c.severity, c.status, c.evidence))
                .collect::<Vec<_>>()
                .join("\n"),
            None => "(first iteration)".into(),
        };
        format!(
            "Phase: Plan. Convert the specification into an executable plan for iteration {it}.\n\n\
Artifact: {name} ({t}, {ct}). Intent: {intent}\nInputs: {inputs}\n\nConstraints:\n{constraints}\n\n\
Focus on: {focus}\nFindings of the last iteration:\n{findings}\n\n\
The deterministic baseline plan (stages as JSON):\n{baseline}\n\n\
Tools: run (with: command argv list), template, rasterize, markdown, preview, prompt, a2ui, ai. Write outputs under dist/.\n\
Answer with JSON: {{\"stages\": [...stages like the baseline...], \"validation_plan\": [{{\"constraint_id\": \"...\", \"validation_method\": \"CHECK\", \"with\": {{...}}}}]}}.",
            it = self.state.current_iteration,
            name = self.state.artifact_name,
            t = self.state.artifact_type,
            ct = self.state.content_type,
            intent = self.intent_text(),
            inputs = self.inputs_text(),
            constraints = constraint_lines(&spec.specification.constraints),
            focus = if self.ls.focus.is_empty() {
                "(everything)".to_string()
            } else {
                self.ls.focus.join(", ")
            },
            baseline = serde_json::to_string(baseline).unwrap_or_default(),
        )
    }
}

/// The plan's checks. Deterministic first: every constraint with a check
/// keeps its check, whatever the plan says; the plan may add checks for the
/// others (of constraints the specification has).
fn validation_plan(
    spec: &SpecFile,
    extra: Vec<ValidationItem>,
    notes: &mut Vec<String>,
) -> Vec<ValidationItem> {
    let mut plan = spec.checks.clone();
    for item in extra {
        if spec
            .checks
            .iter()
            .any(|k| k.constraint_id == item.constraint_id)
        {
            notes.push(format!(
                "the plan's check for `{}` is not used: that constraint is measured by its own check, which no plan replaces",
                item.constraint_id
            ));
        }
        if !plan.iter().any(|v| v.constraint_id == item.constraint_id)
            && spec
                .specification
                .constraints
                .iter()
                .any(|c| c.id == item.constraint_id)
        {
            plan.push(item);
        }
    }
    plan
}

/// Fields of a stage's record once it ran (`execution_results.json`): a plan
/// that sets them claims a result no run produced.
const RAN_FIELDS: &[&str] = &[
    "status",
    "state",
    "completed",
    "complete",
    "done",
    "result",
    "results",
    "cached",
    "outcome",
    "exit_code",
    "exit_status",
    "started_at",
    "finished_at",
    "duration_ms",
    "files",
    "generated_files",
    "skipped",
    "error",
    "errors",
    "passed",
    "validations",
];

const CONFINEMENT: &str = "a plan from a model or a host may not loosen confinement (sandbox, env_passthrough, network); only a person's plan file run with `pmpo execute` may";

/// What a plan proposed by a model or a host may not do, in words the host
/// can act on: claim a stage already ran (its status, result or files come
/// only from running it), or loosen confinement (`sandbox: false`,
/// `network: true`, `env_passthrough`, a preview's `network` or a check's
/// `allow_network`). A person's plan file is not checked here.
pub fn refusals(answer: &Value) -> Vec<String> {
    let answer = match answer.get("plan") {
        Some(inner) if inner.get("stages").is_some() && answer.get("stages").is_none() => inner,
        _ => answer,
    };
    let mut p = Vec::new();
    for (i, stage) in answer["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(obj) = stage.as_object() else {
            continue;
        };
        let who = match obj.get("id").and_then(Value::as_str) {
            Some(id) => format!("stage `{id}`"),
            None => format!("stage {}", i + 1),
        };
        for f in RAN_FIELDS.iter().filter(|f| obj.contains_key(**f)) {
            p.push(format!(
                "{who} sets `{f}`: a stage's status, result and files come only from running it; remove `{f}`"
            ));
        }
        if let Some(v) = obj.get("sandbox").filter(|v| **v != Value::Bool(true)) {
            p.push(format!(
                "{who} sets `sandbox: {v}`: {CONFINEMENT}; remove `sandbox`"
            ));
        }
        if let Some(v) = obj.get("network").filter(|v| **v != Value::Bool(false)) {
            p.push(format!(
                "{who} sets `network: {v}`: {CONFINEMENT}; remove `network`"
            ));
        }
        for out in written_by(obj) {
            if let Some(own) = pmpo_report(&out) {
                p.push(format!(
                    "{who} would write `{out}`: `{own}` is pmpo's own record of the run, written only by pmpo; write the artifact's files under dist/"
                ));
            }
        }
        let mut withs = vec![("with", obj.get("with"))];
        withs.push((
            "fallback.with",
            obj.get("fallback").and_then(|f| f.get("with")),
        ));
        for (place, with) in withs {
            let Some(with) = with else { continue };
            if with.get("env_passthrough").is_some() {
                p.push(format!(
                    "{who} sets `{place}.env_passthrough`: {CONFINEMENT}; remove it (secret variables stay kept from stages)"
                ));
            }
            if let Some(v) = with.get("network").filter(|v| **v != Value::Bool(false)) {
                p.push(format!(
                    "{who} sets `{place}.network: {v}`: {CONFINEMENT}; remove it"
                ));
            }
        }
        for k in obj
            .get("validate")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(v) = k["with"]
                .get("allow_network")
                .filter(|v| **v != Value::Bool(false))
            {
                p.push(format!(
                    "{who} has a check with `allow_network: {v}`: {CONFINEMENT}; remove it"
                ));
            }
        }
    }
    for k in answer["validation_plan"].as_array().into_iter().flatten() {
        if let Some(v) = k["with"]
            .get("allow_network")
            .filter(|v| **v != Value::Bool(false))
        {
            p.push(format!(
                "the check for `{}` sets `allow_network: {v}`: {CONFINEMENT}; remove it",
                k["constraint_id"].as_str().unwrap_or("?")
            ));
        }
    }
    p
}

/// The files pmpo writes to record a run and its verdicts: no stage may.
const REPORTS: &[&str] = &[
    pmpo_engine::validation::CONSTRAINTS_FILE,
    pmpo_engine::MANIFEST_FILE,
    REFINEMENT_LOG,
    crate::journal::DECISIONS,
];

/// What a stage says it writes: its `outputs` and its tool's output paths.
fn written_by(stage: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = match stage.get("outputs") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    for key in ["output", "meta", "out_dir"] {
        if let Some(s) = stage
            .get("with")
            .and_then(|w| w.get(key))
            .and_then(Value::as_str)
        {
            out.push(s.to_string());
        }
    }
    out
}

/// The report of pmpo's that writing `pattern` would touch, if any (the
/// file itself, a glob that matches it, or the whole workspace).
fn pmpo_report(pattern: &str) -> Option<&'static str> {
    let p = pattern.trim().trim_start_matches("./");
    if p.is_empty() || p == "." || p == "*" || p == "**" {
        return Some(REPORTS[0]);
    }
    let glob = globset::Glob::new(p).ok().map(|g| g.compile_matcher());
    REPORTS
        .iter()
        .find(|r| p == **r || glob.as_ref().is_some_and(|g| g.is_match(r)))
        .copied()
}

/// A plan document from the specification and the model's `{stages, validation_plan}`.
pub(crate) fn assemble(spec: &SpecFile, answer: &Value) -> Result<PlanDocument, String> {
    // A whole plan document (`{"plan": {"stages": ...}}`) is accepted too.
    let answer = match answer.get("plan") {
        Some(inner) if inner.get("stages").is_some() && answer.get("stages").is_none() => inner,
        _ => answer,
    };
    let stages = answer
        .get("stages")
        .cloned()
        .ok_or("the answer has no `stages`")?;
    let validation_plan = answer.get("validation_plan").cloned().unwrap_or(json!([]));
    let doc = json!({
        "specification": spec.specification,
        "plan": {"stages": stages, "validation_plan": validation_plan},
    });
    serde_json::from_value(doc).map_err(|e| format!("the plan does not fit the plan format: {e}"))
}

/// Every static check of the plan format (the project's plan schema).
pub(crate) fn plan_problems(
    engine: &Engine,
    doc: &impl Serialize,
    name: &str,
    iteration: u64,
) -> Vec<String> {
    let text = match serde_json::to_string_pretty(doc) {
        Ok(t) => t,
        Err(e) => return vec![e.to_string()],
    };
    let display = plan_path(name, iteration);
    match pmpo_plan::parse_plan_text(text, PathBuf::from(&display), display.clone()) {
        Ok(loaded) => engine
            .check(&loaded)
            .iter()
            .map(|d| d.to_string())
            .collect(),
        Err(diags) => diags.iter().map(|d| d.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SpecFile {
        super::super::test_spec(
            "code",
            json!([
                {"id": "syntax", "description": "parses", "severity": "blocking"},
                {"id": "style", "description": "reads well", "severity": "low"},
            ]),
            json!([{"constraint_id": "syntax", "validation_method": "syntax", "with": {"path": "a.py"}}]),
            json!([]),
        )
    }

    #[test]
    fn the_plan_may_add_checks_but_never_replace_one() {
        let extra: Vec<ValidationItem> = serde_json::from_value(json!([
            {"constraint_id": "syntax", "validation_method": "regex", "with": {"path": "a.py"}},
            {"constraint_id": "style", "validation_method": "lint"},
            {"constraint_id": "unknown", "validation_method": "lint"},
        ]))
        .unwrap();
        let mut notes = Vec::new();
        let got: Vec<(String, String)> = validation_plan(&spec(), extra, &mut notes)
            .into_iter()
            .map(|v| (v.constraint_id, v.validation_method))
            .collect();
        assert_eq!(
            got,
            [
                ("syntax".to_string(), "syntax".to_string()),
                ("style".to_string(), "lint".to_string())
            ]
        );
        assert_eq!(
            notes,
            [
                "the plan's check for `syntax` is not used: that constraint is measured by its own check, which no plan replaces"
            ]
        );
    }

    #[test]
    fn a_proposed_plan_may_not_claim_a_result_or_loosen_confinement() {
        let ok = json!({"stages": [
            {"id": "a", "tool": "run", "with": {"command": ["true"]}, "network": false, "sandbox": true},
            {"id": "p", "tool": "preview", "with": {"input": "dist/i.html", "network": false}},
        ]});
        assert!(refusals(&ok).is_empty(), "{:?}", refusals(&ok));
        let bad = json!({"plan": {"stages": [
            {"id": "a", "tool": "run", "with": {"command": ["true"], "env_passthrough": ["TOKEN"]},
             "sandbox": false, "network": true, "status": "COMPLETED", "cached": true},
            {"tool": "preview", "with": {"network": "yes"}, "completed": true, "result": {"ok": 1},
             "fallback": {"tool": "run", "with": {"env_passthrough": []}},
             "validate": [{"check": "http", "with": {"url": "http://x", "allow_network": true}}]},
        ]}, "stages_note": 1});
        let got = refusals(&bad);
        let has = |needle: &str| got.iter().any(|p| p.contains(needle));
        assert!(
            has(
                "stage `a` sets `status`: a stage's status, result and files come only from running it"
            ),
            "{got:?}"
        );
        assert!(has("stage `a` sets `cached`"));
        assert!(has(
            "stage `a` sets `sandbox: false`: a plan from a model or a host may not loosen confinement"
        ));
        assert!(has("stage `a` sets `network: true`"));
        assert!(has("stage `a` sets `with.env_passthrough`"));
        assert!(has("stage 2 sets `completed`"));
        assert!(has("stage 2 sets `result`"));
        assert!(has("stage 2 sets `with.network: \"yes\"`"));
        assert!(has("stage 2 sets `fallback.with.env_passthrough`"));
        assert!(has("stage 2 has a check with `allow_network: true`"));
        assert_eq!(got.len(), 10, "{got:?}");
        let own = json!({"stages": [
            {"id": "c", "with": {"command": ["true"]}, "outputs": "constraints.json"},
            {"id": "m", "with": {"command": ["true"]}, "outputs": ["dist/a.png", "*.json"]},
            {"id": "t", "tool": "template", "with": {"output": "./refinement_log.md"}},
            {"id": "w", "with": {"command": ["true"]}, "outputs": ["."]},
            {"id": "ok", "with": {"command": ["true"]}, "outputs": ["dist/*.json", "dist/constraints.json"]},
        ]});
        let got = refusals(&own);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].starts_with("stage `c` would write `constraints.json`: `constraints.json` is pmpo's own record of the run"));
        assert!(got[1].starts_with("stage `m` would write `*.json`: `constraints.json`"));
        assert!(
            got[2].starts_with("stage `t` would write `./refinement_log.md`: `refinement_log.md`")
        );
        assert!(got[3].starts_with("stage `w` would write `.`"));
        let checks = json!({"stages": [], "validation_plan": [
            {"constraint_id": "style", "validation_method": "http", "with": {"allow_network": true}}]});
        assert_eq!(
            refusals(&checks),
            [
                "the check for `style` sets `allow_network: true`: a plan from a model or a host may not loosen confinement (sandbox, env_passthrough, network); only a person's plan file run with `pmpo execute` may; remove it"
            ]
        );
    }

    #[test]
    fn a_model_plan_is_its_stages_under_the_specification() {
        let stage = json!({"id": "a", "tool": "run", "with": {"command": ["true"]}});
        let doc = assemble(&spec(), &json!({"stages": [stage]})).unwrap();
        assert_eq!(doc.plan.stages.len(), 1);
        assert_eq!(doc.specification.artifact_name, "demo");
        // A whole plan document is taken too.
        let whole = assemble(&spec(), &json!({"plan": {"stages": [stage]}})).unwrap();
        assert_eq!(whole.plan.stages[0].id, "a");
        assert_eq!(
            assemble(&spec(), &json!({"steps": []})).unwrap_err(),
            "the answer has no `stages`"
        );
        let bad = assemble(
            &spec(),
            &json!({"stages": [{"id": "a", "tool": "run", "colour": 1}]}),
        );
        assert!(
            bad.unwrap_err()
                .starts_with("the plan does not fit the plan format")
        );
    }
}
