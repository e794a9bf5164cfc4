//! The stage loop: resume, cache, run, verify, record. One module per job:
//! [`schedule`] (the run, which stage next), [`prepare`] (skip, reuse or
//! inputs), [`stage`] (one stage's attempts, as the recovery policy says),
//! [`attempt`] and [`call`] (one judged call of a tool), [`record`] (the
//! stage log, the ledger, the store).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use pmpo_plan::{OnFailure, Reference, Stage, execution_order, reference::visit_references};
use pmpo_store::db::{AttemptRow, CacheRow, EventRow, ExecStore, PatchRow, RunRow, TaskRow};
use pmpo_store::lock::{self, LockHolder};
use pmpo_store::{Durability, FileDigest, Workspace, now_rfc3339};
use pmpo_tools::{Captured, Termination, ToolContext, ToolOutcome};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use pmpo_store::states::{FailureKind, ValidationStatus};

use crate::events::{Event, EventSink, Retry, Reused, StageStatus, What};
use crate::outputs::{self, Change, GeneratedFile};
use crate::recovery;
use crate::resolve::{StageData, resolve_inputs};
use crate::results::{ErrorEntry, RunStatus, StageResult, ValidationOutput};
use crate::{
    CheckedPlan, Decision, EVENTS_LOG, Engine, EngineError, ExecuteOptions, ExecutionResults,
    Force, HEARTBEAT_EVERY, Intervention, persist,
};

mod attempt;
mod call;
mod prepare;
mod record;
pub mod remote;
mod schedule;
mod stage;

use attempt::*;
use call::*;
use prepare::*;
use record::*;
pub use schedule::kill_leftovers;
pub(crate) use schedule::run;
use stage::run_one;

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Whether a stage's row says it awaits a person's decision.
fn awaits(t: &TaskRow) -> bool {
    t.status == StageStatus::AwaitingIntervention
}

/// Whether a stage's row says it completed (or was reused).
fn succeeded(t: &TaskRow) -> bool {
    t.status.is_success()
}

/// What a finished (or reused) stage leaves for the stages after it.
#[derive(Default, Clone)]
pub(super) struct Done {
    pub(super) status: Option<StageStatus>,
    pub(super) files: Vec<(String, String)>,
}

/// What every stage of a run reads.
struct Cx<'a> {
    engine: &'a Engine,
    plan: &'a CheckedPlan,
    opts: &'a ExecuteOptions,
    ws: &'a Workspace,
    run_id: &'a str,
    prior: &'a HashMap<String, TaskRow>,
    wanted: &'a HashSet<(String, String)>,
    /// Which stages own which files (the evidence rule of stages' checks).
    outputs: &'a crate::validation::OutputIndex,
}

/// What stages running at the same time share. Borrowed only between awaits.
struct Shared<'a> {
    rec: Recorder<'a>,
    results: Vec<Option<StageResult>>,
    done: HashMap<String, Done>,
    data: HashMap<String, StageData>,
    errors: Vec<ErrorEntry>,
    validations: Vec<ValidationOutput>,
    /// The failed stage earliest in the reference order: (position, id). Under
    /// fail-fast, stages after it do not start; the ones before it still do, and
    /// running stages finish.
    first_failure: Option<(usize, String)>,
    cancelled: bool,
    patched: bool,
    /// Where a person aborted the run: stages after it (reference order) do not start.
    aborted_at: Option<usize>,
    /// Why the run pauses, and the position of the stage earliest in the reference
    /// order that waits.
    paused: Option<(RunStatus, usize)>,
    notices: Vec<String>,
}

/// Where a skipped stage stands.
struct Skip<'a> {
    idx: usize,
    pos: usize,
    at: Option<(&'a str, usize)>,
    def_hash: &'a str,
    cache_key: Option<&'a str>,
    attempts: i64,
    duration: Option<Duration>,
}

impl Shared<'_> {
    /// Records a stage as SKIPPED with its reason (dependents are skipped in turn).
    fn record_skip(
        &mut self,
        run_id: &str,
        mut result: StageResult,
        skip: Skip<'_>,
        reason: String,
    ) -> Result<(), EngineError> {
        result.status = StageStatus::Skipped;
        result.reason = Some(reason.clone());
        result.duration_ms = skip.duration.map_or(0.0, ms);
        self.rec.db.put_task(&task_row(
            run_id,
            skip.pos,
            &result,
            skip.def_hash,
            skip.cache_key,
            "{}",
            skip.attempts,
        ))?;
        self.rec.emit(
            What::TaskSkipped { reason },
            skip.at,
            Some(StageStatus::Skipped),
            skip.duration,
        )?;
        self.record_done(skip.idx, result);
        self.rec.db.flush()?;
        Ok(())
    }

    /// A stage's final result: what its dependents see, and its place in the results.
    fn record_done(&mut self, idx: usize, result: StageResult) {
        let mut result = result;
        result.log = match (&result.reused_from, result.status) {
            (Some(run), StageStatus::Cached) => Some(crate::stage_log(run)),
            _ if result.attempts > 0 => Some(crate::stage_log(&self.rec.run_id)),
            _ => None,
        };
        let files = result
            .files
            .iter()
            .map(|f| (f.path.clone(), f.blake3.clone()))
            .collect();
        // Optional work its tool skipped (a preview with no browser) does not
        // hold back the stages that depend on it.
        let status = if result.optional_skip {
            StageStatus::Completed
        } else {
            result.status
        };
        self.done.insert(
            result.id.clone(),
            Done {
                status: Some(status),
                files,
            },
        );
        self.results[idx] = Some(result);
    }
}
