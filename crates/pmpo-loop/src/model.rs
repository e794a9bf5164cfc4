//! Asking the model endpoint for structured answers: JSON validated against
//! a schema (or a caller's check), with one repair request when it is not.

use std::time::{Duration, Instant};

use pmpo_ai::answer::{self, Schema};
use pmpo_ai::host::{Brief, Question};
use pmpo_ai::{ChatRequest, Client, Phase, Route};
use pmpo_store::Workspace;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Time limit of one model call of the loop.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The schema of the Specify phase's answer (shipped in `schemas/`).
pub const SPECIFY_SCHEMA: &str = include_str!("../../../schemas/specify-answer.schema.json");
/// The schema of the Plan phase's answer (shipped in `schemas/`); the plan
/// format's own checks judge the stages in full.
pub const PLAN_SCHEMA: &str = include_str!("../../../schemas/plan-answer.schema.json");
/// The schema of the Reflect phase's judgements.
pub const JUDGEMENT_SCHEMA: &str = include_str!("../../../schemas/reflect-judgement.schema.json");

/// What came of asking.
#[derive(Debug)]
pub enum Asked {
    /// A valid answer (after a repair when `repaired`).
    Valid { value: Value, repaired: bool },
    /// Still invalid after the repair; both problems are kept.
    Invalid { problems: Vec<String> },
    /// The endpoint could not answer (not configured, unreachable, refused...).
    Failed(String),
    /// The user cancelled (Ctrl-C) while the loop waited: there is no answer,
    /// and none may be made up; the phase is left not done.
    Cancelled,
    /// The host (`via = "host"`) has not answered this question yet: the
    /// loop pauses, the phase is left not done, and a re-run asks again
    /// (and finds the answer once it is given).
    AwaitingHost(Box<Question>),
}

/// The JSON object in an answer, read by the one answer reader
/// ([`pmpo_ai::answer`]): reasoning stripped, then the whole text, a fenced
/// block or a balanced `{...}` in prose; it must be an object.
pub fn extract_json(text: &str) -> Result<Value, String> {
    answer::extract_object(text)
}

/// Tidies a Specify answer the way a lenient reader would: severities and
/// types in lower case, fields the schema does not know dropped, an unknown
/// constraint type dropped. What is left must still pass the schema.
pub fn tidy_specify(v: &mut Value) {
    const KEYS: &[&str] = &["id", "description", "severity", "type", "target_metric"];
    const TYPES: &[&str] = &[
        "visual",
        "structural",
        "semantic",
        "technical",
        "brand",
        "performance",
        "accessibility",
    ];
    let Some(obj) = v.as_object_mut() else { return };
    obj.retain(|k, _| k == "goals" || k == "constraints");
    // "Nothing to add" may come as goals alone.
    if obj.contains_key("goals") && !obj.contains_key("constraints") {
        obj.insert("constraints".into(), Value::Array(Vec::new()));
    }
    for c in obj
        .get_mut("constraints")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(c) = c.as_object_mut() else { continue };
        c.retain(|k, _| KEYS.contains(&k.as_str()));
        for key in ["severity", "type"] {
            if let Some(Value::String(s)) = c.get_mut(key) {
                *s = s.trim().to_ascii_lowercase();
            }
        }
        if c.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| !TYPES.contains(&t))
        {
            c.remove("type");
        }
    }
}

/// Tidies a Reflect answer: statuses in lower case, stray fields dropped.
pub fn tidy_judgement(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    obj.retain(|k, _| k == "judgements" || k == "summary");
    for j in obj
        .get_mut("judgements")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(j) = j.as_object_mut() else { continue };
        j.retain(|k, _| matches!(k.as_str(), "id" | "status" | "reason"));
        if let Some(Value::String(s)) = j.get_mut("status") {
            *s = s.trim().to_ascii_lowercase();
        }
    }
}

/// Problems of a value against a JSON Schema given as text (empty when
/// valid), found by the answer reader's validator, as for `ai` stages.
pub fn schema_problems(schema_text: &str, value: &Value) -> Vec<String> {
    match Schema::parse(schema_text) {
        Ok(schema) => schema.problems(value),
        Err(e) => vec![format!("internal: a shipped schema cannot be used: {e}")],
    }
}

/// One model call of the loop.
pub struct Caller<'a> {
    pub client: &'a Client,
    pub ws: &'a Workspace,
    pub refinement_id: &'a str,
    pub cancel: &'a CancellationToken,
}

impl Caller<'_> {
    /// Who answers a phase's questions, for the progress notes: "the host"
    /// when the phase is routed to it, else "the model".
    pub fn who(&self, phase: Phase, stage: &str) -> &'static str {
        let route = self.client.config().route(phase, stage, &Route::default());
        let host = route.endpoint.as_deref().is_some_and(|e| {
            self.client
                .config()
                .endpoints
                .get(e)
                .is_some_and(|c| c.kind == pmpo_ai::EndpointKind::Host)
        });
        if host { "the host" } else { "the model" }
    }

    async fn call(
        &self,
        phase: Phase,
        stage: &str,
        req: &ChatRequest,
        brief: Option<&Brief>,
    ) -> Result<String, Asked> {
        let ctx = pmpo_ai::client::CallContext {
            workspace: self.ws,
            run_id: self.refinement_id,
            stage,
            phase,
            route: Route::default(),
            cancel: self.cancel,
            deadline: Instant::now() + CALL_TIMEOUT,
            brief,
        };
        match self.client.complete(&ctx, req).await {
            Ok(answer) => Ok(answer.completion.text),
            Err(_) if self.cancel.is_cancelled() => Err(Asked::Cancelled),
            Err(e) if e.question.is_some() => Err(Asked::AwaitingHost(e.question.unwrap())),
            Err(e) => Err(Asked::Failed(match &e.hint {
                Some(h) => format!("{} ({h})", e.message),
                None => e.message.clone(),
            })),
        }
    }

    /// Asks for JSON; `check` may tidy a parsed answer (case, stray fields)
    /// and returns its problems. An invalid answer gets one repair request
    /// naming its problems. `brief` says what the question is about (the
    /// answer's schema, the files, the constraints a check measures), for a
    /// host that answers it.
    pub async fn ask_json(
        &self,
        phase: Phase,
        stage: &str,
        prompt: String,
        brief: &Brief,
        check: &dyn Fn(&mut Value) -> Vec<String>,
    ) -> Asked {
        let mut req = ChatRequest::user(prompt);
        // Structured answers: as little randomness as the endpoint allows.
        req.temperature = Some(0.0);
        req.system = Some(
            "You are a phase controller of the PMPO refinement loop. Answer with one JSON object in a ```json block and nothing else.".into(),
        );
        if self.cancel.is_cancelled() {
            return Asked::Cancelled;
        }
        // A call cut short by Ctrl-C fails like an outage would; it is not
        // one (`call` says Cancelled).
        let first = match self.call(phase, stage, &req, Some(brief)).await {
            Ok(t) => t,
            Err(asked) => return asked,
        };
        let problems = match extract_json(&first) {
            Ok(mut v) => {
                let p = check(&mut v);
                if p.is_empty() {
                    return Asked::Valid {
                        value: v,
                        repaired: false,
                    };
                }
                p
            }
            Err(e) => vec![e],
        };
        answer::repair_request(&mut req, &first, &problems);
        let second = match self
            .call(phase, &format!("{stage}-repair"), &req, Some(brief))
            .await
        {
            Ok(t) => t,
            Err(asked) => return asked,
        };
        let mut again = match extract_json(&second) {
            Ok(mut v) => {
                let p = check(&mut v);
                if p.is_empty() {
                    return Asked::Valid {
                        value: v,
                        repaired: true,
                    };
                }
                p
            }
            Err(e) => vec![e],
        };
        let mut all: Vec<String> = problems
            .into_iter()
            .map(|p| format!("first answer: {p}"))
            .collect();
        all.extend(again.drain(..).map(|p| format!("repaired answer: {p}")));
        Asked::Invalid { problems: all }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_takes_an_object_found_by_the_one_reader() {
        // Where the reader finds JSON is tested in `pmpo_ai::answer`; a phase
        // takes only an object.
        assert_eq!(extract_json("Sure! {\"a\": 2} done").unwrap()["a"], 2);
        assert!(extract_json("[1, 2]").is_err());
        assert!(extract_json("no json here").is_err());
    }

    #[test]
    fn answers_are_tidied_before_they_are_judged() {
        let mut v = serde_json::json!({"goals": ["g"], "note": "x", "constraints": [
            {"id": "a", "description": "d", "severity": "High", "type": "Aesthetic", "validation": {}}]});
        tidy_specify(&mut v);
        assert!(schema_problems(SPECIFY_SCHEMA, &v).is_empty(), "{v}");
        assert_eq!(v["constraints"][0]["severity"], "high");
        assert!(v["constraints"][0].get("type").is_none());
        let mut j = serde_json::json!({"judgements": [{"id": "a", "status": " Satisfied ", "confidence": 0.9}]});
        tidy_judgement(&mut j);
        assert!(schema_problems(JUDGEMENT_SCHEMA, &j).is_empty(), "{j}");
        let mut bad = serde_json::json!({"constraints": [{"id": "a", "severity": "urgent"}]});
        tidy_specify(&mut bad);
        assert!(!schema_problems(SPECIFY_SCHEMA, &bad).is_empty());
    }

    #[test]
    fn the_shipped_schemas_are_valid_and_used() {
        let ok = serde_json::json!({"goals": ["g"], "constraints": [{"id": "x", "description": "d", "severity": "high"}]});
        assert!(schema_problems(SPECIFY_SCHEMA, &ok).is_empty());
        let bad = serde_json::json!({"constraints": [{"id": "x", "severity": "urgent"}]});
        assert!(!schema_problems(SPECIFY_SCHEMA, &bad).is_empty());
        let j =
            serde_json::json!({"judgements": [{"id": "x", "status": "satisfied", "reason": "r"}]});
        assert!(schema_problems(JUDGEMENT_SCHEMA, &j).is_empty());
        let j = serde_json::json!({"judgements": [{"id": "x", "status": "maybe"}]});
        assert!(!schema_problems(JUDGEMENT_SCHEMA, &j).is_empty());
    }

    /// A loop phase and an `ai` stage read and validate an answer alike:
    /// the same object from the same text, the same problems (a `format`
    /// reached through a `$ref`, and a `pattern`) from the same schema.
    #[test]
    fn loop_phases_read_answers_as_ai_stages_do() {
        let text = "<think>Maybe ```json\n{\"when\": 1}\n```?</think>\nDone:\n```json\n{\"when\": \"someday\", \"id\": \"A B\"}\n```\n";
        let value = extract_json(text).unwrap();
        assert_eq!(Ok(value.clone()), pmpo_tools::ai::parse_json_answer(text));
        assert_eq!(value["when"], "someday");
        let schema = r##"{"$defs": {"day": {"type": "string", "format": "date"}}, "type": "object",
            "properties": {"when": {"$ref": "#/$defs/day"}, "id": {"type": "string", "pattern": "^[a-z]+$"}}}"##;
        let problems = schema_problems(schema, &value);
        assert_eq!(
            problems,
            pmpo_ai::schema::validate(&serde_json::from_str(schema).unwrap(), &value)
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.starts_with("/when: ")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("/id: ")),
            "{problems:?}"
        );
    }
}
