//! `pmpo restore`: brings back the content a run overwrote, from the
//! ledger's backups.

use std::collections::HashSet;
use std::path::PathBuf;

use pmpo_store::db::{ExecStore, PATCH_UNDECLARED, PatchRow, is_open_intent};
use pmpo_store::{Workspace, Writer, now_rfc3339};

use crate::error::CliError;
use crate::state_cmd::{fail, open_ws, print_json, settled_store, short};
use crate::{EXIT_OK, EXIT_STAGE_FAILED};

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The file to bring back (workspace-relative). Without it, `--run`
    /// rolls back every change of that run.
    path: Option<String>,
    /// With PATH: bring back what this run found there. Alone: roll back the
    /// whole run, newest change first.
    #[arg(long)]
    run: Option<String>,
    /// The workspace directory.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    /// Print what was restored (or would be) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// What restoring one file did (written in snake case: `restored`,
/// `moved_to_backups`, `unchanged`, `skipped`, `failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Restored,
    MovedToBackups,
    Unchanged,
    Skipped,
    Failed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Restored => "restored",
            Action::MovedToBackups => "moved_to_backups",
            Action::Unchanged => "unchanged",
            Action::Skipped => "skipped",
            Action::Failed => "failed",
        }
    }
}

/// What restoring one file did.
#[derive(serde::Serialize)]
struct Restored {
    path: String,
    action: Action,
    /// The run whose change is undone.
    of_run: String,
    before_blake3: Option<String>,
    after_blake3: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The id under which one `pmpo restore` records its own changes (so that
/// it can be undone in turn with `pmpo restore --run ID`).
fn restore_id() -> String {
    let stamp: String = now_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("restore-{stamp}-{}", std::process::id())
}

/// Puts `rel` back to `target` (a content digest, or `None`: the file did
/// not exist, so it is moved into the backups).
fn restore_one(
    ws: &Workspace,
    db: &mut dyn ExecStore,
    rel: &str,
    target: Option<&str>,
    of_run: &str,
    who: Writer<'_>,
) -> Restored {
    let mut out = Restored {
        path: rel.to_string(),
        action: Action::Failed,
        of_run: of_run.to_string(),
        before_blake3: None,
        after_blake3: target.map(str::to_string),
        reason: None,
    };
    let abs = match ws.resolve(rel) {
        Ok(p) => p,
        Err(e) => {
            out.reason = Some(e.to_string());
            return out;
        }
    };
    let Some(target) = target else {
        match std::fs::symlink_metadata(&abs) {
            Err(_) => {
                out.action = Action::Unchanged;
                out.reason = Some("it is already absent".into());
            }
            Ok(m) if !m.is_file() => {
                out.action = Action::Skipped;
                out.reason =
                    Some("it is not a plain file now (a directory?); left as it is".into());
            }
            Ok(_) => match ws.remove_recorded(db, rel, who) {
                Ok(row) => {
                    out.action = Action::MovedToBackups;
                    out.before_blake3 = row.and_then(|r| r.before_blake3);
                }
                Err(e) => out.reason = Some(e.to_string()),
            },
        }
        return out;
    };
    // Streamed, never loaded: a restore of a large file keeps memory flat.
    let blob = ws.root().join(Workspace::backup_rel(target));
    match pmpo_store::hash_file(&blob) {
        Ok(d) if d.blake3 == target => {}
        _ => {
            out.reason = Some(format!(
                "the backup of `{rel}` ({}) is missing or damaged; it may have been pruned by `pmpo gc`; the file was left as it is",
                short(&Some(target.to_string()))
            ));
            return out;
        }
    }
    match ws.restore_recorded(db, rel, target, who) {
        Ok(Some(row)) => {
            out.action = Action::Restored;
            out.before_blake3 = row.before_blake3;
        }
        Ok(None) => {
            out.action = Action::Unchanged;
            out.reason = Some("it already has that content".into());
        }
        Err(e) => out.reason = Some(e.to_string()),
    }
    out
}

pub fn restore(args: RestoreArgs) -> u8 {
    let ws = match open_ws(&args.workspace) {
        Ok(w) => w,
        Err(c) => return c,
    };
    let rel = args
        .path
        .as_deref()
        .map(|p| p.trim_start_matches("./").to_string());
    if let Some(rel) = &rel
        && let Err(e) = ws.resolve(rel)
    {
        return CliError::invalid(e)
            .hint("name a file inside the workspace")
            .report();
    }
    if rel.is_none() && args.run.is_none() {
        return CliError::invalid("nothing to restore: name a file, or a run with --run")
            .hint("`pmpo restore PATH` brings back a file's previous content; `pmpo restore --run RUN_ID` rolls back a whole run (see `pmpo ledger`)")
            .report();
    }
    let (_lock, mut db) = match settled_store(&ws, &args.workspace, "pmpo restore") {
        Ok(held) => held,
        Err(c) => return c,
    };
    // A directory or glob intent is not a file to restore: the files found
    // under it have their own entries.
    let rows: Vec<PatchRow> = match db.patches(rel.as_deref(), args.run.as_deref()) {
        Ok(r) => r
            .into_iter()
            .filter(|r| !pmpo_engine::intents::is_pattern(&r.path))
            .collect(),
        Err(e) => return fail(&e.to_string(), e.hint()),
    };
    if let Some(run) = &args.run
        && rows.is_empty()
        && matches!(db.run(run), Ok(None))
        && db
            .patches(None, Some(run))
            .map(|r| r.is_empty())
            .unwrap_or(true)
    {
        return CliError::invalid(format!("no run `{run}` in `{}`", args.workspace.display()))
            .hint("see the runs with `pmpo status` and every recorded change with `pmpo ledger`")
            .report();
    }
    let plan = match (&rel, &args.run) {
        (Some(rel), run) => match file_target(&ws, rel, run.as_deref(), &rows) {
            Ok(target) => vec![target],
            Err(e) => return e.report(),
        },
        (None, Some(run)) => run_targets(run, &rows),
        (None, None) => unreachable!("checked above"),
    };
    stop_leftovers(&ws, &rows, args.json);
    let id = restore_id();
    let who = Writer {
        run_id: &id,
        writer: "restore",
    };
    let done: Vec<Restored> = plan
        .iter()
        .map(|(path, target, of_run)| {
            restore_one(&ws, db.as_mut(), path, target.as_deref(), of_run, who)
        })
        .collect();
    if let Err(e) = pmpo_engine::export_ledger(&ws, db.as_mut()) {
        return fail(&e.to_string(), e.hint().as_str());
    }
    print_restored(&args, &id, &done)
}

/// A file, the content it goes back to (its digest; none: it did not exist)
/// and the run whose change is undone.
type Target = (String, Option<String>, String);

/// What one named file goes back to: with --run, what the run found there
/// first; otherwise the latest change. An interrupted intent that left the
/// file as it found it is no change: the one before it is.
fn file_target(
    ws: &Workspace,
    rel: &str,
    run: Option<&str>,
    rows: &[PatchRow],
) -> Result<Target, CliError> {
    let now = ws
        .resolve(rel)
        .ok()
        .and_then(|p| pmpo_store::hash_file(&p).ok())
        .map(|d| d.blake3);
    let row = if run.is_some() {
        rows.first()
    } else {
        rows.iter()
            .rev()
            .find(|r| !(is_open_intent(&r.state) && r.before_blake3 == now))
            .or(rows.last())
    };
    let Some(row) = row else {
        let in_run = run.map(|r| format!(" in run {r}")).unwrap_or_default();
        return Err(
            CliError::invalid(format!("the ledger has no change to `{rel}`{in_run}"))
                .hint(format!("see `pmpo ledger --path {rel}`")),
        );
    };
    if row.state == PATCH_UNDECLARED && !row.backed_up {
        return Err(CliError::invalid(format!(
            "`{rel}` was changed by stage `{}` of run {} outside its declared outputs; pmpo found the change afterwards and holds no copy of the file from before it",
            row.writer, row.run_id
        ))
        .hint("bring it back from version control or a backup; declare it in the stage's `outputs:` so that pmpo keeps a copy next time"));
    }
    Ok((
        rel.to_string(),
        row.before_blake3.clone(),
        row.run_id.clone(),
    ))
}

/// What each file of a whole run goes back to: what the run found there (its
/// first entry for the file), newest change first.
fn run_targets(run: &str, rows: &[PatchRow]) -> Vec<Target> {
    let mut plan = Vec::new();
    let mut seen = HashSet::new();
    for row in rows.iter().rev() {
        if seen.insert(row.path.clone()) {
            let first = rows.iter().find(|r| r.path == row.path).unwrap_or(row);
            // Found by detection after the fact: there is no copy to
            // bring back, and moving the file away would lose it.
            if first.state == PATCH_UNDECLARED && !first.backed_up {
                errln!(
                    "warning: `{}` was changed outside the stage's outputs and pmpo holds no copy from before; it is left as it is",
                    row.path
                );
                continue;
            }
            plan.push((
                row.path.clone(),
                first.before_blake3.clone(),
                run.to_string(),
            ));
        }
    }
    plan
}

/// Processes an interrupted run left behind could write its files again
/// after they are restored: stops them first (the lock says no run is live).
fn stop_leftovers(ws: &Workspace, rows: &[PatchRow], json: bool) {
    let mut stopped = 0;
    let interrupted_runs: HashSet<&str> = rows
        .iter()
        .filter(|r| is_open_intent(&r.state))
        .map(|r| r.run_id.as_str())
        .collect();
    for run in interrupted_runs {
        stopped += pmpo_engine::kill_leftovers(run, ws.root());
    }
    if stopped > 0 && !json {
        outln!("stopped {stopped} process(es) that the interrupted run left running");
    }
}

/// Prints what a restore did; exit 1 when a file could not be restored.
fn print_restored(args: &RestoreArgs, id: &str, done: &[Restored]) -> u8 {
    let failed = done.iter().filter(|d| d.action == Action::Failed).count();
    let changed = done
        .iter()
        .filter(|d| matches!(d.action, Action::Restored | Action::MovedToBackups))
        .count();
    if args.json {
        print_json(&serde_json::json!({
            "restore_id": if changed > 0 { Some(id) } else { None },
            "run": args.run, "files": done, "changed": changed, "failed": failed,
        }));
    } else {
        for d in done {
            let reason = d.reason.as_deref().unwrap_or_default();
            match d.action {
                Action::Restored => outln!(
                    "restored `{}` to its content before run {}; the replaced content is kept too",
                    d.path,
                    d.of_run
                ),
                Action::MovedToBackups => outln!(
                    "moved `{}` (created by run {}) into the backups; it is not deleted",
                    d.path,
                    d.of_run
                ),
                Action::Failed => errln!(
                    "{}",
                    CliError::failed(format!("cannot restore `{}`: {reason}", d.path))
                ),
                other @ (Action::Unchanged | Action::Skipped) => {
                    outln!("{} `{}`: {reason}", other.as_str(), d.path)
                }
            }
        }
        if changed > 0 {
            outln!("undo this restore with: pmpo restore --run {id}");
        } else if done.is_empty() {
            outln!("nothing to restore: the run changed no files");
        }
    }
    if failed > 0 {
        if !args.json {
            errln!(
                "  help: {failed} file(s) could not be restored and were left as they are; any others were restored; a missing backup may have been pruned by `pmpo gc`"
            );
        }
        return EXIT_STAGE_FAILED;
    }
    EXIT_OK
}
