//! Starting and stopping headless Chromium.
//!
//! The browser runs in its own process group with a fresh profile directory
//! and the flags that keep it from reaching for the network on start (it
//! stalls on a closed network otherwise). [`Browser::close`] asks it to quit,
//! then stops the whole group and removes the profile; dropping a `Browser`
//! kills the group too, so no Chromium outlives the run. The group is
//! registered with the process runner while it runs, so a second terminating
//! signal kills the browser with the stages' processes.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cdp::Connection;

/// Flags every Chromium start gets. Without the network-related ones a
/// headless start stalls for a long time on a machine without internet.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--hide-scrollbars",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
];

/// Where Chromium is: the configured path, `PMPO_CHROMIUM`, then the usual
/// install locations and `PATH`.
pub fn find_chromium(configured: Option<&str>) -> Result<PathBuf, String> {
    if let Some(p) = configured {
        let path = PathBuf::from(p);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("the configured Chromium `{p}` does not exist"))
        };
    }
    if let Some(p) = std::env::var_os("PMPO_CHROMIUM").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(&p);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "PMPO_CHROMIUM names `{}`, which does not exist",
                path.display()
            ))
        };
    }
    for candidate in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(candidate).is_file() {
            return Ok(PathBuf::from(candidate));
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
                let p = dir.join(name);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
    }
    Err("Chromium was not found (looked at PMPO_CHROMIUM, /usr/bin/chromium and PATH)".into())
}

/// The advice given whenever Chromium is missing.
pub const INSTALL_HINT: &str = "install it (Debian/Ubuntu: `apt-get install -y chromium`) or set PMPO_CHROMIUM (or the stage's `chromium:` input) to its path";

/// A running headless Chromium.
pub struct Browser {
    pub conn: Arc<Connection>,
    child: Option<Child>,
    pgid: i32,
    /// The group in the runner's registry; dropping it SIGKILLs the group.
    group: Option<pmpo_process::LiveGroup>,
    profile: Option<tempfile::TempDir>,
    pub path: PathBuf,
    pub version: String,
    pub started_in: Duration,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Time the browser's group gets between SIGTERM and SIGKILL on close.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// The file in a profile directory naming the pmpo process that owns it.
const OWNER_FILE: &str = "pmpo.pid";
/// The file naming the browser's process group (its leader's pid).
const BROWSER_FILE: &str = "browser.pid";
const PROFILE_PREFIX: &str = "pmpo-chromium-";

/// A fresh profile directory, marked with this process's id.
pub fn new_profile() -> Result<tempfile::TempDir, String> {
    sweep_stale_profiles();
    let profile = tempfile::Builder::new()
        .prefix(PROFILE_PREFIX)
        .tempdir()
        .map_err(|e| format!("cannot create a profile directory: {e}"))?;
    let me = std::process::id() as i32;
    // Outside the workspace on purpose: the browser's throwaway profile lives
    // in the system's temp directory, never in the user's files.
    std::fs::write(
        profile.path().join(OWNER_FILE),
        format!("{me} {}", start_time(me).unwrap_or_default()),
    )
    .map_err(|e| format!("cannot write in the profile directory: {e}"))?;
    Ok(profile)
}

/// Removes profile directories left by pmpo processes that were killed
/// (their browser exited with them; only the directory stayed behind).
fn sweep_stale_profiles() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(PROFILE_PREFIX)
        {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join(OWNER_FILE)).unwrap_or_default();
        let mut words = owner.split_whitespace();
        let Some(pid) = words
            .next()
            .and_then(|t| t.parse::<i32>().ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        let started = words.next().and_then(|t| t.parse::<u64>().ok());
        // SAFETY: signal 0 only checks that the process exists.
        let gone = (unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH))
            // The pid was taken again by another process since.
            || started.is_some_and(|s| start_time(pid).is_some_and(|now| now != s));
        if gone {
            // Processes of the dead owner's browser may still be running (a
            // renderer, a helper) and would write the directory back: stop
            // their group first.
            stop_orphaned_browser(&entry.path());
            // A process that was leaving may still have written a file back.
            for _ in 0..3 {
                if std::fs::remove_dir_all(entry.path()).is_ok() || !entry.path().exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// When a process started (clock ticks since boot, `/proc/PID/stat` field
/// 22): with the pid, it names one process even after the pid is reused.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Kills the process group of the browser that used `profile`, if it still
/// runs: its leader is checked to be that browser (its command line names the
/// profile), so a reused pid is never signalled. Waits a little for the group
/// to be gone.
fn stop_orphaned_browser(profile: &Path) {
    let Some(pgid) = std::fs::read_to_string(profile.join(BROWSER_FILE))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
    else {
        return;
    };
    let ours = std::fs::read(format!("/proc/{pgid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(profile.to_string_lossy().as_ref()))
        .unwrap_or(false);
    if !ours {
        return;
    }
    // Not ours to be gentle with: its owner is dead.
    pmpo_process::stop_group(pgid as u32, Duration::ZERO);
}

impl Browser {
    /// Starts Chromium and waits until it answers over the pipe.
    pub async fn launch(path: &Path) -> Result<Browser, String> {
        let started = Instant::now();
        let profile = new_profile()?;
        let log_path = profile.path().join("chromium.log");
        // In the throwaway profile (the system temp directory), not the workspace.
        let log = File::create(&log_path).map_err(|e| format!("cannot create a log file: {e}"))?;
        let (cmd_read, cmd_write) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let (resp_read, resp_write) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let (child_in, child_out) = (cmd_read.as_raw_fd(), resp_write.as_raw_fd());

        let mut cmd = Command::new(path);
        cmd.args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--remote-debugging-pipe")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .process_group(0);
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Move the ends out of the way first, so that dup2 onto 3 and 4
                // cannot clobber one of them; the copies close on exec.
                let a = libc::fcntl(child_in, libc::F_DUPFD_CLOEXEC, 10);
                let b = libc::fcntl(child_out, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", path.display()))?;
        let pgid = child.id() as i32;
        let group = pmpo_process::LiveGroup::register(child.id());
        // So that a later pmpo can stop this browser if this one is killed
        // (in the throwaway profile, outside the workspace on purpose).
        let _ = std::fs::write(profile.path().join(BROWSER_FILE), pgid.to_string());
        // The child's ends are closed here, so EOF means the browser is gone.
        drop(cmd_read);
        drop(resp_write);
        let conn = Connection::new(File::from(cmd_write), File::from(resp_read))
            .map_err(|e| format!("cannot start the reader: {e}"))?;
        let mut browser = Browser {
            conn,
            child: Some(child),
            pgid,
            group: Some(group),
            profile: Some(profile),
            path: path.to_path_buf(),
            version: String::new(),
            started_in: Duration::ZERO,
        };
        match browser
            .conn
            .call(None, "Browser.getVersion", json!({}))
            .await
        {
            Ok(v) => {
                browser.version = v
                    .get("product")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                browser.started_in = started.elapsed();
                Ok(browser)
            }
            Err(e) => {
                let log_tail = std::fs::read_to_string(&log_path)
                    .map(|t| {
                        t.lines()
                            .rev()
                            .take(5)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                browser.kill();
                Err(format!(
                    "Chromium `{}` did not answer over the DevTools pipe: {e}{}",
                    path.display(),
                    if log_tail.is_empty() {
                        String::new()
                    } else {
                        format!("; its last output:\n{log_tail}")
                    }
                ))
            }
        }
    }

    /// Whether the browser still answers.
    pub fn is_alive(&self) -> bool {
        !self.conn.is_closed()
    }

    /// The process group id (the browser's pid).
    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// The profile directory (removed on close).
    pub fn profile_dir(&self) -> Option<&Path> {
        self.profile.as_ref().map(|p| p.path())
    }

    /// Asks the browser to quit, then makes sure every process of it is gone
    /// and removes its profile.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.conn.call(None, "Browser.close", json!({})),
        )
        .await;
        let conn = self.conn.clone();
        // Wait (off the async threads) for the pipe to close: the browser is exiting.
        let _ = tokio::task::spawn_blocking(move || conn.wait_closed(Duration::from_secs(2))).await;
        // What is left of it (helpers, renderers) gets SIGTERM and a grace.
        if self.child.is_some() {
            pmpo_process::stop_group_async(self.pgid as u32, CLOSE_GRACE).await;
        }
        self.kill();
    }

    /// Kills the whole process group (before reaping the leader, so the
    /// group id cannot have been reused) and removes the profile.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL to the group, and out of the runner's registry.
            self.group.take();
            let _ = child.wait();
        }
        if let Some(profile) = self.profile.take() {
            let _ = profile.close();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}
