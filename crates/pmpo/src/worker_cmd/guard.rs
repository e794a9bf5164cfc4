//! The guard: a small child process of `pmpo worker` that kills the stage's
//! process groups when the worker dies.
//!
//! `PR_SET_PDEATHSIG` would only reach the group's leader (a `sh -c` whose
//! `sleep` would live on), and it fires when the forking thread ends, not the
//! process. So the worker starts this guard (the same binary, in a process
//! group of its own, so a Ctrl-C meant for the worker does not reach it) and
//! tells it, through a pipe, each process group that starts (`+PGID`) and
//! ends (`-PGID`). When the pipe closes without a goodbye (`bye`), the worker
//! is gone, however it died (kill -9 included: the kernel closes its end): the
//! guard SIGKILLs every group still listed, then exits.
//!
//! The guard also holds the lease's deadline (`lease MS` after each renewal,
//! `free` when the job ends): a worker that is alive but frozen (stopped, or
//! starved) cannot kill its stage when its lease runs out, so the guard does.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// The worker's side: the guard's process and the pipe to it.
pub struct Guard {
    child: Child,
}

static PIPE: Mutex<Option<ChildStdin>> = Mutex::new(None);

impl Guard {
    /// Starts the guard and has every process group of this process told to it.
    pub fn start() -> std::io::Result<Guard> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["worker", "--guard"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the guard has no standard input"))?;
        *PIPE.lock().unwrap_or_else(|p| p.into_inner()) = Some(stdin);
        pmpo_process::observe_groups(|pgid, live| {
            let mut pipe = PIPE.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = pipe.as_mut() {
                let _ = writeln!(p, "{}{pgid}", if live { '+' } else { '-' });
                let _ = p.flush();
            }
        });
        Ok(Guard { child })
    }

    /// The lease of the running job now lasts `left` more (from a renewal);
    /// `None`: no job runs.
    pub fn lease(left: Option<std::time::Duration>) {
        let mut pipe = PIPE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pipe.as_mut() {
            let _ = match left {
                Some(d) => writeln!(p, "lease {}", d.as_millis()),
                None => writeln!(p, "free"),
            };
            let _ = p.flush();
        }
    }

    /// The worker ends normally: the guard leaves without killing anything.
    pub fn finish(mut self) {
        if let Some(mut p) = PIPE.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writeln!(p, "bye");
        }
        let _ = self.child.wait();
    }
}

/// The guard's own work (`pmpo worker --guard`): listen until the pipe
/// closes, then kill what is listed; kill it too when a lease runs out.
pub fn serve() -> u8 {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut live = BTreeSet::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let wait = deadline.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        let line = match rx.recv_timeout(wait) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    deadline = None;
                    let n = kill_all(&live);
                    if n > 0 {
                        eprintln!(
                            "pmpo worker guard: the running stage's lease ran out with no renewal from the worker (stopped or starved?); killed {n} process group(s)"
                        );
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let line = line.trim();
        match line {
            "bye" => return 0,
            "free" => deadline = None,
            _ => {}
        }
        if let Some(ms) = line.strip_prefix("lease ").and_then(|m| m.parse().ok()) {
            deadline = Some(Instant::now() + Duration::from_millis(ms));
        } else if let Some(pgid) = line.strip_prefix('+').and_then(|p| p.parse::<u32>().ok()) {
            live.insert(pgid);
        } else if let Some(pgid) = line.strip_prefix('-').and_then(|p| p.parse::<u32>().ok()) {
            live.remove(&pgid);
        }
    }
    let n = kill_all(&live);
    if n > 0 {
        eprintln!(
            "pmpo worker guard: the worker ended without stopping its stage; killed {n} process group(s)"
        );
    }
    0
}

fn kill_all(live: &BTreeSet<u32>) -> usize {
    for pgid in live {
        pmpo_process::signal_group(*pgid, libc::SIGKILL);
    }
    live.len()
}
