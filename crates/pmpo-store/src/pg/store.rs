//! The execution store in PostgreSQL: the [`ExecStore`] of a workspace shared
//! by several machines, with the SQLite store's tables and guarantees.
//!
//! Writes go into the connection's open transaction and become durable at
//! [`ExecStore::flush`] (the engine flushes before it starts any process, as
//! with SQLite); reads see the transaction's own writes. Every write is
//! idempotent (an upsert, or an insert of an id pmpo chose that ignores a
//! key already there), because the connection replays the open transaction
//! on a new connection after the server went away.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use super::conn::{PgConn, PgError, Val, default_patience};
use super::rows::*;
use super::schema;
use crate::db::{
    AdapterRow, AttemptRow, CacheRow, DbError, EventRow, ExecStore, PatchRow, RunRow, StampRow,
    TaskRow,
};
use crate::states::{PatchState, RunStatus};

/// A new row id for `patch_history`, `execution_log` and `events`: the
/// microseconds since the epoch times 1000 plus a per-process number, always
/// above the last one this process made (so id order is time order, and a
/// replayed insert writes the same id).
pub fn new_id() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    // Two processes in the same microsecond differ by their process ids.
    let candidate = micros * 1000 + i64::from(std::process::id() % 1000);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let id = candidate.max(last + 1);
        match LAST.compare_exchange_weak(last, id, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return id,
            Err(now) => last = now,
        }
    }
}

/// The PostgreSQL execution store.
pub struct PgStore {
    conn: PgConn,
    /// The server went away for longer than the patience: dropping the
    /// store does not wait for it a second time.
    gone: bool,
}

impl PgStore {
    /// Connects, creates or checks the tables, and checks that the database
    /// serves the workspace at `root` (its marker; the first opener records it).
    pub fn open(url: &str, root: &Path) -> Result<PgStore, DbError> {
        let conn = PgConn::connect(url, default_patience())?;
        schema::migrate(&conn)?;
        schema::claim_workspace(&conn, root)?;
        Ok(PgStore { conn, gone: false })
    }

    /// The connection (for the parts that share it: doctor, tests).
    pub fn conn(&self) -> &PgConn {
        &self.conn
    }

    fn exec(&mut self, sql: &str, params: Vec<Val>) -> Result<u64, DbError> {
        let done = self.conn.write(sql, params);
        Ok(self.noted(done)?)
    }

    /// Passes a result on, noting a server that is gone for good.
    fn noted<T>(&mut self, r: Result<T, PgError>) -> Result<T, PgError> {
        if let Err(PgError::Gone { .. }) = &r {
            self.gone = true;
        }
        r
    }

    fn rows<T>(
        &mut self,
        sql: &str,
        params: Vec<Val>,
        table: &'static str,
        names: &'static str,
        read: impl Fn(&Cols<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let rows = self.conn.query(sql, params);
        let rows = self.noted(rows)?;
        let server = self.conn.server();
        rows.iter()
            .map(|r| read(&Cols::new(r, table, names, server)))
            .collect()
    }
}

fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INSERT ... ON CONFLICT (key) DO UPDATE SET` every other column: the
/// SQLite store's `INSERT OR REPLACE`, idempotent.
fn upsert(table: &str, cols: &str, key: &str) -> String {
    let keys: Vec<&str> = key.split(',').map(str::trim).collect();
    let sets: Vec<String> = cols
        .split(',')
        .map(str::trim)
        .filter(|c| !keys.contains(c))
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} ({cols}) VALUES ({}) ON CONFLICT ({key}) DO UPDATE SET {}",
        placeholders(cols.split(',').count()),
        sets.join(", ")
    )
}

impl ExecStore for PgStore {
    fn begin_run(&mut self, run: &RunRow) -> Result<(), DbError> {
        self.exec(
            &upsert("runs", RUN_COLS, "run_id"),
            vec![
                run.run_id.as_str().into(),
                run.plan.as_str().into(),
                run.plan_blake3.as_str().into(),
                run.status.as_str().into(),
                run.started_at.as_str().into(),
                run.finished_at.as_deref().into(),
                run.pid.into(),
                run.stages.into(),
                run.heartbeat_at.as_deref().into(),
            ],
        )?;
        Ok(())
    }

    fn set_run_status(
        &mut self,
        run_id: &str,
        status: RunStatus,
        finished_at: Option<&str>,
        pid: i64,
    ) -> Result<(), DbError> {
        self.exec(
            "UPDATE runs SET status = $2, finished_at = $3, pid = $4 WHERE run_id = $1",
            vec![
                run_id.into(),
                status.as_str().into(),
                finished_at.into(),
                pid.into(),
            ],
        )?;
        Ok(())
    }

    fn run(&mut self, run_id: &str) -> Result<Option<RunRow>, DbError> {
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE run_id = $1");
        Ok(self
            .rows(&sql, vec![run_id.into()], "runs", RUN_COLS, run_row)?
            .into_iter()
            .next())
    }

    fn runs(&mut self, limit: usize) -> Result<Vec<RunRow>, DbError> {
        let sql =
            format!("SELECT {RUN_COLS} FROM runs ORDER BY started_at DESC, run_id DESC LIMIT $1");
        self.rows(&sql, vec![(limit as i64).into()], "runs", RUN_COLS, run_row)
    }

    fn interrupted_run(&mut self, plan: &str) -> Result<Option<RunRow>, DbError> {
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs WHERE plan = $1 AND status IN ($2, $3, $4) ORDER BY started_at DESC, run_id DESC LIMIT 1"
        );
        let params = vec![
            plan.into(),
            RunStatus::Running.as_str().into(),
            RunStatus::Paused.as_str().into(),
            RunStatus::AwaitingIntervention.as_str().into(),
        ];
        Ok(self
            .rows(&sql, params, "runs", RUN_COLS, run_row)?
            .into_iter()
            .next())
    }

    fn tasks(&mut self, run_id: &str) -> Result<Vec<TaskRow>, DbError> {
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE run_id = $1 ORDER BY position");
        self.rows(&sql, vec![run_id.into()], "tasks", TASK_COLS, task_row)
    }

    fn put_task(&mut self, t: &TaskRow) -> Result<(), DbError> {
        let params = vec![
            t.run_id.as_str().into(),
            t.stage_id.as_str().into(),
            t.position.into(),
            t.status.as_str().into(),
            t.tool.as_str().into(),
            t.def_hash.as_str().into(),
            t.cache_key.as_deref().into(),
            t.reason.as_deref().into(),
            t.started_at.as_deref().into(),
            t.finished_at.as_deref().into(),
            t.duration_ms.into(),
            t.exit_code.into(),
            t.signal.into(),
            t.attempts.into(),
            t.outputs.as_str().into(),
            t.files.as_str().into(),
            t.data.as_str().into(),
        ];
        self.exec(&upsert("tasks", TASK_COLS, "run_id, stage_id"), params)?;
        Ok(())
    }

    fn add_attempt(&mut self, a: &AttemptRow) -> Result<(), DbError> {
        let sql = format!(
            "INSERT INTO execution_log (id, {ATTEMPT_COLS}) VALUES ({}) ON CONFLICT (id) DO NOTHING",
            placeholders(14)
        );
        let params = vec![
            new_id().into(),
            a.run_id.as_str().into(),
            a.stage_id.as_str().into(),
            a.attempt.into(),
            a.status.as_str().into(),
            a.started_at.as_str().into(),
            a.finished_at.as_str().into(),
            a.duration_ms.into(),
            a.exit_code.into(),
            a.signal.into(),
            a.error_kind.map(|k| k.as_str()).into(),
            a.error_message.as_deref().into(),
            a.stdout_bytes.into(),
            a.stderr_bytes.into(),
        ];
        self.exec(&sql, params)?;
        Ok(())
    }

    fn add_patch(&mut self, p: &PatchRow) -> Result<i64, DbError> {
        let id = new_id();
        let sql = format!(
            "INSERT INTO patch_history ({PATCH_COLS}) VALUES ({}) ON CONFLICT (id) DO NOTHING",
            placeholders(11)
        );
        let params = vec![
            id.into(),
            p.state.as_str().into(),
            p.time.as_str().into(),
            p.run_id.as_str().into(),
            p.writer.as_str().into(),
            p.path.as_str().into(),
            p.before_blake3.as_deref().into(),
            p.before_size.into(),
            p.after_blake3.as_deref().into(),
            p.after_size.into(),
            p.backed_up.into(),
        ];
        self.exec(&sql, params)?;
        Ok(id)
    }

    fn finish_patch(
        &mut self,
        id: i64,
        after: Option<(&str, i64)>,
        state: PatchState,
        time: &str,
    ) -> Result<(), DbError> {
        self.exec(
            "UPDATE patch_history SET after_blake3 = $2, after_size = $3, state = $4, time = $5 WHERE id = $1",
            vec![
                id.into(),
                after.map(|a| a.0).into(),
                after.map(|a| a.1).into(),
                state.as_str().into(),
                time.into(),
            ],
        )?;
        Ok(())
    }

    fn drop_patch(&mut self, id: i64) -> Result<(), DbError> {
        self.exec("DELETE FROM patch_history WHERE id = $1", vec![id.into()])?;
        Ok(())
    }

    fn pending_patches(&mut self) -> Result<Vec<PatchRow>, DbError> {
        let sql = format!("SELECT {PATCH_COLS} FROM patch_history WHERE state = $1 ORDER BY id");
        let params = vec![PatchState::Pending.as_str().into()];
        self.rows(&sql, params, "patch_history", PATCH_COLS, patch_row)
    }

    fn mark_interrupted(&mut self) -> Result<usize, DbError> {
        let n = self.exec(
            "UPDATE patch_history SET state = $1 WHERE state = $2",
            vec![
                PatchState::Interrupted.as_str().into(),
                PatchState::Pending.as_str().into(),
            ],
        )?;
        Ok(n as usize)
    }

    fn patches(
        &mut self,
        path: Option<&str>,
        run_id: Option<&str>,
    ) -> Result<Vec<PatchRow>, DbError> {
        let sql = format!(
            "SELECT {PATCH_COLS} FROM patch_history WHERE ($1::TEXT IS NULL OR path = $1) AND ($2::TEXT IS NULL OR run_id = $2) ORDER BY id"
        );
        let params = vec![path.into(), run_id.into()];
        self.rows(&sql, params, "patch_history", PATCH_COLS, patch_row)
    }

    fn add_event(&mut self, e: &EventRow) -> Result<(), DbError> {
        self.exec(
            "INSERT INTO events (id, run_id, stage_id, kind, status, timestamp, duration_ms, message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            vec![
                new_id().into(),
                e.run_id.as_str().into(),
                e.stage_id.as_deref().into(),
                e.kind.as_str().into(),
                e.status.as_deref().into(),
                e.timestamp.as_str().into(),
                e.duration_ms.into(),
                e.message.as_deref().into(),
            ],
        )?;
        Ok(())
    }

    fn cache_get(&mut self, key: &str) -> Result<Option<CacheRow>, DbError> {
        let sql = format!("SELECT {CACHE_COLS} FROM cache WHERE cache_key = $1");
        Ok(self
            .rows(&sql, vec![key.into()], "cache", CACHE_COLS, cache_row)?
            .into_iter()
            .next())
    }

    fn cache_put(&mut self, c: &CacheRow) -> Result<(), DbError> {
        let params = vec![
            c.cache_key.as_str().into(),
            c.stage_id.as_str().into(),
            c.run_id.as_str().into(),
            c.created_at.as_str().into(),
            c.outputs.as_str().into(),
            c.files.as_str().into(),
            c.data.as_str().into(),
        ];
        self.exec(&upsert("cache", CACHE_COLS, "cache_key"), params)?;
        Ok(())
    }

    fn stamp(&mut self, path: &str) -> Result<Option<StampRow>, DbError> {
        let sql = format!("SELECT {STAMP_COLS} FROM stamps WHERE path = $1");
        Ok(self
            .rows(&sql, vec![path.into()], "stamps", STAMP_COLS, stamp_row)?
            .into_iter()
            .next())
    }

    fn put_stamp(&mut self, s: &StampRow) -> Result<(), DbError> {
        let params = vec![
            s.path.as_str().into(),
            (s.size as i64).into(),
            s.blake3.as_str().into(),
            (s.dev as i64).into(),
            (s.ino as i64).into(),
            s.mtime_ns.into(),
            s.ctime_ns.into(),
            s.taken_ns.into(),
        ];
        self.exec(&upsert("stamps", STAMP_COLS, "path"), params)?;
        Ok(())
    }

    fn cache_prune(&mut self, keep: &dyn Fn(&CacheRow) -> bool) -> Result<usize, DbError> {
        let sql = format!("SELECT {CACHE_COLS} FROM cache");
        let rows = self.rows(&sql, vec![], "cache", CACHE_COLS, cache_row)?;
        let mut removed = 0;
        for row in rows.iter().filter(|r| !keep(r)) {
            self.exec(
                "DELETE FROM cache WHERE cache_key = $1",
                vec![row.cache_key.as_str().into()],
            )?;
            removed += 1;
        }
        self.flush()?;
        Ok(removed)
    }

    fn touch_adapter(&mut self, adapter_id: &str, kind: &str, now: &str) -> Result<(), DbError> {
        self.exec(
            "INSERT INTO adapters (adapter_id, kind, breaker_state, consecutive_failures, updated_at) VALUES ($1, $2, 'CLOSED', 0, $3) ON CONFLICT (adapter_id) DO UPDATE SET updated_at = EXCLUDED.updated_at",
            vec![adapter_id.into(), kind.into(), now.into()],
        )?;
        Ok(())
    }

    fn adapters(&mut self) -> Result<Vec<AdapterRow>, DbError> {
        let sql = format!("SELECT {ADAPTER_COLS} FROM adapters ORDER BY adapter_id");
        self.rows(&sql, vec![], "adapters", ADAPTER_COLS, adapter_row)
    }

    fn adapter(&mut self, adapter_id: &str) -> Result<Option<AdapterRow>, DbError> {
        let sql = format!("SELECT {ADAPTER_COLS} FROM adapters WHERE adapter_id = $1");
        Ok(self
            .rows(
                &sql,
                vec![adapter_id.into()],
                "adapters",
                ADAPTER_COLS,
                adapter_row,
            )?
            .into_iter()
            .next())
    }

    fn put_adapter(&mut self, a: &AdapterRow) -> Result<(), DbError> {
        let params = vec![
            a.adapter_id.as_str().into(),
            a.kind.as_str().into(),
            a.breaker_state.as_str().into(),
            a.consecutive_failures.into(),
            a.opened_until.as_deref().into(),
            a.last_error.as_deref().into(),
            a.updated_at.as_str().into(),
        ];
        self.exec(&upsert("adapters", ADAPTER_COLS, "adapter_id"), params)?;
        Ok(())
    }

    fn attempts(&mut self, run_id: Option<&str>) -> Result<Vec<AttemptRow>, DbError> {
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM execution_log WHERE ($1::TEXT IS NULL OR run_id = $1) ORDER BY id"
        );
        self.rows(
            &sql,
            vec![run_id.into()],
            "execution_log",
            ATTEMPT_COLS,
            attempt_row,
        )
    }

    fn heartbeat(&mut self, run_id: &str, at: &str) -> Result<(), DbError> {
        self.exec(
            "UPDATE runs SET heartbeat_at = $2 WHERE run_id = $1",
            vec![run_id.into(), at.into()],
        )?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DbError> {
        let done = self.conn.commit();
        Ok(self.noted(done)?)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if !self.gone {
            let _ = self.conn.commit();
        }
    }
}
