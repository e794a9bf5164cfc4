//! The cost of the loop's evidence rule per stage, printed as figures (no
//! assertion on time; target: under 0.1 ms per stage).
//!
//! For a plan of N stages, each declaring one output (every fourth a glob of
//! eight files), with one check per stage reading that output: read the
//! run's evidence (`RunEvidence::of_run`), then for every check find the
//! paths it reads, whether each is proven and the files it rests on, as
//! Reflect does. Once with a completed run, once with one whose first stage
//! failed (every other stage skipped).
//!
//! Run: `cargo bench -p pmpo-loop --bench evidence`

use std::time::{Duration, Instant};

use pmpo_loop::evidence::RunEvidence;
use serde_json::{Value, json};

fn plan_and_results(n: usize, failed: bool) -> (Value, Value, Vec<Value>) {
    let mut stages = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    let mut checks = Vec::with_capacity(n);
    for i in 0..n {
        let (output, files, reference): (String, Vec<String>, String) = if i % 4 == 3 {
            (
                format!("dist/s{i}/icon-*.png"),
                (0..8).map(|k| format!("dist/s{i}/icon-{k}.png")).collect(),
                format!("dist/s{i}/icon-{{size}}.png"),
            )
        } else {
            let f = format!("dist/s{i}.html");
            (f.clone(), vec![f.clone()], f)
        };
        stages.push(json!({"id": format!("s{i}"), "outputs": [output]}));
        let status = match (failed, i) {
            (false, _) => "COMPLETED",
            (true, 0) => "FAILED",
            (true, _) => "SKIPPED",
        };
        let recorded: Vec<Value> = if status == "COMPLETED" {
            files
                .iter()
                .map(|p| json!({"path": p, "blake3": format!("{:064x}", i)}))
                .collect()
        } else {
            Vec::new()
        };
        results.push(json!({"id": format!("s{i}"), "status": status, "reason": "upstream", "files": recorded}));
        checks
            .push(json!({"constraint_id": format!("c{i}"), "with": {"path": reference, "min": 1}}));
    }
    let plan = json!({"plan": {"stages": stages, "validation_plan": checks.clone()}});
    let status = if failed { "failed" } else { "completed" };
    let results = json!({"run_id": "r1", "status": status, "stages": results});
    (plan, results, checks)
}

fn reflect_once(plan: &Value, results: &Value, checks: &[Value]) -> usize {
    let ev = RunEvidence::of_run(plan, results, "r1");
    let mut n = 0;
    for k in checks {
        let (files, unproven) = ev.assess(&k["with"]);
        n += files.len() + unproven.len();
    }
    n
}

fn main() {
    for n in [10usize, 100, 1000] {
        for failed in [false, true] {
            let (plan, results, checks) = plan_and_results(n, failed);
            let mut times: Vec<Duration> = (0..7)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(reflect_once(&plan, &results, &checks));
                    t.elapsed()
                })
                .collect();
            times.sort();
            let median = times[times.len() / 2];
            println!(
                "evidence rule, {n:>5} stages, run {:<9}: {:>8.3} ms in all, {:.4} ms per stage (median of 7; target < 0.1 ms per stage)",
                if failed { "failed" } else { "completed" },
                median.as_secs_f64() * 1000.0,
                median.as_secs_f64() * 1000.0 / n as f64
            );
        }
    }
}
