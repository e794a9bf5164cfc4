//! The submitter's side of `pmpo execute --workers`: each attempt of a stage
//! becomes a job in the PostgreSQL queue; a thread of its own listens for
//! ended jobs and hands each outcome to the stage that waits for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pmpo_engine::{RemoteJob, RemoteOutcome, RemoteRunner, WireTermination};
use pmpo_store::pg::PgConn;
use pmpo_store::pg::queue::{self, Enqueued, JobView, NewJob};
use pmpo_tools::{ErrorClass, ToolError};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How long a job may wait unclaimed before the submitter says so.
const UNCLAIMED_NOTICE: Duration = Duration::from_secs(10);
/// How often the waiter looks at the queue when no notification came.
const POLL: Duration = Duration::from_millis(1000);

struct Waiting {
    tx: oneshot::Sender<JobView>,
    since: Instant,
}

struct Shared {
    waiting: Mutex<HashMap<i64, Waiting>>,
    stop: AtomicBool,
}

/// The queue as the engine's [`RemoteRunner`].
pub struct QueueRunner {
    conn: Arc<PgConn>,
    shared: Arc<Shared>,
    /// The runs this submitter has queued jobs for (see [`withdraw_once`]).
    runs: Arc<Mutex<std::collections::HashSet<String>>>,
    version: String,
    me: String,
}

impl Drop for QueueRunner {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl QueueRunner {
    /// Opens the queue at `url` (its tables made if missing) and starts the
    /// thread that waits for ended jobs.
    pub fn open(url: &str, version: &str) -> Result<QueueRunner, pmpo_store::pg::PgError> {
        let patience = pmpo_store::pg::conn::default_patience();
        let conn = Arc::new(PgConn::connect(url, patience)?);
        queue::ensure(&conn)?;
        let listener = PgConn::connect(url, patience)?;
        listener.listen(queue::DONE_CHANNEL)?;
        let shared = Arc::new(Shared {
            waiting: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let v = version.to_string();
        std::thread::Builder::new()
            .name("pmpo-jobs-waiter".into())
            .spawn(move || wait_loop(&listener, &s, &v))
            .map_err(|e| pmpo_store::pg::PgError::Connect {
                server: conn.server().to_string(),
                detail: format!("cannot start the waiting thread: {e}"),
            })?;
        Ok(QueueRunner {
            conn,
            shared,
            runs: Arc::default(),
            version: version.to_string(),
            me: format!("{}:{}", queue::host_name(), std::process::id()),
        })
    }

    /// The connection (checks before the run).
    pub fn conn(&self) -> &PgConn {
        &self.conn
    }

    async fn submit(
        &self,
        job: RemoteJob,
        cancel: &CancellationToken,
    ) -> Result<RemoteOutcome, ToolError> {
        let payload = serde_json::to_string(&job.payload)
            .map_err(|e| ToolError::new(ErrorClass::Io, format!("cannot write the job: {e}")))?;
        let new = NewJob {
            run_id: job.run_id.clone(),
            stage_id: job.stage_id.clone(),
            attempt: job.attempt,
            plan: job.plan.clone(),
            plan_blake3: job.plan_blake3.clone(),
            version: self.version.clone(),
            payload,
            submitted_by: self.me.clone(),
        };
        let conn = self.conn.clone();
        let runs = self.runs.clone();
        let added = tokio::task::spawn_blocking(move || {
            withdraw_once(&conn, &runs, &new.run_id)?;
            queue::enqueue(&conn, &new)
        })
        .await
        .map_err(|e| ToolError::new(ErrorClass::Io, e.to_string()))?
        .map_err(store_error)?;
        let id = match added {
            Enqueued::Added(id) => id,
            Enqueued::Duplicate(v) => return Err(duplicate(&v)),
        };
        let (tx, rx) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Waiting {
                    tx,
                    since: Instant::now(),
                },
            );
        let view = tokio::select! {
            v = rx => v.map_err(|_| ToolError::new(ErrorClass::Io, "the job's waiting thread ended"))?,
            _ = cancel.cancelled() => {
                self.shared.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                let conn = self.conn.clone();
                let _ = tokio::task::spawn_blocking(move || queue::cancel(&conn, id)).await;
                return Ok(RemoteOutcome {
                    termination: Some(WireTermination::Cancelled),
                    ..Default::default()
                });
            }
        };
        outcome_of(&view)
    }
}

impl RemoteRunner for QueueRunner {
    fn run<'a>(
        &'a self,
        job: RemoteJob,
        cancel: &'a CancellationToken,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<RemoteOutcome, ToolError>> + Send + 'a>,
    > {
        Box::pin(self.submit(job, cancel))
    }
}

/// Before its first job of a run, a submitter withdraws the jobs of that run
/// it finds in the queue: it holds the workspace lock, so they were left by
/// an earlier submitter of the run that died (`pmpo resume`, or `pmpo
/// execute` continuing an interrupted run). A worker still on one is fenced
/// out; the attempts that run again are queued anew.
fn withdraw_once(
    conn: &PgConn,
    runs: &Mutex<std::collections::HashSet<String>>,
    run_id: &str,
) -> Result<(), pmpo_store::pg::PgError> {
    let mut seen = runs.lock().unwrap_or_else(|p| p.into_inner());
    if seen.contains(run_id) {
        return Ok(());
    }
    let n = queue::cancel_run(conn, run_id)?;
    if n > 0 {
        eprintln!(
            "pmpo: withdrew {n} unfinished job(s) of run {run_id} left by its earlier submitter"
        );
    }
    seen.insert(run_id.to_string());
    Ok(())
}

fn store_error(e: pmpo_store::pg::PgError) -> ToolError {
    ToolError::new(ErrorClass::ServiceUnavailable, e.to_string()).hint(e.hint())
}

/// The message for a job submitted twice.
fn duplicate(v: &JobView) -> ToolError {
    ToolError::new(
        ErrorClass::InvalidInput,
        format!(
            "attempt {} of stage `{}` of run `{}` was already submitted by {} at {} (its job {} is {}): the same run is submitted twice",
            v.attempt, v.stage_id, v.run_id, v.submitted_by, v.submitted_at, v.id, v.state
        ),
    )
    .hint("only one pmpo may submit a run: stop the other one (or wait for it), then `pmpo resume` the run")
}

/// The outcome recorded in an ended job.
fn outcome_of(v: &JobView) -> Result<RemoteOutcome, ToolError> {
    if v.state == queue::CANCELLED {
        return Err(ToolError::new(
            ErrorClass::ToolFailed,
            format!(
                "job {} (stage `{}` of run `{}`) was cancelled by another process",
                v.id, v.stage_id, v.run_id
            ),
        )
        .hint("a newer submitter of the same run cancels the old one's jobs: see who runs it with `pmpo status`"));
    }
    let text = v.outcome.as_deref().unwrap_or("{}");
    let mut outcome: RemoteOutcome = serde_json::from_str(text).map_err(|e| {
        ToolError::new(
            ErrorClass::BadToolOutput,
            format!(
                "the outcome worker {} recorded for job {} is not readable: {e}",
                v.worker.as_deref().unwrap_or("?"),
                v.id
            ),
        )
        .hint("run the same pmpo version everywhere")
    })?;
    if let Some(d) = v
        .digests
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
    {
        outcome.digests = d;
    }
    if outcome.worker.is_empty() {
        outcome.worker = v.worker.clone().unwrap_or_default();
    }
    Ok(outcome)
}

/// The waiting thread: hands each ended job to its stage; says when jobs
/// wait unclaimed for long, and which workers could take them.
fn wait_loop(listener: &PgConn, shared: &Shared, version: &str) {
    let mut last_look = Instant::now();
    let mut noticed: Option<Instant> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let heard = listener.wait_notifications(POLL).unwrap_or_default();
        let ids: Vec<i64> = {
            let w = shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if heard.is_empty() && last_look.elapsed() < POLL {
                continue;
            }
            w.keys().copied().collect()
        };
        last_look = Instant::now();
        if ids.is_empty() {
            continue;
        }
        if let Ok(ended) = queue::ended(listener, &ids) {
            let mut w = shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
            for v in ended {
                if let Some(waiting) = w.remove(&v.id) {
                    let _ = waiting.tx.send(v);
                }
            }
        }
        let oldest = {
            let w = shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
            w.iter()
                .filter(|(_, x)| x.since.elapsed() >= UNCLAIMED_NOTICE)
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
        };
        if !oldest.is_empty()
            && noticed.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
            && let Some(line) = unclaimed_notice(listener, &oldest, version)
        {
            eprintln!("{line}");
            noticed = Some(Instant::now());
        }
    }
}

/// One line about jobs still queued after [`UNCLAIMED_NOTICE`], naming the
/// live workers (and those of another version); `None` if all were claimed.
fn unclaimed_notice(conn: &PgConn, ids: &[i64], version: &str) -> Option<String> {
    let queued = ids
        .iter()
        .filter_map(|id| queue::job(conn, *id).ok().flatten())
        .filter(|v| v.state == queue::QUEUED)
        .count();
    if queued == 0 {
        return None;
    }
    let workers = queue::live_workers(conn, 30.0).unwrap_or_default();
    let mut line = format!(
        "pmpo: {queued} job(s) wait unclaimed for more than {}s; ",
        UNCLAIMED_NOTICE.as_secs()
    );
    if workers.is_empty() {
        line.push_str("no live worker: start `pmpo worker` on a machine that mounts the workspace");
        return Some(line);
    }
    let same: Vec<&str> = workers
        .iter()
        .filter(|w| w.version == version)
        .map(|w| w.worker_id.as_str())
        .collect();
    line.push_str(&format!("{} live worker(s) run pmpo {version}", same.len()));
    if !same.is_empty() {
        line.push_str(&format!(" ({}, all busy)", same.join(", ")));
    }
    for w in workers.iter().filter(|w| w.version != version) {
        line.push_str(&format!(
            "; worker {} runs pmpo {}, this run needs {version}: run the same version everywhere",
            w.worker_id, w.version
        ));
    }
    Some(line)
}
