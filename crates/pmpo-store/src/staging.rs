//! Staged writes: a [`Workspace`] whose writes to files are kept in memory
//! instead of going to their places. A tool that runs in a child process
//! writes through such a workspace and hands what it staged back with its
//! result, so a child that is killed (its time limit, a cancel, its memory
//! limit) never leaves a half-done change behind and can never write after
//! its end was reported: only the parent puts the staged files in place
//! ([`Workspace::commit_staged`]), once the child has answered.
//!
//! The bytes travel in the answer rather than through files: a staging
//! directory per call (mkdir, create, read back, remove) cost more than a
//! millisecond a call on the development machine, and there is nothing to
//! clean up after a killed pmpo.
//!
//! Reads of a path staged earlier through the same workspace see the staged
//! content, so a tool that writes a file and reads it back works the same.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::{FileDigest, StoreError, Workspace, hash_bytes, hash_file};

/// The writes a staging workspace has kept, in the order they were made.
#[derive(Debug, Default)]
pub struct Staging {
    staged: Mutex<Vec<(PathBuf, StagedFile)>>,
}

/// One staged write: the workspace path it is for and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

impl Workspace {
    /// This workspace with its writes to files kept in memory (see the module).
    pub fn staging(&self) -> Workspace {
        Workspace {
            root: self.root.clone(),
            staging: Some(Arc::new(Staging::default())),
        }
    }

    /// The writes staged so far, in the order they were made (a path written
    /// twice appears once, at its first place, with its last content).
    pub fn staged_files(&self) -> Vec<StagedFile> {
        match &self.staging {
            Some(s) => s
                .staged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(_, f)| f.clone())
                .collect(),
            None => Vec::new(),
        }
    }

    /// A staged file's content as an open file (for a read of a path
    /// written earlier through this workspace), if one was staged.
    pub(crate) fn staged_open(&self, path: &std::path::Path) -> Option<io::Result<File>> {
        let s = self.staging.as_ref()?;
        let staged = s.staged.lock().unwrap_or_else(|p| p.into_inner());
        let (_, f) = staged.iter().find(|(p, _)| p == path)?;
        Some(memory_file(&f.bytes))
    }

    /// A write of a staging workspace: checked as the real write would be
    /// (confined, not through a link out, no directory in the way), kept.
    pub(crate) fn stage_write(
        &self,
        staging: &Staging,
        rel: &str,
        bytes: &[u8],
    ) -> Result<(Option<FileDigest>, FileDigest), StoreError> {
        let path = self.resolve_for_write(rel)?;
        let mut staged = staging.staged.lock().unwrap_or_else(|p| p.into_inner());
        let earlier = staged.iter().position(|(p, _)| *p == path);
        let before = match earlier {
            Some(i) => Some(hash_bytes(&staged[i].1.bytes)),
            None => match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => hash_file(&path).ok(),
                Ok(m) if m.is_dir() => {
                    return Err(StoreError::io(
                        "write",
                        &path,
                        io::Error::new(io::ErrorKind::IsADirectory, "a directory is in the way"),
                    ));
                }
                _ => None,
            },
        };
        let entry = StagedFile {
            path: rel.trim_start_matches("./").to_string(),
            bytes: bytes.to_vec(),
        };
        match earlier {
            Some(i) => staged[i].1 = entry,
            None => staged.push((path, entry)),
        }
        Ok((before, hash_bytes(bytes)))
    }

    /// Puts staged files in place, in order, each atomically. A path in
    /// pmpo's own directories is refused (a tool's output never goes there).
    pub fn commit_staged(&self, files: &[StagedFile]) -> Result<(), StoreError> {
        if let Some(f) = files.iter().find(|f| crate::is_own_path(&f.path)) {
            return Err(StoreError::Escape {
                path: f.path.clone(),
                why: "a tool's output may not go to pmpo's own directories".into(),
            });
        }
        for f in files {
            self.write_atomic(&f.path, &f.bytes, crate::Durability::Relaxed)?;
        }
        Ok(())
    }
}

/// An anonymous in-memory file holding `bytes`, positioned at its start.
fn memory_file(bytes: &[u8]) -> io::Result<File> {
    // SAFETY: memfd_create(2) with a NUL-terminated name we own.
    let fd = unsafe { libc::memfd_create(c"pmpo-staged".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.write_all(bytes)?;
    io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        (dir, ws)
    }

    #[test]
    fn staged_writes_wait_for_the_commit_and_reads_see_them() {
        let (_d, ws) = ws();
        ws.write_atomic("a.txt", b"old\n", crate::Durability::Relaxed)
            .unwrap();
        let st = ws.staging();
        let (before, after) = st
            .write_atomic("a.txt", b"new\n", crate::Durability::Relaxed)
            .unwrap();
        assert_eq!(before.unwrap().blake3, hash_bytes(b"old\n").blake3);
        assert_eq!(after.blake3, hash_bytes(b"new\n").blake3);
        st.write_atomic_with("sub/b.txt", crate::Durability::Relaxed, |w| {
            w.write_all(b"b")
        })
        .unwrap();
        // A second write of the same path keeps its place, with its last content.
        st.write_atomic("a.txt", b"newer\n", crate::Durability::Relaxed)
            .unwrap();
        assert_eq!(st.read("a.txt").unwrap(), b"newer\n");
        // Nothing is in place yet, and nothing was written anywhere.
        assert_eq!(ws.read("a.txt").unwrap(), b"old\n");
        assert!(ws.read("sub/b.txt").is_err());
        assert!(!ws.root().join("sub").exists());
        let files = st.staged_files();
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["a.txt", "sub/b.txt"]
        );
        ws.commit_staged(&files).unwrap();
        assert_eq!(ws.read("a.txt").unwrap(), b"newer\n");
        assert_eq!(ws.read("sub/b.txt").unwrap(), b"b");
    }

    #[test]
    fn staged_writes_are_checked_like_real_ones() {
        let (_d, ws) = ws();
        std::fs::create_dir(ws.root().join("d")).unwrap();
        let st = ws.staging();
        assert!(
            st.write_atomic("../x", b"x", crate::Durability::Relaxed)
                .is_err()
        );
        assert!(
            st.write_atomic("d", b"x", crate::Durability::Relaxed)
                .is_err()
        );
        assert!(st.staged_files().is_empty());
    }

    #[test]
    fn a_commit_refuses_pmpos_own_paths_before_writing_anything() {
        let (_d, ws) = ws();
        let files = [
            StagedFile {
                path: "a.txt".into(),
                bytes: b"a".to_vec(),
            },
            StagedFile {
                path: ".state/x".into(),
                bytes: b"x".to_vec(),
            },
        ];
        assert!(ws.commit_staged(&files).is_err());
        assert!(ws.read("a.txt").is_err());
        assert!(!ws.root().join(".state/x").exists());
    }
}
