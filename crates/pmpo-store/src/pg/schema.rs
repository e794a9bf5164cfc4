//! The PostgreSQL store's tables, their version, and the workspace marker
//! that ties one database to one shared workspace.
//!
//! The tables are the SQLite ones (same names, same columns), with BIGINT for
//! integers, DOUBLE PRECISION for reals and BOOLEAN for flags, plus
//! `pmpo_meta` (the schema version and the workspace the database serves).
//! [`migrate`] creates what is missing in one transaction, under an advisory
//! lock so that machines opening a new database at once do not race.

use std::io::Write;
use std::path::Path;

use super::conn::{PgConn, Val};
use crate::db::DbError;
use crate::{STATE_DIR, Workspace};

/// Version of the PostgreSQL layout this build reads and writes.
pub const PG_SCHEMA_VERSION: i64 = 1;

/// Where a workspace keeps its identity (32 hex characters, written once).
pub const MARKER_FILE: &str = ".state/workspace-id";

/// The advisory lock key that serialises schema creation ("pmpo" in ASCII).
pub(crate) const MIGRATE_LOCK: i64 = 0x706d_706f;

/// The store's own tables (the queue's and the locks' are theirs).
pub const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS pmpo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, plan TEXT NOT NULL, plan_blake3 TEXT NOT NULL, status TEXT NOT NULL,
    started_at TEXT NOT NULL, finished_at TEXT, pid BIGINT NOT NULL, stages BIGINT NOT NULL,
    heartbeat_at TEXT);
CREATE INDEX IF NOT EXISTS runs_by_plan ON runs(plan, started_at);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL, stage_id TEXT NOT NULL, position BIGINT NOT NULL, status TEXT NOT NULL,
    tool TEXT NOT NULL, def_hash TEXT NOT NULL, cache_key TEXT, reason TEXT, started_at TEXT,
    finished_at TEXT, duration_ms DOUBLE PRECISION NOT NULL, exit_code BIGINT, signal BIGINT,
    attempts BIGINT NOT NULL, outputs TEXT NOT NULL, files TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (run_id, stage_id));
CREATE TABLE IF NOT EXISTS execution_log (
    id BIGINT PRIMARY KEY, run_id TEXT NOT NULL, stage_id TEXT NOT NULL, attempt BIGINT NOT NULL,
    status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL, exit_code BIGINT, signal BIGINT, error_kind TEXT,
    error_message TEXT, stdout_bytes BIGINT NOT NULL, stderr_bytes BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS adapters (
    adapter_id TEXT PRIMARY KEY, kind TEXT NOT NULL, breaker_state TEXT NOT NULL,
    consecutive_failures BIGINT NOT NULL, opened_until TEXT, last_error TEXT, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patch_history (
    id BIGINT PRIMARY KEY, time TEXT NOT NULL, run_id TEXT NOT NULL, writer TEXT NOT NULL,
    path TEXT NOT NULL, before_blake3 TEXT, before_size BIGINT, after_blake3 TEXT, after_size BIGINT,
    backed_up BOOLEAN NOT NULL, state TEXT NOT NULL DEFAULT 'completed');
CREATE INDEX IF NOT EXISTS patch_by_path ON patch_history(path);
CREATE TABLE IF NOT EXISTS events (
    id BIGINT PRIMARY KEY, run_id TEXT NOT NULL, stage_id TEXT, kind TEXT NOT NULL, status TEXT,
    timestamp TEXT NOT NULL, duration_ms DOUBLE PRECISION, message TEXT);
CREATE TABLE IF NOT EXISTS cache (
    cache_key TEXT PRIMARY KEY, stage_id TEXT NOT NULL, run_id TEXT NOT NULL, created_at TEXT NOT NULL,
    outputs TEXT NOT NULL, files TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stamps (
    path TEXT PRIMARY KEY, size BIGINT NOT NULL, blake3 TEXT NOT NULL, dev BIGINT NOT NULL,
    ino BIGINT NOT NULL, mtime_ns BIGINT NOT NULL, ctime_ns BIGINT NOT NULL, taken_ns BIGINT NOT NULL);
"#;

/// Every part's DDL, in the order it is run. Each script is cut at `;` into
/// statements, each journaled like any write (so a reconnection replays the
/// whole migration): no statement may hold a `;` of its own.
fn scripts() -> Vec<&'static str> {
    vec![DDL, super::locks::DDL, crate::provider::pg::DDL]
}

/// The schema version a database records (`None`: none yet, a new database).
pub fn version(conn: &PgConn) -> Result<Option<i64>, DbError> {
    let exists = conn.query("SELECT to_regclass('pmpo_meta') IS NOT NULL", vec![])?;
    if exists.first().and_then(|r| r[0].boolean()) != Some(true) {
        return Ok(None);
    }
    let rows = conn.query(
        "SELECT value FROM pmpo_meta WHERE key = 'schema_version'",
        vec![],
    )?;
    Ok(rows
        .first()
        .and_then(|r| r[0].text())
        .and_then(|v| v.trim().parse().ok()))
}

/// Creates the tables a database lacks and records the schema version, in
/// one transaction under an advisory lock. A database of a newer layout is
/// refused and left untouched.
pub fn migrate(conn: &PgConn) -> Result<(), DbError> {
    conn.write(
        "SELECT pg_advisory_xact_lock($1)",
        vec![MIGRATE_LOCK.into()],
    )?;
    let result = migrate_locked(conn);
    match result {
        Ok(created) => {
            conn.commit()?;
            // The queue's DDL holds functions (with `;` inside): one script,
            // under the same lock (idempotent).
            if created {
                super::queue::ensure(conn)?;
            }
            Ok(())
        }
        Err(e) => {
            let _ = conn.rollback();
            Err(e)
        }
    }
}

/// Returns whether it created or changed the layout.
fn migrate_locked(conn: &PgConn) -> Result<bool, DbError> {
    let found = version(conn)?;
    if let Some(found) = found
        && found > PG_SCHEMA_VERSION
    {
        return Err(DbError::TooNew {
            path: conn.server().into(),
            found,
            reads: PG_SCHEMA_VERSION,
        });
    }
    if found == Some(PG_SCHEMA_VERSION) {
        return Ok(false);
    }
    for script in scripts() {
        for stmt in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            conn.write(stmt, vec![])?;
        }
    }
    // Later layouts add their steps here, each from the version before it.
    conn.write(
        "INSERT INTO pmpo_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        vec![PG_SCHEMA_VERSION.to_string().into()],
    )?;
    conn.write(
        "INSERT INTO pmpo_meta (key, value) VALUES ('created_by', $1) ON CONFLICT (key) DO NOTHING",
        vec![env!("CARGO_PKG_VERSION").into()],
    )?;
    Ok(true)
}

/// This machine's name (for messages about who recorded a workspace).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is cut at its NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn valid_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The workspace's identity, from `.state/workspace-id`; created (once,
/// atomically: the first of two racing writers wins) when missing.
pub fn workspace_id(root: &Path) -> Result<String, DbError> {
    let ws = Workspace::open(root).map_err(|e| marker_error(root, e.to_string()))?;
    if let Some(id) = read_marker(&ws)? {
        return Ok(id);
    }
    let seed = format!(
        "{:?} {} {} {}",
        std::time::SystemTime::now(),
        std::process::id(),
        host_name(),
        root.display()
    );
    let id = crate::hash_bytes(seed.as_bytes()).blake3[..32].to_string();
    let dir = ws
        .resolve_own(STATE_DIR)
        .map_err(|e| marker_error(root, e.to_string()))?;
    std::fs::create_dir_all(&dir).map_err(|e| marker_error(root, e.to_string()))?;
    let tmp_rel = format!("{MARKER_FILE}.{}.tmp", std::process::id());
    let tmp = ws
        .resolve_own(&tmp_rel)
        .map_err(|e| marker_error(root, e.to_string()))?;
    let fin = ws
        .resolve_own(MARKER_FILE)
        .map_err(|e| marker_error(root, e.to_string()))?;
    let made = (|| {
        let mut f = ws
            .open_own(
                &tmp_rel,
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true),
            )
            .map_err(std::io::Error::other)?;
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_all()?;
        // A link never replaces: a marker another process made first stays.
        match std::fs::hard_link(&tmp, &fin) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    made.map_err(|e| marker_error(root, e.to_string()))?;
    read_marker(&ws)?.ok_or_else(|| marker_error(root, "it vanished after it was made".into()))
}

/// The workspace's identity when it has one (never creates it: `doctor`).
pub fn read_workspace_id(root: &Path) -> Result<Option<String>, DbError> {
    let ws = Workspace::open(root).map_err(|e| marker_error(root, e.to_string()))?;
    read_marker(&ws)
}

fn read_marker(ws: &Workspace) -> Result<Option<String>, DbError> {
    let bytes = ws
        .read_own(MARKER_FILE)
        .map_err(|e| marker_error(ws.root(), e.to_string()))?;
    let Some(bytes) = bytes else { return Ok(None) };
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    if !valid_id(&text) {
        return Err(DbError::Config {
            origin: ws.root().join(MARKER_FILE).display().to_string(),
            detail: "is not a workspace marker (32 hexadecimal characters); remove it only if this workspace was never used with a PostgreSQL store".into(),
        });
    }
    Ok(Some(text.to_ascii_lowercase()))
}

fn marker_error(root: &Path, detail: String) -> DbError {
    DbError::Unwritable {
        path: root.join(MARKER_FILE),
        detail,
    }
}

/// What `pmpo_meta` says about the workspace a database serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    pub workspace_id: Option<String>,
    pub workspace_path: Option<String>,
    pub workspace_host: Option<String>,
    pub created_by: Option<String>,
    pub schema_version: Option<i64>,
}

/// Reads `pmpo_meta` (empty for a database without it).
pub fn recorded(conn: &PgConn) -> Result<Recorded, DbError> {
    let mut out = Recorded {
        schema_version: version(conn)?,
        ..Recorded::default()
    };
    if out.schema_version.is_none() {
        return Ok(out);
    }
    for row in conn.query("SELECT key, value FROM pmpo_meta", vec![])? {
        let value = row[1].text();
        match row[0].text().as_deref() {
            Some("workspace_id") => out.workspace_id = value,
            Some("workspace_path") => out.workspace_path = value,
            Some("workspace_host") => out.workspace_host = value,
            Some("created_by") => out.created_by = value,
            _ => {}
        }
    }
    Ok(out)
}

/// Records this workspace as the database's when it has none yet, then
/// checks that the database serves this workspace.
pub fn claim_workspace(conn: &PgConn, root: &Path) -> Result<(), DbError> {
    let id = workspace_id(root)?;
    let here = root.display().to_string();
    let host = host_name();
    // The id first: a second opener waits on it, then writes nothing.
    for (key, value) in [
        ("workspace_id", &id),
        ("workspace_path", &here),
        ("workspace_host", &host),
    ] {
        conn.write(
            "INSERT INTO pmpo_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            vec![Val::from(key), Val::from(value.as_str())],
        )?;
    }
    conn.commit()?;
    let rec = recorded(conn)?;
    if rec.workspace_id.as_deref() == Some(id.as_str()) {
        return Ok(());
    }
    Err(DbError::OtherWorkspace {
        server: conn.server().to_string(),
        theirs: format!(
            "{} on {} (id {})",
            rec.workspace_path.as_deref().unwrap_or("?"),
            rec.workspace_host.as_deref().unwrap_or("?"),
            rec.workspace_id.as_deref().unwrap_or("?")
        ),
        ours: format!("{here} on {host} (id {id})"),
    })
}
