//! Every machine sees the same workspace: the store's schema is checked
//! (a database of a newer pmpo is refused untouched) and the workspace's
//! marker (`.state/workspace-id`) must equal the one the database recorded
//! when it was first used (`pmpo_store::pg::schema::claim_workspace`).

use pmpo_store::Workspace;
use pmpo_store::pg::PgConn;

use crate::error::CliError;

/// Checks (and on first use records) that this database serves this
/// workspace, with a schema this pmpo reads.
pub fn check(conn: &PgConn, ws: &Workspace) -> Result<(), CliError> {
    let db = |e: pmpo_store::db::DbError| {
        let hint = e.hint();
        if e.is_setting() {
            CliError::invalid(&e).hint(hint)
        } else {
            CliError::failed(&e).hint(hint)
        }
    };
    pmpo_store::pg::schema::migrate(conn).map_err(db)?;
    pmpo_store::pg::schema::claim_workspace(conn, ws.root()).map_err(db)
}
