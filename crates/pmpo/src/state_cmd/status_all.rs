//! `pmpo status --all`: every run in the store, newest first, from every
//! machine and every plan, with the machine that ran it when known; and, with
//! a PostgreSQL store, the live workers (`pmpo_workers`, when that table
//! exists) and the artifact states the `postgres` provider keeps.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use pmpo_store::Workspace;
use pmpo_store::db::{StoreSpec, store_spec};
use pmpo_store::lock::LockHolder;
use pmpo_store::pg::{PgConn, PgError};
use pmpo_store::provider::Provider;

use super::print_json;
use crate::EXIT_OK;

/// How long `status --all` waits for a database that went away.
const PATIENCE: Duration = Duration::from_secs(5);

/// A worker whose heartbeat is older than this is not counted as live.
const LIVE_WITHIN_S: f64 = 60.0;

/// What the PostgreSQL database adds to the runs: each run's machine, the
/// workers, and where it could not be read.
#[derive(Default)]
struct Extra {
    hosts: HashMap<String, String>,
    /// `None`: there is no `pmpo_workers` table (no worker ever ran).
    workers: Option<Vec<Value>>,
    problems: Vec<String>,
}

fn from_database(url: &str) -> Extra {
    let mut extra = Extra::default();
    let conn = match PgConn::connect(url, PATIENCE) {
        Ok(c) => c,
        Err(e) => {
            extra.problems.push(e.to_string());
            return extra;
        }
    };
    match pmpo_store::pg::locks::run_hosts(&conn) {
        Ok(h) => extra.hosts = h,
        Err(e) => extra.problems.push(format!("the runs' machines: {e}")),
    }
    match workers(&conn) {
        Ok(w) => extra.workers = w,
        Err(e) => extra.problems.push(format!("the workers: {e}")),
    }
    extra
}

/// The rows of `pmpo_workers`, read defensively (every column as text).
fn workers(conn: &PgConn) -> Result<Option<Vec<Value>>, PgError> {
    let present = conn.query("SELECT to_regclass('pmpo_workers') IS NOT NULL", vec![])?;
    if present.first().and_then(|r| r[0].boolean()) != Some(true) {
        return Ok(None);
    }
    let rows = conn.query(
        "SELECT w.worker_id, w.host, w.pid::text, w.version, w.started_at, w.heartbeat::text,
                CASE WHEN w.stopped THEN 'stopped' WHEN w.job IS NULL THEN 'idle' ELSE 'running' END,
                w.job::text,
                (SELECT count(*) FROM pmpo_jobs j WHERE j.worker = w.worker_id AND j.state = 'done')::text,
                extract(epoch FROM now() - w.heartbeat)::float8
         FROM pmpo_workers w WHERE NOT w.stopped ORDER BY w.started_at",
        vec![],
    )?;
    Ok(Some(
        rows.iter()
            .map(|r| {
                let t = |k: usize| r[k].text();
                let age = r[9].real();
                json!({
                    "worker_id": t(0), "host": t(1), "pid": t(2).and_then(|p| p.parse::<i64>().ok()),
                    "version": t(3), "started_at": t(4), "heartbeat_at": t(5), "state": t(6),
                    "job_id": t(7), "stages_done": t(8).and_then(|n| n.parse::<i64>().ok()),
                    "heartbeat_age_s": age,
                    "live": age.is_some_and(|a| a < LIVE_WITHIN_S),
                })
            })
            .collect(),
    ))
}

/// Prints the runs (`rows`, built by `status`) with what the database adds.
pub(super) fn report(
    ws: &Workspace,
    live: Option<&LockHolder>,
    mut rows: Vec<Value>,
    as_json: bool,
) -> u8 {
    let spec = store_spec(ws.root()).unwrap_or(StoreSpec::Sqlite);
    let extra = match &spec {
        StoreSpec::Postgres(url) => from_database(url),
        StoreSpec::Sqlite => Extra::default(),
    };
    for r in &mut rows {
        let id = r["run_id"].as_str().unwrap_or_default().to_string();
        let host = extra
            .hosts
            .get(&id)
            .cloned()
            .or_else(|| live.filter(|h| h.run_id == id).map(|h| h.host.clone()));
        r["host"] = json!(host);
    }
    let provider = Provider::resolve(ws);
    let artifacts = provider
        .stored_states()
        .map(|s| s.map_err(|e| e.to_string()));
    if as_json {
        print_json(&json!({
            "workspace": ws.root(),
            "store": spec.describe(),
            "live": live,
            "runs": rows,
            "workers": extra.workers,
            "artifacts": match &artifacts { Some(Ok(a)) => json!(a), _ => Value::Null },
            "problems": extra.problems.iter().chain(artifacts.as_ref().and_then(|a| a.as_ref().err())).collect::<Vec<_>>(),
        }));
        return EXIT_OK;
    }
    outln!("store: {}", spec.describe());
    match live {
        Some(h) => outln!(
            "live: {} is running {} (run {}) since {}",
            h.who(),
            h.command,
            h.run_id,
            h.since
        ),
        None => outln!("live: nothing is running in {}", ws.root().display()),
    }
    print_workers(extra.workers.as_deref(), &spec);
    print_runs(&rows);
    if let Some(a) = &artifacts {
        print_artifacts(a);
    }
    for p in &extra.problems {
        errln!("warning: could not read {p}");
    }
    EXIT_OK
}

fn print_workers(workers: Option<&[Value]>, spec: &StoreSpec) {
    let Some(workers) = workers else {
        if spec.is_postgres() {
            outln!("workers: none has run on this database");
        }
        return;
    };
    let (live, gone): (Vec<&Value>, Vec<&Value>) = workers.iter().partition(|w| w["live"] == true);
    outln!(
        "workers: {} live{}",
        live.len(),
        if gone.is_empty() {
            String::new()
        } else {
            format!(
                ", {} not heard from for over {LIVE_WITHIN_S:.0} s",
                gone.len()
            )
        }
    );
    for w in live {
        let s = |k: &str| w[k].as_str().unwrap_or("-").to_string();
        outln!(
            "  {}  pmpo {}  {}{}  {} stage(s) done  heartbeat {:.0} s ago",
            s("worker_id"),
            s("version"),
            s("state"),
            w["job_id"]
                .as_str()
                .map(|j| format!(" (job {j})"))
                .unwrap_or_default(),
            w["stages_done"].as_i64().unwrap_or(0),
            w["heartbeat_age_s"].as_f64().unwrap_or(0.0),
        );
    }
}

fn print_runs(rows: &[Value]) {
    if rows.is_empty() {
        outln!("no runs yet");
        return;
    }
    outln!("runs ({}, newest first):", rows.len());
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        outln!(
            "{}  {:<11} {}/{} stages  {}  {}  started {}  finished {}",
            s("run_id"),
            s("status"),
            r["stages_done"].as_u64().unwrap_or(0),
            r["stages"].as_i64().unwrap_or(0),
            match r["host"].as_str() {
                Some(h) => format!("on {h} (pid {})", r["pid"]),
                None => format!("pid {}", r["pid"]),
            },
            s("plan"),
            s("started_at"),
            s("finished_at"),
        );
    }
}

fn print_artifacts(a: &Result<Vec<pmpo_store::provider::pg::StoredState>, String>) {
    match a {
        Ok(list) if list.is_empty() => outln!("artifact states in the database: none"),
        Ok(list) => {
            outln!("artifact states in the database ({}):", list.len());
            for s in list {
                outln!(
                    "  {}  {}  {}  version {}  saved by {} at {}",
                    s.name,
                    s.artifact_type,
                    s.status,
                    s.version,
                    s.saved_by,
                    s.updated_at
                );
            }
        }
        Err(e) => errln!("warning: could not read the artifact states: {e}"),
    }
}
