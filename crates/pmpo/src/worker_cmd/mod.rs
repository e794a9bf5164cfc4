//! `pmpo worker` and `pmpo execute --workers`: stages run on any machine
//! that mounts the shared workspace, through a job queue in the PostgreSQL
//! store. See docs/workers.md.

mod guard;
mod marker;
mod run;
mod submit;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pmpo_engine::ExecuteOptions;
use pmpo_store::Workspace;
use pmpo_store::db::{StoreSpec, store_spec};
use pmpo_store::pg::{PgConn, PgError};

use crate::error::CliError;

/// How many stages `--workers` may have queued at once unless `--jobs` says.
pub const QUEUED_AT_ONCE: usize = 256;

/// Test-only: the pmpo version a worker says it runs (to test a worker of
/// another version). Never set it outside tests.
pub const VERSION_FOR_TESTS: &str = "PMPO_WORKER_VERSION_FOR_TESTS";

pub const WORKER_HELP: &str = concat!(
    "A worker claims the stages that `pmpo execute --workers` (or `pmpo resume --workers`) queues in the ",
    "PostgreSQL store, runs each one here (the same tools and sandbox as `pmpo execute`), and records its ",
    "outcome. Start one on every machine that mounts the shared workspace; each runs one stage at a time.\n\n",
    "A worker needs a PostgreSQL store (--store, PMPO_STORE or [store] in pmpo.toml) and the same workspace ",
    "as the submitter (checked with the marker .state/workspace-id). It claims only jobs of its own pmpo ",
    "version, under a lease that it renews; a worker that loses its lease kills the stage at once, and its ",
    "result is discarded. SIGINT or SIGTERM: the running stage is stopped and its job goes back to the queue; ",
    "a second signal stops the worker at once (its guard kills the stage, whose job is taken over when its lease runs out).\n\n",
    "Examples:\n",
    "  pmpo worker -w /shared/site --store postgres://pmpo@db.internal/pmpo\n",
    "  pmpo worker --once --idle-exit 30s\n\n",
    "Exit codes: 0 stopped normally (signal, --once, --idle-exit), 2 bad usage, not a PostgreSQL store, a server that cannot be reached, ",
    "or a database that serves another workspace or has a newer schema, 1 the workspace cannot be used. See docs/workers.md."
);

/// `pmpo worker`.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The shared workspace, as this machine mounts it (default: the current directory).
    #[arg(long, short = 'w', value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// How long a claimed stage stays this worker's without a renewal; renewed every
    /// third of it. A worker that dies is replaced after at most this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::parse_duration)]
    lease: Duration,
    /// Run one stage, then exit.
    #[arg(long)]
    once: bool,
    /// Exit after this long with nothing to claim (default: wait for ever).
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration)]
    idle_exit: Option<Duration>,
    /// One JSON object per stage on stdout instead of a line of text.
    #[arg(long)]
    json: bool,
    /// Internal: the guard process a worker starts to kill its stage if it dies.
    #[arg(long, hide = true)]
    guard: bool,
}

/// The pmpo version of this binary (a worker's may be overridden in tests).
fn version(worker: bool) -> String {
    if worker && let Ok(v) = std::env::var(VERSION_FOR_TESTS) {
        return v;
    }
    env!("CARGO_PKG_VERSION").to_string()
}

/// The PostgreSQL URL of the workspace's store, or why there is none.
fn pg_url(root: &std::path::Path, what: &str) -> Result<String, CliError> {
    match store_spec(root) {
        Ok(StoreSpec::Postgres(url)) => Ok(url),
        Ok(StoreSpec::Sqlite) => Err(CliError::invalid(format!(
            "{what} needs a PostgreSQL store, and this workspace's store is SQLite (.state/pmpo.db, one machine)"
        ))
        .hint("set PMPO_STORE=postgres://USER@HOST/DB (or pass --store, or set [store] url in pmpo.toml) on every machine")),
        Err(e) => Err(CliError::invalid(&e).hint(e.hint())),
    }
}

/// A server that cannot be reached is a setting at fault (exit 2), as for
/// every command; anything else is a failure.
fn pg_error(e: PgError) -> CliError {
    if matches!(e, PgError::Connect { .. }) {
        CliError::invalid(&e).hint(e.hint())
    } else {
        CliError::failed(&e).hint(e.hint())
    }
}

/// `pmpo worker`.
pub fn worker(args: WorkerArgs) -> u8 {
    if args.guard {
        return guard::serve();
    }
    let root = args.workspace.clone().unwrap_or_else(|| PathBuf::from("."));
    let root = root.canonicalize().unwrap_or(root);
    if !root.is_dir() {
        return CliError::invalid(format!("workspace `{}` is not a directory", root.display()))
            .hint("mount the shared workspace and pass its path with -w")
            .report();
    }
    match serve(&args, &root) {
        Ok(()) => crate::EXIT_OK,
        Err(e) => e.report(),
    }
}

fn serve(args: &WorkerArgs, root: &std::path::Path) -> Result<(), CliError> {
    let url = pg_url(root, "pmpo worker")?;
    let ws = Workspace::open(root).map_err(|e| CliError::failed(&e).hint(e.hint()))?;
    let patience = pmpo_store::pg::conn::default_patience();
    let conn = PgConn::connect(&url, patience).map_err(pg_error)?;
    pmpo_store::pg::queue::ensure(&conn).map_err(pg_error)?;
    marker::check(&conn, &ws)?;
    let listener = PgConn::connect(&url, patience).map_err(pg_error)?;
    listener
        .listen(pmpo_store::pg::queue::READY_CHANNEL)
        .map_err(pg_error)?;
    let version = version(true);
    let started = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let id = format!(
        "{}:{}:{started}",
        pmpo_store::pg::queue::host_name(),
        std::process::id()
    );
    pmpo_store::pg::queue::register_worker(&conn, &id, &version, &ws.root().display().to_string())
        .map_err(pg_error)?;
    let guard = guard::Guard::start()
        .map_err(|e| CliError::failed(format!("cannot start the worker's guard process: {e}")))?;
    let Some(rt) = crate::runtime() else {
        return Err(CliError::failed("cannot start the async runtime"));
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    let _signals = crate::signals::on_terminating_signals(move || on_signal.cancel());
    let lease = args.lease.as_secs_f64().max(0.3);
    let mut w = run::Worker::new(
        conn,
        listener,
        ws,
        id.clone(),
        version.clone(),
        args.json,
        lease,
        stop.clone(),
    );
    w.start_heartbeat(&url).map_err(pg_error)?;
    if !args.json {
        errln!(
            "pmpo worker {id}: pmpo {version}, workspace {}, lease {lease:.1}s; waiting for stages",
            root.display()
        );
    }
    let ran = w.serve(&rt, args.once, args.idle_exit);
    stop.cancel();
    let _ = pmpo_store::pg::queue::worker_stopped(&w.conn, &id);
    guard.finish();
    if !args.json {
        errln!("pmpo worker {id}: stopped after {ran} stage(s)");
    }
    Ok(())
}

/// `--workers`: the engine's tool calls become jobs in the queue.
pub(crate) fn prepare_submit(
    opts: &mut ExecuteOptions,
    jobs_given: bool,
    workspace: &std::path::Path,
) -> Result<(), CliError> {
    let url = pg_url(workspace, "--workers")?;
    let ws = Workspace::open(workspace).map_err(|e| CliError::failed(&e).hint(e.hint()))?;
    let runner = submit::QueueRunner::open(&url, &version(false)).map_err(pg_error)?;
    marker::check(runner.conn(), &ws)?;
    if !jobs_given {
        opts.jobs = QUEUED_AT_ONCE;
    }
    opts.remote = Some(Arc::new(runner));
    Ok(())
}
