//! The watcher of [`crate::watch`] as a task of the caller's runtime, for
//! the async face ([`crate::run`]): the two pipes and a pidfd of the leader
//! are read when the runtime's poller says they are ready. A thread per
//! process costs its start and end, and each hand-over between it and the
//! caller's thread wakes another CPU (on a virtual machine, a wake-up costs
//! more than the whole stage's own work); on the runtime there is none. The
//! behaviour is the thread's: the same capture, the same give-up time, the
//! leader's end told as soon as it comes, without reaping it.
//!
//! Used only where the runtime can do it (a tokio runtime with its I/O
//! driver, a kernel with pidfds); otherwise [`start`] gives everything back
//! and the thread watches.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::capture::Keeper;
use crate::watch::{Captures, Watched, captures, pidfd_open, wait_unreaped};
use crate::{GiveUp, OnExit, PIPE_TICK_MS, ReadFd};

type Pipe = AsyncFd<Box<dyn ReadFd>>;

/// What [`start`] gives back when it cannot watch on the runtime.
pub(crate) struct Unstarted {
    pub pipes: [Option<Box<dyn ReadFd>>; 2],
    pub keepers: [Keeper; 2],
    pub on_exit: OnExit,
}

/// Starts watching the process `pid` (our child, unreaped) on the current runtime.
pub(crate) fn start(
    pid: u32,
    pipes: [Option<Box<dyn ReadFd>>; 2],
    keepers: [Keeper; 2],
    on_exit: OnExit,
    give_up: Arc<GiveUp>,
) -> Result<Watched, Box<Unstarted>> {
    let unstarted = |pipes, keepers, on_exit| {
        Box::new(Unstarted {
            pipes,
            keepers,
            on_exit,
        })
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return Err(unstarted(pipes, keepers, on_exit));
    };
    let Some(pidfd) = pidfd_open(pid) else {
        return Err(unstarted(pipes, keepers, on_exit));
    };
    let _entered = handle.enter();
    // SAFETY: the descriptor is owned by the `OwnedFd` the AsyncFd holds: it
    // stays open, the same description, until the AsyncFd is dropped.
    let Ok(pidfd) = (unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }) else {
        return Err(unstarted(pipes, keepers, on_exit));
    };
    let [out, err] = pipes;
    let (out, err) = match (register(out), register(err)) {
        (Ok(o), Ok(e)) => (o, e),
        (o, e) => {
            let back = |r: Result<Option<Pipe>, Option<Box<dyn ReadFd>>>| match r {
                Ok(p) => p.map(AsyncFd::into_inner),
                Err(p) => p,
            };
            return Err(unstarted([back(o), back(e)], keepers, on_exit));
        }
    };
    let (tx, captures) = mpsc::channel();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let [k_out, k_err] = keepers;
    let mut watch = Watch {
        pidfd,
        on_exit: Some(on_exit),
        pipes: [out, err],
        keepers: [Some(k_out), Some(k_err)],
        gave_up: [false, false],
        give_up,
    };
    handle.spawn(async move {
        let kept = watch.read_pipes().await;
        let _ = tx.send(kept);
        let _ = done_tx.send(());
        watch.tell_the_end().await;
    });
    Ok(Watched { captures, done })
}

/// A pipe made non-blocking and registered with the runtime's poller; the
/// pipe itself back when it cannot be.
fn register(pipe: Option<Box<dyn ReadFd>>) -> Result<Option<Pipe>, Option<Box<dyn ReadFd>>> {
    let Some(pipe) = pipe else { return Ok(None) };
    let fd = pipe.as_raw_fd();
    // SAFETY: fcntl(2) on a descriptor we own, reading then setting its flags.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if !ok {
        return Err(Some(pipe));
    }
    // SAFETY: the pipe owns its descriptor and keeps it open, the same
    // description, until the AsyncFd that holds it is dropped.
    unsafe { AsyncFd::register_with_interest(pipe, Interest::READABLE) }
        .map(Some)
        .map_err(|e| Some(e.into_parts().0))
}

struct Watch {
    pidfd: AsyncFd<OwnedFd>,
    /// Still to be told (the leader's end was not seen yet).
    on_exit: Option<OnExit>,
    pipes: [Option<Pipe>; 2],
    keepers: [Option<Keeper>; 2],
    gave_up: [bool; 2],
    give_up: Arc<GiveUp>,
}

/// What woke the watcher.
enum Woke {
    Read(usize, std::io::Result<usize>),
    Ended,
    Tick,
}

/// One read of a pipe once it is ready; pending for ever when it is closed.
async fn read_some(pipe: &mut Option<Pipe>, buf: &mut [u8]) -> std::io::Result<usize> {
    let Some(fd) = pipe.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        let mut ready = fd.readable_mut().await?;
        // Not ready after all (the readiness was stale): wait again.
        if let Ok(r) = ready.try_io(|p| p.get_mut().read(buf)) {
            return r;
        }
    }
}

impl Watch {
    fn tell(&mut self) {
        if let Some(tell) = self.on_exit.take() {
            // The pidfd is readable: the leader has ended, this does not wait.
            tell(wait_unreaped(
                libc::P_PIDFD,
                self.pidfd.get_ref().as_raw_fd() as u32,
            ));
        }
    }

    /// Tells of the leader's end, waiting for it when it is still to come.
    async fn tell_the_end(&mut self) {
        if self.on_exit.is_some() {
            let _ = self.pidfd.readable().await;
            self.tell();
        }
    }

    /// Reads both pipes to their end or the give-up time, telling of the
    /// leader's end meanwhile when it comes.
    async fn read_pipes(&mut self) -> Captures {
        let (mut buf_out, mut buf_err) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
        let tick = Duration::from_millis(PIPE_TICK_MS as u64);
        while self.pipes.iter().any(Option::is_some) {
            if self.give_up.passed() {
                for (pipe, gave_up) in self.pipes.iter_mut().zip(&mut self.gave_up) {
                    *gave_up = pipe.take().is_some();
                }
                break;
            }
            let waiting = self.on_exit.is_some();
            let [out, err] = &mut self.pipes;
            let woke = tokio::select! {
                r = read_some(out, &mut buf_out) => Woke::Read(0, r),
                r = read_some(err, &mut buf_err) => Woke::Read(1, r),
                _ = self.pidfd.readable(), if waiting => Woke::Ended,
                _ = tokio::time::sleep(tick) => Woke::Tick,
            };
            match woke {
                Woke::Read(i, Ok(0)) => self.pipes[i] = None,
                Woke::Read(i, Ok(n)) => {
                    let buf = if i == 0 { &buf_out } else { &buf_err };
                    if let Some(k) = self.keepers[i].as_mut() {
                        k.push(&buf[..n]);
                    }
                }
                Woke::Read(_, Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // A pipe that cannot be read is read no further.
                Woke::Read(i, Err(_)) => self.pipes[i] = None,
                Woke::Ended => self.tell(),
                Woke::Tick => {}
            }
        }
        captures(&mut self.keepers, self.gave_up)
    }
}
