//! `pmpo execute` on real plans in temp workspaces, checked against the disk.

use common::*;
use pmpo_testkit as common;
use serde_json::Value;

/// Every file the results claim exists on disk with the claimed size and hash.
fn assert_claims_hold(ws: &Ws, results: &Value) {
    for f in results["generated_files"].as_array().unwrap() {
        let path = ws.p(f["path"].as_str().unwrap());
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("claimed file {} is not there: {e}", path.display()));
        assert_eq!(bytes.len() as u64, f["size"].as_u64().unwrap());
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            f["blake3"].as_str().unwrap()
        );
    }
    for f in results["manifest"]["files"].as_array().unwrap() {
        assert!(
            ws.p(f["path"].as_str().unwrap()).is_file(),
            "manifest names a missing file: {f}"
        );
    }
}

#[test]
fn hello_example_runs_and_results_match_the_disk() {
    let ws = Ws::new();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/hello/plan.yaml"
    ))
    .unwrap();
    ws.write("plan.yaml", &example);
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let results = r.json();
    assert_eq!(
        results,
        ws.read_json(".state/execution_results.json"),
        "--json prints what is persisted"
    );
    assert_eq!(results["status"], "completed");
    assert_eq!(results["summary"]["completed"], 3);
    assert_eq!(ws.read("out/report.txt"), "The greeting has 3 words.\n");
    assert_eq!(stage(&results, "count")["outputs"]["words"], 3);
    assert_claims_hold(&ws, &results);
    for key in [
        "generated_files",
        "manifest",
        "logs",
        "validation_outputs",
        "errors",
    ] {
        assert!(results.get(key).is_some(), "execution_results lacks {key}");
    }
    assert_mentions(&results, "logs", "| `count` | run | COMPLETED |");

    let manifest = ws.read_json("artifact_manifest.json");
    assert_eq!(manifest["artifact_type"], "content");
    assert!(manifest["generated_at"].is_string());
    assert_eq!(manifest["variants"].as_array().unwrap().len(), 2);
    assert!(ws.read("refinement_log.md").starts_with("# Refinement log"));

    // Events: run id, stage id, timestamp, duration.
    let events: Vec<Value> = ws
        .read("logs/executor.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"EXECUTION_STARTED"));
    assert_eq!(kinds.last(), Some(&"EXECUTION_FINISHED"));
    assert_eq!(kinds.iter().filter(|k| **k == "TASK_STARTED").count(), 3);
    assert_eq!(kinds.iter().filter(|k| **k == "TASK_COMPLETED").count(), 3);
    for e in &events {
        assert_eq!(e["run_id"], results["run_id"]);
        assert!(e["timestamp"].is_string());
    }
    let done = events
        .iter()
        .find(|e| e["event"] == "TASK_COMPLETED")
        .unwrap();
    assert!(done["stage_id"].is_string() && done["duration_ms"].is_number());

    // Per-stage logs hold the attempt with its output.
    let log: Value = serde_json::from_str(ws.stage_log("count").lines().next().unwrap()).unwrap();
    assert_eq!(log["status"], "COMPLETED");
    assert_mentions(&log, "stdout", "\"words\": 3");
    // The code that ran is kept.
    assert!(
        ws.p(&format!(
            ".state/scripts/{}/count.py",
            results["run_id"].as_str().unwrap()
        ))
        .is_file()
    );
}

#[test]
fn failure_skips_downstream_and_stops_by_default() {
    let ws = Ws::new();
    ws.plan(
        "    - id: bad\n      with: {command: [sh, -c, 'echo broken >&2; exit 3']}\n    - id: after\n      depends_on: [bad]\n      with: {command: [echo]}\n    - id: other\n      with: {command: [sh, -c, 'echo x > other.txt']}\n      outputs: [other.txt]\n",
    );
    let r = ws.run_code(1, &["execute", "plan.yaml", "--jobs", "1"]);
    let res = ws.read_json(".state/execution_results.json");
    assert_eq!(stage(&res, "bad")["status"], "FAILED");
    assert_eq!(stage(&res, "bad")["exit_code"], 3);
    assert_mentions(stage(&res, "bad"), "reason", "exited with code 3: broken");
    assert_eq!(stage(&res, "after")["status"], "SKIPPED");
    assert_eq!(
        stage(&res, "after")["reason"],
        "upstream stage `bad` FAILED"
    );
    assert_eq!(stage(&res, "other")["status"], "SKIPPED");
    assert_mentions(stage(&res, "other"), "reason", "--keep-going");
    assert!(!ws.p("other.txt").exists());
    assert_eq!(res["errors"][0]["stage"], "bad");
    assert_eq!(res["errors"][0]["stderr_tail"], "broken");
    assert!(
        r.stderr
            .contains("error in `bad` (exit_status): exited with code 3: broken"),
        "{}",
        r.stderr
    );

    // --keep-going runs the independent stage.
    let r = ws.run(&["execute", "plan.yaml", "--keep-going"]);
    assert_eq!(r.code, 1);
    let res = ws.read_json(".state/execution_results.json");
    assert_eq!(stage(&res, "other")["status"], "COMPLETED");
    assert_eq!(stage(&res, "after")["status"], "SKIPPED");
    assert_eq!(ws.read("other.txt"), "x\n");
    assert_claims_hold(&ws, &res);
}

#[test]
fn missing_declared_output_fails_and_is_never_listed() {
    let ws = Ws::new();
    ws.plan("    - id: liar\n      with: {command: [sh, -c, 'echo made > made.txt']}\n      outputs: [made.txt, promised.txt, 'imgs/*.png']\n");
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.code, 1);
    let res = r.json();
    let s = stage(&res, "liar");
    assert_eq!(s["status"], "FAILED");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("declared output missing: promised.txt")
            && reason.contains("declared output missing: imgs/*.png"),
        "{reason}"
    );
    assert!(res["generated_files"].as_array().unwrap().is_empty());
    assert!(res["manifest"]["files"].as_array().unwrap().is_empty());
    let v = &res["validation_outputs"][0];
    assert_eq!(v["check"], "declared_outputs");
    assert_eq!(v["status"], "failed");
    assert_eq!(res["errors"][0]["kind"], "missing_output");
}

#[test]
fn globs_and_directories_as_outputs() {
    let ws = Ws::new();
    ws.plan("    - id: many\n      with: {command: [sh, -c, 'mkdir -p dist/sub && for s in 16 32; do echo $s > dist/logo-$s.png; done; echo x > dist/sub/a.txt']}\n      outputs: ['dist/*.png', dist/sub]\n");
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let res = r.json();
    let paths: Vec<&str> = res["generated_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec!["dist/logo-16.png", "dist/logo-32.png", "dist/sub/a.txt"]
    );
    assert_eq!(res["generated_files"][0]["change"], "created");
    assert_claims_hold(&ws, &res);
}

#[test]
fn overwrites_are_recorded_with_before_and_after() {
    let ws = Ws::new();
    ws.write("data.txt", "original\n");
    ws.plan("    - id: w\n      with: {command: [sh, -c, 'echo new > data.txt']}\n      outputs: [data.txt]\n");
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.json()["generated_files"][0]["change"], "modified");
    let ledger: Vec<Value> = ws
        .read(".state/patch_ledger.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let entry = ledger.iter().find(|e| e["path"] == "data.txt").unwrap();
    assert_eq!(entry["writer"], "w");
    assert_eq!(
        entry["before_blake3"],
        blake3::hash(b"original\n").to_hex().as_str()
    );
    assert_eq!(
        entry["after_blake3"],
        blake3::hash(b"new\n").to_hex().as_str()
    );
    assert_eq!(entry["backed_up"], true);
    // The overwritten content comes back.
    ws.assert_restores("data.txt", "original\n");
    let r = ws.run(&["ledger", "--path", "data.txt", "--json"]);
    let rows = r.json();
    assert_eq!(
        rows.as_array().unwrap().last().unwrap()["writer"],
        "restore"
    );
}

fn process_alive(marker: &str) -> bool {
    let out = std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .unwrap();
    out.status.success()
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let ws = Ws::new();
    // A child and a grandchild, both sleeping far longer than the limit.
    ws.plan("    - id: hang\n      timeout: 500ms\n      with: {command: [sh, -c, 'sleep 31.7 & sh -c \"sleep 31.7\"; wait']}\n    - id: next\n      depends_on: [hang]\n      with: {command: [echo]}\n");
    let t = std::time::Instant::now();
    let r = ws.run(&["execute", "plan.yaml"]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "the timeout did not stop the stage"
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let res = ws.read_json(".state/execution_results.json");
    assert_eq!(stage(&res, "hang")["status"], "TIMEOUT");
    assert_eq!(
        stage(&res, "next")["reason"],
        "upstream stage `hang` TIMEOUT"
    );
    assert_eq!(res["errors"][0]["kind"], "timeout");
    assert_eq!(res["summary"]["timeout"], 1);
    assert!(
        !process_alive("sleep 31.7"),
        "a grandchild outlived its stage"
    );
}

#[test]
fn background_children_do_not_hang_a_finished_stage() {
    let ws = Ws::new();
    ws.plan("    - id: bg\n      with: {command: [sh, -c, '(sleep 32.3 &); echo done']}\n");
    let t = std::time::Instant::now();
    ws.run_ok(&["execute", "plan.yaml"]);
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        !process_alive("sleep 32.3"),
        "a stage's background process outlived it"
    );
}

#[test]
fn huge_and_binary_output_is_bounded() {
    let ws = Ws::new();
    ws.plan("    - id: flood\n      with: {command: [sh, -c, 'head -c 30000000 /dev/zero; echo; echo last line']}\n");
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let res = r.json();
    assert_eq!(stage(&res, "flood")["stdout_bytes"], 30_000_000u64 + 11);
    let log_size = ws.stage_log("flood").len();
    assert!(
        log_size < 10 * 1024 * 1024,
        "stage log kept {log_size} bytes"
    );
    let log: Value = serde_json::from_str(&ws.stage_log("flood")).unwrap();
    let stdout = log["stdout"].as_str().unwrap();
    assert!(stdout.contains("bytes not kept") && stdout.ends_with("last line\n"));
}

#[test]
fn outputs_json_and_references_flow_between_stages() {
    let ws = Ws::new();
    ws.plan(
        "    - id: measure\n      with:\n        language: python\n        code: |\n          import json\n          print('noise')\n          print(json.dumps({'size': 512, 'name': \"it's \\\"odd\\\" $(rm -rf /)\", 'colors': {'bg': '#000'}}))\n        outputs_json: true\n    - id: use\n      depends_on: [measure]\n      with:\n        language: bash\n        code: 'printf \"%s|%s|%s\" \"$SIZE\" \"$NAME\" \"$BG\" > used.txt'\n        env: {SIZE: $measure.size, NAME: $measure.name, BG: $measure.colors.bg}\n      outputs: [used.txt]\n    - id: argv\n      depends_on: [use]\n      with: {command: [cat, $use.files]}\n",
    );
    ws.run_ok(&["execute", "plan.yaml", "--json"]);
    assert_eq!(ws.read("used.txt"), "512|it's \"odd\" $(rm -rf /)|#000");
    let log: Value = serde_json::from_str(&ws.stage_log("argv")).unwrap();
    assert_eq!(log["stdout"], "512|it's \"odd\" $(rm -rf /)|#000");
    assert_eq!(
        log["invocation"]["argv"],
        serde_json::json!(["cat", "used.txt"])
    );
}

#[test]
fn bad_outputs_json_fails_clearly() {
    let ws = Ws::new();
    ws.plan("    - id: j\n      with: {command: [echo, not json], outputs_json: true}\n");
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.code, 1);
    let res = r.json();
    assert_eq!(res["errors"][0]["kind"], "bad_tool_output");
    assert_mentions(
        &res["errors"][0],
        "message",
        "not a JSON object: \"not json\"",
    );
}

#[test]
fn missing_commands_and_interpreters_get_hints() {
    let ws = Ws::new();
    ws.plan("    - id: nope\n      with: {command: [definitely-not-a-command-xyz]}\n");
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.code, 1);
    let e = &r.json()["errors"][0];
    assert_eq!(e["kind"], "missing_dependency");
    assert_mentions(
        e,
        "message",
        "command not found: `definitely-not-a-command-xyz`",
    );
    assert_mentions(e, "hint", "never installs");

    let ws = Ws::new();
    ws.plan("    - id: sh127\n      with: {command: [sh, -c, 'no-such-tool-abc']}\n");
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    let e = &r.json()["errors"][0];
    assert_eq!(e["kind"], "missing_dependency");
    assert!(
        e["hint"]
            .as_str()
            .unwrap()
            .contains("`no-such-tool-abc` was not found"),
        "{e}"
    );
}

#[test]
fn killed_by_signal() {
    let ws = Ws::new();
    ws.plan("    - id: boom\n      with: {command: [sh, -c, 'kill -SEGV $$']}\n");
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.code, 1);
    let res = r.json();
    assert_eq!(stage(&res, "boom")["signal"], 11);
    assert_eq!(res["errors"][0]["kind"], "signal");
}

#[cfg(unix)]
#[test]
fn symlinked_outputs_leading_outside_fail() {
    let ws = Ws::new();
    let outside = tempfile::NamedTempFile::new().unwrap();
    ws.plan(&format!("    - id: link\n      with: {{command: [ln, -s, '{}', leak.txt]}}\n      outputs: [leak.txt]\n", outside.path().display()));
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.code, 1);
    let res = r.json();
    assert_mentions(stage(&res, "link"), "reason", "outside the workspace");
    assert!(res["generated_files"].as_array().unwrap().is_empty());
}

#[test]
fn ai_stages_fail_before_starting_without_an_endpoint() {
    let ws = Ws::new();
    ws.plan("    - id: think\n      requires_execution: false\n      outputs: [idea.md]\n    - id: other\n      with: {command: [sh, -c, 'echo ok > ok.txt']}\n      outputs: [ok.txt]\n");
    let r = ws.run(&["execute", "plan.yaml", "--keep-going", "--json"]);
    assert_eq!(r.code, 1);
    let res = r.json();
    assert_eq!(stage(&res, "think")["tool"], "ai");
    assert_eq!(res["errors"][0]["kind"], "not_configured");
    assert_eq!(stage(&res, "other")["status"], "COMPLETED");
}

#[test]
fn declared_order_is_kept_unless_dependencies_say_otherwise() {
    let ws = Ws::new();
    ws.plan("    - id: late\n      depends_on: [early]\n      with: {command: [sh, -c, 'echo late >> order.txt']}\n    - id: early\n      with: {command: [sh, -c, 'echo early >> order.txt']}\n    - id: third\n      with: {command: [sh, -c, 'echo third >> order.txt']}\n");
    // The stages append to one undeclared file: not confined, this test is about order.
    ws.run_ok(&["execute", "plan.yaml", "--jobs", "1", "--no-sandbox"]);
    assert_eq!(ws.read("order.txt"), "early\nlate\nthird\n");
}

#[test]
fn workspace_flag_and_cwd_input() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.p("work/sub")).unwrap();
    ws.plan("    - id: here\n      with: {command: [sh, -c, 'pwd > where.txt'], cwd: sub}\n      outputs: [sub/where.txt]\n");
    ws.run_ok(&["execute", "plan.yaml", "--workspace", "work"]);
    let real = std::fs::canonicalize(ws.p("work/sub")).unwrap();
    assert_eq!(ws.read("work/sub/where.txt").trim(), real.to_str().unwrap());
    assert!(ws.p("work/.state/execution_results.json").is_file());
    let r = ws.run(&["execute", "plan.yaml", "--workspace", "nowhere"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not a directory"));
}

#[cfg(unix)]
#[test]
fn interrupt_cancels_kills_and_records() {
    use std::process::Stdio;
    let ws = Ws::new();
    ws.plan("    - id: slow\n      with: {command: [sh, -c, 'sleep 33.1']}\n    - id: after\n      with: {command: [echo]}\n");
    let child = bin()
        .args(["execute", "plan.yaml", "--jobs", "1"])
        .current_dir(ws.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the stage is running.
    let t = std::time::Instant::now();
    while !process_alive("sleep 33.1") && t.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe_kill(child.id(), 2);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(!process_alive("sleep 33.1"));
    let res = ws.read_json(".state/execution_results.json");
    assert_eq!(res["status"], "cancelled");
    assert_eq!(stage(&res, "slow")["status"], "CANCELLED");
    assert_eq!(stage(&res, "after")["status"], "SKIPPED");
}

fn unsafe_kill(pid: u32, sig: i32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
