//! The one confined glob of a workspace: declared outputs, a stage's input
//! files and the checks' file patterns all expand through [`Workspace::glob`],
//! so they see the same files, in the same order, and refuse the same links.

use std::fs;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use crate::{OWN_DIRS, StoreError, Workspace};

/// Version-control metadata: never a stage's output nor a file to check, and
/// pruned at any depth (a nested repository or a submodule has its own).
pub const VCS_DIRS: &[&str] = &[".git", ".hg", ".svn", ".jj"];

/// What a pattern matched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GlobMatch {
    /// Workspace-relative, `/`-separated paths of regular files (or of links
    /// to regular files inside the workspace), sorted.
    pub files: Vec<String>,
    /// Matched symbolic links that lead out of the workspace, with where they
    /// lead: refused, never followed nor listed in `files`.
    pub links_out: Vec<(String, PathBuf)>,
    /// Matched symbolic links whose target does not exist.
    pub broken_links: Vec<String>,
}

impl GlobMatch {
    /// The first refused link, as the error a caller that stops at one reports.
    pub fn refusal(&self) -> Option<StoreError> {
        if let Some((rel, real)) = self.links_out.first() {
            return Some(StoreError::Link {
                path: rel.clone(),
                why: format!(
                    "it is a symbolic link to `{}`, outside the workspace; refused, not followed",
                    real.display()
                ),
            });
        }
        None
    }
}

/// Whether a pattern has glob syntax (`*`, `?`, `[...]`, `{a,b}`).
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

/// A pattern as the glob reads it: `/`-separated, without a leading `./` or a
/// trailing `/`.
pub fn normalize_pattern(pattern: &str) -> String {
    let p = pattern.replace('\\', "/");
    p.trim_start_matches("./").trim_end_matches('/').to_string()
}

/// Whether a walk skips this directory (`rel` is workspace-relative).
fn pruned(rel: &str, name: &str) -> bool {
    VCS_DIRS.contains(&name) || OWN_DIRS.contains(&rel)
}

impl Workspace {
    /// Expands a path or a glob (`*` and `?` stay within one path component,
    /// `**` crosses them) into the files it names inside the workspace.
    ///
    /// - A literal file is itself; a literal directory stands for every file
    ///   below it; a path that does not exist matches nothing.
    /// - The walk never enters pmpo's own directories at the workspace root
    ///   ([`OWN_DIRS`]: `.state`, `.refiner`, `logs`) nor version-control
    ///   metadata at any depth ([`VCS_DIRS`]), even when the pattern names them.
    /// - Symbolic links are never walked into. A link to a file inside the
    ///   workspace is listed as the link's path; one leading out of it is
    ///   reported in [`GlobMatch::links_out`], a dangling one in
    ///   [`GlobMatch::broken_links`]; a link to a directory inside is skipped.
    /// - Hidden files match like any other (`*` matches `.env`).
    ///
    /// Errors: a pattern that is not a valid glob, or one whose literal
    /// leading directories leave the workspace ([`Workspace::resolve`]).
    pub fn glob(&self, pattern: &str) -> Result<GlobMatch, StoreError> {
        let pattern = normalize_pattern(pattern);
        let comps: Vec<&str> = pattern.split('/').collect();
        let literal: Vec<&str> = comps.iter().take_while(|c| !is_glob(c)).copied().collect();
        let matcher = if literal.len() == comps.len() {
            None
        } else {
            let glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| StoreError::Pattern {
                    pattern: pattern.clone(),
                    why: e.kind().to_string(),
                })?;
            Some(glob.compile_matcher())
        };
        let start_rel = literal.join("/");
        let mut out = GlobMatch::default();
        if literal
            .iter()
            .enumerate()
            .any(|(i, c)| pruned(&literal[..=i].join("/"), c))
        {
            return Ok(out);
        }
        let start = if start_rel.is_empty() {
            self.root().to_path_buf()
        } else {
            self.resolve(&start_rel)?
        };
        let Ok(meta) = fs::symlink_metadata(&start) else {
            return Ok(out);
        };
        if meta.file_type().is_symlink() {
            // The pattern's literal part is itself a link: walked only when it
            // leads to a directory inside the workspace.
            match fs::canonicalize(&start) {
                Ok(real) if !real.starts_with(self.root()) => {
                    out.links_out.push((start_rel, real));
                    return Ok(out);
                }
                Ok(real) if real.is_dir() => {}
                _ if matcher.is_none() => {
                    self.classify(&start, start_rel, &mut out);
                    return Ok(out);
                }
                _ => return Ok(out),
            }
        } else if !meta.is_dir() {
            // A literal path naming a file (not a link: looked at just above):
            // itself, if no glob follows.
            if matcher.is_none() && meta.is_file() {
                out.files.push(start_rel);
            }
            return Ok(out);
        }
        let depth = match &matcher {
            Some(_) if !pattern.contains("**") => Some(comps.len() - literal.len()),
            _ => None,
        };
        self.walk(&start, matcher.as_ref(), depth, &mut out);
        out.files.sort();
        out.files.dedup();
        Ok(out)
    }

    fn walk(
        &self,
        start: &Path,
        matcher: Option<&GlobMatcher>,
        depth: Option<usize>,
        out: &mut GlobMatch,
    ) {
        let mut walker = walkdir::WalkDir::new(start)
            .follow_links(false)
            .sort_by_file_name();
        if let Some(d) = depth {
            walker = walker.max_depth(d);
        }
        let entries = walker.into_iter().filter_entry(|e| {
            e.depth() == 0
                || !e.file_type().is_dir()
                || !self
                    .relative(e.path())
                    .is_some_and(|rel| pruned(&rel, e.file_name().to_str().unwrap_or_default()))
        });
        for entry in entries.flatten() {
            if entry.file_type().is_dir() {
                continue;
            }
            let Some(rel) = self.relative(entry.path()) else {
                continue;
            };
            if matcher.is_some_and(|m| !m.is_match(&rel)) {
                continue;
            }
            self.classify(entry.path(), rel, out);
        }
    }

    /// Sorts one matched entry (not a directory) into files, links out and broken links.
    fn classify(&self, abs: &Path, rel: String, out: &mut GlobMatch) {
        let Ok(meta) = fs::symlink_metadata(abs) else {
            return;
        };
        if !meta.file_type().is_symlink() {
            if meta.is_file() {
                out.files.push(rel);
            }
            return;
        }
        match fs::canonicalize(abs) {
            Ok(real) if !real.starts_with(self.root()) => out.links_out.push((rel, real)),
            Ok(real) if real.is_file() => out.files.push(rel),
            Ok(_) => {}
            Err(_) => out.broken_links.push(rel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        for (rel, body) in [
            ("out/a.png", "a"),
            ("out/b.png", "b"),
            ("out/n.txt", "n"),
            ("out/sub/c.png", "c"),
            ("out/.hidden.png", "h"),
            ("top.txt", "t"),
        ] {
            let p = dir.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
        (dir, ws)
    }

    fn files(ws: &Workspace, pattern: &str) -> Vec<String> {
        let m = ws.glob(pattern).unwrap();
        assert!(m.links_out.is_empty() && m.broken_links.is_empty(), "{m:?}");
        m.files
    }

    #[test]
    fn a_literal_file_is_itself_and_a_missing_one_matches_nothing() {
        let (_d, ws) = ws();
        assert_eq!(files(&ws, "top.txt"), ["top.txt"]);
        assert_eq!(files(&ws, "./out/a.png"), ["out/a.png"]);
        assert!(files(&ws, "nope.txt").is_empty());
        assert!(files(&ws, "nope/*.txt").is_empty());
        assert!(files(&ws, "top.txt/*.x").is_empty());
    }

    #[test]
    fn a_literal_directory_is_every_file_below_it_in_order() {
        let (_d, ws) = ws();
        assert_eq!(
            files(&ws, "out/"),
            [
                "out/.hidden.png",
                "out/a.png",
                "out/b.png",
                "out/n.txt",
                "out/sub/c.png"
            ]
        );
    }

    #[test]
    fn a_star_stays_in_one_directory_and_a_double_star_crosses_them() {
        let (_d, ws) = ws();
        assert_eq!(
            files(&ws, "out/*.png"),
            ["out/.hidden.png", "out/a.png", "out/b.png"]
        );
        assert_eq!(
            files(&ws, "out/**/*.png"),
            ["out/.hidden.png", "out/a.png", "out/b.png", "out/sub/c.png"]
        );
        assert_eq!(files(&ws, "*.txt"), ["top.txt"]);
        assert_eq!(files(&ws, "**/c.png"), ["out/sub/c.png"]);
        assert_eq!(files(&ws, "out/[ab].png"), ["out/a.png", "out/b.png"]);
        assert!(files(&ws, "out/*.gif").is_empty());
    }

    #[test]
    fn pmpo_own_directories_and_version_control_are_pruned() {
        let (d, ws) = ws();
        for rel in [
            ".state/db.json",
            ".refiner/backups/x.txt",
            "logs/executor.txt",
            ".git/config.txt",
            "out/.git/x.txt",
            "out/.hg/y.txt",
            "out/logs/kept.txt",
        ] {
            let p = d.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "x").unwrap();
        }
        assert_eq!(
            files(&ws, "**/*.txt"),
            ["out/logs/kept.txt", "out/n.txt", "top.txt"]
        );
        assert!(files(&ws, ".state/*").is_empty());
        assert!(files(&ws, "logs").is_empty());
        assert!(files(&ws, "out/.git/*.txt").is_empty());
        assert_eq!(files(&ws, "out/logs/*"), ["out/logs/kept.txt"]);
    }

    #[cfg(unix)]
    #[test]
    fn links_leading_out_are_reported_not_followed() {
        use std::os::unix::fs::symlink;
        let (d, ws) = ws();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.txt"), "s").unwrap();
        symlink(
            outside.path().join("secret.txt"),
            d.path().join("out/leak.txt"),
        )
        .unwrap();
        symlink(outside.path(), d.path().join("out/away")).unwrap();
        symlink(d.path().join("top.txt"), d.path().join("out/inside.txt")).unwrap();
        symlink(d.path().join("out/sub"), d.path().join("out/subdir")).unwrap();
        symlink(d.path().join("gone.txt"), d.path().join("out/broken.txt")).unwrap();
        let m = ws.glob("out/*").unwrap();
        assert_eq!(
            m.files,
            [
                "out/.hidden.png",
                "out/a.png",
                "out/b.png",
                "out/inside.txt",
                "out/n.txt"
            ]
        );
        let out: Vec<&str> = m.links_out.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(out, ["out/away", "out/leak.txt"]);
        assert_eq!(m.broken_links, ["out/broken.txt"]);
        assert!(
            m.refusal()
                .unwrap()
                .to_string()
                .contains("outside the workspace")
        );
        // Never walked into: nothing of the outside directory is listed.
        assert!(
            !ws.glob("out/**")
                .unwrap()
                .files
                .iter()
                .any(|f| f.contains("secret"))
        );
        // A literal directory leading out is reported, not walked.
        let m = ws.glob("out/away/*.txt").unwrap();
        assert!(m.files.is_empty());
        assert_eq!(m.links_out[0].0, "out/away");
        assert!(ws.glob("out/away/deeper/*.txt").is_err());
        // A link to a directory inside is walked when the pattern names it.
        assert_eq!(files(&ws, "out/subdir/*.png"), ["out/subdir/c.png"]);
        // A literal link to a file outside is reported like a matched one.
        assert_eq!(ws.glob("out/leak.txt").unwrap().links_out.len(), 1);
    }

    #[test]
    fn an_invalid_glob_is_an_error_naming_it() {
        let (_d, ws) = ws();
        let e = ws.glob("out/[a.png").unwrap_err();
        assert!(e.to_string().contains("out/[a.png"), "{e}");
    }
}
