//! Declared outputs: expanding paths and globs inside the workspace, and
//! telling which files a stage created or changed.

use pmpo_store::{FileDigest, GlobMatch, StoreError, Workspace, hash_file};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

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
    expand_with(ws, patterns, &mut |_, abs| hash_file(abs))
}

/// [`expand`], with the digest of each matched file (workspace-relative
/// path, absolute path) taken by `digest`: the same refusals, the same
/// files, only the digest's source differs (a stamp, see
/// [`pmpo_store::db::stamp`]).
pub fn expand_with(
    ws: &Workspace,
    patterns: &[String],
    digest: &mut dyn FnMut(&str, &Path) -> std::io::Result<FileDigest>,
) -> Expansion {
    let mut out = Expansion::default();
    for raw in patterns {
        let before = out.files.len();
        let problems = out.problems.len();
        match ws.glob(raw) {
            Ok(found) => add_found(ws, raw, found, digest, &mut out),
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

fn add_found(
    ws: &Workspace,
    raw: &str,
    found: GlobMatch,
    digest: &mut dyn FnMut(&str, &Path) -> std::io::Result<FileDigest>,
    out: &mut Expansion,
) {
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
        match digest(&rel, &ws.root().join(&rel)) {
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

/// A file's metadata as its last write left it (inode, times, size): the
/// same before and after a stage means the stage did not write the file,
/// even when the content is what the stage would have written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    id: (u64, u64),
    modified: Option<std::time::SystemTime>,
    changed: i128,
    len: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let m = std::fs::symlink_metadata(path).ok()?;
    #[cfg(unix)]
    let (id, changed) = {
        use std::os::unix::fs::MetadataExt;
        (
            (m.dev(), m.ino()),
            i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        )
    };
    #[cfg(not(unix))]
    let (id, changed) = ((0, 0), 0);
    Some(Stamp {
        id,
        modified: m.modified().ok(),
        changed,
        len: m.len(),
    })
}

/// The stamps of these workspace files (taken before a stage may write).
pub fn stamps<'a>(
    ws: &Workspace,
    paths: impl IntoIterator<Item = &'a String>,
) -> BTreeMap<String, Stamp> {
    paths
        .into_iter()
        .filter_map(|rel| Some((rel.clone(), stamp(&ws.root().join(rel))?)))
        .collect()
}

/// Whether `rel` is one of the paths a tool says it writes itself (a file,
/// or everything under a folder).
fn is_own(rel: &str, own: &[String]) -> bool {
    own.iter().any(|o| {
        let o = o.trim_start_matches("./");
        rel == o || rel.starts_with(&format!("{}/", o.trim_end_matches('/')))
    })
}

/// The files under a stage's outputs that were there before it ran and that
/// it did not write: same metadata as before, and not a file the tool writes
/// through pmpo itself (those skip a write of identical content). Such a
/// file is not the stage's output, whoever put it there.
pub fn not_written(
    ws: &Workspace,
    before: &BTreeMap<String, Stamp>,
    after: &Expansion,
    own: &[String],
) -> std::collections::BTreeSet<String> {
    before
        .iter()
        .filter(|(rel, s)| {
            after.files.contains_key(*rel)
                && !is_own(rel, own)
                && stamp(&ws.root().join(rel)).as_ref() == Some(*s)
        })
        .map(|(rel, _)| rel.clone())
        .collect()
}

/// The declared outputs every file of which is one the stage did not write:
/// each is missing as far as this stage is concerned.
pub fn not_produced(
    ws: &Workspace,
    declared: &[String],
    not_written: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    if not_written.is_empty() {
        return Vec::new();
    }
    declared
        .iter()
        .filter(|raw| {
            let e = expand(ws, std::slice::from_ref(*raw));
            !e.files.is_empty() && e.files.keys().all(|k| not_written.contains(k))
        })
        .map(|raw| {
            format!("declared output `{raw}` was there before the stage ran and the stage did not write it")
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

    #[test]
    fn a_file_there_before_that_the_stage_did_not_write_is_not_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        fs::create_dir_all(dir.path().join("dist/p")).unwrap();
        for f in ["dist/a.png", "dist/b.png", "dist/own.html", "dist/p/s.png"] {
            fs::write(dir.path().join(f), b"old").unwrap();
        }
        let declared: Vec<String> = ["dist/a.png", "dist/b.png", "dist/own.html", "dist/p"]
            .map(String::from)
            .to_vec();
        let before_files = expand(&ws, &declared).files;
        let before = stamps(&ws, before_files.keys());
        assert_eq!(before.len(), 4);
        // The stage rewrites b.png with the same bytes (a write all the same)
        // and leaves the others; own.html and the folder p are the tool's own.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::remove_file(dir.path().join("dist/b.png")).unwrap();
        fs::write(dir.path().join("dist/b.png"), b"old").unwrap();
        let after = expand(&ws, &declared);
        let own = ["dist/own.html".to_string(), "dist/p/".to_string()];
        let nw = not_written(&ws, &before, &after, &own);
        assert_eq!(nw.into_iter().collect::<Vec<_>>(), ["dist/a.png"]);
        let nw = not_written(&ws, &before, &after, &[]);
        assert_eq!(nw.len(), 3);
        assert_eq!(
            not_produced(&ws, &declared, &nw),
            [
                "declared output `dist/a.png` was there before the stage ran and the stage did not write it",
                "declared output `dist/own.html` was there before the stage ran and the stage did not write it",
                "declared output `dist/p` was there before the stage ran and the stage did not write it",
            ]
        );
        // A glob with one file the stage wrote is produced.
        assert!(not_produced(&ws, &["dist/*.png".to_string()], &nw).is_empty());
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
