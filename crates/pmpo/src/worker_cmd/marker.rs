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

/// The workspace's marker, made (atomically, through the workspace) if it is
/// not there yet.
fn workspace_id(ws: &Workspace) -> Result<String, CliError> {
    if let Ok(abs) = ws.resolve(MARKER)
        && let Ok(text) = std::fs::read_to_string(&abs)
    {
        let id = text.trim();
        if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(id.to_string());
        }
        return Err(CliError::failed(format!(
            "the workspace marker `{}` is damaged (it should hold 32 hex digits)",
            abs.display()
        ))
        .hint("restore it from another machine's view of the shared workspace; never edit it"));
    }
    let seed = format!(
        "{}:{}:{:?}:{}",
        pmpo_store::pg::queue::host_name(),
        std::process::id(),
        std::time::SystemTime::now(),
        ws.root().display()
    );
    let id = blake3::hash(seed.as_bytes()).to_hex()[..32].to_string();
    ws.write_atomic(
        MARKER,
        format!("{id}\n").as_bytes(),
        pmpo_store::Durability::Durable,
    )
    .map_err(|e| {
        CliError::failed(format!("cannot write the workspace marker: {e}")).hint(e.hint())
    })?;
    Ok(id)
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
    conn.batch(META_DDL).map_err(pg)?;
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
