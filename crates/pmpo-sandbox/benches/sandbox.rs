//! The sandbox's own costs: building a stage's policy and Landlock ruleset,
//! entering it in the child (timed inside a forked child), and the detection
//! fallback's two snapshots and diff on workspaces of 1,000 to 50,000 files.
//!
//! `cargo bench -p pmpo-sandbox --bench sandbox`

use std::time::{Duration, Instant};

use pmpo_sandbox::snapshot::Snapshot;
use pmpo_sandbox::{Prepared, policy, usable_abi};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Forks; the child times `enter` and writes the nanoseconds to a pipe.
fn enter_in_child(fd: i32) -> Duration {
    let mut p = [0i32; 2];
    // SAFETY: plain system calls; the child only calls async-signal-safe
    // functions (clock_gettime, prctl, landlock_restrict_self, write, _exit).
    unsafe {
        assert_eq!(libc::pipe(p.as_mut_ptr()), 0);
        let pid = libc::fork();
        if pid == 0 {
            let mut a = std::mem::zeroed::<libc::timespec>();
            let mut b = std::mem::zeroed::<libc::timespec>();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut a);
            let ok = pmpo_sandbox::enter(fd).is_ok();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut b);
            let ns: u64 = if ok {
                ((b.tv_sec - a.tv_sec) as i64 * 1_000_000_000 + (b.tv_nsec - a.tv_nsec) as i64)
                    as u64
            } else {
                u64::MAX
            };
            libc::write(p[1], &ns as *const u64 as *const libc::c_void, 8);
            libc::_exit(0);
        }
        let mut ns = 0u64;
        libc::read(p[0], &mut ns as *mut u64 as *mut libc::c_void, 8);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        libc::close(p[0]);
        libc::close(p[1]);
        assert_ne!(ns, u64::MAX, "entering the ruleset failed");
        Duration::from_nanos(ns)
    }
}

fn main() {
    let reps = 300;
    let ws = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(ws.path()).unwrap();
    std::fs::create_dir_all(root.join("out")).unwrap();
    std::fs::write(root.join("out/a.txt"), "a").unwrap();
    let outputs: Vec<String> = vec![
        "out/a.txt".into(),
        "out/new.txt".into(),
        "dist/*.png".into(),
    ];
    let abi = usable_abi();
    println!("sandbox (Landlock ABI {abi} on this kernel), medians:");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    if abi >= pmpo_sandbox::MIN_FS_ABI {
        let mut prep = Vec::new();
        let mut grants = 0;
        for _ in 0..reps {
            let t = Instant::now();
            let pol = policy::for_outputs(&root, &outputs, None).unwrap();
            let p = Prepared::new(&pol, abi).unwrap();
            prep.push(t.elapsed());
            grants = pol.grants.len();
            drop(p);
        }
        let pol = policy::for_outputs(&root, &outputs, None).unwrap();
        let prepared = Prepared::new(&pol, abi).unwrap();
        let enter = median(
            (0..reps)
                .map(|_| enter_in_child(prepared.raw_fd()))
                .collect(),
        );
        let prep = median(prep);
        println!(
            "  policy + ruleset in pmpo: {:7.1} µs/stage ({grants} grants)",
            us(prep)
        );
        println!(
            "  entering it in the child: {:7.1} µs/stage (no_new_privs + landlock_restrict_self)",
            us(enter)
        );
        println!(
            "  Landlock total:           {:.3} ms/stage (target: under 0.2 ms)",
            (us(prep) + us(enter)) / 1000.0
        );
    } else {
        println!("  no usable Landlock here: only the detection figures");
    }
    for files in [1_000usize, 10_000, 50_000] {
        let dir = tempfile::tempdir().unwrap();
        // 100 files per directory, two levels deep.
        for i in 0..files {
            let d = dir
                .path()
                .join(format!("d{}/e{}", i / 1000, (i / 100) % 10));
            if i % 100 == 0 {
                std::fs::create_dir_all(&d).unwrap();
            }
            std::fs::write(d.join(format!("f{i}.txt")), "x").unwrap();
        }
        let mut v = Vec::new();
        for _ in 0..9 {
            let t = Instant::now();
            let before = Snapshot::take(dir.path(), &[]);
            let after = Snapshot::take(dir.path(), &[]);
            assert!(before.diff(&after).is_empty());
            v.push(t.elapsed());
        }
        let m = median(v);
        println!(
            "  detection, {files:>6} files: {:7.2} ms/stage (two snapshots and their diff; target under 20 ms at 10,000), {:.2} µs/file",
            m.as_secs_f64() * 1000.0,
            m.as_secs_f64() * 1e6 / files as f64
        );
    }
}
