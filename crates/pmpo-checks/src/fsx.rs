//! Confined, bounded file access for checks.
//!
//! Every path goes through `Workspace::resolve` (no `..`, no absolute path, no
//! symlinked directory leading out). A file that is itself a symbolic link is
//! followed only when its target is inside the workspace; otherwise it is
//! refused. Text is read only up to a limit, and binary data where text is
//! expected is a clear failure.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use pmpo_store::glob::{is_glob, normalize_pattern as normalize};
use pmpo_store::{StoreError, Workspace};

use crate::CheckError;

/// The largest file a text check reads (64 MiB).
pub const MAX_TEXT_BYTES: u64 = 64 * 1024 * 1024;

/// A regular file inside the workspace.
#[derive(Debug, Clone)]
pub(crate) struct FileRef {
    pub rel: String,
    pub abs: PathBuf,
    pub size: u64,
}

/// Expands paths and globs into workspace-relative paths. A literal path is
/// returned as is (the caller decides what a missing file means); a glob that
/// matches nothing is an error, so a check over "every PNG" cannot pass on none.
pub(crate) fn expand(ws: &Workspace, patterns: &[String]) -> Result<Vec<String>, CheckError> {
    let mut out = Vec::new();
    for raw in patterns {
        let pat = normalize(raw);
        if !is_glob(&pat) {
            ws.resolve(&pat)?;
            out.push(pat);
            continue;
        }
        let matched = glob(ws, &pat)?;
        if matched.is_empty() {
            return Err(CheckError::File {
                path: raw.clone(),
                why: "the pattern matches no file".into(),
            });
        }
        out.extend(matched);
    }
    Ok(out)
}

/// Files matching a glob, sorted, relative to the workspace ([`Workspace::glob`]).
/// A matched link leading out of the workspace fails the whole check; a dangling
/// one is listed, so that reading it says what is wrong with it.
pub(crate) fn glob(ws: &Workspace, pat: &str) -> Result<Vec<String>, CheckError> {
    let found = ws.glob(pat).map_err(|e| match e {
        StoreError::Pattern { .. } => CheckError::Param(e.to_string()),
        e => CheckError::Store(e),
    })?;
    if let Some((rel, real)) = found.links_out.first() {
        return Err(CheckError::File {
            path: rel.clone(),
            why: format!(
                "is a symbolic link to `{}`, outside the workspace; refused, not followed",
                real.display()
            ),
        });
    }
    let mut out = found.files;
    out.extend(found.broken_links);
    out.sort();
    Ok(out)
}

/// Looks up a regular file, refusing anything that leads outside the workspace.
/// `Ok(None)` when the file does not exist.
pub(crate) fn lookup(ws: &Workspace, rel: &str) -> Result<Option<FileRef>, CheckError> {
    let rel = normalize(rel);
    let abs = ws.resolve(&rel)?;
    let fail = |why: String| CheckError::File {
        path: rel.clone(),
        why,
    };
    let meta = match fs::symlink_metadata(&abs) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(format!("cannot be read: {e}"))),
    };
    let meta = if meta.file_type().is_symlink() {
        match fs::canonicalize(&abs) {
            Ok(real) if real.starts_with(ws.root()) => {
                fs::metadata(&real).map_err(|e| fail(format!("cannot be read: {e}")))?
            }
            Ok(real) => {
                return Err(fail(format!(
                    "is a symbolic link to `{}`, outside the workspace; refused, not followed",
                    real.display()
                )));
            }
            Err(_) => {
                return Err(fail(
                    "is a symbolic link whose target does not exist".into(),
                ));
            }
        }
    } else {
        meta
    };
    if meta.is_dir() {
        return Err(fail("is a directory, not a file".into()));
    }
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    Ok(Some(FileRef {
        rel,
        abs,
        size: meta.len(),
    }))
}

/// A file that must exist.
pub(crate) fn file(ws: &Workspace, rel: &str) -> Result<FileRef, CheckError> {
    lookup(ws, rel)?.ok_or_else(|| CheckError::File {
        path: normalize(rel),
        why: "does not exist".into(),
    })
}

/// Reads at most `limit` bytes of a file; a larger file is refused before reading.
pub(crate) fn read_bytes(f: &FileRef, limit: u64) -> Result<Vec<u8>, CheckError> {
    if f.size > limit {
        return Err(CheckError::TooLarge {
            path: f.rel.clone(),
            size: f.size,
            limit,
        });
    }
    let io = |e: std::io::Error| CheckError::File {
        path: f.rel.clone(),
        why: format!("cannot be read: {e}"),
    };
    let file = fs::File::open(&f.abs).map_err(io)?;
    let mut buf = Vec::with_capacity(f.size.min(limit) as usize);
    // The file may have grown since it was measured: never read past the limit.
    file.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > limit {
        return Err(CheckError::TooLarge {
            path: f.rel.clone(),
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

/// Reads a UTF-8 text file of at most [`MAX_TEXT_BYTES`].
pub(crate) fn read_text(f: &FileRef) -> Result<String, CheckError> {
    let bytes = read_bytes(f, MAX_TEXT_BYTES)?;
    bytes_to_text(&f.rel, bytes)
}

pub(crate) fn bytes_to_text(rel: &str, bytes: Vec<u8>) -> Result<String, CheckError> {
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(CheckError::NotText {
            path: rel.to_string(),
            why: format!("it contains a NUL byte at offset {at} (a binary file?)"),
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| CheckError::NotText {
        path: rel.to_string(),
        why: format!(
            "it is not valid UTF-8 (invalid byte at offset {}; a binary file?)",
            e.utf8_error().valid_up_to()
        ),
    })?;
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text))
}

/// Line and column (1-based) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, col)
}

/// The extension of a path, lower case.
pub(crate) fn ext(path: &str) -> String {
    Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}
