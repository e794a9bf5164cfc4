//! Workflow triggers: actions (a command or a webhook) that fire at
//! refinement lifecycle events, optionally guarded by a [`Condition`].
//!
//! Triggers are validated up front by [`parse_triggers`]. A [`Dispatcher`]
//! starts the matching actions in the background so the loop never waits on
//! them; every outcome goes to the workflow log as one JSON object per line.
//! An action failure is only logged: it never fails the loop.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::condition::Condition;

mod dispatch;
mod parse;

pub use dispatch::Dispatcher;
pub use parse::parse_triggers;

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
