//! The reporter: the one place that turns [`Event`]s into words. The event
//! log's `message` field is [`message`]; a terminal that is not live reads
//! [`write_event`] (one line per event); the CLI's live display paints the
//! same words.

use std::io::{self, Write};
use std::time::Duration;

use crate::events::{Event, EventKind, Retry, Reused, StageStatus, What};

/// A duration for people: `850 ms`, `12.3 s`, `2m05s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// What happened, in words (the event log's `message`); `None` when the
/// event says it all.
pub fn message(what: &What) -> Option<String> {
    Some(match what {
        What::ExecutionStarted { plan } => plan.clone(),
        What::ExecutionResumed { .. } => resumed(what),
        What::TaskStarted { description } if description.is_empty() => return None,
        What::TaskStarted { description } => description.clone(),
        What::TaskValidating => return None,
        What::TaskCompleted {
            reused: Some(Reused::BeforeInterruption),
            ..
        } => "completed before the interruption".into(),
        What::TaskCompleted {
            reused: Some(Reused::Cached { run_id }),
            ..
        } => format!("cached from run {run_id}"),
        What::TaskCompleted {
            fallback: Some(fb), ..
        } => format!("completed with the fallback `{fb}`"),
        What::TaskCompleted { .. } => return None,
        What::TaskFailed { error } => error.clone(),
        What::TaskSkipped { reason } | What::TaskAwaitingIntervention { reason } => reason.clone(),
        What::TaskRetrying(Retry::AttemptFailed {
            attempt,
            of,
            error,
            delay,
        }) => format!("attempt {attempt} of {of} failed ({error}); retrying in {delay:.1?}"),
        What::TaskRetrying(Retry::Corrected) => {
            "running the code once more, as corrected by the model".into()
        }
        What::TaskRetrying(Retry::AsAsked) => "retrying, as the user asked".into(),
        What::TaskFallback {
            tool,
            why,
            fallback,
        } => {
            let why = why.as_deref().unwrap_or("its adapter is unavailable");
            format!("`{tool}` failed ({why}); using the fallback `{fallback}`")
        }
        What::ExecutionFinished { status, summary } => format!("{status}: {summary}"),
    })
}

fn resumed(what: &What) -> String {
    let What::ExecutionResumed {
        run_id,
        done,
        plan_changed,
        changed,
        previous_pid,
        stopped,
    } = what
    else {
        return String::new();
    };
    let mut msg = format!("continuing run {run_id} ({done} stage(s) already done)");
    if *plan_changed {
        msg.push_str("; the plan changed since then");
        if !changed.is_empty() {
            msg.push_str(&format!(
                ": stage(s) {} changed and will run again",
                changed.join(", ")
            ));
        }
    }
    if let Some(pid) = previous_pid {
        msg.push_str(&format!("; the previous pmpo (pid {pid}) did not finish"));
        if *stopped > 0 {
            msg.push_str(&format!(
                "; stopped {stopped} process(es) its stage left running"
            ));
        }
    }
    msg
}

/// `[index/total]` of a stage's event.
pub fn position(e: &Event) -> String {
    format!("[{}/{}]", e.index.unwrap_or(0), e.total)
}

/// The event's duration for people (empty when it has none).
pub fn duration(e: &Event) -> String {
    e.duration_ms
        .map(|ms| human(Duration::from_secs_f64(ms / 1000.0)))
        .unwrap_or_default()
}

/// The label of an event that interrupts a stage's progress (a retry, the
/// fallback, a pause); `None` for the others.
pub fn interruption(kind: EventKind) -> Option<&'static str> {
    match kind {
        EventKind::TaskRetrying => Some("retry"),
        EventKind::TaskFallback => Some("fallback"),
        EventKind::TaskAwaitingIntervention => Some("paused"),
        _ => None,
    }
}

/// The line a terminal that is not live shows for an event; `None` for
/// events it does not show.
pub fn line(e: &Event) -> Option<String> {
    let id = e.stage_id.as_deref().unwrap_or("");
    let pos = position(e);
    let dur = duration(e);
    let msg = message(&e.what).unwrap_or_default();
    if e.event == EventKind::ExecutionResumed {
        return Some(format!("pmpo: {msg}"));
    }
    if let Some(label) = interruption(e.event) {
        return Some(format!("  ! {pos} {id}  {label}: {msg}"));
    }
    Some(match e.event {
        EventKind::TaskStarted => format!("{pos} {id} started"),
        EventKind::TaskCompleted => match e.status {
            Some(StageStatus::Cached) => format!("{pos} {id} CACHED ({msg})"),
            _ if !msg.is_empty() => format!("{pos} {id} COMPLETED ({msg})"),
            _ => format!("{pos} {id} COMPLETED ({dur})"),
        },
        EventKind::TaskFailed => format!(
            "{pos} {id} {} ({dur}): {msg}",
            e.status.map_or("FAILED", StageStatus::as_str)
        ),
        EventKind::TaskSkipped => format!("{pos} {id} SKIPPED: {msg}"),
        _ => return None,
    })
}

/// Writes an event's line (if it has one) to `out`.
pub fn write_event(out: &mut dyn Write, e: &Event) -> io::Result<()> {
    match line(e) {
        Some(l) => writeln!(out, "{l}"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::RunStatus;

    fn event(what: What, stage: Option<(&str, usize)>, status: Option<StageStatus>) -> Event {
        let duration_ms = match what {
            What::TaskCompleted { .. } | What::TaskFailed { .. } => Some(1234.5),
            What::ExecutionFinished { .. } => Some(65_000.0),
            _ => None,
        };
        Event {
            event: what.kind(),
            run_id: "20260101T000000Z-abcdef".into(),
            stage_id: stage.map(|(s, _)| s.into()),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            index: stage.map(|(_, i)| i),
            total: 3,
            status,
            duration_ms,
            message: message(&what),
            what,
        }
    }

    /// A run with a retry, a fallback, a reuse, a failure, a skip and a resume.
    fn a_run() -> Vec<Event> {
        use StageStatus as S;
        let (build, test, ship) = (Some(("build", 1)), Some(("test", 2)), Some(("ship", 3)));
        vec![
            event(
                What::ExecutionStarted {
                    plan: "plan.yaml".into(),
                },
                None,
                None,
            ),
            event(
                What::ExecutionResumed {
                    run_id: "20251231T000000Z-123456".into(),
                    done: 1,
                    plan_changed: true,
                    changed: vec!["test".into()],
                    previous_pid: Some(4242),
                    stopped: 2,
                },
                None,
                None,
            ),
            event(
                What::TaskCompleted {
                    reused: Some(Reused::Cached {
                        run_id: "20251231T000000Z-123456".into(),
                    }),
                    fallback: None,
                },
                build,
                Some(S::Cached),
            ),
            event(
                What::TaskStarted {
                    description: "run the tests".into(),
                },
                test,
                Some(S::InProgress),
            ),
            event(
                What::TaskRetrying(Retry::AttemptFailed {
                    attempt: 1,
                    of: 3,
                    error: "exited with code 1: boom".into(),
                    delay: Duration::from_millis(1500),
                }),
                test,
                Some(S::InProgress),
            ),
            event(
                What::TaskFallback {
                    tool: "plugin:flaky".into(),
                    why: Some("exited with code 1: boom".into()),
                    fallback: "run".into(),
                },
                test,
                Some(S::InProgress),
            ),
            event(What::TaskValidating, test, Some(S::Validating)),
            event(
                What::TaskCompleted {
                    reused: None,
                    fallback: Some("run".into()),
                },
                test,
                Some(S::Completed),
            ),
            event(
                What::TaskStarted {
                    description: String::new(),
                },
                ship,
                Some(S::InProgress),
            ),
            event(
                What::TaskRetrying(Retry::Corrected),
                ship,
                Some(S::InProgress),
            ),
            event(
                What::TaskRetrying(Retry::AsAsked),
                ship,
                Some(S::InProgress),
            ),
            event(
                What::TaskFailed {
                    error: "timed out after 1.0s; it was stopped".into(),
                },
                ship,
                Some(S::Timeout),
            ),
            event(
                What::TaskSkipped {
                    reason: "upstream stage `ship` TIMEOUT".into(),
                },
                ship,
                Some(S::Skipped),
            ),
            event(
                What::TaskAwaitingIntervention {
                    reason: "awaiting a decision after: boom".into(),
                },
                ship,
                Some(S::AwaitingIntervention),
            ),
            event(
                What::ExecutionFinished {
                    status: RunStatus::Failed,
                    summary: "1 completed, 1 cached, 1 timeout".into(),
                },
                None,
                None,
            ),
        ]
    }

    #[test]
    fn a_run_in_lines() {
        let mut out = Vec::new();
        for e in a_run() {
            write_event(&mut out, &e).unwrap();
        }
        insta::assert_snapshot!(String::from_utf8(out).unwrap());
    }

    #[test]
    fn a_run_in_the_event_log() {
        let lines: Vec<String> = a_run()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        insta::assert_snapshot!(lines.join("\n"));
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human(Duration::from_millis(850)), "850 ms");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(human(Duration::from_secs(125)), "2m05s");
    }
}
