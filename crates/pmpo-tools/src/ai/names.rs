//! What an `ai` stage's prompt can name: the built-in names, `vars:`, and
//! the check that every `{{ name }}` of a prompt is one of them.

use pmpo_ai::template;
use pmpo_plan::{InputIssue, Specification};
use serde_json::{Map, Value, json};

use crate::issue;

/// Names every prompt may use besides `vars:`.
pub(super) const BUILTINS: &[&str] = &[
    "specification",
    "constraints",
    "artifact_name",
    "artifact_type",
    "content_type",
    "intent",
    "stage",
];

/// The `{{ name }}` uses of a prompt template (`what` names it in messages)
/// that are neither a built-in nor a `vars:` key. A `vars` given as a
/// reference is known only at run time: nothing is reported then.
pub(super) fn undefined_names(
    key: &str,
    what: &str,
    text: &str,
    inputs: &Map<String, Value>,
    file: Option<&str>,
) -> Vec<InputIssue> {
    let vars: Vec<&str> = match inputs.get("vars") {
        Some(Value::Object(m)) => m.keys().map(String::as_str).collect(),
        Some(_) => return Vec::new(),
        None => Vec::new(),
    };
    let mut issues = Vec::new();
    let mut named = std::collections::HashSet::new();
    // Lines are counted once, forward: placeholders come in text order.
    let (mut line, mut line_start, mut counted) = (1usize, 0usize, 0usize);
    for (var, at) in template::placeholders(text) {
        let first = var.split('.').next().unwrap_or("");
        if BUILTINS.contains(&first) || vars.contains(&first) || !named.insert(first.to_string()) {
            continue;
        }
        if issues.len() == MAX_NAME_ISSUES {
            issues.push(issue(
                key,
                format!("{what} uses more undefined names; the first {MAX_NAME_ISSUES} are listed"),
                None,
            ));
            break;
        }
        let known = vars.iter().chain(BUILTINS).copied();
        let did = match pmpo_plan::diag::did_you_mean(first, known) {
            Some(s) => format!("did you mean `{s}`? "),
            None => String::new(),
        };
        let given = if vars.is_empty() {
            "`vars` gives nothing".to_string()
        } else {
            format!("`vars` gives {}", vars.join(", "))
        };
        // In a file, say where (`prompts/hero.md:3:7`), as for `template` files:
        // at the name, after `{{` and any spaces.
        let at_name = at + 2 + (text[at + 2..].len() - text[at + 2..].trim_start().len());
        for (i, b) in text.as_bytes()[counted..at_name].iter().enumerate() {
            if *b == b'\n' {
                line += 1;
                line_start = counted + i + 1;
            }
        }
        counted = at_name;
        let at = match file {
            Some(f) => {
                let col = text[line_start..at_name].chars().count() + 1;
                format!(" at {f}:{line}:{col}")
            }
            None => String::new(),
        };
        issues.push(issue(
            key,
            format!("{what} uses `{{{{ {var} }}}}`{at}, but `{first}` is not defined"),
            Some(&format!(
                "{did}add `{first}` under `vars:`, or set `verbatim: true` to send the prompt as written; {given}; built-in: {}",
                BUILTINS.join(", ")
            )),
        ));
    }
    issues
}

/// Undefined names reported for one prompt, at most: a prompt of many
/// unknown names says so once more rather than listing them all.
const MAX_NAME_ISSUES: usize = 20;

/// The constraints as a list a model reads easily.
fn constraints_text(spec: &Specification) -> String {
    spec.constraints
        .iter()
        .map(|c| format!("- {} ({}): {}", c.id, c.severity, c.description))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a prompt template can name.
pub(super) fn template_context(
    spec: Option<&Specification>,
    stage: &str,
    vars: Option<&Value>,
) -> Value {
    let mut ctx = Map::new();
    if let Some(spec) = spec {
        ctx.insert(
            "specification".into(),
            serde_json::to_value(spec).unwrap_or(Value::Null),
        );
        ctx.insert("constraints".into(), json!(constraints_text(spec)));
        ctx.insert("artifact_name".into(), json!(spec.artifact_name));
        ctx.insert("artifact_type".into(), json!(spec.artifact_type));
        ctx.insert("content_type".into(), json!(spec.content_type));
        ctx.insert("intent".into(), json!(spec.intent));
    }
    ctx.insert("stage".into(), json!(stage));
    if let Some(Value::Object(vars)) = vars {
        for (k, v) in vars {
            ctx.insert(k.clone(), v.clone());
        }
    }
    Value::Object(ctx)
}
