//! Typed `with:` inputs. A tool states its keys and their types once, in a
//! `#[derive(Deserialize)] #[serde(deny_unknown_fields)]` struct; the plan
//! check ([`check`]) and the run ([`decode`]) both read the inputs through
//! it, so the list of keys a tool takes cannot drift from what it reads.
//!
//! Errors name the key (serde alone would not: a type error inside a map
//! does not say where it is), and an unknown key gets the closest known key
//! as a suggestion. A tool may word a key's wrong value itself
//! ([`Inputs::wrong`]), or keep a key for its own check ([`Wrong::Elsewhere`]).

use std::cell::RefCell;
use std::fmt;

use pmpo_plan::InputIssue;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::{ErrorClass, ToolError, issue, unknown_keys};

/// The inputs of one tool, as a struct.
pub(crate) trait Inputs: DeserializeOwned {
    /// The tool's name, for messages.
    const TOOL: &'static str;
    /// Whether, at plan time, a `$stage.field` value may stand for a value of
    /// any type (it is resolved before the tool runs).
    const REFERENCES: bool = true;
    /// The keys that are workspace paths: a path the plan could not write
    /// to (absolute, `..`) is refused at plan time.
    const PATHS: &'static [&'static str] = &[];
    /// The keys naming files the tool writes (`Tool::written_paths`).
    const WRITES: &'static [&'static str] = &[];

    /// How the tool words a wrong value at `key` at plan time.
    fn wrong(_key: &str) -> Wrong {
        Wrong::Reader
    }
}

/// How a tool words a value of the wrong type at a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrong {
    /// In the reader's words (`` `key` must be text ``).
    Reader,
    /// In these words.
    Say(&'static str),
    /// Not by the reader at plan time: the tool checks that key itself
    /// (its presence too).
    Elsewhere,
}

/// What is wrong with a stage's inputs, as the struct's reader found it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Problem {
    /// A key the tool does not take.
    Unknown(String),
    /// A required key is absent.
    Missing(&'static str),
    /// The value of a key is of the wrong type or out of range.
    Value { key: String, message: String },
    /// Anything else (the inputs are not a mapping at all).
    Other(String),
}

impl Problem {
    /// The key the problem is about (empty when none).
    pub(crate) fn key(&self) -> &str {
        match self {
            Problem::Unknown(k) | Problem::Value { key: k, .. } => k,
            Problem::Missing(k) => k,
            Problem::Other(_) => "",
        }
    }

    /// The problem in a sentence.
    pub(crate) fn message(&self, tool: &str) -> String {
        match self {
            Problem::Unknown(k) => format!("unknown input `{k}` for tool `{tool}`"),
            Problem::Missing(k) => format!("the `{k}` input is required"),
            Problem::Value { key, message } => value_message(key, message),
            Problem::Other(m) => m.clone(),
        }
    }
}

/// A value error in words that name the key. Serde's own messages
/// (`invalid type: integer `3`, expected a string`) are rephrased; a value
/// parser's message is kept when it already names the key.
fn value_message(key: &str, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((_, expected)) = rest.rsplit_once(", expected ")
    {
        let expected = match expected {
            "a string" | "a borrowed string" => "text",
            "a boolean" => "true or false",
            "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number",
            other => other,
        };
        return format!("`{key}` must be {expected}");
    }
    if message.starts_with("invalid ") {
        format!("`{key}`: {message}")
    } else if message.contains(&format!("`{key}`")) || message.contains(&format!("`{key}.")) {
        message.to_string()
    } else {
        format!("`{key}` {message}")
    }
}

/// A problem in the tool's words: its own for a wrong value where it has
/// them, else the reader's.
fn worded<T: Inputs>(problem: &Problem) -> String {
    match problem {
        Problem::Value { key, .. } => match T::wrong(key) {
            Wrong::Say(words) => words.to_string(),
            Wrong::Reader | Wrong::Elsewhere => problem.message(T::TOOL),
        },
        _ => problem.message(T::TOOL),
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message("?"))
    }
}

impl std::error::Error for Problem {}

impl de::Error for Problem {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Problem::Other(msg.to_string())
    }
    fn missing_field(field: &'static str) -> Self {
        Problem::Missing(field)
    }
    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        Problem::Unknown(field.to_string())
    }
}

/// The keys a struct takes, read from its `Deserialize` implementation (the
/// one place they are written).
pub(crate) fn keys<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut found: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut found));
    found
}

/// A deserializer that only records the field names a struct asks for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = Problem;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Problem> {
        Err(Problem::Other("not a struct".into()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Problem> {
        *self.0 = fields;
        Err(Problem::Other("field names only".into()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Reads a map into `T`, remembering which key's value failed.
fn read<T: DeserializeOwned>(map: &Map<String, Value>) -> Result<T, Problem> {
    T::deserialize(Keyed(map))
}

struct Keyed<'a>(&'a Map<String, Value>);

impl<'de> Deserializer<'de> for Keyed<'_> {
    type Error = Problem;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Problem> {
        visitor.visit_map(KeyedAccess {
            entries: self.0.iter(),
            current: RefCell::new(None),
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct KeyedAccess<'a> {
    entries: serde_json::map::Iter<'a>,
    current: RefCell<Option<(&'a String, &'a Value)>>,
}

impl<'de> MapAccess<'de> for KeyedAccess<'_> {
    type Error = Problem;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Problem> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        *self.current.borrow_mut() = Some((key, value));
        seed.deserialize(key.as_str().into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Problem> {
        let Some((key, value)) = self.current.borrow_mut().take() else {
            return Err(Problem::Other("a value without a key".into()));
        };
        seed.deserialize(value.clone())
            .map_err(|e: serde_json::Error| Problem::Value {
                key: key.clone(),
                message: e.to_string(),
            })
    }
}

/// The help line for a problem: the keys the tool takes, and the closest one
/// to an unknown key.
fn help(problem: &Problem, tool: &str, known: &[&str]) -> Option<String> {
    match problem {
        Problem::Unknown(k) => Some(
            match pmpo_plan::diag::did_you_mean(k, known.iter().copied()) {
                Some(s) => format!(
                    "did you mean `{s}`? the `{tool}` tool takes: {}",
                    known.join(", ")
                ),
                None => format!("the `{tool}` tool takes: {}", known.join(", ")),
            },
        ),
        // Every required key of the typed tools is a workspace path.
        Problem::Missing(_) => Some("give a path relative to the workspace".into()),
        _ => None,
    }
}

/// Reads a stage's resolved inputs (at run time). The error says which key
/// is wrong and how.
pub(crate) fn decode<T: Inputs>(inputs: &Map<String, Value>) -> Result<T, ToolError> {
    read::<T>(inputs).map_err(|p| {
        let mut err = ToolError::new(ErrorClass::InvalidInput, worded::<T>(&p));
        if let Problem::Unknown(_) = p
            && let Some(h) = help(&p, T::TOOL, keys::<T>())
        {
            err = err.hint(h);
        }
        err
    })
}

/// The static check of a stage's `with:` (at plan time, when a
/// `$stage.field` value is not yet resolved): every unknown key, every value
/// of the wrong type, and a missing required key, except the keys the tool
/// checks itself ([`Wrong::Elsewhere`]).
pub(crate) fn check<T: Inputs>(inputs: &Map<String, Value>) -> Vec<InputIssue> {
    let known = keys::<T>();
    let mut issues = unknown_keys(inputs, known, T::TOOL);
    let by_reader = |(k, v): &(&String, &Value)| {
        known.contains(&k.as_str())
            && !(T::REFERENCES && crate::inputs::is_reference(v))
            && T::wrong(k) != Wrong::Elsewhere
    };
    // The rest is read as the run will.
    let mut map: Map<String, Value> = inputs
        .iter()
        .filter(by_reader)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Serde stops at the first problem: drop a failing key (or stand in for
    // a missing one) and read again, until the rest reads.
    let mut stand_ins: Vec<&str> = Vec::new();
    for _ in 0..=2 * known.len() {
        let problem = match read::<T>(&map) {
            Ok(_) => break,
            Err(p) => p,
        };
        // A required key that is given (as a reference, or for the tool's
        // own check) or that the tool checks itself is not missing here.
        let silent = matches!(&problem, Problem::Missing(k)
            if inputs.contains_key(*k) || T::wrong(k) == Wrong::Elsewhere);
        let go_on = match &problem {
            // Required keys are text here: a stand-in lets the read go on
            // to the next missing key.
            Problem::Missing(k) => {
                stand_ins.push(k);
                map.insert(k.to_string(), Value::String("-".into()));
                true
            }
            Problem::Value { key, .. } if stand_ins.contains(&key.as_str()) => break,
            Problem::Value { key, .. } => map.shift_remove(key).is_some(),
            Problem::Unknown(_) | Problem::Other(_) => false,
        };
        if !silent {
            let help = help(&problem, T::TOOL, known);
            let key = if matches!(problem, Problem::Missing(_)) {
                ""
            } else {
                problem.key()
            };
            issues.push(issue(key, worded::<T>(&problem), help.as_deref()));
        }
        if !go_on {
            break;
        }
    }
    check_patterns(inputs, T::PATHS, &mut issues);
    issues
}

/// The files a stage's tool writes, as its `T::WRITES` keys name them.
pub(crate) fn written<T: Inputs>(inputs: &Map<String, Value>) -> Vec<String> {
    crate::path_inputs(inputs, T::WRITES)
}

/// Text that may not be empty (a path a tool reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(de::Error::custom("is empty"));
        }
        Ok(Text(s))
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Reads a value with a parser that takes the raw JSON (for inputs with
/// their own shape and words: sizes, a viewport, a list of selectors).
pub(crate) fn parsed<'de, D, T>(
    d: D,
    parse: impl FnOnce(Option<&Value>) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let v = Value::deserialize(d)?;
    parse(Some(&v)).map_err(de::Error::custom)
}

/// The static check of path inputs' values: a path the plan could not
/// write to (absolute, `..`) is refused before the run.
fn check_patterns(inputs: &Map<String, Value>, keys: &[&str], issues: &mut Vec<InputIssue>) {
    for key in keys {
        if let Some(Value::String(s)) = inputs.get(*key)
            && !crate::inputs::is_reference(&Value::String(s.clone()))
            && let Err(msg) = pmpo_plan::validate_output_pattern(s)
        {
            issues.push(issue(
                key,
                format!("`{key}` {msg}"),
                Some("give a path relative to the workspace"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Demo {
        input: Text,
        output: Option<String>,
        square: Option<bool>,
        #[serde(default)]
        sizes: Vec<u32>,
        report: Text,
    }

    impl Inputs for Demo {
        const TOOL: &'static str = "demo";
        const PATHS: &'static [&'static str] = &["input", "output"];
        const WRITES: &'static [&'static str] = &["output"];
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn messages(v: Value) -> Vec<(String, String, Option<String>)> {
        check::<Demo>(&map(v))
            .into_iter()
            .map(|i| {
                let key = match i.key.first() {
                    Some(pmpo_plan::Seg::Key(k)) => k.clone(),
                    _ => String::new(),
                };
                (key, i.message, i.help)
            })
            .collect()
    }

    #[test]
    fn path_keys_are_checked_and_written_keys_named_once() {
        let m = messages(json!({"input": "../a.svg", "output": "$s.out", "report": "r"}));
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].0, "input");
        assert!(m[0].1.starts_with("`input` "), "{m:?}");
        assert_eq!(
            m[0].2.as_deref(),
            Some("give a path relative to the workspace")
        );
        let w = map(json!({"input": "a.svg", "output": "b.png", "report": "r"}));
        assert_eq!(written::<Demo>(&w), ["b.png"]);
    }

    #[test]
    fn keys_come_from_the_struct() {
        assert_eq!(
            keys::<Demo>(),
            ["input", "output", "square", "sizes", "report"]
        );
    }

    #[test]
    fn good_inputs_read_and_check_clean() {
        let v = json!({"input": "a.svg", "square": false, "sizes": [16, 32], "report": "r"});
        assert!(messages(v.clone()).is_empty());
        let d: Demo = decode(&map(v)).unwrap();
        assert_eq!(&*d.input, "a.svg");
        assert_eq!(d.sizes, [16, 32]);
    }

    #[test]
    fn unknown_key_with_a_suggestion() {
        let m = messages(json!({"input": "a.svg", "report": "r", "ouput": "b", "zzzzzz": 1}));
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].0, "ouput");
        assert_eq!(m[0].1, "unknown input `ouput` for tool `demo`");
        assert_eq!(
            m[0].2.as_deref(),
            Some(
                "did you mean `output`? the `demo` tool takes: input, output, square, sizes, report"
            )
        );
        assert_eq!(
            m[1].2.as_deref(),
            Some("the `demo` tool takes: input, output, square, sizes, report")
        );
        let err = decode::<Demo>(&map(json!({"input": "a", "report": "r", "sqare": true})));
        let err = err.unwrap_err();
        assert_eq!(err.message, "unknown input `sqare` for tool `demo`");
        assert!(err.hint.unwrap().starts_with("did you mean `square`?"));
    }

    #[test]
    fn wrong_types_name_their_keys() {
        let m = messages(json!({"input": 3, "square": "yes", "sizes": ["x"], "report": "r"}));
        let got: Vec<(&str, &str)> = m.iter().map(|(k, m, _)| (&**k, &**m)).collect();
        assert_eq!(
            got,
            [
                ("input", "`input` must be text"),
                ("square", "`square` must be true or false"),
                ("sizes", "`sizes` must be a whole number"),
            ]
        );
        let err = decode::<Demo>(&map(json!({"input": "", "report": "r"}))).unwrap_err();
        assert_eq!(err.message, "`input` is empty");
        assert_eq!(err.class, ErrorClass::InvalidInput);
    }

    #[test]
    fn missing_required_keys_unless_a_reference_gives_them() {
        let m = messages(json!({"output": "b.png"}));
        let got: Vec<(&str, &str)> = m.iter().map(|(k, m, _)| (&**k, &**m)).collect();
        assert_eq!(
            got,
            [
                ("", "the `input` input is required"),
                ("", "the `report` input is required"),
            ]
        );
        let err = decode::<Demo>(&map(json!({}))).unwrap_err();
        assert_eq!(err.message, "the `input` input is required");
        // `$stage.field` values are resolved at run time: not checked here.
        let m = messages(json!({"input": "$draw.path", "square": "$a.b", "report": "r"}));
        assert!(m.is_empty(), "{m:?}");
        // A required key given as a reference does not hide the next one.
        let m = messages(json!({"input": "$draw.path", "square": 1}));
        let got: Vec<(&str, &str)> = m.iter().map(|(k, m, _)| (&**k, &**m)).collect();
        assert_eq!(
            got,
            [
                ("square", "`square` must be true or false"),
                ("", "the `report` input is required"),
            ]
        );
    }

    /// A tool's own words, its own keys, and references taken literally.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Worded {
        path: String,
        #[serde(default)]
        flag: bool,
        count: Option<u32>,
    }

    impl Inputs for Worded {
        const TOOL: &'static str = "worded";
        const REFERENCES: bool = false;
        fn wrong(key: &str) -> Wrong {
            match key {
                "count" => Wrong::Say("`count` must be a positive whole number"),
                "path" => Wrong::Elsewhere,
                _ => Wrong::Reader,
            }
        }
    }

    #[test]
    fn a_tool_words_its_keys_and_checks_its_own() {
        let issues = |v: Value| -> Vec<String> {
            check::<Worded>(&map(v))
                .into_iter()
                .map(|i| i.message)
                .collect()
        };
        // `path` is the tool's own: neither its type nor its absence is
        // reported by the reader.
        assert_eq!(
            issues(json!({"path": 7, "flg": true, "flag": 1, "count": -1})),
            [
                "unknown input `flg` for tool `worded`",
                "`flag` must be true or false",
                "`count` must be a positive whole number",
            ]
        );
        assert!(issues(json!({"count": 2})).is_empty());
        // Without references, `$s.flag` is text where true or false is wanted.
        assert_eq!(
            issues(json!({"path": "a", "flag": "$s.flag"})),
            ["`flag` must be true or false"]
        );
        // At run time every key is read, in the tool's words where it has them.
        let err = decode::<Worded>(&map(json!({"path": "a", "count": -1}))).unwrap_err();
        assert_eq!(err.message, "`count` must be a positive whole number");
        let err = decode::<Worded>(&map(json!({"flag": true}))).unwrap_err();
        assert_eq!(err.message, "the `path` input is required");
    }
}
