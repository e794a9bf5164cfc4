//! Engine overhead per stage, against the bare cost of spawning the same processes.
//!
//! `cargo bench -p pmpo --bench overhead` (set PMPO_BENCH_N to change N, default 1000).
//! Prints: bare spawn time per stage, pmpo time per stage, and the difference
//! (the engine's own overhead including its writes to disk, and the sandbox:
//! each stage is confined), as medians of 5 runs. The sandbox's own figures
//! are printed by `bench/sandbox.sh`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn write_plan(dir: &Path, n: usize) {
    let mut plan = String::from(
        "specification:\n  artifact_name: bench\n  artifact_type: code\nplan:\n  stages:\n",
    );
    for i in 0..n {
        plan.push_str(&format!(
            "    - id: s{i}\n      with: {{command: [sh, -c, 'echo {i} > out/{i}.txt']}}\n      outputs: [out/{i}.txt]\n"
        ));
    }
    std::fs::write(dir.join("plan.yaml"), plan).unwrap();
}

fn bare(dir: &Path, n: usize) -> Duration {
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let t = Instant::now();
    for i in 0..n {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("echo {i} > out/{i}.txt"))
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
            .status;
        assert!(status.success());
    }
    t.elapsed()
}

fn engine(dir: &Path, extra: &[&str]) -> Duration {
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pmpo"))
        .args(["execute", "--quiet", "--jobs", "1"])
        .args(extra)
        .arg(dir.join("plan.yaml"))
        .output()
        .unwrap();
    let elapsed = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("PMPO_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let runs = 5;
    // Every run gets a fresh workspace (a first run: all files new) and is then
    // repeated in place (a re-run: files overwritten, logs appended).
    let root = tempfile::tempdir().unwrap();
    let mut fresh = (Vec::new(), Vec::new());
    let mut again = (Vec::new(), Vec::new());
    let mut noop = Vec::new();
    for round in 0..=runs {
        let b_dir = root.path().join(format!("bare-{round}"));
        let e_dir = root.path().join(format!("pmpo-{round}"));
        std::fs::create_dir_all(&b_dir).unwrap();
        std::fs::create_dir_all(&e_dir).unwrap();
        write_plan(&e_dir, n);
        let (b1, e1) = (bare(&b_dir, n), engine(&e_dir, &[]));
        let (b2, e2) = (bare(&b_dir, n), engine(&e_dir, &["--force"]));
        let cached = engine(&e_dir, &[]);
        if round > 0 {
            // round 0 is a warm-up
            fresh.0.push(b1);
            fresh.1.push(e1);
            again.0.push(b2);
            again.1.push(e2);
            noop.push(cached);
        }
    }
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
    println!("stages: {n} (`sh -c 'echo i > out/i.txt'`, output declared), median of {runs} runs");
    for (label, (b, e)) in [
        ("fresh workspace", fresh),
        ("re-run in place with --force", again),
    ] {
        let (b, e) = (median(b), median(e));
        println!("{label}:");
        println!(
            "  bare spawn:   {:8.1} ms total  {:.3} ms/stage",
            b.as_secs_f64() * 1000.0,
            per(b)
        );
        println!(
            "  pmpo execute: {:8.1} ms total  {:.3} ms/stage",
            e.as_secs_f64() * 1000.0,
            per(e)
        );
        println!(
            "  overhead:     {:+.3} ms/stage (target: under 1 ms)",
            per(e) - per(b)
        );
    }
    let noop = median(noop);
    println!(
        "no-op re-run (every stage CACHED): {:.1} ms total for {n} stages, whole process (target: under 150 ms for 1000)",
        noop.as_secs_f64() * 1000.0
    );
    evidence_cost(n, runs);
}

/// The evidence rule's own cost, in process: for a stage with one `validate:`
/// check on its output, the evidence built for it and the check's file work
/// (named files, digests) beyond the bare check; and the run-end evidence.
fn evidence_cost(n: usize, runs: usize) {
    use pmpo_engine::validation::{Evidence, OutputIndex, Seen, run_stage_checks};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let stages: Vec<pmpo_plan::Stage> = (0..n)
        .map(|i| {
            std::fs::write(dir.path().join(format!("out/{i}.txt")), format!("{i}\n")).unwrap();
            serde_json::from_value(serde_json::json!({
                "id": format!("s{i}"), "tool": "run", "with": {"command": ["true"]},
                "outputs": [format!("out/{i}.txt")],
                "validate": [{"check": "non_empty", "with": {"path": format!("out/{i}.txt")}}],
            }))
            .unwrap()
        })
        .collect();
    let ws = pmpo_store::Workspace::open(dir.path()).unwrap();
    let never = std::sync::atomic::AtomicBool::new(false);
    let done = |_: &str| {
        Some(Seen {
            status: Some(pmpo_engine::events::StageStatus::Completed),
            files: Vec::new(),
            started_at: None,
        })
    };
    let time = |f: &dyn Fn()| {
        median(
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .collect(),
        )
    };
    // Built once per run by the engine; included here per stage all the same.
    let build = time(&|| {
        let index = OutputIndex::new(&stages);
        for s in &stages {
            std::hint::black_box(Evidence::for_stage_checks(
                &ws,
                "r",
                &stages,
                &index,
                s,
                &[],
                done,
            ));
        }
    });
    let ruled = time(&|| {
        for s in &stages {
            std::hint::black_box(run_stage_checks(
                &ws,
                &s.id,
                &s.validate,
                &never,
                &Evidence::none(),
            ));
        }
    });
    let bare = time(&|| {
        for s in &stages {
            for c in &s.validate {
                std::hint::black_box(pmpo_checks::run_check(&ws, &c.check, &c.inputs));
            }
        }
    });
    let results: Vec<_> = stages
        .iter()
        .map(|s| pmpo_engine::results::StageResult::new(s, "run"))
        .collect();
    let end = time(&|| {
        std::hint::black_box(Evidence::of_run("r", &stages, &results));
    });
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
    println!(
        "evidence rule (a stage with one file check): {:.4} ms/stage ({:.4} evidence + {:.4} file digests), run end {:.5} ms/stage (target: under 0.1 ms)",
        per(build) + per(ruled).max(per(bare)) - per(bare),
        per(build),
        (per(ruled) - per(bare)).max(0.0),
        per(end)
    );
}
