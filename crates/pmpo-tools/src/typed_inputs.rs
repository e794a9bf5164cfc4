//! Typed tool inputs: a tool's `with:` is a `#[serde(deny_unknown_fields)]`
//! struct, and the key checks come from that struct instead of a
//! hand-written list. `pmpo check` still reports every problem at once, each
//! at its key: an unknown key with "did you mean" and the keys the tool
//! takes, a value of the wrong type in the tool's own words.

use pmpo_plan::InputIssue;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value};

use crate::{ErrorClass, ToolError, issue, unknown_keys};

/// A deserializer that only learns the field names of the struct asked of it.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The keys a typed input struct takes, in its order, as serde names them.
pub(crate) fn keys<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

/// How a tool words a value of the wrong type at a key.
pub(crate) enum Wrong {
    /// In these words.
    Say(&'static str),
    /// Not here: the tool checks that key's value itself.
    Elsewhere,
}

/// Checks a tool's inputs against its typed struct `T`: every unknown key
/// (with "did you mean"), and every known key whose value does not fit,
/// worded by `wrong(key)`. With `references`, a `$stage.field` value may
/// stand for any key's value (it is resolved before the tool runs). Returns
/// the inputs read as `T` when they all fit.
pub(crate) fn check<T: DeserializeOwned>(
    inputs: &Map<String, Value>,
    tool: &str,
    references: bool,
    wrong: &dyn Fn(&str) -> Wrong,
) -> (Option<T>, Vec<InputIssue>) {
    let known = keys::<T>();
    let mut issues = unknown_keys(inputs, known, tool);
    let checked = |(k, v): &(&String, &Value)| {
        known.contains(&k.as_str())
            && !(references && crate::inputs::is_reference(v))
            && matches!(wrong(k), Wrong::Say(_))
    };
    for (key, value) in inputs.iter().filter(checked) {
        let alone = Map::from_iter([(key.clone(), value.clone())]);
        // A key alone may miss the struct's required keys: only its own
        // problem counts (serde reports it before the missing ones).
        if let Err(e) = serde_json::from_value::<T>(Value::Object(alone))
            && !e.to_string().starts_with("missing field")
            && let Wrong::Say(words) = wrong(key)
        {
            issues.push(issue(key, words, None));
        }
    }
    (
        serde_json::from_value(Value::Object(inputs.clone())).ok(),
        issues,
    )
}

/// Reads a tool's inputs (references resolved) as `T`; a problem is an
/// invalid-input error saying which key and what is wrong with it.
pub(crate) fn read<T: DeserializeOwned>(
    inputs: &Map<String, Value>,
    tool: &str,
    wrong: &dyn Fn(&str) -> Wrong,
) -> Result<T, ToolError> {
    match check::<T>(inputs, tool, false, wrong) {
        (Some(typed), _) => Ok(typed),
        (None, issues) => {
            let mut err = ToolError::new(
                ErrorClass::InvalidInput,
                match issues.first() {
                    Some(i) => i.message.clone(),
                    None => serde_json::from_value::<T>(Value::Object(inputs.clone()))
                        .err()
                        .map_or_else(
                            || format!("the inputs of the `{tool}` tool do not fit"),
                            |e| format!("the inputs of the `{tool}` tool: {e}"),
                        ),
                },
            );
            err.hint = issues.first().and_then(|i| i.help.clone());
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inputs {
        path: String,
        #[serde(default)]
        flag: bool,
        count: Option<u32>,
    }

    fn words(key: &str) -> Wrong {
        match key {
            "flag" => Wrong::Say("`flag` must be true or false"),
            "count" => Wrong::Say("`count` must be a whole number"),
            _ => Wrong::Elsewhere,
        }
    }

    #[test]
    fn every_problem_is_named_at_its_key() {
        assert_eq!(keys::<Inputs>(), ["path", "flag", "count"]);
        let inputs = json!({"path": 7, "flg": true, "flag": 1, "count": -1});
        let (typed, issues) = check::<Inputs>(inputs.as_object().unwrap(), "demo", false, &words);
        assert!(typed.is_none());
        let text: Vec<String> = issues.iter().map(|i| i.message.clone()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text.contains(&"unknown input `flg` for tool `demo`".to_string()));
        assert!(
            issues[0]
                .help
                .as_deref()
                .unwrap()
                .contains("did you mean `flag`?")
        );
        assert!(text.contains(&"`flag` must be true or false".to_string()));
        assert!(text.contains(&"`count` must be a whole number".to_string()));
        let ok = json!({"path": "a", "count": 2});
        let (typed, issues) = check::<Inputs>(ok.as_object().unwrap(), "demo", false, &words);
        assert!(issues.is_empty() && typed.unwrap().count == Some(2));
        // A reference stands for a value of the right type, when allowed.
        let r = json!({"path": "a", "flag": "$s.flag"});
        let (typed, issues) = check::<Inputs>(r.as_object().unwrap(), "demo", true, &words);
        assert!(typed.is_none() && issues.is_empty());
        let (_, issues) = check::<Inputs>(r.as_object().unwrap(), "demo", false, &words);
        assert_eq!(issues.len(), 1);
        let e =
            read::<Inputs>(json!({"flag": true}).as_object().unwrap(), "demo", &words).unwrap_err();
        assert_eq!(
            e.message,
            "the inputs of the `demo` tool: missing field `path`"
        );
    }
}
