//! Detection: a metadata snapshot of the workspace (pmpo's own directories
//! and temporary files left out) before and after a stage, and the
//! difference between the two.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::policy::{OWN_DIRS, OWN_TEMP_MARK};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    /// 'd', 'f', 'l' or 'o' (other).
    kind: u8,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    mode: u32,
}

impl Meta {
    fn of(m: &fs::Metadata) -> Meta {
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            b'd'
        } else if ft.is_file() {
            b'f'
        } else if ft.is_symlink() {
            b'l'
        } else {
            b'o'
        };
        Meta {
            kind,
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            mode: m.mode(),
        }
    }

    /// A directory changes when an entry is added or removed: that is seen
    /// on the entry itself, so a directory counts as changed only when it
    /// was replaced or its permissions changed.
    fn same(&self, other: &Meta) -> bool {
        if self.kind == b'd' && other.kind == b'd' {
            return self.ino == other.ino && self.mode == other.mode;
        }
        self == other
    }
}

/// The metadata of every entry under some directories of a workspace.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    entries: HashMap<String, Meta>,
}

/// How an entry changed between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Created,
    Changed,
    Deleted,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Created => "created",
            Kind::Changed => "changed",
            Kind::Deleted => "deleted",
        }
    }
}

/// One difference: a workspace-relative path (with `/`), how it changed,
/// whether it is a directory, and its sizes before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub path: String,
    pub kind: Kind,
    pub is_dir: bool,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
}

impl Snapshot {
    /// Walks `dirs` (absolute, inside `root`; the whole workspace when empty),
    /// without following symbolic links, leaving out pmpo's own directories
    /// at the top of the workspace and pmpo's temporary files.
    pub fn take(root: &Path, dirs: &[std::path::PathBuf]) -> Snapshot {
        // Granted directories are canonical paths: so is the root they are relative to.
        let real = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let root = real.as_path();
        let mut s = Snapshot::default();
        if dirs.is_empty() {
            s.walk(root, root);
        } else {
            for d in dirs {
                s.walk(root, d);
            }
        }
        s
    }

    /// How many entries were seen.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn walk(&mut self, root: &Path, dir: &Path) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.contains(OWN_TEMP_MARK) {
                continue;
            }
            let path = e.path();
            if dir == root && OWN_DIRS.contains(&&*name) {
                continue;
            }
            // Relative to the open directory (fstatat), not the whole path again.
            let Ok(m) = e.metadata() else {
                continue;
            };
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let rel = rel.to_string_lossy().replace('\\', "/");
            let meta = Meta::of(&m);
            let recurse = meta.kind == b'd';
            if self.entries.insert(rel, meta).is_none() && recurse {
                self.walk(root, &path);
            }
        }
    }

    /// What changed from `self` to `after`, sorted by path.
    pub fn diff(&self, after: &Snapshot) -> Vec<Difference> {
        let mut out = Vec::new();
        for (path, b) in &self.entries {
            match after.entries.get(path) {
                None => out.push(Difference {
                    path: path.clone(),
                    kind: Kind::Deleted,
                    is_dir: b.kind == b'd',
                    size_before: Some(b.size),
                    size_after: None,
                }),
                Some(a) if !b.same(a) => out.push(Difference {
                    path: path.clone(),
                    kind: Kind::Changed,
                    is_dir: a.kind == b'd',
                    size_before: Some(b.size),
                    size_after: Some(a.size),
                }),
                Some(_) => {}
            }
        }
        for (path, a) in &after.entries {
            if !self.entries.contains_key(path) {
                out.push(Difference {
                    path: path.clone(),
                    kind: Kind::Created,
                    is_dir: a.kind == b'd',
                    size_before: None,
                    size_after: Some(a.size),
                });
            }
        }
        out.sort_by(|x, y| x.path.cmp(&y.path));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_created_changed_and_deleted_but_not_own_state() {
        let dir = std::env::temp_dir().join(format!("pmpo-snap-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("a")).unwrap();
        fs::create_dir_all(dir.join(".state")).unwrap();
        fs::write(dir.join("a/keep"), "1").unwrap();
        fs::write(dir.join("a/change"), "1").unwrap();
        fs::write(dir.join("gone"), "1").unwrap();
        let before = Snapshot::take(&dir, &[]);
        fs::write(dir.join("a/change"), "22").unwrap();
        fs::remove_file(dir.join("gone")).unwrap();
        fs::write(dir.join("a/new"), "3").unwrap();
        fs::write(dir.join(".state/db"), "x").unwrap();
        let after = Snapshot::take(&dir, &[]);
        let d: Vec<(String, Kind)> = before
            .diff(&after)
            .into_iter()
            .map(|d| (d.path, d.kind))
            .collect();
        assert_eq!(
            d,
            vec![
                ("a/change".into(), Kind::Changed),
                ("a/new".into(), Kind::Created),
                ("gone".into(), Kind::Deleted),
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
