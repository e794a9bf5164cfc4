//! Check parameters: their declared kinds, the static check `pmpo check`
//! runs on them, and typed getters for the checks themselves.

use std::time::Duration;

use pmpo_plan::{InputIssue, Seg};
use serde_json::{Map, Value};

use crate::CheckError;

/// The kind of value a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// A workspace-relative path or glob, or a list of them.
    Paths,
    /// A whole number >= 0.
    UInt,
    /// Any integer.
    Int,
    /// A number.
    Num,
    Bool,
    /// A size in bytes: a number, or a string such as `200KB`, `1.5 MiB`.
    Bytes,
    /// A duration: seconds, or a string such as `30s`, `500ms`.
    Duration,
    /// A non-empty list of strings (a command's argv).
    Argv,
    /// A string or a list of strings.
    StrOrList,
    /// A mapping of strings to strings (environment variables).
    StrMap,
    /// A JSON object (an inline schema).
    Object,
    /// A number or a string (a ratio such as `16:9`, a draft such as `2020-12`).
    NumOrStr,
    /// A list of numbers or `WxH` strings.
    SizeList,
    /// A list of `[a, b]` string pairs.
    PairList,
    /// One of the listed strings.
    OneOf(&'static [&'static str]),
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Str => "a string".into(),
            Kind::Paths => "a path or glob relative to the workspace, or a list of them".into(),
            Kind::UInt => "a whole number >= 0".into(),
            Kind::Int => "a whole number".into(),
            Kind::Num => "a number".into(),
            Kind::Bool => "true or false".into(),
            Kind::Bytes => "a size in bytes, e.g. 2048 or \"200KB\"".into(),
            Kind::Duration => "a duration, e.g. 30 or \"30s\"".into(),
            Kind::Argv => "a non-empty list of strings (the command and its arguments)".into(),
            Kind::StrOrList => "a string or a list of strings".into(),
            Kind::StrMap => "a mapping of names to strings".into(),
            Kind::Object => "a mapping".into(),
            Kind::NumOrStr => "a number or a string".into(),
            Kind::SizeList => "a list of sizes: numbers (square) or \"WxH\" strings".into(),
            Kind::PairList => "a list of [foreground, background] pairs".into(),
            Kind::OneOf(vals) => format!("one of {}", vals.join(", ")),
        }
    }

    fn accepts(&self, v: &Value) -> Result<(), String> {
        let ok = match self {
            Kind::Str => v.is_string(),
            Kind::Paths => match v {
                Value::String(s) => return path_ok(s),
                Value::Array(a) if !a.is_empty() => {
                    for item in a {
                        match item.as_str() {
                            Some(s) => path_ok(s)?,
                            None => return Err("every item must be a string".into()),
                        }
                    }
                    true
                }
                _ => false,
            },
            Kind::UInt => v.as_u64().is_some(),
            Kind::Int => v.as_i64().is_some(),
            Kind::Num => v.as_f64().is_some_and(f64::is_finite),
            Kind::Bool => v.is_boolean(),
            Kind::Bytes => return parse_bytes(v).map(|_| ()),
            Kind::Duration => return parse_duration(v).map(|_| ()),
            Kind::Argv => match v {
                Value::Array(a) if !a.is_empty() => a.iter().all(Value::is_string),
                _ => false,
            },
            Kind::StrOrList => match v {
                Value::String(_) => true,
                Value::Array(a) => !a.is_empty() && a.iter().all(Value::is_string),
                _ => false,
            },
            Kind::StrMap => v
                .as_object()
                .is_some_and(|m| m.values().all(|x| x.is_string() || x.is_number())),
            Kind::Object => v.is_object() || v.is_boolean(),
            Kind::NumOrStr => v.is_number() || v.is_string(),
            Kind::SizeList => match v {
                Value::Array(a) if !a.is_empty() => {
                    for item in a {
                        parse_size(item)?;
                    }
                    true
                }
                _ => false,
            },
            Kind::PairList => match v {
                Value::Array(a) if !a.is_empty() => a.iter().all(|pair| {
                    pair.as_array()
                        .is_some_and(|p| p.len() == 2 && p.iter().all(Value::is_string))
                }),
                _ => false,
            },
            Kind::OneOf(vals) => {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(format!("expected {}", self.describe())),
                };
                vals.iter().any(|x| x.eq_ignore_ascii_case(&s))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "expected {}, found {}",
                self.describe(),
                type_name(v)
            ))
        }
    }
}

fn path_ok(s: &str) -> Result<(), String> {
    pmpo_plan::validate_output_pattern(s)
        .map_err(|m| format!("path `{s}` {}", m.replace("outputs must", "paths must")))
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// One parameter of a check.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub help: &'static str,
}

/// A required parameter.
pub const fn req(name: &'static str, kind: Kind, help: &'static str) -> Param {
    Param {
        name,
        kind,
        required: true,
        help,
    }
}

/// An optional parameter.
pub const fn opt(name: &'static str, kind: Kind, help: &'static str) -> Param {
    Param {
        name,
        kind,
        required: false,
        help,
    }
}

pub(crate) fn issue(key: &str, message: impl Into<String>, help: Option<String>) -> InputIssue {
    InputIssue {
        key: if key.is_empty() {
            Vec::new()
        } else {
            vec![Seg::Key(key.to_string())]
        },
        message: message.into(),
        help,
    }
}

fn takes(check: &str, params: &[Param]) -> String {
    if params.is_empty() {
        return format!("`{check}` takes no parameters");
    }
    let list: Vec<String> = params
        .iter()
        .map(|p| {
            if p.required {
                format!("{} (required)", p.name)
            } else {
                p.name.to_string()
            }
        })
        .collect();
    format!("`{check}` takes: {}", list.join(", "))
}

/// Unknown, missing and mistyped parameters.
pub(crate) fn check(
    check_name: &str,
    params: &[Param],
    given: &Map<String, Value>,
) -> Vec<InputIssue> {
    let mut out = Vec::new();
    for key in given.keys() {
        if !params.iter().any(|p| p.name == key) {
            let help = match pmpo_plan::diag::did_you_mean(key, params.iter().map(|p| p.name)) {
                Some(s) => format!("did you mean `{s}`? {}", takes(check_name, params)),
                None => takes(check_name, params),
            };
            out.push(issue(key, format!("unknown parameter `{key}`"), Some(help)));
        }
    }
    for p in params {
        match given.get(p.name) {
            None if p.required => out.push(issue(
                "",
                format!("missing parameter `{}` ({})", p.name, p.help),
                Some(format!(
                    "add `{}:` under `with:`; {}",
                    p.name,
                    takes(check_name, params)
                )),
            )),
            Some(v) => {
                if let Err(why) = p.kind.accepts(v) {
                    out.push(issue(
                        p.name,
                        format!("parameter `{}`: {why}", p.name),
                        Some(p.help.to_string()),
                    ));
                }
            }
            None => {}
        }
    }
    out
}

// ----- getters used by the checks (the values were checked before) -----

pub(crate) fn get_str<'a>(p: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    p.get(key).and_then(Value::as_str)
}

pub(crate) fn get_strs(p: &Map<String, Value>, key: &str) -> Vec<String> {
    match p.get(key) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn get_u64(p: &Map<String, Value>, key: &str) -> Option<u64> {
    p.get(key).and_then(Value::as_u64)
}

pub(crate) fn get_bool(p: &Map<String, Value>, key: &str, default: bool) -> bool {
    p.get(key).and_then(Value::as_bool).unwrap_or(default)
}

pub(crate) fn get_bytes(p: &Map<String, Value>, key: &str) -> Result<Option<u64>, CheckError> {
    match p.get(key) {
        None => Ok(None),
        Some(v) => parse_bytes(v)
            .map(Some)
            .map_err(|e| CheckError::Param(format!("`{key}`: {e}"))),
    }
}

pub(crate) fn get_duration(
    p: &Map<String, Value>,
    key: &str,
    default: Duration,
) -> Result<Duration, CheckError> {
    match p.get(key) {
        None => Ok(default),
        Some(v) => parse_duration(v).map_err(|e| CheckError::Param(format!("`{key}`: {e}"))),
    }
}

/// `2048`, `"2048"`, `"200KB"` (1000s), `"1.5 MiB"` (1024s).
pub fn parse_bytes(v: &Value) -> Result<u64, String> {
    let bad = || {
        format!(
            "expected {}, found {}",
            Kind::Bytes.describe(),
            type_name(v)
        )
    };
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad),
        Value::String(s) => {
            let t = s.trim();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: f64 = num.parse().map_err(|_| bad())?;
            let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1.0,
                "kb" | "k" => 1e3,
                "mb" | "m" => 1e6,
                "gb" | "g" => 1e9,
                "kib" => 1024.0,
                "mib" => 1024.0 * 1024.0,
                "gib" => 1024.0 * 1024.0 * 1024.0,
                _ => return Err(bad()),
            };
            let bytes = n * mult;
            if (0.0..1e18).contains(&bytes) {
                Ok(bytes.round() as u64)
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

pub(crate) fn parse_duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
            _ => Err(format!(
                "expected {}, found {}",
                Kind::Duration.describe(),
                type_name(v)
            )),
        },
        Value::String(s) => pmpo_plan::model::parse_duration(s),
        _ => Err(format!(
            "expected {}, found {}",
            Kind::Duration.describe(),
            type_name(v)
        )),
    }
}

/// `64` (64x64) or `"120x40"`.
pub(crate) fn parse_size(v: &Value) -> Result<(u64, u64), String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| (n, n))
            .ok_or_else(|| format!("size {n} is not a positive whole number")),
        Value::String(s) => parse_wxh(s),
        other => Err(format!(
            "a size is a number or a \"WxH\" string, found {}",
            type_name(other)
        )),
    }
}

pub(crate) fn parse_wxh(s: &str) -> Result<(u64, u64), String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>()
        && n > 0
    {
        return Ok((n, n));
    }
    let (w, h) = t
        .split_once(['x', 'X', '×'])
        .ok_or_else(|| format!("size {s:?} is not of the form WxH (e.g. 64x64)"))?;
    match (w.trim().parse::<u64>(), h.trim().parse::<u64>()) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => Err(format!("size {s:?} is not of the form WxH (e.g. 64x64)")),
    }
}

/// "`a` or `b` is required" as an issue list.
pub(crate) fn need_one(p: &Map<String, Value>, keys: &[&str]) -> Vec<InputIssue> {
    if keys.iter().any(|k| p.contains_key(*k)) {
        Vec::new()
    } else {
        let names: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        vec![issue(
            "",
            format!("needs {}", names.join(" or ")),
            Some(format!("add one of {} under `with:`", names.join(", "))),
        )]
    }
}

/// "`a` and `b` cannot be used together".
pub(crate) fn exclusive(p: &Map<String, Value>, a: &str, b: &str) -> Vec<InputIssue> {
    if p.contains_key(a) && p.contains_key(b) {
        vec![issue(
            b,
            format!("`{a}` and `{b}` cannot be used together"),
            Some(format!("keep `{a}` or `{b}`, not both")),
        )]
    } else {
        Vec::new()
    }
}

/// A lower bound of 0 with no upper bound accepts everything: such a check
/// cannot fail, which is a mistake in the plan.
pub(crate) fn must_be_able_to_fail(
    p: &Map<String, Value>,
    min_key: &str,
    others: &[&str],
) -> Vec<InputIssue> {
    let min_is_zero = match p.get(min_key) {
        Some(v) => v.as_u64() == Some(0) || parse_bytes(v).ok() == Some(0),
        None => false,
    };
    if min_is_zero && !others.iter().any(|k| p.contains_key(*k)) {
        vec![issue(
            min_key,
            format!("with `{min_key}: 0` and nothing else this check cannot fail"),
            Some(format!(
                "raise `{min_key}`, or add {}",
                others
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes(&json!(10)).unwrap(), 10);
        assert_eq!(parse_bytes(&json!("200KB")).unwrap(), 200_000);
        assert_eq!(parse_bytes(&json!("1.5 MiB")).unwrap(), 1_572_864);
        assert!(parse_bytes(&json!("ten")).is_err());
        assert!(parse_bytes(&json!(-1)).is_err());
        assert!(parse_bytes(&json!("5 parsecs")).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&json!(16)).unwrap(), (16, 16));
        assert_eq!(parse_size(&json!("120x40")).unwrap(), (120, 40));
        assert!(parse_size(&json!("120")).is_ok());
        assert!(parse_size(&json!("0x4")).is_err());
        assert!(parse_size(&json!("wide")).is_err());
    }
}
