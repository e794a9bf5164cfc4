//! Staged writes: a [`Workspace`] whose writes to files go to a staging
//! directory under `.state/staging/` instead of their places. A tool that
//! runs in a child process writes through such a workspace, so a child that
//! is killed (its time limit, a cancel, its memory limit) never leaves a
//! half-done change behind and can never write after its end was reported:
//! the parent moves the staged files into place ([`Workspace::commit_staged`])
//! only once the child has returned its result, or discards them.
//!
//! Reads of a path staged earlier through the same workspace see the staged
//! content, so a tool that writes a file and reads it back works the same.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::{FileDigest, StoreError, Workspace, hash_bytes, hash_file};

/// Where a workspace's staged writes go, and what was staged so far.
#[derive(Debug)]
pub struct Staging {
    /// Workspace-relative (under `.state/staging/`).
    dir_rel: String,
    dir: PathBuf,
    staged: Mutex<Vec<(PathBuf, StagedFile)>>,
}

/// One staged write: the workspace path it is for, the file in the staging
/// directory that holds its content, and that content's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    pub path: String,
    pub file: String,
    pub size: u64,
    pub blake3: String,
}

/// The workspace-relative staging directory for one tool call (flat under
/// `.state/staging/`: no shared parent another call could remove).
pub fn staging_dir(run_id: &str, stage_id: &str, call: u64) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{}/staging/{}-{}-{}-{call}",
        crate::STATE_DIR,
        clean(run_id),
        clean(stage_id),
        std::process::id()
    )
}

impl Workspace {
    /// This workspace with its writes staged in `dir_rel` (one of pmpo's own
    /// directories, created here; it must be new or empty).
    pub fn staged_in(&self, dir_rel: &str) -> Result<Workspace, StoreError> {
        if !dir_rel.starts_with(".state/staging/") || dir_rel.contains("..") {
            return Err(StoreError::Escape {
                path: dir_rel.to_string(),
                why: "a staging directory must be under .state/staging/".into(),
            });
        }
        let dir = self.resolve_own(dir_rel)?;
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
        Ok(Workspace {
            root: self.root.clone(),
            staging: Some(Arc::new(Staging {
                dir_rel: dir_rel.to_string(),
                dir,
                staged: Mutex::new(Vec::new()),
            })),
        })
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

    /// The staged file for an absolute workspace path, if one was staged.
    pub(crate) fn staged_path(&self, path: &Path) -> Option<PathBuf> {
        let s = self.staging.as_ref()?;
        let staged = s.staged.lock().unwrap_or_else(|p| p.into_inner());
        staged
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, f)| s.dir.join(&f.file))
    }

    /// A write of a staging workspace: checked as the real write would be
    /// (confined, no directory in the way), kept in the staging directory.
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
            Some(i) => Some(FileDigest {
                size: staged[i].1.size,
                blake3: staged[i].1.blake3.clone(),
            }),
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
        let name = format!("{}", staged.len());
        let name = match earlier {
            Some(i) => staged[i].1.file.clone(),
            None => name,
        };
        let file = staging.dir.join(&name);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&file)?;
            f.write_all(bytes)
        })();
        result.map_err(|e| StoreError::io("stage", &file, e))?;
        let digest = hash_bytes(bytes);
        let entry = StagedFile {
            path: rel.trim_start_matches("./").to_string(),
            file: name,
            size: digest.size,
            blake3: digest.blake3.clone(),
        };
        match earlier {
            Some(i) => staged[i].1 = entry,
            None => staged.push((path, entry)),
        }
        Ok((before, digest))
    }

    /// Moves staged files into their places, in order, each atomically (the
    /// content is checked against its digest first), then removes the
    /// staging directory. A file whose content does not match is refused.
    pub fn commit_staged(&self, dir_rel: &str, files: &[StagedFile]) -> Result<(), StoreError> {
        for f in files {
            if crate::is_own_path(&f.path) {
                return Err(StoreError::Escape {
                    path: f.path.clone(),
                    why: "a tool's staged output may not go to pmpo's own directories".into(),
                });
            }
            if f.file.is_empty() || !f.file.chars().all(|c| c.is_ascii_digit()) {
                return Err(StoreError::Escape {
                    path: f.file.clone(),
                    why: "a staged file is named by a number".into(),
                });
            }
            let src = self.resolve_own(&format!("{dir_rel}/{}", f.file))?;
            let bytes = {
                let mut file = File::open(&src).map_err(|e| StoreError::io("read", &src, e))?;
                let mut v = Vec::new();
                io::Read::read_to_end(&mut file, &mut v)
                    .map_err(|e| StoreError::io("read", &src, e))?;
                v
            };
            let digest = hash_bytes(&bytes);
            if digest.blake3 != f.blake3 {
                return Err(StoreError::io(
                    "commit",
                    &src,
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the staged content changed after the tool reported it",
                    ),
                ));
            }
            self.write_atomic(&f.path, &bytes, crate::Durability::Relaxed)?;
        }
        self.discard_staged(dir_rel);
        Ok(())
    }

    /// Removes a staging directory and what it holds (a killed or failed
    /// tool's writes). Missing is fine.
    pub fn discard_staged(&self, dir_rel: &str) {
        if let Ok(dir) = self.resolve_own(dir_rel)
            && dir.exists()
        {
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// The staging directory of a staging workspace (workspace-relative).
    pub fn staging_dir_rel(&self) -> Option<&str> {
        self.staging.as_ref().map(|s| s.dir_rel.as_str())
    }
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
        let dir = staging_dir("r1", "s/1", 0);
        let st = ws.staged_in(&dir).unwrap();
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
        // Nothing is in place yet.
        assert_eq!(ws.read("a.txt").unwrap(), b"old\n");
        assert!(ws.read("sub/b.txt").is_err());
        let files = st.staged_files();
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["a.txt", "sub/b.txt"]
        );
        ws.commit_staged(&dir, &files).unwrap();
        assert_eq!(ws.read("a.txt").unwrap(), b"newer\n");
        assert_eq!(ws.read("sub/b.txt").unwrap(), b"b");
        assert!(
            !ws.root().join(&dir).exists(),
            "the staging directory is removed"
        );
    }

    #[test]
    fn discarded_writes_leave_the_files_as_they_were() {
        let (_d, ws) = ws();
        ws.write_atomic("a.txt", b"old", crate::Durability::Relaxed)
            .unwrap();
        let dir = staging_dir("r", "s", 1);
        let st = ws.staged_in(&dir).unwrap();
        st.write_atomic("a.txt", b"new", crate::Durability::Relaxed)
            .unwrap();
        ws.discard_staged(&dir);
        assert_eq!(ws.read("a.txt").unwrap(), b"old");
        assert!(!ws.root().join(&dir).exists());
    }

    #[test]
    fn staged_writes_are_checked_like_real_ones() {
        let (_d, ws) = ws();
        std::fs::create_dir(ws.root().join("d")).unwrap();
        let dir = staging_dir("r", "s", 2);
        let st = ws.staged_in(&dir).unwrap();
        assert!(
            st.write_atomic("../x", b"x", crate::Durability::Relaxed)
                .is_err()
        );
        assert!(
            st.write_atomic("d", b"x", crate::Durability::Relaxed)
                .is_err()
        );
        // Outside .state/staging/ is no staging directory.
        assert!(ws.staged_in("out").is_err());
        assert!(ws.staged_in(".state/staging/../../x").is_err());
    }

    #[test]
    fn a_commit_refuses_changed_content_and_pmpos_own_paths() {
        let (_d, ws) = ws();
        let dir = staging_dir("r", "s", 3);
        let st = ws.staged_in(&dir).unwrap();
        st.write_atomic("a.txt", b"one", crate::Durability::Relaxed)
            .unwrap();
        let mut files = st.staged_files();
        files[0].blake3 = hash_bytes(b"two").blake3;
        assert!(ws.commit_staged(&dir, &files).is_err());
        assert!(ws.read("a.txt").is_err());
        let mut files = st.staged_files();
        files[0].path = ".state/x".into();
        assert!(ws.commit_staged(&dir, &files).is_err());
        let mut files = st.staged_files();
        files[0].file = "../../a".into();
        assert!(ws.commit_staged(&dir, &files).is_err());
    }
}
