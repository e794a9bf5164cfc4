//! One writer per workspace: an exclusive lock on `.state/lock` (and, for
//! artifact state, `.refiner/lock`).
//!
//! With the SQLite store the lock is an OS file lock, so it disappears with
//! its process: a lock left by a process that died (even by kill -9) is simply
//! taken over. The file holds the holder's pid, run id, start time, command
//! and host, for the error a second writer gets.
//!
//! With a PostgreSQL store (the workspace is shared by several machines) the
//! same lock is a PostgreSQL advisory lock held by a connection of its own
//! ([`crate::pg::locks`]), and the holder is kept in the `pmpo_holders`
//! table; no lock file is used. The messages, the exit code a caller maps
//! [`LockError::Busy`] to, and the `previous` holder of a lock whose holder
//! died are the same.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use crate::db::{DbError, StoreSpec, store_spec};
use crate::pg::PgError;
use crate::pg::locks::{self as pg_locks, PgLock, Taken};
use crate::{StoreError, Workspace};

pub const LOCK_FILE: &str = ".state/lock";

/// Who holds (or held) the lock.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: u32,
    pub run_id: String,
    pub since: String,
    pub command: String,
    /// The machine it runs on; filled in by [`acquire`] when left empty
    /// (absent from holders written by an older pmpo).
    #[serde(default)]
    pub host: String,
}

impl LockHolder {
    /// `pid N`, or `pid N on HOST` when the holder runs on another machine.
    pub fn who(&self) -> String {
        if self.host.is_empty() || self.host == this_host() {
            format!("pid {}", self.pid)
        } else {
            format!("pid {} on {}", self.pid, self.host)
        }
    }
}

/// This machine's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else
/// `unknown`).
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The workspace is held by another process.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the workspace is in use by another pmpo: {}", describe(.0))]
    Busy(Option<LockHolder>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn describe(h: &Option<LockHolder>) -> String {
    match h {
        Some(h) => format!(
            "{} ({}, run {}) since {}",
            h.who(),
            h.command,
            h.run_id,
            h.since
        ),
        None => "holder unknown".into(),
    }
}

/// A held workspace lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct WorkspaceLock {
    hold: Hold,
    /// The previous holder, when it had not released the lock cleanly (its process died).
    pub previous: Option<LockHolder>,
}

#[derive(Debug)]
enum Hold {
    /// `.state/lock` (or another lock file), locked by the OS.
    File(File),
    /// A PostgreSQL advisory lock, on a connection of its own.
    Pg(PgLock),
}

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Takes the workspace lock; with `wait`, blocks until the holder is done.
pub fn acquire(
    ws: &Workspace,
    holder: &LockHolder,
    wait: bool,
) -> Result<WorkspaceLock, LockError> {
    acquire_at(ws, LOCK_FILE, holder, wait)
}

/// Takes the lock kept in another file (e.g. `.refiner/lock` for artifact
/// state); with a PostgreSQL store, the advisory lock of that name.
pub fn acquire_at(
    ws: &Workspace,
    rel: &str,
    holder: &LockHolder,
    wait: bool,
) -> Result<WorkspaceLock, LockError> {
    let mut holder = holder.clone();
    if holder.host.is_empty() {
        holder.host = this_host();
    }
    match store_spec(ws.root()).map_err(StoreError::Ledger)? {
        StoreSpec::Postgres(url) => acquire_pg(ws, &url, rel, &holder, wait),
        StoreSpec::Sqlite => acquire_file(ws, rel, &holder, wait),
    }
}

fn acquire_file(
    ws: &Workspace,
    rel: &str,
    holder: &LockHolder,
    wait: bool,
) -> Result<WorkspaceLock, LockError> {
    let path = ws.resolve(rel)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    // Never through a link: a cloned repository shipping `.state/lock` as a
    // link to someone's file would have that file emptied.
    let mut file = ws.open_own(
        rel,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            if !wait {
                return Err(LockError::Busy(read_holder(&mut file)));
            }
            file.lock().map_err(|e| StoreError::Io {
                action: "lock",
                path: path.clone(),
                source: e,
            })?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(StoreError::Io {
                action: "lock",
                path,
                source: e,
            }
            .into());
        }
    }
    // A holder still written in the file did not release cleanly.
    let previous = read_holder(&mut file).filter(|h| h.pid != holder.pid);
    write_holder(&mut file, holder).map_err(|e| StoreError::Io {
        action: "write",
        path: path.clone(),
        source: e,
    })?;
    Ok(WorkspaceLock {
        hold: Hold::File(file),
        previous,
    })
}

fn write_holder(file: &mut File, holder: &LockHolder) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&serde_json::to_vec(holder).unwrap_or_default())?;
    file.flush()
}

/// What identifies the workspace in its lock keys: the same on every machine
/// that mounts it, wherever it is mounted.
// The workspace marker `.state/workspace-id`, made by the first lock or
// store opened here (`pg::schema::workspace_id`).
fn lock_scope(ws: &Workspace) -> Result<String, LockError> {
    crate::pg::schema::workspace_id(ws.root()).map_err(|e| LockError::Store(StoreError::Ledger(e)))
}

fn pg_error(e: PgError) -> LockError {
    LockError::Store(StoreError::Ledger(DbError::Pg(e)))
}

fn acquire_pg(
    ws: &Workspace,
    url: &str,
    rel: &str,
    holder: &LockHolder,
    wait: bool,
) -> Result<WorkspaceLock, LockError> {
    let json = serde_json::to_string(holder).unwrap_or_default();
    let parse = |t: Option<String>| t.and_then(|t| serde_json::from_str::<LockHolder>(&t).ok());
    match pg_locks::acquire(url, &lock_scope(ws)?, rel, &json, wait).map_err(pg_error)? {
        Taken::Busy(h) => Err(LockError::Busy(parse(h))),
        Taken::Held(mut lock, previous) => Ok(WorkspaceLock {
            hold: Hold::Pg({
                lock.watch(stop_this_process(
                    lock.server().to_string(),
                    rel.to_string(),
                ));
                lock
            }),
            // A row left there did not release cleanly (this process's own
            // row aside, as with the file).
            previous: parse(previous).filter(|h| !(h.pid == holder.pid && h.host == holder.host)),
        }),
    }
}

/// What a process does when its lock was lost to another pmpo: it stops as
/// SIGTERM stops it (the command's own handling: a run stops its stages and
/// ends as cancelled; `pmpo resume` continues it).
fn stop_this_process(server: String, rel: String) -> Box<dyn FnOnce() + Send> {
    Box::new(move || {
        eprintln!(
            "pmpo: error: the lock {rel} was lost: its connection to the store at {server} was cut and another pmpo took the lock before this one could take it back; stopping (`pmpo resume` continues a run)"
        );
        // SAFETY: kill(2) with this process's own id and a signal number.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
    })
}

impl WorkspaceLock {
    /// Rewrites the holder information (e.g. once the run id is known).
    pub fn update(&mut self, holder: &LockHolder) -> Result<(), StoreError> {
        let mut holder = holder.clone();
        if holder.host.is_empty() {
            holder.host = this_host();
        }
        match &mut self.hold {
            Hold::File(file) => write_holder(file, &holder).map_err(|e| StoreError::Io {
                action: "write",
                path: LOCK_FILE.into(),
                source: e,
            }),
            Hold::Pg(lock) => {
                let json = serde_json::to_string(&holder).unwrap_or_default();
                match lock.update(&json) {
                    Ok(true) if holder.run_id.is_empty() => Ok(()),
                    Ok(true) => lock
                        .record_run(&holder.run_id, &holder.host, holder.pid, &holder.command)
                        .map_err(|e| StoreError::Ledger(DbError::Pg(e))),
                    Ok(false) => Err(StoreError::Ledger(DbError::Pg(lost(lock)))),
                    Err(e) => Err(StoreError::Ledger(DbError::Pg(e))),
                }
            }
        }
    }

    /// Whether the lock is held now. A file lock always is while this value
    /// lives. A PostgreSQL lock is not once its connection was lost (the
    /// server released it with the session): asks the server. Its watcher
    /// takes a lost lock back within a moment of the server answering again,
    /// and stops this process (SIGTERM) when another pmpo took it first; a
    /// caller that finds it lost should likewise start nothing new, stop
    /// what it runs, and end as interrupted (`pmpo resume` continues).
    pub fn is_held(&self) -> bool {
        match &self.hold {
            Hold::File(_) => true,
            Hold::Pg(lock) => lock.is_held(),
        }
    }

    /// [`WorkspaceLock::is_held`] as a result: the error says the lock was
    /// lost and what to do.
    pub fn ensure_held(&self) -> Result<(), StoreError> {
        match &self.hold {
            Hold::Pg(lock) if !lock.is_held() => Err(StoreError::Ledger(DbError::Pg(lost(lock)))),
            _ => Ok(()),
        }
    }
}

fn lost(lock: &PgLock) -> PgError {
    PgError::Gone {
        server: lock.server().to_string(),
        waited: std::time::Duration::ZERO,
        detail: "the connection that held the workspace lock was lost, so the lock was released and another pmpo may hold it now".into(),
    }
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        // A clean release empties the file (or, with PostgreSQL, removes the
        // holder row), so the next holder knows nobody died holding it.
        if let Hold::File(file) = &mut self.hold {
            let _ = file.set_len(0);
        }
    }
}

/// The current holder, if the workspace is locked right now.
pub fn current_holder(ws: &Workspace) -> Option<LockHolder> {
    if let Ok(StoreSpec::Postgres(url)) = store_spec(ws.root()) {
        // A reading command makes no marker: without one, no lock was taken.
        let scope = crate::pg::schema::read_workspace_id(ws.root()).ok()??;
        let row = pg_locks::current(&url, &scope, LOCK_FILE).ok()??;
        return serde_json::from_str(&row).ok();
    }
    let path = ws.resolve(LOCK_FILE).ok()?;
    let mut file = crate::open_own(&path, OpenOptions::new().read(true).write(true)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(_) => read_holder(&mut file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(pid: u32) -> LockHolder {
        LockHolder {
            pid,
            run_id: "r".into(),
            since: "t".into(),
            command: "execute".into(),
            host: String::new(),
        }
    }

    #[test]
    fn a_link_at_the_lock_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, "keep me\n").unwrap();
        std::fs::create_dir_all(dir.path().join(".state")).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(LOCK_FILE)).unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        match acquire(&ws, &holder(1), false) {
            Err(LockError::Store(StoreError::Link { path, why })) => {
                assert_eq!(path, LOCK_FILE);
                assert!(why.contains("symbolic link"), "{why}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(current_holder(&ws).is_none());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    }

    #[test]
    fn second_holder_is_refused_then_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let first = acquire(&ws, &holder(1), false).unwrap();
        assert!(first.previous.is_none());
        match acquire(&ws, &holder(2), false) {
            Err(LockError::Busy(Some(h))) => assert_eq!(h.pid, 1),
            other => panic!("expected busy, got {other:?}"),
        }
        assert_eq!(current_holder(&ws).map(|h| h.pid), Some(1));
        drop(first);
        assert!(current_holder(&ws).is_none());
        // Waits: another test of this process may be starting a child, which
        // shares the released lock's descriptor until it execs.
        let second = acquire(&ws, &holder(2), true).unwrap();
        assert!(
            second.previous.is_none(),
            "a clean release leaves no previous holder"
        );
    }

    /// A workspace whose pmpo.toml names a fresh PostgreSQL database.
    fn pg_workspace(tag: &str) -> Option<tempfile::TempDir> {
        let url = pmpo_testkit::pg::fresh_db(tag)?;
        if std::env::var_os(crate::db::STORE_ENV).is_some() {
            eprintln!("skipping `{tag}`: PMPO_STORE is set and would win over pmpo.toml");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pmpo.toml"),
            format!("[store]\nurl = \"{url}\"\n"),
        )
        .unwrap();
        Some(dir)
    }

    #[test]
    fn with_postgres_the_lock_is_advisory_and_no_lock_file_is_made() {
        let Some(dir) = pg_workspace("lock_ws") else {
            return;
        };
        let ws = Workspace::open(dir.path()).unwrap();
        let first = acquire(&ws, &holder(1), false).unwrap();
        assert!(first.previous.is_none());
        assert!(first.is_held());
        first.ensure_held().unwrap();
        let held = current_holder(&ws).expect("a holder while locked");
        assert_eq!((held.pid, held.host.clone()), (1, this_host()));
        match acquire(&ws, &holder(2), false) {
            Err(e @ LockError::Busy(Some(_))) => {
                let text = e.to_string();
                assert!(text.contains("pid 1 (execute, run r)"), "{text}");
                // On this machine, the host is not named.
                assert!(!text.contains(" on "), "{text}");
            }
            other => panic!("expected busy, got {other:?}"),
        }
        // The artifact lock is another lock.
        let art = acquire_at(&ws, ".refiner/lock", &holder(3), false).unwrap();
        drop(art);
        drop(first);
        assert!(current_holder(&ws).is_none());
        let second = acquire(&ws, &holder(2), true).unwrap();
        assert!(second.previous.is_none());
        assert!(!dir.path().join(LOCK_FILE).exists());
        assert!(!dir.path().join(".refiner/lock").exists());
    }

    #[test]
    fn a_holder_on_another_machine_is_named_with_its_host() {
        let mut h = holder(7);
        h.host = "build-3".into();
        let text = LockError::Busy(Some(h)).to_string();
        assert!(text.contains("pid 7 on build-3 (execute, run r)"), "{text}");
    }
}
