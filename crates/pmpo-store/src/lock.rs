//! One writer per workspace: an exclusive lock on `.state/lock`.
//!
//! The lock is an OS file lock, so it disappears with its process: a lock left
//! by a process that died (even by kill -9) is simply taken over. The file
//! holds the holder's pid, run id and start time, for the error a second
//! writer gets.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use crate::{StoreError, Workspace};

pub const LOCK_FILE: &str = ".state/lock";

/// Who holds (or held) the lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: u32,
    pub run_id: String,
    pub since: String,
    pub command: String,
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
            "pid {} ({}, run {}) since {}",
            h.pid, h.command, h.run_id, h.since
        ),
        None => "holder unknown".into(),
    }
}

/// A held workspace lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct WorkspaceLock {
    _file: File,
    /// The previous holder, when it had not released the lock cleanly (its process died).
    pub previous: Option<LockHolder>,
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

/// Takes the lock kept in another file (e.g. `.refiner/lock` for artifact state).
pub fn acquire_at(
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
    let write = (|| {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&serde_json::to_vec(holder).unwrap_or_default())?;
        file.flush()
    })();
    write.map_err(|e| StoreError::Io {
        action: "write",
        path: path.clone(),
        source: e,
    })?;
    Ok(WorkspaceLock {
        _file: file,
        previous,
    })
}

impl WorkspaceLock {
    /// Rewrites the holder information (e.g. once the run id is known).
    pub fn update(&mut self, holder: &LockHolder) -> Result<(), StoreError> {
        let io = (|| {
            self._file.set_len(0)?;
            self._file.seek(SeekFrom::Start(0))?;
            self._file
                .write_all(&serde_json::to_vec(holder).unwrap_or_default())?;
            self._file.flush()
        })();
        io.map_err(|e| StoreError::Io {
            action: "write",
            path: LOCK_FILE.into(),
            source: e,
        })
    }
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        // A clean release empties the file, so the next holder knows nobody died holding it.
        let _ = self._file.set_len(0);
    }
}

/// The current holder, if the workspace is locked right now.
pub fn current_holder(ws: &Workspace) -> Option<LockHolder> {
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
}
