//! Workflow triggers: actions (a command or a webhook) that fire at
//! refinement lifecycle events, optionally guarded by a [`Condition`].
//!
//! Triggers are validated up front by [`parse_triggers`]. A [`Dispatcher`]
//! starts the matching actions in the background so the loop never waits on
//! them; every outcome goes to the workflow log as one JSON object per line.
//! An action failure is only logged: it never fails the loop.

use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pmpo_store::Workspace;
use serde_json::{Map, Value, json};

use crate::condition::{self, Condition};

/// The timeout of an action when `timeout_ms` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(30_000);
/// The longest timeout an action may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_millis(600_000);
/// How much of a command's stdout, stderr or a webhook's response body is logged.
pub const OUTPUT_CAP: usize = 64 * 1024;

/// A lifecycle event at which triggers fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A phase of the loop is about to start.
    PhaseStart,
    /// A phase of the loop has finished.
    PhaseComplete,
    /// One iteration of the loop has finished.
    IterationComplete,
    /// The whole refinement has finished.
    RefinementComplete,
    /// An iteration scored worse than an earlier one.
    Regression,
    /// The loop waits for a human approval.
    ApprovalRequired,
}

impl Event {
    /// Every event, in lifecycle order.
    pub const ALL: [Event; 6] = [
        Event::PhaseStart,
        Event::PhaseComplete,
        Event::IterationComplete,
        Event::RefinementComplete,
        Event::Regression,
        Event::ApprovalRequired,
    ];

    /// The name used in trigger files, e.g. `on_phase_complete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::PhaseStart => "on_phase_start",
            Event::PhaseComplete => "on_phase_complete",
            Event::IterationComplete => "on_iteration_complete",
            Event::RefinementComplete => "on_refinement_complete",
            Event::Regression => "on_regression",
            Event::ApprovalRequired => "on_approval_required",
        }
    }

    /// The event named `name` in a trigger file, if there is one.
    pub fn from_name(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The hook-event `event_type` of this event (`on_regression` is
    /// `regression_detected`, the others drop their `on_` prefix).
    pub fn hook_event_type(self) -> &'static str {
        match self {
            Event::PhaseStart => "phase_start",
            Event::PhaseComplete => "phase_complete",
            Event::IterationComplete => "iteration_complete",
            Event::RefinementComplete => "refinement_complete",
            Event::Regression => "regression_detected",
            Event::ApprovalRequired => "approval_required",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of action a trigger runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// Runs a program (no shell) with the hook-event payload on stdin.
    Command,
    /// POSTs the hook-event payload as JSON to a URL.
    Webhook,
}

impl ActionKind {
    /// The name used in trigger files.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Command => "command",
            ActionKind::Webhook => "webhook",
        }
    }
}

/// The action of a trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// Command or webhook.
    pub kind: ActionKind,
    /// The program (on PATH, or a path; relative paths are from the
    /// workspace) or the `http(s)://` URL.
    pub target: String,
    /// `argv` (array of strings) for commands, `headers` (object of
    /// strings) for webhooks.
    pub args: Map<String, Value>,
    /// How long the action may run before it is stopped.
    pub timeout: Duration,
}

/// One validated workflow trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The event it fires at.
    pub event: Event,
    /// The condition's source text and its parsed form, if any.
    pub condition: Option<(String, Condition)>,
    /// What it does.
    pub action: Action,
}

/// Why a set of triggers was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    /// The document as a whole has the wrong shape.
    #[error("workflow triggers: {0}")]
    Layout(String),
    /// One field of one trigger is wrong.
    #[error("workflow trigger #{index}, `{field}`: {message}")]
    Field {
        /// The trigger's 0-based position in the list.
        index: usize,
        /// The offending field, e.g. `action.timeout_ms`.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
}

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
    let err = |field: &str, message: String| field_error(index, field, message);
    check_keys(index, "action.", obj, ACTION_KEYS)?;

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

    Ok(Action {
        kind,
        target,
        args,
        timeout,
    })
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
fn command_argv(args: &Map<String, Value>) -> Result<Vec<String>, String> {
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
fn webhook_headers(
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

/// Builds the hook-event payload (see hook-event.schema.json).
/// `event_type` may be a trigger event (`on_phase_complete`, mapped to
/// `phase_complete`; `on_regression` to `regression_detected`) or already a
/// hook-event type such as `checkpoint_created`. A `metadata` that is not an
/// object is stored as `{"value": ...}` (null becomes `{}`).
#[allow(clippy::too_many_arguments)]
pub fn hook_payload(
    event_type: &str,
    artifact_name: &str,
    refinement_id: &str,
    artifact_type: &str,
    content_type: &str,
    phase: Option<&str>,
    iteration: u64,
    metadata: Value,
) -> Value {
    let event_type = match Event::from_name(event_type) {
        Some(event) => event.hook_event_type(),
        None => event_type.strip_prefix("on_").unwrap_or(event_type),
    };
    let metadata = match metadata {
        Value::Object(m) => Value::Object(m),
        Value::Null => Value::Object(Map::new()),
        other => json!({ "value": other }),
    };
    json!({
        "event_type": event_type,
        "artifact_name": artifact_name,
        "refinement_id": refinement_id,
        "artifact_type": artifact_type,
        "content_type": content_type,
        "phase": phase,
        "iteration": iteration,
        "timestamp": pmpo_store::now_rfc3339(),
        "metadata": metadata,
    })
}

/// State shared by the dispatcher and its action threads.
struct Shared {
    workspace: Workspace,
    log_rel: String,
    log_lock: Mutex<()>,
    /// Set when [`Dispatcher::finish`] stops waiting: running commands are killed.
    stop: AtomicBool,
}

impl Shared {
    fn log(&self, mut line: Map<String, Value>) {
        line.insert("time".to_string(), json!(pmpo_store::now_rfc3339()));
        // `time` first reads better in the log.
        let mut ordered = Map::new();
        if let Some(t) = line.remove("time") {
            ordered.insert("time".to_string(), t);
        }
        ordered.extend(line);
        let text = Value::Object(ordered).to_string();
        let mut bytes = pmpo_store::secrets::redact(&text).into_owned().into_bytes();
        bytes.push(b'\n');
        // A poisoned lock only means another action thread panicked while
        // appending; the file is still usable.
        let _guard = self
            .log_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = self.workspace.append(&self.log_rel, &bytes) {
            // A closed stderr must not take the dispatcher down with it.
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("pmpo: cannot write the workflow log: {e}\n"),
            );
        }
    }
}

/// Starts the actions of triggers at lifecycle events without blocking the
/// caller, and logs their outcomes to the workflow log.
pub struct Dispatcher {
    shared: Arc<Shared>,
    triggers: Vec<Trigger>,
    running: Vec<JoinHandle<()>>,
    fired: usize,
}

impl Dispatcher {
    /// A dispatcher for `triggers` that logs to the workspace-relative
    /// `log_rel` (e.g. `.refiner/artifacts/NAME/workflow.log`).
    pub fn new(workspace: Workspace, log_rel: String, triggers: Vec<Trigger>) -> Self {
        Dispatcher {
            shared: Arc::new(Shared {
                workspace,
                log_rel,
                log_lock: Mutex::new(()),
                stop: AtomicBool::new(false),
            }),
            triggers,
            running: Vec::new(),
            fired: 0,
        }
    }

    /// The triggers this dispatcher serves.
    pub fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }

    /// Starts, in the background, the action of every trigger of `event`
    /// whose condition holds over `payload` (a hook-event object; its
    /// `metadata` fields are reachable as `metadata.x`). Triggers whose
    /// condition is false are logged as skipped. Returns at once with the
    /// number of actions started.
    pub fn dispatch(&mut self, event: Event, payload: &Value) -> usize {
        self.running.retain(|h| !h.is_finished());
        let mut started = 0;
        for (index, trigger) in self.triggers.iter().enumerate() {
            if trigger.event != event {
                continue;
            }
            if let Some((src, cond)) = &trigger.condition
                && !cond.eval(payload)
            {
                let mut line = outcome_base(event, index, &trigger.action);
                line.insert("status".to_string(), json!("skipped"));
                line.insert(
                    "message".to_string(),
                    json!(format!("skipped: condition `{src}` is false")),
                );
                self.shared.log(line);
                continue;
            }
            let shared = Arc::clone(&self.shared);
            let action = trigger.action.clone();
            let payload = payload.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pmpo-trigger-{index}"))
                .spawn(move || {
                    let line = run_action(&shared, event, index, &action, &payload);
                    shared.log(line);
                });
            match spawned {
                Ok(handle) => {
                    self.running.push(handle);
                    started += 1;
                }
                Err(e) => {
                    let mut line = outcome_base(event, index, &trigger.action);
                    line.insert("status".to_string(), json!("failed"));
                    line.insert(
                        "error".to_string(),
                        json!(format!("cannot start a thread for the action: {e}")),
                    );
                    self.shared.log(line);
                }
            }
        }
        self.fired += started;
        started
    }

    /// How many actions have been started so far.
    pub fn fired(&self) -> usize {
        self.fired
    }

    /// Waits up to `max_wait` for the started actions to end. Commands still
    /// running then are killed (and logged as `timeout`); webhooks end by
    /// their own deadline. Returns how many actions had not ended when it
    /// returned.
    pub fn finish(self, max_wait: Duration) -> usize {
        let deadline = Instant::now() + max_wait;
        let all_done = |running: &[JoinHandle<()>]| running.iter().all(|h| h.is_finished());
        while !all_done(&self.running) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !all_done(&self.running) {
            self.shared.stop.store(true, Ordering::SeqCst);
            // Give killed commands a moment to be reaped and logged.
            let grace = Instant::now() + Duration::from_secs(2);
            while !all_done(&self.running) && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut left = 0;
        for handle in self.running {
            if handle.is_finished() {
                // The thread body does not panic; if it did, there is
                // nothing more to report than its (missing) log line.
                let _ = handle.join();
            } else {
                left += 1;
            }
        }
        left
    }
}

fn outcome_base(event: Event, index: usize, action: &Action) -> Map<String, Value> {
    let mut line = Map::new();
    line.insert("event".to_string(), json!(event.as_str()));
    line.insert("trigger".to_string(), json!(index));
    line.insert("action".to_string(), json!(action.kind.as_str()));
    line.insert("target".to_string(), json!(action.target));
    line
}

fn run_action(
    shared: &Shared,
    event: Event,
    index: usize,
    action: &Action,
    payload: &Value,
) -> Map<String, Value> {
    let started = Instant::now();
    let mut line = outcome_base(event, index, action);
    let outcome = match action.kind {
        ActionKind::Command => run_command(shared, event, action, payload),
        ActionKind::Webhook => run_webhook(action, payload),
    };
    line.insert("status".to_string(), json!(outcome.status));
    line.extend(outcome.fields);
    line.insert(
        "duration_ms".to_string(),
        json!(started.elapsed().as_millis() as u64),
    );
    line
}

struct Outcome {
    status: &'static str,
    fields: Map<String, Value>,
}

impl Outcome {
    fn failed(error: String) -> Self {
        let mut fields = Map::new();
        fields.insert("error".to_string(), json!(error));
        Outcome {
            status: "failed",
            fields,
        }
    }
}

fn run_command(shared: &Shared, event: Event, action: &Action, payload: &Value) -> Outcome {
    use pmpo_process::Termination;

    let argv = match command_argv(&action.args) {
        Ok(argv) => argv,
        Err(e) => return Outcome::failed(format!("args.argv {e}")),
    };
    let root = shared.workspace.root();
    // A relative path with a directory part is relative to the workspace;
    // a bare name is looked up on PATH.
    let program = if action.target.contains('/') {
        root.join(&action.target).to_string_lossy().into_owned()
    } else {
        action.target.clone()
    };
    let text = |key: &str| match payload.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let mut body = payload.to_string().into_bytes();
    body.push(b'\n');
    // Through pmpo's one process runner: its own process group, stopped
    // (SIGTERM, then SIGKILL after a short grace) at the timeout or when the
    // run stops waiting; the payload on stdin (a child that never reads it
    // does not block us); the first OUTPUT_CAP bytes of each stream kept.
    let spec = pmpo_process::ProcessSpec {
        cwd: Some(root.to_path_buf()),
        env: vec![
            ("PMPO_EVENT".to_string(), event.as_str().to_string()),
            ("PMPO_ARTIFACT".to_string(), text("artifact_name")),
            ("PMPO_PHASE".to_string(), text("phase")),
            ("PMPO_ITERATION".to_string(), text("iteration")),
        ],
        // Secrets stay with pmpo: a trigger's command gets no key either.
        env_remove: pmpo_store::secrets::hidden_variables(),
        stdin: Some(body),
        capture_limit: OUTPUT_CAP,
        capture_tail: 0,
        timeout: Some(action.timeout),
        pipes_grace: Duration::from_secs(1),
        ..pmpo_process::ProcessSpec::new(std::iter::once(program).chain(argv))
    };
    let r = match pmpo_process::run_blocking(&spec, Some(&shared.stop)) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::failed(format!("cannot start `{}`: {e}", action.target));
        }
    };

    let mut fields = Map::new();
    let code = match r.exit {
        Some(Termination::Exited(c)) => Some(c),
        _ => None,
    };
    fields.insert("exit_code".to_string(), json!(code));
    if let Some(Termination::Signaled(signal)) = r.exit {
        fields.insert("signal".to_string(), json!(signal));
    }
    let result = match r.termination {
        Termination::TimedOut | Termination::Cancelled => {
            let why = if r.termination == Termination::Cancelled {
                "killed: the run ended and stopped waiting for it".to_string()
            } else {
                format!(
                    "killed after its timeout of {} ms",
                    action.timeout.as_millis()
                )
            };
            fields.insert("error".to_string(), json!(why));
            "timeout"
        }
        Termination::Exited(0) => "ok",
        Termination::Exited(c) => {
            fields.insert(
                "error".to_string(),
                json!(format!("`{}` exited with exit status: {c}", action.target)),
            );
            "failed"
        }
        Termination::Signaled(sig) => {
            fields.insert(
                "error".to_string(),
                json!(format!("`{}` exited with signal: {sig}", action.target)),
            );
            "failed"
        }
    };
    fields.insert(
        "stdout".to_string(),
        json!(String::from_utf8_lossy(&r.stdout.head)),
    );
    fields.insert(
        "stderr".to_string(),
        json!(String::from_utf8_lossy(&r.stderr.head)),
    );
    if r.stdout.truncated() {
        fields.insert("stdout_truncated".to_string(), json!(true));
    }
    if r.stderr.truncated() {
        fields.insert("stderr_truncated".to_string(), json!(true));
    }
    if let Some(note) = r.note {
        fields.insert("note".to_string(), json!(note));
    }
    Outcome {
        status: result,
        fields,
    }
}

/// A webhook's timeout is a deadline for the whole exchange: connecting,
/// sending, and reading the answer to its end. The exchange runs on a thread
/// of its own; past the deadline it is abandoned (its reads stop at the
/// deadline too, so the connection is closed soon after) and the outcome is
/// `timeout`.
fn run_webhook(action: &Action, payload: &Value) -> Outcome {
    let deadline = Instant::now() + action.timeout;
    let (tx, rx) = std::sync::mpsc::channel();
    let (act, body) = (action.clone(), payload.clone());
    let spawned = std::thread::Builder::new()
        .name("pmpo-webhook".into())
        .spawn(move || {
            let _ = tx.send(webhook_exchange(&act, &body, deadline));
        });
    if let Err(e) = spawned {
        return Outcome::failed(format!("cannot start the webhook call: {e}"));
    }
    match rx.recv_timeout(action.timeout) {
        Ok(outcome) => outcome,
        Err(_) => webhook_timed_out(action, Map::new()),
    }
}

fn webhook_timed_out(action: &Action, mut fields: Map<String, Value>) -> Outcome {
    fields.insert(
        "error".to_string(),
        json!(format!(
            "the webhook did not finish within its timeout of {} ms",
            action.timeout.as_millis()
        )),
    );
    Outcome {
        status: "timeout",
        fields,
    }
}

fn webhook_exchange(action: &Action, payload: &Value, deadline: Instant) -> Outcome {
    let env = |name: &str| std::env::var(name).ok();
    let headers = match webhook_headers(&action.args, Some(&env)) {
        Ok(h) => h,
        Err(e) => return Outcome::failed(format!("args.headers {e}")),
    };
    let client = match reqwest::blocking::Client::builder()
        .timeout(action.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pmpo/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Outcome::failed(format!("cannot create an HTTP client: {e}")),
    };
    let response = client
        .post(&action.target)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .headers(headers)
        .body(payload.to_string())
        .send();
    let mut fields = Map::new();
    match response {
        Err(e) => {
            fields.insert("error".to_string(), json!(error_chain(&e)));
            Outcome {
                status: if e.is_timeout() { "timeout" } else { "failed" },
                fields,
            }
        }
        Ok(response) => {
            let status = response.status();
            fields.insert("http_status".to_string(), json!(status.as_u16()));
            // Read in pieces, so a server that trickles its answer is cut off
            // at the deadline rather than waited for byte by byte.
            let mut body = Vec::new();
            let mut reader = response.take(OUTPUT_CAP as u64 + 1);
            let mut piece = [0u8; 8192];
            let read = loop {
                if Instant::now() >= deadline {
                    return webhook_timed_out(action, fields);
                }
                match reader.read(&mut piece) {
                    Ok(0) => break Ok(()),
                    Ok(n) => body.extend_from_slice(&piece[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let truncated = body.len() > OUTPUT_CAP;
            body.truncate(OUTPUT_CAP);
            fields.insert(
                "response".to_string(),
                json!(String::from_utf8_lossy(&body)),
            );
            if truncated {
                fields.insert("response_truncated".to_string(), json!(true));
            }
            if status.is_success() {
                Outcome {
                    status: "ok",
                    fields,
                }
            } else {
                let mut error = format!("the server answered {status}");
                if let Err(e) = read {
                    error.push_str(&format!(" (reading its body failed: {e})"));
                }
                fields.insert("error".to_string(), json!(error));
                Outcome {
                    status: "failed",
                    fields,
                }
            }
        }
    }
}

/// An error with its causes, so "connection refused" is visible.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
