//! The execution store: runs, tasks (one row per stage per run), attempts,
//! adapters, the patch history, events and the stage cache.
//!
//! SQLite in the workspace (`.state/pmpo.db`, WAL), the default, or a
//! PostgreSQL database shared by several machines ([`crate::pg::PgStore`]),
//! behind the [`ExecStore`] trait (the engine sees only the trait; [`open_store`]
//! picks the back end). Writes are grouped into a transaction that the
//! engine commits with [`ExecStore::flush`] before it starts any process, so
//! everything a finished stage did is durable before the next stage runs.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use crate::states::{PatchState, RunStatus};

mod rows;
pub mod spec;
pub mod stamp;
pub use rows::*;
pub use spec::{STORE_ENV, StoreSpec, store_spec};
pub use stamp::StampRow;

/// Version of the database layout this build reads and writes.
pub const DB_SCHEMA_VERSION: i64 = 3;
/// Where the database lives in a workspace.
pub const DB_FILE: &str = ".state/pmpo.db";

/// Errors from the execution store. Each names the database file.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the execution store `{path}`: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("`{path}` is not a pmpo database or is damaged ({detail})")]
    Corrupt { path: PathBuf, detail: String },
    /// The file system is read-only, or the user may not write there: the
    /// database is intact, only not writable.
    #[error("the execution store `{path}` cannot be written: {detail}")]
    Unwritable { path: PathBuf, detail: String },
    #[error("the execution store `{path}` cannot be written: the disk is full ({detail})")]
    DiskFull { path: PathBuf, detail: String },
    #[error(
        "`{path}` was written by a newer pmpo (database schema {found}, this build reads up to {reads})"
    )]
    /// `path` is the database file, or the PostgreSQL server (no password).
    TooNew {
        path: PathBuf,
        found: i64,
        reads: i64,
    },
    /// The database or one of its side files (`-wal`, `-shm`, `-journal`)
    /// is a symbolic link: never opened through it.
    #[error("the execution store `{path}` is refused: {why}")]
    Link { path: PathBuf, why: String },
    #[error("execution store `{path}`: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The PostgreSQL store (`PMPO_STORE`, `--store`, `[store]` in pmpo.toml).
    #[error(transparent)]
    Pg(#[from] crate::pg::PgError),
    /// A store setting that cannot be read; `origin` says where it is.
    #[error("{origin}: {detail}")]
    Config { origin: String, detail: String },
    /// The PostgreSQL database serves another workspace (its marker differs).
    #[error(
        "the PostgreSQL store at {server} serves the workspace {theirs}, not this one ({ours})"
    )]
    OtherWorkspace {
        server: String,
        theirs: String,
        ours: String,
    },
}

impl DbError {
    /// Whether the store setting is at fault (a bad value, a server that
    /// cannot be reached, a database of another workspace): the command
    /// cannot start, as with a bad argument.
    pub fn is_setting(&self) -> bool {
        matches!(
            self,
            DbError::Config { .. }
                | DbError::OtherWorkspace { .. }
                | DbError::Pg(crate::pg::PgError::Connect { .. })
        )
    }

    /// What the user should do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            DbError::TooNew { .. } => {
                "upgrade pmpo, or run in another workspace; the database was left untouched"
            }
            DbError::Corrupt { .. } => {
                "run `pmpo doctor` to see what is wrong and how to repair it; nothing was changed"
            }
            DbError::Unwritable { .. } => {
                "the workspace is read-only or not yours to write: reading commands (status, ledger, metrics, doctor) still work; run and repair where you can write"
            }
            DbError::DiskFull { .. } => "free some space, then run again; nothing was lost",
            DbError::Link { .. } => {
                "remove the link (pmpo creates a new database); the file it points to was not touched"
            }
            DbError::Pg(e) => e.hint(),
            DbError::OtherWorkspace { .. } => {
                "mount the same shared directory on every machine (one database serves one workspace), or use another database"
            }
            DbError::Config { .. } => {
                "set PMPO_STORE (or --store, or url in the [store] table of pmpo.toml) to `sqlite` or a postgres:// URL"
            }
            _ => "check that the workspace is writable and has free space",
        }
    }
}

/// The execution store's interface; the engine sees only this.
pub trait ExecStore: Send {
    fn begin_run(&mut self, run: &RunRow) -> Result<(), DbError>;
    fn set_run_status(
        &mut self,
        run_id: &str,
        status: RunStatus,
        finished_at: Option<&str>,
        pid: i64,
    ) -> Result<(), DbError>;
    fn run(&mut self, run_id: &str) -> Result<Option<RunRow>, DbError>;
    fn runs(&mut self, limit: usize) -> Result<Vec<RunRow>, DbError>;
    /// The newest run of this plan left `running` (its process died).
    fn interrupted_run(&mut self, plan: &str) -> Result<Option<RunRow>, DbError>;
    fn tasks(&mut self, run_id: &str) -> Result<Vec<TaskRow>, DbError>;
    fn put_task(&mut self, task: &TaskRow) -> Result<(), DbError>;
    fn add_attempt(&mut self, attempt: &AttemptRow) -> Result<(), DbError>;
    /// Adds a ledger entry; returns its id.
    fn add_patch(&mut self, patch: &PatchRow) -> Result<i64, DbError>;
    /// Completes an entry: its after-content (`None`: the file is gone) and state.
    fn finish_patch(
        &mut self,
        id: i64,
        after: Option<(&str, i64)>,
        state: PatchState,
        time: &str,
    ) -> Result<(), DbError>;
    /// Removes an intent that changed nothing.
    fn drop_patch(&mut self, id: i64) -> Result<(), DbError>;
    /// The entries still `pending` (intents not completed), oldest first.
    fn pending_patches(&mut self) -> Result<Vec<PatchRow>, DbError>;
    /// Marks every pending intent interrupted; called under the workspace
    /// lock, when no run is live. Returns how many.
    fn mark_interrupted(&mut self) -> Result<usize, DbError>;
    fn patches(
        &mut self,
        path: Option<&str>,
        run_id: Option<&str>,
    ) -> Result<Vec<PatchRow>, DbError>;
    fn add_event(&mut self, event: &EventRow) -> Result<(), DbError>;
    fn cache_get(&mut self, key: &str) -> Result<Option<CacheRow>, DbError>;
    fn cache_put(&mut self, row: &CacheRow) -> Result<(), DbError>;
    /// The stamp of a workspace file (see [`stamp::digest`]).
    fn stamp(&mut self, path: &str) -> Result<Option<StampRow>, DbError>;
    /// Records (or replaces) the stamp of a workspace file.
    fn put_stamp(&mut self, row: &StampRow) -> Result<(), DbError>;
    /// Removes cache rows; returns how many.
    fn cache_prune(&mut self, keep: &dyn Fn(&CacheRow) -> bool) -> Result<usize, DbError>;
    fn touch_adapter(&mut self, adapter_id: &str, kind: &str, now: &str) -> Result<(), DbError>;
    fn adapters(&mut self) -> Result<Vec<AdapterRow>, DbError>;
    fn adapter(&mut self, adapter_id: &str) -> Result<Option<AdapterRow>, DbError>;
    fn put_adapter(&mut self, row: &AdapterRow) -> Result<(), DbError>;
    /// Attempts of one run, or of every run (for metrics), in order.
    fn attempts(&mut self, run_id: Option<&str>) -> Result<Vec<AttemptRow>, DbError>;
    /// Marks a run as alive now.
    fn heartbeat(&mut self, run_id: &str, at: &str) -> Result<(), DbError>;
    /// Makes everything written so far durable.
    fn flush(&mut self) -> Result<(), DbError>;
}

/// Opens the execution store the workspace at `root` uses (see
/// [`store_spec`]): `.state/pmpo.db`, or the PostgreSQL database (which is
/// then checked to serve this workspace; no database file is created).
pub fn open_store(root: &Path) -> Result<Box<dyn ExecStore>, DbError> {
    Ok(match store_spec(root)? {
        StoreSpec::Sqlite => Box::new(SqliteStore::open(root)?),
        StoreSpec::Postgres(url) => Box::new(crate::pg::PgStore::open(&url, root)?),
    })
}

/// Whether the workspace at `root` may have runs to read: its database file
/// exists, or its store is a PostgreSQL database (asked when opened).
pub fn store_exists(root: &Path) -> Result<bool, DbError> {
    Ok(match store_spec(root)? {
        StoreSpec::Sqlite => root.join(DB_FILE).exists(),
        StoreSpec::Postgres(_) => true,
    })
}

/// The SQLite execution store.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    in_tx: bool,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, plan TEXT NOT NULL, plan_blake3 TEXT NOT NULL, status TEXT NOT NULL,
    started_at TEXT NOT NULL, finished_at TEXT, pid INTEGER NOT NULL, stages INTEGER NOT NULL,
    heartbeat_at TEXT);
CREATE INDEX IF NOT EXISTS runs_by_plan ON runs(plan, started_at);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL, stage_id TEXT NOT NULL, position INTEGER NOT NULL, status TEXT NOT NULL,
    tool TEXT NOT NULL, def_hash TEXT NOT NULL, cache_key TEXT, reason TEXT, started_at TEXT, finished_at TEXT,
    duration_ms REAL NOT NULL, exit_code INTEGER, signal INTEGER, attempts INTEGER NOT NULL,
    outputs TEXT NOT NULL, files TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (run_id, stage_id));
CREATE TABLE IF NOT EXISTS execution_log (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, stage_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT NOT NULL, duration_ms REAL NOT NULL,
    exit_code INTEGER, signal INTEGER, error_kind TEXT, error_message TEXT,
    stdout_bytes INTEGER NOT NULL, stderr_bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS adapters (
    adapter_id TEXT PRIMARY KEY, kind TEXT NOT NULL, breaker_state TEXT NOT NULL,
    consecutive_failures INTEGER NOT NULL, opened_until TEXT, last_error TEXT, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patch_history (
    id INTEGER PRIMARY KEY, time TEXT NOT NULL, run_id TEXT NOT NULL, writer TEXT NOT NULL, path TEXT NOT NULL,
    before_blake3 TEXT, before_size INTEGER, after_blake3 TEXT, after_size INTEGER, backed_up INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'completed');
CREATE INDEX IF NOT EXISTS patch_by_path ON patch_history(path);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, stage_id TEXT, kind TEXT NOT NULL, status TEXT,
    timestamp TEXT NOT NULL, duration_ms REAL, message TEXT);
CREATE TABLE IF NOT EXISTS cache (
    cache_key TEXT PRIMARY KEY, stage_id TEXT NOT NULL, run_id TEXT NOT NULL, created_at TEXT NOT NULL,
    outputs TEXT NOT NULL, files TEXT NOT NULL, data TEXT NOT NULL);
"#;

/// The file stamps ([`stamp`]), created with the first stamp: a store without
/// the table (a new one, or one from before stamps) has no stamps, and any
/// pmpo reading schema 3 still opens a store that has it.
const STAMPS_TABLE: &str = "CREATE TABLE IF NOT EXISTS stamps (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, blake3 TEXT NOT NULL, dev INTEGER NOT NULL,
    ino INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, taken_ns INTEGER NOT NULL)
    WITHOUT ROWID";

impl SqliteStore {
    /// Opens (creating if needed) the store of a workspace.
    pub fn open(workspace_root: &Path) -> Result<SqliteStore, DbError> {
        let path = workspace_root.join(DB_FILE);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Open {
                path: path.clone(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        Self::open_path(&path, true)
    }

    /// Opens an existing database file (for `doctor`), without creating tables.
    pub fn open_path(path: &Path, create: bool) -> Result<SqliteStore, DbError> {
        // SQLite would follow a link at the database or at a side file it
        // creates next to it, and write there: refuse any link among them.
        for side in ["", "-wal", "-shm", "-journal"] {
            let file = PathBuf::from(format!("{}{side}", path.display()));
            if std::fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(DbError::Link {
                    why: crate::link_refusal_why(&file),
                    path: file,
                });
            }
        }
        let existed = path.exists();
        let opened = Self::open_conn(path, create);
        if opened.is_err() && !existed {
            // Never leave behind an empty database that was only half created
            // (a full disk): the next open would take it for a damaged one.
            for side in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{side}", path.display()));
            }
        }
        opened
    }

    fn open_conn(path: &Path, create: bool) -> Result<SqliteStore, DbError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|source| classify(path, source))?;
        let corrupt = |e: rusqlite::Error| classify(path, e);
        let version = match conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)) {
            Ok(v) => v,
            // A WAL database on a read-only file system cannot be opened the
            // usual way (its shared-memory file cannot be made): read it as
            // an unchanging file, so reading commands still work.
            Err(e) if unwritable(&e) && path.exists() => {
                drop(conn);
                return Self::open_immutable(path).map_err(|_| classify(path, e));
            }
            Err(e) => return Err(corrupt(e)),
        };
        Self::not_too_new(path, version)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(corrupt)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(corrupt)?;
        // WAL + NORMAL: a committed transaction survives the process being
        // killed; a power loss may lose the last commits but never corrupts.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(corrupt)?;
        if create && version == 0 {
            conn.execute_batch(SCHEMA).map_err(corrupt)?;
            conn.pragma_update(None, "user_version", DB_SCHEMA_VERSION)
                .map_err(corrupt)?;
        } else if create && version < DB_SCHEMA_VERSION {
            migrate(&conn, version).map_err(corrupt)?;
        }
        Self::ready(conn, path, create || version != 0)
    }

    /// The store on an open connection, when its database has pmpo's tables.
    fn ready(conn: Connection, path: &Path, has_tables: bool) -> Result<SqliteStore, DbError> {
        if !has_tables {
            return Err(DbError::Corrupt {
                path: path.to_path_buf(),
                detail: "it has no pmpo tables".into(),
            });
        }
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            in_tx: false,
        })
    }

    /// Refuses a database a newer pmpo wrote (schema `version`).
    fn not_too_new(path: &Path, version: i64) -> Result<(), DbError> {
        if version > DB_SCHEMA_VERSION {
            return Err(DbError::TooNew {
                path: path.to_path_buf(),
                found: version,
                reads: DB_SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Opens the database read-only as an unchanging file (`immutable=1`):
    /// any write fails as unwritable.
    fn open_immutable(path: &Path) -> Result<SqliteStore, DbError> {
        use rusqlite::OpenFlags;
        let text = path.to_string_lossy();
        let escaped = text
            .replace('%', "%25")
            .replace('?', "%3f")
            .replace('#', "%23");
        let uri = format!("file:{escaped}?immutable=1");
        let conn = Connection::open_with_flags(
            &uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| classify(path, e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| classify(path, e))?;
        Self::not_too_new(path, version)?;
        Self::ready(conn, path, version != 0)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA integrity_check`: `ok` or the problems found.
    pub fn integrity_check(&self) -> Result<Vec<String>, DbError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    fn sql(&self, source: rusqlite::Error) -> DbError {
        classify(&self.path, source)
    }

    fn tx(&mut self) -> Result<(), DbError> {
        if !self.in_tx {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| self.sql(e))?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn exec(&mut self, sql: &str, p: impl rusqlite::Params) -> Result<(), DbError> {
        self.tx()?;
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| DbError::Sql {
            path: self.path.clone(),
            source: e,
        })?;
        stmt.execute(p).map_err(|e| DbError::Sql {
            path: self.path.clone(),
            source: e,
        })?;
        Ok(())
    }

    fn query<T>(
        &mut self,
        sql: &str,
        p: impl rusqlite::Params,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, DbError> {
        let path = self.path.clone();
        let err = move |e| DbError::Sql {
            path: path.clone(),
            source: e,
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(&err)?;
        let rows = stmt.query_map(p, f).map_err(&err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }
}

/// Brings an older database up to this build's layout, one step at a time,
/// each in its own transaction.
fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    if from < 2 {
        // 1 -> 2: the executor heartbeat.
        conn.execute_batch(
            "BEGIN; ALTER TABLE runs ADD COLUMN heartbeat_at TEXT; PRAGMA user_version = 2; COMMIT;",
        )?;
    }
    if from < 3 {
        // 2 -> 3: ledger entries have a state; every older entry was written
        // after its change, so it is complete.
        conn.execute_batch(
            "BEGIN; ALTER TABLE patch_history ADD COLUMN state TEXT NOT NULL DEFAULT 'completed'; PRAGMA user_version = 3; COMMIT;",
        )?;
    }
    Ok(())
}

impl ExecStore for SqliteStore {
    fn begin_run(&mut self, run: &RunRow) -> Result<(), DbError> {
        self.exec(
            &format!(
                "INSERT OR REPLACE INTO runs ({RUN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                run.run_id,
                run.plan,
                run.plan_blake3,
                run.status,
                run.started_at,
                run.finished_at,
                run.pid,
                run.stages,
                run.heartbeat_at
            ],
        )
    }

    fn set_run_status(
        &mut self,
        run_id: &str,
        status: RunStatus,
        finished_at: Option<&str>,
        pid: i64,
    ) -> Result<(), DbError> {
        self.exec(
            "UPDATE runs SET status = ?2, finished_at = ?3, pid = ?4 WHERE run_id = ?1",
            params![run_id, status, finished_at, pid],
        )
    }

    fn run(&mut self, run_id: &str) -> Result<Option<RunRow>, DbError> {
        Ok(self
            .query(
                &format!("SELECT {RUN_COLS} FROM runs WHERE run_id = ?1"),
                [run_id],
                run_row,
            )?
            .into_iter()
            .next())
    }

    fn runs(&mut self, limit: usize) -> Result<Vec<RunRow>, DbError> {
        self.query(
            &format!("SELECT {RUN_COLS} FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?1"),
            [limit as i64],
            run_row,
        )
    }

    fn interrupted_run(&mut self, plan: &str) -> Result<Option<RunRow>, DbError> {
        Ok(self
            .query(
                &format!("SELECT {RUN_COLS} FROM runs WHERE plan = ?1 AND status IN (?2, ?3, ?4) ORDER BY started_at DESC, rowid DESC LIMIT 1"),
                params![plan, RunStatus::Running, RunStatus::Paused, RunStatus::AwaitingIntervention],
                run_row,
            )?
            .into_iter()
            .next())
    }

    fn tasks(&mut self, run_id: &str) -> Result<Vec<TaskRow>, DbError> {
        self.query(
            &format!("SELECT {TASK_COLS} FROM tasks WHERE run_id = ?1 ORDER BY position"),
            [run_id],
            task_row,
        )
    }

    fn put_task(&mut self, t: &TaskRow) -> Result<(), DbError> {
        self.exec(
            &format!("INSERT OR REPLACE INTO tasks ({TASK_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"),
            params![t.run_id, t.stage_id, t.position, t.status, t.tool, t.def_hash, t.cache_key, t.reason, t.started_at, t.finished_at, t.duration_ms, t.exit_code, t.signal, t.attempts, t.outputs, t.files, t.data],
        )
    }

    fn add_attempt(&mut self, a: &AttemptRow) -> Result<(), DbError> {
        self.exec(
            &format!("INSERT INTO execution_log ({ATTEMPT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
            params![a.run_id, a.stage_id, a.attempt, a.status, a.started_at, a.finished_at, a.duration_ms, a.exit_code, a.signal, a.error_kind, a.error_message, a.stdout_bytes, a.stderr_bytes],
        )
    }

    fn add_patch(&mut self, p: &PatchRow) -> Result<i64, DbError> {
        self.exec(
            "INSERT INTO patch_history (time, run_id, writer, path, before_blake3, before_size, after_blake3, after_size, backed_up, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![p.time, p.run_id, p.writer, p.path, p.before_blake3, p.before_size, p.after_blake3, p.after_size, p.backed_up, p.state],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn finish_patch(
        &mut self,
        id: i64,
        after: Option<(&str, i64)>,
        state: PatchState,
        time: &str,
    ) -> Result<(), DbError> {
        self.exec(
            "UPDATE patch_history SET after_blake3 = ?2, after_size = ?3, state = ?4, time = ?5 WHERE id = ?1",
            params![id, after.map(|a| a.0), after.map(|a| a.1), state, time],
        )
    }

    fn drop_patch(&mut self, id: i64) -> Result<(), DbError> {
        self.exec("DELETE FROM patch_history WHERE id = ?1", [id])
    }

    fn pending_patches(&mut self) -> Result<Vec<PatchRow>, DbError> {
        self.query(
            &format!("SELECT {PATCH_COLS} FROM patch_history WHERE state = ?1 ORDER BY id"),
            [PatchState::Pending],
            patch_row,
        )
    }

    fn mark_interrupted(&mut self) -> Result<usize, DbError> {
        self.tx()?;
        self.conn
            .execute(
                "UPDATE patch_history SET state = ?1 WHERE state = ?2",
                params![PatchState::Interrupted, PatchState::Pending],
            )
            .map_err(|e| self.sql(e))
    }

    fn patches(
        &mut self,
        path: Option<&str>,
        run_id: Option<&str>,
    ) -> Result<Vec<PatchRow>, DbError> {
        let rows = self.query(
            &format!("SELECT {PATCH_COLS} FROM patch_history WHERE (?1 IS NULL OR path = ?1) AND (?2 IS NULL OR run_id = ?2) ORDER BY id"),
            params![path, run_id],
            patch_row,
        );
        match rows {
            // A database of schema 2 opened read-only (not migrated): its
            // entries are all complete.
            Err(DbError::Sql { source, .. }) if source.to_string().contains("no such column") => self.query(
                "SELECT id, 'completed', time, run_id, writer, path, before_blake3, before_size, after_blake3, after_size, backed_up FROM patch_history WHERE (?1 IS NULL OR path = ?1) AND (?2 IS NULL OR run_id = ?2) ORDER BY id",
                params![path, run_id],
                patch_row,
            ),
            other => other,
        }
    }

    fn add_event(&mut self, e: &EventRow) -> Result<(), DbError> {
        self.exec(
            "INSERT INTO events (run_id, stage_id, kind, status, timestamp, duration_ms, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![e.run_id, e.stage_id, e.kind, e.status, e.timestamp, e.duration_ms, e.message],
        )
    }

    fn cache_get(&mut self, key: &str) -> Result<Option<CacheRow>, DbError> {
        Ok(self
            .query("SELECT cache_key, stage_id, run_id, created_at, outputs, files, data FROM cache WHERE cache_key = ?1", [key], cache_row)?
            .into_iter()
            .next())
    }

    fn cache_put(&mut self, c: &CacheRow) -> Result<(), DbError> {
        self.exec(
            "INSERT OR REPLACE INTO cache (cache_key, stage_id, run_id, created_at, outputs, files, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![c.cache_key, c.stage_id, c.run_id, c.created_at, c.outputs, c.files, c.data],
        )
    }

    fn stamp(&mut self, path: &str) -> Result<Option<StampRow>, DbError> {
        let sql = format!("SELECT {STAMP_COLS} FROM stamps WHERE path = ?1");
        match self.query(&sql, [path], stamp_row) {
            Ok(rows) => Ok(rows.into_iter().next()),
            Err(e) if no_stamps_table(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_stamp(&mut self, s: &StampRow) -> Result<(), DbError> {
        // Device and inode numbers are stored as their 64 bits.
        let sql = format!(
            "INSERT OR REPLACE INTO stamps ({STAMP_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        );
        let p = params![
            s.path,
            s.size as i64,
            s.blake3,
            s.dev as i64,
            s.ino as i64,
            s.mtime_ns,
            s.ctime_ns,
            s.taken_ns
        ];
        match self.exec(&sql, p) {
            Err(e) if no_stamps_table(&e) => {
                self.tx()?;
                self.conn
                    .execute_batch(STAMPS_TABLE)
                    .map_err(|e| self.sql(e))?;
                self.exec(&sql, p)
            }
            other => other,
        }
    }

    fn cache_prune(&mut self, keep: &dyn Fn(&CacheRow) -> bool) -> Result<usize, DbError> {
        let rows = self.query(
            "SELECT cache_key, stage_id, run_id, created_at, outputs, files, data FROM cache",
            [],
            cache_row,
        )?;
        let mut removed = 0;
        for row in rows.iter().filter(|r| !keep(r)) {
            self.exec("DELETE FROM cache WHERE cache_key = ?1", [&row.cache_key])?;
            removed += 1;
        }
        self.flush()?;
        Ok(removed)
    }

    fn touch_adapter(&mut self, adapter_id: &str, kind: &str, now: &str) -> Result<(), DbError> {
        self.exec(
            "INSERT INTO adapters (adapter_id, kind, breaker_state, consecutive_failures, updated_at) VALUES (?1, ?2, 'CLOSED', 0, ?3) ON CONFLICT(adapter_id) DO UPDATE SET updated_at = ?3",
            params![adapter_id, kind, now],
        )
    }

    fn adapters(&mut self) -> Result<Vec<AdapterRow>, DbError> {
        self.query(
            &format!("SELECT {ADAPTER_COLS} FROM adapters ORDER BY adapter_id"),
            [],
            adapter_row,
        )
    }

    fn adapter(&mut self, adapter_id: &str) -> Result<Option<AdapterRow>, DbError> {
        Ok(self
            .adapters()?
            .into_iter()
            .find(|a| a.adapter_id == adapter_id))
    }

    fn put_adapter(&mut self, a: &AdapterRow) -> Result<(), DbError> {
        self.exec(
            &format!("INSERT OR REPLACE INTO adapters ({ADAPTER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![a.adapter_id, a.kind, a.breaker_state, a.consecutive_failures, a.opened_until, a.last_error, a.updated_at],
        )
    }

    fn attempts(&mut self, run_id: Option<&str>) -> Result<Vec<AttemptRow>, DbError> {
        match run_id {
            Some(run) => self.query(
                &format!("SELECT {ATTEMPT_COLS} FROM execution_log WHERE run_id = ?1 ORDER BY id"),
                params![run],
                attempt_row,
            ),
            None => self.query(
                &format!("SELECT {ATTEMPT_COLS} FROM execution_log ORDER BY id"),
                [],
                attempt_row,
            ),
        }
    }

    fn heartbeat(&mut self, run_id: &str, at: &str) -> Result<(), DbError> {
        self.exec(
            "UPDATE runs SET heartbeat_at = ?2 WHERE run_id = ?1",
            params![run_id, at],
        )
    }

    fn flush(&mut self) -> Result<(), DbError> {
        if self.in_tx {
            self.conn.execute_batch("COMMIT").map_err(|e| self.sql(e))?;
            self.in_tx = false;
        }
        Ok(())
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Whether an error is a store's lack of the stamps table.
fn no_stamps_table(e: &DbError) -> bool {
    matches!(e, DbError::Sql { source, .. } if source.to_string().contains("no such table: stamps"))
}

/// Whether an error says the database could not be written or its side files
/// made (a read-only file system, no permission), as opposed to damage.
fn unwritable(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::PermissionDenied
            )
    )
}

/// Names the real cause of a database error: damage only when SQLite says
/// the file is damaged or not a database.
fn classify(path: &Path, source: rusqlite::Error) -> DbError {
    let code = match &source {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    let detail = source.to_string();
    let path = path.to_path_buf();
    match code {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            DbError::Corrupt { path, detail }
        }
        Some(
            rusqlite::ErrorCode::ReadOnly
            | rusqlite::ErrorCode::CannotOpen
            | rusqlite::ErrorCode::PermissionDenied,
        ) => DbError::Unwritable { path, detail },
        Some(rusqlite::ErrorCode::DiskFull) => DbError::DiskFull { path, detail },
        _ => DbError::Sql { path, source },
    }
}

#[cfg(test)]
mod tests;
