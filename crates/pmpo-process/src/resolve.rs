//! A program named without a `/` is found on the child's `PATH` once and
//! then started by its absolute path. Left to the spawn, the search is one
//! `execve` per `PATH` directory in the child, each failing but the last
//! (eight failed calls for `sh` on a common `PATH`), for every process.
//!
//! What is found is kept per (`PATH` value, program name) for the life of
//! pmpo's process. A kept path that no longer starts (removed, made not
//! executable) is forgotten and the spawn is tried again by the bare name,
//! so that case behaves as before: the search runs, and a program that is
//! gone anywhere is the same "not found" error as without the cache. What
//! the cache does not see: a program of the same name put, during the run,
//! into a `PATH` directory ahead of the one it was found in; that one is
//! used from the next pmpo process on.
//!
//! The search is left to the spawn (as before) whenever the answer could
//! differ from the child's own search: a `PATH` with an empty or relative
//! entry (the child's working directory decides), no `PATH` at all, a
//! cleared or removed `PATH`, or no executable file found.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::ProcessSpec;

/// Bounds the cache; past it, it starts over (a process would need that
/// many distinct programs or `PATH` values).
const MAX_KEPT: usize = 1024;

type Key = (OsString, String);

static KEPT: Mutex<Option<HashMap<Key, PathBuf>>> = Mutex::new(None);

fn kept() -> std::sync::MutexGuard<'static, Option<HashMap<Key, PathBuf>>> {
    KEPT.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `PATH` the child will search: the spec's own, else pmpo's when the
/// environment is inherited with it; `None` when it is cleared or removed.
fn child_path(spec: &ProcessSpec) -> Option<OsString> {
    if let Some((_, v)) = spec.env.iter().rev().find(|(k, _)| k == "PATH") {
        return Some(OsString::from(v));
    }
    if spec.env_clear || spec.env_remove.iter().any(|k| k == "PATH") {
        return None;
    }
    std::env::var_os("PATH")
}

/// Whether `p` is a file this process may execute (what `execve` needs of it).
fn executable_file(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads the NUL-terminated path we own.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// The first executable `dir/program` over `path`'s directories, as the
/// child's own search would find it; `None` when the search must be left
/// to the child (see the module's text).
pub fn search(program: &str, path: &OsStr) -> Option<PathBuf> {
    if program.is_empty() || program.contains('/') {
        return None;
    }
    let dirs: Vec<&Path> = path
        .as_bytes()
        .split(|b| *b == b':')
        .map(|d| Path::new(OsStr::from_bytes(d)))
        .collect();
    if dirs.iter().any(|d| !d.is_absolute()) {
        return None;
    }
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| executable_file(p))
}

/// The absolute path to start `spec`'s program by, when its name is to be
/// searched on `PATH` and the search is safe to make here (kept, or made
/// now and kept); `None`: start it as named.
pub(crate) fn resolved(spec: &ProcessSpec) -> Option<PathBuf> {
    let program = spec.argv.first()?;
    if program.is_empty() || program.contains('/') {
        return None;
    }
    let path = child_path(spec)?;
    let key = (path, program.clone());
    if let Some(found) = kept().as_ref().and_then(|m| m.get(&key)) {
        return Some(found.clone());
    }
    let found = search(program, &key.0)?;
    let mut guard = kept();
    let map = guard.get_or_insert_with(HashMap::new);
    if map.len() >= MAX_KEPT {
        map.clear();
    }
    map.insert(key, found.clone());
    Some(found)
}

/// Forgets what was kept for `spec`'s program (it did not start by it).
pub(crate) fn forget(spec: &ProcessSpec) {
    let (Some(program), Some(path)) = (spec.argv.first(), child_path(spec)) else {
        return;
    };
    if let Some(map) = kept().as_mut() {
        map.remove(&(path, program.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_exec(dir: &Path, name: &str, mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_search_takes_the_first_executable_file_in_path_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        write_exec(a.path(), "tool", 0o644); // not executable: passed over
        std::fs::create_dir(b.path().join("tool")).unwrap(); // a directory: passed over
        write_exec(c.path(), "tool", 0o755);
        let path = format!(
            "{}:{}:{}",
            a.path().display(),
            b.path().display(),
            c.path().display()
        );
        assert_eq!(
            search("tool", OsStr::new(&path)),
            Some(c.path().join("tool"))
        );
        assert_eq!(search("absent-tool", OsStr::new(&path)), None);
        // A name with a slash is not searched.
        assert_eq!(search("./tool", OsStr::new(&path)), None);
    }

    #[test]
    fn a_relative_or_empty_path_entry_leaves_the_search_to_the_child() {
        let c = tempfile::tempdir().unwrap();
        write_exec(c.path(), "tool", 0o755);
        for path in [
            format!("bin:{}", c.path().display()),
            format!(":{}", c.path().display()),
            format!("{}:", c.path().display()),
        ] {
            assert_eq!(search("tool", OsStr::new(&path)), None, "{path}");
        }
    }

    #[test]
    fn the_childs_path_is_the_one_searched() {
        let c = tempfile::tempdir().unwrap();
        write_exec(c.path(), "only-here", 0o755);
        let dir = c.path().display().to_string();
        let mut spec = ProcessSpec::new(["only-here"]);
        spec.env.push(("PATH".into(), dir.clone()));
        assert_eq!(resolved(&spec), Some(c.path().join("only-here")));
        let mut cleared = ProcessSpec::new(["only-here"]);
        cleared.env_clear = true;
        assert_eq!(resolved(&cleared), None);
        let mut removed = ProcessSpec::new(["only-here"]);
        removed.env_remove.push("PATH".into());
        assert_eq!(resolved(&removed), None);
        forget(&spec);
        assert!(
            kept()
                .as_ref()
                .is_none_or(|m| !m.contains_key(&(OsString::from(dir), "only-here".into())))
        );
    }
}
