//! Resolving `$stage.field` references in a stage's inputs.

use std::collections::HashMap;

use pmpo_plan::Reference;
use serde_json::{Map, Value};

/// What later stages can read of a finished stage.
pub type StageData = Map<String, Value>;

/// The key of a stage's data that records streams cut by the capture limit:
/// `{"stdout": {"total": N, "kept": K}}`. It cannot be referenced (not a name).
pub const TRUNCATED_KEY: &str = "#truncated";

/// Replaces every reference in `inputs` with the value it names.
pub fn resolve_inputs(
    inputs: &Map<String, Value>,
    data: &HashMap<String, StageData>,
) -> Result<Map<String, Value>, String> {
    inputs
        .iter()
        .map(|(k, v)| Ok((k.clone(), resolve_value(v, data)?)))
        .collect()
}

fn resolve_value(value: &Value, data: &HashMap<String, StageData>) -> Result<Value, String> {
    match value {
        Value::String(s) => match Reference::parse(s) {
            Some(r) => lookup(&r, s, data),
            None => Ok(Value::String(pmpo_plan::reference::unescape(s).to_string())),
        },
        Value::Array(items) => items
            .iter()
            .map(|v| resolve_value(v, data))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), resolve_value(v, data)?)))
            .collect::<Result<_, String>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

fn lookup(
    r: &Reference<'_>,
    text: &str,
    data: &HashMap<String, StageData>,
) -> Result<Value, String> {
    let stage = data
        .get(r.stage)
        .ok_or_else(|| format!("`{text}`: stage `{}` has produced no outputs", r.stage))?;
    if let Some(cut) = stage
        .get(TRUNCATED_KEY)
        .and_then(|t| t.get(r.field[0]))
        .filter(|_| !stage.contains_key(r.field[0]))
    {
        let n = |k: &str| cut.get(k).and_then(Value::as_u64).unwrap_or(0);
        return Err(if r.field[0].ends_with("_file") {
            format!(
                "`{text}`: stage `{}` printed {} bytes on {}, more than pmpo keeps in memory ({} kept), and its tool could not keep the whole stream in a file",
                r.stage,
                n("total"),
                r.field[0].trim_end_matches("_file"),
                n("kept")
            )
        } else {
            format!(
                "`{text}`: stage `{}` printed {} bytes on {}, of which pmpo keeps {} (the first 1 MiB and the last 64 KiB), so the value would be cut; read the whole output from the file `${}.{}_file` names instead",
                r.stage,
                n("total"),
                r.field[0],
                n("kept"),
                r.stage,
                r.field[0]
            )
        });
    }
    let mut current = stage.get(r.field[0]).ok_or_else(|| {
        let have: Vec<&str> = stage
            .keys()
            .map(String::as_str)
            .filter(|k| *k != TRUNCATED_KEY)
            .collect();
        format!(
            "`{text}`: stage `{}` has no output `{}` (it has: {})",
            r.stage,
            r.field[0],
            have.join(", ")
        )
    })?;
    for (depth, key) in r.field.iter().enumerate().skip(1) {
        let next = match current {
            Value::Object(m) => m.get(*key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        current = next
            .ok_or_else(|| format!("`{text}`: `{}` has no `{key}`", r.field[..depth].join(".")))?;
    }
    Ok(current.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_nested_references_and_literals() {
        let mut data = HashMap::new();
        data.insert(
            "a".to_string(),
            json!({"stdout": "hi", "files": ["x.txt"], "colors": {"primary": "#fff"}})
                .as_object()
                .unwrap()
                .clone(),
        );
        let inputs = json!({
            "command": ["cat", "$a.files"],
            "env": {"C": "$a.colors.primary", "F": "$a.files.0"},
            "literal": "$$a.stdout",
            "shell": "echo $HOME"
        });
        let out = resolve_inputs(inputs.as_object().unwrap(), &data).unwrap();
        assert_eq!(out["command"], json!(["cat", ["x.txt"]]));
        assert_eq!(out["env"]["C"], "#fff");
        assert_eq!(out["env"]["F"], "x.txt");
        assert_eq!(out["literal"], "$a.stdout");
        assert_eq!(out["shell"], "echo $HOME");
        let err = resolve_inputs(json!({"x": "$a.nope"}).as_object().unwrap(), &data).unwrap_err();
        assert!(
            err.contains("has no output `nope`") && err.contains("stdout"),
            "{err}"
        );
    }
}
