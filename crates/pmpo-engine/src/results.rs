//! The structured results handed to Reflect: `execution_results.json` and
//! `artifact_manifest.json`.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::events::StageStatus;
use crate::outputs::GeneratedFile;
use crate::validation::ConstraintStatus;
use pmpo_store::states::{FailureKind, ValidationStatus};

/// Version of the results file layout.
pub const RESULTS_SCHEMA_VERSION: u32 = 1;

/// How one stage went.
#[derive(Debug, Clone, Serialize)]
pub struct StageResult {
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub tool: String,
    pub status: StageStatus,
    /// Why the stage failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Named outputs (from `outputs_json`).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub outputs: Map<String, Value>,
    /// Files verified on disk under the declared outputs.
    pub files: Vec<GeneratedFile>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// The stage log that holds the stage's attempts (with their output), a
    /// line each with `"stage"`: this run's, or for a cached result the log
    /// of the run that made it; none when the stage made no attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// For a CACHED (or carried-over) stage: the run whose result was reused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// Attempts made in this run (retries and fallback included).
    pub attempts: u32,
    /// The fallback tool that was used, when the stage's own tool kept failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_used: Option<String>,
    /// SKIPPED by its own tool, which chose not to do optional work (an
    /// optional preview with no browser; `reason` says why): it does not
    /// fail the run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub optional_skip: bool,
    /// How the stage's processes were confined: `landlock ABI N`,
    /// `detection` or `off` (absent for tools that run no process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Paths the stage changed outside its declared outputs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undeclared: Vec<String>,
}

impl StageResult {
    /// A PENDING result for a stage.
    pub fn new(stage: &pmpo_plan::Stage, tool: &str) -> StageResult {
        StageResult {
            id: stage.id.clone(),
            description: stage.description.clone(),
            tool: tool.to_string(),
            status: StageStatus::Pending,
            reason: None,
            started_at: None,
            finished_at: None,
            duration_ms: 0.0,
            exit_code: None,
            signal: None,
            outputs: Map::new(),
            files: Vec::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            log: None,
            reused_from: None,
            attempts: 0,
            fallback_used: None,
            optional_skip: false,
            sandbox: None,
            undeclared: Vec::new(),
        }
    }
}

/// One validation performed during the run.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationOutput {
    pub check: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint_id: Option<String>,
    /// `passed`, `failed`, or `not_checked`.
    pub status: ValidationStatus,
    /// What was measured, against what.
    pub evidence: Value,
    pub duration_ms: f64,
}

/// One error, with what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorEntry {
    pub stage: String,
    /// `exit_status`, `timeout`, `signal`, `missing_output`, `cancelled`, a
    /// tool error class, or one of the engine's own kinds (all are [`FailureKind`]s).
    pub kind: FailureKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The last lines of the stage's stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
}

pub use pmpo_store::states::RunStatus;

/// Stages counted by outcome; the counts add up to `total`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub total: usize,
    /// Ran in this run and completed.
    pub completed: usize,
    /// Reused: an identical earlier result, outputs verified intact.
    pub cached: usize,
    pub failed: usize,
    pub timeout: usize,
    /// Stopped while running by the user's cancel.
    pub cancelled: usize,
    pub skipped: usize,
    /// Waiting for a person's decision (or for an adapter, in safe mode).
    pub awaiting_decision: usize,
    /// Not started: the run paused or stopped before their turn.
    pub not_started: usize,
    /// Running or validating (only while a run is live, or in an interrupted run).
    #[serde(skip_serializing_if = "is_zero")]
    pub running: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Summary {
    /// Counts the final status of each stage.
    pub fn of(statuses: impl IntoIterator<Item = StageStatus>) -> Summary {
        let mut s = Summary::default();
        for st in statuses {
            s.total += 1;
            match st {
                StageStatus::Completed => s.completed += 1,
                StageStatus::Cached => s.cached += 1,
                StageStatus::Failed => s.failed += 1,
                StageStatus::Timeout => s.timeout += 1,
                StageStatus::Cancelled => s.cancelled += 1,
                StageStatus::Skipped => s.skipped += 1,
                StageStatus::AwaitingIntervention => s.awaiting_decision += 1,
                StageStatus::Pending => s.not_started += 1,
                StageStatus::InProgress | StageStatus::Validating => s.running += 1,
            }
        }
        s
    }

    /// Stages that ended well: completed in this run or reused.
    pub fn succeeded(&self) -> usize {
        self.completed + self.cached
    }

    /// The counts in words, the same everywhere they are shown (terminal, log,
    /// events, `pmpo status`): "2 of 3 stages succeeded (1 ran, 1 reused), 1 failed".
    /// Zero counts of the rarer outcomes are left out.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{} of {} stage{} succeeded ({} ran, {} reused)",
            self.succeeded(),
            self.total,
            if self.total == 1 { "" } else { "s" },
            self.completed,
            self.cached
        );
        for (n, what) in [
            (self.failed, "failed"),
            (self.timeout, "timed out"),
            (self.cancelled, "cancelled"),
            (self.skipped, "skipped"),
            (self.awaiting_decision, "awaiting a decision"),
            (self.running, "running"),
            (self.not_started, "not started"),
        ] {
            if n > 0 {
                out.push_str(&format!(", {n} {what}"));
            }
        }
        out
    }
}

/// A blocking constraint of the `validation_plan` that this run did not prove:
/// violated, or its checks could not look (`not_checked`).
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub constraint_id: String,
    pub description: String,
    /// `violated` or `not_checked`.
    pub status: ConstraintStatus,
    /// Each check that names the constraint and did not pass, with what it found.
    pub checks: Vec<ViolationCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ViolationCheck {
    pub check: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    pub status: ValidationStatus,
    pub message: String,
}

/// `artifact_manifest.json` (compatible with the reference manifest schema).
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub artifact_name: String,
    pub artifact_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub run_id: String,
    pub status: RunStatus,
    pub variants: Vec<Variant>,
    pub files: Vec<ManifestFile>,
    /// Pixel sizes of rasterized images (from `rasterize` stages).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sizes: Vec<u64>,
    /// `{required, runs}`: the `preview_run` outputs of `preview` stages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<Value>,
    /// `{preview_status, has_console_errors, has_request_failures, notes}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<Value>,
    pub generated_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: String,
    pub files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub blake3: String,
    pub stage: String,
}

/// Everything the Execute phase reports (`.state/execution_results.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionResults {
    pub schema_version: u32,
    pub run_id: String,
    pub plan: String,
    pub plan_blake3: String,
    pub artifact_name: String,
    /// A [`RunStatus`]: `completed`, `failed`, `incomplete`, `cancelled`,
    /// `awaiting_intervention` or `paused`.
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: f64,
    /// Of which: the tools releasing what they kept for the run (closing the browser).
    pub teardown_ms: f64,
    pub summary: Summary,
    pub stages: Vec<StageResult>,
    pub generated_files: Vec<GeneratedFile>,
    pub manifest: Manifest,
    /// The run's entry in `refinement_log.md`.
    pub logs: String,
    pub log_files: Vec<String>,
    pub validation_outputs: Vec<ValidationOutput>,
    /// Blocking constraints this run did not prove. They fail the run unless
    /// `--allow-violations` (`allowed_violations` then says so).
    pub violations: Vec<Violation>,
    /// Whether violations were allowed (reported, not failing the run).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allowed_violations: bool,
    pub errors: Vec<ErrorEntry>,
    /// How this run's stages were confined: `landlock ABI N`, `detection`
    /// or `off` (`--no-sandbox`); a stage's own mode is in its result.
    pub sandbox: String,
    /// Things the user should know (a fallback was used, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub state_updates: Map<String, Value>,
}

impl ExecutionResults {
    pub fn succeeded(&self) -> bool {
        self.status == RunStatus::Completed
    }
}

/// Builds the manifest from the files of completed stages, and of stages
/// whose earlier identical result was reused (their files are verified on
/// disk, and they are part of the artifact all the same).
fn produced(s: &StageResult) -> bool {
    matches!(s.status, StageStatus::Completed | StageStatus::Cached)
}

pub fn build_manifest(
    spec: &pmpo_plan::Specification,
    run_id: &str,
    status: RunStatus,
    stages: &[StageResult],
    generated_at: String,
) -> Manifest {
    let mut variants = Vec::new();
    let mut files = Vec::new();
    for s in stages.iter().filter(|s| produced(s) && !s.files.is_empty()) {
        let paths: Vec<String> = s.files.iter().map(|f| f.path.clone()).collect();
        let ext = |p: &str| p.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        let first = ext(&paths[0]);
        let format = if paths.iter().all(|p| ext(p) == first) {
            first
        } else {
            None
        };
        variants.push(Variant {
            name: s.id.clone(),
            files: paths,
            format,
            description: s.description.clone(),
        });
        files.extend(s.files.iter().map(|f| ManifestFile {
            path: f.path.clone(),
            size: f.size,
            blake3: f.blake3.clone(),
            stage: f.stage.clone(),
        }));
    }
    let (preview, validation) = pmpo_tools::preview::manifest_summary(
        stages.iter().filter_map(|s| s.outputs.get("preview_run")),
    );
    let sizes = stages
        .iter()
        .filter(|s| produced(s) && s.tool == "rasterize")
        .filter_map(|s| s.outputs.get("sizes").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    Manifest {
        artifact_name: spec.artifact_name.clone(),
        artifact_type: spec.artifact_type.clone(),
        content_type: spec.content_type.clone(),
        run_id: run_id.to_string(),
        status,
        variants,
        files,
        sizes,
        preview,
        validation,
        generated_at,
    }
}
