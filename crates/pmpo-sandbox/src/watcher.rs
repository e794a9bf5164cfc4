//! Detection by the kernel's file events (inotify), for the directories
//! Landlock had to grant whole (a new output's directory that also holds
//! undeclared files). A snapshot of such a directory costs a `stat` per file
//! twice per stage, so a plan whose stages each add a file to one folder
//! grew quadratically; events cost what the stage changes, plus one
//! directory listing (no `stat`) to watch the subdirectories.
//!
//! The report is the snapshot's: each path created, changed or deleted,
//! judged by its first event and whether it exists when the stage ended. A
//! file created and removed again within the stage is no change, as for a
//! snapshot. If the kernel's event queue overflowed, the watched directories
//! themselves are reported changed: the stage is flagged, never silently
//! passed.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::policy::{OWN_DIRS, OWN_TEMP_MARK};
use crate::snapshot::{Difference, Kind};

const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_DONT_FOLLOW
    | libc::IN_ONLYDIR
    | libc::IN_EXCL_UNLINK;

/// Closing an inotify descriptor waits for the kernel to retire its watches
/// (several milliseconds): a thread of its own does it, off the stage's path.
fn close_later(fd: OwnedFd) {
    static CLOSER: std::sync::OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<OwnedFd>>>> =
        std::sync::OnceLock::new();
    let closer = CLOSER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<OwnedFd>();
        std::thread::Builder::new()
            .name("pmpo-inotify-close".into())
            .spawn(move || {
                for fd in rx {
                    drop(fd);
                }
            })
            .ok()
            .map(|_| std::sync::Mutex::new(tx))
    });
    if let Some(tx) = closer {
        let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
        // Without the thread (it could not start), dropped here.
        let _ = tx.send(fd);
    }
}

/// Whether a directory surely has no subdirectory, without listing it (an
/// output directory holding thousands of files was listed for every stage
/// that wrote one more): its link count is 2 (itself and its entry in its
/// parent; each subdirectory adds one) on a file system known to keep that
/// count (ext2/3/4, XFS, tmpfs). Elsewhere (Btrfs and others report 1) it
/// is listed.
fn has_no_subdirectory(dir: &CString) -> bool {
    const KEEPS_COUNT: [u32; 3] = [0xEF53, 0x5846_5342, 0x0102_1994];
    // SAFETY: zeroed structs are valid; lstat(2) and statfs(2) fill them
    // from a NUL-terminated path.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::lstat(dir.as_ptr(), &mut st) != 0 || st.st_nlink != 2 {
            return false;
        }
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::statfs(dir.as_ptr(), &mut fs) == 0 && KEEPS_COUNT.contains(&(fs.f_type as u32))
    }
}

/// Inotify instances no stage is using, each with no watch and no event
/// left: a stage takes one and gives it back, so no instance is closed per
/// stage (a close waits for the kernel to retire the instance).
static POOL: std::sync::Mutex<Vec<OwnedFd>> = std::sync::Mutex::new(Vec::new());
/// More idle instances than this are closed (the user's instances are few:
/// 128 by default).
const POOL_MAX: usize = 8;

fn take_instance() -> io::Result<OwnedFd> {
    if let Some(fd) = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop() {
        return Ok(fd);
    }
    // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Gives an instance back: its watches removed (each queues its
/// `IN_IGNORED` at once) and every event still queued read and dropped, so
/// the next stage sees only its own. An instance that cannot be emptied is
/// closed instead.
fn give_back(fd: OwnedFd, wds: impl Iterator<Item = i32>) {
    for wd in wds {
        // SAFETY: removes a watch of our own instance; a watch the kernel
        // already removed (its directory deleted) fails harmlessly.
        unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
    }
    let mut buf = [0u8; 4096];
    let emptied = loop {
        // SAFETY: reads into a buffer of the given length from our descriptor.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            break io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
        }
        if n == 0 {
            break false;
        }
    };
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if emptied && pool.len() < POOL_MAX {
        pool.push(fd);
    } else {
        drop(pool);
        close_later(fd);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            give_back(fd, self.dirs.keys().copied());
        }
    }
}

/// Watches directories (and their subdirectories) for one stage.
pub struct Watcher {
    /// An inotify instance of the pool, with no watch but this stage's.
    fd: Option<OwnedFd>,
    root: PathBuf,
    /// Watch descriptor -> the directory it watches.
    dirs: HashMap<i32, PathBuf>,
    /// The directories asked for, reported changed if events were lost.
    tops: Vec<PathBuf>,
}

impl Watcher {
    /// Starts watching `dirs` (absolute, inside `root`) and every directory
    /// below them, pmpo's own directories at the top of the workspace left
    /// out. Fails when the kernel has no inotify or no watch left: the caller
    /// then takes a snapshot instead.
    pub fn start(root: &Path, dirs: &[PathBuf]) -> io::Result<Watcher> {
        let real = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let mut w = Watcher {
            fd: Some(take_instance()?),
            root: real,
            dirs: HashMap::new(),
            tops: dirs.to_vec(),
        };
        for d in dirs {
            w.add_tree(d)?;
        }
        Ok(w)
    }

    fn add_tree(&mut self, dir: &Path) -> io::Result<()> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("a path with a NUL byte"))?;
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.raw_fd(), c.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.dirs.insert(wd, dir.to_path_buf());
        // Checked after the watch is on: a subdirectory made later comes as an event.
        if has_no_subdirectory(&c) {
            return Ok(());
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for e in rd.flatten() {
            // The entry's type comes with the listing: no `stat` per file.
            if !e.file_type().is_ok_and(|t| t.is_dir()) || self.skipped(dir, &e.file_name()) {
                continue;
            }
            self.add_tree(&e.path())?;
        }
        Ok(())
    }

    fn skipped(&self, dir: &Path, name: &std::ffi::OsStr) -> bool {
        let name = name.to_string_lossy();
        name.contains(OWN_TEMP_MARK) || (dir == self.root && OWN_DIRS.contains(&&*name))
    }

    fn rel(&self, abs: &Path) -> Option<String> {
        abs.strip_prefix(&self.root)
            .ok()
            .map(|r| r.to_string_lossy().replace('\\', "/"))
            .filter(|r| !r.is_empty())
    }

    fn raw_fd(&self) -> i32 {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// The stage ended: what changed under the watched directories. The
    /// instance goes back to the pool (see [`Drop`]).
    pub fn finish(self) -> Vec<Difference> {
        self.read_changes()
    }

    fn read_changes(&self) -> Vec<Difference> {
        // path -> (whether its first event made it, whether it is a directory)
        let mut seen: HashMap<PathBuf, (bool, bool)> = HashMap::new();
        let mut overflow = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reads into a buffer of the given length from our descriptor.
            let n = unsafe {
                libc::read(
                    self.raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
            let mut at = 0usize;
            let n = n as usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            while at + head <= n {
                // SAFETY: the kernel wrote whole events; read unaligned.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let name_bytes = &buf[at + head..at + head + ev.len as usize];
                at += head + ev.len as usize;
                if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    overflow = true;
                    continue;
                }
                let Some(dir) = self.dirs.get(&ev.wd) else {
                    continue;
                };
                let is_dir = ev.mask & libc::IN_ISDIR != 0;
                let path = if ev.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
                    dir.clone()
                } else {
                    let end = name_bytes
                        .iter()
                        .position(|b| *b == 0)
                        .unwrap_or(name_bytes.len());
                    if end == 0 {
                        continue;
                    }
                    let name = std::ffi::OsStr::from_bytes(&name_bytes[..end]);
                    if self.skipped(dir, name) {
                        continue;
                    }
                    dir.join(name)
                };
                let made = ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0;
                seen.entry(path).or_insert((made, is_dir));
            }
        }
        let mut out = Vec::new();
        if overflow {
            for d in &self.tops {
                if let Some(rel) = self.rel(d) {
                    out.push(Difference {
                        path: rel,
                        kind: Kind::Changed,
                        is_dir: true,
                        size_before: None,
                        size_after: None,
                    });
                }
            }
        }
        let mut created_dirs = Vec::new();
        for (path, (made, is_dir)) in seen {
            let Some(rel) = self.rel(&path) else { continue };
            let now = std::fs::symlink_metadata(&path).ok();
            let kind = match (made, &now) {
                (true, Some(_)) => Kind::Created,
                (true, None) => continue,
                (false, Some(_)) => Kind::Changed,
                (false, None) => Kind::Deleted,
            };
            let is_dir = now.as_ref().map_or(is_dir, |m| m.is_dir());
            if kind == Kind::Created && is_dir {
                created_dirs.push(path.clone());
            }
            out.push(Difference {
                path: rel,
                kind,
                is_dir,
                size_before: None,
                size_after: now.filter(|m| !m.is_dir()).map(|m| m.len()),
            });
        }
        // What a new directory holds was made in it before it could be watched.
        let mut listed: std::collections::HashSet<String> =
            out.iter().map(|d| d.path.clone()).collect();
        while let Some(dir) = created_dirs.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let Some(rel) = self.rel(&e.path()) else {
                    continue;
                };
                let meta = e.metadata().ok();
                let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
                if is_dir {
                    created_dirs.push(e.path());
                }
                if listed.insert(rel.clone()) {
                    out.push(Difference {
                        path: rel,
                        kind: Kind::Created,
                        is_dir,
                        size_before: None,
                        size_after: meta.filter(|m| !m.is_dir()).map(|m| m.len()),
                    });
                }
            }
        }
        out.sort_by(|x, y| x.path.cmp(&y.path));
        out
    }
}

// The tests write fixtures in their own temporary directories, outside any
// workspace: no backup or ledger applies.
#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn paths(d: &[Difference]) -> Vec<(String, &'static str)> {
        d.iter()
            .map(|d| (d.path.clone(), d.kind.as_str()))
            .collect()
    }

    #[test]
    fn reports_what_a_snapshot_would() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // Raw writes in the test's own temporary directory, as a stage's
        // process makes them: they are what the watcher under test must see.
        fs::create_dir_all(r.join("out/sub")).unwrap();
        fs::write(r.join("out/keep"), "1").unwrap();
        fs::write(r.join("out/change"), "1").unwrap();
        fs::write(r.join("out/gone"), "1").unwrap();
        fs::write(r.join("out/sub/deep"), "1").unwrap();
        fs::write(r.join("out/touched"), "1").unwrap();
        let real = fs::canonicalize(r).unwrap();
        let w = Watcher::start(r, &[real.join("out")]).unwrap();
        fs::write(r.join("out/change"), "22").unwrap();
        fs::remove_file(r.join("out/gone")).unwrap();
        fs::write(r.join("out/new"), "n").unwrap();
        fs::write(r.join("out/tmp"), "t").unwrap();
        fs::remove_file(r.join("out/tmp")).unwrap();
        fs::write(r.join("out/sub/deep"), "2").unwrap();
        fs::create_dir_all(r.join("out/made/inner")).unwrap();
        fs::write(r.join("out/made/inner/f"), "f").unwrap();
        fs::rename(r.join("out/keep"), r.join("out/moved")).unwrap();
        let f = fs::File::options()
            .write(true)
            .open(r.join("out/touched"))
            .unwrap();
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let d = w.finish();
        assert_eq!(
            paths(&d),
            vec![
                ("out/change".into(), "changed"),
                ("out/gone".into(), "deleted"),
                ("out/keep".into(), "deleted"),
                ("out/made".into(), "created"),
                ("out/made/inner".into(), "created"),
                ("out/made/inner/f".into(), "created"),
                ("out/moved".into(), "created"),
                ("out/new".into(), "created"),
                ("out/sub/deep".into(), "changed"),
                ("out/touched".into(), "changed"),
            ],
            "{d:?}"
        );
        assert_eq!(
            d.iter().find(|x| x.path == "out/new").unwrap().size_after,
            Some(1)
        );
    }

    #[test]
    fn an_instance_given_back_brings_nothing_of_its_last_stage_to_the_next() {
        let root = tempfile::tempdir().unwrap();
        let r = fs::canonicalize(root.path()).unwrap();
        fs::create_dir_all(r.join("a")).unwrap();
        for i in 0..3 {
            // A stage whose changes are never read (dropped on an error path).
            let w = Watcher::start(&r, &[r.join("a")]).unwrap();
            fs::write(r.join(format!("a/left{i}")), "x").unwrap();
            drop(w);
            // The next stage watches the same directory (the same watch, were
            // the last one still in its instance): only its own change counts.
            let w = Watcher::start(&r, &[r.join("a")]).unwrap();
            fs::write(r.join("a/mine"), "x").unwrap();
            assert_eq!(paths(&w.finish()), vec![("a/mine".into(), "created")]);
            fs::remove_file(r.join("a/mine")).unwrap();
        }
    }

    #[test]
    fn a_directory_with_a_subdirectory_is_never_taken_for_a_leaf() {
        let root = tempfile::tempdir().unwrap();
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        fs::write(root.path().join("file"), "x").unwrap();
        let leaf = has_no_subdirectory(&c(root.path()));
        fs::create_dir(root.path().join("sub")).unwrap();
        assert!(!has_no_subdirectory(&c(root.path())));
        // Where the file system keeps the count, an empty-of-directories one is a leaf.
        let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: statfs(2) fills the zeroed struct from a NUL-terminated path.
        assert_eq!(
            unsafe { libc::statfs(c(root.path()).as_ptr(), &mut sfs) },
            0
        );
        if [0xEF53u32, 0x5846_5342, 0x0102_1994].contains(&(sfs.f_type as u32)) {
            assert!(leaf);
        }
    }

    #[test]
    fn leaves_out_pmpos_own_directories_and_temp_files() {
        let root = tempfile::tempdir().unwrap();
        let r = fs::canonicalize(root.path()).unwrap();
        fs::create_dir_all(r.join(".state")).unwrap();
        let w = Watcher::start(&r, std::slice::from_ref(&r)).unwrap();
        fs::write(r.join(".state/db"), "x").unwrap();
        fs::write(r.join(".a.pmpo-tmp-1-2"), "x").unwrap();
        fs::write(r.join("real"), "x").unwrap();
        assert_eq!(paths(&w.finish()), vec![("real".into(), "created")]);
    }
}
