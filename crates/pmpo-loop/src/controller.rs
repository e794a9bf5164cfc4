//! The meta-controller: startup, then Specify -> Plan -> Execute -> Reflect
//! -> (approval gate) -> Persist -> decide, until the artifact converges or
//! `max_iterations` is reached.
//!
//! Every phase reads what it needs from disk and writes its result to disk
//! before its checkpoint; the checkpoint (in `state.json`) is what a re-run
//! resumes from. A phase interrupted half-way is simply run again: its files
//! are written atomically and its log entries carry markers, so nothing is
//! duplicated or half-written.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use pmpo_ai::Client;
use pmpo_engine::{CheckedPlan, Engine, Event, ExecuteOptions};
use pmpo_plan::Constraint;
use pmpo_store::Workspace;
use pmpo_store::artifacts::{ArtifactError, Artifacts, RefinementState};
use pmpo_store::lock::LockHolder;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::domain::AdapterInput;
use crate::journal::{self, DECISIONS, REFINEMENT_LOG};
use crate::reflect::{self, ConstraintState, Decision, DecisionRecord, Reflection, Termination};
use crate::triggers::{self, Dispatcher};

pub use crate::files::{
    ApprovalRecord, GateStatus, LoopState, SpecFile, loop_state, reflection_path, workflow_log,
};
pub(crate) use crate::files::{plan_path, read_json, spec_path, store_loop, write_json};
pub use crate::phase::approval::{Approved, approve};
pub use crate::startup::refine;

/// The lock that serializes changes to artifact state.
pub const REFINER_LOCK: &str = ".refiner/lock";

/// What `pmpo refine` was asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub workspace: PathBuf,
    pub name: String,
    pub artifact_type: Option<String>,
    pub content_type: Option<String>,
    /// Workspace-relative input files.
    pub inputs: Vec<String>,
    pub intent: Option<String>,
    pub max_iterations: Option<u64>,
    pub requires_approval: Option<bool>,
    pub test_generation: Option<bool>,
    pub target_platform: Option<String>,
    pub components: Vec<String>,
    /// `--set key=value`.
    pub options: Map<String, Value>,
    /// Workflow triggers (the reference layout), already read from their file.
    pub triggers: Option<Value>,
    /// Never ask a model, even when one is configured.
    pub offline: bool,
    /// Start a new lineage where the state is gone but checkpoints survive
    /// (they are moved under `.refiner/history/`, never deleted).
    pub new_lineage: bool,
}

/// An answer to the approval gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    Continue,
    Terminate,
}

/// What the approval gate shows a person.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    pub artifact: String,
    pub iteration: u64,
    pub summary: String,
}

/// Asks a person at the approval gate (a terminal prompt); `None` = no answer.
pub type AskApproval = Arc<dyn Fn(&ApprovalRequest) -> Option<Approval> + Send + Sync>;

/// Receives the loop's progress (the CLI renders it).
pub trait Observer {
    fn phase_start(&mut self, _iteration: u64, _max: u64, _phase: &str) {}
    fn phase_done(&mut self, _iteration: u64, _phase: &str, _summary: &str, _ms: f64) {}
    fn note(&mut self, _text: &str) {}
    fn execute_start(&mut self, _plan: &CheckedPlan) {}
    fn on_event(&mut self, _event: &Event) {}
    fn execute_done(&mut self) {}
}

/// What the loop runs with.
pub struct Env<'a> {
    pub engine: Engine,
    /// The model client for Specify, Plan and Reflect (None: offline).
    pub client: Option<Arc<Client>>,
    /// Options for the Execute phase (workspace is set by the loop).
    pub exec: ExecuteOptions,
    pub ask_approval: Option<AskApproval>,
    pub observer: &'a mut dyn Observer,
}

/// Why the loop could not go on.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Store(#[from] pmpo_store::StoreError),
    #[error("artifact state is in use by another pmpo{}", .0.as_ref().map(|h| format!(": {} ({}) since {}", h.who(), h.command, h.since)).unwrap_or_default())]
    Busy(Option<LockHolder>),
    #[error(transparent)]
    Engine(#[from] pmpo_engine::EngineError),
    #[error("the plan of iteration {iteration} is invalid:\n{diagnostics}")]
    Plan { iteration: u64, diagnostics: String },
    #[error("`{path}` is damaged: {detail}")]
    Corrupt { path: String, detail: String },
}

impl LoopError {
    pub fn hint(&self) -> String {
        match self {
            LoopError::Usage(_) => "see `pmpo refine --help`".into(),
            LoopError::Artifact(e) => e.hint(),
            LoopError::Store(e) => e.hint().into(),
            LoopError::Busy(_) => "wait for the other pmpo to finish".into(),
            LoopError::Engine(e) => e.hint(),
            LoopError::Plan { .. } => "the plan was written by the Plan phase; report this with the plan file".into(),
            LoopError::Corrupt { .. } => "move the damaged file aside; `pmpo refine` then runs the phase that writes it again".into(),
        }
    }
}

impl From<Termination> for Outcome {
    fn from(t: Termination) -> Outcome {
        match t {
            Termination::Converged => Outcome::Converged,
            Termination::MaxIterationsExceeded => Outcome::MaxIterationsExceeded,
            Termination::UserTerminated => Outcome::UserTerminated,
        }
    }
}

/// How a `refine` call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Converged,
    MaxIterationsExceeded,
    UserTerminated,
    /// Waiting for `pmpo approve`.
    AwaitingApproval,
    /// The Execute phase paused (a stage awaits a decision, or safe mode).
    ExecutionPaused,
    /// A phase waits for the agent host's answer (`via = "host"`): the
    /// question is in `pending.json` (and the report's `pending`).
    AwaitingAnswer,
    Cancelled,
}

/// A phase of one iteration, as `phases_completed` in `state.json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopPhase {
    Specify,
    Plan,
    Execute,
    Reflect,
    Persist,
}

impl LoopPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            LoopPhase::Specify => "specify",
            LoopPhase::Plan => "plan",
            LoopPhase::Execute => "execute",
            LoopPhase::Reflect => "reflect",
            LoopPhase::Persist => "persist",
        }
    }
}

impl std::fmt::Display for LoopPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Run this phase (`Persist` passes the approval gate first).
    Run(LoopPhase),
    /// The iteration is persisted: loop back to Plan or end the cycle.
    Decide,
}

/// The loop's next step from where the iteration stands: Specify first (and
/// again when its file is gone, or the inputs or intent changed before this
/// iteration's Plan), then the first phase not completed, then the decision.
pub(crate) fn next_step(
    iteration: u64,
    completed: &[String],
    spec_missing: bool,
    respecify: bool,
) -> Step {
    let done = |p: LoopPhase| completed.iter().any(|c| c == p.as_str());
    if (iteration == 1 && !done(LoopPhase::Specify))
        || spec_missing
        || (respecify && !done(LoopPhase::Plan))
    {
        return Step::Run(LoopPhase::Specify);
    }
    [
        LoopPhase::Plan,
        LoopPhase::Execute,
        LoopPhase::Reflect,
        LoopPhase::Persist,
    ]
    .into_iter()
    .find(|p| !done(*p))
    .map_or(Step::Decide, Step::Run)
}

/// How a `refine` call found its artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Started {
    /// A new artifact.
    Created,
    /// A new cycle of a finalized artifact, seeded from it.
    NewCycle,
    /// A cycle in progress, resumed.
    Resumed,
}

/// What `refine` reports (also its `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub artifact_name: String,
    pub refinement_id: String,
    pub artifact_type: String,
    pub content_type: String,
    pub evaluation_strategy: String,
    pub outcome: Outcome,
    pub convergence_status: String,
    pub iteration: u64,
    pub max_iterations: u64,
    pub started: Started,
    pub constraints: Vec<ConstraintState>,
    pub last_decision: Option<DecisionRecord>,
    pub iteration_history: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
    /// The question the loop waits on (outcome `awaiting_answer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<crate::pending::Pending>,
    pub notes: Vec<String>,
    pub timings: Timings,
}

/// Where the time went (milliseconds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub total_ms: f64,
    /// The stages' own work (tools, processes, the browser).
    pub stages_ms: f64,
    /// Tools releasing what they kept for a run (closing the browser).
    pub teardown_ms: f64,
    /// Waiting for the model endpoint.
    pub model_ms: f64,
    /// Waiting for a person at the approval gate.
    pub person_ms: f64,
    /// Everything else: pmpo's own time (state, checks, logs, plans).
    pub engine_ms: f64,
}

/// One refinement in progress: the state, the loop's settings and what the
/// phases (in `crate::phase`) share.
pub(crate) struct Controller<'a, 'e> {
    pub(crate) ws: &'a Workspace,
    pub(crate) arts: &'a Artifacts<'a>,
    pub(crate) state: RefinementState,
    pub(crate) ls: LoopState,
    pub(crate) env: &'a mut Env<'e>,
    pub(crate) client: Option<Arc<Client>>,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) notes: Vec<String>,
    pub(crate) timings: Timings,
    pub(crate) started_how: Started,
    /// The question for the host the loop stopped on.
    pub(crate) pending: Option<crate::pending::Pending>,
}

impl Controller<'_, '_> {
    pub(crate) fn name(&self) -> String {
        self.state.artifact_name.clone()
    }

    pub(crate) fn save(&mut self) -> Result<(), LoopError> {
        store_loop(&mut self.state, &self.ls);
        self.arts.save(&mut self.state)?;
        Ok(())
    }

    pub(crate) fn done(&self, phase: LoopPhase) -> bool {
        self.state
            .phases_completed
            .iter()
            .any(|p| p == phase.as_str())
    }

    pub(crate) fn fire(&mut self, event: &str, phase: Option<&str>, metadata: Value) {
        let Some(ev) = triggers::Event::from_name(event) else {
            return;
        };
        let payload = triggers::hook_payload(
            ev.hook_event_type(),
            &self.state.artifact_name,
            &self.state.refinement_id,
            &self.state.artifact_type,
            &self.state.content_type,
            phase,
            self.state.current_iteration,
            metadata,
        );
        self.dispatcher.dispatch(ev, &payload);
    }

    pub(crate) fn begin(&mut self, phase: LoopPhase) {
        self.env.observer.phase_start(
            self.state.current_iteration,
            self.state.max_iterations,
            phase.as_str(),
        );
        self.fire("on_phase_start", Some(phase.as_str()), json!({}));
    }

    /// After every phase: checkpoint, then dispatch `on_phase_complete`.
    pub(crate) fn end(
        &mut self,
        phase: LoopPhase,
        summary: &str,
        t: Instant,
    ) -> Result<(), LoopError> {
        store_loop(&mut self.state, &self.ls);
        let cp = self
            .arts
            .checkpoint_state(&mut self.state, phase.as_str())?;
        self.fire(
            "on_phase_complete",
            Some(phase.as_str()),
            json!({"checkpoint_id": cp.checkpoint_id, "summary": summary}),
        );
        self.env.observer.phase_done(
            self.state.current_iteration,
            phase.as_str(),
            summary,
            t.elapsed().as_secs_f64() * 1000.0,
        );
        Ok(())
    }

    /// Ctrl-C while the model was asked: nothing of the phase is recorded
    /// (no fallback stands in for the answer that never came).
    pub(crate) fn cancelled_in(&mut self, phase: LoopPhase) -> Outcome {
        let note = format!(
            "cancelled while the model was asked ({phase}): the {phase} phase is not done and asks the model again on the next `pmpo refine {}`",
            self.state.artifact_name
        );
        self.env.observer.note(&note);
        self.notes.push(note);
        Outcome::Cancelled
    }

    /// The host has not answered a phase's question yet (`via = "host"`):
    /// nothing of the phase is recorded; the question goes to
    /// `pending.json`, and the next `pmpo refine` (or `pmpo answer`) asks
    /// it again and finds the answer.
    pub(crate) fn awaiting_host(
        &mut self,
        phase: LoopPhase,
        question: pmpo_ai::host::Question,
    ) -> Result<Outcome, LoopError> {
        let name = self.name();
        let p = crate::pending::Pending {
            artifact: name.clone(),
            iteration: self.state.current_iteration,
            answer_with: format!("pmpo answer {name} --file ANSWER.json"),
            question,
        };
        crate::pending::write(self.ws, &p)?;
        let note = format!(
            "the {phase} phase waits for the host's answer: the question is in {}; answer with `pmpo answer {name} --file ANSWER.json` (or the MCP `answer` tool)",
            crate::pending::pending_path(&name)
        );
        self.env.observer.note(&note);
        self.notes.push(note);
        self.pending = Some(p);
        Ok(Outcome::AwaitingAnswer)
    }

    /// Ctrl-C while a person was asked at the approval gate: no answer is
    /// recorded; the gate stays pending for `pmpo approve` or the next run.
    pub(crate) fn cancelled_at_the_gate(&mut self) -> Outcome {
        let note = format!(
            "cancelled at the approval gate: nothing was answered; `pmpo refine {0}` asks again (or answer with `pmpo approve {0}`)",
            self.state.artifact_name
        );
        self.env.observer.note(&note);
        self.notes.push(note);
        Outcome::Cancelled
    }

    pub(crate) fn log(&self, file: &str, marker: &str, body: &str) -> Result<(), LoopError> {
        let marker = format!("{}:{marker}", self.state.refinement_id);
        journal::append_once(self.ws, file, &marker, body, &self.state.refinement_id)?;
        Ok(())
    }

    pub(crate) fn adapter_input<'s>(&'s self, inputs: &'s [String]) -> AdapterInput<'s> {
        AdapterInput {
            name: &self.state.artifact_name,
            artifact_type: &self.state.artifact_type,
            content_type: &self.state.content_type,
            inputs,
            intent: self.ls.intent.as_deref(),
            options: &self.ls.options,
            target_platform: self.ls.target_platform.as_deref(),
            test_generation: self.ls.test_generation && self.client.is_some(),
            components: &self.ls.components,
            root: self.ws.root(),
        }
    }

    pub(crate) async fn run(&mut self) -> Result<Outcome, LoopError> {
        if self.started_how != Started::Resumed || self.state.current_iteration == 0 {
            let msg = match self.started_how {
                Started::Created => "new artifact",
                Started::NewCycle => "new cycle, seeded from the finalized one",
                Started::Resumed => "resumed",
            };
            self.env.observer.note(&format!(
                "{} `{}` ({}, {}; evaluated by {})",
                msg,
                self.state.artifact_name,
                self.state.artifact_type,
                self.state.content_type,
                self.ls.evaluation_strategy
            ));
        } else {
            let last = self
                .state
                .phases_completed
                .last()
                .cloned()
                .unwrap_or_else(|| "nothing".into());
            self.env.observer.note(&format!(
                "resuming `{}` at iteration {} (last completed phase: {last})",
                self.state.artifact_name, self.state.current_iteration
            ));
        }
        for n in self.notes.clone() {
            self.env.observer.note(&n);
        }
        loop {
            if self.env.exec.cancel.is_cancelled() {
                return Ok(Outcome::Cancelled);
            }
            if self.state.current_iteration == 0 {
                self.state.current_iteration = 1;
                self.state.phases_completed.clear();
                self.save()?;
            }
            self.redo_missing()?;
            let spec_missing = !self.ws.resolve(&spec_path(&self.name()))?.is_file();
            let step = next_step(
                self.state.current_iteration,
                &self.state.phases_completed,
                spec_missing,
                self.ls.respecify,
            );
            let stop = match step {
                Step::Run(LoopPhase::Specify) => self.specify().await?,
                Step::Run(LoopPhase::Plan) => self.plan().await?,
                Step::Run(LoopPhase::Execute) => self.execute().await?,
                Step::Run(LoopPhase::Reflect) => self.reflect().await?,
                Step::Run(LoopPhase::Persist) => match self.approval_gate().await? {
                    Some(o) => Some(o),
                    None => {
                        self.persist()?;
                        None
                    }
                },
                Step::Decide => self.decide()?,
            };
            if let Some(o) = stop {
                return Ok(o);
            }
        }
    }

    /// A phase whose file is gone (moved aside after damage) runs again,
    /// and so do the phases after it.
    fn redo_missing(&mut self) -> Result<(), LoopError> {
        let iteration = self.state.current_iteration;
        let checks = [
            (LoopPhase::Plan, plan_path(&self.name(), iteration)),
            (LoopPhase::Reflect, reflection_path(&self.name(), iteration)),
        ];
        for (phase, file) in checks {
            if self.done(phase) && !self.ws.resolve(&file)?.is_file() {
                let at = self
                    .state
                    .phases_completed
                    .iter()
                    .position(|p| p == phase.as_str())
                    .unwrap_or(0);
                self.state.phases_completed.truncate(at);
                let note = format!("`{file}` is missing: the {phase} phase runs again");
                self.env.observer.note(&note);
                self.notes.push(note);
                self.save()?;
                break;
            }
        }
        Ok(())
    }

    /// Whether a person answered this iteration's approval gate with terminate.
    pub(crate) fn user_terminated(&self) -> bool {
        matches!(&self.ls.approval, Some(a) if a.iteration == self.state.current_iteration && a.status == GateStatus::Terminate)
    }

    fn decide(&mut self) -> Result<Option<Outcome>, LoopError> {
        let iteration = self.state.current_iteration;
        let d = match self.ls.pending_decision.clone() {
            Some(d) if d.iteration == iteration => d,
            _ => {
                let r = self.load_reflection()?;
                reflect::decide(&r, self.state.max_iterations, self.user_terminated())
            }
        };
        self.fire(
            "on_iteration_complete",
            None,
            json!({"decision": d.decision, "status": d.status, "unsatisfied": d.unsatisfied}),
        );
        self.ls.last_decision = Some(d.clone());
        self.ls.pending_decision = None;
        if d.decision == Decision::Terminate {
            let status = d.status.unwrap_or(Termination::Converged);
            self.state.convergence_status = status.as_str().to_string();
            store_loop(&mut self.state, &self.ls);
            // The cycle's own files go to the history with it: the next
            // cycle reuses their paths.
            let mut archived: Vec<String> = vec![
                pmpo_engine::validation::CONSTRAINTS_FILE.into(),
                pmpo_engine::MANIFEST_FILE.into(),
                REFINEMENT_LOG.into(),
                DECISIONS.into(),
                spec_path(&self.name()),
            ];
            for i in 1..=iteration {
                archived.push(plan_path(&self.name(), i));
                archived.push(reflection_path(&self.name(), i));
            }
            let archived: Vec<&str> = archived.iter().map(String::as_str).collect();
            let history =
                self.arts
                    .finalize_state(&mut self.state, Some(status.as_str()), &archived)?;
            self.log(
                DECISIONS,
                "finalized",
                &format!(
                    "## Cycle finalized: {status}\n\n- Iterations: {iteration}\n- Archived to `{history}`\n"
                ),
            )?;
            self.fire(
                "on_refinement_complete",
                None,
                json!({"status": status, "history": history}),
            );
            return Ok(Some(status.into()));
        }
        self.ls.focus = d.unsatisfied.clone();
        self.state.current_iteration += 1;
        self.state.phases_completed.clear();
        self.save()?;
        Ok(None)
    }

    pub(crate) fn report(&self, outcome: Outcome) -> Report {
        let constraints = read_json::<Reflection>(
            self.ws,
            &reflection_path(&self.name(), self.state.current_iteration),
        )
        .ok()
        .flatten()
        .map(|r| r.constraints)
        .unwrap_or_default();
        let next_step = match outcome {
            Outcome::AwaitingApproval | Outcome::ExecutionPaused | Outcome::AwaitingAnswer => {
                self.notes.last().cloned()
            }
            Outcome::Cancelled => Some(format!(
                "`pmpo refine {}` resumes where it stopped",
                self.state.artifact_name
            )),
            Outcome::MaxIterationsExceeded if self.client.is_none() => Some(format!(
                "without a model every iteration runs the same adapter plan: fix what the unsatisfied constraints name in the inputs, then `pmpo refine {}` starts a new cycle (or configure a model endpoint)",
                self.state.artifact_name
            )),
            _ => None,
        };
        Report {
            artifact_name: self.state.artifact_name.clone(),
            refinement_id: self.state.refinement_id.clone(),
            artifact_type: self.state.artifact_type.clone(),
            content_type: self.state.content_type.clone(),
            evaluation_strategy: self.ls.evaluation_strategy.clone(),
            outcome,
            convergence_status: self.state.convergence_status.clone(),
            iteration: self.state.current_iteration,
            max_iterations: self.state.max_iterations,
            started: self.started_how,
            constraints,
            last_decision: self.ls.last_decision.clone(),
            iteration_history: self.state.iteration_history.clone(),
            next_step,
            pending: self.pending.clone(),
            notes: self.notes.clone(),
            timings: self.timings.clone(),
        }
    }
}

/// Constraints as prompt lines: `- id [severity]: description`.
pub(crate) fn constraint_lines(constraints: &[Constraint]) -> String {
    constraints
        .iter()
        .map(|c| format!("- {} [{}]: {}", c.id, c.severity, c.description))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use pmpo_store::states::ApprovalStatus;

    use super::*;

    fn completed(phases: &[LoopPhase]) -> Vec<String> {
        phases.iter().map(|p| p.as_str().to_string()).collect()
    }

    #[test]
    fn the_next_step_is_the_first_phase_not_completed_then_the_decision() {
        use LoopPhase::*;
        // (iteration, completed, spec missing, respecify) -> step
        let table: &[(u64, &[LoopPhase], bool, bool, Step)] = &[
            (1, &[], false, false, Step::Run(Specify)),
            (1, &[Specify], false, false, Step::Run(Plan)),
            (1, &[Specify, Plan], false, false, Step::Run(Execute)),
            (
                1,
                &[Specify, Plan, Execute],
                false,
                false,
                Step::Run(Reflect),
            ),
            (
                1,
                &[Specify, Plan, Execute, Reflect],
                false,
                false,
                Step::Run(Persist),
            ),
            (
                1,
                &[Specify, Plan, Execute, Reflect, Persist],
                false,
                false,
                Step::Decide,
            ),
            // Later iterations start at Plan: the specification stands.
            (2, &[], false, false, Step::Run(Plan)),
            (3, &[Plan, Execute], false, false, Step::Run(Reflect)),
            // A specification moved aside is made again, whatever is done.
            (2, &[Plan, Execute], true, false, Step::Run(Specify)),
            // Changed inputs or intent: Specify again before this iteration's
            // Plan, not after it.
            (2, &[], false, true, Step::Run(Specify)),
            (2, &[Plan], false, true, Step::Run(Execute)),
        ];
        for (iteration, done, spec_missing, respecify, want) in table {
            assert_eq!(
                next_step(*iteration, &completed(done), *spec_missing, *respecify),
                *want,
                "iteration {iteration}, completed {done:?}, spec missing {spec_missing}, respecify {respecify}"
            );
        }
    }

    #[test]
    fn a_termination_is_the_outcome_of_the_same_name() {
        for (t, o) in [
            (Termination::Converged, Outcome::Converged),
            (
                Termination::MaxIterationsExceeded,
                Outcome::MaxIterationsExceeded,
            ),
            (Termination::UserTerminated, Outcome::UserTerminated),
        ] {
            assert_eq!(Outcome::from(t), o);
            assert_eq!(json!(t), json!(o));
        }
    }

    #[test]
    fn the_gate_keeps_its_spelling_in_state_json_and_maps_to_the_shared_approval_states() {
        let record = ApprovalRecord {
            iteration: 2,
            status: Approval::Terminate.into(),
            requested_at: "t0".into(),
            answered_at: Some("t1".into()),
            answered_by: Some("terminal".into()),
            note: None,
        };
        let v = json!(record);
        assert_eq!(v["status"], "terminate");
        let back: ApprovalRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, record);
        assert_eq!(
            serde_json::from_value::<GateStatus>(json!("pending")).unwrap(),
            GateStatus::Pending
        );
        assert!(serde_json::from_value::<GateStatus>(json!("approved")).is_err());
        assert_eq!(
            ApprovalStatus::from(GateStatus::Continue),
            ApprovalStatus::Approved
        );
        assert_eq!(
            ApprovalStatus::from(GateStatus::Terminate),
            ApprovalStatus::Rejected
        );
        assert_eq!(
            ApprovalStatus::from(GateStatus::Pending),
            ApprovalStatus::Pending
        );
    }

    #[test]
    fn a_report_names_how_the_artifact_was_found() {
        assert_eq!(json!(Started::NewCycle), json!("new_cycle"));
        assert_eq!(json!(Started::Created), json!("created"));
        assert_eq!(json!(Started::Resumed), json!("resumed"));
    }
}
