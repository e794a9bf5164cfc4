//! The content-addressed backup store (`.refiner/backups/ab/abcd...`, by
//! blake3): what a write is about to replace is copied there first.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::*;

/// Where overwritten content is kept, by blake3 (`.refiner/backups/ab/abcdef...`).
pub const BACKUP_DIR: &str = ".refiner/backups";

impl Workspace {
    /// The workspace-relative path of a backup blob.
    pub fn backup_rel(hash: &str) -> String {
        format!("{BACKUP_DIR}/{}/{hash}", &hash[..2.min(hash.len())])
    }

    /// Copies a file's current content into the backup store (once per content).
    /// Returns whether the content is now in the store.
    pub fn backup(&self, rel: &str, digest: &FileDigest) -> Result<bool, StoreError> {
        let blob = self.resolve_for_write(&Self::backup_rel(&digest.blake3))?;
        // A link planted in the backup store does not count as a backup: the
        // copy is renamed over it (replacing the link, never its target).
        if fs::symlink_metadata(&blob).is_ok_and(|m| m.is_file()) {
            return Ok(true);
        }
        let src = self.resolve(rel)?;
        let dir = blob.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
        let tmp = self.temp_path(&blob);
        let copied = fs::copy(&src, &tmp).and_then(|_| {
            // The file may have changed since it was hashed; keep only a true copy.
            match hash_file(&tmp) {
                Ok(d) if d == *digest => fs::rename(&tmp, &blob).map(|_| true),
                Ok(_) => fs::remove_file(&tmp).map(|_| false),
                Err(e) => Err(e),
            }
        });
        match copied {
            Ok(ok) => Ok(ok),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(StoreError::io("back up", &src, e))
            }
        }
    }

    /// Replaces a file atomically with the content of another file (a backup
    /// blob), streamed: memory stays flat whatever the size. The previous
    /// content goes to the backup store first; the copy must have the digest
    /// `expect`, or nothing is replaced. Returns (before, after, whether before
    /// is backed up).
    pub(crate) fn replace_from_file(
        &self,
        rel: &str,
        src: &Path,
        expect: &str,
    ) -> Result<(Option<FileDigest>, FileDigest, bool), StoreError> {
        let path = self.resolve(rel)?;
        let mut before = None;
        let mut backed_up = false;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                return Err(StoreError::io(
                    "restore",
                    &path,
                    io::Error::new(io::ErrorKind::IsADirectory, "a directory is in the way"),
                ));
            }
            Ok(m) if m.is_file() => {
                if let Ok(d) = hash_file(&path) {
                    backed_up = self.backup(rel, &d)?;
                    before = Some(d);
                }
            }
            _ => {}
        }
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
        let tmp = self.temp_path(&path);
        let result = (|| {
            fs::copy(src, &tmp)?;
            let after = hash_file(&tmp)?;
            if after.blake3 != expect {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the copy of `{}` does not have the expected content",
                        src.display()
                    ),
                ));
            }
            File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &path)?;
            Ok(after)
        })();
        match result {
            Ok(after) => {
                if let Ok(d) = File::open(&dir) {
                    let _ = d.sync_all();
                }
                Ok((before, after, backed_up))
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(StoreError::io("restore", &path, e))
            }
        }
    }
}
