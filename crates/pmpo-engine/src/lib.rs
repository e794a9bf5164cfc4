//! The Execute phase. [`Engine::execute`] runs a checked plan's stages in
//! order, calls each stage's tool, decides success (exit status, declared
//! outputs on disk), records everything, and returns [`ExecutionResults`].
//!
//! The engine emits [`Event`]s with typed payloads ([`What`]); the event log
//! (`logs/executor.jsonl`) and the terminal reporter both consume them, and
//! one reporter ([`words`]) turns them into words for both. What to do after
//! a failed attempt is one pure function ([`recovery::next_step`]).

pub mod events;
mod exec;
pub mod intents;

pub mod outputs;
mod persist;
pub mod recovery;
pub mod resolve;
pub mod results;
mod sandbox;
pub mod validation;
pub mod words;

use std::path::PathBuf;
use std::time::Duration;

use pmpo_plan::{Diagnostic, LoadedPlan, PlanDocument};
use pmpo_tools::Registry;
use tokio_util::sync::CancellationToken;

pub use events::{Event, EventKind, EventSink, NoSink, StageStatus, What};
pub use exec::kill_leftovers;
pub use exec::remote::{
    JobPayload, RemoteJob, RemoteOutcome, RemoteRunner, WireCaptured, WireError, WireTermination,
    digests, job_stage, run_job,
};
pub use persist::export_ledger;
pub use pmpo_store::states::FailureKind;
pub use results::ExecutionResults;

/// Time limit for a stage that names none.
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the engine keeps its logs.
pub const EVENTS_LOG: &str = "logs/executor.jsonl";
pub const STAGE_LOG_DIR: &str = "logs/execution";

/// A run's stage log: every attempt of every stage of the run, a line each
/// (`"stage"` says whose), appended as the attempt ends. One file per run,
/// not per stage: creating a file costs as much as a small stage's own work.
pub fn stage_log(run_id: &str) -> String {
    format!("{STAGE_LOG_DIR}/{run_id}.jsonl")
}
pub const RESULTS_FILE: &str = ".state/execution_results.json";
pub const MANIFEST_FILE: &str = "artifact_manifest.json";
pub const REFINEMENT_LOG: &str = "refinement_log.md";

/// How to run a plan.
#[derive(Clone)]
pub struct ExecuteOptions {
    /// The directory stages run in and outputs are relative to.
    pub workspace: PathBuf,
    /// After a failure, keep running stages that do not depend on it.
    pub keep_going: bool,
    pub default_timeout: Duration,
    /// Cancelling stops the running stage (its whole process group) and skips the rest.
    pub cancel: CancellationToken,
    /// Which stages must run even if an identical earlier result exists.
    pub force: Force,
    /// Wait for another pmpo holding the workspace instead of failing.
    pub wait: bool,
    /// Continue this run (`pmpo resume RUN_ID`) instead of starting one.
    pub resume: Option<String>,
    /// The answer for a stage that awaits a decision (`pmpo resume --retry|--skip|--abort`).
    pub decision: Option<Decision>,
    /// Asks a person what to do about a failed `on_failure: manual` stage (a terminal
    /// prompt). Without it, the run pauses durably for `pmpo resume`.
    pub ask: Option<AskPerson>,
    /// Circuit breaker settings for every adapter.
    pub breaker: recovery::BreakerPolicy,
    /// How many stages may run at once (independent stages run in parallel).
    pub jobs: usize,
    /// A blocking constraint of the `validation_plan` that is violated (or that its
    /// checks could not verify) fails the run; with this, the run only reports it.
    pub allow_violations: bool,
    /// Who the run's files belong to (the named artifact `pmpo refine` runs
    /// for): each manifest entry of this run carries it, and the entries of
    /// other owners already in `artifact_manifest.json` are kept.
    pub owner: Option<String>,
    /// Where stages' tools run instead of this process (`pmpo execute
    /// --workers`: a queue that workers claim from). `None`: here.
    pub remote: Option<std::sync::Arc<dyn RemoteRunner>>,
}

/// A way to ask a person about a failed stage (e.g. a terminal prompt).
pub type AskPerson = std::sync::Arc<dyn Fn(&Intervention) -> Decision + Send + Sync>;

/// What a person decided about a failed stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Retry,
    Skip,
    Abort,
}

/// A failed stage that needs a person's decision.
#[derive(Debug, Clone)]
pub struct Intervention {
    pub run_id: String,
    pub stage: String,
    pub error: String,
    pub hint: Option<String>,
}

/// How often a running executor refreshes its heartbeat in the store.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// `--force`: re-run instead of reusing earlier results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Force {
    #[default]
    None,
    All,
    Stages(Vec<String>),
}

impl ExecuteOptions {
    pub fn new(workspace: PathBuf) -> Self {
        ExecuteOptions {
            workspace,
            keep_going: false,
            default_timeout: DEFAULT_STAGE_TIMEOUT,
            cancel: CancellationToken::new(),
            force: Force::None,
            wait: false,
            resume: None,
            decision: None,
            ask: None,
            breaker: recovery::BreakerPolicy::default(),
            jobs: 1,
            allow_violations: false,
            owner: None,
            remote: None,
        }
    }
}

/// Failures of the engine itself (not of a stage).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] pmpo_store::StoreError),
    #[error(transparent)]
    Db(#[from] pmpo_store::db::DbError),
    #[error("the workspace is in use by another pmpo{}", .0.as_ref().map(|h| format!(": {} ({}, run {}) since {}", h.who(), h.command, h.run_id, h.since)).unwrap_or_default())]
    Busy(Option<pmpo_store::lock::LockHolder>),
    #[error("there is no run `{0}` in this workspace")]
    NoSuchRun(String),
    #[error("run `{run_id}` is waiting for a decision about stage `{stage}`")]
    AwaitingDecision { run_id: String, stage: String },
    #[error("run `{run_id}` ran plan `{recorded}`, not `{given}`")]
    PlanMismatch {
        run_id: String,
        recorded: String,
        given: String,
    },
}

impl From<pmpo_store::lock::LockError> for EngineError {
    fn from(e: pmpo_store::lock::LockError) -> Self {
        use pmpo_store::lock::LockError;
        match e {
            LockError::Busy(h) => EngineError::Busy(h),
            // The store behind the lock (a PostgreSQL server that cannot be
            // reached) is the store's error, with its exit code.
            LockError::Store(pmpo_store::StoreError::Ledger(d)) => EngineError::Db(d),
            LockError::Store(s) => EngineError::Store(s),
        }
    }
}

impl EngineError {
    /// What the user should do about it.
    pub fn hint(&self) -> String {
        match self {
            EngineError::Store(e) => e.hint().into(),
            EngineError::Db(e) => e.hint().into(),
            EngineError::Busy(_) => {
                "wait for it to finish, or pass --wait to queue behind it".into()
            }
            EngineError::NoSuchRun(_) => {
                "list runs with `pmpo status`; pass --workspace if the run was elsewhere".into()
            }
            EngineError::PlanMismatch { .. } => {
                "resume with the run's own plan, or start a new run with `pmpo execute`".into()
            }
            EngineError::AwaitingDecision { run_id, .. } => {
                format!("answer with `pmpo resume {run_id} --retry`, `--skip` or `--abort`")
            }
        }
    }
}

/// A plan that passed every static check, ready to run. (The source tree kept
/// for error positions is dropped: a large plan runs in less memory.)
#[derive(Debug, Clone)]
pub struct CheckedPlan {
    pub path: PathBuf,
    pub display: String,
    pub doc: PlanDocument,
    /// blake3 of the plan file's text.
    pub blake3: String,
}

/// The Execute phase with the tools of this build.
#[derive(Clone, Default)]
pub struct Engine {
    pub registry: Registry,
}

impl Engine {
    /// Every static check: the plan's structure and each tool's inputs.
    pub fn check(&self, plan: &LoadedPlan) -> Vec<Diagnostic> {
        self.check_report(plan).errors
    }

    /// Every static check, with notes on what only the run can tell.
    pub fn check_report(&self, plan: &LoadedPlan) -> pmpo_plan::CheckReport {
        let mut report = pmpo_plan::check_report(plan, &self.registry);
        let diags = &mut report.errors;
        diags.extend(pmpo_plan::check_validations(plan, &pmpo_checks::Checks));
        diags.sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(0)));
        report
    }

    /// Checks a loaded plan; only a plan without errors can be executed.
    pub fn prepare(&self, plan: LoadedPlan) -> Result<CheckedPlan, Vec<Diagnostic>> {
        let diags = self.check(&plan);
        if !diags.is_empty() {
            return Err(diags);
        }
        Ok(CheckedPlan {
            blake3: blake3::hash(plan.text.as_bytes()).to_hex().to_string(),
            path: plan.path,
            display: plan.display,
            doc: plan.doc,
        })
    }

    /// Runs a checked plan. Stage failures are in the results; an `Err` means
    /// the engine itself could not go on (for example, the workspace is not writable).
    pub async fn execute(
        &self,
        plan: &CheckedPlan,
        opts: &ExecuteOptions,
        sink: &mut dyn EventSink,
    ) -> Result<ExecutionResults, EngineError> {
        exec::run(self, plan, opts, sink).await
    }
}
