//! `pmpo worker`'s loop: claim a job, keep its lease, run it, record it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pmpo_engine::{CheckedPlan, Engine, JobPayload, RemoteJob, RemoteOutcome};
use pmpo_store::Workspace;
use pmpo_store::pg::PgConn;
use pmpo_store::pg::queue::{self, Claimed, Completed};
use pmpo_tools::ErrorClass;
use tokio_util::sync::CancellationToken;

/// The job a worker runs now, as its heartbeat renews it.
#[derive(Clone, Copy)]
struct Current {
    id: i64,
    epoch: i64,
}

/// What the heartbeat thread and the job's watcher share.
pub(super) struct Lease {
    current: Mutex<Option<Current>>,
    /// When the last renewal that succeeded was sent (ms since `origin`).
    renewed_ms: AtomicU64,
    /// The job is no longer this worker's (taken over or cancelled).
    fenced: AtomicBool,
    origin: Instant,
    pub(super) secs: f64,
}

impl Lease {
    fn since_renewal(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.renewed_ms.load(Ordering::SeqCst)))
    }
    fn renewed_at(&self, t: Instant) {
        let ms = t.duration_since(self.origin).as_millis() as u64;
        self.renewed_ms.store(ms, Ordering::SeqCst);
    }
}

/// The worker: its connections, name, version and what it has loaded.
pub(super) struct Worker {
    pub(super) conn: PgConn,
    pub(super) listener: PgConn,
    pub(super) ws: Workspace,
    pub(super) id: String,
    pub(super) version: String,
    pub(super) json: bool,
    pub(super) lease: Arc<Lease>,
    pub(super) stop: CancellationToken,
    plans: HashMap<String, (Arc<CheckedPlan>, Arc<Engine>)>,
    host: String,
}

/// Why a job's stage was stopped before its end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stopped {
    Fenced,
    LeaseLost,
    Stopping,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        conn: PgConn,
        listener: PgConn,
        ws: Workspace,
        id: String,
        version: String,
        json: bool,
        lease_secs: f64,
        stop: CancellationToken,
    ) -> Worker {
        Worker {
            conn,
            listener,
            ws,
            id,
            version,
            json,
            lease: Arc::new(Lease {
                current: Mutex::new(None),
                renewed_ms: AtomicU64::new(0),
                fenced: AtomicBool::new(false),
                origin: Instant::now(),
                secs: lease_secs,
            }),
            stop,
            plans: HashMap::new(),
            host: queue::host_name(),
        }
    }

    /// Starts the heartbeat: every third of a lease it renews the current
    /// job's lease and the worker's own row, on a connection of its own.
    pub(super) fn start_heartbeat(&self, url: &str) -> Result<(), pmpo_store::pg::PgError> {
        let hb = PgConn::connect(url, pmpo_store::pg::conn::default_patience())?;
        let lease = self.lease.clone();
        let id = self.id.clone();
        let stop = self.stop.clone();
        std::thread::Builder::new()
            .name("pmpo-worker-heartbeat".into())
            .spawn(move || {
                let every = Duration::from_secs_f64(lease.secs / 3.0);
                loop {
                    let tick = Instant::now();
                    while tick.elapsed() < every && !stop.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(100).min(every));
                    }
                    if stop.is_cancelled() && lease.current.lock().is_ok_and(|c| c.is_none()) {
                        return;
                    }
                    let cur = *lease.current.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = queue::worker_beat(&hb, &id, cur.map(|c| c.id));
                    let Some(cur) = cur else { continue };
                    let sent = Instant::now();
                    match queue::renew(&hb, cur.id, cur.epoch, &id, lease.secs) {
                        Ok(true) => {
                            let now = *lease.current.lock().unwrap_or_else(|p| p.into_inner());
                            // Only for the job that still runs (it may have ended meanwhile).
                            if now.is_some_and(|n| n.id == cur.id && n.epoch == cur.epoch) {
                                lease.renewed_at(sent);
                                let left = Duration::from_secs_f64(lease.secs)
                                    .saturating_sub(sent.elapsed());
                                super::guard::Guard::lease(Some(left));
                            }
                        }
                        Ok(false) => {
                            // Still the same job? (it may have ended meanwhile)
                            let now = *lease.current.lock().unwrap_or_else(|p| p.into_inner());
                            if now.is_some_and(|n| n.id == cur.id && n.epoch == cur.epoch) {
                                lease.fenced.store(true, Ordering::SeqCst);
                                pmpo_process::kill_live_groups();
                            }
                        }
                        Err(_) => {}
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| pmpo_store::pg::PgError::Connect {
                server: self.conn.server().to_string(),
                detail: format!("cannot start the heartbeat thread: {e}"),
            })
    }

    /// Claims and runs jobs until stopped, idle for `idle_exit`, or (with
    /// `once`) one job ran. Returns how many jobs ran.
    pub(super) fn serve(
        &mut self,
        rt: &tokio::runtime::Runtime,
        once: bool,
        idle_exit: Option<Duration>,
    ) -> usize {
        let mut ran = 0;
        let mut idle_since = Instant::now();
        while !self.stop.is_cancelled() {
            let sent = Instant::now();
            match queue::claim(&self.conn, &self.id, &self.version, self.lease.secs) {
                Ok(Some(job)) => {
                    self.run_claimed(rt, job, sent);
                    ran += 1;
                    if once {
                        break;
                    }
                    idle_since = Instant::now();
                }
                Ok(None) => {
                    if idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                        break;
                    }
                    let _ = self
                        .listener
                        .wait_notifications(Duration::from_millis(1000));
                }
                Err(e) => {
                    eprintln!("pmpo worker: cannot claim a job: {e}; trying again");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        ran
    }

    /// One claimed job: its lease kept, its stage run, its outcome recorded
    /// unless the lease was lost.
    fn run_claimed(&mut self, rt: &tokio::runtime::Runtime, c: Claimed, sent: Instant) {
        let claimed = Instant::now();
        self.lease.fenced.store(false, Ordering::SeqCst);
        self.lease.renewed_at(sent);
        *self.lease.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Current {
            id: c.id,
            epoch: c.epoch,
        });
        super::guard::Guard::lease(Some(
            Duration::from_secs_f64(self.lease.secs).saturating_sub(sent.elapsed()),
        ));
        let token = CancellationToken::new();
        let outcome = match self.job_of(&c) {
            Err(o) => o,
            Ok((job, plan, engine)) => rt.block_on(async {
                let run = pmpo_engine::run_job(
                    &engine, &self.ws, &plan, &job, &token, claimed, &self.host,
                );
                tokio::pin!(run);
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                loop {
                    tokio::select! {
                        o = &mut run => break o,
                        _ = tick.tick() => {
                            if self.why_stop().is_some() && !token.is_cancelled() {
                                if self.why_stop() != Some(Stopped::Stopping) {
                                    pmpo_process::kill_live_groups();
                                }
                                token.cancel();
                            }
                        }
                    }
                }
            }),
        };
        let why = self.why_stop();
        *self.lease.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        super::guard::Guard::lease(None);
        let seconds = claimed.elapsed().as_secs_f64();
        match why {
            Some(Stopped::Stopping) | Some(Stopped::LeaseLost) => {
                let back = queue::release(&self.conn, c.id, c.epoch, &self.id).unwrap_or(false);
                if !back {
                    // Someone holds it now (or it was cancelled): say who.
                    return self.fenced(&c, seconds);
                }
                let reason = if why == Some(Stopped::Stopping) {
                    "this worker is stopping".to_string()
                } else {
                    format!(
                        "no renewal of its lease reached the store for {:.1}s (the lease may be gone)",
                        self.lease.since_renewal().as_secs_f64()
                    )
                };
                self.say(
                    &c,
                    "stopped",
                    seconds,
                    &format!("{reason}; its stage was killed and its result discarded; the job is back in the queue"),
                );
            }
            Some(Stopped::Fenced) => self.fenced(&c, seconds),
            None => self.complete(&c, outcome, seconds),
        }
    }

    fn why_stop(&self) -> Option<Stopped> {
        if self.lease.fenced.load(Ordering::SeqCst) {
            Some(Stopped::Fenced)
        } else if self.lease.since_renewal().as_secs_f64() >= self.lease.secs {
            Some(Stopped::LeaseLost)
        } else if self.stop.is_cancelled() {
            Some(Stopped::Stopping)
        } else {
            None
        }
    }

    /// The job's plan (read from the shared workspace, kept by blake3), its
    /// engine, and the job itself; or the outcome that says why not.
    #[allow(clippy::type_complexity, clippy::result_large_err)]
    fn job_of(
        &mut self,
        c: &Claimed,
    ) -> Result<(RemoteJob, Arc<CheckedPlan>, Arc<Engine>), RemoteOutcome> {
        let payload: JobPayload = serde_json::from_str(&c.payload).map_err(|e| {
            RemoteOutcome::error(
                ErrorClass::BadToolOutput,
                format!("the job's payload is not readable by this worker: {e}"),
                Some("run the same pmpo version everywhere".into()),
            )
        })?;
        let job = RemoteJob {
            run_id: c.run_id.clone(),
            stage_id: c.stage_id.clone(),
            attempt: c.attempt,
            plan: c.plan.clone(),
            plan_blake3: c.plan_blake3.clone(),
            payload,
        };
        if let Some((plan, engine)) = self.plans.get(&c.plan_blake3) {
            return Ok((job, plan.clone(), engine.clone()));
        }
        let fail = |m: String| {
            RemoteOutcome::error(
                ErrorClass::InvalidInput,
                m,
                Some("every machine must see the same workspace, and a plan must not change while its run goes on".into()),
            )
        };
        // Confined like every path pmpo reads: no `..`, no link out of the workspace.
        let path: PathBuf = self.ws.resolve(&c.plan).map_err(|e| {
            fail(format!(
                "the job's plan `{}` cannot be read here: {e}",
                c.plan
            ))
        })?;
        let loaded = pmpo_plan::load_plan(&path).map_err(|d| {
            fail(format!(
                "cannot read the run's plan `{}` on this worker: {}",
                path.display(),
                d.first().map(|d| d.message.clone()).unwrap_or_default()
            ))
        })?;
        let base = Engine::default();
        let plan = base.prepare(loaded).map_err(|d| {
            fail(format!(
                "the run's plan `{}` does not pass its checks on this worker: {}",
                path.display(),
                d.first().map(|d| d.message.clone()).unwrap_or_default()
            ))
        })?;
        if plan.blake3 != c.plan_blake3 {
            return Err(fail(format!(
                "the plan changed under the run: `{}` has blake3 {} on this worker, the run was submitted with {}",
                path.display(),
                plan.blake3,
                c.plan_blake3
            )));
        }
        let engine = crate::ai_cli::engine_for(self.ws.root(), &Default::default(), &plan)
            .map_err(|e| fail(format!("cannot set up the run's model client: {e}")))?;
        let (plan, engine) = (Arc::new(plan), Arc::new(engine));
        self.plans
            .insert(c.plan_blake3.clone(), (plan.clone(), engine.clone()));
        Ok((job, plan, engine))
    }

    /// Records the outcome, exactly once, if the lease is still this worker's.
    fn complete(&self, c: &Claimed, mut outcome: RemoteOutcome, seconds: f64) {
        outcome.worker = self.id.clone();
        let digests = serde_json::to_string(&outcome.digests).unwrap_or_else(|_| "{}".into());
        let text = serde_json::to_string(&outcome).unwrap_or_else(|_| "{}".into());
        match queue::complete(
            &self.conn,
            c.id,
            c.epoch,
            &self.id,
            &text,
            &digests,
            outcome.claim_to_start_ms,
        ) {
            Ok(Completed::Recorded) => {
                let result = match (&outcome.error, outcome.termination) {
                    (Some(e), _) => format!("failed: {}", e.message),
                    (None, Some(pmpo_engine::WireTermination::Exited(0))) => "ok".into(),
                    (None, Some(t)) => {
                        use pmpo_engine::WireTermination as T;
                        match t {
                            T::Exited(c) => format!("ended: exited with code {c}"),
                            T::Signaled(s) => format!("ended: killed by signal {s}"),
                            T::TimedOut => "ended: timed out".into(),
                            T::Cancelled => "ended: cancelled".into(),
                        }
                    }
                    (None, None) => "ended".into(),
                };
                self.say(c, &result, seconds, "");
            }
            Ok(Completed::FencedOut(_)) => self.fenced(c, seconds),
            Err(e) => self.say(
                c,
                "unrecorded",
                seconds,
                &format!("{e}; the job will be taken over when its lease runs out"),
            ),
        }
    }

    /// Says why a result was discarded: who holds the job now.
    fn fenced(&self, c: &Claimed, seconds: f64) {
        let now = queue::job(&self.conn, c.id).ok().flatten();
        let why = match now {
            Some(v) if v.state == queue::CANCELLED => format!(
                "stage {} of run {}: its job was cancelled (epoch {}) while this worker held epoch {}; its result was discarded",
                c.stage_id, c.run_id, v.epoch, c.epoch
            ),
            Some(v) => format!(
                "stage {} of run {}: this worker's lease (epoch {}) was taken over by {} (epoch {}); its result was discarded",
                c.stage_id,
                c.run_id,
                c.epoch,
                v.worker.as_deref().unwrap_or("another worker"),
                v.epoch
            ),
            None => format!(
                "stage {} of run {}: its job is gone; its result was discarded",
                c.stage_id, c.run_id
            ),
        };
        self.say(c, "discarded", seconds, &why);
    }

    /// One line per job: stage, run, result, time (and why, if anything).
    fn say(&self, c: &Claimed, result: &str, seconds: f64, why: &str) {
        if self.json {
            let line = serde_json::json!({
                "job": c.id, "run": c.run_id, "stage": c.stage_id, "attempt": c.attempt,
                "epoch": c.epoch, "result": result, "seconds": seconds,
                "message": (!why.is_empty()).then_some(why),
            });
            outln!("{line}");
        } else if why.is_empty() {
            outln!(
                "stage {} of run {} (attempt {}): {result} in {seconds:.2}s",
                c.stage_id,
                c.run_id,
                c.attempt
            );
        } else {
            outln!(
                "stage {} of run {} (attempt {}): {result} in {seconds:.2}s: {why}",
                c.stage_id,
                c.run_id,
                c.attempt
            );
        }
    }
}
