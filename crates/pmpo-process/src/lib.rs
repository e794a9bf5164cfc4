//! pmpo's one process runner. Every program pmpo starts (a stage's tool,
//! a check's command, a trigger, a state provider's command, a model
//! endpoint's command) goes through here:
//!
//! - the process leads its own process group, so a time limit, a cancel or
//!   its end kills everything it started ([`stop_group`]: SIGTERM, a grace,
//!   SIGKILL); the group is registered while it runs ([`kill_live_groups`]);
//! - its output is captured by one policy ([`capture`]): a capped head, a
//!   tail, the total, and optionally the whole stream in a spill file;
//! - a process that escaped the group (`setsid`) but still holds the output
//!   pipes cannot hang the caller: after the group is gone the pipes are read
//!   for a bounded time only, and the result says so ([`ProcessResult::note`]);
//! - the environment can be cleared or thinned, and a [`PreExec`] hook runs
//!   in the child just before the program (for confinement);
//! - a program named without a `/` is found on the child's `PATH` once and
//!   started by its path from then on ([`resolve`]), instead of one failing
//!   `execve` per `PATH` directory on every start.
//!
//! Two faces, same behaviour: [`run`] (async, cancelled by a
//! `CancellationToken` or by dropping the future) and [`run_blocking`]
//! (cancelled by an `AtomicBool`).

pub mod capture;
pub mod group;
pub mod limits;
pub mod resolve;
mod watch;
mod watch_async;

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use capture::{Captured, DEFAULT_LIMIT, Spill, TAIL_BYTES, capture};
pub use group::{
    DEFAULT_KILL_GRACE, LiveGroup, group_has_live_members, kill_live_groups, live_groups_contain,
    observe_groups, process_alive, signal_group, stop_group, stop_group_async,
};

/// Default time the output pipes are still read after the process group is
/// gone (only a process that left the group can keep them open that long).
pub const DEFAULT_PIPES_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the leader to end after its group was SIGKILLed.
const LEADER_AFTER_KILL: Duration = Duration::from_secs(5);
/// How often the blocking face looks at its cancel flag.
const CANCEL_TICK: Duration = Duration::from_millis(20);
/// How often a pipe reader or the stdin writer looks whether to give up.
pub(crate) const PIPE_TICK_MS: i32 = 50;

/// A hook run in the child between fork and exec (after the process group is
/// set), e.g. to confine it. It must only make async-signal-safe calls.
#[derive(Clone)]
pub struct PreExec(pub std::sync::Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>);

impl fmt::Debug for PreExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreExec(..)")
    }
}

/// What to run, and how.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The program and its arguments (no shell).
    pub argv: Vec<String>,
    /// The working directory (default: pmpo's own).
    pub cwd: Option<PathBuf>,
    /// Start from an empty environment instead of pmpo's.
    pub env_clear: bool,
    /// Variables removed from the inherited environment.
    pub env_remove: Vec<String>,
    /// Variables set (after the removals: a removed name set here is set).
    pub env: Vec<(String, String)>,
    /// Bytes written to stdin, which is then closed; `None`: stdin is /dev/null.
    pub stdin: Option<Vec<u8>>,
    /// Head bytes kept per output stream.
    pub capture_limit: usize,
    /// Tail bytes kept per output stream once the head is full (0: none).
    pub capture_tail: usize,
    /// Where stdout is kept whole once it outgrows `capture_limit`.
    pub spill_stdout: Option<Spill>,
    /// Where stderr is kept whole once it outgrows `capture_limit`.
    pub spill_stderr: Option<Spill>,
    /// Time limit; at it the group is stopped and the result is `TimedOut`.
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL when the group is stopped (zero: SIGKILL at once).
    pub kill_grace: Duration,
    /// How long the pipes are still read once the group is gone.
    pub pipes_grace: Duration,
    /// Run in the child just before the program.
    pub pre_exec: Option<PreExec>,
    /// Run in a thread of its own that then starts the program, which
    /// inherits what the hook did to that thread: a Landlock domain and
    /// `no_new_privs` are per thread and passed on to children. Unlike
    /// `pre_exec` (which makes the spawn a full `fork` of pmpo, about a
    /// millisecond or more), the spawn stays as cheap as without a hook.
    /// Not for per-process settings such as resource limits.
    pub confine_thread: Option<PreExec>,
}

impl ProcessSpec {
    /// `argv` with the defaults: pmpo's directory and environment, stdin
    /// closed, [`DEFAULT_LIMIT`] + [`TAIL_BYTES`] kept per stream, no spill,
    /// no time limit, [`DEFAULT_KILL_GRACE`], [`DEFAULT_PIPES_GRACE`].
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> ProcessSpec {
        ProcessSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: None,
            env_clear: false,
            env_remove: Vec::new(),
            env: Vec::new(),
            stdin: None,
            capture_limit: DEFAULT_LIMIT,
            capture_tail: TAIL_BYTES,
            spill_stdout: None,
            spill_stderr: None,
            timeout: None,
            kill_grace: DEFAULT_KILL_GRACE,
            pipes_grace: DEFAULT_PIPES_GRACE,
            pre_exec: None,
            confine_thread: None,
        }
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

/// The result of one run.
#[derive(Debug, Clone)]
pub struct ProcessResult {
    pub termination: Termination,
    pub stdout: Captured,
    pub stderr: Captured,
    /// From the start to the end of the process (its group stopped, when it was).
    pub duration: Duration,
    /// How the process itself ended (`Exited` or `Signaled`), also when it
    /// was stopped for its time limit or a cancel (then usually by SIGTERM, or
    /// SIGKILL after the grace); `None` if it did not end even after SIGKILL.
    pub exit: Option<Termination>,
    /// The process id (also its process group id).
    pub pid: u32,
    /// Set when something could not be done as usual: output pipes held open
    /// by a process that left the group, a process that did not end.
    pub note: Option<String>,
}

/// What the runner tells of the leader's end: how it ended, read without
/// reaping it (so its group id stays ours until the group is stopped).
pub(crate) type OnExit = Box<dyn FnOnce(std::io::Result<Termination>) + Send>;

/// When the pipe readers and the stdin writer stop waiting.
#[derive(Default)]
pub(crate) struct GiveUp(Mutex<Option<Instant>>);

impl GiveUp {
    fn set_after(&self, d: Duration) {
        let mut at = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if at.is_none() {
            *at = Some(Instant::now() + d);
        }
    }

    fn passed(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| Instant::now() >= at)
    }
}

/// How a wait on a descriptor ended.
enum Ready {
    Yes,
    NotYet,
    Broken,
}

/// Waits until `fd` is ready for `events` (or hung up) or the tick passes.
fn poll_fd(fd: i32, events: libc::c_short) -> Ready {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: poll(2) reads and writes the one pollfd we own.
    let rc = unsafe { libc::poll(&mut pfd, 1, PIPE_TICK_MS) };
    match rc {
        0 => Ready::NotYet,
        n if n > 0 => Ready::Yes,
        _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
            Ready::NotYet
        }
        _ => Ready::Broken,
    }
}

/// Writes `data` to the child's stdin and closes it; a child that exits
/// without reading is fine, one that never reads is given up on with the pipes.
fn write_stdin(mut pipe: std::process::ChildStdin, data: &[u8], give_up: &GiveUp) {
    let fd = pipe.as_raw_fd();
    // Our end only (the child's end is another open file): never block in write.
    // SAFETY: fcntl(2) on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let mut off = 0;
    while off < data.len() && !give_up.passed() {
        match pipe.write(&data[off..]) {
            Ok(0) => break,
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ready::Broken = poll_fd(fd, libc::POLLOUT) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A broken pipe: the child did not read it all.
            Err(_) => break,
        }
    }
}

/// A started process: its group, its watching thread, the leader to reap.
/// Dropping it (also midway) kills the group.
struct Running {
    pid: u32,
    started: Instant,
    group: Option<LiveGroup>,
    child: Option<Child>,
    give_up: Arc<GiveUp>,
    /// What the watching thread kept of the output ([`watch`]).
    watched: Option<watch::Watched>,
    pipes_grace: Duration,
}

impl Running {
    /// At the end (or on a drop midway): the final SIGKILL sweep, then the
    /// leader is reaped. The sweep is sent only while the group id is surely
    /// ours: the leader is unreaped, or members are left.
    fn release(&mut self) {
        if let Some(group) = self.group.take() {
            if self.child.is_none() && !signal_group(self.pid, 0) {
                group.forget();
            } else {
                drop(group);
            }
        }
        if let Some(mut child) = self.child.take()
            && !matches!(child.try_wait(), Ok(Some(_)))
        {
            // SIGKILLed just now (a run dropped midway): reaped off the caller's thread.
            let _ = std::thread::Builder::new()
                .name("pmpo-process-reap".into())
                .spawn(move || {
                    let _ = child.wait();
                });
        }
        self.give_up.set_after(self.pipes_grace);
    }

    /// The leader ended by itself: reap it, then see whether it left
    /// processes in its group. Only a group with members left is signalled:
    /// those members keep the group id from being reused, while an empty
    /// group's id could already name someone else's group. The common case
    /// (nothing left) costs one kill(2) instead of a look through /proc.
    fn reap_and_find_leftovers(&mut self) -> bool {
        if let Some(mut child) = self.child.take() {
            // A zombie by now (its end was seen): returns at once.
            let _ = child.wait();
        }
        let left = signal_group(self.pid, 0);
        if !left && let Some(group) = self.group.take() {
            group.forget();
        }
        left
    }

    /// The result, once the process ended and `release` set the readers'
    /// give-up time: the readers are joined (each ends at its pipe's end or
    /// at that time) and their captures assembled.
    fn result(
        &mut self,
        termination: Termination,
        exit: Option<Termination>,
        duration: Duration,
        notes: Vec<String>,
    ) -> ProcessResult {
        // The watcher sends at its pipes' end, or at the give-up time.
        let results = self
            .watched
            .take()
            .and_then(|w| w.captures.recv().ok())
            .unwrap_or_default();
        let (stdout, stderr, note) = Running::outputs(results, notes);
        ProcessResult {
            termination,
            stdout,
            stderr,
            duration,
            exit,
            pid: self.pid,
            note,
        }
    }

    fn outputs(
        results: watch::Captures,
        mut notes: Vec<String>,
    ) -> (Captured, Captured, Option<String>) {
        let [(out, out_gave_up), (err, err_gave_up)] = results;
        if out_gave_up || err_gave_up {
            notes.push(
                "a process that left the process group kept its output open; its output after the group ended was not read"
                    .to_string(),
            );
        }
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        (out, err, note)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.release();
    }
}

/// The command for `spec`, started as `program` (its absolute path when
/// found ahead, see [`resolve`]); the program sees the name it was given.
fn command(spec: &ProcessSpec, program: &std::ffi::OsStr, args: &[String]) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg0(&spec.argv[0]).args(args);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    if spec.env_clear {
        cmd.env_clear();
    }
    for var in &spec.env_remove {
        cmd.env_remove(var);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(hook) = &spec.pre_exec {
        let hook = hook.0.clone();
        // SAFETY: the hook's contract (see `PreExec`) is to make only
        // async-signal-safe calls; nothing else runs here.
        unsafe {
            cmd.pre_exec(move || hook());
        }
    }
    cmd
}

/// Spawns `spec`'s program: by the path found on `PATH` ahead when there is
/// one, and by its bare name (the child searches, as without the cache)
/// when that path does not start any more.
fn spawn_child(spec: &ProcessSpec) -> std::io::Result<Child> {
    let (program, args) = spec.argv.split_first().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the command is empty")
    })?;
    let spawn = || match resolve::resolved(spec) {
        Some(found) => match command(spec, found.as_os_str(), args).spawn() {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                resolve::forget(spec);
                command(spec, program.as_ref(), args).spawn()
            }
            started => started,
        },
        None => command(spec, program.as_ref(), args).spawn(),
    };
    match &spec.confine_thread {
        // The thread ends right after the spawn, taking its restrictions along.
        Some(hook) => std::thread::scope(|s| {
            s.spawn(|| {
                (hook.0)()?;
                spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the confining thread panicked")))
        }),
        None => spawn(),
    }
}

/// Starts the program and its watcher: a task of the caller's runtime for
/// the async face (`on_runtime`), where it can be, else a thread.
fn start(spec: &ProcessSpec, on_exit: OnExit, on_runtime: bool) -> std::io::Result<Running> {
    let started = Instant::now();
    let mut child = spawn_child(spec)?;
    let pid = child.id();
    let give_up = Arc::new(GiveUp::default());
    let mut running = Running {
        pid,
        started,
        group: Some(LiveGroup::register(pid)),
        child: None,
        give_up: give_up.clone(),
        watched: None,
        pipes_grace: spec.pipes_grace,
    };
    let pipes = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn ReadFd>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn ReadFd>),
    ];
    let keepers = [spec.spill_stdout.clone(), spec.spill_stderr.clone()]
        .map(|spill| capture::Keeper::new(spec.capture_limit, spec.capture_tail, spill));
    let unstarted = if on_runtime {
        match watch_async::start(pid, pipes, keepers, on_exit, give_up.clone()) {
            Ok(w) => {
                running.watched = Some(w);
                None
            }
            Err(u) => Some(u),
        }
    } else {
        Some(Box::new(watch_async::Unstarted {
            pipes,
            keepers,
            on_exit,
        }))
    };
    if let Some(u) = unstarted {
        let watched = watch::start(pid, u.pipes, u.keepers, u.on_exit, give_up.clone())?;
        running.watched = Some(watched);
    }
    if let (Some(pipe), Some(data)) = (child.stdin.take(), spec.stdin.clone()) {
        let give_up = give_up.clone();
        std::thread::Builder::new()
            .name("pmpo-process-stdin".into())
            .spawn(move || write_stdin(pipe, &data, &give_up))?;
    }
    running.child = Some(child);
    Ok(running)
}

/// A pipe end the reader can poll.
pub(crate) trait ReadFd: Read + AsRawFd + Send {}
impl<T: Read + AsRawFd + Send> ReadFd for T {}

impl AsRawFd for Box<dyn ReadFd> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        (**self).as_raw_fd()
    }
}

enum Ended {
    Exit(std::io::Result<Termination>),
    TimedOut,
    Cancelled,
}

impl Ended {
    /// For a run stopped by us.
    fn termination(&self) -> Termination {
        match self {
            Ended::Cancelled => Termination::Cancelled,
            _ => Termination::TimedOut,
        }
    }
}

/// Runs the process to its end, its time limit, or `cancel`. Every process
/// of its group is gone before this returns; dropping the future midway
/// SIGKILLs the group. An error is returned only when the program cannot be
/// started (or waited for).
pub async fn run(spec: &ProcessSpec, cancel: &CancellationToken) -> std::io::Result<ProcessResult> {
    let (tx, mut exited) = tokio::sync::oneshot::channel();
    let mut running = start(
        spec,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
        true,
    )?;
    let pid = running.pid;
    let limit = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        biased;
        r = &mut exited => Ended::Exit(r.unwrap_or_else(|_| Err(std::io::Error::other("the process waiter ended early")))),
        _ = cancel.cancelled() => Ended::Cancelled,
        _ = limit => Ended::TimedOut,
    };
    let mut notes = Vec::new();
    let (termination, exit) = match ended {
        Ended::Exit(r) => {
            let t = r?;
            // Anything the command left running in its group goes too.
            if running.reap_and_find_leftovers() {
                stop_group_async(pid, spec.kill_grace).await;
            }
            (t, Some(t))
        }
        stopped => {
            stop_group_async(pid, spec.kill_grace).await;
            let exit = match tokio::time::timeout(LEADER_AFTER_KILL, &mut exited).await {
                Ok(Ok(Ok(t))) => Some(t),
                _ => {
                    notes.push(format!("process {pid} did not end after SIGKILL"));
                    None
                }
            };
            (stopped.termination(), exit)
        }
    };
    let duration = running.started.elapsed();
    running.release();
    // The watcher is done at its pipes' end, or at the give-up time just set.
    if let Some(w) = running.watched.as_mut() {
        let _ = (&mut w.done).await;
    }
    // It has sent what it kept: taking it does not wait.
    Ok(running.result(termination, exit, duration, notes))
}

/// As [`run`], on the calling thread; `cancel` is looked at every 20 ms.
pub fn run_blocking(
    spec: &ProcessSpec,
    cancel: Option<&AtomicBool>,
) -> std::io::Result<ProcessResult> {
    let (tx, exited) = mpsc::channel();
    // Never on a runtime: this face may block the runtime's own thread.
    let mut running = start(
        spec,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
        false,
    )?;
    let pid = running.pid;
    let deadline = spec.timeout.map(|t| running.started + t);
    let ended = loop {
        let wait = deadline.map_or(CANCEL_TICK, |d| {
            CANCEL_TICK.min(d.saturating_duration_since(Instant::now()))
        });
        match exited.recv_timeout(wait) {
            Ok(r) => break Ended::Exit(r),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Ended::Exit(Err(std::io::Error::other("the process waiter ended early")));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            break Ended::Cancelled;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break Ended::TimedOut;
        }
    };
    let mut notes = Vec::new();
    let (termination, exit) = match ended {
        Ended::Exit(r) => {
            let t = r?;
            if running.reap_and_find_leftovers() {
                stop_group(pid, spec.kill_grace);
            }
            (t, Some(t))
        }
        stopped => {
            stop_group(pid, spec.kill_grace);
            let exit = match exited.recv_timeout(LEADER_AFTER_KILL) {
                Ok(Ok(t)) => Some(t),
                _ => {
                    notes.push(format!("process {pid} did not end after SIGKILL"));
                    None
                }
            };
            (stopped.termination(), exit)
        }
    };
    let duration = running.started.elapsed();
    running.release();
    Ok(running.result(termination, exit, duration, notes))
}
