//! Durable state: the cache, resume after kill -9, one writer per workspace,
//! damaged state files.

use common::*;
use pmpo_testkit as common;
use serde_json::Value;
use std::time::{Duration, Instant};

fn statuses(ws: &Ws) -> Vec<(String, String)> {
    let r = ws.read_json(".state/execution_results.json");
    r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn status_of(ws: &Ws, id: &str) -> String {
    statuses(ws).into_iter().find(|(s, _)| s == id).unwrap().1
}

// `count.txt` records which stages ran: an undeclared file, so these stages are not sandboxed.
const COUNTING: &str = "    - id: a\n      sandbox: false\n      with: {command: [sh, -c, 'echo a >> count.txt; echo a > a.out']}\n      outputs: [a.out]\n    - id: b\n      sandbox: false\n      depends_on: [a]\n      inputs: [src.txt]\n      with: {command: [sh, -c, 'echo b >> count.txt; cat src.txt > b.out']}\n      outputs: [b.out]\n    - id: c\n      sandbox: false\n      cache: false\n      with: {command: [sh, -c, 'echo c >> count.txt']}\n";

#[test]
fn identical_stages_are_cached_until_something_changes() {
    let ws = Ws::new();
    ws.write("src.txt", "v1\n");
    ws.plan(COUNTING);
    ws.run_ok(&["execute", "plan.yaml", "-j1"]);
    assert_eq!(ws.read("count.txt"), "a\nb\nc\n");

    // Nothing changed: a and b are reused, c (cache: false) runs.
    let r = ws.run_ok(&["execute", "plan.yaml", "-j1", "--json"]);
    assert_eq!(ws.read("count.txt"), "a\nb\nc\nc\n");
    assert_eq!(status_of(&ws, "a"), "CACHED");
    assert_eq!(status_of(&ws, "b"), "CACHED");
    assert_eq!(status_of(&ws, "c"), "COMPLETED");
    let res = r.json();
    assert_eq!(res["summary"]["cached"], 2);
    assert!(res["stages"][0]["reused_from"].is_string());
    assert_eq!(
        res["generated_files"].as_array().unwrap().len(),
        2,
        "cached files are still reported (they were verified)"
    );

    // A declared input changes: b runs again, a stays cached.
    ws.write("src.txt", "v2\n");
    ws.run_ok(&["execute", "plan.yaml", "-j1"]);
    assert_eq!(ws.read("count.txt"), "a\nb\nc\nc\nb\nc\n");
    assert_eq!(ws.read("b.out"), "v2\n");

    // An output was tampered with: its stage runs again.
    ws.write("a.out", "tampered\n");
    ws.run_ok(&["execute", "plan.yaml", "-j1"]);
    assert_eq!(status_of(&ws, "a"), "COMPLETED");
    assert_eq!(ws.read("a.out"), "a\n");
    // b depends on a, whose output is the same again: still cached.
    assert_eq!(status_of(&ws, "b"), "CACHED");

    // --force STAGE and --force.
    assert_eq!(
        ws.run(&["execute", "plan.yaml", "-j1", "--force=b"]).code,
        0
    );
    assert_eq!(
        (status_of(&ws, "a"), status_of(&ws, "b")),
        ("CACHED".into(), "COMPLETED".into())
    );
    ws.run_ok(&["execute", "plan.yaml", "-j1", "--force"]);
    assert_eq!(
        (status_of(&ws, "a"), status_of(&ws, "b")),
        ("COMPLETED".into(), "COMPLETED".into())
    );
    let r = ws.run(&["execute", "plan.yaml", "-j1", "--force=zz"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "--force names `zz`");
}

#[test]
fn a_script_the_command_runs_is_part_of_the_cache_key() {
    let ws = Ws::new();
    ws.write("gen.sh", "echo one > gen.out\n");
    ws.plan("    - id: gen\n      with: {command: [sh, gen.sh]}\n      outputs: [gen.out]\n");
    ws.run_ok(&["execute", "plan.yaml"]);
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status_of(&ws, "gen"), "CACHED");
    ws.write("gen.sh", "echo two > gen.out\n");
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status_of(&ws, "gen"), "COMPLETED");
    assert_eq!(ws.read("gen.out"), "two\n");
}

#[test]
fn missing_declared_input_fails_the_stage() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      inputs: [nope.txt]\n      with: {command: [echo]}\n");
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["errors"][0]["kind"], "missing_input");
}

/// A tiny deterministic generator, so a failing trial can be replayed from its seed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn kill9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

#[test]
fn kill_dash_nine_at_random_moments_then_resume() {
    const STAGES: usize = 12;
    let mut plan = String::new();
    for i in 0..STAGES {
        let dep = if i > 0 {
            format!("      depends_on: [s{}]\n", i - 1)
        } else {
            String::new()
        };
        plan.push_str(&format!(
            "    - id: s{i}\n      sandbox: false\n{dep}      with: {{command: [sh, -c, 'echo s{i} >> counter.txt; sleep 0.05; echo s{i} > out/s{i}.txt']}}\n      outputs: [out/s{i}.txt]\n"
        ));
    }
    let seed = std::env::var("PMPO_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = Lcg(seed);
    let trials = 24;
    let mut killed_mid_run = 0;
    for trial in 0..trials {
        let ws = Ws::new();
        std::fs::create_dir_all(ws.p("out")).unwrap();
        ws.plan(&plan);
        let mut child = bin()
            .args(["execute", "plan.yaml", "-q"])
            .current_dir(ws.path())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.next() % 500);
        let t = Instant::now();
        while t.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        kill9(child.id());
        let _ = child.wait();
        // Let an orphaned stage process of the killed run finish its few milliseconds.
        std::thread::sleep(Duration::from_millis(80));

        let r = ws.run(&["execute", "plan.yaml"]);
        let ctx = format!("seed {seed}, trial {trial}, killed after {delay:?}");
        assert_eq!(r.code, 0, "{ctx}: resume failed:\n{}", r.stderr);
        // Every output exists; every state file parses.
        for i in 0..STAGES {
            assert_eq!(
                ws.read(&format!("out/s{i}.txt")),
                format!("s{i}\n"),
                "{ctx}"
            );
        }
        let results = ws.read_json(".state/execution_results.json");
        assert_eq!(results["status"], "completed", "{ctx}");
        for file in [".state/patch_ledger.jsonl", "logs/executor.jsonl"] {
            for line in ws.read(file).lines() {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("{ctx}: {file} has a bad line ({e}): {line}"));
            }
        }
        ws.read_json("artifact_manifest.json");
        // Each completed stage ran once; only the one in flight may have run twice.
        let counter = ws.read("counter.txt");
        let mut twice = 0;
        for i in 0..STAGES {
            let n = counter.lines().filter(|l| *l == format!("s{i}")).count();
            assert!(
                (1..=2).contains(&n),
                "{ctx}: s{i} ran {n} times:\n{counter}"
            );
            if n == 2 {
                twice += 1;
            }
        }
        assert!(
            twice <= 1,
            "{ctx}: more than one stage ran twice:\n{counter}"
        );
    }
    assert!(
        killed_mid_run >= trials / 2,
        "seed {seed}: only {killed_mid_run} kills landed mid-run"
    );
}

/// A stage that ended while another still runs is on record before pmpo
/// waits for the other: a kill -9 then does not make it run again.
#[test]
fn a_stage_that_ended_is_on_record_while_another_still_runs() {
    for jobs in ["2", "3"] {
        let ws = Ws::new();
        ws.plan(
            "    - id: fast\n      sandbox: false\n      with: {command: [sh, -c, 'echo fast >> counter.txt; echo f > fast.txt']}\n      outputs: [fast.txt]\n    - id: slow\n      sandbox: false\n      with: {command: [sh, -c, 'echo slow >> counter.txt; sleep 1.5; echo s > slow.txt']}\n      outputs: [slow.txt]\n",
        );
        let mut child = bin()
            .args(["execute", "plan.yaml", "-q", "--jobs", jobs])
            .current_dir(ws.path())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !(ws.p("fast.txt").exists() && ws.p("counter.txt").exists()) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the stages never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // `fast` has ended; `slow` sleeps.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended too soon"
        );
        kill9(child.id());
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(1600));
        let r = ws.run(&["execute", "plan.yaml", "--json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let counter = ws.read("counter.txt");
        assert_eq!(
            counter.lines().filter(|l| *l == "fast").count(),
            1,
            "--jobs {jobs}: `fast` ran again after the kill:\n{counter}"
        );
        assert_eq!(
            status_of(&ws, "fast"),
            "COMPLETED",
            "--jobs {jobs}: {}",
            r.stdout
        );
    }
}

#[test]
fn resume_by_run_id_reports_changed_stages() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      sandbox: false\n      with: {command: [sh, -c, 'echo a >> n.txt']}\n    - id: b\n      depends_on: [a]\n      with: {command: [sh, -c, 'exit 1']}\n");
    assert_eq!(ws.run(&["execute", "plan.yaml"]).code, 1);
    let run_id = ws.read_json(".state/execution_results.json")["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Fix b, then resume that run: a is not run again, b runs, and the change is named.
    ws.plan("    - id: a\n      sandbox: false\n      with: {command: [sh, -c, 'echo a >> n.txt']}\n    - id: b\n      depends_on: [a]\n      with: {command: [sh, -c, 'exit 0']}\n");
    let r = ws.run_ok(&["resume", &run_id]);
    assert!(
        r.stderr.contains(&format!("continuing run {run_id}")),
        "{}",
        r.stderr
    );
    assert_contains(&r.stderr, "stage(s) b changed");
    assert_eq!(ws.read("n.txt"), "a\n");
    let res = ws.read_json(".state/execution_results.json");
    assert_eq!(res["run_id"], run_id.as_str());
    assert_eq!(status_of(&ws, "a"), "COMPLETED");

    let r = ws.run(&["resume", "no-such-run"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "there is no run `no-such-run`");

    let r = ws.run_ok(&["status", "--json"]);
    assert_eq!(r.json()["runs"][0]["status"], "completed");
}

#[test]
fn restore_and_gc_refuse_a_workspace_a_run_holds() {
    let ws = Ws::new();
    ws.write("log.txt", "before\n");
    ws.plan("    - id: slow\n      cache: false\n      with: {command: [sh, -c, 'echo start >> log.txt; sleep 60']}\n      outputs: [log.txt]\n");
    let mut run = bin()
        .args(["execute", "plan.yaml", "-q"])
        .current_dir(ws.path())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !ws.read("log.txt").contains("start") && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for cmd in [&["restore", "log.txt"][..], &["gc"][..]] {
        let refused = ws.run(cmd);
        assert_eq!(refused.code, 4, "{cmd:?}: {}", refused.stderr);
        assert_contains(&refused.stderr, &format!("pid {}", run.id()));
        assert_contains(&refused.stderr, "wait for the running pmpo to finish");
    }
    // Nothing was restored under the running stage.
    assert_eq!(ws.read("log.txt"), "before\nstart\n");
    // Ctrl-C: the run stops its stage's processes and ends as cancelled.
    pmpo_testkit::refine::interrupt(&run);
    assert_eq!(run.wait().unwrap().code(), Some(130));
}

#[test]
fn two_writers_never_run_at_once() {
    let ws = Ws::new();
    ws.plan("    - id: slow\n      cache: false\n      with: {command: [sh, -c, 'echo start >> log.txt; sleep 1.5; echo end >> log.txt']}\n      outputs: [log.txt]\n");
    let mut first = bin()
        .args(["execute", "plan.yaml", "-q"])
        .current_dir(ws.path())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !ws.p("log.txt").exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = ws.run(&["execute", "plan.yaml"]);
    assert_eq!(second.code, 4, "{}", second.stderr);
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        second.stderr
    );
    assert_contains(&second.stderr, "--wait");
    let live = ws.run(&["status"]);
    assert!(
        live.stdout.contains(&format!("live: pid {}", first.id())),
        "{}",
        live.stdout
    );
    // --wait queues behind the holder.
    let waited = ws.run(&["execute", "plan.yaml", "--wait", "-q"]);
    assert_eq!(waited.code, 0, "{}", waited.stderr);
    assert!(first.wait().unwrap().success());
    assert_eq!(
        ws.read("log.txt"),
        "start\nend\nstart\nend\n",
        "the runs overlapped"
    );
}

#[test]
fn a_lock_left_by_a_killed_process_is_taken_over() {
    let ws = Ws::new();
    ws.plan("    - id: slow\n      sandbox: false\n      with: {command: [sh, -c, 'sleep 5']}\n");
    let mut child = bin()
        .args(["execute", "plan.yaml", "-q"])
        .current_dir(ws.path())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    kill9(child.id());
    let _ = child.wait();
    let st = ws.run(&["status"]);
    assert!(
        st.stdout.contains("interrupted") && st.stdout.contains("pmpo resume"),
        "{}",
        st.stdout
    );
    ws.plan("    - id: slow\n      sandbox: false\n      with: {command: [sh, -c, 'true']}\n");
    let r = ws.run_ok(&["execute", "plan.yaml"]);
    assert_contains(&r.stderr, "did not finish");
}

#[test]
fn damaged_state_gets_a_clear_error_and_is_left_alone() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      with: {command: [echo]}\n");
    ws.run_ok(&["execute", "plan.yaml"]);
    std::fs::write(
        ws.p(".state/pmpo.db"),
        b"this is not a database, just text that is long enough to look like a header...........",
    )
    .unwrap();
    let _ = std::fs::remove_file(ws.p(".state/pmpo.db-wal"));
    let _ = std::fs::remove_file(ws.p(".state/pmpo.db-shm"));
    let before = std::fs::read(ws.p(".state/pmpo.db")).unwrap();
    let r = ws.run(&["execute", "plan.yaml"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(".state/pmpo.db") && r.stderr.contains("pmpo doctor"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read(ws.p(".state/pmpo.db")).unwrap(),
        before,
        "the damaged file was changed"
    );
}

#[test]
fn gc_prunes_only_old_backups_and_reports_sizes() {
    let ws = Ws::new();
    ws.plan("    - id: w\n      cache: false\n      with: {command: [sh, -c, 'date +%N > f.txt']}\n      outputs: [f.txt]\n");
    for _ in 0..4 {
        ws.run_ok(&["execute", "plan.yaml", "-q"]);
    }
    ws.write("mine.txt", "user data\n");
    let r = ws.run_ok(&["gc", "--keep-runs", "1", "--json"]);
    let j = r.json();
    assert!(j["backups_removed"].as_u64().unwrap() >= 2, "{j}");
    assert!(j["bytes_freed"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(ws.read("mine.txt"), "user data\n");
    assert!(ws.p("f.txt").is_file());
}

#[test]
fn a_resumed_run_stops_what_the_killed_run_left_running() {
    let ws = Ws::new();
    ws.plan(
        "    - id: long\n      with: {command: [sh, -c, 'sleep 34.6; echo late > late.txt']}\n      outputs: [late.txt]\n",
    );
    let mut child = bin()
        .args(["execute", "plan.yaml", "-q"])
        .current_dir(ws.path())
        .spawn()
        .unwrap();
    let alive = || {
        std::process::Command::new("pgrep")
            .args(["-f", "sleep 34.6"])
            .output()
            .unwrap()
            .status
            .success()
    };
    let t = Instant::now();
    while !alive() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    kill9(child.id());
    let _ = child.wait();
    assert!(alive(), "the stage process should outlive a killed pmpo");
    ws.plan("    - id: long\n      with: {command: [sh, -c, 'echo quick > late.txt']}\n      outputs: [late.txt]\n");
    let r = ws.run_ok(&["execute", "plan.yaml"]);
    assert!(
        r.stderr.contains("stopped 1 process(es)") || r.stderr.contains("stopped 2 process(es)"),
        "{}",
        r.stderr
    );
    assert!(!alive(), "the orphan of the killed run is still running");
    assert_eq!(ws.read("late.txt"), "quick\n");
}
