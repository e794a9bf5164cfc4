//! What an `ai` stage wants back from the model (a file, a code block, JSON
//! named outputs, a schema), read by the one answer reader of `pmpo_ai`.

use pmpo_ai::answer::{self, Schema};
use serde_json::{Map, Value};

/// What the stage wants back.
pub(super) struct Shape<'a> {
    pub code_block: Option<&'a str>,
    pub outputs_json: bool,
    /// The schema as written (for the prompt) and compiled (for the check).
    pub schema: Option<(Value, Schema)>,
}

/// The answer, made into what the stage wants.
pub(super) struct Shaped {
    pub file_text: String,
    pub outputs: Map<String, Value>,
}

impl Shape<'_> {
    fn structured(&self) -> bool {
        self.outputs_json || self.schema.is_some()
    }

    /// The problems with an answer (each one line), or the shaped answer.
    pub fn apply(&self, text: &str) -> Result<Shaped, Vec<String>> {
        let text = answer::strip_reasoning(text);
        if text.trim().is_empty() {
            return Err(vec!["the answer is empty (or only reasoning)".into()]);
        }
        let mut file_text = text.to_string();
        let mut outputs = Map::new();
        if let Some(lang) = self.code_block {
            match answer::code_block(text, lang) {
                Some(b) => file_text = b,
                None => {
                    return Err(vec![format!(
                        "the answer has no fenced code block of language `{lang}` (```{lang} ... ```)"
                    )]);
                }
            }
        }
        if self.structured() {
            let value = answer::read_json(text, self.schema.as_ref().map(|(_, s)| s))?;
            if self.outputs_json {
                // The object itself, or why it is not one.
                outputs = match answer::extract_object(text).map_err(|e| vec![e])? {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
            }
            if self.code_block.is_none() {
                file_text = serde_json::to_string_pretty(&value).unwrap_or_default() + "\n";
            }
        }
        Ok(Shaped { file_text, outputs })
    }

    /// What the prompt adds so the model answers in the wanted shape.
    pub fn instructions(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(lang) = self.code_block {
            parts.push(format!(
                "Put the {lang} in a single fenced code block that starts with ```{lang}."
            ));
        }
        if self.structured() {
            parts.push("Answer with one JSON object and nothing else.".to_string());
            if let Some((schema, _)) = &self.schema {
                parts.push(format!(
                    "It must satisfy this JSON schema:\n{}",
                    serde_json::to_string_pretty(schema).unwrap_or_default()
                ));
            }
        }
        (!parts.is_empty()).then(|| parts.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(code_block: Option<&str>, outputs_json: bool, schema: Option<Value>) -> Shape<'_> {
        Shape {
            code_block,
            outputs_json,
            schema: schema.map(|s| {
                let compiled = Schema::new(&s).unwrap();
                (s, compiled)
            }),
        }
    }

    #[test]
    fn answers_are_shaped_or_their_problems_named() {
        let named = shape(None, true, None);
        let got = named
            .apply("<think>{\"no\": 1}</think>Sure:\n```json\n{\"a\": 1}\n```")
            .ok()
            .unwrap();
        assert_eq!(got.outputs["a"], 1);
        assert_eq!(got.file_text, "{\n  \"a\": 1\n}\n");
        assert!(named.apply("[1]").err().unwrap()[0].contains("an array"));
        assert!(named.apply("<think>all thought").err().unwrap()[0].contains("empty"));
        let svg = shape(Some("svg"), false, None);
        assert_eq!(
            svg.apply("```svg\n<svg/>\n```").ok().unwrap().file_text,
            "<svg/>\n"
        );
        assert!(svg.apply("no block").err().unwrap()[0].contains("`svg`"));
        let strict = shape(
            None,
            true,
            Some(
                json!({"type": "object", "properties": {"hex": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}}}),
            ),
        );
        assert!(strict.apply("{\"hex\": \"#00ff00\"}").is_ok());
        assert!(strict.apply("{\"hex\": \"green\"}").err().unwrap()[0].starts_with("/hex: "));
    }
}
