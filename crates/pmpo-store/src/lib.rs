//! The workspace on disk. Every write pmpo makes goes through [`Workspace`]:
//! paths are confined to the workspace (no absolute paths, no `..`, no
//! symlinked directory leading outside), files are replaced atomically
//! (temp file + rename, fsync where durability matters), and replacing a
//! user-visible file is recorded in the patch ledger.

pub mod artifacts;
mod backup;
pub mod db;
pub mod glob;
pub mod lock;
mod own;
pub mod pg;
pub mod provider;
mod recorded;
pub mod secrets;
pub mod staging;
pub mod states;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

pub use backup::BACKUP_DIR;
pub use glob::{GlobMatch, VCS_DIRS};
pub use own::{OWN_DIRS, is_own_path};
pub use recorded::Writer;

/// Errors from the workspace layer. Each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("workspace `{path}` is not a directory that can be opened: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("`{path}` is outside the workspace: {why}")]
    Escape { path: String, why: String },
    /// A symbolic link where pmpo opens only real files: at one of its own
    /// files (lock, log, journal), or a tool's input leading out of the workspace.
    #[error("refused `{path}`: {why}")]
    Link { path: String, why: String },
    /// A path pattern that cannot be read as a glob.
    #[error("`{pattern}` is not a valid glob: {why}")]
    Pattern { pattern: String, why: String },
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The ledger could not record a change, so the change was not made.
    #[error(transparent)]
    Ledger(#[from] db::DbError),
}

impl StoreError {
    /// What to do, by the real cause: a read-only file system, no permission,
    /// a full disk, or a path that leads out of the workspace.
    pub fn hint(&self) -> &'static str {
        match self {
            StoreError::Escape { .. } => {
                "pmpo writes only inside the workspace, never through links that lead out of it"
            }
            StoreError::Link { .. } => {
                "replace the link by a copy of the file, or remove it: pmpo neither opens its own files through a link nor follows one out of the workspace (the file it points to was not touched)"
            }
            StoreError::Open { .. } => "check the path; the workspace must be a directory",
            StoreError::Pattern { .. } => {
                "`*` and `?` match within one directory, `**` across them, `[ab]` one of the characters; close every `[` and `{`"
            }
            StoreError::Ledger(e) => e.hint(),
            StoreError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::EROFS) => {
                    "the workspace is on a read-only file system: reading commands (status, ledger, metrics, doctor) still work; run where you can write"
                }
                Some(libc::EACCES | libc::EPERM) => {
                    "you may not write there: check the owner and permissions of the workspace"
                }
                Some(libc::ENOSPC | libc::EDQUOT) => {
                    "the disk is full: free some space, then run again"
                }
                _ => "check that the workspace is writable and has free space",
            },
        }
    }

    /// An I/O error while doing `action` to `path`.
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How hard a write tries to survive a power loss (a killed process never
/// loses a completed write either way: the rename is atomic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename: survives power loss.
    Durable,
    /// No fsync: survives process death, not necessarily power loss.
    Relaxed,
}

/// The content digest and size of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDigest {
    pub size: u64,
    pub blake3: String,
}

/// Hashes a file's content with blake3.
pub fn hash_file(path: &Path) -> io::Result<FileDigest> {
    hash_reader(&mut File::open(path)?)
}

/// Hashes what a reader gives, to its end, with blake3.
pub fn hash_reader(file: &mut impl Read) -> io::Result<FileDigest> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = [0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(FileDigest {
        size,
        blake3: hasher.finalize().to_hex().to_string(),
    })
}

/// Hashes bytes in memory.
pub fn hash_bytes(bytes: &[u8]) -> FileDigest {
    FileDigest {
        size: bytes.len() as u64,
        blake3: blake3::hash(bytes).to_hex().to_string(),
    }
}

/// Where the engine keeps its own files inside a workspace.
pub const STATE_DIR: &str = ".state";
/// The patch ledger, one JSON object per line.
pub const LEDGER_FILE: &str = ".state/patch_ledger.jsonl";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A workspace directory.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    /// Set for a workspace whose writes are staged (a tool in a child process).
    staging: Option<std::sync::Arc<staging::Staging>>,
}

impl Workspace {
    /// Opens an existing directory as the workspace.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let root = fs::canonicalize(root).map_err(|source| StoreError::Open {
            path: root.to_path_buf(),
            source,
        })?;
        if !root.is_dir() {
            return Err(StoreError::Open {
                path: root,
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        secrets::register_workspace_references(&root);
        Ok(Workspace {
            root,
            staging: None,
        })
    }

    /// The workspace's canonical absolute path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps a workspace-relative path to an absolute one, refusing anything
    /// that would land outside the workspace.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, StoreError> {
        let escape = |why: &str| StoreError::Escape {
            path: rel.to_string(),
            why: why.to_string(),
        };
        if rel.is_empty() {
            return Err(escape("the path is empty"));
        }
        if rel.contains('\0') {
            return Err(escape("the path contains a NUL byte"));
        }
        let path = Path::new(rel);
        let mut out = self.root.clone();
        for comp in path.components() {
            match comp {
                Component::Normal(c) => out.push(c),
                Component::CurDir => {}
                Component::ParentDir => return Err(escape("it contains `..`")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(escape("it is an absolute path"));
                }
            }
        }
        if out == self.root {
            return Err(escape("it names the workspace itself"));
        }
        // The deepest existing ancestor must really be inside the workspace
        // (a symlinked directory may point elsewhere).
        let mut ancestor = out.parent();
        while let Some(dir) = ancestor {
            if dir == self.root {
                break;
            }
            match fs::symlink_metadata(dir) {
                // No link from the root down to it: it is where it is, inside.
                Ok(m) if !m.file_type().is_symlink() && no_link_below(&self.root, dir) => break,
                Ok(_) => {
                    let real =
                        fs::canonicalize(dir).map_err(|e| StoreError::io("resolve", dir, e))?;
                    if !real.starts_with(&self.root) {
                        return Err(escape(&format!(
                            "`{}` leads to `{}` through a symbolic link",
                            dir.display(),
                            real.display()
                        )));
                    }
                    break;
                }
                Err(_) => ancestor = dir.parent(),
            }
        }
        Ok(out)
    }

    /// [`Workspace::resolve`] for a write: pmpo's own files (under
    /// [`OWN_DIRS`]) are never reached through a symbolic link at any
    /// component ([`Workspace::resolve_own`]).
    fn resolve_for_write(&self, rel: &str) -> Result<PathBuf, StoreError> {
        if is_own_path(rel) {
            self.resolve_own(rel)
        } else {
            self.resolve(rel)
        }
    }

    /// The workspace-relative form of an absolute path inside the workspace.
    pub fn relative(&self, abs: &Path) -> Option<String> {
        abs.strip_prefix(&self.root)
            .ok()
            .map(|p| p.to_string_lossy().replace('\\', "/"))
    }

    /// Creates a directory (and its parents) inside the workspace.
    pub fn create_dir_all(&self, rel: &str) -> Result<PathBuf, StoreError> {
        let path = self.resolve(rel)?;
        fs::create_dir_all(&path).map_err(|e| StoreError::io("create directory", &path, e))?;
        Ok(path)
    }

    /// Replaces (or creates) a file atomically: readers see the old content or
    /// the new, never a mix, even if the process is killed mid-write.
    /// Returns the digests before and after.
    pub fn write_atomic(
        &self,
        rel: &str,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<(Option<FileDigest>, FileDigest), StoreError> {
        if let Some(staging) = &self.staging {
            return self.stage_write(staging, rel, bytes);
        }
        let path = self.resolve_for_write(rel)?;
        let before = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => hash_file(&path).ok(),
            Ok(m) if m.is_dir() => {
                return Err(StoreError::io(
                    "write",
                    &path,
                    io::Error::new(io::ErrorKind::IsADirectory, "a directory is in the way"),
                ));
            }
            _ => None,
        };
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
        let tmp = self.temp_path(&path);
        let result = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(bytes)?;
            if durability == Durability::Durable {
                file.sync_all()?;
            }
            drop(file);
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io("write", &path, e));
        }
        if durability == Durability::Durable
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok((before, hash_bytes(bytes)))
    }

    /// Like [`Workspace::write_atomic`] for content produced by a writer (large
    /// files are streamed, not built in memory). Returns the new digest.
    pub fn write_atomic_with(
        &self,
        rel: &str,
        durability: Durability,
        produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        if let Some(staging) = &self.staging {
            let mut bytes = Vec::new();
            produce(&mut bytes).map_err(|e| StoreError::io("write", &self.root.join(rel), e))?;
            return self.stage_write(staging, rel, &bytes).map(|_| ());
        }
        let path = self.resolve_for_write(rel)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
        let tmp = self.temp_path(&path);
        let result = (|| {
            let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            let mut w = io::BufWriter::with_capacity(256 * 1024, file);
            produce(&mut w)?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            if durability == Durability::Durable {
                file.sync_all()?;
            }
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io("write", &path, e));
        }
        Ok(())
    }

    fn temp_path(&self, path: &Path) -> PathBuf {
        // Keep in step with `is_temp_name`.
        let dir = path.parent().unwrap_or(&self.root);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dir.join(format!(
            ".{name}.pmpo-tmp-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Appends to a log file (created if needed). Appends are not fsynced: a
    /// reader must tolerate a torn last line after a crash.
    pub fn append(&self, rel: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let mut file = self.open_append(rel)?;
        file.write_all(bytes)
            .map_err(|e| StoreError::io("append to", &self.root.join(rel), e))
    }

    /// Opens a log file for appending, for writers that append many times.
    /// A symbolic link at the file itself is refused (the path check covers
    /// the directories on the way): nothing is appended through a link.
    pub fn open_append(&self, rel: &str) -> Result<File, StoreError> {
        self.open_for_writing(rel, OpenOptions::new().create(true).append(true))
    }

    /// Creates (or empties) a file to stream into, for pmpo's own files that
    /// grow as a process writes (a stage's whole output). Confined like every
    /// write, and never through a symbolic link at the file itself.
    pub fn create_stream(&self, rel: &str) -> Result<File, StoreError> {
        self.open_for_writing(
            rel,
            OpenOptions::new().create(true).write(true).truncate(true),
        )
    }

    fn open_for_writing(&self, rel: &str, how: &mut OpenOptions) -> Result<File, StoreError> {
        let path = self.resolve_for_write(rel)?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
        }
        open_own(&path, how).map_err(|e| own_file_error(rel, &path, e))
    }

    /// Opens a workspace file for reading, as tools read their inputs: the
    /// path is confined (no `..`, no absolute path, no symlinked directory
    /// leading out), and a symbolic link at the file itself is followed only
    /// when its real target is a file inside the workspace; a link leading
    /// out is refused, never followed. The file must be a regular file.
    pub fn open_read(&self, rel: &str) -> Result<File, StoreError> {
        let path = self.resolve(rel)?;
        if let Some(staged) = self.staged_open(&path) {
            return staged.map_err(|e| StoreError::io("read", &path, e));
        }
        let refused = |why: String| StoreError::Link {
            path: rel.to_string(),
            why,
        };
        let file = match open_input(&path) {
            Ok(f) => f,
            Err(e) if is_link_refusal(&e) => {
                let real = fs::canonicalize(&path).map_err(|_| {
                    refused("it is a symbolic link whose target does not exist".into())
                })?;
                if !real.starts_with(&self.root) {
                    return Err(refused(format!(
                        "it is a symbolic link to `{}`; pmpo reads only the workspace's own files and does not follow a link out of it",
                        real.display()
                    )));
                }
                // The canonical path has no link left in it; open it the same way.
                open_input(&real).map_err(|e| StoreError::io("read", &real, e))?
            }
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io("read", &path, e))?;
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            };
            return Err(StoreError::io(
                "read",
                &path,
                io::Error::new(io::ErrorKind::InvalidInput, format!("it is {what}")),
            ));
        }
        Ok(file)
    }

    /// Reads a whole workspace file, confined as [`Workspace::open_read`].
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, StoreError> {
        let mut file = self.open_read(rel)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| StoreError::io("read", &self.root.join(rel), e))?;
        Ok(bytes)
    }

    /// Reads one of pmpo's own files (a journal, a log, a state file):
    /// confined, and never through a symbolic link at the file itself.
    /// `Ok(None)` when the file does not exist.
    pub fn read_own(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.resolve(rel)?;
        match open_own(&path, OpenOptions::new().read(true)) {
            Ok(mut file) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)
                    .map_err(|e| StoreError::io("read", &path, e))?;
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(own_file_error(rel, &path, e)),
        }
    }

    /// Opens one of pmpo's own files with `how` (a journal to repair, a
    /// lock): confined, and never through a symbolic link at the file itself.
    pub fn open_own(&self, rel: &str, how: &mut OpenOptions) -> Result<File, StoreError> {
        let path = self.resolve(rel)?;
        open_own(&path, how).map_err(|e| own_file_error(rel, &path, e))
    }
}

/// Opens a file without following a symbolic link at its last component
/// (`O_NOFOLLOW`): a link there fails with [`is_link_refusal`]. For pmpo's own
/// files (locks, logs, the database, journals), which are never links.
pub fn open_own(path: &Path, how: &mut OpenOptions) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    how.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens an input for reading as [`open_own`] does, without waiting: a FIFO
/// planted as an input would otherwise block the open until a writer comes
/// (it is then refused as not a regular file).
fn open_input(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
}

/// Whether an open failed because the file is a symbolic link (`O_NOFOLLOW`).
pub fn is_link_refusal(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// The error for one of pmpo's own files that could not be opened: a link
/// there is named as such, with what to do.
fn own_file_error(rel: &str, path: &Path, e: io::Error) -> StoreError {
    if is_link_refusal(&e) {
        StoreError::Link {
            path: rel.to_string(),
            why: link_refusal_why(path),
        }
    } else {
        StoreError::io("open", path, e)
    }
}

/// Why a link at one of pmpo's own files is refused, naming its target.
pub fn link_refusal_why(path: &Path) -> String {
    let target = fs::read_link(path)
        .map(|t| format!(" (to `{}`)", t.display()))
        .unwrap_or_default();
    format!(
        "it is a symbolic link{target}, and pmpo never opens its own files through a link; remove the link (pmpo creates the file again)"
    )
}

/// The current UTC time as RFC 3339 with milliseconds.
/// Whether a file name is one of the store's temporary files (left behind
/// only when a writer was killed between writing and renaming).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".pmpo-tmp-")
}

/// `text` as a name safe in any path: ASCII letters, digits, `-` and `_`
/// kept, anything else `-`; `fallback` when nothing is left.
pub fn safe_name(text: &str, fallback: &str) -> String {
    let name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        fallback.into()
    } else {
        name
    }
}

/// Whether every directory strictly between `root` and `dir` (a path under
/// it) is a real directory, not a symbolic link (checked without following).
fn no_link_below(root: &Path, dir: &Path) -> bool {
    dir.ancestors()
        .skip(1)
        .take_while(|a| *a != root)
        .all(|a| fs::symlink_metadata(a).is_ok_and(|m| m.is_dir()))
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::states::PatchState;

    #[test]
    fn safe_name_keeps_letters_digits_dash_underscore_only() {
        assert_eq!(safe_name("my logo (v2)_x-1", "f"), "my-logo--v2-_x-1");
        assert_eq!(safe_name("../é", "f"), "----");
        assert_eq!(safe_name("", "fallback"), "fallback");
    }

    #[test]
    fn paths_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        assert!(ws.resolve("a/b.txt").is_ok());
        assert!(ws.resolve("./a").is_ok());
        for bad in ["", "../x", "a/../../x", "/etc/passwd", ".", "a\0b"] {
            assert!(ws.resolve(bad).is_err(), "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_directories_leading_out_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let err = ws
            .write_atomic("link/x.txt", b"x", Durability::Relaxed)
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!outside.path().join("x.txt").exists());
    }

    #[test]
    fn inputs_are_read_inside_the_workspace_only() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.txt");
        fs::write(&secret, "secret").unwrap();
        fs::write(d.path().join("in.txt"), "inside").unwrap();
        std::os::unix::fs::symlink(&secret, d.path().join("out-link.txt")).unwrap();
        std::os::unix::fs::symlink(d.path().join("in.txt"), d.path().join("in-link.txt")).unwrap();
        std::os::unix::fs::symlink(d.path().join("gone"), d.path().join("dangling.txt")).unwrap();
        fs::create_dir(d.path().join("dir")).unwrap();
        let fifo = std::ffi::CString::new(d.path().join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let ws = Workspace::open(d.path()).unwrap();
        assert_eq!(ws.read("in.txt").unwrap(), b"inside");
        assert_eq!(ws.read("in-link.txt").unwrap(), b"inside");
        let err = ws.read("out-link.txt").unwrap_err().to_string();
        assert!(
            err.starts_with("refused `out-link.txt`: it is a symbolic link to `"),
            "{err}"
        );
        assert!(
            ws.read("dangling.txt")
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        assert!(
            ws.read("dir")
                .unwrap_err()
                .to_string()
                .contains("a directory")
        );
        // A FIFO is refused at once, not waited on.
        assert!(
            ws.read("fifo")
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        assert!(ws.read("../x").is_err());
        assert!(ws.read("/etc/passwd").is_err());
    }

    #[test]
    fn appends_and_streams_never_go_through_a_link_at_the_file() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim.txt");
        fs::write(&target, "precious\n").unwrap();
        let ws = Workspace::open(d.path()).unwrap();
        fs::create_dir_all(d.path().join("logs")).unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("logs/events.jsonl")).unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("logs/out.txt")).unwrap();
        let err = ws.append("logs/events.jsonl", b"line\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refused `logs/events.jsonl`: it is a symbolic link (to `{}`), and pmpo never opens its own files through a link; remove the link (pmpo creates the file again)",
                target.display()
            )
        );
        assert!(ws.create_stream("logs/out.txt").is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
        // A plain file is appended to and streamed into as usual.
        ws.append("logs/plain.jsonl", b"a\n").unwrap();
        ws.append("logs/plain.jsonl", b"b\n").unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join("logs/plain.jsonl")).unwrap(),
            "a\nb\n"
        );
        let mut f = ws.create_stream("logs/plain.jsonl").unwrap();
        f.write_all(b"new\n").unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join("logs/plain.jsonl")).unwrap(),
            "new\n"
        );
    }

    #[test]
    fn own_files_are_never_written_through_a_linked_directory() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::open(d.path()).unwrap();
        // A link inside the workspace is refused too, for pmpo's own files.
        fs::create_dir_all(d.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), d.path().join("logs")).unwrap();
        let err = ws.append("logs/x.jsonl", b"x\n").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(
            ws.write_atomic("logs/y.json", b"{}", Durability::Relaxed)
                .is_err()
        );
        assert!(ws.remove_own_file("logs/x.jsonl").is_err());
        assert!(!d.path().join("elsewhere/x.jsonl").exists());
        // Not an own path: refused by the own-file functions.
        fs::write(d.path().join("user.txt"), "u").unwrap();
        assert!(ws.remove_own_file("user.txt").is_err());
        assert!(ws.rename_own("user.txt", ".state/u").is_err());
        assert_eq!(fs::read_to_string(d.path().join("user.txt")).unwrap(), "u");
    }

    #[test]
    fn a_recorded_write_backs_up_and_ledgers_and_a_removal_keeps_the_content() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::open(d.path()).unwrap();
        let mut db = db::SqliteStore::open(d.path()).unwrap();
        let who = Writer {
            run_id: "r1",
            writer: "test",
        };
        fs::write(d.path().join("f.txt"), "old").unwrap();
        let row = ws
            .write_recorded(&mut db, "f.txt", b"new", who)
            .unwrap()
            .unwrap();
        assert_eq!(row.state, PatchState::Completed);
        assert_eq!(
            row.before_blake3.as_deref(),
            Some(hash_bytes(b"old").blake3.as_str())
        );
        assert!(row.backed_up);
        assert!(
            ws.resolve(&Workspace::backup_rel(&hash_bytes(b"old").blake3))
                .unwrap()
                .is_file()
        );
        // The same content again: nothing written, nothing recorded.
        assert!(
            ws.write_recorded(&mut db, "f.txt", b"new", who)
                .unwrap()
                .is_none()
        );
        let row = ws.remove_recorded(&mut db, "f.txt", who).unwrap().unwrap();
        assert!(row.after_blake3.is_none() && row.backed_up);
        assert!(!d.path().join("f.txt").exists());
        let back = ws
            .restore_recorded(&mut db, "f.txt", &hash_bytes(b"new").blake3, who)
            .unwrap()
            .unwrap();
        assert!(back.before_blake3.is_none());
        assert_eq!(fs::read_to_string(d.path().join("f.txt")).unwrap(), "new");
        db::ExecStore::flush(&mut db).unwrap();
        let rows = db::ExecStore::patches(&mut db, Some("f.txt"), None).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.state == PatchState::Completed));
    }

    #[test]
    fn replace_from_file_checks_the_copy_and_backs_up_what_it_replaces() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::open(d.path()).unwrap();
        fs::write(d.path().join("f.txt"), "now").unwrap();
        fs::write(d.path().join("src.txt"), "then").unwrap();
        let src = d.path().join("src.txt");
        // A wrong digest: nothing replaced, no temp file left.
        let err = ws.replace_from_file("f.txt", &src, "00").unwrap_err();
        assert!(err.to_string().contains("expected content"), "{err}");
        assert_eq!(fs::read_to_string(d.path().join("f.txt")).unwrap(), "now");
        let want = hash_bytes(b"then").blake3;
        let (before, after, backed_up) = ws.replace_from_file("f.txt", &src, &want).unwrap();
        assert_eq!(fs::read_to_string(d.path().join("f.txt")).unwrap(), "then");
        assert_eq!(before.unwrap().blake3, hash_bytes(b"now").blake3);
        assert_eq!(after.blake3, want);
        assert!(backed_up);
        let names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| is_temp_name(n)), "{names:?}");
    }

    #[test]
    fn atomic_write_reports_before_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let (before, after) = ws
            .write_atomic("d/f.txt", b"one", Durability::Durable)
            .unwrap();
        assert!(before.is_none());
        assert_eq!(after.size, 3);
        let (before2, _) = ws
            .write_atomic("d/f.txt", b"two", Durability::Relaxed)
            .unwrap();
        assert_eq!(before2, Some(after));
        assert_eq!(fs::read(dir.path().join("d/f.txt")).unwrap(), b"two");
        // No temp files are left behind.
        assert_eq!(fs::read_dir(dir.path().join("d")).unwrap().count(), 1);
    }
}
