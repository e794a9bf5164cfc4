//! Declared outputs: expanding paths and globs inside the workspace, and
//! telling which files a stage created or changed.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use globset::GlobBuilder;
use pmpo_store::{FileDigest, Workspace, hash_file};
use serde::Serialize;

/// Directories of pmpo's own that globs never match.
const OWN_DIRS: &[&str] = &[".state", ".refiner", ".git"];

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

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

fn normalize(pattern: &str) -> String {
    let p = pattern.replace('\\', "/");
    let p = p.trim_start_matches("./");
    p.trim_end_matches('/').to_string()
}

/// Expands declared output patterns and hashes every file they match.
pub fn expand(ws: &Workspace, patterns: &[String]) -> Expansion {
    let mut out = Expansion::default();
    for raw in patterns {
        let pattern = normalize(raw);
        let before = out.files.len();
        if is_glob(&pattern) {
            expand_glob(ws, &pattern, raw, &mut out);
        } else {
            expand_literal(ws, &pattern, raw, &mut out);
        }
        if out.files.len() == before
            && !out
                .problems
                .iter()
                .any(|p| p.starts_with(&format!("`{raw}`")))
        {
            out.missing.push(raw.clone());
        }
    }
    out
}

fn add_file(ws: &Workspace, abs: &Path, raw: &str, out: &mut Expansion) {
    let Some(rel) = ws.relative(abs) else { return };
    let meta = match fs::symlink_metadata(abs) {
        Ok(m) => m,
        Err(_) => return,
    };
    if meta.file_type().is_symlink() {
        match fs::canonicalize(abs) {
            Ok(real) if real.starts_with(ws.root()) => {
                if !real.is_file() {
                    return;
                }
            }
            Ok(real) => {
                out.problems.push(format!(
                    "`{raw}`: `{rel}` is a symbolic link to `{}`, outside the workspace",
                    real.display()
                ));
                return;
            }
            Err(_) => {
                out.problems
                    .push(format!("`{raw}`: `{rel}` is a broken symbolic link"));
                return;
            }
        }
    } else if !meta.is_file() {
        return;
    }
    match hash_file(abs) {
        Ok(d) => {
            out.files.insert(rel, d);
        }
        Err(e) => out
            .problems
            .push(format!("`{raw}`: cannot read `{rel}`: {e}")),
    }
}

fn expand_literal(ws: &Workspace, pattern: &str, raw: &str, out: &mut Expansion) {
    let abs = match ws.resolve(pattern) {
        Ok(p) => p,
        Err(e) => {
            out.problems.push(format!("`{raw}`: {e}"));
            return;
        }
    };
    match fs::symlink_metadata(&abs) {
        Err(_) => {}
        Ok(m) if m.is_dir() => walk(ws, &abs, raw, None, out),
        Ok(_) => add_file(ws, &abs, raw, out),
    }
}

fn expand_glob(ws: &Workspace, pattern: &str, raw: &str, out: &mut Expansion) {
    let matcher = match GlobBuilder::new(pattern).literal_separator(true).build() {
        Ok(g) => g.compile_matcher(),
        Err(e) => {
            out.problems
                .push(format!("`{raw}`: not a valid glob: {}", e.kind()));
            return;
        }
    };
    // Walk only below the literal prefix of the pattern.
    let comps: Vec<&str> = pattern.split('/').collect();
    let literal: Vec<&str> = comps.iter().take_while(|c| !is_glob(c)).copied().collect();
    let base = if literal.is_empty() {
        ws.root().to_path_buf()
    } else {
        match ws.resolve(&literal.join("/")) {
            Ok(p) => p,
            Err(e) => {
                out.problems.push(format!("`{raw}`: {e}"));
                return;
            }
        }
    };
    if !base.is_dir() {
        return;
    }
    let depth = if pattern.contains("**") {
        None
    } else {
        Some(comps.len() - literal.len())
    };
    walk(ws, &base, raw, Some((&matcher, depth)), out);
}

fn walk(
    ws: &Workspace,
    base: &Path,
    raw: &str,
    glob: Option<(&globset::GlobMatcher, Option<usize>)>,
    out: &mut Expansion,
) {
    let mut walker = walkdir::WalkDir::new(base)
        .follow_links(false)
        .sort_by_file_name();
    if let Some((_, Some(depth))) = glob {
        walker = walker.max_depth(depth);
    }
    let iter = walker.into_iter().filter_entry(|e| {
        !(e.file_type().is_dir()
            && e.depth() > 0
            && e.path().strip_prefix(ws.root()).ok().is_some_and(|r| {
                r.components()
                    .next()
                    .is_some_and(|c| OWN_DIRS.iter().any(|d| c.as_os_str() == *d))
            }))
    });
    for entry in iter.flatten() {
        if entry.file_type().is_dir() {
            continue;
        }
        if let Some((matcher, _)) = glob {
            let Some(rel) = ws.relative(entry.path()) else {
                continue;
            };
            if !matcher.is_match(&rel) {
                continue;
            }
        }
        add_file(ws, entry.path(), raw, out);
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
