//! The runner against real processes (sh, sleep, setsid), both faces.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use pmpo_process::{
    PreExec, ProcessResult, ProcessSpec, Spill, Termination, live_groups_contain, process_alive,
    run, run_blocking,
};
use tokio_util::sync::CancellationToken;

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new(["sh", "-c", script])
}

/// The pids a script printed, one a line.
fn pids(r: &ProcessResult) -> Vec<u32> {
    r.stdout
        .text()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn assert_all_gone(r: &ProcessResult) {
    let pids = pids(r);
    assert!(!pids.is_empty(), "the script printed no pid: {r:?}");
    for pid in pids {
        assert!(!process_alive(pid), "process {pid} was left running");
    }
    assert!(
        !process_alive(r.pid),
        "the leader {} was left running",
        r.pid
    );
    assert!(
        !live_groups_contain(r.pid),
        "group {} still registered",
        r.pid
    );
}

async fn run_async(spec: &ProcessSpec) -> ProcessResult {
    run(spec, &CancellationToken::new()).await.unwrap()
}

#[tokio::test]
async fn exit_codes_and_output_come_back() {
    let r = run_async(&sh("echo out; echo err >&2; exit 3")).await;
    assert_eq!(r.termination, Termination::Exited(3));
    assert_eq!(r.stdout.text(), "out\n");
    assert_eq!(r.stderr.text(), "err\n");
    assert_eq!(r.note, None);
    let b = run_blocking(&sh("echo out; exit 0"), None).unwrap();
    assert_eq!(b.termination, Termination::Exited(0));
    assert_eq!(b.stdout.text(), "out\n");
}

#[tokio::test]
async fn a_signal_death_is_reported_as_such() {
    let r = run_async(&sh("kill -9 $$")).await;
    assert_eq!(r.termination, Termination::Signaled(libc::SIGKILL));
    let b = run_blocking(&sh("kill -TERM $$"), None).unwrap();
    assert_eq!(b.termination, Termination::Signaled(libc::SIGTERM));
}

#[tokio::test]
async fn a_program_that_cannot_start_is_an_error_not_a_panic() {
    let e = run_async_err(&ProcessSpec::new(["/no/such/program"])).await;
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    let e = run_blocking(&ProcessSpec::new(Vec::<String>::new()), None).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

async fn run_async_err(spec: &ProcessSpec) -> std::io::Error {
    run(spec, &CancellationToken::new()).await.unwrap_err()
}

#[tokio::test]
async fn a_timeout_kills_the_grandchildren_too() {
    let spec = ProcessSpec {
        timeout: Some(Duration::from_millis(300)),
        ..sh("sleep 100 & echo $!; sleep 100")
    };
    let t = Instant::now();
    let r = run_async(&spec).await;
    assert_eq!(r.termination, Termination::TimedOut);
    // Ended by the gentle signal first.
    assert_eq!(r.exit, Some(Termination::Signaled(libc::SIGTERM)));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_all_gone(&r);

    let t = Instant::now();
    let b = run_blocking(&spec, None).unwrap();
    assert_eq!(b.termination, Termination::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_all_gone(&b);
}

#[tokio::test]
async fn what_a_finished_command_left_running_in_its_group_is_stopped() {
    let r = run_async(&sh("sleep 100 & echo $!")).await;
    assert_eq!(r.termination, Termination::Exited(0));
    assert_all_gone(&r);
    let b = run_blocking(&sh("sleep 100 & echo $!"), None).unwrap();
    assert_eq!(b.termination, Termination::Exited(0));
    assert_all_gone(&b);
}

#[tokio::test]
async fn a_cancel_stops_the_group_at_once() {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.cancel();
    });
    let t = Instant::now();
    let r = run(&sh("sleep 100 & echo $!; sleep 100"), &cancel)
        .await
        .unwrap();
    assert_eq!(r.termination, Termination::Cancelled);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_all_gone(&r);

    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        f.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let t = Instant::now();
    let b = run_blocking(&sh("sleep 100 & echo $!; sleep 100"), Some(&flag)).unwrap();
    assert_eq!(b.termination, Termination::Cancelled);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_all_gone(&b);
}

#[tokio::test]
async fn dropping_the_future_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let script = format!(
        "sleep 100 & echo $! > {p}; echo $$ >> {p}; sleep 100",
        p = pidfile.display()
    );
    let spec = sh(&script);
    let never = CancellationToken::new();
    let fut = run(&spec, &never);
    let r = tokio::time::timeout(Duration::from_millis(400), fut).await;
    assert!(r.is_err(), "the run should still be going");
    let text = std::fs::read_to_string(&pidfile).unwrap();
    let pids: Vec<u32> = text.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(pids.len(), 2, "{text}");
    // SIGKILL takes a moment to land.
    let until = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|p| process_alive(*p)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in pids {
        assert!(!process_alive(p), "process {p} outlived the dropped run");
        assert!(!live_groups_contain(p));
    }
}

#[tokio::test]
async fn a_child_that_ignores_sigterm_is_sigkilled_after_the_grace() {
    let spec = ProcessSpec {
        timeout: Some(Duration::from_millis(200)),
        kill_grace: Duration::from_millis(700),
        ..sh("trap '' TERM; echo $$; while :; do sleep 0.05; done")
    };
    let t = Instant::now();
    let r = run_async(&spec).await;
    let took = t.elapsed();
    assert_eq!(r.termination, Termination::TimedOut);
    assert_eq!(r.exit, Some(Termination::Signaled(libc::SIGKILL)));
    assert!(
        took >= Duration::from_millis(850),
        "{took:?}: no grace given"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_all_gone(&r);

    // One that does end on SIGTERM does not wait out the grace.
    let spec = ProcessSpec {
        timeout: Some(Duration::from_millis(200)),
        kill_grace: Duration::from_secs(5),
        ..sh("echo $$; sleep 100")
    };
    let t = Instant::now();
    let b = run_blocking(&spec, None).unwrap();
    assert_eq!(b.termination, Termination::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_all_gone(&b);

    let spec = ProcessSpec {
        timeout: Some(Duration::from_millis(200)),
        kill_grace: Duration::from_millis(700),
        ..sh("trap '' TERM; echo $$; while :; do sleep 0.05; done")
    };
    let t = Instant::now();
    let b = run_blocking(&spec, None).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(850));
    assert_all_gone(&b);
}

#[tokio::test]
async fn the_capture_is_capped_and_counted_and_spilled() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("stdout.whole");
    let spec = ProcessSpec {
        capture_limit: 1000,
        capture_tail: 100,
        spill_stdout: Some(Spill::to_path(&whole)),
        spill_stderr: Some(Spill::to_path(dir.path().join("stderr.whole"))),
        ..sh("seq 1 100000; echo small >&2")
    };
    let expected: Vec<u8> = (1..=100_000)
        .flat_map(|i: u32| format!("{i}\n").into_bytes())
        .collect();
    for r in [run_async(&spec).await, run_blocking(&spec, None).unwrap()] {
        assert_eq!(r.termination, Termination::Exited(0));
        assert_eq!(r.stdout.total, expected.len() as u64);
        assert_eq!(r.stdout.head, &expected[..1000]);
        assert_eq!(r.stdout.tail, &expected[expected.len() - 100..]);
        assert!(r.stdout.truncated());
        assert_eq!(r.stdout.last_line().as_deref(), Some("100000"));
        assert_eq!(
            r.stdout.whole_file.as_deref(),
            Some(whole.to_str().unwrap())
        );
        assert_eq!(std::fs::read(&whole).unwrap(), expected);
        // A short stream makes no spill file.
        assert_eq!(r.stderr.text(), "small\n");
        assert_eq!(r.stderr.whole_file, None);
        assert!(!dir.path().join("stderr.whole").exists());
    }
}

#[tokio::test]
async fn stdin_is_fed_and_closed() {
    let data: Vec<u8> = (0..300_000u32)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let spec = ProcessSpec {
        stdin: Some(data.clone()),
        ..sh("wc -c")
    };
    for r in [run_async(&spec).await, run_blocking(&spec, None).unwrap()] {
        assert_eq!(r.stdout.text().trim(), data.len().to_string());
    }
    // A child that never reads a large stdin does not block us.
    let spec = ProcessSpec {
        stdin: Some(data),
        ..sh("exit 4")
    };
    assert_eq!(run_async(&spec).await.termination, Termination::Exited(4));
    // No stdin: it is /dev/null, so a reader sees its end at once.
    let r = run_blocking(&sh("cat; echo done"), None).unwrap();
    assert_eq!(r.stdout.text(), "done\n");
}

#[tokio::test]
async fn the_environment_can_be_set_thinned_and_cleared() {
    assert!(
        std::env::var_os("HOME").is_some(),
        "the test needs HOME set"
    );
    let spec = ProcessSpec {
        env_remove: vec!["HOME".into()],
        env: vec![("MINE".into(), "mine".into())],
        ..sh("echo \"[$HOME][$MINE]\"")
    };
    assert_eq!(run_async(&spec).await.stdout.text(), "[][mine]\n");
    let spec = ProcessSpec {
        env_clear: true,
        env: vec![("ONLY".into(), "1".into())],
        ..ProcessSpec::new(["/usr/bin/env"])
    };
    assert_eq!(run_blocking(&spec, None).unwrap().stdout.text(), "ONLY=1\n");
    let spec = ProcessSpec {
        cwd: Some(std::env::temp_dir()),
        ..sh("pwd -P")
    };
    assert_eq!(
        run_async(&spec).await.stdout.text().trim(),
        std::fs::canonicalize(std::env::temp_dir())
            .unwrap()
            .to_str()
            .unwrap()
    );
}

#[tokio::test]
async fn the_pre_exec_hook_runs_in_the_child_and_can_refuse() {
    let spec = ProcessSpec {
        pre_exec: Some(PreExec(Arc::new(|| {
            // SAFETY: umask(2) is async-signal-safe.
            unsafe { libc::umask(0o077) };
            Ok(())
        }))),
        ..sh("umask")
    };
    assert_eq!(run_async(&spec).await.stdout.text().trim(), "0077");
    let spec = ProcessSpec {
        pre_exec: Some(PreExec(Arc::new(|| {
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        }))),
        ..sh("echo should not run")
    };
    let e = run_blocking(&spec, None).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
}

/// A thread-level confinement (here `no_new_privs`, which a Landlock
/// domain needs and which children inherit) reaches the program through the
/// thread that starts it, and nothing else: the calling thread is untouched.
#[tokio::test]
async fn the_confining_thread_passes_its_restrictions_to_the_program_only() {
    let nnp = |status: &str| {
        status
            .lines()
            .find(|l| l.starts_with("NoNewPrivs:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let spec = ProcessSpec {
        confine_thread: Some(PreExec(Arc::new(|| {
            // SAFETY: prctl with constant arguments; affects the calling thread.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }))),
        ..sh("grep NoNewPrivs /proc/self/status")
    };
    for r in [run_async(&spec).await, run_blocking(&spec, None).unwrap()] {
        assert_eq!(nnp(&r.stdout.text()), "1", "{:?}", r.stdout.text());
    }
    let me = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert_eq!(nnp(&me), "0");
    let refused = ProcessSpec {
        confine_thread: Some(PreExec(Arc::new(|| {
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        }))),
        ..sh("echo should not run")
    };
    let e = run_blocking(&refused, None).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
}

#[tokio::test]
async fn an_escaped_process_holding_the_pipes_does_not_hang_us() {
    // `setsid` leaves the group; the escapee keeps stdout and stderr open.
    // (The pause lets setsid act before the leader ends and its group is stopped.)
    let script = "setsid sleep 30 & echo $!; sleep 0.3; echo before";
    let spec = ProcessSpec {
        pipes_grace: Duration::from_millis(500),
        ..sh(script)
    };
    let t = Instant::now();
    let r = run_async(&spec).await;
    let took = t.elapsed();
    assert_eq!(r.termination, Termination::Exited(0));
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(
        r.note
            .as_deref()
            .unwrap_or("")
            .contains("left the process group"),
        "{r:?}"
    );
    // What was written before is kept.
    assert!(r.stdout.text().contains("before"));
    let escapee = pids(&r)[0];

    let t = Instant::now();
    let b = run_blocking(&spec, None).unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(b.note.is_some());
    let escapee2 = pids(&b)[0];
    for p in [escapee, escapee2] {
        // SAFETY: our own test's escapee, by the pid it printed.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
}
