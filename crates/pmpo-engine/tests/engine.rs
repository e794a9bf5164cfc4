//! `Engine::execute` driven directly, in a temp workspace, with a fake tool:
//! what the recovery policy and the scheduler do, seen in the results, the
//! events and the disk, without the binary.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pmpo_engine::events::{Retry, What};
use pmpo_engine::results::{ExecutionResults, RunStatus, StageResult};
use pmpo_engine::{
    AskPerson, Decision, Engine, Event, EventSink, ExecuteOptions, Intervention, StageStatus,
};
use pmpo_plan::InputIssue;
use pmpo_tools::{
    Captured, ErrorClass, Registry, Termination, Tool, ToolContext, ToolError, ToolOutcome,
};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// A tool whose behaviour its inputs say:
/// `fail_first: N` fails its first N calls in a stage (exit 1, "boom" on stderr),
/// `write: PATH` then writes PATH, `hang: true` runs until the run is cancelled,
/// `ask_host: true` (after `write`) says its question waits for the host.
#[derive(Default)]
struct Fake {
    calls: Mutex<HashMap<String, u64>>,
}

fn outcome(termination: Termination, stderr: &str) -> ToolOutcome {
    ToolOutcome {
        termination,
        stdout: Captured::default(),
        stderr: Captured {
            head: stderr.as_bytes().to_vec(),
            total: stderr.len() as u64,
            ..Captured::default()
        },
        duration: Duration::ZERO,
        outputs: Map::new(),
        invocation: Value::Null,
        notes: Vec::new(),
        skipped: None,
    }
}

#[async_trait]
impl Tool for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn check_inputs(&self, _inputs: &Map<String, Value>) -> Vec<InputIssue> {
        Vec::new()
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(ctx.stage_id.to_string()).or_default();
            *n += 1;
            *n
        };
        if inputs.get("hang") == Some(&Value::Bool(true)) {
            ctx.cancel.cancelled().await;
            return Ok(outcome(Termination::Cancelled, ""));
        }
        let fail_first = inputs
            .get("fail_first")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if call <= fail_first {
            return Ok(outcome(Termination::Exited(1), "boom\n"));
        }
        if let Some(path) = inputs.get("write").and_then(Value::as_str) {
            std::fs::write(ctx.workspace.root().join(path), format!("call {call}\n")).unwrap();
        }
        if inputs.get("ask_host") == Some(&Value::Bool(true)) {
            return Err(
                ToolError::new(ErrorClass::AwaitingAnswer, "the question waits in q.json")
                    .hint("answer with `pmpo answer --run R --stage asks`"),
            );
        }
        Ok(outcome(Termination::Exited(0), ""))
    }
}

/// Collects what happened; cancels the run when the named stage starts.
#[derive(Default)]
struct Seen {
    what: Vec<(Option<String>, What)>,
    cancel_at: Option<(String, CancellationToken)>,
}

impl EventSink for Seen {
    fn on_event(&mut self, e: &Event) {
        if let (What::TaskStarted { .. }, Some((stage, token))) = (&e.what, &self.cancel_at)
            && e.stage_id.as_deref() == Some(stage.as_str())
        {
            token.cancel();
        }
        self.what.push((e.stage_id.clone(), e.what.clone()));
    }
}

impl Seen {
    fn of(&self, stage: &str) -> Vec<&What> {
        let stage = Some(stage.to_string());
        self.what
            .iter()
            .filter(|(s, _)| *s == stage)
            .map(|(_, w)| w)
            .collect()
    }
}

fn engine() -> Engine {
    Engine {
        registry: Registry::default().with_tool(Arc::new(Fake::default())),
    }
}

/// Runs `stages` (YAML under `plan.stages`) in a fresh workspace.
async fn execute(dir: &Path, stages: &str, seen: &mut Seen) -> ExecutionResults {
    execute_asking(dir, stages, seen, None).await
}

/// The same, with a person who answers every question so.
async fn execute_asking(
    dir: &Path,
    stages: &str,
    seen: &mut Seen,
    answer: Option<Decision>,
) -> ExecutionResults {
    let text = format!(
        "specification:\n  artifact_name: t\n  artifact_type: code\nplan:\n  stages:\n{stages}"
    );
    let path = dir.join("plan.yaml");
    std::fs::write(&path, text).unwrap();
    let engine = engine();
    let plan = pmpo_plan::load_plan(&path).expect("the plan loads");
    let plan = engine.prepare(plan).expect("the plan checks");
    let mut opts = ExecuteOptions::new(dir.to_path_buf());
    if let Some((_, token)) = &seen.cancel_at {
        opts.cancel = token.clone();
    }
    opts.keep_going = true;
    opts.ask = answer.map(|d| -> AskPerson { Arc::new(move |_: &Intervention| d) });
    engine
        .execute(&plan, &opts, seen)
        .await
        .expect("the engine runs")
}

fn stage<'a>(r: &'a ExecutionResults, id: &str) -> &'a StageResult {
    r.stages.iter().find(|s| s.id == id).unwrap()
}

#[tokio::test]
async fn a_failing_tool_is_retried_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::default();
    let r = execute(
        dir.path(),
        "    - id: flaky\n      tool: fake\n      with: {fail_first: 2, write: out.txt}\n      outputs: [out.txt]\n      retry: {attempts: 3, initial: 1ms, jitter: false}\n",
        &mut seen,
    )
    .await;
    assert_eq!(r.status, RunStatus::Completed);
    let s = stage(&r, "flaky");
    assert_eq!((s.status, s.attempts), (StageStatus::Completed, 3));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "call 3\n"
    );
    let retries: Vec<(u32, u32)> = seen
        .of("flaky")
        .into_iter()
        .filter_map(|w| match w {
            What::TaskRetrying(Retry::AttemptFailed { attempt, of, .. }) => Some((*attempt, *of)),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [(1, 3), (2, 3)]);
}

#[tokio::test]
async fn retries_run_out_and_the_stage_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::default();
    let r = execute(
        dir.path(),
        "    - id: broken\n      tool: fake\n      with: {fail_first: 9}\n      retry: {attempts: 2, initial: 1ms, jitter: false}\n",
        &mut seen,
    )
    .await;
    assert_eq!(r.status, RunStatus::Failed);
    let s = stage(&r, "broken");
    assert_eq!((s.status, s.attempts), (StageStatus::Failed, 2));
    assert_eq!(r.errors[0].kind.as_str(), "exit_status");
}

#[tokio::test]
async fn the_fallback_is_used_when_the_tool_keeps_failing() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::default();
    let r = execute(
        dir.path(),
        "    - id: main\n      tool: fake\n      with: {fail_first: 9}\n      fallback: {tool: fake, with: {write: out.txt}}\n      outputs: [out.txt]\n",
        &mut seen,
    )
    .await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.errors);
    let s = stage(&r, "main");
    assert_eq!(s.status, StageStatus::Completed);
    assert_eq!(s.fallback_used.as_deref(), Some("fake"));
    assert_eq!(s.attempts, 2);
    assert!(
        seen.of("main")
            .iter()
            .any(|w| matches!(w, What::TaskFallback { .. }))
    );
    assert!(
        r.notices.iter().any(|n| n.contains("used its fallback")),
        "{:?}",
        r.notices
    );
}

#[tokio::test]
async fn a_missing_output_fails_the_stage_and_its_dependent_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::default();
    let r = execute(
        dir.path(),
        "    - id: make\n      tool: fake\n      with: {}\n      outputs: [missing.txt]\n    - id: use\n      tool: fake\n      with: {write: used.txt}\n      depends_on: [make]\n    - id: other\n      tool: fake\n      with: {write: other.txt}\n",
        &mut seen,
    )
    .await;
    assert_eq!(r.status, RunStatus::Failed);
    let make = stage(&r, "make");
    assert_eq!(make.status, StageStatus::Failed);
    assert_eq!(r.errors[0].kind.as_str(), "missing_output");
    assert!(
        make.reason
            .as_deref()
            .unwrap()
            .contains("declared output missing: missing.txt")
    );
    let dependent = stage(&r, "use");
    assert_eq!(dependent.status, StageStatus::Skipped);
    assert_eq!(
        dependent.reason.as_deref(),
        Some("upstream stage `make` FAILED")
    );
    assert!(!dir.path().join("used.txt").exists());
    // --keep-going: the independent stage still ran.
    assert_eq!(stage(&r, "other").status, StageStatus::Completed);
}

#[tokio::test]
async fn cancelling_stops_the_running_stage_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen {
        cancel_at: Some(("slow".into(), CancellationToken::new())),
        ..Seen::default()
    };
    let r = execute(
        dir.path(),
        "    - id: slow\n      tool: fake\n      with: {hang: true}\n      retry: {attempts: 3, initial: 1ms}\n    - id: after\n      tool: fake\n      with: {write: after.txt}\n      depends_on: [slow]\n",
        &mut seen,
    )
    .await;
    assert_eq!(r.status, RunStatus::Cancelled);
    let slow = stage(&r, "slow");
    assert_eq!(
        (slow.status, slow.attempts),
        (StageStatus::Cancelled, 1),
        "a cancel is not retried"
    );
    let after = stage(&r, "after");
    assert_eq!(after.status, StageStatus::Skipped);
    assert!(!dir.path().join("after.txt").exists());
}

const MANUAL: &str =
    "    - id: hard\n      tool: fake\n      with: {fail_first: 9}\n      on_failure: manual\n";

#[tokio::test]
async fn a_manual_stage_with_nobody_to_ask_pauses_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::default();
    let r = execute(dir.path(), MANUAL, &mut seen).await;
    assert_eq!(r.status, RunStatus::AwaitingIntervention);
    assert_eq!(stage(&r, "hard").status, StageStatus::AwaitingIntervention);
    assert_eq!(r.errors[0].kind.as_str(), "awaiting_decision");
}

#[tokio::test]
async fn a_person_who_skips_a_manual_stage_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::default();
    let r = execute_asking(dir.path(), MANUAL, &mut seen, Some(Decision::Skip)).await;
    let hard = stage(&r, "hard");
    assert_eq!(hard.status, StageStatus::Skipped);
    assert!(
        hard.reason
            .as_deref()
            .unwrap()
            .starts_with("skipped by the user after a failure"),
        "{:?}",
        hard.reason
    );
    assert_eq!(r.status, RunStatus::Incomplete);
}

#[tokio::test]
async fn a_stage_waiting_for_the_host_pauses_without_retry_fallback_or_person() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::default();
    // Everything that would act on a failure is there: none of it may act.
    let stages = "    - id: other\n      tool: fake\n      with: {write: other.txt}\n      outputs: [other.txt]\n    - id: asks\n      tool: fake\n      with: {ask_host: true, write: out.txt}\n      outputs: [out.txt]\n      retry: {attempts: 3, initial: 1ms, jitter: false}\n      fallback: {tool: fake, with: {write: out.txt}}\n      on_failure: manual\n    - id: after\n      tool: fake\n      with: {write: after.txt}\n      depends_on: [asks]\n";
    let r = execute_asking(dir.path(), stages, &mut seen, Some(Decision::Retry)).await;
    assert_eq!(r.status, RunStatus::AwaitingIntervention, "{:?}", r.errors);
    let asks = stage(&r, "asks");
    assert_eq!(
        (asks.status, asks.attempts),
        (StageStatus::AwaitingIntervention, 1)
    );
    assert!(asks.fallback_used.is_none());
    assert!(
        !seen
            .of("asks")
            .iter()
            .any(|w| matches!(w, What::TaskRetrying(_) | What::TaskFallback { .. })),
        "{:?}",
        seen.of("asks")
    );
    // What waits and how to answer it.
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(r.errors[0].kind.as_str(), "awaiting_answer");
    assert_eq!(r.errors[0].message, "the question waits in q.json");
    assert!(
        r.errors[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("pmpo answer --run")
    );
    // The file the stage wrote before it paused does not count as its output.
    assert!(asks.files.is_empty(), "{:?}", asks.files);
    assert!(!r.generated_files.iter().any(|f| f.path == "out.txt"));
    // Its dependent waits; the independent stage before it (in the
    // reference order) finished, as with any pause.
    assert_ne!(stage(&r, "after").status, StageStatus::Completed);
    assert!(!dir.path().join("after.txt").exists());
    assert_eq!(stage(&r, "other").status, StageStatus::Completed);
}
