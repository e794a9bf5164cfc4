//! One thread per started process (for the blocking face, or where the
//! runtime cannot: see `watch_async`) reads its stdout and stderr by the
//! capture policy and tells of the leader's end as soon as it comes, without
//! reaping it: one `poll` over the two pipes and a pidfd of the leader. (A
//! thread per pipe plus one blocked in `waitid` cost two more thread starts
//! and ends per process.) Where a pidfd cannot be had (a kernel before 5.3,
//! a filter that refuses it), a second thread waits for the end as before.
//!
//! The pipes are read until their end, or until the give-up time once it is
//! set (a process that left the group holds them); what was kept is sent
//! when both are done, also when the leader's end is still to come.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc;

use crate::capture::{Captured, Keeper};
use crate::{GiveUp, OnExit, PIPE_TICK_MS, ReadFd, Termination};

/// Of each stream, what was kept and whether the reading gave up.
pub(crate) type Captures = [(Captured, bool); 2];

/// What the caller holds of the watching thread.
pub(crate) struct Watched {
    /// The captures, sent once both pipes are done.
    pub captures: mpsc::Receiver<Captures>,
    /// Said right after the captures were sent (for the async face to await).
    pub done: tokio::sync::oneshot::Receiver<()>,
}

/// Starts watching the process `pid` (our child, unreaped).
pub(crate) fn start(
    pid: u32,
    pipes: [Option<Box<dyn ReadFd>>; 2],
    keepers: [Keeper; 2],
    on_exit: OnExit,
    give_up: Arc<GiveUp>,
) -> std::io::Result<Watched> {
    let (tx, captures) = mpsc::channel();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let pidfd = pidfd_open(pid);
    let on_exit = match pidfd {
        Some(_) => Some(on_exit),
        None => {
            // Only watches: the leader is reaped by the caller, once its group was dealt with.
            std::thread::Builder::new()
                .name("pmpo-process-wait".into())
                .spawn(move || on_exit(wait_unreaped(libc::P_PID, pid)))?;
            None
        }
    };
    let [out, err] = keepers;
    let mut watch = Watch {
        pidfd,
        on_exit,
        pipes,
        keepers: [Some(out), Some(err)],
        gave_up: [false, false],
        give_up,
    };
    std::thread::Builder::new()
        .name("pmpo-process-watch".into())
        .spawn(move || {
            let kept = watch.read_pipes();
            let _ = tx.send(kept);
            let _ = done_tx.send(());
            watch.tell_the_end();
        })?;
    Ok(Watched { captures, done })
}

/// A pidfd of our child `pid` (it is unreaped, so the pid is still its).
pub(crate) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the descriptor was just made for us and is owned by nothing else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits for the process to end without reaping it (`idtype` P_PID with a
/// pid, or P_PIDFD with a pidfd).
pub(crate) fn wait_unreaped(idtype: libc::idtype_t, id: u32) -> std::io::Result<Termination> {
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid(2) fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) on our own child, writing into `info` we own.
        let rc = unsafe {
            libc::waitid(
                idtype,
                id as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            // SAFETY: for a child's state change the status field is set.
            let status = unsafe { info.si_status() };
            return Ok(if info.si_code == libc::CLD_EXITED {
                Termination::Exited(status)
            } else {
                Termination::Signaled(status)
            });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

struct Watch {
    pidfd: Option<OwnedFd>,
    /// Still to be told (the leader's end was not seen yet).
    on_exit: Option<OnExit>,
    pipes: [Option<Box<dyn ReadFd>>; 2],
    keepers: [Option<Keeper>; 2],
    gave_up: [bool; 2],
    give_up: Arc<GiveUp>,
}

impl Watch {
    /// Tells of the leader's end, read from the pidfd (waiting for it when
    /// it is still to come: once the pipes are done).
    fn tell_the_end(&mut self) {
        if let (Some(tell), Some(fd)) = (self.on_exit.take(), &self.pidfd) {
            tell(wait_unreaped(libc::P_PIDFD, fd.as_raw_fd() as u32));
        }
    }

    /// Reads both pipes to their end or the give-up time, telling of the
    /// leader's end meanwhile when it comes.
    fn read_pipes(&mut self) -> Captures {
        let mut buf = vec![0u8; 16 * 1024];
        while self.pipes.iter().any(Option::is_some) {
            if self.give_up.passed() {
                for (pipe, gave_up) in self.pipes.iter_mut().zip(&mut self.gave_up) {
                    *gave_up = pipe.take().is_some();
                }
                break;
            }
            let mut fds = Vec::with_capacity(3);
            let mut whose = Vec::with_capacity(3);
            for (i, pipe) in self.pipes.iter().enumerate() {
                if let Some(p) = pipe {
                    fds.push(pollfd(p.as_raw_fd()));
                    whose.push(Some(i));
                }
            }
            if let (Some(_), Some(fd)) = (&self.on_exit, &self.pidfd) {
                fds.push(pollfd(fd.as_raw_fd()));
                whose.push(None);
            }
            // SAFETY: poll(2) reads and writes the pollfds we own.
            let rc =
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, PIPE_TICK_MS) };
            if rc < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // Pipes that cannot be waited on are read no further.
                self.pipes = [None, None];
                break;
            }
            for (fd, who) in fds.iter().zip(whose) {
                if fd.revents == 0 {
                    continue;
                }
                match who {
                    None => self.tell_the_end(),
                    Some(i) => self.read_once(i, &mut buf),
                }
            }
        }
        captures(&mut self.keepers, self.gave_up)
    }

    /// One read of a ready pipe; its end (or an error) closes it.
    fn read_once(&mut self, i: usize, buf: &mut [u8]) {
        let Some(pipe) = self.pipes[i].as_mut() else {
            return;
        };
        match pipe.read(buf) {
            Ok(0) => self.pipes[i] = None,
            Ok(n) => {
                if let Some(k) = self.keepers[i].as_mut() {
                    k.push(&buf[..n]);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) => {}
            Err(_) => self.pipes[i] = None,
        }
    }
}

/// What the keepers kept of each stream, with whether its reading gave up
/// (for both watchers).
pub(crate) fn captures(keepers: &mut [Option<Keeper>; 2], gave_up: [bool; 2]) -> Captures {
    let [out, err] = std::mem::take(keepers);
    let finish = |k: Option<Keeper>| k.map(Keeper::finish).unwrap_or_default();
    [(finish(out), gave_up[0]), (finish(err), gave_up[1])]
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
