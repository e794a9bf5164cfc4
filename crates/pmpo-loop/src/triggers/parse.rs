//! Reading workflow triggers: every field checked up front, with the
//! trigger's position and the field named in the error.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{Action, ActionKind, DEFAULT_TIMEOUT, Event, MAX_TIMEOUT, Trigger, TriggerError};
use crate::condition;

const TRIGGER_KEYS: &[&str] = &["event", "condition", "action"];
const ACTION_KEYS: &[&str] = &["type", "target", "args", "timeout_ms"];

/// Parses and validates triggers, either `{ "triggers": [...] }` (the
/// reference layout) or a bare array.
pub fn parse_triggers(value: &Value) -> Result<Vec<Trigger>, TriggerError> {
    let list = match value {
        Value::Array(list) => list,
        Value::Object(obj) => {
            if let Some(key) = obj.keys().find(|k| *k != "triggers" && *k != "$schema") {
                return Err(TriggerError::Layout(format!(
                    "unknown key `{key}`; the document may only hold `triggers` (and `$schema`)"
                )));
            }
            match obj.get("triggers") {
                Some(Value::Array(list)) => list,
                Some(_) => {
                    return Err(TriggerError::Layout(
                        "`triggers` must be an array of trigger objects".to_string(),
                    ));
                }
                None => {
                    return Err(TriggerError::Layout(
                        "expected an object with a `triggers` array, or an array".to_string(),
                    ));
                }
            }
        }
        _ => {
            return Err(TriggerError::Layout(
                "expected an object with a `triggers` array, or an array".to_string(),
            ));
        }
    };
    list.iter()
        .enumerate()
        .map(|(index, item)| parse_trigger(index, item))
        .collect()
}

fn field_error(index: usize, field: &str, message: impl Into<String>) -> TriggerError {
    TriggerError::Field {
        index,
        field: field.to_string(),
        message: message.into(),
    }
}

fn check_keys(
    index: usize,
    prefix: &str,
    obj: &Map<String, Value>,
    allowed: &[&str],
) -> Result<(), TriggerError> {
    if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(field_error(
            index,
            &format!("{prefix}{key}"),
            format!(
                "unknown key; remove it (allowed here: {})",
                allowed.join(", ")
            ),
        ));
    }
    Ok(())
}

fn parse_trigger(index: usize, item: &Value) -> Result<Trigger, TriggerError> {
    let err = |field: &str, message: String| field_error(index, field, message);
    let Value::Object(obj) = item else {
        return Err(err(
            "",
            "a trigger must be an object with `event` and `action`".to_string(),
        ));
    };
    check_keys(index, "", obj, TRIGGER_KEYS)?;

    let known_events = || {
        Event::ALL
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let event = match obj.get("event") {
        None => {
            return Err(err(
                "event",
                format!("missing; set it to one of {}", known_events()),
            ));
        }
        Some(Value::String(name)) => Event::from_name(name).ok_or_else(|| {
            err(
                "event",
                format!("unknown event `{name}`; use one of {}", known_events()),
            )
        })?,
        Some(_) => {
            return Err(err(
                "event",
                format!("must be a string, one of {}", known_events()),
            ));
        }
    };

    let condition = match obj.get("condition") {
        None | Some(Value::Null) => None,
        Some(Value::String(src)) if src.trim().is_empty() => {
            return Err(err(
                "condition",
                "is empty; remove the key to fire unconditionally".to_string(),
            ));
        }
        Some(Value::String(src)) => {
            let parsed = condition::parse(src).map_err(|e| err("condition", e.to_string()))?;
            Some((src.clone(), parsed))
        }
        Some(_) => {
            return Err(err(
                "condition",
                "must be a string such as `phase == execute`".to_string(),
            ));
        }
    };

    let action = match obj.get("action") {
        Some(Value::Object(action)) => parse_action(index, action)?,
        Some(_) => {
            return Err(err(
                "action",
                "must be an object with `type` and `target`".to_string(),
            ));
        }
        None => {
            return Err(err(
                "action",
                "missing; add an object with `type` (`command` or `webhook`) and `target`"
                    .to_string(),
            ));
        }
    };

    Ok(Trigger {
        event,
        condition,
        action,
    })
}

fn parse_action(index: usize, obj: &Map<String, Value>) -> Result<Action, TriggerError> {
    check_keys(index, "action.", obj, ACTION_KEYS)?;
    let kind = action_kind(index, obj)?;
    let target = action_target(index, obj, kind)?;
    let args = action_args(index, obj, kind)?;
    let timeout = action_timeout(index, obj)?;
    Ok(Action {
        kind,
        target,
        args,
        timeout,
    })
}

/// `action.type`: `command` or `webhook`.
fn action_kind(index: usize, obj: &Map<String, Value>) -> Result<ActionKind, TriggerError> {
    let err = |field: &str, message: String| field_error(index, field, message);
    let kind = match obj.get("type") {
        Some(Value::String(t)) => match t.as_str() {
            "command" => ActionKind::Command,
            "webhook" => ActionKind::Webhook,
            "mcp_tool" | "workflow_file" => {
                return Err(err(
                    "action.type",
                    format!(
                        "action type `{t}` is part of the workflow-trigger format but this build \
                         does not support it; use `command` or `webhook`"
                    ),
                ));
            }
            other => {
                return Err(err(
                    "action.type",
                    format!("unknown action type `{other}`; use `command` or `webhook`"),
                ));
            }
        },
        Some(_) => {
            return Err(err(
                "action.type",
                "must be the string `command` or `webhook`".to_string(),
            ));
        }
        None => {
            return Err(err(
                "action.type",
                "missing; set it to `command` or `webhook`".to_string(),
            ));
        }
    };
    Ok(kind)
}

/// `action.target`: a program, or an http(s) URL.
fn action_target(
    index: usize,
    obj: &Map<String, Value>,
    kind: ActionKind,
) -> Result<String, TriggerError> {
    let err = |field: &str, message: String| field_error(index, field, message);
    let target = match obj.get("target") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        Some(Value::String(_)) | None => {
            return Err(err(
                "action.target",
                match kind {
                    ActionKind::Command => "is empty; give the program to run",
                    ActionKind::Webhook => "is empty; give the http:// or https:// URL to POST to",
                }
                .to_string(),
            ));
        }
        Some(_) => return Err(err("action.target", "must be a string".to_string())),
    };
    match kind {
        ActionKind::Command => {
            if target.contains('\0') {
                return Err(err(
                    "action.target",
                    "contains a NUL byte; give a program name or path".to_string(),
                ));
            }
        }
        ActionKind::Webhook => check_url(&target).map_err(|m| err("action.target", m))?,
    }
    Ok(target)
}

/// `action.args`: `argv` of a command, `headers` of a webhook.
fn action_args(
    index: usize,
    obj: &Map<String, Value>,
    kind: ActionKind,
) -> Result<Map<String, Value>, TriggerError> {
    let err = |field: &str, message: String| field_error(index, field, message);
    let args = match obj.get("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(args)) => args.clone(),
        Some(_) => return Err(err("action.args", "must be an object".to_string())),
    };
    match kind {
        ActionKind::Command => {
            check_keys(index, "action.args.", &args, &["argv"])?;
            command_argv(&args).map_err(|m| err("action.args.argv", m))?;
        }
        ActionKind::Webhook => {
            check_keys(index, "action.args.", &args, &["headers"])?;
            webhook_headers(&args, None).map_err(|m| err("action.args.headers", m))?;
        }
    }
    Ok(args)
}

/// `action.timeout_ms`: 1 ms to 10 minutes, 30 s by default.
fn action_timeout(index: usize, obj: &Map<String, Value>) -> Result<Duration, TriggerError> {
    let err = |field: &str, message: String| field_error(index, field, message);
    let timeout = match obj.get("timeout_ms") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => {
                return Err(err(
                    "action.timeout_ms",
                    "is 0; give a positive number of milliseconds (default 30000)".to_string(),
                ));
            }
            Some(ms) if ms > MAX_TIMEOUT.as_millis() as u64 => {
                return Err(err(
                    "action.timeout_ms",
                    format!(
                        "is {ms}; at most {} (10 minutes) is allowed",
                        MAX_TIMEOUT.as_millis()
                    ),
                ));
            }
            Some(ms) => Duration::from_millis(ms),
            None => {
                return Err(err(
                    "action.timeout_ms",
                    format!("is {n}; give a positive whole number of milliseconds"),
                ));
            }
        },
        Some(_) => {
            return Err(err(
                "action.timeout_ms",
                "must be a positive whole number of milliseconds".to_string(),
            ));
        }
    };
    Ok(timeout)
}

fn check_url(target: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(target)
        .map_err(|e| format!("`{target}` is not a URL ({e}); give an http:// or https:// URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{target}` is a `{}:` URL; webhooks need an http:// or https:// URL",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "`{target}` has no host; give an http:// or https:// URL"
        ));
    }
    Ok(())
}

/// The arguments of a command action (`args.argv`).
pub(super) fn command_argv(args: &Map<String, Value>) -> Result<Vec<String>, String> {
    match args.get("argv") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) if !s.contains('\0') => Ok(s.clone()),
                Value::String(_) => Err(format!("item {i} contains a NUL byte")),
                _ => Err(format!(
                    "item {i} is not a string; argv must be an array of strings"
                )),
            })
            .collect(),
        Some(_) => Err("must be an array of strings".to_string()),
    }
}

/// Looks an environment variable up (the process's own, or a test's).
type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The extra headers of a webhook action (`args.headers`). Secrets are never
/// written into a trigger (triggers are kept in `state.json`, checkpoints and
/// archives): a value may name environment variables as `${env:NAME}`, which
/// `env` fills in when the webhook is sent; without `env` (checking the
/// trigger up front) the references are only checked.
pub(super) fn webhook_headers(
    args: &Map<String, Value>,
    env: Option<EnvLookup<'_>>,
) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut map = HeaderMap::new();
    match args.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            for (name, value) in headers {
                let Value::String(value) = value else {
                    return Err(format!("the value of `{name}` must be a string"));
                };
                let text = header_text(name, value, env)?;
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a valid header name"))?;
                let value = HeaderValue::from_str(&text)
                    .map_err(|_| format!("the value of `{name}` is not a valid header value"))?;
                map.insert(name, value);
            }
        }
        Some(_) => return Err("must be an object of header names to string values".to_string()),
    }
    Ok(map)
}

/// Whether a header carries credentials by its name.
fn secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || ["token", "secret", "key", "password", "auth"]
        .iter()
        .any(|w| n.contains(w))
}

/// A header value with its `${env:NAME}` references filled in (or, without
/// `env`, checked). A credential header must take its secret from a reference.
fn header_text(name: &str, raw: &str, env: Option<EnvLookup<'_>>) -> Result<String, String> {
    // The variables it names hold secrets: kept from stages, redacted from logs.
    pmpo_store::secrets::register_env_references(raw);
    let mut out = String::new();
    let mut rest = raw;
    let mut refs = 0;
    while let Some(at) = rest.find("${env:") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "${env:".len()..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "the value of `{name}` has an unclosed `${{env:` reference; write `${{env:NAME}}`"
            ));
        };
        let var = &after[..end];
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{env:{var}}}` in `{name}` is not a variable name (letters, digits and `_`)"
            ));
        }
        refs += 1;
        match env {
            // A stand-in, so the header value can be checked for validity.
            None => out.push('x'),
            Some(lookup) => match lookup(var) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(format!(
                        "`{name}` needs the environment variable `{var}`, which is not set"
                    ));
                }
            },
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if refs == 0 && secret_header(name) && !raw.trim().is_empty() {
        return Err(format!(
            "`{name}` holds a literal value: a secret must not be written into a trigger (triggers are kept in state.json, checkpoints and archives); write `${{env:NAME}}` there (e.g. `\"{name}\": \"Bearer ${{env:HOOK_TOKEN}}\"`) and set NAME in pmpo's environment"
        ));
    }
    Ok(out)
}
