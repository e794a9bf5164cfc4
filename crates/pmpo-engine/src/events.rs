//! Events: the engine reports every stage transition as an [`Event`]; the
//! event log and the terminal reporter are both just consumers.

use serde::Serialize;

pub use pmpo_store::states::StageStatus;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
