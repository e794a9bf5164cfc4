//! Reading the store's rows from PostgreSQL's answers: each column by its
//! place, with an error naming the table, the row and the column when a value
//! is missing or a state is not one pmpo knows (never a panic, never a guess).

use std::str::FromStr;

use super::conn::{PgError, Row, Val};
use crate::db::{
    AdapterRow, AttemptRow, BadState, CacheRow, DbError, PatchRow, RunRow, StampRow, TaskRow,
};
use crate::states::UnknownState;

/// One row being read: its values, its table, and the server for errors.
pub(super) struct Cols<'a> {
    row: &'a Row,
    table: &'static str,
    server: &'a str,
    names: &'static str,
}

impl<'a> Cols<'a> {
    pub(super) fn new(
        row: &'a Row,
        table: &'static str,
        names: &'static str,
        server: &'a str,
    ) -> Self {
        Cols {
            row,
            table,
            server,
            names,
        }
    }

    fn column(&self, i: usize) -> String {
        self.names
            .split(',')
            .nth(i)
            .map_or_else(|| format!("#{i}"), |n| n.trim().to_string())
    }

    fn key(&self, n: usize) -> String {
        (0..n)
            .map(|i| self.val(i).text().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("/")
    }

    fn error(&self, detail: String) -> DbError {
        DbError::Pg(PgError::Sql {
            server: self.server.to_string(),
            code: None,
            detail,
        })
    }

    fn val(&self, i: usize) -> &Val {
        static NULL: Val = Val::Text(None);
        self.row.get(i).unwrap_or(&NULL)
    }

    fn missing(&self, i: usize) -> DbError {
        self.error(format!(
            "{} row `{}`, column `{}`: no value",
            self.table,
            self.key(1),
            self.column(i)
        ))
    }

    pub(super) fn opt_text(&self, i: usize) -> Option<String> {
        self.val(i).text()
    }
    pub(super) fn text(&self, i: usize) -> Result<String, DbError> {
        self.opt_text(i).ok_or_else(|| self.missing(i))
    }
    pub(super) fn opt_int(&self, i: usize) -> Option<i64> {
        self.val(i).int()
    }
    pub(super) fn int(&self, i: usize) -> Result<i64, DbError> {
        self.opt_int(i).ok_or_else(|| self.missing(i))
    }
    pub(super) fn opt_real(&self, i: usize) -> Option<f64> {
        self.val(i).real()
    }
    pub(super) fn real(&self, i: usize) -> Result<f64, DbError> {
        self.opt_real(i).ok_or_else(|| self.missing(i))
    }
    pub(super) fn boolean(&self, i: usize) -> Result<bool, DbError> {
        self.val(i).boolean().ok_or_else(|| self.missing(i))
    }

    /// A state column (`None` when NULL); `key` is the row's name for errors.
    pub(super) fn opt_state<T: FromStr<Err = UnknownState>>(
        &self,
        i: usize,
        key: impl FnOnce() -> String,
    ) -> Result<Option<T>, DbError> {
        let Some(text) = self.opt_text(i) else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|source| {
            self.error(
                BadState {
                    table: self.table,
                    row: key(),
                    column: self.column(i),
                    source,
                }
                .to_string(),
            )
        })
    }

    pub(super) fn state<T: FromStr<Err = UnknownState>>(
        &self,
        i: usize,
        key: impl FnOnce() -> String,
    ) -> Result<T, DbError> {
        self.opt_state(i, key)?.ok_or_else(|| self.missing(i))
    }
}

pub(super) const RUN_COLS: &str =
    "run_id, plan, plan_blake3, status, started_at, finished_at, pid, stages, heartbeat_at";

pub(super) fn run_row(c: &Cols<'_>) -> Result<RunRow, DbError> {
    Ok(RunRow {
        run_id: c.text(0)?,
        plan: c.text(1)?,
        plan_blake3: c.text(2)?,
        status: c.state(3, || c.key(1))?,
        started_at: c.text(4)?,
        finished_at: c.opt_text(5),
        pid: c.int(6)?,
        stages: c.int(7)?,
        heartbeat_at: c.opt_text(8),
    })
}

pub(super) const TASK_COLS: &str = "run_id, stage_id, position, status, tool, def_hash, cache_key, reason, started_at, finished_at, duration_ms, exit_code, signal, attempts, outputs, files, data";

pub(super) fn task_row(c: &Cols<'_>) -> Result<TaskRow, DbError> {
    Ok(TaskRow {
        run_id: c.text(0)?,
        stage_id: c.text(1)?,
        position: c.int(2)?,
        status: c.state(3, || c.key(2))?,
        tool: c.text(4)?,
        def_hash: c.text(5)?,
        cache_key: c.opt_text(6),
        reason: c.opt_text(7),
        started_at: c.opt_text(8),
        finished_at: c.opt_text(9),
        duration_ms: c.real(10)?,
        exit_code: c.opt_int(11),
        signal: c.opt_int(12),
        attempts: c.int(13)?,
        outputs: c.text(14)?,
        files: c.text(15)?,
        data: c.text(16)?,
    })
}

pub(super) const ATTEMPT_COLS: &str = "run_id, stage_id, attempt, status, started_at, finished_at, duration_ms, exit_code, signal, error_kind, error_message, stdout_bytes, stderr_bytes";

pub(super) fn attempt_row(c: &Cols<'_>) -> Result<AttemptRow, DbError> {
    let key = || format!("{}#{}", c.key(2), c.opt_int(2).unwrap_or_default());
    Ok(AttemptRow {
        run_id: c.text(0)?,
        stage_id: c.text(1)?,
        attempt: c.int(2)?,
        status: c.state(3, key)?,
        started_at: c.text(4)?,
        finished_at: c.text(5)?,
        duration_ms: c.real(6)?,
        exit_code: c.opt_int(7),
        signal: c.opt_int(8),
        error_kind: c.opt_state(9, key)?,
        error_message: c.opt_text(10),
        stdout_bytes: c.int(11)?,
        stderr_bytes: c.int(12)?,
    })
}

pub(super) const PATCH_COLS: &str = "id, state, time, run_id, writer, path, before_blake3, before_size, after_blake3, after_size, backed_up";

pub(super) fn patch_row(c: &Cols<'_>) -> Result<PatchRow, DbError> {
    Ok(PatchRow {
        id: c.int(0)?,
        state: c.state(1, || c.opt_int(0).unwrap_or_default().to_string())?,
        time: c.text(2)?,
        run_id: c.text(3)?,
        writer: c.text(4)?,
        path: c.text(5)?,
        before_blake3: c.opt_text(6),
        before_size: c.opt_int(7),
        after_blake3: c.opt_text(8),
        after_size: c.opt_int(9),
        backed_up: c.boolean(10)?,
    })
}

pub(super) const CACHE_COLS: &str = "cache_key, stage_id, run_id, created_at, outputs, files, data";

pub(super) fn cache_row(c: &Cols<'_>) -> Result<CacheRow, DbError> {
    Ok(CacheRow {
        cache_key: c.text(0)?,
        stage_id: c.text(1)?,
        run_id: c.text(2)?,
        created_at: c.text(3)?,
        outputs: c.text(4)?,
        files: c.text(5)?,
        data: c.text(6)?,
    })
}

pub(super) const ADAPTER_COLS: &str =
    "adapter_id, kind, breaker_state, consecutive_failures, opened_until, last_error, updated_at";

pub(super) fn adapter_row(c: &Cols<'_>) -> Result<AdapterRow, DbError> {
    Ok(AdapterRow {
        adapter_id: c.text(0)?,
        kind: c.text(1)?,
        breaker_state: c.text(2)?,
        consecutive_failures: c.int(3)?,
        opened_until: c.opt_text(4),
        last_error: c.opt_text(5),
        updated_at: c.text(6)?,
    })
}

pub(super) const STAMP_COLS: &str = "path, size, blake3, dev, ino, mtime_ns, ctime_ns, taken_ns";

/// Device and inode numbers are kept as their 64 bits (a BIGINT).
pub(super) fn stamp_row(c: &Cols<'_>) -> Result<StampRow, DbError> {
    Ok(StampRow {
        path: c.text(0)?,
        size: c.int(1)? as u64,
        blake3: c.text(2)?,
        dev: c.int(3)? as u64,
        ino: c.int(4)? as u64,
        mtime_ns: c.int(5)?,
        ctime_ns: c.int(6)?,
        taken_ns: c.int(7)?,
    })
}
