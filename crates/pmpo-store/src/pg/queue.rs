//! The job queue of `pmpo execute --workers` and `pmpo worker`.
//!
//! A submitter enqueues one job per attempt of a stage; a worker claims the
//! oldest ready job of its own pmpo version with `FOR UPDATE SKIP LOCKED`
//! under a lease (times of the database, never of the machines), renews the
//! lease while the stage runs, and records the outcome in one statement that
//! also checks the lease's epoch (a fencing token): a worker whose lease was
//! taken over, or whose job was cancelled, cannot complete it. Triggers send
//! `NOTIFY pmpo_jobs` when a job becomes ready and `NOTIFY pmpo_done` (the
//! job id) when it ends, so nobody has to poll fast.

use super::conn::{PgConn, PgError, Row, Val};

/// The tables, their index and triggers. Safe to run again (every statement
/// is `IF NOT EXISTS` or `OR REPLACE`); run it under [`DDL_LOCK`] (see
/// [`ensure`]) so that concurrent openers do not race.
pub const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS pmpo_jobs (
    id BIGINT PRIMARY KEY,
    run_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    plan TEXT NOT NULL,
    plan_blake3 TEXT NOT NULL,
    version TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    worker TEXT,
    epoch BIGINT NOT NULL DEFAULT 0,
    lease_until TIMESTAMPTZ,
    submitted_by TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    claimed_at TEXT,
    finished_at TEXT,
    outcome TEXT,
    digests TEXT,
    claim_to_start_ms DOUBLE PRECISION,
    UNIQUE (run_id, stage_id, attempt)
);
CREATE INDEX IF NOT EXISTS pmpo_jobs_ready ON pmpo_jobs (version, state, id);
CREATE TABLE IF NOT EXISTS pmpo_workers (
    worker_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    version TEXT NOT NULL,
    workspace TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat TIMESTAMPTZ NOT NULL DEFAULT now(),
    job BIGINT,
    stopped BOOLEAN NOT NULL DEFAULT false
);
CREATE OR REPLACE FUNCTION pmpo_jobs_notify() RETURNS trigger AS $$
BEGIN
    IF NEW.state = 'queued' THEN
        PERFORM pg_notify('pmpo_jobs', '');
    ELSIF NEW.state IN ('done', 'cancelled') THEN
        PERFORM pg_notify('pmpo_done', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER pmpo_jobs_inserted AFTER INSERT ON pmpo_jobs
    FOR EACH ROW EXECUTE FUNCTION pmpo_jobs_notify();
CREATE OR REPLACE TRIGGER pmpo_jobs_changed AFTER UPDATE OF state ON pmpo_jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION pmpo_jobs_notify();
"#;

/// The advisory lock key under which [`ensure`] creates the tables.
pub const DDL_LOCK: i64 = super::schema::MIGRATE_LOCK;

/// Channel notified when a job is ready to claim.
pub const READY_CHANNEL: &str = "pmpo_jobs";
/// Channel notified (payload: the job id) when a job is done or cancelled.
pub const DONE_CHANNEL: &str = "pmpo_done";

/// Creates the queue's tables if they are not there (idempotent; safe
/// against other processes doing the same at the same time).
pub fn ensure(conn: &PgConn) -> Result<(), PgError> {
    conn.batch(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({DDL_LOCK}); {DDL} COMMIT;"
    ))
}

/// The state of a job.
pub const QUEUED: &str = "queued";
pub const CLAIMED: &str = "claimed";
pub const DONE: &str = "done";
pub const CANCELLED: &str = "cancelled";

/// A job as a submitter writes it.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub run_id: String,
    pub stage_id: String,
    pub attempt: i64,
    /// Workspace-relative path of the plan.
    pub plan: String,
    pub plan_blake3: String,
    pub version: String,
    /// JSON: the tool as written, the resolved inputs, the timeout, the reads.
    pub payload: String,
    /// `host:pid` of the submitter.
    pub submitted_by: String,
}

/// A job as a worker claimed it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub run_id: String,
    pub stage_id: String,
    pub attempt: i64,
    pub plan: String,
    pub plan_blake3: String,
    pub payload: String,
    pub epoch: i64,
}

/// A job's row as others see it (messages, waiting submitters, tests).
#[derive(Debug, Clone)]
pub struct JobView {
    pub id: i64,
    pub run_id: String,
    pub stage_id: String,
    pub attempt: i64,
    pub state: String,
    pub worker: Option<String>,
    pub epoch: i64,
    pub submitted_by: String,
    pub submitted_at: String,
    pub outcome: Option<String>,
    pub digests: Option<String>,
    pub version: String,
}

const VIEW_COLUMNS: &str = "id, run_id, stage_id, attempt, state, worker, epoch, submitted_by, \
     submitted_at, outcome, digests, version";

fn view(r: &Row) -> JobView {
    let text = |k: usize| r.get(k).and_then(Val::text).unwrap_or_default();
    let int = |k: usize| r.get(k).and_then(Val::int).unwrap_or_default();
    JobView {
        id: int(0),
        run_id: text(1),
        stage_id: text(2),
        attempt: int(3),
        state: text(4),
        worker: r.get(5).and_then(Val::text),
        epoch: int(6),
        submitted_by: text(7),
        submitted_at: text(8),
        outcome: r.get(9).and_then(Val::text),
        digests: r.get(10).and_then(Val::text),
        version: text(11),
    }
}

/// A fresh job id: microseconds since the epoch times 1000 plus a counter of
/// this process, so ids are unique across machines in practice, ordered by
/// time, and chosen before the insert (a replayed insert is idempotent).
pub fn new_job_id() -> i64 {
    super::store::new_id()
}

/// What enqueuing found.
#[derive(Debug)]
pub enum Enqueued {
    /// The job is in the queue under this id.
    Added(i64),
    /// The same run, stage and attempt were submitted already.
    Duplicate(Box<JobView>),
}

/// Enqueues a job (one statement; the insert trigger notifies the workers).
/// The same run, stage and attempt submitted before is not replaced.
pub fn enqueue(conn: &PgConn, job: &NewJob) -> Result<Enqueued, PgError> {
    let id = new_job_id();
    // What the job is, in the order both statements below number it.
    let fields: Vec<Val> = vec![
        job.run_id.as_str().into(),
        job.stage_id.as_str().into(),
        job.attempt.into(),
        job.plan.as_str().into(),
        job.plan_blake3.as_str().into(),
        job.version.as_str().into(),
        job.payload.as_str().into(),
        job.submitted_by.as_str().into(),
        crate::now_rfc3339().into(),
    ];
    let rows = conn.once(
        "INSERT INTO pmpo_jobs (id, run_id, stage_id, attempt, plan, plan_blake3, version, payload, \
         submitted_by, submitted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (run_id, stage_id, attempt) DO NOTHING RETURNING id",
        std::iter::once(Val::from(id)).chain(fields.clone()).collect(),
        true,
    )?;
    if !rows.is_empty() {
        return Ok(Enqueued::Added(id));
    }
    // A cancelled job of the same attempt (its submitter died, and the run's
    // new submitter withdrew it) is taken over: queued again under a new
    // epoch, so whoever held it before cannot complete it.
    let again = conn.once(
        "UPDATE pmpo_jobs SET state = 'queued', worker = NULL, epoch = epoch + 1, lease_until = NULL, \
         plan = $4, plan_blake3 = $5, version = $6, payload = $7, submitted_by = $8, submitted_at = $9, \
         claimed_at = NULL, finished_at = NULL, outcome = NULL, digests = NULL, claim_to_start_ms = NULL \
         WHERE run_id = $1 AND stage_id = $2 AND attempt = $3 AND state = 'cancelled' RETURNING id",
        fields,
        true,
    )?;
    if let Some(id) = again.first().and_then(|r| r.first()).and_then(Val::int) {
        return Ok(Enqueued::Added(id));
    }
    let found = conn.query(
        &format!(
            "SELECT {VIEW_COLUMNS} FROM pmpo_jobs WHERE run_id = $1 AND stage_id = $2 AND attempt = $3"
        ),
        vec![
            job.run_id.as_str().into(),
            job.stage_id.as_str().into(),
            job.attempt.into(),
        ],
    )?;
    match found.first().map(view) {
        // Our own insert, replayed after a lost answer.
        Some(v) if v.id == id => Ok(Enqueued::Added(id)),
        Some(v) => Ok(Enqueued::Duplicate(Box::new(v))),
        None => Err(PgError::Sql {
            server: conn.server().to_string(),
            code: None,
            detail: format!(
                "the job of stage `{}` of run `{}` was neither added nor found",
                job.stage_id, job.run_id
            ),
        }),
    }
}

/// Claims the oldest ready job of `version` (queued, or claimed under a
/// lease that has run out) for `worker`, with a lease of `lease_secs`.
pub fn claim(
    conn: &PgConn,
    worker: &str,
    version: &str,
    lease_secs: f64,
) -> Result<Option<Claimed>, PgError> {
    let rows = conn.once(
        "UPDATE pmpo_jobs SET state = 'claimed', worker = $1, epoch = epoch + 1, \
         lease_until = now() + make_interval(secs => $2), claimed_at = $3 \
         WHERE id = (SELECT id FROM pmpo_jobs WHERE version = $4 \
           AND (state = 'queued' OR (state = 'claimed' AND lease_until < now())) \
           ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) \
         RETURNING id, run_id, stage_id, attempt, plan, plan_blake3, payload, epoch",
        vec![
            worker.into(),
            lease_secs.into(),
            crate::now_rfc3339().into(),
            version.into(),
        ],
        // A claim whose answer was lost is not repeated: the job stays
        // claimed by nobody who knows it until its lease runs out.
        false,
    )?;
    Ok(rows.first().map(|r| {
        let text = |k: usize| r.get(k).and_then(Val::text).unwrap_or_default();
        let int = |k: usize| r.get(k).and_then(Val::int).unwrap_or_default();
        Claimed {
            id: int(0),
            run_id: text(1),
            stage_id: text(2),
            attempt: int(3),
            plan: text(4),
            plan_blake3: text(5),
            payload: text(6),
            epoch: int(7),
        }
    }))
}

/// Renews a lease; false when the job is no longer this worker's under this
/// epoch (taken over, cancelled, or done).
pub fn renew(
    conn: &PgConn,
    id: i64,
    epoch: i64,
    worker: &str,
    lease_secs: f64,
) -> Result<bool, PgError> {
    let rows = conn.once(
        "UPDATE pmpo_jobs SET lease_until = now() + make_interval(secs => $1) \
         WHERE id = $2 AND epoch = $3 AND worker = $4 AND state = 'claimed' RETURNING id",
        vec![lease_secs.into(), id.into(), epoch.into(), worker.into()],
        true,
    )?;
    Ok(!rows.is_empty())
}

/// What a completion found.
#[derive(Debug)]
pub enum Completed {
    /// Recorded (exactly once).
    Recorded,
    /// The lease was not this worker's any more: the result was discarded.
    FencedOut(Box<JobView>),
}

/// Records a job's outcome in one transaction, only if the job is still
/// claimed by `worker` under `epoch` (the fencing check).
pub fn complete(
    conn: &PgConn,
    id: i64,
    epoch: i64,
    worker: &str,
    outcome: &str,
    digests: &str,
    claim_to_start_ms: Option<f64>,
) -> Result<Completed, PgError> {
    let changed = conn.write(
        "UPDATE pmpo_jobs SET state = 'done', outcome = $1, digests = $2, finished_at = $3, \
         claim_to_start_ms = $4, lease_until = NULL \
         WHERE id = $5 AND epoch = $6 AND worker = $7 AND state = 'claimed'",
        vec![
            outcome.into(),
            digests.into(),
            crate::now_rfc3339().into(),
            claim_to_start_ms.into(),
            id.into(),
            epoch.into(),
            worker.into(),
        ],
    );
    let changed = match changed.and_then(|n| conn.commit().map(|()| n)) {
        Ok(n) => n,
        Err(e) => {
            let _ = conn.rollback();
            return Err(e);
        }
    };
    let now = job(conn, id)?;
    match now {
        Some(_) if changed > 0 => Ok(Completed::Recorded),
        // A replayed commit whose first answer was lost: it was ours.
        Some(v) if v.state == DONE && v.epoch == epoch && v.worker.as_deref() == Some(worker) => {
            Ok(Completed::Recorded)
        }
        Some(v) => Ok(Completed::FencedOut(Box::new(v))),
        None => Err(PgError::Sql {
            server: conn.server().to_string(),
            code: None,
            detail: format!("job {id} is not in the queue any more"),
        }),
    }
}

/// Gives a claimed job back to the queue (a worker stopping): the next claim
/// takes it with a new epoch.
pub fn release(conn: &PgConn, id: i64, epoch: i64, worker: &str) -> Result<bool, PgError> {
    let rows = conn.once(
        "UPDATE pmpo_jobs SET state = 'queued', worker = NULL, lease_until = NULL \
         WHERE id = $1 AND epoch = $2 AND worker = $3 AND state = 'claimed' RETURNING id",
        vec![id.into(), epoch.into(), worker.into()],
        true,
    )?;
    Ok(!rows.is_empty())
}

/// Cancels a job that has not ended (its worker, if any, is fenced out and
/// kills the stage). Returns whether it was cancelled now.
pub fn cancel(conn: &PgConn, id: i64) -> Result<bool, PgError> {
    let rows = conn.once(
        "UPDATE pmpo_jobs SET state = 'cancelled', epoch = epoch + 1, lease_until = NULL \
         WHERE id = $1 AND state IN ('queued', 'claimed') RETURNING id",
        vec![id.into()],
        true,
    )?;
    Ok(!rows.is_empty())
}

/// Withdraws every job of a run (those left by a submitter that died: the
/// run's new submitter owns the run now, and runs again what it needs; a
/// worker still on one is fenced out). Returns how many were not done.
pub fn cancel_run(conn: &PgConn, run_id: &str) -> Result<u64, PgError> {
    conn.once(
        "UPDATE pmpo_jobs SET state = 'cancelled' WHERE run_id = $1 AND state = 'done' RETURNING id",
        vec![run_id.into()],
        true,
    )?;
    let rows = conn.once(
        "UPDATE pmpo_jobs SET state = 'cancelled', epoch = epoch + 1, lease_until = NULL \
         WHERE run_id = $1 AND state IN ('queued', 'claimed') RETURNING id",
        vec![run_id.into()],
        true,
    )?;
    Ok(rows.len() as u64)
}

/// One job by id.
pub fn job(conn: &PgConn, id: i64) -> Result<Option<JobView>, PgError> {
    let rows = conn.query(
        &format!("SELECT {VIEW_COLUMNS} FROM pmpo_jobs WHERE id = $1"),
        vec![id.into()],
    )?;
    Ok(rows.first().map(view))
}

/// The jobs among `ids` that ended (done or cancelled).
pub fn ended(conn: &PgConn, ids: &[i64]) -> Result<Vec<JobView>, PgError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let rows = conn.query(
        &format!(
            "SELECT {VIEW_COLUMNS} FROM pmpo_jobs \
             WHERE id = ANY(string_to_array($1, ',')::bigint[]) AND state IN ('done', 'cancelled')"
        ),
        vec![list.into()],
    )?;
    Ok(rows.iter().map(view).collect())
}

/// A worker as `pmpo_workers` has it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub worker_id: String,
    pub version: String,
    pub workspace: String,
    /// Seconds since its last heartbeat (the database's clock).
    pub silent_secs: f64,
    pub job: Option<i64>,
}

/// Registers (or re-registers) a worker.
pub fn register_worker(
    conn: &PgConn,
    worker_id: &str,
    version: &str,
    workspace: &str,
) -> Result<(), PgError> {
    conn.once(
        "INSERT INTO pmpo_workers (worker_id, host, pid, version, workspace, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (worker_id) DO UPDATE \
         SET heartbeat = now(), stopped = false RETURNING worker_id",
        vec![
            worker_id.into(),
            host_name().into(),
            i64::from(std::process::id()).into(),
            version.into(),
            workspace.into(),
            crate::now_rfc3339().into(),
        ],
        true,
    )?;
    Ok(())
}

/// A worker's heartbeat, with the job it runs now.
pub fn worker_beat(conn: &PgConn, worker_id: &str, job: Option<i64>) -> Result<(), PgError> {
    conn.once(
        "UPDATE pmpo_workers SET heartbeat = now(), job = $2 WHERE worker_id = $1 RETURNING worker_id",
        vec![worker_id.into(), job.into()],
        true,
    )?;
    Ok(())
}

/// A worker that stops says so.
pub fn worker_stopped(conn: &PgConn, worker_id: &str) -> Result<(), PgError> {
    conn.once(
        "UPDATE pmpo_workers SET stopped = true, job = NULL WHERE worker_id = $1 RETURNING worker_id",
        vec![worker_id.into()],
        true,
    )?;
    Ok(())
}

/// The workers that beat within `within_secs` and did not stop.
pub fn live_workers(conn: &PgConn, within_secs: f64) -> Result<Vec<WorkerView>, PgError> {
    let rows = conn.query(
        "SELECT worker_id, version, workspace, \
         EXTRACT(EPOCH FROM now() - heartbeat)::double precision, job FROM pmpo_workers \
         WHERE NOT stopped AND heartbeat > now() - make_interval(secs => $1) ORDER BY worker_id",
        vec![within_secs.into()],
    )?;
    Ok(rows
        .iter()
        .map(|r| WorkerView {
            worker_id: r.first().and_then(Val::text).unwrap_or_default(),
            version: r.get(1).and_then(Val::text).unwrap_or_default(),
            workspace: r.get(2).and_then(Val::text).unwrap_or_default(),
            silent_secs: r.get(3).and_then(Val::real).unwrap_or_default(),
            job: r.get(4).and_then(Val::int),
        })
        .collect())
}

/// `pmpo gc`: removes the ended jobs (done, cancelled) of every run but
/// `keep`, and the rows of workers that stopped or have not been heard from
/// for a day. A job still queued or claimed is never removed. Returns
/// (jobs, workers) removed.
pub fn prune(conn: &PgConn, keep: &[String]) -> Result<(u64, u64), PgError> {
    // Run ids hold no comma (`20261129T210720Z-648273`).
    let keep = keep.join(",");
    let jobs = conn.once(
        "WITH gone AS (DELETE FROM pmpo_jobs WHERE state IN ('done', 'cancelled') \
         AND NOT (run_id = ANY (string_to_array($1, ','))) RETURNING 1) SELECT count(*) FROM gone",
        vec![keep.into()],
        false,
    )?;
    let workers = conn.once(
        "WITH gone AS (DELETE FROM pmpo_workers WHERE stopped OR heartbeat < now() - interval '1 day' \
         RETURNING 1) SELECT count(*) FROM gone",
        vec![],
        false,
    )?;
    let n = |rows: &[super::Row]| rows.first().and_then(|r| r[0].int()).unwrap_or(0) as u64;
    Ok((n(&jobs), n(&workers)))
}

pub use super::schema::host_name;
