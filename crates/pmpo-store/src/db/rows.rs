//! The rows of the execution store, and how each is read from SQL.

use serde::{Deserialize, Serialize};

use std::str::FromStr;

use rusqlite::types::Type;

use crate::states::{FailureKind, PatchState, RunStatus, StageStatus, UnknownState};

/// One run of a plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRow {
    pub run_id: String,
    pub plan: String,
    pub plan_blake3: String,
    /// How the run stands (`running` while it runs, or how it ended).
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub pid: i64,
    pub stages: i64,
    /// Last sign of life of the executing process.
    #[serde(default)]
    pub heartbeat_at: Option<String>,
}

/// The latest state of one stage in one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRow {
    pub run_id: String,
    pub stage_id: String,
    pub position: i64,
    pub status: StageStatus,
    pub tool: String,
    pub def_hash: String,
    pub cache_key: Option<String>,
    pub reason: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: f64,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub attempts: i64,
    /// Named outputs (JSON object).
    pub outputs: String,
    /// Files found under the declared outputs (JSON list).
    pub files: String,
    /// What later stages may read (JSON object), for resume.
    pub data: String,
}

/// One attempt of one stage (`execution_log`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRow {
    pub run_id: String,
    pub stage_id: String,
    pub attempt: i64,
    /// How the attempt ended (the stage's state had it been the last one).
    pub status: StageStatus,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: f64,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub error_kind: Option<FailureKind>,
    pub error_message: Option<String>,
    pub stdout_bytes: i64,
    pub stderr_bytes: i64,
}

// The ledger's states are `PatchState`; these names are kept for the callers
// outside the store that still spell them so (new code names `PatchState`).

/// [`PatchState::Pending`]: an intent, written (and committed) before the
/// writer may change the file; its after-digest is not known yet. A pending
/// entry whose run is no longer running was interrupted.
pub const PATCH_PENDING: PatchState = PatchState::Pending;
/// [`PatchState::Interrupted`]: an intent whose writer was stopped before it
/// completed it (its run was killed): set by the next pmpo that holds the
/// workspace lock.
pub const PATCH_INTERRUPTED: PatchState = PatchState::Interrupted;
/// [`PatchState::Completed`]: the change is done and its after-digest recorded.
pub const PATCH_COMPLETED: PatchState = PatchState::Completed;
/// [`PatchState::Failed`]: the change was made by an attempt that failed
/// (timed out, was cancelled): recorded like a completed one, so it can be undone.
pub const PATCH_FAILED: PatchState = PatchState::Failed;
/// [`PatchState::Undeclared`]: a stage changed a file outside its declared
/// outputs (found by the sandbox's detection): recorded, but pmpo had no copy
/// from before.
pub const PATCH_UNDECLARED: PatchState = PatchState::Undeclared;

/// Whether an entry's change may be half done (its after-digest is unknown):
/// pending or interrupted. Takes the typed state or its spelling.
pub fn is_open_intent(state: &(impl AsRef<str> + ?Sized)) -> bool {
    PatchState::parse(state.as_ref()).is_some_and(PatchState::is_unsettled)
}

impl AsRef<str> for PatchState {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// A file pmpo or a stage created or overwrote (`patch_history`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchRow {
    /// The row's number in the ledger (0 before it is stored).
    #[serde(default)]
    pub id: i64,
    /// Whether the change is intended, done, or failed (an older ledger
    /// line without a state was written after its change: completed).
    #[serde(default = "completed_state")]
    pub state: PatchState,
    pub time: String,
    pub run_id: String,
    /// The stage, or `pmpo` for the engine's own files, or `restore`.
    pub writer: String,
    pub path: String,
    pub before_blake3: Option<String>,
    pub before_size: Option<i64>,
    pub after_blake3: Option<String>,
    pub after_size: Option<i64>,
    /// Whether the before-content is in the backup store.
    pub backed_up: bool,
}

fn completed_state() -> PatchState {
    PatchState::Completed
}

impl PatchRow {
    /// A new entry by `writer` for `path` in `run_id` (the digests still to fill in).
    pub fn new(state: PatchState, run_id: &str, writer: &str, path: &str) -> PatchRow {
        PatchRow {
            id: 0,
            state,
            time: crate::now_rfc3339(),
            run_id: run_id.to_string(),
            writer: writer.to_string(),
            path: path.to_string(),
            before_blake3: None,
            before_size: None,
            after_blake3: None,
            after_size: None,
            backed_up: false,
        }
    }

    /// Sets the before-content (and whether it is in the backup store).
    pub fn before(mut self, d: Option<&crate::FileDigest>, backed_up: bool) -> PatchRow {
        self.before_blake3 = d.map(|d| d.blake3.clone());
        self.before_size = d.map(|d| d.size as i64);
        self.backed_up = backed_up && d.is_some();
        self
    }

    /// Sets the after-content (`None`: the file is gone).
    pub fn after(mut self, d: Option<&crate::FileDigest>) -> PatchRow {
        self.after_blake3 = d.map(|d| d.blake3.clone());
        self.after_size = d.map(|d| d.size as i64);
        self
    }
}

/// An event as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRow {
    pub run_id: String,
    pub stage_id: Option<String>,
    pub kind: String,
    pub status: Option<String>,
    pub timestamp: String,
    pub duration_ms: Option<f64>,
    pub message: Option<String>,
}

/// A successful stage result that an identical stage may reuse.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheRow {
    pub cache_key: String,
    pub stage_id: String,
    pub run_id: String,
    pub created_at: String,
    pub outputs: String,
    pub files: String,
    pub data: String,
}

/// An adapter (a tool, plugin or model endpoint) and its breaker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterRow {
    pub adapter_id: String,
    pub kind: String,
    pub breaker_state: String,
    pub consecutive_failures: i64,
    pub opened_until: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: String,
}

pub(super) fn patch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PatchRow> {
    Ok(PatchRow {
        id: r.get(0)?,
        state: r.get(1)?,
        time: r.get(2)?,
        run_id: r.get(3)?,
        writer: r.get(4)?,
        path: r.get(5)?,
        before_blake3: r.get(6)?,
        before_size: r.get(7)?,
        after_blake3: r.get(8)?,
        after_size: r.get(9)?,
        backed_up: r.get(10)?,
    })
}

/// A state column that holds no known state (a database written by a newer or
/// a damaged pmpo): the read fails with an error naming the table, the row and
/// the column, never with a panic and never by guessing a state.
#[derive(Debug, thiserror::Error)]
#[error("{table} row `{row}`, column `{column}`: {source}")]
pub struct BadState {
    pub table: &'static str,
    pub row: String,
    pub column: String,
    #[source]
    pub source: UnknownState,
}

/// Reads the state in column `idx` (`None` when the column is NULL) of the
/// row of `table` named by `row` (its key, read only when the state is bad).
fn state<T: FromStr<Err = UnknownState>>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    table: &'static str,
    row: impl FnOnce() -> String,
) -> rusqlite::Result<Option<T>> {
    let Some(text) = r.get::<_, Option<String>>(idx)? else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|source| {
        let column = r.as_ref().column_name(idx).unwrap_or("?").to_string();
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            Type::Text,
            Box::new(BadState {
                table,
                row: row(),
                column,
                source,
            }),
        )
    })
}

/// Reads a state column that may not be NULL.
fn required<T: FromStr<Err = UnknownState>>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    table: &'static str,
    row: impl FnOnce() -> String,
) -> rusqlite::Result<T> {
    state(r, idx, table, row)?.ok_or(rusqlite::Error::InvalidColumnType(
        idx,
        "status".into(),
        Type::Null,
    ))
}

/// The key of a row, for an error about it: its leading text columns.
fn key(r: &rusqlite::Row<'_>, n: usize) -> String {
    (0..n)
        .map(|i| r.get::<_, String>(i).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("/")
}

pub(super) fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run_id: r.get(0)?,
        plan: r.get(1)?,
        plan_blake3: r.get(2)?,
        status: required(r, 3, "runs", || key(r, 1))?,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        pid: r.get(6)?,
        stages: r.get(7)?,
        heartbeat_at: r.get(8)?,
    })
}

pub(super) const RUN_COLS: &str =
    "run_id, plan, plan_blake3, status, started_at, finished_at, pid, stages, heartbeat_at";

pub(super) fn cache_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CacheRow> {
    Ok(CacheRow {
        cache_key: r.get(0)?,
        stage_id: r.get(1)?,
        run_id: r.get(2)?,
        created_at: r.get(3)?,
        outputs: r.get(4)?,
        files: r.get(5)?,
        data: r.get(6)?,
    })
}

pub(super) const PATCH_COLS: &str = "id, state, time, run_id, writer, path, before_blake3, before_size, after_blake3, after_size, backed_up";

pub(super) const ADAPTER_COLS: &str =
    "adapter_id, kind, breaker_state, consecutive_failures, opened_until, last_error, updated_at";

pub(super) fn adapter_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdapterRow> {
    Ok(AdapterRow {
        adapter_id: r.get(0)?,
        kind: r.get(1)?,
        breaker_state: r.get(2)?,
        consecutive_failures: r.get(3)?,
        opened_until: r.get(4)?,
        last_error: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

pub(super) const ATTEMPT_COLS: &str = "run_id, stage_id, attempt, status, started_at, finished_at, duration_ms, exit_code, signal, error_kind, error_message, stdout_bytes, stderr_bytes";

pub(super) fn attempt_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AttemptRow> {
    Ok(AttemptRow {
        run_id: r.get(0)?,
        stage_id: r.get(1)?,
        attempt: r.get(2)?,
        status: required(r, 3, "execution_log", || attempt_key(r))?,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        duration_ms: r.get(6)?,
        exit_code: r.get(7)?,
        signal: r.get(8)?,
        error_kind: state(r, 9, "execution_log", || attempt_key(r))?,
        error_message: r.get(10)?,
        stdout_bytes: r.get(11)?,
        stderr_bytes: r.get(12)?,
    })
}

fn attempt_key(r: &rusqlite::Row<'_>) -> String {
    format!("{}#{}", key(r, 2), r.get::<_, i64>(2).unwrap_or_default())
}

pub(super) const TASK_COLS: &str = "run_id, stage_id, position, status, tool, def_hash, cache_key, reason, started_at, finished_at, duration_ms, exit_code, signal, attempts, outputs, files, data";

pub(super) fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        run_id: r.get(0)?,
        stage_id: r.get(1)?,
        position: r.get(2)?,
        status: required(r, 3, "tasks", || key(r, 2))?,
        tool: r.get(4)?,
        def_hash: r.get(5)?,
        cache_key: r.get(6)?,
        reason: r.get(7)?,
        started_at: r.get(8)?,
        finished_at: r.get(9)?,
        duration_ms: r.get(10)?,
        exit_code: r.get(11)?,
        signal: r.get(12)?,
        attempts: r.get(13)?,
        outputs: r.get(14)?,
        files: r.get(15)?,
        data: r.get(16)?,
    })
}

pub(super) const STAMP_COLS: &str = "path, size, blake3, dev, ino, mtime_ns, ctime_ns, taken_ns";

pub(super) fn stamp_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<super::StampRow> {
    Ok(super::StampRow {
        path: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
        blake3: r.get(2)?,
        dev: r.get::<_, i64>(3)? as u64,
        ino: r.get::<_, i64>(4)? as u64,
        mtime_ns: r.get(5)?,
        ctime_ns: r.get(6)?,
        taken_ns: r.get(7)?,
    })
}
