//! Replaying a recorded 20-stage AI plan: the engine's own time (the run's
//! `duration_ms` in the results) and the whole process, median of 10 runs.
//!
//! `cargo bench -p pmpo --bench ai_replay` (PMPO_BENCH_N sets the stage count).
//! The cassette is recorded first against a model server on 127.0.0.1 that
//! runs inside this process; the replays contact nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pmpo_testkit::model_server::{ModelServer, openai};

fn plan(n: usize) -> String {
    let mut p = String::from(
        "specification:\n  artifact_name: bench\n  artifact_type: logo\n  constraints:\n    - {id: c1, description: Small SVG, severity: high}\nplan:\n  stages:\n",
    );
    for i in 0..n {
        p.push_str(&format!(
            "    - id: s{i}\n      requires_execution: false\n      with:\n        prompt: \"Draw icon {i} for {{{{ artifact_name }}}}. {{{{ constraints }}}}\"\n        output: out/{i}.svg\n        code_block: svg\n      outputs: [out/{i}.svg]\n"
        ));
    }
    p
}

fn pmpo(dir: &Path, args: &[&str]) -> (Duration, f64) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pmpo"))
        .args(args)
        .current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .expect("pmpo runs");
    let wall = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(".state/execution_results.json")).expect("results"),
    )
    .expect("results are JSON");
    (wall, results["duration_ms"].as_f64().unwrap_or(f64::NAN))
}

fn main() {
    let n: usize = std::env::var("PMPO_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let root = tempfile::tempdir().expect("tempdir");
    let rec = root.path().join("record");
    std::fs::create_dir_all(&rec).expect("dir");
    std::fs::write(rec.join("plan.yaml"), plan(n)).expect("plan");
    let server = ModelServer::start(|s, _| {
        openai(
            &format!(
                "```svg\n<svg xmlns=\"http://www.w3.org/2000/svg\"><title>{}</title></svg>\n```",
                s.prompt().len()
            ),
            "stop",
        )
    });
    let mut c = Command::new(env!("CARGO_BIN_EXE_pmpo"));
    let out = c
        .args([
            "execute",
            "--quiet",
            "plan.yaml",
            "--model",
            "m",
            "--record",
        ])
        .arg(root.path().join("cassette.jsonl"))
        .current_dir(&rec)
        .env("OPENAI_BASE_URL", server.openai_base())
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("record");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);

    let cassette = root.path().join("cassette.jsonl");
    let cassette = cassette.to_string_lossy();
    let mut walls = Vec::new();
    let mut engine = Vec::new();
    for round in 0..11 {
        let dir = root.path().join(format!("replay-{round}"));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("plan.yaml"), plan(n)).expect("plan");
        let (w, e) = pmpo(
            &dir,
            &["execute", "--quiet", "plan.yaml", "--replay", &cassette],
        );
        if round > 0 {
            walls.push(w.as_secs_f64() * 1000.0);
            engine.push(e);
        }
    }
    walls.sort_by(f64::total_cmp);
    engine.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    println!(
        "replaying a recorded {n}-stage AI plan (fresh workspace each run), median of {} runs:",
        walls.len()
    );
    println!(
        "  engine time (results duration_ms): {:7.2} ms  ({:.3} ms/stage; target: under 100 ms)",
        median(&engine),
        median(&engine) / n as f64
    );
    println!(
        "  whole process (spawn to exit):     {:7.2} ms",
        median(&walls)
    );
}
