//! Spawning a tool process: its own process group (so a timeout or a cancel
//! kills grandchildren too), bounded output capture, a time limit.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::capture::{Captured, Spill, read_capped_spill};

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    pub capture_limit: usize,
    /// Run in the child between `fork` and `exec` (entering a sandbox).
    pub pre_exec: Option<PreExec>,
}

/// A function the child runs between `fork` and `exec`. It must be safe
/// there: no allocation, no lock (only system calls on prepared data).
#[derive(Clone)]
pub struct PreExec(pub std::sync::Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>);

impl std::fmt::Debug for PreExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreExec(..)")
    }
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Cancelled,
}

/// The result of one process run.
#[derive(Debug, Clone)]
pub struct ProcessResult {
    pub termination: Termination,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
    /// Set when output pipes were still held open by an escaped process.
    pub note: Option<String>,
}

/// Process groups of the tool processes running now, so that a process that
/// must exit at once (a second terminating signal) can still kill them all.
static LIVE_GROUPS: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Keeps a group in [`LIVE_GROUPS`] while its process runs, and kills the
/// group when dropped: also when the future running it is dropped midway.
struct LiveGroup(u32);

impl LiveGroup {
    fn new(pgid: u32) -> LiveGroup {
        if pgid != 0 {
            LIVE_GROUPS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(pgid);
        }
        LiveGroup(pgid)
    }
}

impl Drop for LiveGroup {
    fn drop(&mut self) {
        if self.0 != 0 {
            kill_group(self.0);
            LIVE_GROUPS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.0);
        }
    }
}

/// Kills the process group of every tool process still running (SIGKILL).
/// For a process about to exit without unwinding.
pub fn kill_live_groups() {
    let groups = LIVE_GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for g in groups {
        kill_group(g);
    }
}

fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is shared.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

/// Runs a process to completion, its time limit, or cancellation. Every
/// process of its group is killed before this returns: a stage's processes
/// never outlive the stage.
pub async fn run_process(
    spec: &ProcessSpec,
    timeout: Duration,
    cancel: &CancellationToken,
) -> std::io::Result<ProcessResult> {
    run_process_spilling(spec, timeout, cancel, [None, None]).await
}

/// As [`run_process`]; stdout and stderr that outgrow the capture limit are
/// kept whole in the given files (`[stdout, stderr]`).
pub async fn run_process_spilling(
    spec: &ProcessSpec,
    timeout: Duration,
    cancel: &CancellationToken,
    spill: [Option<Spill>; 2],
) -> std::io::Result<ProcessResult> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    // Keys stay with pmpo: inherited secret variables are removed; a value the
    // stage sets itself (`env:`, `env_passthrough:`) is set again below.
    for var in pmpo_store::secrets::hidden_variables() {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(hook) = spec.pre_exec.clone() {
        // SAFETY: the hook only makes system calls on data prepared before
        // the fork (see `PreExec`).
        unsafe {
            cmd.pre_exec(move || (hook.0)());
        }
    }
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pgid = child.id().unwrap_or(0);
    let group = LiveGroup::new(pgid);
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let limit = spec.capture_limit;
    let [out_spill, err_spill] = spill;
    let mut out_task = tokio::spawn(read_capped_spill(stdout, limit, out_spill));
    let mut err_task = tokio::spawn(read_capped_spill(stderr, limit, err_spill));
    if let (Some(mut stdin), Some(data)) = (child.stdin.take(), spec.stdin.clone()) {
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
        });
    }

    let termination = tokio::select! {
        status = child.wait() => {
            let status = status?;
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => Termination::Exited(code),
                (None, Some(sig)) => Termination::Signaled(sig),
                _ => Termination::Exited(-1),
            }
        }
        _ = tokio::time::sleep(timeout) => Termination::TimedOut,
        _ = cancel.cancelled() => Termination::Cancelled,
    };
    drop(group);
    if matches!(termination, Termination::TimedOut | Termination::Cancelled) {
        let _ = child.wait().await;
    }
    let duration = started.elapsed();

    // The group is dead, so the pipes close; a process that left the group
    // (setsid) may still hold them, so do not wait for it forever.
    let mut note = None;
    let grace = Duration::from_secs(2);
    let stdout = match tokio::time::timeout(grace, &mut out_task).await {
        Ok(Ok(c)) => c,
        _ => {
            out_task.abort();
            note = Some("a process that left the stage's process group kept its output open; its output was not read".into());
            Captured::default()
        }
    };
    let stderr = match tokio::time::timeout(grace, &mut err_task).await {
        Ok(Ok(c)) => c,
        _ => {
            err_task.abort();
            Captured::default()
        }
    };
    Ok(ProcessResult {
        termination,
        stdout,
        stderr,
        duration,
        note,
    })
}
