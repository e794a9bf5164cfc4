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

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

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

    /// The worker ends normally: the guard leaves without killing anything.
    pub fn finish(mut self) {
        if let Some(mut p) = PIPE.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writeln!(p, "bye");
        }
        let _ = self.child.wait();
    }
}

/// The guard's own work (`pmpo worker --guard`): listen until the pipe
/// closes, then kill what is listed.
pub fn serve() -> u8 {
    let mut live = BTreeSet::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line == "bye" {
            return 0;
        }
        let (sign, rest) = line.split_at(line.len().min(1));
        let Ok(pgid) = rest.parse::<u32>() else {
            continue;
        };
        match sign {
            "+" => {
                live.insert(pgid);
            }
            "-" => {
                live.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in &live {
        pmpo_process::signal_group(*pgid, libc::SIGKILL);
    }
    if !live.is_empty() {
        eprintln!(
            "pmpo worker guard: the worker ended without stopping its stage; killed {} process group(s)",
            live.len()
        );
    }
    0
}
