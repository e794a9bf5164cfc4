//! The `postgres` state provider: named-artifact states in the table
//! `pmpo_artifact_state` of the workspace's PostgreSQL store, so every
//! machine of a team reads and writes the same states. pmpo's own extension
//! of the reference provider schema (whose types are filesystem, memory, mcp
//! and custom).
//!
//! As with a `custom` provider, the copy under `.refiner/` is always written
//! as well, and the database is asked first on load. Each save is checked
//! against the version this process read (optimistic concurrency): a state
//! another pmpo saved in between is not overwritten, and the refusal is
//! reported as a degradation. A database state older than the `.refiner/`
//! copy (a save the database missed while it was unreachable) is not used.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;

use crate::artifacts::RefinementState;
use crate::pg::locks::ensure_table;
use crate::pg::{PgConn, Row, Val};

/// The table (created on first use; idempotent).
pub const DDL: &str = "CREATE TABLE IF NOT EXISTS pmpo_artifact_state (
    name TEXT PRIMARY KEY,
    artifact_type TEXT NOT NULL,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    saved_by TEXT NOT NULL
);";

pub const TABLE: &str = "pmpo_artifact_state";

/// How long a provider call waits for a database that went away before it
/// degrades to `.refiner/` (the copy there is always written).
const PATIENCE: Duration = Duration::from_secs(10);

/// One artifact's row, as listed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoredState {
    pub name: String,
    pub artifact_type: String,
    /// `running` or `finalized`.
    pub status: String,
    /// 1 for the first save, one more for each save after it.
    pub version: i64,
    /// The state's `updated_at`.
    pub updated_at: String,
    /// `host:pid` of the pmpo that saved it last.
    pub saved_by: String,
}

/// The states kept in one database.
pub struct PgStates {
    url: String,
    conn: OnceLock<Result<PgConn, String>>,
    /// Whether the table was made sure of.
    table: OnceLock<Result<(), String>>,
    /// The version of each state this process read (0: it had none).
    versions: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for PgStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStates")
            .field("server", &crate::pg::conn::server_of(&self.url))
            .finish()
    }
}

fn text(row: &Row, k: usize) -> String {
    row.get(k).and_then(Val::text).unwrap_or_default()
}

fn saved_by() -> String {
    format!("{}:{}", crate::lock::this_host(), std::process::id())
}

impl PgStates {
    pub fn new(url: &str) -> PgStates {
        PgStates {
            url: url.to_string(),
            conn: OnceLock::new(),
            table: OnceLock::new(),
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// The connection, made on first use.
    fn plain(&self) -> Result<&PgConn, String> {
        let made = self
            .conn
            .get_or_init(|| PgConn::connect(&self.url, PATIENCE).map_err(|e| e.to_string()));
        made.as_ref().map_err(Clone::clone)
    }

    /// The connection, with the table made sure of (once).
    fn conn(&self) -> Result<&PgConn, String> {
        let conn = self.plain()?;
        self.table
            .get_or_init(|| ensure_table(conn, TABLE, DDL).map_err(|e| e.to_string()))
            .clone()?;
        Ok(conn)
    }

    /// Makes sure the table is there (the provider's `init`).
    pub fn init(&self) -> Result<(), String> {
        self.conn().map(|_| ())
    }

    fn remember(&self, name: &str, version: i64) {
        if let Ok(mut v) = self.versions.lock() {
            v.insert(name.to_string(), version);
        }
    }

    /// The state of `name` and its `updated_at`, when the database has one.
    pub fn load(&self, name: &str) -> Result<Option<(String, String)>, String> {
        let rows = self
            .conn()?
            .query(
                "SELECT state, version, updated_at FROM pmpo_artifact_state WHERE name = $1",
                vec![name.into()],
            )
            .map_err(|e| e.to_string())?;
        let Some(row) = rows.first() else {
            self.remember(name, 0);
            return Ok(None);
        };
        self.remember(name, row[1].int().unwrap_or(0));
        Ok(Some((text(row, 0), text(row, 2))))
    }

    /// Saves `state`. When this process read the state before, only over
    /// the version it read; `Err` says why nothing was saved.
    pub fn save(&self, name: &str, state: &RefinementState) -> Result<i64, String> {
        let json = serde_json::to_string(state).map_err(|e| e.to_string())?;
        let status = if state.finalized_at.is_some() {
            "finalized"
        } else {
            "running"
        };
        let expected = self.versions.lock().ok().and_then(|v| v.get(name).copied());
        let params = vec![
            Val::from(name),
            state.artifact_type.as_str().into(),
            status.into(),
            json.into(),
            state.updated_at.as_str().into(),
            saved_by().into(),
        ];
        let conn = self.conn()?;
        let sql = match expected {
            // Read before and absent: only if still absent.
            Some(0) => {
                "INSERT INTO pmpo_artifact_state (name, artifact_type, status, version, state, updated_at, saved_by)
                 VALUES ($1, $2, $3, 1, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING version"
            }
            // Read before: only over that version.
            Some(_) => {
                "UPDATE pmpo_artifact_state SET artifact_type = $2, status = $3, version = version + 1,
                 state = $4, updated_at = $5, saved_by = $6 WHERE name = $1 AND version = $7 RETURNING version"
            }
            // Never read by this process: saved over whatever is there.
            None => {
                "INSERT INTO pmpo_artifact_state (name, artifact_type, status, version, state, updated_at, saved_by)
                 VALUES ($1, $2, $3, 1, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET
                 artifact_type = excluded.artifact_type, status = excluded.status,
                 version = pmpo_artifact_state.version + 1, state = excluded.state,
                 updated_at = excluded.updated_at, saved_by = excluded.saved_by RETURNING version"
            }
        };
        let mut params = params;
        if let Some(v) = expected.filter(|v| *v > 0) {
            params.push(v.into());
        }
        // On its own: a save that may have happened before a lost connection
        // is not repeated (the version check would refuse it anyway).
        let rows = conn.once(sql, params, false).map_err(|e| e.to_string())?;
        if let Some(v) = rows.first().and_then(|r| r[0].int()) {
            self.remember(name, v);
            return Ok(v);
        }
        let now = conn
            .query(
                "SELECT version, saved_by FROM pmpo_artifact_state WHERE name = $1",
                vec![name.into()],
            )
            .map_err(|e| e.to_string())?;
        let (found, by) = now
            .first()
            .map(|r| (r[0].int().unwrap_or(0), text(r, 1)))
            .unwrap_or((0, String::new()));
        Err(format!(
            "the state of `{name}` in the database was saved by {by} (version {found}) after this pmpo read version {}; it was not overwritten",
            expected.unwrap_or(0)
        ))
    }

    /// Every state in the database, by name (nothing is created: no table,
    /// no states).
    pub fn list(&self) -> Result<Vec<StoredState>, String> {
        let conn = self.plain()?;
        let present = conn
            .query("SELECT to_regclass($1) IS NOT NULL", vec![TABLE.into()])
            .map_err(|e| e.to_string())?;
        if present.first().and_then(|r| r[0].boolean()) != Some(true) {
            return Ok(Vec::new());
        }
        let rows = conn
            .query(
                "SELECT name, artifact_type, status, version, updated_at, saved_by
                 FROM pmpo_artifact_state ORDER BY name",
                vec![],
            )
            .map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .map(|r| StoredState {
                name: text(r, 0),
                artifact_type: text(r, 1),
                status: text(r, 2),
                version: r[3].int().unwrap_or(0),
                updated_at: text(r, 4),
                saved_by: text(r, 5),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Workspace;
    use crate::artifacts::Artifacts;
    use crate::provider::{Kind, Provider};

    /// A workspace and a `postgres` provider on a fresh database.
    fn setup(tag: &str) -> Option<(tempfile::TempDir, String)> {
        let url = pmpo_testkit::pg::fresh_db(tag)?;
        Some((tempfile::tempdir().unwrap(), url))
    }

    fn provider(url: &str) -> Provider {
        let server = crate::pg::conn::server_of(url);
        Provider::new(
            Kind::Postgres { server },
            "test".into(),
            vec![],
            Some(url.to_string()),
        )
    }

    #[test]
    fn states_are_saved_in_the_database_and_read_from_it_first() {
        let Some((dir, url)) = setup("provider_rw") else {
            return;
        };
        let ws = Workspace::open(dir.path()).unwrap();
        let p = provider(&url);
        let arts = Artifacts {
            ws: &ws,
            provider: &p,
        };
        let (_, state) = arts.init("a", Some("content"), None, None).unwrap();
        assert_eq!(
            state.state_provider.as_ref().unwrap()["provider_type"],
            "postgres"
        );
        let listed = p.stored_states().unwrap().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (
                listed[0].name.as_str(),
                listed[0].status.as_str(),
                listed[0].version
            ),
            ("a", "running", 1)
        );
        assert!(
            listed[0]
                .saved_by
                .ends_with(&format!(":{}", std::process::id()))
        );
        // The database is asked first: a goal written there (by another
        // machine) is what the next load sees.
        let conn = PgConn::connect(&url, Duration::ZERO).unwrap();
        conn.once(
            "UPDATE pmpo_artifact_state SET state = jsonb_set(state::jsonb, '{goals}', '[\"from the db\"]')::text",
            vec![],
            false,
        )
        .unwrap();
        let other = provider(&url);
        let arts2 = Artifacts {
            ws: &ws,
            provider: &other,
        };
        let mut loaded = arts2.load("a").unwrap();
        assert_eq!(loaded.goals, vec!["from the db".to_string()]);
        arts2.save(&mut loaded).unwrap();
        assert_eq!(other.stored_states().unwrap().unwrap()[0].version, 2);
        assert!(other.notes().is_empty(), "{:?}", other.notes());
    }

    #[test]
    fn a_save_over_a_state_another_pmpo_saved_since_it_was_read_is_refused() {
        let Some((dir, url)) = setup("provider_occ") else {
            return;
        };
        let ws = Workspace::open(dir.path()).unwrap();
        let (p1, p2) = (provider(&url), provider(&url));
        let a1 = Artifacts {
            ws: &ws,
            provider: &p1,
        };
        let a2 = Artifacts {
            ws: &ws,
            provider: &p2,
        };
        a1.init("a", Some("content"), None, None).unwrap();
        let mut s1 = a1.load("a").unwrap();
        let mut s2 = a2.load("a").unwrap();
        s2.goals = vec!["second".into()];
        a2.save(&mut s2).unwrap();
        s1.goals = vec!["first".into()];
        a1.save(&mut s1).unwrap();
        let notes = p1.notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("after this pmpo read version 1; it was not overwritten"),
            "{notes:?}"
        );
        let (state, _) = PgStates::new(&url).load("a").unwrap().unwrap();
        assert!(state.contains("second"), "{state}");
        assert_eq!(p1.stored_states().unwrap().unwrap()[0].version, 2);
        // The refusal is on record in .refiner/provider.log.
        let log = std::fs::read_to_string(dir.path().join(crate::provider::PROVIDER_LOG)).unwrap();
        assert!(log.contains("not overwritten"), "{log}");
    }

    #[test]
    fn a_database_state_older_than_the_refiner_copy_is_not_used() {
        let Some((dir, url)) = setup("provider_stale") else {
            return;
        };
        let ws = Workspace::open(dir.path()).unwrap();
        let p = provider(&url);
        let arts = Artifacts {
            ws: &ws,
            provider: &p,
        };
        arts.init("a", Some("content"), None, None).unwrap();
        // A save the database missed: only the file has it.
        let fs_only = Provider::new(Kind::Filesystem, "t".into(), vec![], None);
        let files = Artifacts {
            ws: &ws,
            provider: &fs_only,
        };
        let mut s = files.load("a").unwrap();
        s.goals = vec!["newer".into()];
        std::thread::sleep(Duration::from_millis(5));
        files.save(&mut s).unwrap();
        let fresh = provider(&url);
        let arts = Artifacts {
            ws: &ws,
            provider: &fresh,
        };
        let mut loaded = arts.load("a").unwrap();
        assert_eq!(loaded.goals, vec!["newer".to_string()]);
        assert!(
            fresh.notes().iter().any(|n| n.contains("is older than")),
            "{:?}",
            fresh.notes()
        );
        // The next save brings the database up to date.
        arts.save(&mut loaded).unwrap();
        let (state, _) = PgStates::new(&url).load("a").unwrap().unwrap();
        assert!(state.contains("newer"), "{state}");
    }

    #[test]
    fn an_unreachable_database_degrades_to_the_refiner_copy() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let p = provider("postgres://pmpo@127.0.0.1:9/none");
        let arts = Artifacts {
            ws: &ws,
            provider: &p,
        };
        arts.init("a", Some("content"), None, None).unwrap();
        assert_eq!(arts.load("a").unwrap().artifact_name, "a");
        let notes = p.notes();
        assert!(
            notes.iter().any(|n| n
                .contains("cannot connect to the PostgreSQL store at postgres://127.0.0.1:9/none")),
            "{notes:?}"
        );
        assert!(p.stored_states().unwrap().is_err());
    }

    #[test]
    fn the_store_selects_the_provider_and_a_config_may_name_it() {
        let Some((dir, url)) = setup("provider_resolve") else {
            return;
        };
        if std::env::var_os("PMPO_STORE").is_some()
            || std::env::var_os("PMPO_PROVIDER_CONFIG").is_some()
            || super::super::user_config().is_some_and(|p| p.is_file())
        {
            eprintln!("skipping: a store or provider is set in the environment");
            return;
        }
        let ws = Workspace::open(dir.path()).unwrap();
        assert_eq!(Provider::resolve(&ws).kind, Kind::Filesystem);
        std::fs::write(
            dir.path().join("pmpo.toml"),
            format!("[store]\nurl = \"{url}\"\n"),
        )
        .unwrap();
        let p = Provider::resolve(&ws);
        assert!(matches!(p.kind, Kind::Postgres { .. }), "{:?}", p.kind);
        assert!(p.source.starts_with("the execution store"), "{}", p.source);
        // A config file wins; `postgres` without a URL takes the store's.
        std::fs::create_dir_all(dir.path().join(".refiner")).unwrap();
        std::fs::write(
            dir.path().join(".refiner/provider.json"),
            r#"{"provider_type": "postgres"}"#,
        )
        .unwrap();
        let p = Provider::resolve(&ws);
        assert!(matches!(p.kind, Kind::Postgres { .. }), "{:?}", p.kind);
        assert!(p.source.contains("provider.json"), "{}", p.source);
        std::fs::write(
            dir.path().join(".refiner/provider.json"),
            r#"{"provider_type": "postgres", "config": {"url": "mysql://u:secret@h/db"}}"#,
        )
        .unwrap();
        let p = Provider::resolve(&ws);
        assert_eq!(p.kind, Kind::Filesystem);
        assert!(
            p.degraded[0].contains("is not a postgres:// URL") && !p.degraded[0].contains("secret"),
            "{:?}",
            p.degraded
        );
    }
}
