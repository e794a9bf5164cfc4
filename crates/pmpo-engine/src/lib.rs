//! The Execute phase. [`Engine::execute`] runs a checked plan's stages in
//! order, calls each stage's tool, decides success (exit status, declared
//! outputs on disk), records everything, and returns [`ExecutionResults`].
//!
//! The engine emits [`Event`]s; the event log (`logs/executor.jsonl`) and the
//! terminal reporter both consume them.

pub mod events;
mod executor;
pub mod outputs;
mod persist;
pub mod resolve;
pub mod results;
pub mod validation;

use std::path::PathBuf;
use std::time::Duration;

use pmpo_plan::{Diagnostic, LoadedPlan, PlanDocument};
use pmpo_tools::Registry;
use tokio_util::sync::CancellationToken;

pub use events::{Event, EventKind, EventSink, NoSink, StageStatus};
pub use results::ExecutionResults;

/// Time limit for a stage that names none.
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the engine keeps its logs.
pub const EVENTS_LOG: &str = "logs/executor.jsonl";
pub const STAGE_LOG_DIR: &str = "logs/execution";
pub const RESULTS_FILE: &str = ".state/execution_results.json";
pub const MANIFEST_FILE: &str = "artifact_manifest.json";
pub const REFINEMENT_LOG: &str = "refinement_log.md";

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// The directory stages run in and outputs are relative to.
    pub workspace: PathBuf,
    /// After a failure, keep running stages that do not depend on it.
    pub keep_going: bool,
    pub default_timeout: Duration,
    /// Cancelling stops the running stage (its whole process group) and skips the rest.
    pub cancel: CancellationToken,
}

impl ExecuteOptions {
    pub fn new(workspace: PathBuf) -> Self {
        ExecuteOptions {
            workspace,
            keep_going: false,
            default_timeout: DEFAULT_STAGE_TIMEOUT,
            cancel: CancellationToken::new(),
        }
    }
}

/// Failures of the engine itself (not of a stage).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] pmpo_store::StoreError),
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
        let mut diags = pmpo_plan::check(plan, &self.registry);
        diags.extend(pmpo_plan::check_validations(plan, &pmpo_checks::Checks));
        diags.sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(0)));
        diags
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
        executor::run(self, plan, opts, sink).await
    }
}
