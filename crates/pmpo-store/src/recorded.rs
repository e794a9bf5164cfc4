//! The one write path for the user's files: backed up and recorded in the
//! ledger (intent before the change, completion after).

use std::fs;
use std::io;

use crate::states::PatchState;
use crate::*;

/// Who changes a file, for the ledger: the run and the writer (a stage id,
/// `pmpo` for the engine's own results, `restore`, `doctor`, `loop`).
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub run_id: &'a str,
    pub writer: &'a str,
}

/// The one write path for files the user sees (everything outside pmpo's
/// own directories): confined, atomic, the previous content backed up, and
/// the change recorded in the ledger: an intent (path, before-digest, backup)
/// committed before the file is touched, completed with the after-digest once
/// it is. A process killed in between leaves the intent, which `pmpo ledger`
/// shows as interrupted and `pmpo restore` can act on.
impl Workspace {
    /// Replaces (or creates) a user-visible file with `bytes`. Returns the
    /// ledger entry, or `None` when the file already had that content
    /// (nothing written, nothing recorded).
    pub fn write_recorded(
        &self,
        db: &mut dyn db::ExecStore,
        rel: &str,
        bytes: &[u8],
        who: Writer<'_>,
    ) -> Result<Option<db::PatchRow>, StoreError> {
        let new = hash_bytes(bytes);
        self.recorded(db, rel, who, Some(&new), |ws| {
            ws.write_atomic(rel, bytes, Durability::Durable)
                .map(|(_, after)| Some(after))
        })
    }

    /// Writes a file wherever it is: pmpo's own files (under [`OWN_DIRS`])
    /// atomically and unrecorded, every other file through
    /// [`Workspace::write_recorded`] with the workspace's own ledger (opened
    /// for this write, committed before it returns).
    pub fn write_file(
        &self,
        rel: &str,
        bytes: &[u8],
        who: Writer<'_>,
    ) -> Result<Option<db::PatchRow>, StoreError> {
        if is_own_path(rel) {
            self.write_atomic(rel, bytes, Durability::Durable)?;
            return Ok(None);
        }
        let mut store = db::open_store(&self.root)?;
        let row = self.write_recorded(store.as_mut(), rel, bytes, who)?;
        store.flush()?;
        Ok(row)
    }

    /// Replaces a user-visible file with a backup blob (whose digest must be
    /// `blake3`), streamed. Returns the ledger entry (`None`: already that content).
    pub fn restore_recorded(
        &self,
        db: &mut dyn db::ExecStore,
        rel: &str,
        blake3: &str,
        who: Writer<'_>,
    ) -> Result<Option<db::PatchRow>, StoreError> {
        let blob = self.resolve(&Self::backup_rel(blake3))?;
        let want = FileDigest {
            size: fs::metadata(&blob).map(|m| m.len()).unwrap_or(0),
            blake3: blake3.to_string(),
        };
        self.recorded(db, rel, who, Some(&want), |ws| {
            ws.replace_from_file(rel, &blob, blake3)
                .map(|(_, after, _)| Some(after))
        })
    }

    /// Moves a user-visible file into the backup store (it is removed from
    /// its place, its content kept), recorded so that it can be brought back.
    pub fn remove_recorded(
        &self,
        db: &mut dyn db::ExecStore,
        rel: &str,
        who: Writer<'_>,
    ) -> Result<Option<db::PatchRow>, StoreError> {
        self.recorded(db, rel, who, None, |ws| {
            let path = ws.resolve(rel)?;
            fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
            Ok(None)
        })
    }

    /// The ledger protocol around one change of one file: `change` makes it
    /// and returns the new content's digest (`None`: the file is gone).
    fn recorded(
        &self,
        db: &mut dyn db::ExecStore,
        rel: &str,
        who: Writer<'_>,
        target: Option<&FileDigest>,
        change: impl FnOnce(&Self) -> Result<Option<FileDigest>, StoreError>,
    ) -> Result<Option<db::PatchRow>, StoreError> {
        let rel = rel.trim_start_matches("./");
        let path = self.resolve(rel)?;
        let before = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                return Err(StoreError::io(
                    "write",
                    &path,
                    io::Error::new(io::ErrorKind::IsADirectory, "a directory is in the way"),
                ));
            }
            Ok(m) if m.is_file() => {
                Some(hash_file(&path).map_err(|e| StoreError::io("read", &path, e))?)
            }
            Ok(_) => {
                return Err(StoreError::Escape {
                    path: rel.to_string(),
                    why: "it is a symbolic link or a special file, and pmpo replaces only plain files".into(),
                });
            }
            Err(_) => None,
        };
        if before.as_ref() == target {
            return Ok(None);
        }
        let backed_up = match &before {
            Some(d) => self.backup(rel, d)?,
            None => false,
        };
        // Never replace content that is not safely kept (it changed while
        // it was being copied: something else is writing it).
        if before.is_some() && !backed_up {
            return Err(StoreError::io(
                "back up",
                &path,
                io::Error::other(
                    "the file changed while it was being copied; nothing was replaced, try again",
                ),
            ));
        }
        let mut row = db::PatchRow::new(PatchState::Pending, who.run_id, who.writer, rel)
            .before(before.as_ref(), backed_up);
        // The intent is durable before the file is touched.
        row.id = db.add_patch(&row)?;
        db.flush()?;
        match change(self) {
            Ok(after) => {
                row.time = now_rfc3339();
                row.state = PatchState::Completed;
                row = row.after(after.as_ref());
                db.finish_patch(
                    row.id,
                    after.as_ref().map(|d| (d.blake3.as_str(), d.size as i64)),
                    PatchState::Completed,
                    &row.time,
                )?;
                // Made durable with the caller's next flush: until then the
                // intent (durable) still says what to undo.
                Ok(Some(row))
            }
            Err(e) => {
                // Nothing was changed (every change is atomic): no entry.
                let _ = db.drop_patch(row.id).and_then(|_| db.flush());
                Err(e)
            }
        }
    }
}
