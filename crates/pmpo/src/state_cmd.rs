//! Commands over the execution store: status, ledger, restore, gc.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use pmpo_store::db::{ExecStore, PatchRow, SqliteStore};
use pmpo_store::lock::{self, LockHolder};
use pmpo_store::{BACKUP_DIR, Workspace, now_rfc3339};

use pmpo_engine::StageStatus;
use pmpo_engine::results::Summary;

use crate::{EXIT_BUSY, EXIT_INVALID, EXIT_OK, EXIT_STAGE_FAILED};

/// Prints an error with its fix; returns the exit code for a failed command.
pub fn fail(message: &str, help: &str) -> u8 {
    errln!("error: {message}\n  help: {help}");
    EXIT_STAGE_FAILED
}

fn open_ws(dir: &Path) -> Result<Workspace, u8> {
    Workspace::open(dir).map_err(|e| {
        errln!("error: {e}\n  help: pass --workspace DIR (a directory where pmpo has run)");
        EXIT_INVALID
    })
}

/// Opens the workspace's execution store; an absent store is an error that says so.
pub fn open_db(dir: &Path) -> Result<SqliteStore, u8> {
    let ws = open_ws(dir)?;
    if !ws.root().join(pmpo_store::db::DB_FILE).exists() {
        errln!(
            "error: no pmpo runs in `{}` (no {})\n  help: run `pmpo execute PLAN` first, or pass --workspace DIR",
            dir.display(),
            pmpo_store::db::DB_FILE
        );
        return Err(EXIT_INVALID);
    }
    SqliteStore::open(ws.root()).map_err(|e| fail(&e.to_string(), e.hint()))
}

fn take_lock(ws: &Workspace, command: &str) -> Result<lock::WorkspaceLock, u8> {
    let holder = LockHolder {
        pid: std::process::id(),
        run_id: String::new(),
        since: now_rfc3339(),
        command: command.into(),
    };
    lock::acquire(ws, &holder, false).map_err(|e| match e {
        lock::LockError::Busy(_) => {
            errln!("error: {e}\n  help: wait for the running pmpo to finish");
            EXIT_BUSY
        }
        // Not another pmpo: the lock file itself cannot be made (read-only,
        // permission, disk full). Say that, not "busy".
        lock::LockError::Store(s) => fail(&s.to_string(), s.hint()),
    })
}

fn print_json(value: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// A named artifact (without it: the workspace's runs).
    name: Option<String>,
    /// The workspace (default: the current directory).
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    /// How many recent runs to list.
    #[arg(long, default_value_t = 10)]
    runs: usize,
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
    let runs = match db.runs(args.runs) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string(), e.hint()),
    };
    let mut rows = Vec::new();
    for run in runs {
        let tasks = db.tasks(&run.run_id).unwrap_or_default();
        // The same counts as the run's summary: stages without a row never started.
        let mut statuses: Vec<StageStatus> = tasks
            .iter()
            .map(|t| StageStatus::parse(&t.status).unwrap_or(StageStatus::Pending))
            .collect();
        statuses.resize(
            (run.stages.max(0) as usize).max(statuses.len()),
            StageStatus::Pending,
        );
        let summary = Summary::of(statuses);
        let is_live = live.as_ref().is_some_and(|h| h.run_id == run.run_id);
        let state = match run.status.as_str() {
            "running" if is_live => "running".to_string(),
            "running" => "interrupted".to_string(),
            other => other.to_string(),
        };
        let current = tasks
            .iter()
            .find(|t| t.status == "IN_PROGRESS")
            .map(|t| t.stage_id.clone());
        rows.push(serde_json::json!({
            "run_id": run.run_id, "plan": run.plan, "status": state, "started_at": run.started_at,
            "finished_at": run.finished_at, "heartbeat_at": run.heartbeat_at, "stages_done": summary.succeeded(), "stages": run.stages,
            "summary": summary, "summary_text": summary.describe(),
            "current_stage": if is_live { current } else { None },
        }));
    }
    if args.json {
        print_json(&serde_json::json!({ "workspace": ws.root(), "live": live, "runs": rows }));
        return EXIT_OK;
    }
    match &live {
        Some(h) => outln!(
            "live: pid {} is running {} (run {}) since {}",
            h.pid,
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
        if r["status"] == "interrupted" {
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
    /// The workspace (default: the current directory).
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    /// Only this file (workspace-relative).
    #[arg(long)]
    path: Option<String>,
    /// Only this run.
    #[arg(long)]
    run: Option<String>,
    #[arg(long)]
    json: bool,
}

fn short(h: &Option<String>) -> String {
    h.as_deref()
        .map(|h| h[..12.min(h.len())].to_string())
        .unwrap_or_else(|| "(none)".into())
}

pub fn ledger(args: LedgerArgs) -> u8 {
    let mut db = match open_db(&args.workspace) {
        Ok(db) => db,
        Err(c) => return c,
    };
    let rows = match db.patches(args.path.as_deref(), args.run.as_deref()) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string(), e.hint()),
    };
    if args.json {
        print_json(&rows);
        return EXIT_OK;
    }
    if rows.is_empty() {
        outln!(
            "no changes recorded{}",
            args.path
                .as_deref()
                .map(|p| format!(" for `{p}`"))
                .unwrap_or_default()
        );
    }
    for r in &rows {
        outln!(
            "{}  {}  {:<16} {}  {} -> {}{}{}",
            r.time,
            r.run_id,
            r.writer,
            r.path,
            short(&r.before_blake3),
            short(&r.after_blake3),
            if r.backed_up { "  (restorable)" } else { "" },
            if r.state == "undeclared" {
                "  (undeclared: outside the stage's outputs)"
            } else {
                ""
            }
        );
    }
    EXIT_OK
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The file to bring back (workspace-relative).
    path: String,
    /// Bring back what this run overwrote (default: the most recent change).
    #[arg(long)]
    run: Option<String>,
    /// The workspace (default: the current directory).
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
}

pub fn restore(args: RestoreArgs) -> u8 {
    let ws = match open_ws(&args.workspace) {
        Ok(w) => w,
        Err(c) => return c,
    };
    let rel = args.path.trim_start_matches("./").to_string();
    if let Err(e) = ws.resolve(&rel) {
        errln!("error: {e}\n  help: name a file inside the workspace");
        return EXIT_INVALID;
    }
    let _lock = match take_lock(&ws, "pmpo restore") {
        Ok(l) => l,
        Err(c) => return c,
    };
    let mut db = match open_db(&args.workspace) {
        Ok(db) => db,
        Err(c) => return c,
    };
    let rows = match db.patches(Some(&rel), args.run.as_deref()) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string(), e.hint()),
    };
    // With --run: what the run found there first; otherwise the latest change.
    let row = if args.run.is_some() {
        rows.first()
    } else {
        rows.last()
    };
    let Some(row) = row else {
        errln!(
            "error: the ledger has no change to `{rel}`{}\n  help: see `pmpo ledger --path {rel}`",
            args.run
                .as_deref()
                .map(|r| format!(" in run {r}"))
                .unwrap_or_default()
        );
        return EXIT_INVALID;
    };
    if row.state == "undeclared" && !row.backed_up {
        errln!(
            "error: `{rel}` was changed by stage `{}` of run {} outside its declared outputs; pmpo found the change afterwards and holds no copy of the file from before it\n  help: bring it back from version control or a backup; declare it in the stage's `outputs:` so that pmpo keeps a copy next time",
            row.writer,
            row.run_id
        );
        return EXIT_INVALID;
    }
    let Some(before) = &row.before_blake3 else {
        errln!(
            "error: `{rel}` did not exist before run {} created it, so there is nothing to bring back\n  help: delete it yourself if you do not want it; pmpo never deletes files",
            row.run_id
        );
        return EXIT_INVALID;
    };
    // Streamed, never loaded: a restore of a large file keeps memory flat.
    let blob = ws.root().join(Workspace::backup_rel(before));
    match pmpo_store::hash_file(&blob) {
        Ok(d) if &d.blake3 == before => {}
        _ => {
            return fail(
                &format!(
                    "the backup of `{rel}` ({}) is missing or damaged",
                    short(&Some(before.clone()))
                ),
                "it may have been pruned by `pmpo gc`; nothing was changed",
            );
        }
    };
    let (prev, after, backed_up) = match ws.replace_from_file(&rel, &blob, before) {
        Ok(x) => x,
        Err(e) => return fail(&e.to_string(), "check that the workspace is writable"),
    };
    let record = PatchRow {
        time: now_rfc3339(),
        run_id: row.run_id.clone(),
        writer: "restore".into(),
        path: rel.clone(),
        before_blake3: prev.as_ref().map(|d| d.blake3.clone()),
        before_size: prev.as_ref().map(|d| d.size as i64),
        after_blake3: Some(after.blake3.clone()),
        after_size: Some(after.size as i64),
        backed_up,
        state: "completed".into(),
    };
    if let Err(e) = db.add_patch(&record).and_then(|_| db.flush()) {
        return fail(&e.to_string(), e.hint());
    }
    if let Err(e) = pmpo_engine::export_ledger(&ws, &mut db) {
        return fail(&e.to_string(), e.hint().as_str());
    }
    outln!(
        "restored `{rel}` to its content before run {} ({} bytes); the replaced content is kept too",
        row.run_id,
        after.size
    );
    EXIT_OK
}

#[derive(clap::Args)]
pub struct GcArgs {
    /// Keep backups and cache entries of this many most recent runs.
    #[arg(long, default_value_t = 10)]
    keep_runs: usize,
    /// The workspace (default: the current directory).
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    #[arg(long)]
    json: bool,
}

fn dir_size(path: &Path) -> u64 {
    walk_files(path)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
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

pub fn gc(args: GcArgs) -> u8 {
    let ws = match open_ws(&args.workspace) {
        Ok(w) => w,
        Err(c) => return c,
    };
    let _lock = match take_lock(&ws, "pmpo gc") {
        Ok(l) => l,
        Err(c) => return c,
    };
    let mut db = match open_db(&args.workspace) {
        Ok(db) => db,
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
    let patches = db.patches(None, None).unwrap_or_default();
    // A backup is kept while a kept run (or a later restore) may need it.
    let needed: HashSet<String> = patches
        .iter()
        .filter(|p| keep.contains(&p.run_id))
        .filter_map(|p| p.before_blake3.clone())
        .collect();
    let (mut blobs, mut blob_bytes) = (0usize, 0u64);
    for file in walk_files(&ws.root().join(BACKUP_DIR)) {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Only content-addressed blobs are ours to delete.
        if name.len() != 64
            || !name.bytes().all(|b| b.is_ascii_hexdigit())
            || needed.contains(&name)
        {
            continue;
        }
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        if std::fs::remove_file(&file).is_ok() {
            blobs += 1;
            blob_bytes += size;
        }
    }
    let cache = match db.cache_prune(&|row| keep.contains(&row.run_id)) {
        Ok(n) => n,
        Err(e) => return fail(&e.to_string(), e.hint()),
    };
    // Per-run folders of pmpo's own: the code stages ran, and whole stage outputs.
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
                let size = dir_size(&e.path());
                if std::fs::remove_dir_all(e.path()).is_ok() {
                    *count += 1;
                    *bytes += size;
                }
            }
        }
    }
    let [(scripts, script_bytes), (outputs, output_bytes)] = per_run;
    let summary = serde_json::json!({
        "kept_runs": keep.len(), "backups_removed": blobs, "backup_bytes_freed": blob_bytes,
        "cache_entries_removed": cache, "script_dirs_removed": scripts, "script_bytes_freed": script_bytes,
        "output_dirs_removed": outputs, "output_bytes_freed": output_bytes,
        "bytes_freed": blob_bytes + script_bytes + output_bytes,
    });
    if args.json {
        print_json(&summary);
    } else {
        outln!(
            "gc: kept the {} most recent runs; removed {blobs} backups ({blob_bytes} bytes), {cache} cache entries, {scripts} script folders ({script_bytes} bytes), {outputs} kept-output folders ({output_bytes} bytes); {} bytes freed",
            keep.len(),
            blob_bytes + script_bytes + output_bytes
        );
    }
    EXIT_OK
}
