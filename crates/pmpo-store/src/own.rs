//! pmpo's own files (`.state/`, `.refiner/`, `logs/`): never reached through
//! a symbolic link, renamed, cut and removed only here.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use crate::*;

/// pmpo's own directories in a workspace: what is written there is pmpo's
/// state (database, locks, logs, backups), not the user's, and is not ledgered.
pub const OWN_DIRS: &[&str] = &[STATE_DIR, ".refiner", "logs"];

/// Whether a workspace-relative path is inside one of pmpo's own directories.
pub fn is_own_path(rel: &str) -> bool {
    let rel = rel.trim_start_matches("./");
    OWN_DIRS
        .iter()
        .any(|d| rel == *d || rel.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
}

impl Workspace {
    /// Resolves a path inside pmpo's own directories for writing or removal:
    /// anything else is refused, and so is a symbolic link at any component
    /// below the workspace (pmpo's own files are never reached through one).
    pub fn resolve_own(&self, rel: &str) -> Result<PathBuf, StoreError> {
        self.resolve_own_at(rel, false)
    }

    /// As [`Workspace::resolve_own`]; with `entry`, a link at the file itself
    /// is allowed, for an operation on the directory entry that never follows
    /// it (a rename moves the link, not what it names).
    fn resolve_own_at(&self, rel: &str, entry: bool) -> Result<PathBuf, StoreError> {
        let refuse = |why: String| StoreError::Escape {
            path: rel.to_string(),
            why,
        };
        if !is_own_path(rel) {
            return Err(refuse(format!(
                "it is not in pmpo's own directories ({})",
                OWN_DIRS.join(", ")
            )));
        }
        let path = self.resolve(rel)?;
        let mut at = self.root.clone();
        for comp in Path::new(rel.trim_start_matches("./")).components() {
            at.push(comp);
            if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                if at == path && entry {
                    break;
                }
                if at == path {
                    return Err(StoreError::Link {
                        path: rel.to_string(),
                        why: link_refusal_why(&at),
                    });
                }
                let target = fs::read_link(&at)
                    .map(|t| format!(" (to `{}`)", t.display()))
                    .unwrap_or_default();
                return Err(StoreError::Link {
                    path: rel.to_string(),
                    why: format!(
                        "`{}` is a symbolic link{target}, and pmpo never reaches its own files through one; remove the link (pmpo creates the directory again)",
                        at.display()
                    ),
                });
            }
        }
        Ok(path)
    }

    /// Removes one of pmpo's own files (a pruned backup). Returns its size.
    pub fn remove_own_file(&self, rel: &str) -> Result<u64, StoreError> {
        let path = self.resolve_own(rel)?;
        let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
        Ok(size)
    }

    /// Renames one of pmpo's own files (a damaged one moved aside).
    /// A link at `from` itself is moved as a link (rename never follows one).
    pub fn rename_own(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let (a, b) = (self.resolve_own_at(from, true)?, self.resolve_own(to)?);
        fs::rename(&a, &b).map_err(|e| StoreError::io("rename", &a, e))
    }

    /// Cuts one of pmpo's own files to `len` bytes (a torn last line of a log).
    pub fn truncate_own(&self, rel: &str, len: u64) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.resolve_own(rel)?;
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|f| f.set_len(len))
            .map_err(|e| StoreError::io("truncate", &path, e))
    }

    /// Removes one of pmpo's own directories with everything in it (a pruned
    /// run's scripts). Returns the bytes its files held.
    pub fn remove_own_dir(&self, rel: &str) -> Result<u64, StoreError> {
        let path = self.resolve_own(rel)?;
        let size = walkdir_size(&path);
        fs::remove_dir_all(&path).map_err(|e| StoreError::io("remove", &path, e))?;
        Ok(size)
    }
}

fn walkdir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => total += walkdir_size(&e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}
