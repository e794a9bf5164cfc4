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

use pmpo_ai::{Client, Phase};
use pmpo_engine::{CheckedPlan, Engine, Event, EventSink, ExecuteOptions};
use pmpo_plan::{Constraint, PlanDocument, Specification, ValidationItem};
use pmpo_store::artifacts::{ArtifactError, Artifacts, RefinementState, artifact_dir};
use pmpo_store::lock::{self, LockHolder};
use pmpo_store::provider::Provider;
use pmpo_store::{Workspace, now_rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::content_type;
use crate::domain::{self, AdapterInput};
use crate::evidence::{PathPattern, RunEvidence};
use crate::journal::{self, DECISIONS, REFINEMENT_LOG, cell};
use crate::model::{self, Asked, Caller};
use crate::reflect::{self, ConstraintState, DecisionRecord, ExecutionSummary, Reflection};
use crate::triggers::{self, Dispatcher};

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
    #[error("artifact state is in use by another pmpo{}", .0.as_ref().map(|h| format!(": pid {} ({}) since {}", h.pid, h.command, h.since)).unwrap_or_default())]
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
            LoopError::Store(_) => "check that the workspace is writable and has free space".into(),
            LoopError::Busy(_) => "wait for the other pmpo to finish".into(),
            LoopError::Engine(e) => e.hint(),
            LoopError::Plan { .. } => "the plan was written by the Plan phase; report this with the plan file".into(),
            LoopError::Corrupt { .. } => "move the damaged file aside; `pmpo refine` then runs the phase that writes it again".into(),
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
    Cancelled,
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
    pub started: &'static str,
    pub constraints: Vec<ConstraintState>,
    pub last_decision: Option<DecisionRecord>,
    pub iteration_history: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
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

/// The loop's settings and progress, kept in `state.json` under `loop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoopState {
    #[serde(default)]
    pub intent: Option<String>,
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub options: Map<String, Value>,
    #[serde(default)]
    pub requires_approval: bool,
    #[serde(default)]
    pub test_generation: bool,
    #[serde(default)]
    pub target_platform: Option<String>,
    #[serde(default)]
    pub components: Vec<String>,
    #[serde(default)]
    pub evaluation_strategy: String,
    #[serde(default)]
    pub content_type_source: String,
    /// Constraints the next Plan should focus on.
    #[serde(default)]
    pub focus: Vec<String>,
    /// Inputs or intent changed in a running cycle: Specify runs again before the next Plan.
    #[serde(default)]
    pub respecify: bool,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub approval: Option<ApprovalRecord>,
    #[serde(default)]
    pub pending_decision: Option<DecisionRecord>,
    #[serde(default)]
    pub last_decision: Option<DecisionRecord>,
}

/// The approval gate of one iteration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApprovalRecord {
    pub iteration: u64,
    /// `pending`, `continue` or `terminate`.
    pub status: String,
    pub requested_at: String,
    #[serde(default)]
    pub answered_at: Option<String>,
    #[serde(default)]
    pub answered_by: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// `specification.json` of an artifact: what Specify decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecFile {
    pub specification: Specification,
    pub goals: Vec<String>,
    /// Deterministic checks of the constraints (validation_plan entries).
    pub checks: Vec<ValidationItem>,
    pub required_files: Vec<String>,
    pub content_type: Value,
    /// `adapter` or `model`.
    pub specified_by: String,
    #[serde(default)]
    pub notes: Vec<String>,
}

pub fn loop_state(state: &RefinementState) -> LoopState {
    state
        .extra
        .get("loop")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

fn store_loop(state: &mut RefinementState, ls: &LoopState) {
    state.extra.insert(
        "loop".into(),
        serde_json::to_value(ls).unwrap_or(Value::Null),
    );
}

fn spec_path(name: &str) -> String {
    format!("{}/specification.json", artifact_dir(name))
}
fn plan_path(name: &str, iteration: u64) -> String {
    format!("{}/plans/iteration-{iteration}.json", artifact_dir(name))
}
pub fn reflection_path(name: &str, iteration: u64) -> String {
    format!(
        "{}/reflections/iteration-{iteration}.json",
        artifact_dir(name)
    )
}
pub fn workflow_log(name: &str) -> String {
    format!("{}/workflow.log", artifact_dir(name))
}

fn read_json<T: for<'de> Deserialize<'de>>(
    ws: &Workspace,
    rel: &str,
) -> Result<Option<T>, LoopError> {
    // pmpo's own file: never read through a link at it.
    match ws.read_own(rel)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LoopError::Corrupt {
                path: rel.into(),
                detail: format!("not the expected JSON ({e})"),
            }),
        None => Ok(None),
    }
}

/// Writes a JSON file: the loop's own (under `.refiner/`) as they are, the
/// user's (`constraints.json`, the manifest) recorded in the ledger as changes
/// of the refinement `run_id`.
fn write_json(
    ws: &Workspace,
    rel: &str,
    value: &impl Serialize,
    run_id: &str,
) -> Result<(), LoopError> {
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    let who = pmpo_store::Writer {
        run_id,
        writer: "loop",
    };
    ws.write_file(rel, &bytes, who)?;
    Ok(())
}

/// Forwards the Execute phase's events to the observer.
struct Forward<'o>(&'o mut dyn Observer);
impl EventSink for Forward<'_> {
    fn on_event(&mut self, event: &Event) {
        self.0.on_event(event);
    }
}

/// Checks and normalizes input paths: workspace-relative, inside it, existing files.
fn check_inputs(ws: &Workspace, inputs: &[String]) -> Result<Vec<String>, LoopError> {
    let mut out = Vec::new();
    for raw in inputs {
        let rel = raw.strip_prefix("./").unwrap_or(raw);
        let abs = if std::path::Path::new(rel).is_absolute() {
            PathBuf::from(rel)
        } else {
            ws.root().join(rel)
        };
        let rel = match abs.canonicalize() {
            Ok(c) => match ws.relative(&c) {
                Some(r) => r,
                None => {
                    return Err(LoopError::Usage(format!(
                        "input `{raw}` is outside the workspace `{}`; copy it into the workspace (inputs are read from there, and nothing outside it is touched)",
                        ws.root().display()
                    )));
                }
            },
            Err(_) => {
                return Err(LoopError::Usage(format!(
                    "input `{raw}` does not exist (looked for `{}`)",
                    abs.display()
                )));
            }
        };
        let resolved = ws
            .resolve(&rel)
            .map_err(|e| LoopError::Usage(format!("input `{raw}`: {e}")))?;
        if !resolved.is_file() {
            return Err(LoopError::Usage(format!("input `{raw}` is not a file")));
        }
        out.push(rel);
    }
    Ok(out)
}

fn head_text(ws: &Workspace, rel: &str, max: usize) -> String {
    // Read as tools read: never through a link leading out of the workspace.
    let Ok(bytes) = ws.read(rel) else {
        return String::new();
    };
    let cut = &bytes[..bytes.len().min(max)];
    if cut.contains(&0) {
        return String::new();
    }
    String::from_utf8_lossy(cut).into_owned()
}

/// Runs (or resumes) the refinement of one named artifact.
pub async fn refine(req: Request, env: &mut Env<'_>) -> Result<Report, LoopError> {
    let started = Instant::now();
    let ws = Workspace::open(&req.workspace)?;
    Artifacts::check_name(&req.name)?;
    if let Some(t) = &req.artifact_type {
        domain::domain(t).map_err(LoopError::Usage)?;
    }
    if let Some(ct) = &req.content_type {
        content_type::check(ct).map_err(LoopError::Usage)?;
    }
    if let Some(0) = req.max_iterations {
        return Err(LoopError::Usage(
            "--max-iterations must be at least 1".into(),
        ));
    }
    // Triggers are checked whole before anything is written (they are stored
    // as given, and parsed again for the dispatcher below).
    if let Some(v) = &req.triggers {
        triggers::parse_triggers(v)
            .map_err(|e| LoopError::Usage(format!("workflow triggers: {e}")))?;
    }
    let inputs = check_inputs(&ws, &req.inputs)?;
    // A composite's `KIND=INPUT` files are inputs too.
    let mut components = Vec::new();
    for c in &req.components {
        match c.split_once('=') {
            Some((kind, file)) => {
                let file = check_inputs(&ws, &[file.to_string()])?.remove(0);
                components.push(format!("{kind}={file}"));
            }
            None => components.push(c.clone()),
        }
    }
    let req = Request { components, ..req };
    let provider = Provider::resolve(&ws);
    let input_texts: Vec<String> = inputs.iter().map(|p| head_text(&ws, p, 4096)).collect();
    // Everything that can be refused is refused before anything is written.
    prevalidate(&ws, &provider, &req, &inputs, &input_texts)?;
    let holder = LockHolder {
        pid: std::process::id(),
        run_id: req.name.clone(),
        since: now_rfc3339(),
        command: format!("pmpo refine {}", req.name),
    };
    let _guard = match lock::acquire_at(&ws, REFINER_LOCK, &holder, false) {
        Ok(g) => g,
        Err(lock::LockError::Busy(h)) => return Err(LoopError::Busy(h)),
        Err(lock::LockError::Store(e)) => return Err(e.into()),
    };
    let mut notes: Vec<String> = provider.degraded.clone();
    let arts = Artifacts {
        ws: &ws,
        provider: &provider,
    };

    // Startup: init or resume the named artifact.
    if req.new_lineage
        && let Some(to) = arts.set_aside_lineage(&req.name)?
    {
        notes.push(format!(
            "the earlier lineage of `{}` was moved to {to}; a new one starts",
            req.name
        ));
    }
    let existing = match arts.load(&req.name) {
        Ok(s) => Some(s),
        Err(ArtifactError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let (mut state, started_how) = match existing {
        Some(s) if s.finalized_at.is_none() => (s, "resumed"),
        prior => {
            let (artifact_type, detected) =
                type_and_content_type(&req, prior.as_ref(), &inputs, &input_texts)?;
            let is_new_cycle = prior.is_some();
            let source = detected.source;
            let seed = |state: &mut RefinementState| {
                let mut ls = if is_new_cycle {
                    loop_state(state)
                } else {
                    LoopState::default()
                };
                // A new cycle keeps the settings, not the progress.
                ls.focus.clear();
                ls.run_id = None;
                ls.approval = None;
                ls.pending_decision = None;
                ls.last_decision = None;
                ls.content_type_source = source.to_string();
                store_loop(state, &ls);
                apply_request(state, &req, &inputs);
            };
            let (_, state) = arts.init_seeded(
                &req.name,
                Some(&artifact_type),
                Some(&detected.content_type),
                req.max_iterations,
                &seed,
            )?;
            (
                state,
                if prior.is_some() {
                    "new_cycle"
                } else {
                    "created"
                },
            )
        }
    };
    // A new artifact or cycle had the flags applied before its first save.
    let changed = if started_how == "resumed" {
        apply_request(&mut state, &req, &inputs)
    } else {
        Vec::new()
    };
    if !changed.is_empty() {
        notes.push(format!(
            "changed for this cycle: {}; the specification is made again before the next plan",
            changed.join(", ")
        ));
        let mut ls = loop_state(&state);
        ls.respecify = true;
        store_loop(&mut state, &ls);
    }
    arts.save(&mut state)?;
    let dispatcher_triggers = if state.workflow_triggers.is_empty() {
        Vec::new()
    } else {
        triggers::parse_triggers(&Value::Array(state.workflow_triggers.clone())).map_err(|e| {
            LoopError::Usage(format!("the artifact's stored workflow triggers: {e}"))
        })?
    };
    let dispatcher = Dispatcher::new(
        ws.clone(),
        workflow_log(&state.artifact_name),
        dispatcher_triggers,
    );
    let client = if req.offline {
        None
    } else {
        env.client.clone().filter(|c| c.is_configured())
    };
    let mut ls = loop_state(&state);
    if ls.test_generation && client.is_none() && state.content_type.starts_with("meta:") {
        // Running the prompt needs a model: without one the prompt itself is judged.
        notes.push(
            "test generation needs a model endpoint; without one only the prompt is evaluated (prompt_quality)".into(),
        );
        ls.evaluation_strategy = content_type::Strategy::PromptQuality.as_str().into();
    }
    let mut c = Controller {
        ws: &ws,
        arts: &arts,
        state,
        ls,
        env,
        client,
        dispatcher,
        notes,
        timings: Timings::default(),
        started_how,
    };
    let outcome = c.run().await;
    let report = outcome.map(|o| c.report(o));
    c.dispatcher.finish(std::time::Duration::from_secs(60));
    let mut report = report?;
    report.timings.total_ms = started.elapsed().as_secs_f64() * 1000.0;
    report.timings.engine_ms = (report.timings.total_ms
        - report.timings.stages_ms
        - report.timings.teardown_ms
        - report.timings.model_ms
        - report.timings.person_ms)
        .max(0.0);
    Ok(report)
}

/// Applies the flags of this call to the state: given flags replace the
/// stored settings. Returns the settings that changed.
fn apply_request(
    state: &mut RefinementState,
    req: &Request,
    inputs: &[String],
) -> Vec<&'static str> {
    let mut ls = loop_state(state);
    let mut changed = Vec::new();
    if !req.inputs.is_empty() && ls.inputs != inputs {
        ls.inputs = inputs.to_vec();
        changed.push("inputs");
    }
    if req.intent.is_some() && ls.intent != req.intent {
        ls.intent = req.intent.clone();
        changed.push("intent");
    }
    if let Some(a) = req.requires_approval {
        ls.requires_approval = a;
    }
    if let Some(t) = req.test_generation {
        ls.test_generation = t;
    }
    if req.target_platform.is_some() {
        ls.target_platform = req.target_platform.clone();
    }
    if !req.components.is_empty() {
        ls.components = req.components.clone();
    }
    for (k, v) in &req.options {
        ls.options.insert(k.clone(), v.clone());
    }
    if let Some(m) = req.max_iterations {
        state.max_iterations = m;
    }
    if let Some(ct) = &req.content_type {
        state.content_type = ct.clone();
    }
    ls.evaluation_strategy = content_type::strategy(&state.content_type, ls.test_generation)
        .as_str()
        .to_string();
    if let Some(t) = &req.triggers {
        state.workflow_triggers = match t {
            Value::Object(o) => o
                .get("triggers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            Value::Array(a) => a.clone(),
            _ => vec![],
        };
    }
    store_loop(state, &ls);
    changed
}

/// The artifact type of a new artifact or cycle (flag, prior cycle, or what
/// the inputs make plain) and its content type (flag, prior cycle when no new
/// inputs are given, or detected).
fn type_and_content_type(
    req: &Request,
    prior: Option<&RefinementState>,
    inputs: &[String],
    input_texts: &[String],
) -> Result<(String, content_type::Detected), LoopError> {
    let artifact_type = req
        .artifact_type
        .clone()
        .or_else(|| prior.map(|p| p.artifact_type.clone()))
        .or_else(|| {
            let d = content_type::detect(
                req.content_type.as_deref(),
                inputs,
                input_texts,
                None,
                req.intent.as_deref(),
            );
            (d.source != "default")
                .then(|| content_type::artifact_type_of(&d.content_type))
                .flatten()
                .map(str::to_string)
        })
        .ok_or_else(|| {
            LoopError::Usage(format!(
                "`{}` is a new artifact: say what it is with --type ({})",
                req.name,
                domain::DOMAINS
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    domain::domain(&artifact_type).map_err(LoopError::Usage)?;
    let detected = match (&req.content_type, prior) {
        (None, Some(p)) if req.inputs.is_empty() => content_type::Detected {
            content_type: p.content_type.clone(),
            source: "prior_cycle",
        },
        _ => content_type::detect(
            req.content_type.as_deref(),
            inputs,
            input_texts,
            Some(&artifact_type),
            req.intent.as_deref(),
        ),
    };
    Ok((artifact_type, detected))
}

/// The checks of a new artifact or cycle that need no write: its type, its
/// content type and whether its adapter can work with the inputs.
fn prevalidate(
    ws: &Workspace,
    provider: &Provider,
    req: &Request,
    inputs: &[String],
    input_texts: &[String],
) -> Result<(), LoopError> {
    let arts = Artifacts { ws, provider };
    let existing = match arts.load(&req.name) {
        Ok(s) => Some(s),
        Err(ArtifactError::NotFound(_)) => None,
        Err(ArtifactError::StateMissing { .. }) if req.new_lineage => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(state) = &existing {
        if let Some(t) = &req.artifact_type
            && t != &state.artifact_type
        {
            return Err(ArtifactError::TypeMismatch {
                name: req.name.clone(),
                actual: state.artifact_type.clone(),
                requested: t.clone(),
            }
            .into());
        }
        if state.finalized_at.is_none() {
            if let Some(ct) = &req.content_type
                && ct != &state.content_type
            {
                return Err(LoopError::Usage(format!(
                    "`{}` is a {} artifact in a running cycle; its content type cannot change now (finish the cycle, then pass --content-type)",
                    state.artifact_name, state.content_type
                )));
            }
            return Ok(());
        }
    }
    let (artifact_type, detected) =
        type_and_content_type(req, existing.as_ref(), inputs, input_texts)?;
    let content_type = detected.content_type;
    let prior = existing.as_ref().map(loop_state).unwrap_or_default();
    let inputs: Vec<String> = if req.inputs.is_empty() {
        prior.inputs.clone()
    } else {
        inputs.to_vec()
    };
    let mut options = prior.options.clone();
    options.extend(req.options.clone());
    let components = if req.components.is_empty() {
        prior.components.clone()
    } else {
        req.components.clone()
    };
    let input = AdapterInput {
        name: &req.name,
        artifact_type: &artifact_type,
        content_type: &content_type,
        inputs: &inputs,
        intent: req.intent.as_deref().or(prior.intent.as_deref()),
        options: &options,
        target_platform: req
            .target_platform
            .as_deref()
            .or(prior.target_platform.as_deref()),
        test_generation: req.test_generation.unwrap_or(prior.test_generation),
        components: &components,
        root: ws.root(),
    };
    domain::build(&input).map(|_| ()).map_err(LoopError::Usage)
}

struct Controller<'a, 'e> {
    ws: &'a Workspace,
    arts: &'a Artifacts<'a>,
    state: RefinementState,
    ls: LoopState,
    env: &'a mut Env<'e>,
    client: Option<Arc<Client>>,
    dispatcher: Dispatcher,
    notes: Vec<String>,
    timings: Timings,
    started_how: &'static str,
}

impl Controller<'_, '_> {
    fn name(&self) -> String {
        self.state.artifact_name.clone()
    }

    fn save(&mut self) -> Result<(), LoopError> {
        store_loop(&mut self.state, &self.ls);
        self.arts.save(&mut self.state)?;
        Ok(())
    }

    fn done(&self, phase: &str) -> bool {
        self.state.phases_completed.iter().any(|p| p == phase)
    }

    fn fire(&mut self, event: &str, phase: Option<&str>, metadata: Value) {
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

    fn begin(&mut self, phase: &str) {
        self.env.observer.phase_start(
            self.state.current_iteration,
            self.state.max_iterations,
            phase,
        );
        self.fire("on_phase_start", Some(phase), json!({}));
    }

    /// After every phase: checkpoint, then dispatch `on_phase_complete`.
    fn end(&mut self, phase: &str, summary: &str, t: Instant) -> Result<(), LoopError> {
        store_loop(&mut self.state, &self.ls);
        let cp = self.arts.checkpoint_state(&mut self.state, phase)?;
        self.fire(
            "on_phase_complete",
            Some(phase),
            json!({"checkpoint_id": cp.checkpoint_id, "summary": summary}),
        );
        self.env.observer.phase_done(
            self.state.current_iteration,
            phase,
            summary,
            t.elapsed().as_secs_f64() * 1000.0,
        );
        Ok(())
    }

    /// Ctrl-C while the model was asked: nothing of the phase is recorded
    /// (no fallback stands in for the answer that never came).
    fn cancelled_in(&mut self, phase: &str) -> Outcome {
        let note = format!(
            "cancelled while the model was asked ({phase}): the {phase} phase is not done and asks the model again on the next `pmpo refine {}`",
            self.state.artifact_name
        );
        self.env.observer.note(&note);
        self.notes.push(note);
        Outcome::Cancelled
    }

    /// Ctrl-C while a person was asked at the approval gate: no answer is
    /// recorded; the gate stays pending for `pmpo approve` or the next run.
    fn cancelled_at_the_gate(&mut self) -> Outcome {
        let note = format!(
            "cancelled at the approval gate: nothing was answered; `pmpo refine {0}` asks again (or answer with `pmpo approve {0}`)",
            self.state.artifact_name
        );
        self.env.observer.note(&note);
        self.notes.push(note);
        Outcome::Cancelled
    }

    fn log(&self, file: &str, marker: &str, body: &str) -> Result<(), LoopError> {
        let marker = format!("{}:{marker}", self.state.refinement_id);
        journal::append_once(self.ws, file, &marker, body, &self.state.refinement_id)?;
        Ok(())
    }

    fn adapter_input<'s>(&'s self, inputs: &'s [String]) -> AdapterInput<'s> {
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

    async fn run(&mut self) -> Result<Outcome, LoopError> {
        if self.started_how != "resumed" || self.state.current_iteration == 0 {
            let msg = match self.started_how {
                "created" => "new artifact",
                "new_cycle" => "new cycle, seeded from the finalized one",
                _ => "resumed",
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
            let respecify = self.ls.respecify && !self.done("plan");
            if (self.state.current_iteration == 1 && !self.done("specify"))
                || spec_missing
                || respecify
            {
                if let Some(o) = self.specify().await? {
                    return Ok(o);
                }
            } else if !self.done("plan") {
                if let Some(o) = self.plan().await? {
                    return Ok(o);
                }
            } else if !self.done("execute") {
                if let Some(o) = self.execute().await? {
                    return Ok(o);
                }
            } else if !self.done("reflect") {
                if let Some(o) = self.reflect().await? {
                    return Ok(o);
                }
            } else if !self.done("persist") {
                if let Some(o) = self.approval_gate().await? {
                    return Ok(o);
                }
                self.persist()?;
            } else {
                if let Some(o) = self.decide()? {
                    return Ok(o);
                }
            }
        }
    }

    /// A phase whose file is gone (moved aside after damage) runs again,
    /// and so do the phases after it.
    fn redo_missing(&mut self) -> Result<(), LoopError> {
        let iteration = self.state.current_iteration;
        let checks = [
            ("plan", plan_path(&self.name(), iteration)),
            ("reflect", reflection_path(&self.name(), iteration)),
        ];
        for (phase, file) in checks {
            if self.done(phase) && !self.ws.resolve(&file)?.is_file() {
                let at = self
                    .state
                    .phases_completed
                    .iter()
                    .position(|p| p == phase)
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

    // ---- Specify ----------------------------------------------------------

    /// `Some(Cancelled)` when Ctrl-C came while the model was asked: the
    /// phase is not checkpointed, so the next `pmpo refine` asks again.
    async fn specify(&mut self) -> Result<Option<Outcome>, LoopError> {
        let t = Instant::now();
        self.begin("specify");
        let inputs = self.ls.inputs.clone();
        let (defaults, _) =
            domain::build(&self.adapter_input(&inputs)).map_err(LoopError::Usage)?;
        let strategy = self.ls.evaluation_strategy.clone();
        let mut constraints = defaults.constraints.clone();
        let mut goals = defaults.goals.clone();
        let mut notes = defaults.notes.clone();
        let mut specified_by = "adapter".to_string();
        if let Some(client) = self.client.clone() {
            let prompt = self.specify_prompt(&constraints);
            let caller = Caller {
                client: &client,
                ws: self.ws,
                refinement_id: &self.state.refinement_id,
                cancel: &self.env.exec.cancel,
            };
            self.env
                .observer
                .note("asking the model for a specification");
            let t_model = Instant::now();
            let asked = caller
                .ask_json(Phase::Specify, "specify", prompt, &|v| {
                    model::tidy_specify(v);
                    model::schema_problems(model::SPECIFY_SCHEMA, v)
                })
                .await;
            self.timings.model_ms += t_model.elapsed().as_secs_f64() * 1000.0;
            match asked {
                Asked::Valid { value, repaired } => {
                    specified_by = if repaired { "model (after one repair)".into() } else { "model".into() };
                    for g in value["goals"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                        if !goals.iter().any(|x| x == g) {
                            goals.push(g.to_string());
                        }
                    }
                    for c in value["constraints"].as_array().into_iter().flatten() {
                        match serde_json::from_value::<Constraint>(c.clone()) {
                            Ok(c) if !constraints.iter().any(|x| x.id == c.id) => constraints.push(c),
                            Ok(c) => notes.push(format!("the model's constraint `{}` repeats a default one; the default is kept", c.id)),
                            Err(e) => notes.push(format!("a constraint of the model was dropped: {e}")),
                        }
                    }
                }
                Asked::Invalid { problems } => notes.push(format!(
                    "the model's specification was invalid after one repair ({}); the adapter's defaults are used",
                    problems.join("; ")
                )),
                Asked::Failed(e) => notes.push(format!("no model specification ({e}); the adapter's defaults are used")),
                Asked::Cancelled => return Ok(Some(self.cancelled_in("specify"))),
            }
        }
        let spec = Specification {
            artifact_name: self.state.artifact_name.clone(),
            artifact_type: self.state.artifact_type.clone(),
            content_type: Some(self.state.content_type.clone()),
            intent: self.ls.intent.clone(),
            constraints: constraints.clone(),
            metadata: Map::from_iter([
                ("goals".to_string(), json!(goals)),
                ("evaluation_strategy".to_string(), json!(strategy)),
                ("refinement_id".to_string(), json!(self.state.refinement_id)),
                (
                    "requires_approval".to_string(),
                    json!(self.ls.requires_approval),
                ),
                (
                    "max_iterations".to_string(),
                    json!(self.state.max_iterations),
                ),
            ]),
        };
        let mut ct = json!({
            "content_type": self.state.content_type,
            "evaluation_strategy": strategy,
            "test_generation": self.ls.test_generation && self.client.is_some(),
            "detected_by": self.ls.content_type_source,
        });
        if let Some(p) = &self.ls.target_platform {
            ct["target_platform"] = json!(p);
        }
        if !self.ls.components.is_empty() {
            ct["components"] = Value::Array(
                domain::component_strategies(&self.adapter_input(&inputs))
                    .into_iter()
                    .map(|(slug, c, s)| json!({"id": slug, "content_type": c, "evaluation_strategy": s.as_str()}))
                    .collect(),
            );
        }
        let file = SpecFile {
            specification: spec,
            goals: goals.clone(),
            checks: defaults.checks.clone(),
            required_files: defaults.required_files.clone(),
            content_type: ct,
            specified_by: specified_by.clone(),
            notes: notes.clone(),
        };
        write_json(
            self.ws,
            &spec_path(&self.name()),
            &file,
            &self.state.refinement_id,
        )?;
        // constraints.json in the reference layout (the Execute phase adds statuses).
        let doc = json!({
            "artifact_type": self.state.artifact_type,
            "artifact_name": self.state.artifact_name,
            "constraints": constraints,
            "global_rules": ["Deterministic checks decide; the model judges only what no check measures."],
            "termination_conditions": [
                "all blocking constraints satisfied, every required file in dist/, the manifest valid, no high constraint violated",
                format!("or {} iterations", self.state.max_iterations),
            ],
        });
        write_json(
            self.ws,
            pmpo_engine::validation::CONSTRAINTS_FILE,
            &doc,
            &self.state.refinement_id,
        )?;
        self.state.goals = goals;
        self.ls.respecify = false;
        self.state.constraints = constraints
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        let checked = file.checks.len();
        let summary = format!(
            "{} constraint(s), {} with a deterministic check; specified by {specified_by}",
            constraints.len(),
            checked
        );
        let mut body = format!(
            "## Iteration {} — Specify\n\n- Artifact: `{}` ({}, {}), evaluated by {}\n- Specified by: {specified_by}\n- Constraints: {} ({} with a deterministic check)\n",
            self.state.current_iteration,
            self.state.artifact_name,
            self.state.artifact_type,
            self.state.content_type,
            self.ls.evaluation_strategy,
            constraints.len(),
            checked
        );
        for n in &notes {
            body.push_str(&format!("- Note: {n}\n"));
            self.env.observer.note(n);
        }
        self.log(
            REFINEMENT_LOG,
            &format!(
                "specify:{}:{}",
                self.state.current_iteration,
                self.state.checkpoints.len()
            ),
            &body,
        )?;
        self.end("specify", &summary, t)?;
        Ok(None)
    }

    fn specify_prompt(&self, defaults: &[Constraint]) -> String {
        format!(
            "Phase: Specify. Turn the intent into a structured specification.\n\n\
Artifact: {name} (type {t}, content type {ct}).\nIntent: {intent}\nInputs: {inputs}\n\n\
The domain adapter already sets these constraints (each with a deterministic check where one exists):\n{defaults}\n\n\
Answer with JSON: {{\"goals\": [\"...\"], \"constraints\": [{{\"id\": \"kebab-id\", \"description\": \"...\", \"severity\": \"blocking|high|medium|low\", \"type\": \"visual|structural|semantic|technical|brand|performance|accessibility\"}}]}}.\n\
List only constraints the defaults do not cover; each must be something a reviewer can judge from the artifact.",
            name = self.state.artifact_name,
            t = self.state.artifact_type,
            ct = self.state.content_type,
            intent = self.intent_text(),
            inputs = self.inputs_text(),
            defaults = constraint_lines(defaults),
        )
    }

    fn intent_text(&self) -> &str {
        self.ls.intent.as_deref().unwrap_or("(none given)")
    }

    fn inputs_text(&self) -> String {
        if self.ls.inputs.is_empty() {
            "(none)".to_string()
        } else {
            self.ls.inputs.join(", ")
        }
    }

    fn load_spec(&self) -> Result<SpecFile, LoopError> {
        read_json(self.ws, &spec_path(&self.name()))?.ok_or_else(|| LoopError::Corrupt {
            path: spec_path(&self.name()),
            detail: "missing".into(),
        })
    }

    // ---- Plan -------------------------------------------------------------

    /// `Some(Cancelled)` when Ctrl-C came while the model was asked.
    async fn plan(&mut self) -> Result<Option<Outcome>, LoopError> {
        let t = Instant::now();
        self.begin("plan");
        let spec = self.load_spec()?;
        let inputs = self.ls.inputs.clone();
        let (_, deterministic) =
            domain::build(&self.adapter_input(&inputs)).map_err(LoopError::Usage)?;
        let iteration = self.state.current_iteration;
        let mut notes = Vec::new();
        let mut planned_by = "adapter".to_string();
        let mut stages = deterministic.stages.clone();
        let mut extra_checks: Vec<ValidationItem> = Vec::new();
        if let Some(client) = self.client.clone() {
            let prompt = self.plan_prompt(&spec, &deterministic.stages);
            let caller = Caller {
                client: &client,
                ws: self.ws,
                refinement_id: &self.state.refinement_id,
                cancel: &self.env.exec.cancel,
            };
            let engine = self.env.engine.clone();
            let spec_for_check = spec.clone();
            let name = self.name();
            let check = move |v: &mut Value| -> Vec<String> {
                match assemble(&spec_for_check, v) {
                    Err(e) => vec![e],
                    Ok(doc) => plan_problems(&engine, &doc, &name, iteration),
                }
            };
            self.env.observer.note("asking the model for a plan");
            let t_model = Instant::now();
            let asked = caller
                .ask_json(Phase::Plan, &format!("plan-{iteration}"), prompt, &check)
                .await;
            self.timings.model_ms += t_model.elapsed().as_secs_f64() * 1000.0;
            match asked {
                Asked::Valid { value, repaired } => {
                    if let Ok(doc) = assemble(&spec, &value) {
                        stages = doc.plan.stages;
                        extra_checks = doc.plan.validation_plan;
                        planned_by = if repaired { "model (after one repair)".into() } else { "model".into() };
                    }
                }
                Asked::Invalid { problems } => notes.push(format!(
                    "the model's plan was invalid after one repair ({}); the adapter's plan is used",
                    problems.join("; ")
                )),
                Asked::Failed(e) => notes.push(format!("no model plan ({e}); the adapter's plan is used")),
                Asked::Cancelled => return Ok(Some(self.cancelled_in("plan"))),
            }
        }
        // Deterministic first: every constraint with a check keeps its check,
        // whatever the plan says; the plan may add checks for the others.
        let mut validation_plan = spec.checks.clone();
        for item in extra_checks {
            if !validation_plan
                .iter()
                .any(|v| v.constraint_id == item.constraint_id)
                && spec
                    .specification
                    .constraints
                    .iter()
                    .any(|c| c.id == item.constraint_id)
            {
                validation_plan.push(item);
            }
        }
        let tool_invocations: Vec<Value> = stages
            .iter()
            .map(|s| json!({"stage": s.id, "tool": s.tool_name(), "purpose": s.description}))
            .collect();
        let doc = json!({
            "specification": spec.specification,
            "plan": {
                "stages": stages,
                "tool_invocations": tool_invocations,
                "state_updates": {"iteration": iteration, "focus": self.ls.focus, "planned_by": planned_by},
                "validation_plan": validation_plan,
            }
        });
        let rel = plan_path(&self.name(), iteration);
        write_json(self.ws, &rel, &doc, &self.state.refinement_id)?;
        let problems = plan_problems(&self.env.engine, &doc, &self.name(), iteration);
        if !problems.is_empty() {
            return Err(LoopError::Plan {
                iteration,
                diagnostics: problems.join("\n"),
            });
        }
        let n = doc["plan"]["stages"].as_array().map_or(0, Vec::len);
        let summary = format!("{n} stage(s) by {planned_by}; plan in {rel}");
        let mut body = format!(
            "## Iteration {iteration} — Plan\n\n- Planned by: {planned_by}\n- Stages: {}\n- Plan: `{rel}`\n",
            doc["plan"]["stages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| format!("`{}`", s["id"].as_str().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !self.ls.focus.is_empty() {
            body.push_str(&format!("- Focus: {}\n", self.ls.focus.join(", ")));
        }
        for n in &notes {
            body.push_str(&format!("- Note: {n}\n"));
            self.env.observer.note(n);
        }
        self.log(REFINEMENT_LOG, &format!("plan:{iteration}"), &body)?;
        self.end("plan", &summary, t)?;
        Ok(None)
    }

    fn plan_prompt(&self, spec: &SpecFile, baseline: &[pmpo_plan::Stage]) -> String {
        let last = self.state.current_iteration.checked_sub(1).and_then(|i| {
            read_json::<Reflection>(self.ws, &reflection_path(&self.name(), i))
                .ok()
                .flatten()
        });
        let findings = match &last {
            Some(r) => r
                .constraints
                .iter()
                .filter(|c| c.status != "satisfied")
                .map(|c| format!("- {} [{}] {}: {}", c.id, c.severity, c.status, c.evidence))
                .collect::<Vec<_>>()
                .join("\n"),
            None => "(first iteration)".into(),
        };
        format!(
            "Phase: Plan. Convert the specification into an executable plan for iteration {it}.\n\n\
Artifact: {name} ({t}, {ct}). Intent: {intent}\nInputs: {inputs}\n\nConstraints:\n{constraints}\n\n\
Focus on: {focus}\nFindings of the last iteration:\n{findings}\n\n\
The deterministic baseline plan (stages as JSON):\n{baseline}\n\n\
Tools: run (with: command argv list), template, rasterize, markdown, preview, prompt, a2ui, ai. Write outputs under dist/.\n\
Answer with JSON: {{\"stages\": [...stages like the baseline...], \"validation_plan\": [{{\"constraint_id\": \"...\", \"validation_method\": \"CHECK\", \"with\": {{...}}}}]}}.",
            it = self.state.current_iteration,
            name = self.state.artifact_name,
            t = self.state.artifact_type,
            ct = self.state.content_type,
            intent = self.intent_text(),
            inputs = self.inputs_text(),
            constraints = constraint_lines(&spec.specification.constraints),
            focus = if self.ls.focus.is_empty() {
                "(everything)".to_string()
            } else {
                self.ls.focus.join(", ")
            },
            baseline = serde_json::to_string(baseline).unwrap_or_default(),
        )
    }

    // ---- Execute ----------------------------------------------------------

    async fn execute(&mut self) -> Result<Option<Outcome>, LoopError> {
        let t = Instant::now();
        self.begin("execute");
        let iteration = self.state.current_iteration;
        let rel = plan_path(&self.name(), iteration);
        let path = self.ws.resolve(&rel)?;
        let checked = pmpo_plan::load_plan(&path)
            .and_then(|p| self.env.engine.prepare(p))
            .map_err(|diags| LoopError::Plan {
                iteration,
                diagnostics: diags
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            })?;
        // A run this loop left paused, then finished by `pmpo resume`, is
        // this iteration's execution: its results are taken as they are.
        if let Some(id) = self.ls.run_id.clone()
            && let Ok(Some(done)) = read_json::<Value>(self.ws, pmpo_engine::RESULTS_FILE)
            && done["run_id"].as_str() == Some(id.as_str())
            && done["plan"].as_str() == Some(rel.as_str())
            && done["plan_blake3"].as_str() == Some(checked.blake3.as_str())
            && matches!(
                done["status"].as_str(),
                Some("completed" | "failed" | "incomplete")
            )
        {
            let summary = format!(
                "run {id} (finished by `pmpo resume`): {}",
                done["status"].as_str().unwrap_or("")
            );
            self.log(
                REFINEMENT_LOG,
                &format!("execute:{iteration}:{id}"),
                &format!("## Iteration {iteration} — Execute\n\n- {summary}\n"),
            )?;
            self.end("execute", &summary, t)?;
            return Ok(None);
        }
        let mut opts = self.env.exec.clone();
        opts.workspace = self.ws.root().to_path_buf();
        // Constraints are Reflect's to judge: the run's status says what the stages did.
        opts.allow_violations = true;
        // The manifest entries of this run are this artifact's.
        opts.owner = Some(self.name());
        self.env.observer.execute_start(&checked);
        let engine = self.env.engine.clone();
        let result = {
            let mut sink = Forward(&mut *self.env.observer);
            engine.execute(&checked, &opts, &mut sink).await
        };
        self.env.observer.execute_done();
        let results = result?;
        self.timings.stages_ms += results.stages.iter().map(|s| s.duration_ms).sum::<f64>();
        self.timings.teardown_ms += results.teardown_ms;
        self.ls.run_id = Some(results.run_id.clone());
        match results.status.as_str() {
            "cancelled" => {
                self.save()?;
                return Ok(Some(Outcome::Cancelled));
            }
            "awaiting_intervention" | "paused" => {
                self.save()?;
                self.notes.push(format!(
                    "run {} is paused: answer with `pmpo resume {} --retry|--skip|--abort`, then `pmpo refine {}` goes on",
                    results.run_id, results.run_id, self.state.artifact_name
                ));
                return Ok(Some(Outcome::ExecutionPaused));
            }
            _ => {}
        }
        let summary = format!(
            "run {}: {}: {}",
            results.run_id,
            results.status,
            results.summary.describe()
        );
        self.log(
            REFINEMENT_LOG,
            &format!("execute:{iteration}:{}", results.run_id),
            &format!(
                "## Iteration {iteration} — Execute\n\n- {summary}\n- Results: `{}`\n",
                pmpo_engine::RESULTS_FILE
            ),
        )?;
        self.end("execute", &summary, t)?;
        Ok(None)
    }

    // ---- Reflect ----------------------------------------------------------

    /// `Some(Cancelled)` when Ctrl-C came while the model was judging.
    async fn reflect(&mut self) -> Result<Option<Outcome>, LoopError> {
        let t = Instant::now();
        self.begin("reflect");
        let iteration = self.state.current_iteration;
        let spec = self.load_spec()?;
        let run_id = self.ls.run_id.clone().unwrap_or_default();
        // The Execute phase's constraint statuses, if they are this run's.
        let measured: Value = read_json(self.ws, pmpo_engine::validation::CONSTRAINTS_FILE)
            .ok()
            .flatten()
            .filter(|v: &Value| v["run_id"].as_str() == Some(run_id.as_str()))
            .unwrap_or(Value::Null);
        let checked_ids: Vec<&str> = spec
            .checks
            .iter()
            .map(|c| c.constraint_id.as_str())
            .collect();
        let mut constraints: Vec<ConstraintState> = spec
            .specification
            .constraints
            .iter()
            .map(|c| {
                let m = measured["constraints"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["id"].as_str() == Some(c.id.as_str())));
                let status = m
                    .and_then(|x| x["status"].as_str())
                    .unwrap_or("not_checked")
                    .to_string();
                let evidence = m
                    .and_then(|x| x["checks"].as_array())
                    .map(|checks| {
                        checks
                            .iter()
                            .map(|k| {
                                format!(
                                    "{} {}: {}",
                                    k["check"].as_str().unwrap_or("?"),
                                    k["status"].as_str().unwrap_or("?"),
                                    k["message"].as_str().unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                let basis = if status == "not_checked" {
                    "none"
                } else {
                    "measured"
                };
                ConstraintState {
                    id: c.id.clone(),
                    description: c.description.clone(),
                    severity: c.severity.to_string(),
                    status,
                    basis: basis.into(),
                    evidence: if evidence.is_empty() && !checked_ids.contains(&c.id.as_str()) {
                        "no deterministic check".into()
                    } else {
                        evidence
                    },
                    run_id: String::new(),
                    files: Vec::new(),
                    unproven: Vec::new(),
                }
            })
            .collect();
        let results: Value = read_json(self.ws, pmpo_engine::RESULTS_FILE)
            .ok()
            .flatten()
            .unwrap_or(Value::Null);
        let same_run = results["run_id"].as_str() == Some(run_id.as_str());
        let execution = if same_run {
            ExecutionSummary {
                run_id: run_id.clone(),
                status: results["status"].as_str().unwrap_or("").into(),
                stages: results["stages"].as_array().map_or(0, Vec::len),
                failed_stages: results["stages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| {
                        s["status"].as_str().is_some_and(|st| {
                            st.eq_ignore_ascii_case("failed") || st.eq_ignore_ascii_case("timeout")
                        })
                    })
                    .filter_map(|s| s["id"].as_str().map(str::to_string))
                    .collect(),
                errors: results["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e["stage"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .take(20)
                    .collect(),
            }
        } else {
            ExecutionSummary {
                run_id: run_id.clone(),
                ..Default::default()
            }
        };
        // The evidence rule: a measured status stands only when every file
        // its checks read was produced or verified by this iteration's run.
        let plan_doc: Value = read_json(self.ws, &plan_path(&self.name(), iteration))
            .ok()
            .flatten()
            .unwrap_or(Value::Null);
        let ev = RunEvidence::of_run(&plan_doc, &results, &run_id);
        let checks_run: Vec<Value> = plan_doc["plan"]["validation_plan"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Every constraint a check measures (or tried to: the engine may already
        // have found its files unproven) names the run and the files it rests on.
        for c in constraints.iter_mut() {
            let mine: Vec<&Value> = checks_run
                .iter()
                .filter(|k| k["constraint_id"].as_str() == Some(c.id.as_str()))
                .collect();
            if c.basis != "measured" && mine.is_empty() {
                continue;
            }
            let mut files = Vec::new();
            let mut unproven = Vec::new();
            for k in mine {
                let (f, u) = ev.assess(&k["with"]);
                files.extend(f);
                unproven.extend(u);
            }
            c.run_id = run_id.clone();
            if c.basis != "measured" {
                // Not measured: nothing to overrule, only the files to name.
                c.unproven = unproven;
                continue;
            }
            if unproven.is_empty() {
                c.files = files;
                c.files.dedup();
            } else if c.status == "violated" {
                // A violation is never a false success: it stands, and says
                // that the files it was seen on are not this run's own.
                c.unproven = unproven;
            } else {
                c.evidence = format!(
                    "not evidence: its check read files this iteration did not produce or verify (the check said {}: {})",
                    c.status, c.evidence
                );
                c.status = "not_checked".into();
                c.basis = "none".into();
                c.unproven = unproven;
            }
        }
        let mut notes = Vec::new();
        // Only constraints without a check go to the model, and are marked
        // judged. A check that ran and could not observe (`not_checked`), or
        // read unproven files, is not handed to a judge who cannot observe
        // either: it stays not_checked.
        // (`execution_required: false` items are the plan's way of asking
        // for a judgement: they are not checks.)
        let has_check = |id: &str| {
            spec.checks
                .iter()
                .any(|k| k.constraint_id == id && k.execution_required)
                || checks_run.iter().any(|k| {
                    k["constraint_id"].as_str() == Some(id)
                        && k["execution_required"].as_bool() != Some(false)
                })
        };
        let open: Vec<usize> = constraints
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.status == "not_checked" && c.unproven.is_empty() && !has_check(&c.id)
            })
            .map(|(i, _)| i)
            .collect();
        if !open.is_empty() && !ev.complete() {
            // A judge would read files this run did not produce: no judgement.
            let why = format!(
                "this iteration's run `{run_id}` did not complete ({}): its files are not there to judge",
                if ev.status.is_empty() {
                    "no results"
                } else {
                    ev.status.as_str()
                }
            );
            for &i in &open {
                constraints[i].unproven = vec![why.clone()];
                constraints[i].run_id = run_id.clone();
            }
            notes.push(format!(
                "{} constraint(s) without a check are not judged: {why} ({})",
                open.len(),
                open.iter()
                    .map(|&i| constraints[i].id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        } else if !open.is_empty() {
            if let Some(client) = self.client.clone() {
                let prompt = self.judge_prompt(&spec, &constraints, &open);
                let ids: Vec<String> = open.iter().map(|&i| constraints[i].id.clone()).collect();
                let caller = Caller {
                    client: &client,
                    ws: self.ws,
                    refinement_id: &self.state.refinement_id,
                    cancel: &self.env.exec.cancel,
                };
                let check = move |v: &mut Value| -> Vec<String> {
                    model::tidy_judgement(v);
                    let mut p = model::schema_problems(model::JUDGEMENT_SCHEMA, v);
                    if p.is_empty() {
                        for j in v["judgements"].as_array().into_iter().flatten() {
                            let id = j["id"].as_str().unwrap_or("");
                            if !ids.iter().any(|x| x == id) {
                                p.push(format!(
                                    "`{id}` is not one of the constraints to judge ({})",
                                    ids.join(", ")
                                ));
                            }
                        }
                    }
                    p
                };
                self.env.observer.note(&format!(
                    "asking the model to judge {} constraint(s) no check measures",
                    open.len()
                ));
                let t_model = Instant::now();
                let asked = caller
                    .ask_json(
                        Phase::Reflect,
                        &format!("reflect-{iteration}"),
                        prompt,
                        &check,
                    )
                    .await;
                self.timings.model_ms += t_model.elapsed().as_secs_f64() * 1000.0;
                match asked {
                    Asked::Valid { value, .. } => {
                        for j in value["judgements"].as_array().into_iter().flatten() {
                            if let Some(c) = constraints.iter_mut().find(|c| Some(c.id.as_str()) == j["id"].as_str()) {
                                c.status = j["status"].as_str().unwrap_or("not_checked").into();
                                c.basis = "judged".into();
                                c.evidence = format!("judged by the model: {}", j["reason"].as_str().unwrap_or(""));
                            }
                        }
                    }
                    Asked::Invalid { problems } => notes.push(format!(
                        "the model's judgement was invalid after one repair ({}); those constraints stay not_checked",
                        problems.join("; ")
                    )),
                    Asked::Failed(e) => notes.push(format!("no model judgement ({e}); those constraints stay not_checked")),
                    Asked::Cancelled => return Ok(Some(self.cancelled_in("reflect"))),
                }
            } else {
                notes.push(format!(
                    "{} constraint(s) have no deterministic check and no model is configured: they stay not_checked ({})",
                    open.len(),
                    open.iter().map(|&i| constraints[i].id.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        // Files: required ones (present only when this run recorded them),
        // this artifact's own outputs in dist/, empty ones, its manifest entries.
        let required_missing: Vec<String> = spec
            .required_files
            .iter()
            .filter(|f| ev.proven_under(f).is_empty())
            .cloned()
            .collect();
        let before: Option<Reflection> = if iteration > 1 {
            read_json(self.ws, &reflection_path(&self.name(), iteration - 1))
                .ok()
                .flatten()
        } else {
            None
        };
        let mut owned_patterns = ev.declared.clone();
        owned_patterns.extend(spec.required_files.iter().cloned());
        // A file the last iteration listed is still this artifact's (its
        // deletion is a regression even when the new plan stopped declaring it).
        owned_patterns.extend(before.iter().flat_map(|b| b.dist_files.iter().cloned()));
        let (dist_files, empty_files) = list_owned(self.ws, &owned_patterns);
        let manifest: Value = read_json(self.ws, pmpo_engine::MANIFEST_FILE)
            .ok()
            .flatten()
            .unwrap_or(Value::Null);
        let name = self.name();
        let manifest_files = manifest["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| owned_entry(f, &manifest, &name, &run_id))
            .count();
        let mut params = Map::new();
        params.insert("path".into(), json!(pmpo_engine::MANIFEST_FILE));
        params.insert("verify_digests".into(), json!(true));
        params.insert("owner".into(), json!(name));
        let outcome = pmpo_checks::run_check(self.ws, "manifest", &params);
        let mut r = Reflection {
            iteration,
            strategy: self.ls.evaluation_strategy.clone(),
            constraints,
            execution,
            required_missing,
            unproven: {
                let mut u: Vec<String> = ev
                    .unproven
                    .iter()
                    .map(|(o, why)| format!("`{o}`: {why}"))
                    .collect();
                u.dedup();
                u
            },
            manifest_valid: outcome.passed(),
            manifest_problem: (!outcome.passed()).then(|| outcome.message.clone()),
            manifest_files,
            dist_files,
            empty_files,
            regressions: vec![],
            components: vec![],
            notes: notes.clone(),
            reflected_at: now_rfc3339(),
        };
        r.regressions = reflect::regressions(&r, before.as_ref());
        r.components = self
            .components()
            .into_iter()
            .map(|(id, content_type, strategy)| {
                let mine: Vec<&ConstraintState> = r
                    .constraints
                    .iter()
                    .filter(|c| c.id.starts_with(&format!("{id}_")))
                    .collect();
                let n = |s: &str| mine.iter().filter(|c| c.status == s).count();
                reflect::ComponentSummary {
                    satisfied: n("satisfied"),
                    violated: n("violated"),
                    not_checked: n("not_checked"),
                    id,
                    content_type,
                    strategy,
                }
            })
            .collect();
        write_json(
            self.ws,
            &reflection_path(&self.name(), iteration),
            &r,
            &self.state.refinement_id,
        )?;
        for n in &notes {
            self.env.observer.note(n);
        }
        let summary = format!(
            "{} satisfied, {} violated, {} not checked of {}; {} regression(s)",
            r.count("satisfied"),
            r.count("violated"),
            r.count("not_checked"),
            r.constraints.len(),
            r.regressions.len()
        );
        let mut body = format!(
            "## Iteration {iteration} — Reflect\n\nStrategy: {}. {summary}.\n\n| Constraint | Severity | Status | Basis | Evidence |\n|---|---|---|---|---|\n",
            r.strategy
        );
        for c in &r.constraints {
            body.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                c.id,
                c.severity,
                c.status,
                c.basis,
                cell(&c.evidence)
            ));
        }
        for c in &r.components {
            body.push_str(&format!(
                "\nComponent `{}` ({}, evaluated by {}): {} satisfied, {} violated, {} not checked\n",
                c.id, c.content_type, c.strategy, c.satisfied, c.violated, c.not_checked
            ));
        }
        if !r.required_missing.is_empty() {
            body.push_str(&format!(
                "\nRequired files not produced or verified by run `{}`: {}\n",
                r.execution.run_id,
                r.required_missing.join(", ")
            ));
        }
        for u in &r.unproven {
            body.push_str(&format!("\nUnproven: {u}\n"));
        }
        if !r.manifest_valid {
            body.push_str(&format!(
                "\nManifest: {}\n",
                r.manifest_problem.as_deref().unwrap_or("invalid")
            ));
        }
        for g in &r.regressions {
            body.push_str(&format!("\nRegression: {g}\n"));
        }
        for n in &notes {
            body.push_str(&format!("\nNote: {n}\n"));
        }
        self.log(REFINEMENT_LOG, &format!("reflect:{iteration}"), &body)?;
        let mut d = format!("## Iteration {iteration} — Reflect\n\n- {summary}\n");
        if !r.unsatisfied().is_empty() {
            d.push_str(&format!(
                "- Not satisfied (violated, or blocking and not measured): {}\n",
                r.unsatisfied().join(", ")
            ));
        }
        for g in &r.regressions {
            d.push_str(&format!("- Regression: {g}\n"));
        }
        self.log(DECISIONS, &format!("reflect:{iteration}"), &d)?;
        if !r.regressions.is_empty() {
            self.fire(
                "on_regression",
                Some("reflect"),
                json!({"regressions": r.regressions, "count": r.regressions.len()}),
            );
        }
        self.end("reflect", &summary, t)?;
        Ok(None)
    }

    fn judge_prompt(
        &self,
        spec: &SpecFile,
        constraints: &[ConstraintState],
        open: &[usize],
    ) -> String {
        let mut artifact = String::new();
        let mut budget = 16_000usize;
        for f in &spec.required_files {
            let text = head_text(self.ws, f, 4000);
            if text.is_empty() || budget == 0 {
                continue;
            }
            let take: String = text.chars().take(budget.min(4000)).collect();
            budget = budget.saturating_sub(take.len());
            artifact.push_str(&format!("--- {f}\n{take}\n"));
        }
        let focus = strategy_focus(&self.ls.evaluation_strategy);
        let comps = self.components();
        let component_of = |id: &str| comps.iter().find(|c| id.starts_with(&format!("{}_", c.0)));
        let mut focus = focus.to_string();
        if !comps.is_empty() {
            focus = "This is a composite: judge each component by its own strategy.".into();
            for (slug, ct, strategy) in &comps {
                focus.push_str(&format!("\n- {slug} ({ct}): {}", strategy_focus(strategy)));
            }
        }
        format!(
            "Phase: Reflect. {focus}\n\nArtifact: {name} ({t}, {ct}). Intent: {intent}\n\n\
Measured by deterministic checks (do not re-judge these):\n{measured}\n\n\
Judge only these constraints:\n{open}\n\nThe artifact's files:\n{artifact}\n\
Answer with JSON: {{\"judgements\": [{{\"id\": \"...\", \"status\": \"satisfied|violated\", \"reason\": \"...\"}}]}}.",
            name = self.state.artifact_name,
            t = self.state.artifact_type,
            ct = self.state.content_type,
            intent = self.ls.intent.as_deref().unwrap_or("(none given)"),
            measured = constraints
                .iter()
                .filter(|c| c.status != "not_checked")
                .map(|c| format!("- {} {}", c.id, c.status))
                .collect::<Vec<_>>()
                .join("\n"),
            open = open
                .iter()
                .map(|&i| match component_of(&constraints[i].id) {
                    Some((_, _, strategy)) => format!(
                        "- {}: {} (evaluate by {strategy})",
                        constraints[i].id, constraints[i].description
                    ),
                    None => format!("- {}: {}", constraints[i].id, constraints[i].description),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }

    /// A composite's components: (id prefix, content type, strategy).
    fn components(&self) -> Vec<(String, String, String)> {
        if self.state.content_type != "meta:composite" {
            return Vec::new();
        }
        let inputs = self.ls.inputs.clone();
        domain::component_strategies(&self.adapter_input(&inputs))
            .into_iter()
            .map(|(slug, ct, s)| (slug, ct, s.as_str().to_string()))
            .collect()
    }

    fn load_reflection(&self) -> Result<Reflection, LoopError> {
        let rel = reflection_path(&self.name(), self.state.current_iteration);
        read_json(self.ws, &rel)?.ok_or(LoopError::Corrupt {
            path: rel,
            detail: "missing".into(),
        })
    }

    // ---- Approval gate ----------------------------------------------------

    async fn approval_gate(&mut self) -> Result<Option<Outcome>, LoopError> {
        if !self.ls.requires_approval {
            return Ok(None);
        }
        let iteration = self.state.current_iteration;
        if let Some(a) = &self.ls.approval
            && a.iteration == iteration
            && a.status != "pending"
        {
            return Ok(None);
        }
        let r = self.load_reflection()?;
        let summary = format!(
            "Iteration {iteration}: {} satisfied, {} violated, {} not checked of {} constraint(s).{}{}",
            r.count("satisfied"),
            r.count("violated"),
            r.count("not_checked"),
            r.constraints.len(),
            if r.unsatisfied().is_empty() {
                String::new()
            } else {
                format!(" Unsatisfied: {}.", r.unsatisfied().join(", "))
            },
            if r.regressions.is_empty() {
                String::new()
            } else {
                format!(" Regressions: {}.", r.regressions.join("; "))
            },
        );
        let first_request = !matches!(&self.ls.approval, Some(a) if a.iteration == iteration);
        if first_request {
            self.ls.approval = Some(ApprovalRecord {
                iteration,
                status: "pending".into(),
                requested_at: now_rfc3339(),
                answered_at: None,
                answered_by: None,
                note: None,
            });
            self.save()?;
            self.log(
                DECISIONS,
                &format!("approval-requested:{iteration}"),
                &format!("## Iteration {iteration} — Approval requested\n\n{summary}\n"),
            )?;
            self.fire(
                "on_approval_required",
                Some("reflect"),
                json!({"summary": summary}),
            );
        }
        let t_person = Instant::now();
        let asked = match self.env.ask_approval.clone() {
            None => None,
            Some(ask) => {
                let request = ApprovalRequest {
                    artifact: self.state.artifact_name.clone(),
                    iteration,
                    summary: summary.clone(),
                };
                // The person is asked on a thread of its own so that Ctrl-C
                // ends the wait at once (a terminal read would hold it until
                // Enter); the gate then stays pending, unanswered.
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::spawn(move || {
                    let _ = tx.send(ask(&request));
                });
                let cancel = self.env.exec.cancel.clone();
                tokio::select! {
                    answer = rx => answer.ok().flatten(),
                    _ = cancel.cancelled() => {
                        self.timings.person_ms += t_person.elapsed().as_secs_f64() * 1000.0;
                        return Ok(Some(self.cancelled_at_the_gate()));
                    }
                }
            }
        };
        self.timings.person_ms += t_person.elapsed().as_secs_f64() * 1000.0;
        if self.env.exec.cancel.is_cancelled() {
            return Ok(Some(self.cancelled_at_the_gate()));
        }
        match asked {
            Some(answer) => {
                record_answer(
                    self.ws,
                    &mut self.state,
                    &mut self.ls,
                    answer,
                    "terminal",
                    None,
                )?;
                self.save()?;
                Ok(None)
            }
            None => {
                self.notes.push(format!(
                    "waiting for approval: `pmpo approve {0} --continue` or `pmpo approve {0} --terminate`, then `pmpo refine {0}`",
                    self.state.artifact_name
                ));
                Ok(Some(Outcome::AwaitingApproval))
            }
        }
    }

    // ---- Persist and decide -----------------------------------------------

    fn persist(&mut self) -> Result<(), LoopError> {
        let t = Instant::now();
        self.begin("persist");
        let iteration = self.state.current_iteration;
        let r = self.load_reflection()?;
        let user_terminated = matches!(&self.ls.approval, Some(a) if a.iteration == iteration && a.status == "terminate");
        let d = reflect::decide(&r, self.state.max_iterations, user_terminated);
        if d.status.as_deref() == Some("max_iterations_exceeded") {
            self.log(
                REFINEMENT_LOG,
                &format!("max-iterations:{iteration}"),
                "> **Warning:** Maximum iterations reached — forcing termination\n",
            )?;
        }
        let mut body = format!(
            "## Iteration {iteration} — Persist\n\n- Constraints: {} satisfied, {} violated, {} not checked of {}\n- Files of the artifact in dist/: {}; the manifest lists {} of them ({})\n- Decision: {}{}\n- Reason: {}\n",
            r.count("satisfied"),
            r.count("violated"),
            r.count("not_checked"),
            r.constraints.len(),
            r.dist_files.len(),
            r.manifest_files,
            if r.manifest_valid { "valid" } else { "invalid" },
            d.decision,
            d.status
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default(),
            d.reason
        );
        if d.decision == "continue" {
            body.push_str(&format!("- Next focus: {}\n", d.unsatisfied.join(", ")));
        }
        self.log(REFINEMENT_LOG, &format!("persist:{iteration}"), &body)?;
        let mut dec = format!("## Iteration {iteration} — Decision: {}\n\n", d.decision);
        if d.decision == "continue" {
            dec.push_str(&format!(
                "- Unsatisfied constraints: {}\n",
                if d.unsatisfied.is_empty() {
                    "(none; see the reason)".to_string()
                } else {
                    d.unsatisfied.join(", ")
                }
            ));
            dec.push_str(&format!("- Reason: {}\n", d.reason));
        } else {
            dec.push_str(&format!(
                "- Convergence: {}\n- Rationale: {}\n",
                d.status.as_deref().unwrap_or(""),
                d.reason
            ));
        }
        self.log(DECISIONS, &format!("decision:{iteration}"), &dec)?;
        if !self
            .state
            .iteration_history
            .iter()
            .any(|h| h["iteration"] == json!(iteration))
        {
            let mut phases = self.state.phases_completed.clone();
            phases.push("persist".into());
            self.state.iteration_history.push(json!({
                "iteration": iteration,
                "phases_completed": phases,
                "constraints_satisfied": r.count("satisfied"),
                "constraints_total": r.constraints.len(),
                "decision": d.decision,
                "reason": d.reason,
                "run_id": r.execution.run_id,
                "timestamp": now_rfc3339(),
            }));
        }
        // The manifest records where the refinement stands (the Execute phase
        // wrote its files; Persist adds the loop's view of them).
        let manifest_rel = pmpo_engine::MANIFEST_FILE;
        if let Ok(Some(mut manifest)) = read_json::<Value>(self.ws, manifest_rel)
            && let Some(obj) = manifest.as_object_mut()
        {
            obj.insert(
                "refinement".into(),
                json!({
                    "refinement_id": self.state.refinement_id,
                    "iteration": iteration,
                    "evaluation_strategy": r.strategy,
                    "constraints": {
                        "total": r.constraints.len(),
                        "satisfied": r.count("satisfied"),
                        "violated": r.count("violated"),
                        "not_checked": r.count("not_checked"),
                    },
                    "decision": d.decision,
                    "convergence_status": d.status,
                    "decided_at": d.decided_at,
                }),
            );
            write_json(self.ws, manifest_rel, &manifest, &self.state.refinement_id)?;
        }
        let summary = format!(
            "decision: {}{}",
            d.decision,
            d.status
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        );
        self.ls.pending_decision = Some(d);
        self.end("persist", &summary, t)
    }

    fn decide(&mut self) -> Result<Option<Outcome>, LoopError> {
        let iteration = self.state.current_iteration;
        let d = match self.ls.pending_decision.clone() {
            Some(d) if d.iteration == iteration => d,
            _ => {
                let r = self.load_reflection()?;
                let user_terminated = matches!(&self.ls.approval, Some(a) if a.iteration == iteration && a.status == "terminate");
                reflect::decide(&r, self.state.max_iterations, user_terminated)
            }
        };
        self.fire(
            "on_iteration_complete",
            None,
            json!({"decision": d.decision, "status": d.status, "unsatisfied": d.unsatisfied}),
        );
        self.ls.last_decision = Some(d.clone());
        self.ls.pending_decision = None;
        if d.decision == "terminate" {
            let status = d.status.clone().unwrap_or_else(|| "converged".into());
            self.state.convergence_status = status.clone();
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
            let history = self
                .arts
                .finalize_state(&mut self.state, Some(&status), &archived)?;
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
            return Ok(Some(match status.as_str() {
                "converged" => Outcome::Converged,
                "user_terminated" => Outcome::UserTerminated,
                _ => Outcome::MaxIterationsExceeded,
            }));
        }
        self.ls.focus = d.unsatisfied.clone();
        self.state.current_iteration += 1;
        self.state.phases_completed.clear();
        self.save()?;
        Ok(None)
    }

    fn report(&self, outcome: Outcome) -> Report {
        let constraints = read_json::<Reflection>(
            self.ws,
            &reflection_path(&self.name(), self.state.current_iteration),
        )
        .ok()
        .flatten()
        .map(|r| r.constraints)
        .unwrap_or_default();
        let next_step = match outcome {
            Outcome::AwaitingApproval | Outcome::ExecutionPaused => self.notes.last().cloned(),
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
            notes: self.notes.clone(),
            timings: self.timings.clone(),
        }
    }
}

/// Constraints as prompt lines: `- id [severity]: description`.
fn constraint_lines(constraints: &[Constraint]) -> String {
    constraints
        .iter()
        .map(|c| format!("- {} [{}]: {}", c.id, c.severity, c.description))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the Reflect phase asks the model to look at, by strategy.
fn strategy_focus(strategy: &str) -> &'static str {
    match strategy {
        "prompt_quality" => {
            "Judge the prompt itself: clarity, specificity, fit for its target platform."
        }
        "test_execution" => "Judge the prompt and the test output it produced.",
        _ => "Judge the generated artifact itself.",
    }
}

/// Records an approval answer in the state and in `decisions.md`.
fn record_answer(
    ws: &Workspace,
    state: &mut RefinementState,
    ls: &mut LoopState,
    answer: Approval,
    by: &str,
    note: Option<&str>,
) -> Result<(), LoopError> {
    let iteration = state.current_iteration;
    let word = match answer {
        Approval::Continue => "continue",
        Approval::Terminate => "terminate",
    };
    let rec = ls.approval.get_or_insert_with(|| ApprovalRecord {
        iteration,
        status: "pending".into(),
        requested_at: now_rfc3339(),
        answered_at: None,
        answered_by: None,
        note: None,
    });
    rec.iteration = iteration;
    rec.status = word.into();
    rec.answered_at = Some(now_rfc3339());
    rec.answered_by = Some(by.into());
    rec.note = note.map(str::to_string);
    journal::append_once(
        ws,
        DECISIONS,
        &format!("{}:approval:{iteration}", state.refinement_id),
        &format!(
            "## Iteration {iteration} — Approval: {word}\n\n- Answered by: {by}\n{}",
            note.map(|n| format!("- Note: {n}\n")).unwrap_or_default()
        ),
        &state.refinement_id,
    )?;
    Ok(())
}

/// What `pmpo approve` did.
#[derive(Debug, Clone, Serialize)]
pub struct Approved {
    pub artifact_name: String,
    pub iteration: u64,
    pub decision: String,
}

/// Answers an artifact's pending approval gate (from any process).
pub fn approve(
    workspace: &std::path::Path,
    name: &str,
    answer: Approval,
    note: Option<&str>,
) -> Result<Approved, LoopError> {
    let ws = Workspace::open(workspace)?;
    Artifacts::check_name(name)?;
    let provider = Provider::resolve(&ws);
    let holder = LockHolder {
        pid: std::process::id(),
        run_id: name.into(),
        since: now_rfc3339(),
        command: format!("pmpo approve {name}"),
    };
    let _guard = match lock::acquire_at(&ws, REFINER_LOCK, &holder, false) {
        Ok(g) => g,
        Err(lock::LockError::Busy(h)) => return Err(LoopError::Busy(h)),
        Err(lock::LockError::Store(e)) => return Err(e.into()),
    };
    let arts = Artifacts {
        ws: &ws,
        provider: &provider,
    };
    let mut state = arts.load(name)?;
    if let Some(at) = &state.finalized_at {
        return Err(LoopError::Usage(format!(
            "`{name}` was finalized at {at}; there is no approval to answer (`pmpo refine {name}` starts a new cycle)"
        )));
    }
    let mut ls = loop_state(&state);
    let pending = matches!(&ls.approval, Some(a) if a.iteration == state.current_iteration && a.status == "pending");
    if !pending {
        return Err(LoopError::Usage(format!(
            "`{name}` is not waiting for approval (iteration {}, last completed phase: {})",
            state.current_iteration,
            state
                .phases_completed
                .last()
                .map(String::as_str)
                .unwrap_or("none")
        )));
    }
    record_answer(&ws, &mut state, &mut ls, answer, "pmpo approve", note)?;
    store_loop(&mut state, &ls);
    arts.save(&mut state)?;
    Ok(Approved {
        artifact_name: name.into(),
        iteration: state.current_iteration,
        decision: ls.approval.map(|a| a.status).unwrap_or_default(),
    })
}

/// Whether a manifest entry is this artifact's: its owner says so, or it has
/// none and the manifest is this run's (a run finished by `pmpo resume`,
/// which knows no owner).
fn owned_entry(entry: &Value, manifest: &Value, name: &str, run_id: &str) -> bool {
    match entry["owner"].as_str() {
        Some(o) => o == name,
        None => !run_id.is_empty() && manifest["run_id"].as_str() == Some(run_id),
    }
}

/// The artifact's files under `dist/` (those its plan declares; sorted) and
/// the empty ones among them. Other artifacts share `dist/`: their files are
/// theirs to judge.
fn list_owned(ws: &Workspace, patterns: &[String]) -> (Vec<String>, Vec<String>) {
    let (files, empty) = list_dist(ws);
    let patterns: Vec<PathPattern> = patterns.iter().map(|p| PathPattern::new(p)).collect();
    let mine = |f: &String| patterns.iter().any(|p| p.covers(f));
    (
        files.into_iter().filter(mine).collect(),
        empty.into_iter().filter(mine).collect(),
    )
}

/// Files under `dist/` (sorted) and the empty ones among them.
fn list_dist(ws: &Workspace) -> (Vec<String>, Vec<String>) {
    let mut files = Vec::new();
    let mut empty = Vec::new();
    let walk = walkdir::WalkDir::new(ws.root().join("dist"))
        .max_depth(32)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        // A killed writer may leave its temporary file behind; it is not output.
        .filter(|e| !pmpo_store::is_temp_name(&e.file_name().to_string_lossy()));
    for e in walk.take(20_000) {
        if let Some(rel) = ws.relative(e.path()) {
            if e.metadata().is_ok_and(|m| m.len() == 0) {
                empty.push(rel.clone());
            }
            files.push(rel);
        }
    }
    files.sort();
    empty.sort();
    (files, empty)
}

/// A plan document from the specification and the model's `{stages, validation_plan}`.
fn assemble(spec: &SpecFile, answer: &Value) -> Result<PlanDocument, String> {
    // A whole plan document (`{"plan": {"stages": ...}}`) is accepted too.
    let answer = match answer.get("plan") {
        Some(inner) if inner.get("stages").is_some() && answer.get("stages").is_none() => inner,
        _ => answer,
    };
    let stages = answer
        .get("stages")
        .cloned()
        .ok_or("the answer has no `stages`")?;
    let validation_plan = answer.get("validation_plan").cloned().unwrap_or(json!([]));
    let doc = json!({
        "specification": spec.specification,
        "plan": {"stages": stages, "validation_plan": validation_plan},
    });
    serde_json::from_value(doc).map_err(|e| format!("the plan does not fit the plan format: {e}"))
}

/// Every static check of the plan format (the project's plan schema).
fn plan_problems(engine: &Engine, doc: &impl Serialize, name: &str, iteration: u64) -> Vec<String> {
    let text = match serde_json::to_string_pretty(doc) {
        Ok(t) => t,
        Err(e) => return vec![e.to_string()],
    };
    let display = plan_path(name, iteration);
    match pmpo_plan::parse_plan_text(text, PathBuf::from(&display), display.clone()) {
        Ok(loaded) => engine
            .check(&loaded)
            .iter()
            .map(|d| d.to_string())
            .collect(),
        Err(diags) => diags.iter().map(|d| d.to_string()).collect(),
    }
}
