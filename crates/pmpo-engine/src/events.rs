//! Events: the engine reports every stage transition as an [`Event`] whose
//! payload ([`What`]) says what happened in data, not in words; the event log
//! and the terminal reporter are both just consumers. The words are the
//! reporter's ([`crate::words`]).

use std::time::Duration;

use serde::Serialize;

pub use pmpo_store::states::StageStatus;

use crate::results::RunStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    ExecutionStarted,
    /// An interrupted run continues; the message says what changed.
    ExecutionResumed,
    TaskStarted,
    TaskValidating,
    TaskCompleted,
    TaskFailed,
    TaskSkipped,
    /// An attempt failed and the stage will be tried again.
    TaskRetrying,
    /// The stage's tool kept failing; its fallback is used.
    TaskFallback,
    /// The stage waits for a person or for an adapter to recover; the run pauses.
    TaskAwaitingIntervention,
    ExecutionFinished,
}

/// Why a stage is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Attempt `attempt` of `of` failed; the next one follows after `delay`.
    AttemptFailed {
        attempt: u32,
        of: u32,
        error: String,
        delay: Duration,
    },
    /// The model corrected the stage's code; it runs once more.
    Corrected,
    /// A person asked for another try.
    AsAsked,
}

/// Where a reused result came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reused {
    /// Completed in the interrupted run this run continues.
    BeforeInterruption,
    /// Cached from an earlier run.
    Cached { run_id: String },
}

/// What happened, with what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    ExecutionStarted {
        /// The plan, as the user named it.
        plan: String,
    },
    ExecutionResumed {
        run_id: String,
        /// Stages already done in the run this one continues.
        done: usize,
        /// Whether the plan file changed since, and which stages changed.
        plan_changed: bool,
        changed: Vec<String>,
        /// The pmpo that did not finish, and how many processes its stages left running were stopped.
        previous_pid: Option<u32>,
        stopped: usize,
    },
    TaskStarted {
        description: String,
    },
    TaskValidating,
    TaskCompleted {
        /// Reused instead of run.
        reused: Option<Reused>,
        /// Completed through its fallback tool.
        fallback: Option<String>,
    },
    TaskFailed {
        error: String,
    },
    TaskSkipped {
        reason: String,
    },
    TaskRetrying(Retry),
    TaskFallback {
        /// The stage's own tool, and why it was given up (none: its adapter was unavailable).
        tool: String,
        why: Option<String>,
        fallback: String,
    },
    TaskAwaitingIntervention {
        reason: String,
    },
    ExecutionFinished {
        status: RunStatus,
        /// The stages counted by outcome (`Summary::describe`).
        summary: String,
    },
}

impl What {
    /// The kind written in the event log.
    pub fn kind(&self) -> EventKind {
        match self {
            What::ExecutionStarted { .. } => EventKind::ExecutionStarted,
            What::ExecutionResumed { .. } => EventKind::ExecutionResumed,
            What::TaskStarted { .. } => EventKind::TaskStarted,
            What::TaskValidating => EventKind::TaskValidating,
            What::TaskCompleted { .. } => EventKind::TaskCompleted,
            What::TaskFailed { .. } => EventKind::TaskFailed,
            What::TaskSkipped { .. } => EventKind::TaskSkipped,
            What::TaskRetrying(_) => EventKind::TaskRetrying,
            What::TaskFallback { .. } => EventKind::TaskFallback,
            What::TaskAwaitingIntervention { .. } => EventKind::TaskAwaitingIntervention,
            What::ExecutionFinished { .. } => EventKind::ExecutionFinished,
        }
    }
}

/// One thing that happened during a run.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: EventKind,
    pub run_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_id: Option<String>,
    pub timestamp: String,
    /// 1-based position of the stage in execution order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StageStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// The payload in words, for the event log ([`crate::words::message`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What happened, in data.
    #[serde(skip)]
    pub what: What,
}

/// Something that consumes events as they happen (the terminal reporter).
pub trait EventSink {
    fn on_event(&mut self, event: &Event);
}

/// A sink that ignores everything.
pub struct NoSink;

impl EventSink for NoSink {
    fn on_event(&mut self, _event: &Event) {}
}
