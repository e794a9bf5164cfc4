//! Every machine sees the same workspace: the workspace's marker
//! (`.state/workspace-id`, written once) must equal the one the database
//! recorded when it was first used (`pmpo_meta.workspace_id`).
//!
//! This is the queue's own check, written to the same file and table as the
//! PostgreSQL store's (which records the marker when it opens); the store's
//! check can replace this one.

use pmpo_store::Workspace;
use pmpo_store::pg::{PgConn, PgError, Val};

use crate::error::CliError;

/// The marker file, relative to the workspace.
pub const MARKER: &str = ".state/workspace-id";

const META_DDL: &str =
    "CREATE TABLE IF NOT EXISTS pmpo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)";

/// The workspace's marker, made if it is not there yet. Several machines
/// may start at once: the file is created exclusively (the first one wins)
/// and the others read what it wrote.
fn workspace_id(ws: &Workspace) -> Result<String, CliError> {
    let io = |e: pmpo_store::StoreError| {
        CliError::failed(format!("cannot make the workspace marker: {e}")).hint(e.hint())
    };
    ws.create_dir_all(".state").map_err(io)?;
    let seed = format!(
        "{}:{}:{:?}:{}",
        pmpo_store::pg::queue::host_name(),
        std::process::id(),
        std::time::SystemTime::now(),
        ws.root().display()
    );
    let mine = blake3::hash(seed.as_bytes()).to_hex()[..32].to_string();
    let mut how = std::fs::OpenOptions::new();
    how.write(true).create_new(true);
    match ws.open_own(MARKER, &mut how) {
        Ok(mut f) => {
            use std::io::Write as _;
            f.write_all(format!("{mine}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| CliError::failed(format!("cannot write the workspace marker: {e}")))?;
            return Ok(mine);
        }
        Err(_) if ws.resolve(MARKER).is_ok_and(|p| p.is_file()) => {}
        Err(e) => return Err(io(e)),
    }
    // Another process made it: its id, once written.
    let abs = ws.resolve(MARKER).map_err(io)?;
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&abs).unwrap_or_default();
        let id = text.trim();
        if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(id.to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(CliError::failed(format!(
        "the workspace marker `{}` is damaged (it holds {:?}, not 32 hex digits)",
        abs.display(),
        text.trim()
    ))
    .hint("restore it from another machine's view of the shared workspace; never edit it"))
}

fn meta(conn: &PgConn, key: &str) -> Result<Option<String>, PgError> {
    Ok(conn
        .query(
            "SELECT value FROM pmpo_meta WHERE key = $1",
            vec![key.into()],
        )?
        .first()
        .and_then(|r| r.first().and_then(Val::text)))
}

/// Checks (and on first use records) that this database serves this workspace.
pub fn check(conn: &PgConn, ws: &Workspace) -> Result<(), CliError> {
    let pg = |e: PgError| CliError::failed(&e).hint(e.hint());
    let id = workspace_id(ws)?;
    // Under the queue's lock: concurrent `CREATE TABLE IF NOT EXISTS` race.
    conn.batch(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({}); {META_DDL}; COMMIT;",
        pmpo_store::pg::queue::DDL_LOCK
    ))
    .map_err(pg)?;
    let here = ws.root().display().to_string();
    let host = pmpo_store::pg::queue::host_name();
    for (k, v) in [
        ("workspace_id", id.as_str()),
        ("workspace_path", here.as_str()),
        ("workspace_host", host.as_str()),
    ] {
        conn.once(
            "INSERT INTO pmpo_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING key",
            vec![k.into(), v.into()],
            true,
        )
        .map_err(pg)?;
    }
    let recorded = meta(conn, "workspace_id").map_err(pg)?.unwrap_or_default();
    if recorded == id {
        return Ok(());
    }
    let path = meta(conn, "workspace_path")
        .map_err(pg)?
        .unwrap_or_default();
    let at = meta(conn, "workspace_host")
        .map_err(pg)?
        .unwrap_or_default();
    Err(CliError::failed(format!(
        "the store at {} serves the workspace `{path}` on {at} (marker {recorded}), not `{here}` on {host} (marker {id})",
        conn.server()
    ))
    .hint("mount the same shared directory on every machine, or use another database"))
}
