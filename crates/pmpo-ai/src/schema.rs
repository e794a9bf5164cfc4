//! A small JSON Schema validator for structured answers: `type`, `enum`,
//! `const`, `properties`, `required`, `additionalProperties`, `items`,
//! `minItems`/`maxItems`, `minLength`/`maxLength`, `minimum`/`maximum`,
//! `exclusiveMinimum`/`exclusiveMaximum`, `allOf`/`anyOf`/`oneOf`. Other
//! keywords are ignored. Errors name the JSON pointer of the bad value.

use serde_json::{Map, Value};

/// Every violation of `schema` by `value` (empty when valid).
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, value, "", &mut errors);
    errors
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, v: &Value) -> bool {
    let actual = type_name(v);
    actual == expected
        || (expected == "number" && actual == "integer")
        || (expected == "integer" && v.as_f64().is_some_and(|f| f.fract() == 0.0))
}

fn at(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let s: &Map<String, Value> = match schema {
        Value::Object(m) => m,
        Value::Bool(false) => {
            errors.push(format!("{}: no value is allowed here", at(path)));
            return;
        }
        _ => return,
    };
    if let Some(t) = s.get("type") {
        let allowed: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !allowed.is_empty() && !allowed.iter().any(|a| type_matches(a, value)) {
            errors.push(format!(
                "{}: expected {}, found {}",
                at(path),
                allowed.join(" or "),
                type_name(value)
            ));
            return;
        }
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(value)
    {
        errors.push(format!(
            "{}: {} is not one of {}",
            at(path),
            value,
            Value::Array(options.clone())
        ));
    }
    if let Some(c) = s.get("const")
        && c != value
    {
        errors.push(format!("{}: must be {c}", at(path)));
    }
    match value {
        Value::Object(obj) => {
            if let Some(Value::Array(req)) = s.get("required") {
                for r in req.iter().filter_map(Value::as_str) {
                    if !obj.contains_key(r) {
                        errors.push(format!("{}: missing required property `{r}`", at(path)));
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (k, v) in obj {
                let child = format!("{path}/{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => check(ps, v, &child, errors),
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errors.push(format!("{}: property `{k}` is not allowed", at(path)))
                        }
                        Some(extra @ Value::Object(_)) => check(extra, v, &child, errors),
                        _ => {}
                    },
                }
            }
        }
        Value::Array(items) => {
            if let Some(n) = s.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < n
            {
                errors.push(format!(
                    "{}: needs at least {n} items, has {}",
                    at(path),
                    items.len()
                ));
            }
            if let Some(n) = s.get("maxItems").and_then(Value::as_u64)
                && (items.len() as u64) > n
            {
                errors.push(format!(
                    "{}: allows at most {n} items, has {}",
                    at(path),
                    items.len()
                ));
            }
            if let Some(item_schema) = s.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check(item_schema, v, &format!("{path}/{i}"), errors);
                }
            }
        }
        Value::String(text) => {
            let len = text.chars().count() as u64;
            if let Some(n) = s.get("minLength").and_then(Value::as_u64)
                && len < n
            {
                errors.push(format!("{}: shorter than {n} characters", at(path)));
            }
            if let Some(n) = s.get("maxLength").and_then(Value::as_u64)
                && len > n
            {
                errors.push(format!("{}: longer than {n} characters", at(path)));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let bound = |k: &str| s.get(k).and_then(Value::as_f64);
            if let Some(m) = bound("minimum").filter(|m| x < *m) {
                errors.push(format!("{}: {x} is less than the minimum {m}", at(path)));
            }
            if let Some(m) = bound("maximum").filter(|m| x > *m) {
                errors.push(format!("{}: {x} is more than the maximum {m}", at(path)));
            }
            if let Some(m) = bound("exclusiveMinimum").filter(|m| x <= *m) {
                errors.push(format!("{}: {x} must be more than {m}", at(path)));
            }
            if let Some(m) = bound("exclusiveMaximum").filter(|m| x >= *m) {
                errors.push(format!("{}: {x} must be less than {m}", at(path)));
            }
        }
        _ => {}
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        for sub in all {
            check(sub, value, path, errors);
        }
    }
    for (key, exactly_one) in [("anyOf", false), ("oneOf", true)] {
        if let Some(Value::Array(options)) = s.get(key) {
            let passing = options
                .iter()
                .filter(|o| validate_at(o, value, path))
                .count();
            if passing == 0 || (exactly_one && passing > 1) {
                errors.push(format!(
                    "{}: matches {passing} of the {key} alternatives",
                    at(path)
                ));
            }
        }
    }
}

fn validate_at(schema: &Value, value: &Value, path: &str) -> bool {
    let mut e = Vec::new();
    check(schema, value, path, &mut e);
    e.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_each_violation_with_its_path() {
        let schema = json!({
            "type": "object",
            "required": ["name", "colors"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 2},
                "colors": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["red", "blue"]}},
                "size": {"type": "integer", "minimum": 16}
            }
        });
        assert!(
            validate(
                &schema,
                &json!({"name": "ok", "colors": ["red"], "size": 32})
            )
            .is_empty()
        );
        let errs = validate(
            &schema,
            &json!({"name": "x", "colors": ["green"], "size": 8.5, "extra": 1}),
        );
        let text = errs.join("\n");
        for want in [
            "/name: shorter",
            "/colors/0: \"green\" is not one of",
            "/size: expected integer",
            "property `extra` is not allowed",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert_eq!(
            validate(&schema, &json!([1])),
            vec!["/: expected object, found array"]
        );
        assert_eq!(validate(&json!({"required": ["a"]}), &json!({})).len(), 1);
    }
}
