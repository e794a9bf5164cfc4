//! The one reader of model answers, used by `ai` stages and by every phase
//! of the refinement loop alike:
//!
//! ```text
//! strip_reasoning   leading <think>/<thinking>/<reasoning> sections removed
//!   -> code_block   the first fenced block of a language (an `ai` stage's file)
//!   -> extract_json the whole text, else the first fenced block, else the
//!                   first balanced {...} in prose, that parses as JSON
//!   -> Schema       validated by the full JSON Schema validator (formats too)
//!   -> repair       one repair request quoting every problem found
//! ```
//!
//! `docs/configuration.md` ("Reading model answers") states these rules.

use serde_json::Value;

use crate::{ChatRequest, Message, Role};

/// The tags of the reasoning sections a model may put before its answer.
const REASONING_TAGS: &[&str] = &["think", "thinking", "reasoning"];

/// How many `{` of prose are tried as the start of a JSON object: enough for
/// any answer that talks around its object, and keeps the reader linear on
/// an answer made of braces.
const MAX_OBJECT_STARTS: usize = 64;

/// How many schema problems are named (a repair request lists them all).
const MAX_PROBLEMS: usize = 20;

/// The answer without the reasoning sections (`<think>...</think>`,
/// `<thinking>`, `<reasoning>`) it starts with. A reasoning section that
/// never closes holds the whole answer: what is left is empty.
pub fn strip_reasoning(text: &str) -> &str {
    let mut rest = text;
    loop {
        let t = rest.trim_start();
        let open = |tag: &&&str| {
            t.strip_prefix('<')
                .and_then(|x| x.strip_prefix(**tag))
                .is_some_and(|x| x.starts_with('>'))
        };
        let Some(tag) = REASONING_TAGS.iter().find(open) else {
            return rest;
        };
        let close = format!("</{tag}>");
        match t.find(&close) {
            Some(end) => rest = &t[end + close.len()..],
            None => return "",
        }
    }
}

/// The fenced code blocks of a text, in order: (info string, content). A
/// block opens with a line that starts (after spaces) with three backticks
/// and closes with a line that is three backticks alone.
pub fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        let t = line.trim_start();
        match &mut open {
            None => {
                if let Some(info) = t.strip_prefix("```") {
                    open = Some((info.trim().to_string(), Vec::new()));
                }
            }
            Some((_, lines)) => {
                if t.trim_end() == "```" {
                    if let Some((info, lines)) = open.take() {
                        blocks.push((info, lines.join("\n") + "\n"));
                    }
                } else {
                    lines.push(line);
                }
            }
        }
    }
    blocks
}

/// The first block of `lang` in an answer (reasoning stripped first); `svg`
/// also takes an `xml` block holding an SVG, a bare SVG answer, or an SVG
/// inside prose.
pub fn code_block(text: &str, lang: &str) -> Option<String> {
    let text = strip_reasoning(text);
    let blocks = fenced_blocks(text);
    let info_is = |info: &str, l: &str| {
        info.split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(l))
    };
    if let Some((_, body)) = blocks.iter().find(|(info, _)| info_is(info, lang)) {
        return Some(body.clone());
    }
    if !lang.eq_ignore_ascii_case("svg") {
        return None;
    }
    if let Some((_, body)) = blocks
        .iter()
        .find(|(i, b)| info_is(i, "xml") && b.contains("<svg"))
    {
        return Some(body.clone());
    }
    let t = text.trim();
    if blocks.is_empty() && (t.starts_with("<svg") || t.starts_with("<?xml")) {
        return Some(format!("{t}\n"));
    }
    // An unfenced SVG inside prose.
    match (t.find("<svg"), t.rfind("</svg>")) {
        (Some(a), Some(b)) if a < b => Some(format!("{}\n", &t[a..b + "</svg>".len()])),
        _ => None,
    }
}

/// The JSON of an answer (reasoning stripped first): the whole text, else
/// the first fenced block, else the first balanced `{...}` in prose, that
/// parses as JSON. Any JSON value may be the answer; callers that need an
/// object say so with [`extract_object`] or their schema.
pub fn extract_json(text: &str) -> Result<Value, String> {
    let text = strip_reasoning(text).trim();
    if text.is_empty() {
        return Err("the answer is empty (or only reasoning)".into());
    }
    let whole = serde_json::from_str::<Value>(text);
    if let Ok(v) = whole {
        return Ok(v);
    }
    for (_, body) in fenced_blocks(text) {
        if let Ok(v) = serde_json::from_str(&body) {
            return Ok(v);
        }
    }
    for (at, _) in text.match_indices('{').take(MAX_OBJECT_STARTS) {
        if let Some(len) = balanced_object(&text[at..])
            && let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&text[at..at + len])
        {
            return Ok(v);
        }
    }
    Err(match whole {
        Err(e) if text.starts_with(['{', '[']) => format!("the answer is not JSON: {e}"),
        _ => "the answer holds no JSON".into(),
    })
}

/// The JSON object of an answer, read as [`extract_json`] reads it.
pub fn extract_object(text: &str) -> Result<Value, String> {
    match extract_json(text)? {
        v @ Value::Object(_) => Ok(v),
        other => Err(format!(
            "the answer must be a JSON object, found {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                _ => "a scalar",
            }
        )),
    }
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

/// A JSON Schema compiled once, checked by the full validator: every
/// keyword of the schema's draft, `$ref` within the document, `pattern`, and
/// `format` (which the standard leaves optional: here it is enforced).
pub struct Schema {
    validator: jsonschema::Validator,
}

impl Schema {
    /// Compiles a schema; the error says why it cannot be used.
    pub fn new(schema: &Value) -> Result<Schema, String> {
        jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .map(|validator| Schema { validator })
            .map_err(|e| format!("the schema cannot be used: {e}"))
    }

    /// Compiles a schema given as JSON text.
    pub fn parse(text: &str) -> Result<Schema, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
        Schema::new(&value)
    }

    /// Every violation of the schema by `value`, each one line naming the
    /// JSON pointer of the bad value (`/count: expected integer, found
    /// string`); empty when valid.
    pub fn problems(&self, value: &Value) -> Vec<String> {
        self.validator
            .iter_errors(value)
            .take(MAX_PROBLEMS)
            .map(|e| {
                let at = e.instance_path().as_str();
                let at = if at.is_empty() { "/" } else { at };
                format!("{at}: {}", describe(&e))
            })
            .collect()
    }
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

/// One violation in words; the commonest ones as a person would say them,
/// the others as the validator does.
fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    let instance = e.instance();
    match e.kind() {
        K::Type { kind } => {
            let wanted: Vec<&str> = match kind {
                TypeKind::Single(t) => vec![t.as_str()],
                TypeKind::Multiple(set) => set.iter().map(|t| t.as_str()).collect(),
            };
            format!(
                "expected {}, found {}",
                wanted.join(" or "),
                type_name(instance)
            )
        }
        K::Required { property } => match property.as_str() {
            Some(p) => format!("missing required property `{p}`"),
            None => format!("missing required property {property}"),
        },
        K::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|k| format!("property `{k}` is not allowed"))
            .collect::<Vec<_>>()
            .join("; "),
        K::Enum { options } => format!("{instance} is not one of {options}"),
        _ => e.to_string(),
    }
}

/// Reads a JSON answer and checks it: extracted as [`extract_json`] says,
/// then validated by `schema` when there is one. The problems are what a
/// repair request quotes.
pub fn read_json(text: &str, schema: Option<&Schema>) -> Result<Value, Vec<String>> {
    let value = extract_json(text).map_err(|e| vec![e])?;
    match schema.map(|s| s.problems(&value)) {
        Some(problems) if !problems.is_empty() => Err(problems),
        _ => Ok(value),
    }
}

/// The one repair request: the unusable answer, then a message quoting
/// every problem found in it and asking for the whole answer again.
pub fn repair_request(req: &mut ChatRequest, answer: &str, problems: &[String]) {
    req.messages.push(Message {
        role: Role::Assistant,
        content: answer.to_string(),
    });
    req.messages.push(Message {
        role: Role::User,
        content: format!(
            "Your answer is not valid:\n{}\nAnswer again, in full, with these problems fixed.",
            problems
                .iter()
                .map(|p| format!("- {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reasoning_is_stripped_from_the_start_only() {
        assert_eq!(strip_reasoning("<think>a</think>\nB").trim(), "B");
        assert_eq!(
            strip_reasoning(" <thinking>a</thinking><reasoning>b</reasoning>C"),
            "C"
        );
        assert_eq!(strip_reasoning("A <think>b</think>"), "A <think>b</think>");
        assert_eq!(strip_reasoning("<think>never closes"), "");
        assert_eq!(strip_reasoning("<thinker>x"), "<thinker>x");
    }

    #[test]
    fn json_is_found_whole_in_fences_or_in_prose() {
        assert_eq!(extract_json("```json\n{\"a\": 1}\n```").unwrap()["a"], 1);
        assert_eq!(extract_json("Sure! {\"a\": 2} done").unwrap()["a"], 2);
        assert_eq!(extract_json(" {\"a\": 3} ").unwrap()["a"], 3);
        assert_eq!(extract_json("[1, 2]").unwrap(), json!([1, 2]));
        assert!(extract_object("[1, 2]").unwrap_err().contains("an array"));
        assert!(extract_json("no json here").is_err());
        assert!(extract_json("<think>{\"a\": 1}").is_err());
        let thinking =
            "<think>maybe {\"a\": 0} or {not json}</think>\nHere: {\"a\": 4, \"s\": \"} {\"}";
        assert_eq!(extract_json(thinking).unwrap()["a"], 4);
        let prose = "I considered {this} and then: {\"b\": [1, {\"c\": 2}]} done.";
        assert_eq!(extract_json(prose).unwrap()["b"][1]["c"], 2);
        let two = "```\nnot json\n```\nthen\n```json\n{\"d\": 5}\n```";
        assert_eq!(extract_json(two).unwrap()["d"], 5);
        // Linear on an answer of braces.
        assert!(extract_json(&"{".repeat(400_000)).is_err());
    }

    #[test]
    fn code_blocks_by_language() {
        let a = "<think>```svg\n<no/>\n```</think>Here:\n```svg\n<svg/>\n```\n```json\n{\"a\": 1}\n```\n";
        assert_eq!(code_block(a, "svg").as_deref(), Some("<svg/>\n"));
        assert_eq!(code_block(a, "python"), None);
        assert_eq!(extract_json(a).unwrap(), json!({"a": 1}));
        assert_eq!(
            code_block("<svg></svg>", "svg").as_deref(),
            Some("<svg></svg>\n")
        );
        assert_eq!(
            code_block("Sure: <svg a=\"1\"></svg> enjoy", "svg").as_deref(),
            Some("<svg a=\"1\"></svg>\n")
        );
    }

    #[test]
    fn the_full_validator_names_each_problem_at_its_pointer() {
        let schema = Schema::new(&json!({
            "type": "object",
            "required": ["name", "colors"],
            "additionalProperties": false,
            "$defs": {"hex": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}},
            "properties": {
                "name": {"type": "string", "minLength": 2},
                "colors": {"type": "array", "items": {"$ref": "#/$defs/hex"}},
                "mail": {"type": "string", "format": "email"},
                "size": {"type": "integer"}
            }
        }))
        .unwrap();
        assert!(
            schema
                .problems(&json!({"name": "ok", "colors": ["#ff0000"], "mail": "a@b.org"}))
                .is_empty()
        );
        let text = schema
            .problems(
                &json!({"name": "x", "colors": ["red"], "mail": "nope", "size": 1.5, "extra": 1}),
            )
            .join("\n");
        for want in [
            "/name: ",
            "/colors/0: ",
            "/mail: ",
            "/size: expected integer, found number",
            "/: property `extra` is not allowed",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert_eq!(
            schema.problems(&json!({"colors": []})),
            vec!["/: missing required property `name`"]
        );
        assert!(Schema::new(&json!({"type": 5})).is_err());
        assert_eq!(
            read_json("```json\n{\"size\": \"3\"}\n```", Some(&schema)).unwrap_err()[0],
            "/: missing required property `name`"
        );
    }

    #[test]
    fn one_repair_request_quotes_every_problem() {
        let mut req = ChatRequest::user("ask");
        repair_request(&mut req, "bad", &["/a: x".into(), "/b: y".into()]);
        assert_eq!(req.messages.len(), 3);
        assert_eq!(req.messages[1].content, "bad");
        assert_eq!(
            req.messages[2].content,
            "Your answer is not valid:\n- /a: x\n- /b: y\nAnswer again, in full, with these problems fixed."
        );
    }
}
