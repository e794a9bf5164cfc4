//! Asking the model endpoint for structured answers: JSON validated against
//! a schema (or a caller's check), with one repair request when it is not.

use std::time::{Duration, Instant};

use pmpo_ai::{ChatRequest, Client, Phase, Route};
use pmpo_store::Workspace;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Time limit of one model call of the loop.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The schema of the Specify phase's answer (shipped in `schemas/`).
pub const SPECIFY_SCHEMA: &str = include_str!("../../../schemas/specify-answer.schema.json");
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
}

/// The JSON object in an answer: a fenced block, the whole text, or the
/// first balanced `{...}` that parses. A reasoning model's `<think>` section
/// is passed over.
pub fn extract_json(text: &str) -> Result<Value, String> {
    let text = strip_thinking(text);
    let text = text.trim();
    // Fenced blocks (```json or bare ```), in order.
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let body_start = after.find('\n').map_or(0, |n| n + 1);
        let Some(end) = after[body_start..].find("```") else {
            break;
        };
        let body = &after[body_start..body_start + end];
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(body.trim()) {
            return Ok(v);
        }
        rest = &after[body_start + end + 3..];
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => return Ok(v),
        Ok(_) => return Err("the answer is JSON but not an object".into()),
        Err(_) => {}
    }
    // Prose around an object: try each balanced object in turn.
    for (at, _) in text.match_indices('{') {
        if let Some(len) = balanced_object(&text[at..])
            && let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&text[at..at + len])
        {
            return Ok(v);
        }
    }
    Err("the answer holds no JSON object".into())
}

/// The text without `<think>...</think>` sections.
fn strip_thinking(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<think>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</think>") {
            Some(end) => rest = &rest[start + end + "</think>".len()..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The length of the balanced `{...}` at the start of `text` (strings and
/// escapes respected), if it closes.
fn balanced_object(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
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

/// Problems of a value against a JSON Schema (empty when valid).
pub fn schema_problems(schema_text: &str, value: &Value) -> Vec<String> {
    let schema: Value = match serde_json::from_str(schema_text) {
        Ok(s) => s,
        Err(e) => return vec![format!("internal: a shipped schema is not JSON: {e}")],
    };
    match jsonschema::validator_for(&schema) {
        Ok(v) => v
            .iter_errors(value)
            .take(20)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("at {at}: {e}")
                }
            })
            .collect(),
        Err(e) => vec![format!("internal: a shipped schema is invalid: {e}")],
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
    async fn call(&self, phase: Phase, stage: &str, req: &ChatRequest) -> Result<String, String> {
        let ctx = pmpo_ai::client::CallContext {
            workspace: self.ws,
            run_id: self.refinement_id,
            stage,
            phase,
            route: Route::default(),
            cancel: self.cancel,
            deadline: Instant::now() + CALL_TIMEOUT,
        };
        match self.client.complete(&ctx, req).await {
            Ok(answer) => Ok(answer.completion.text),
            Err(e) => Err(match &e.hint {
                Some(h) => format!("{} ({h})", e.message),
                None => e.message.clone(),
            }),
        }
    }

    /// Asks for JSON; `check` may tidy a parsed answer (case, stray fields)
    /// and returns its problems. An invalid answer gets one repair request
    /// naming its problems.
    pub async fn ask_json(
        &self,
        phase: Phase,
        stage: &str,
        prompt: String,
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
        let first = self.call(phase, stage, &req).await;
        // A call cut short by Ctrl-C fails like an outage would; it is not one.
        if self.cancel.is_cancelled() {
            return Asked::Cancelled;
        }
        let first = match first {
            Ok(t) => t,
            Err(e) => return Asked::Failed(e),
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
        req.messages.push(pmpo_ai::Message {
            role: pmpo_ai::Role::Assistant,
            content: first,
        });
        req.messages.push(pmpo_ai::Message {
            role: pmpo_ai::Role::User,
            content: format!(
                "Your answer is not valid:\n- {}\nAnswer again with the corrected JSON object only.",
                problems.join("\n- ")
            ),
        });
        let second = self.call(phase, &format!("{stage}-repair"), &req).await;
        if self.cancel.is_cancelled() {
            return Asked::Cancelled;
        }
        let second = match second {
            Ok(t) => t,
            Err(e) => return Asked::Failed(e),
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
    fn json_is_found_in_fences_prose_or_bare() {
        assert_eq!(extract_json("```json\n{\"a\": 1}\n```").unwrap()["a"], 1);
        assert_eq!(extract_json("Sure! {\"a\": 2} done").unwrap()["a"], 2);
        assert_eq!(extract_json(" {\"a\": 3} ").unwrap()["a"], 3);
        assert!(extract_json("no json here").is_err());
        let thinking =
            "<think>maybe {\"a\": 0} or {not json}</think>\nHere: {\"a\": 4, \"s\": \"} {\"}";
        assert_eq!(extract_json(thinking).unwrap()["a"], 4);
        let prose = "I considered {this} and then: {\"b\": [1, {\"c\": 2}]} done.";
        assert_eq!(extract_json(prose).unwrap()["b"][1]["c"], 2);
        let two = "```\nnot json\n```\nthen\n```json\n{\"d\": 5}\n```";
        assert_eq!(extract_json(two).unwrap()["d"], 5);
        assert!(extract_json("[1, 2]").is_err());
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
}
