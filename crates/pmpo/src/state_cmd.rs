//! Commands over the execution store: status, ledger, gc (restore is in
//! `restore_cmd.rs`).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use pmpo_store::db::{
    ExecStore, PATCH_INTERRUPTED, PATCH_PENDING, PATCH_UNDECLARED, PatchRow, is_open_intent,
};
use pmpo_store::lock::{self, LockHolder};
use pmpo_store::{BACKUP_DIR, Workspace, now_rfc3339};

use pmpo_engine::StageStatus;
use pmpo_engine::results::Summary;
use pmpo_store::states::{PatchState, RunStatus};

use crate::EXIT_OK;
use crate::error::CliError;

mod status_all;

/// Prints an error with its fix; returns the exit code for a failed command.
pub fn fail(message: &str, help: &str) -> u8 {
    CliError::failed(message).hint(help).report()
}

pub(crate) fn open_ws(dir: &Path) -> Result<Workspace, u8> {
    Workspace::open(dir).map_err(|e| {
        CliError::invalid(e)
            .hint("pass --workspace DIR (a directory where pmpo has run)")
            .report()
    })
}

/// Opens the workspace's execution store; an absent store is an error that says so.
pub fn open_db(dir: &Path) -> Result<Box<dyn ExecStore>, u8> {
    let ws = open_ws(dir)?;
    let failed = |e: pmpo_store::db::DbError| {
        let code = if e.is_setting() {
            crate::EXIT_INVALID
        } else {
            crate::EXIT_STAGE_FAILED
        };
        CliError::with_code(&e, code).hint(e.hint()).report()
    };
    let exists = pmpo_store::db::store_exists(ws.root()).map_err(failed)?;
    if !exists {
        return Err(CliError::invalid(format!(
            "no pmpo runs in `{}` (no {})",
            dir.display(),
            pmpo_store::db::DB_FILE
        ))
        .hint("run `pmpo execute PLAN` first, or pass --workspace DIR")
        .report());
    }
    pmpo_store::db::open_store(ws.root()).map_err(failed)
}

pub(crate) fn take_lock(ws: &Workspace, command: &str) -> Result<lock::WorkspaceLock, u8> {
    let holder = LockHolder {
        pid: std::process::id(),
        run_id: String::new(),
        since: now_rfc3339(),
        command: command.into(),
        host: String::new(),
    };
    lock::acquire(ws, &holder, false).map_err(|e| match e {
        lock::LockError::Busy(_) => CliError::busy(&e)
            .hint("wait for the running pmpo to finish")
            .report(),
        // Not another pmpo: the lock file itself cannot be made (read-only,
        // permission, disk full). Say that, not "busy".
        lock::LockError::Store(s) => fail(&s.to_string(), s.hint()),
    })
}

/// For a command that changes the workspace's files or store: the lock (no
/// run is live while it is held), the store, and the pending intents of a run
/// that died settled as interrupted.
pub(crate) fn settled_store(
    ws: &Workspace,
    dir: &Path,
    command: &str,
) -> Result<(lock::WorkspaceLock, Box<dyn ExecStore>), u8> {
    let held = take_lock(ws, command)?;
    let mut db = open_db(dir)?;
    if let Err(e) = pmpo_engine::intents::settle_interrupted(ws, db.as_mut()) {
        return Err(fail(&e.to_string(), e.hint().as_str()));
    }
    Ok((held, db))
}

pub(crate) fn print_json(value: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// A named artifact (without it: the workspace's runs).
    name: Option<String>,
    /// The workspace directory.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    /// How many recent runs to list.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Every run in the store, from every machine and every plan, newest
    /// first, with the machine that ran it (when known), the live workers and
    /// the artifact states kept in the database (overrides --runs).
    #[arg(long)]
    all: bool,
    /// Print as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn status(args: StatusArgs) -> u8 {
    if let Some(name) = &args.name {
        let ws = crate::artifact_cmd::WsArgs {
            workspace: args.workspace.clone(),
            json: args.json,
        };
        return crate::artifact_cmd::status(name, &ws);
    }
    let ws = match open_ws(&args.workspace) {
        Ok(w) => w,
        Err(c) => return c,
    };
    let live = lock::current_holder(&ws);
    let mut db = match open_db(&args.workspace) {
        Ok(db) => db,
        Err(c) => return c,
    };
    let limit = if args.all {
        i64::MAX as usize
    } else {
        args.runs
    };
    let runs = match db.runs(limit) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string(), e.hint()),
    };
    let mut rows = Vec::new();
    for run in runs {
        let tasks = db.tasks(&run.run_id).unwrap_or_default();
        // The same counts as the run's summary: stages without a row never started.
        let mut statuses: Vec<StageStatus> = tasks.iter().map(|t| t.status).collect();
        statuses.resize(
            (run.stages.max(0) as usize).max(statuses.len()),
            StageStatus::Pending,
        );
        let summary = Summary::of(statuses);
        let is_live = live.as_ref().is_some_and(|h| h.run_id == run.run_id);
        let state = match run.status {
            RunStatus::Running if !is_live => INTERRUPTED,
            other => other.as_str(),
        };
        let current = tasks
            .iter()
            .find(|t| t.status == StageStatus::InProgress)
            .map(|t| t.stage_id.clone());
        rows.push(serde_json::json!({
            "run_id": run.run_id, "plan": run.plan, "status": state, "pid": run.pid, "started_at": run.started_at,
            "finished_at": run.finished_at, "heartbeat_at": run.heartbeat_at, "stages_done": summary.succeeded(), "stages": run.stages,
            "summary": summary, "summary_text": summary.describe(),
            "current_stage": if is_live { current } else { None },
        }));
    }
    if args.all {
        return status_all::report(&ws, live.as_ref(), rows, args.json);
    }
    if args.json {
        print_json(&serde_json::json!({ "workspace": ws.root(), "live": live, "runs": rows }));
        return EXIT_OK;
    }
    match &live {
        Some(h) => outln!(
            "live: {} is running {} (run {}) since {}",
            h.who(),
            h.command,
            h.run_id,
            h.since
        ),
        None => outln!("live: nothing is running in {}", ws.root().display()),
    }
    if rows.is_empty() {
        outln!("no runs yet");
    }
    for r in &rows {
        outln!(
            "{}  {:<11} {}  {}  {}{}",
            r["run_id"].as_str().unwrap_or_default(),
            r["status"].as_str().unwrap_or_default(),
            r["summary_text"].as_str().unwrap_or_default(),
            r["plan"].as_str().unwrap_or_default(),
            r["started_at"].as_str().unwrap_or_default(),
            r["current_stage"]
                .as_str()
                .map(|s| format!(
                    "  (now: {s}; heartbeat {})",
                    r["heartbeat_at"].as_str().unwrap_or("-")
                ))
                .unwrap_or_default(),
        );
        if r["status"] == INTERRUPTED {
            outln!(
                "    resume with: pmpo resume {} -w {}",
                r["run_id"].as_str().unwrap_or_default(),
                args.workspace.display()
            );
        }
    }
    EXIT_OK
}

#[derive(clap::Args)]
pub struct LedgerArgs {
    /// The workspace directory.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    /// Only this file (workspace-relative).
    #[arg(long)]
    path: Option<String>,
    /// Only this run (or this restore).
    #[arg(long)]
    run: Option<String>,
    /// Print the entries as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn short(h: &Option<String>) -> String {
    h.as_deref()
        .map(|h| h[..12.min(h.len())].to_string())
        .unwrap_or_else(|| "(none)".into())
}

/// The run a live pmpo works on in this workspace, if any.
fn live_run(ws: &Workspace) -> Option<String> {
    lock::current_holder(ws).map(|h| h.run_id)
}

/// How an entry reads: a pending intent whose run is no longer running was
/// interrupted (the process died or was killed between intent and change).
/// What `pmpo status` calls a run still marked running whose process is gone
/// (not a state of the store: the row says `running`).
const INTERRUPTED: &str = "interrupted";

fn entry_status(row: &PatchRow, live: Option<&str>) -> PatchState {
    match row.state {
        PATCH_PENDING if live != Some(row.run_id.as_str()) => PATCH_INTERRUPTED,
        other => other,
    }
}

pub fn ledger(args: LedgerArgs) -> u8 {
    let ws = match open_ws(&args.workspace) {
        Ok(w) => w,
        Err(c) => return c,
    };
    let mut db = match open_db(&args.workspace) {
        Ok(db) => db,
        Err(c) => return c,
    };
    // When no run is live and the workspace is writable, settle the intents
    // of killed runs first (so files they created under a directory are
    // listed); otherwise show the ledger as it is.
    {
        let holder = LockHolder {
            pid: std::process::id(),
            run_id: String::new(),
            since: now_rfc3339(),
            command: "pmpo ledger".into(),
            host: String::new(),
        };
        if let Ok(_lock) = lock::acquire(&ws, &holder, false) {
            let _ = pmpo_engine::intents::settle_interrupted(&ws, db.as_mut());
        }
    }
    let rows = match db.patches(args.path.as_deref(), args.run.as_deref()) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string(), e.hint()),
    };
    if let Some(run) = &args.run
        && rows.is_empty()
        && matches!(db.run(run), Ok(None))
    {
        return CliError::invalid(format!("no run `{run}` in `{}`", args.workspace.display()))
            .hint("see the runs with `pmpo status`, and the restores with `pmpo ledger`")
            .report();
    }
    let live = live_run(&ws);
    if args.json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).expect("json");
                v["status"] = entry_status(r, live.as_deref()).as_str().into();
                v
            })
            .collect();
        print_json(&out);
        return EXIT_OK;
    }
    if rows.is_empty() {
        outln!(
            "no changes recorded{}{}",
            args.path
                .as_deref()
                .map(|p| format!(" for `{p}`"))
                .unwrap_or_default(),
            args.run
                .as_deref()
                .map(|r| format!(" in run {r}"))
                .unwrap_or_default()
        );
    }
    let mut interrupted = 0;
    for r in &rows {
        let status = entry_status(r, live.as_deref());
        interrupted += usize::from(status == PATCH_INTERRUPTED);
        let after = match (&r.after_blake3, r.state.as_str()) {
            (None, state) if is_open_intent(state) => "?".to_string(),
            (None, _) => "(removed)".to_string(),
            (a, _) => short(a),
        };
        outln!(
            "{}  {}  {:<16} {:<11} {}  {} -> {}{}{}",
            r.time,
            r.run_id,
            r.writer,
            status.as_str(),
            r.path,
            short(&r.before_blake3),
            after,
            if r.backed_up { "  (restorable)" } else { "" },
            if r.state == PATCH_UNDECLARED {
                "  (undeclared: outside the stage's outputs)"
            } else {
                ""
            }
        );
    }
    if interrupted > 0 {
        outln!(
            "{interrupted} interrupted change(s): the writer was stopped before it finished; `pmpo restore PATH` (or `pmpo restore --run RUN`) brings back the content from before"
        );
    }
    EXIT_OK
}

#[derive(clap::Args)]
pub struct GcArgs {
    /// Keep backups and cache entries of this many most recent runs.
    #[arg(long, default_value_t = 10)]
    keep_runs: usize,
    /// The workspace directory.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    /// Print what was freed as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn walk_files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => out.extend(walk_files(&e.path())),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out
}

/// What gc did to the content-addressed backups.
#[derive(Default)]
struct Backups {
    removed: usize,
    removed_bytes: u64,
    kept: usize,
    kept_bytes: u64,
    kept_interrupted: usize,
}

/// Deletes the backups that no kept entry needs; the errors are collected.
fn prune_backups(
    ws: &Workspace,
    needed: &HashSet<String>,
    interrupted: &HashSet<String>,
    errors: &mut Vec<String>,
) -> Backups {
    let mut b = Backups::default();
    for file in walk_files(&ws.root().join(BACKUP_DIR)) {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Only content-addressed blobs are ours to delete.
        if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        if needed.contains(&name) {
            b.kept += 1;
            b.kept_bytes += std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            b.kept_interrupted += usize::from(interrupted.contains(&name));
            continue;
        }
        match ws.remove_own_file(&Workspace::backup_rel(&name)) {
            Ok(size) => {
                b.removed += 1;
                b.removed_bytes += size;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    b
}

/// Deletes the per-run folders of pmpo's own (the code stages ran, and whole
/// stage outputs) of runs not kept: (count, bytes) of each kind.
fn prune_run_dirs(
    ws: &Workspace,
    all: &[pmpo_store::db::RunRow],
    keep: &HashSet<String>,
    errors: &mut Vec<String>,
) -> [(usize, u64); 2] {
    let mut per_run = [(0usize, 0u64), (0usize, 0u64)];
    for (dir, (count, bytes)) in [".state/scripts", ".state/output"]
        .into_iter()
        .zip(per_run.iter_mut())
    {
        let Ok(entries) = std::fs::read_dir(ws.root().join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let run = e.file_name().to_string_lossy().into_owned();
            if all.iter().any(|r| r.run_id == run) && !keep.contains(&run) {
                match ws.remove_own_dir(&format!("{dir}/{run}")) {
                    Ok(size) => {
                        *count += 1;
                        *bytes += size;
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
    }
    per_run
}

pub fn gc(args: GcArgs) -> u8 {
    let ws = match open_ws(&args.workspace) {
        Ok(w) => w,
        Err(c) => return c,
    };
    let (_lock, mut db) = match settled_store(&ws, &args.workspace, "pmpo gc") {
        Ok(held) => held,
        Err(c) => return c,
    };
    let all = match db.runs(usize::MAX >> 1) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string(), e.hint()),
    };
    let keep: HashSet<String> = all
        .iter()
        .take(args.keep_runs)
        .map(|r| r.run_id.clone())
        .collect();
    // Restores are not runs: theirs are kept while they are newer than the
    // oldest kept run (or when no run is pruned at all).
    let cutoff = if all.len() > args.keep_runs {
        all.get(args.keep_runs.saturating_sub(1))
            .map(|r| r.started_at.clone())
    } else {
        None
    };
    let patches = match db.patches(None, None) {
        Ok(p) => p,
        Err(e) => return fail(&e.to_string(), e.hint()),
    };
    let run_ids: HashSet<&str> = all.iter().map(|r| r.run_id.as_str()).collect();
    // Held under the lock, so no run is live: every pending entry is interrupted.
    let interrupted: HashSet<String> = patches
        .iter()
        .filter(|p| is_open_intent(&p.state))
        .filter_map(|p| p.before_blake3.clone())
        .collect();
    let needed: HashSet<String> = patches
        .iter()
        .filter(|p| {
            keep.contains(&p.run_id)
                || is_open_intent(&p.state)
                || (!run_ids.contains(p.run_id.as_str())
                    && cutoff.as_deref().is_none_or(|c| p.time.as_str() >= c))
        })
        .filter_map(|p| p.before_blake3.clone())
        .collect();
    let mut errors = Vec::new();
    let backups = prune_backups(&ws, &needed, &interrupted, &mut errors);
    let Backups {
        removed: blobs,
        removed_bytes: blob_bytes,
        kept,
        kept_bytes,
        kept_interrupted,
    } = backups;
    let cache = match db.cache_prune(&|row| keep.contains(&row.run_id)) {
        Ok(n) => n,
        Err(e) => return fail(&e.to_string(), e.hint()),
    };
    let per_run = prune_run_dirs(&ws, &all, &keep, &mut errors);
    let [(scripts, script_bytes), (outputs, output_bytes)] = per_run;
    let (jobs, workers) = prune_queue(&ws, &keep, &mut errors);
    let summary = serde_json::json!({
        "kept_runs": keep.len(), "backups_removed": blobs, "backup_bytes_freed": blob_bytes,
        "backups_kept": kept, "backup_bytes_kept": kept_bytes,
        "interrupted_entries": patches.iter().filter(|p| is_open_intent(&p.state)).count(),
        "interrupted_backups_kept": kept_interrupted,
        "cache_entries_removed": cache, "script_dirs_removed": scripts, "script_bytes_freed": script_bytes,
        "output_dirs_removed": outputs, "output_bytes_freed": output_bytes,
        "jobs_removed": jobs, "workers_removed": workers,
        "bytes_freed": blob_bytes + script_bytes + output_bytes,
        "errors": errors,
    });
    if args.json {
        print_json(&summary);
    } else {
        outln!(
            "gc: kept the {} most recent runs and {kept} backups ({kept_bytes} bytes, {kept_interrupted} of them for interrupted changes); removed {blobs} backups ({blob_bytes} bytes), {cache} cache entries, {scripts} script folders ({script_bytes} bytes), {outputs} kept-output folders ({output_bytes} bytes){}; {} bytes freed",
            keep.len(),
            match (jobs, workers) {
                (Some(j), Some(w)) =>
                    format!(", {j} ended jobs and {w} stopped workers of the queue"),
                _ => String::new(),
            },
            blob_bytes + script_bytes + output_bytes
        );
        for e in &errors {
            errln!("warning: {e}");
        }
    }
    EXIT_OK
}

/// With a PostgreSQL store, the queue's rows that only older runs need
/// (`pmpo_store::pg::queue::prune`); `None` with SQLite (no queue).
fn prune_queue(
    ws: &Workspace,
    keep: &HashSet<String>,
    errors: &mut Vec<String>,
) -> (Option<u64>, Option<u64>) {
    let Ok(pmpo_store::db::StoreSpec::Postgres(url)) = pmpo_store::db::store_spec(ws.root()) else {
        return (None, None);
    };
    let keep: Vec<String> = keep.iter().cloned().collect();
    let pruned = pmpo_store::pg::PgConn::connect(&url, pmpo_store::pg::conn::default_patience())
        .and_then(|c| {
            pmpo_store::pg::queue::ensure(&c)?;
            pmpo_store::pg::queue::prune(&c, &keep)
        });
    match pruned {
        Ok((j, w)) => (Some(j), Some(w)),
        Err(e) => {
            errors.push(format!("the queue was not pruned: {e}"));
            (None, None)
        }
    }
}
