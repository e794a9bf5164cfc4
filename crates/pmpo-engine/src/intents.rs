//! Ledger intents left behind by a killed run.
//!
//! Before a stage's tool runs, the executor commits a `pending` ledger entry
//! for every file the attempt may change, and one for each declared directory
//! or glob (its path is the pattern). A run that is killed leaves them
//! pending. The next pmpo that holds the workspace lock settles them: it stops
//! the processes the killed run left running, then the
//! files that appeared under a pending directory or glob since its intent (and
//! that the run recorded nothing about) get an entry of their own, so that
//! `pmpo ledger` lists them and `pmpo restore` can move them away, and every
//! pending entry becomes `interrupted`.

use std::collections::HashSet;

use pmpo_store::Workspace;
use pmpo_store::db::{ExecStore, PATCH_INTERRUPTED, PatchRow};

use crate::EngineError;
use crate::outputs;

/// Whether a ledger path is a pattern intent (a directory or a glob) rather
/// than a file.
pub fn is_pattern(path: &str) -> bool {
    path.ends_with('/') || path.contains(['*', '?', '[', '{'])
}

/// What settling found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Ledger entries marked interrupted.
    pub interrupted: usize,
    /// Processes the killed runs left running, stopped.
    pub stopped: usize,
}

/// Settles the intents of runs that are no longer live (call it holding the
/// workspace lock).
pub fn settle_interrupted(ws: &Workspace, db: &mut dyn ExecStore) -> Result<Settled, EngineError> {
    let pending = db.pending_patches()?;
    if pending.is_empty() {
        return Ok(Settled::default());
    }
    // A killed run's stages may live on and keep writing: stop them before
    // looking at what they changed (their parent is gone; nothing would
    // record their writes).
    let runs: HashSet<&str> = pending.iter().map(|r| r.run_id.as_str()).collect();
    let mut stopped = 0;
    for run in runs {
        stopped += crate::exec::kill_leftovers(run, ws.root());
    }
    for row in &pending {
        let dir_now = !is_pattern(&row.path)
            && ws
                .resolve(&row.path)
                .is_ok_and(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
        if !is_pattern(&row.path) && !dir_now {
            continue;
        }
        // File times come from a coarse clock that can lag the one the
        // intent's time was read from by a few milliseconds: allow for it.
        // (A file that was there before the intent has an intent of its own.)
        let since = chrono::DateTime::parse_from_rfc3339(&row.time)
            .ok()
            .map(|t| std::time::SystemTime::from(t.with_timezone(&chrono::Utc)))
            .map(|t| t - std::time::Duration::from_secs(1));
        let known: HashSet<String> = db
            .patches(None, Some(&row.run_id))?
            .into_iter()
            .map(|r| r.path)
            .collect();
        let found = outputs::expand(ws, std::slice::from_ref(&row.path));
        for (path, digest) in found.files {
            if known.contains(&path) {
                continue;
            }
            // Only what appeared after the intent (a file the user made since
            // the kill is newer still; it is moved, never deleted, by a restore).
            let modified = ws
                .resolve(&path)
                .ok()
                .and_then(|p| std::fs::metadata(p).ok())
                .and_then(|m| m.modified().ok());
            match (since, modified) {
                (Some(s), Some(m)) if m >= s => {}
                _ => continue,
            }
            let mut entry = PatchRow::new(PATCH_INTERRUPTED, &row.run_id, &row.writer, &path)
                .after(Some(&digest));
            entry.time = row.time.clone();
            db.add_patch(&entry)?;
        }
    }
    let interrupted = db.mark_interrupted()?;
    db.flush()?;
    Ok(Settled {
        interrupted,
        stopped,
    })
}
