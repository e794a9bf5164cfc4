//! Declared outputs: expanding paths and globs inside the workspace, and
//! telling which files a stage created or changed.

use pmpo_store::{FileDigest, GlobMatch, StoreError, Workspace, hash_file};
use serde::Serialize;
use std::collections::BTreeMap;

/// How a file changed during a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Modified,
    Unchanged,
}

/// A file found under a stage's declared outputs.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratedFile {
    pub path: String,
    pub size: u64,
    pub blake3: String,
    pub stage: String,
    pub change: Change,
    #[serde(skip)]
    pub before: Option<FileDigest>,
}

/// The result of expanding declared outputs.
#[derive(Debug, Default)]
pub struct Expansion {
    /// Workspace-relative files with their digests.
    pub files: BTreeMap<String, FileDigest>,
    /// Patterns that matched nothing (or named a missing file).
    pub missing: Vec<String>,
    /// Problems that make an output unacceptable (symlink escaping the workspace...).
    pub problems: Vec<String>,
}

/// Expands declared output patterns ([`Workspace::glob`]: confined, pruned,
/// in order) and hashes every file they match.
pub fn expand(ws: &Workspace, patterns: &[String]) -> Expansion {
    let mut out = Expansion::default();
    for raw in patterns {
        let before = out.files.len();
        let problems = out.problems.len();
        match ws.glob(raw) {
            Ok(found) => add_found(ws, raw, found, &mut out),
            Err(StoreError::Pattern { why, .. }) => out
                .problems
                .push(format!("`{raw}`: not a valid glob: {why}")),
            Err(e) => out.problems.push(format!("`{raw}`: {e}")),
        }
        if out.files.len() == before && out.problems.len() == problems {
            out.missing.push(raw.clone());
        }
    }
    out
}

fn add_found(ws: &Workspace, raw: &str, found: GlobMatch, out: &mut Expansion) {
    for (rel, real) in found.links_out {
        out.problems.push(format!(
            "`{raw}`: `{rel}` is a symbolic link to `{}`, outside the workspace",
            real.display()
        ));
    }
    for rel in found.broken_links {
        out.problems
            .push(format!("`{raw}`: `{rel}` is a broken symbolic link"));
    }
    for rel in found.files {
        match hash_file(&ws.root().join(&rel)) {
            Ok(d) => {
                out.files.insert(rel, d);
            }
            Err(e) => out
                .problems
                .push(format!("`{raw}`: cannot read `{rel}`: {e}")),
        }
    }
}

/// Compares the files under a stage's outputs before and after it ran.
pub fn diff(
    stage: &str,
    before: &BTreeMap<String, FileDigest>,
    after: &Expansion,
) -> Vec<GeneratedFile> {
    after
        .files
        .iter()
        .map(|(path, digest)| {
            let prior = before.get(path);
            let change = match prior {
                None => Change::Created,
                Some(d) if d == digest => Change::Unchanged,
                Some(_) => Change::Modified,
            };
            GeneratedFile {
                path: path.clone(),
                size: digest.size,
                blake3: digest.blake3.clone(),
                stage: stage.to_string(),
                change,
                before: prior.cloned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn expands_literals_dirs_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        fs::create_dir_all(dir.path().join("out/sub")).unwrap();
        fs::write(dir.path().join("out/a.png"), b"a").unwrap();
        fs::write(dir.path().join("out/b.png"), b"b").unwrap();
        fs::write(dir.path().join("out/sub/c.png"), b"c").unwrap();
        fs::write(dir.path().join("out/n.txt"), b"n").unwrap();
        let e = expand(&ws, &["out/*.png".into()]);
        assert_eq!(
            e.files.keys().collect::<Vec<_>>(),
            vec!["out/a.png", "out/b.png"]
        );
        let e = expand(&ws, &["out/**/*.png".into()]);
        assert_eq!(e.files.len(), 3);
        let e = expand(
            &ws,
            &["out".into(), "missing.txt".into(), "none/*.x".into()],
        );
        assert_eq!(e.files.len(), 4);
        assert_eq!(e.missing, vec!["missing.txt", "none/*.x"]);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_workspace_are_problems() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("leak.txt")).unwrap();
        let e = expand(&ws, &["leak.txt".into()]);
        assert!(e.files.is_empty());
        assert!(
            e.problems[0].contains("outside the workspace"),
            "{:?}",
            e.problems
        );
        assert!(e.missing.is_empty());
    }
}
