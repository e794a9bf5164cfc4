//! The loop's own records and where they live: its section of `state.json`
//! (settings, progress, the approval gate), `specification.json`, the plan
//! and reflection of each iteration, and how they are read and written.

use pmpo_plan::{Specification, ValidationItem};
use pmpo_store::Workspace;
use pmpo_store::artifacts::{RefinementState, artifact_dir};
use pmpo_store::states::ApprovalStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::controller::{Approval, LoopError};
use crate::reflect::DecisionRecord;

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

/// Where the approval gate of an iteration stands (spelt as `state.json`
/// keeps it: `pending`, `continue`, `terminate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    Pending,
    Continue,
    Terminate,
}

impl GateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GateStatus::Pending => "pending",
            GateStatus::Continue => "continue",
            GateStatus::Terminate => "terminate",
        }
    }
}

impl std::fmt::Display for GateStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<Approval> for GateStatus {
    fn from(answer: Approval) -> GateStatus {
        match answer {
            Approval::Continue => GateStatus::Continue,
            Approval::Terminate => GateStatus::Terminate,
        }
    }
}

/// The shared approval vocabulary: going on is approving the iteration,
/// terminating is rejecting it.
impl From<GateStatus> for ApprovalStatus {
    fn from(gate: GateStatus) -> ApprovalStatus {
        match gate {
            GateStatus::Pending => ApprovalStatus::Pending,
            GateStatus::Continue => ApprovalStatus::Approved,
            GateStatus::Terminate => ApprovalStatus::Rejected,
        }
    }
}

/// The approval gate of one iteration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApprovalRecord {
    pub iteration: u64,
    pub status: GateStatus,
    pub requested_at: String,
    #[serde(default)]
    pub answered_at: Option<String>,
    #[serde(default)]
    pub answered_by: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

impl ApprovalRecord {
    /// The gate of `iteration`, asked now and not answered yet.
    pub fn pending(iteration: u64) -> ApprovalRecord {
        ApprovalRecord {
            iteration,
            status: GateStatus::Pending,
            requested_at: pmpo_store::now_rfc3339(),
            answered_at: None,
            answered_by: None,
            note: None,
        }
    }
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

pub(crate) fn store_loop(state: &mut RefinementState, ls: &LoopState) {
    state.extra.insert(
        "loop".into(),
        serde_json::to_value(ls).unwrap_or(Value::Null),
    );
}

pub(crate) fn spec_path(name: &str) -> String {
    format!("{}/specification.json", artifact_dir(name))
}
pub(crate) fn plan_path(name: &str, iteration: u64) -> String {
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

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(
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
pub(crate) fn write_json(
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
