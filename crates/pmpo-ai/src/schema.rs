//! Validating a value against a JSON Schema given as a value, for callers
//! that check one value once (the `run` tool's structured output). It is the
//! answer reader's validator ([`crate::answer::Schema`]): one set of rules.

use serde_json::Value;

use crate::answer::Schema;

/// Every violation of `schema` by `value` (empty when valid), each naming
/// the JSON pointer of the bad value; a schema that cannot be used is one
/// problem that says why.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    match Schema::new(schema) {
        Ok(s) => s.problems(value),
        Err(e) => vec![e],
    }
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
            "/name: ",
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
        assert!(validate(&json!({"type": 5}), &json!(1))[0].contains("cannot be used"));
    }
}
