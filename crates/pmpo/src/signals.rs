//! Every terminating signal is a cancel. SIGINT (Ctrl-C), SIGTERM (`timeout`,
//! systemd, CI cancellation, `docker stop`) and SIGHUP (a closed terminal) all
//! do what Ctrl-C does: the running stages' process groups are killed, the
//! results and the ledger are written, and pmpo exits 130, 143 or 129. A
//! second signal does not wait for that: it kills every stage process group
//! still alive and exits at once with the same code.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

/// Which terminating signal arrived first (0: none yet).
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicI32>);

impl Stop {
    /// The exit code for a command that ended because of the signal: 128 + its
    /// number (130 SIGINT, 143 SIGTERM, 129 SIGHUP); 130 when none was seen
    /// (a cancel from elsewhere counts as Ctrl-C).
    pub fn exit_code(&self) -> u8 {
        match self.0.load(Ordering::SeqCst) {
            0 => crate::EXIT_CANCELLED,
            n => (128 + n).clamp(0, 255) as u8,
        }
    }
}

/// Listens for SIGINT, SIGTERM and SIGHUP on a thread of its own (so it works
/// whatever runtime, if any, the command uses) and calls `cancel` on the first.
pub fn on_terminating_signals(cancel: impl Fn() + Send + 'static) -> Stop {
    let stop = Stop::default();
    let seen = stop.0.clone();
    // The handlers are in place before this returns: a signal that comes
    // right after (a loaded machine may not have run the thread yet) must be
    // a cancel, not the default action that kills pmpo with nothing written.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let started = std::thread::Builder::new()
        .name("pmpo-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                    signal(SignalKind::hangup()),
                ) else {
                    return;
                };
                let _ = ready_tx.send(());
                loop {
                    let signo = tokio::select! {
                        _ = int.recv() => libc::SIGINT,
                        _ = term.recv() => libc::SIGTERM,
                        _ = hup.recv() => libc::SIGHUP,
                    };
                    if seen
                        .compare_exchange(0, signo, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        cancel();
                    } else {
                        // The second signal: no more waiting.
                        pmpo_tools::process::kill_live_groups();
                        let first = seen.load(Ordering::SeqCst);
                        // stderr may be gone (a closed terminal): never panic on it.
                        let _ = std::io::Write::write_all(
                            &mut std::io::stderr(),
                            b"pmpo: second signal: stopped at once; `pmpo resume` or a re-run continues the run\n",
                        );
                        std::process::exit(128 + first);
                    }
                }
            });
        });
    // Dropped unsent when the thread could not listen: then it returns at once.
    let listening = started.is_ok() && ready_rx.recv().is_ok();
    if !listening {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"pmpo: warning: cannot watch for signals; Ctrl-C will stop pmpo abruptly\n",
        );
    }
    stop
}
