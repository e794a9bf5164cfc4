//! The plan model: the Execute phase's input (`specification` + `plan`).
//!
//! Every struct rejects unknown fields so that a typo (`dependson:`) is an error
//! with a position instead of a silently ignored setting.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A whole plan file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDocument {
    pub specification: Specification,
    pub plan: Plan,
}

/// What is being refined and the constraints it must meet.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Specification {
    pub artifact_name: String,
    pub artifact_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// Free-form data from the Specify phase; carried into results untouched.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// One constraint of the specification (compatible with the reference constraints schema).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ConstraintKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ConstraintValidation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_metric: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Blocking,
    High,
    Medium,
    Low,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Blocking => "blocking",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConstraintKind {
    Visual,
    Structural,
    Semantic,
    Technical,
    Brand,
    Performance,
    Accessibility,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintValidation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_code_execution: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_method: Option<String>,
}

/// The executable strategy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub tool_invocations: Vec<ToolInvocation>,
    /// State changes the plan intends; recorded with the results, never interpreted.
    #[serde(default)]
    pub state_updates: Map<String, Value>,
    #[serde(default)]
    pub validation_plan: Vec<ValidationItem>,
}

/// One stage: a single tool call whose declared outputs are verified on disk.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// `false` marks an AI-only transformation; `true` (the default) a tool run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_execution: Option<bool>,
    /// The tool to call; defaults to `run` (or `ai` when `requires_execution: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub depends_on: Vec<String>,
    /// Tool inputs; string values of the form `$stage.field` are resolved before the call.
    #[serde(default, rename = "with", skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
    /// Files the stage must produce: paths or globs relative to the workspace.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// Files the stage reads (paths or globs), part of its cache key.
    #[serde(
        default,
        rename = "inputs",
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub input_files: Vec<String>,
    /// `false`: always run, never reuse an earlier identical result.
    #[serde(default = "yes")]
    pub cache: bool,
    /// Try again after a failure (level 1 of recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Another tool to use when this one keeps failing (level 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// What happens when every attempt failed: `fail` (default) or `manual` (level 3: ask a person).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Send failed code with its error to the model endpoint once for a minimal correction.
    #[serde(default)]
    pub correct: bool,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Checks run in the VALIDATING state after the outputs are verified; a failing check fails the stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validate: Vec<CheckSpec>,
    /// `false`: the stage's processes may write anywhere (not confined, not watched).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub sandbox: bool,
    /// `false`: the stage's processes may not bind or connect TCP sockets.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub network: bool,
}

/// One item of a stage's `validate:` list: `{check: NAME, with: {...}}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// The check's name (`pmpo check` lists them).
    pub check: String,
    /// The check's parameters.
    #[serde(default, rename = "with", skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
    /// The constraint this check gives evidence for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `retry:` of a stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Total attempts, the first included (2..=100).
    pub attempts: u32,
    #[serde(default)]
    pub backoff: Backoff,
    /// Wait before the second attempt (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Timeout>,
    /// Longest wait between attempts (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Timeout>,
    /// Randomize each wait by up to +-50% (default true).
    #[serde(default = "yes")]
    pub jitter: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    #[default]
    Exponential,
    Fixed,
}

/// `fallback:` of a stage: another tool with its own inputs.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    pub tool: String,
    #[serde(default, rename = "with", skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    #[default]
    Fail,
    Manual,
}

impl Stage {
    /// The tool name as written, or the default implied by `requires_execution`.
    pub fn tool_name(&self) -> &str {
        match &self.tool {
            Some(t) => t,
            None if self.requires_execution == Some(false) => "ai",
            None => "run",
        }
    }
}

/// An entry of `tool_invocations`: which stage calls which tool.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolInvocation {
    pub stage: String,
    pub tool: String,
    #[serde(default, alias = "purpose", skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An entry of `validation_plan`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationItem {
    pub constraint_id: String,
    pub validation_method: String,
    #[serde(default = "yes")]
    pub execution_required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, rename = "with", skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
}

fn is_yes(v: &bool) -> bool {
    *v
}

fn yes() -> bool {
    true
}

/// A stage time limit: a number of seconds or a string such as `500ms`, `30s`, `5m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl Serialize for Timeout {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        let dur = match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a timeout: seconds as a number, or a string such as `30s`, `5m`, `500ms`",
            )
        })? {
            Raw::Secs(s) if s.is_finite() && s > 0.0 && s < 1e9 => Duration::from_secs_f64(s),
            Raw::Secs(s) => {
                return Err(serde::de::Error::custom(format!(
                    "timeout must be a positive number of seconds, got {s}"
                )));
            }
            Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom)?,
        };
        Ok(Timeout(dur))
    }
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not a duration; write e.g. `500ms`, `30s`, `5m`, `1h30m`");
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return if secs.is_finite() && secs > 0.0 && secs < 1e9 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(bad())
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(value * unit);
    }
    if total.is_zero() || total > Duration::from_secs(1_000_000_000) {
        return Err(bad());
    }
    Ok(total)
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match Option::<OneOrMany>::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a string or a list of strings"))?
    {
        None => Ok(Vec::new()),
        Some(OneOrMany::One(s)) => Ok(vec![s]),
        Some(OneOrMany::Many(v)) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        for bad in ["", "0s", "fast", "10x", "s", "-3", "1e300"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
