//! What a started program gets of pmpo's own signal state: nothing. pmpo
//! catches SIGINT, SIGTERM and SIGHUP and ignores SIGPIPE (Rust's runtime
//! does); the program must start with the default dispositions and an empty
//! mask, or a group kill or a closed pipe would not end it. (The spawn
//! passes on the mask of the thread that starts the process, as `fork`
//! does: pmpo blocks no signal in any thread, and a spawn of its own that
//! blocks them around the start must unblock them in the child.) In a file
//! of its own: it changes the whole test process's handlers.

use std::sync::Arc;

use pmpo_process::{PreExec, ProcessSpec, run, run_blocking};
use tokio_util::sync::CancellationToken;

extern "C" fn on_signal(_: libc::c_int) {}

/// One field of `/proc/self/status` as printed by the program: a signal mask.
fn mask(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

fn bit(sig: libc::c_int) -> u64 {
    1 << (sig - 1)
}

/// pmpo's state: handlers, SIGPIPE ignored.
fn take_pmpo_like_signal_state() {
    // SAFETY: sigaction(2) on structures we own; the handler does nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
        }
        let mut ign: libc::sigaction = std::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        assert_eq!(
            libc::sigaction(libc::SIGPIPE, &ign, std::ptr::null_mut()),
            0
        );
    }
}

fn assert_clean(status: &str, face: &str) {
    assert_eq!(mask(status, "SigBlk:"), 0, "{face}: a blocked signal");
    // `cat` itself catches nothing: a caught signal here was inherited.
    assert_eq!(mask(status, "SigCgt:"), 0, "{face}: a caught signal");
    let ignored = mask(status, "SigIgn:");
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        assert_eq!(ignored & bit(sig), 0, "{face}: signal {sig} ignored");
    }
}

#[test]
fn a_program_starts_with_default_dispositions_and_an_empty_mask() {
    take_pmpo_like_signal_state();
    let status = ProcessSpec::new(["cat", "/proc/self/status"]);
    let blocking = run_blocking(&status, None).unwrap();
    assert_clean(&blocking.stdout.text(), "blocking");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt
        .block_on(run(&status, &CancellationToken::new()))
        .unwrap();
    assert_clean(&r.stdout.text(), "async");

    // Started from a confining thread (the sandbox's way), and by a full
    // fork (a `pre_exec` hook): the same.
    let hook = PreExec(Arc::new(|| Ok(())));
    let mut confined = status.clone();
    confined.confine_thread = Some(hook.clone());
    let r = run_blocking(&confined, None).unwrap();
    assert_clean(&r.stdout.text(), "confining thread");
    let mut forked = status.clone();
    forked.pre_exec = Some(hook);
    let r = run_blocking(&forked, None).unwrap();
    assert_clean(&r.stdout.text(), "pre_exec");
}
