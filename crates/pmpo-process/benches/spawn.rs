//! What the runner costs per process over a bare spawn-and-wait:
//! `cargo bench -p pmpo-process`. Runs `true` N times each way (median of 5
//! rounds) and prints microseconds per process.

use std::time::{Duration, Instant};

use pmpo_process::{ProcessSpec, run, run_blocking};

const N: usize = 200;
const ROUNDS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn per_process(f: &mut dyn FnMut()) -> Duration {
    let rounds = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..N {
                f();
            }
            t.elapsed() / N as u32
        })
        .collect();
    median(rounds)
}

fn main() {
    let bare = per_process(&mut || {
        let out = std::process::Command::new("true").output().unwrap();
        assert!(out.status.success());
    });
    let spec = ProcessSpec::new(["true"]);
    let blocking = per_process(&mut || {
        run_blocking(&spec, None).unwrap();
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let asynchronous = per_process(&mut || {
        rt.block_on(run(&spec, &token)).unwrap();
    });
    let with_output = ProcessSpec::new(["sh", "-c", "head -c 1000000 /dev/zero"]);
    let output = per_process(&mut || {
        let r = run_blocking(&with_output, None).unwrap();
        assert_eq!(r.stdout.total, 1_000_000);
    });
    let me = std::process::id();
    let scan = per_process(&mut || {
        pmpo_process::group_has_live_members(me);
    });
    println!("spawn+wait of `true`, median of {ROUNDS} rounds of {N}:");
    println!(
        "  std Command::output   {:>7.0} us",
        bare.as_secs_f64() * 1e6
    );
    println!(
        "  run_blocking          {:>7.0} us",
        blocking.as_secs_f64() * 1e6
    );
    println!(
        "  run (async)           {:>7.0} us",
        asynchronous.as_secs_f64() * 1e6
    );
    println!(
        "  run_blocking, 1 MB out {:>6.0} us",
        output.as_secs_f64() * 1e6
    );
    println!(
        "  one /proc group scan  {:>7.0} us",
        scan.as_secs_f64() * 1e6
    );
}
