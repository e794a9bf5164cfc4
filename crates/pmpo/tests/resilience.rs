//! Recovery: retries, fallbacks, circuit breakers, plugins, manual
//! intervention, error classes, metrics. Fault-injecting tools are small
//! shell scripts written into each test's workspace.

use common::*;
use pmpo_testkit as common;
use serde_json::Value;

/// A command that fails until it has been called `n` times.
fn flaky(n: u32, counter: &str) -> String {
    format!(
        "[sh, -c, 'c=$(cat {counter} 2>/dev/null || echo 0); c=$((c+1)); echo $c > {counter}; echo attempt $c >&2; [ $c -ge {n} ]']"
    )
}

fn plugin(ws: &Ws, name: &str, body: &str) {
    let path = ws.write(&format!("plugins/{name}"), &format!("#!/bin/sh\n{body}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_tool_that_fails_twice_then_succeeds_is_retried() {
    let ws = Ws::new();
    ws.plan(&format!(
        "    - id: flaky\n      cache: false\n      retry: {{attempts: 3, backoff: exponential, initial: 10ms, jitter: false}}\n      with: {{command: {}}}\n      outputs: [n.txt]\n",
        flaky(3, "n.txt")
    ));
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let res = r.json();
    assert_eq!(stage(&res, "flaky")["status"], "COMPLETED");
    assert_eq!(stage(&res, "flaky")["attempts"], 3);
    assert!(
        r.stderr.contains("retry: attempt 1 of 3 failed")
            || r.stderr.contains("attempt 1 of 3 failed"),
        "{}",
        r.stderr
    );
    // Every attempt is in the stage log and the execution log.
    let log = ws.stage_log("flaky");
    assert_eq!(log.lines().count(), 3);
    let metrics = ws.run(&["metrics"]).stdout;
    assert!(metrics.contains("retry_attempts_total 2"), "{metrics}");
    assert!(
        metrics.contains("tasks_executed_total{status=\"FAILED\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tasks_executed_total{status=\"COMPLETED\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("task_duration_seconds_count 3"),
        "{metrics}"
    );
}

#[test]
fn exhausted_retries_keep_the_last_error() {
    let ws = Ws::new();
    ws.plan(&format!(
        "    - id: flaky\n      retry: {{attempts: 2, initial: 10ms}}\n      with: {{command: {}}}\n      outputs: [n.txt]\n",
        flaky(5, "n.txt")
    ));
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.code, 1);
    let res = r.json();
    assert_eq!(stage(&res, "flaky")["attempts"], 2);
    assert_eq!(res["errors"][0]["stderr_tail"], "attempt 2");
}

#[test]
fn fallback_is_used_and_the_user_is_told() {
    let ws = Ws::new();
    ws.plan("    - id: make\n      with: {command: [sh, -c, 'exit 9']}\n      fallback:\n        tool: run\n        with: {command: [sh, -c, 'echo from-fallback > out.txt']}\n      outputs: [out.txt]\n");
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let res = r.json();
    assert_eq!(stage(&res, "make")["fallback_used"], "run");
    assert_eq!(ws.read("out.txt"), "from-fallback\n");
    assert!(
        res["notices"][0]
            .as_str()
            .unwrap()
            .contains("used its fallback"),
        "{res}"
    );
    assert!(
        r.stderr.contains("fallback:") && r.stderr.contains("note: stage `make` used its fallback"),
        "{}",
        r.stderr
    );
    let events = ws.read("logs/executor.jsonl");
    assert!(events.contains("\"TASK_FALLBACK\""));
}

#[test]
fn plugins_speak_json_and_bad_ones_fail_clearly() {
    let ws = Ws::new();
    plugin(
        &ws,
        "count",
        r#"if [ "$1" = --health ]; then echo ok; exit 0; fi
read input; echo "$input" > seen.json; echo hello > made.txt
echo '{"success": true, "outputs": {"words": 2}, "files": ["made.txt"]}'"#,
    );
    plugin(&ws, "garbage", "cat >/dev/null; echo this is not json");
    plugin(
        &ws,
        "sad",
        r#"cat >/dev/null; echo '{"success": false, "error": "no quota left"}'"#,
    );
    plugin(
        &ws,
        "liar",
        r#"cat >/dev/null; echo '{"success": true, "files": ["ghost.txt"]}'"#,
    );
    plugin(&ws, "ill", "echo broken >&2; exit 3");
    ws.plan(
        "    - id: count\n      tool: plugin:count\n      with: {text: hello world}\n      outputs: [made.txt, seen.json]\n    - id: use\n      depends_on: [count]\n      with: {command: [sh, -c, 'echo $W > w.txt'], env: {W: $count.words}}\n      outputs: [w.txt]\n    - id: garbage\n      tool: plugin:garbage\n    - id: sad\n      tool: plugin:sad\n    - id: liar\n      tool: plugin:liar\n    - id: missing\n      tool: plugin:nowhere\n",
    );
    let r = ws.run(&["execute", "plan.yaml", "--json", "--keep-going"]);
    assert_eq!(r.code, 1);
    let res = r.json();
    assert_eq!(stage(&res, "count")["status"], "COMPLETED");
    assert_eq!(ws.read("w.txt"), "2\n");
    let seen: Value = serde_json::from_str(&ws.read("seen.json")).unwrap();
    assert_eq!(seen["inputs"]["text"], "hello world");
    let err = |id: &str| error_of(&res, id);
    assert_eq!(err("garbage")["kind"], "bad_tool_output");
    assert_mentions(&err("garbage"), "message", "this is not json");
    assert_eq!(err("sad")["kind"], "tool_failed");
    assert_mentions(&err("sad"), "message", "no quota left");
    assert_mentions(&err("liar"), "message", "ghost.txt");
    assert_eq!(err("missing")["kind"], "missing_dependency");
    assert_mentions(&err("missing"), "hint", "pmpo-plugin-nowhere");

    let a = ws.run(&["adapters", "--health", "--json"]);
    let rows = a.json();
    let row = |id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["adapter"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(row("plugin:count")["health"], "healthy");
    assert_eq!(row("plugin:ill")["health"], "unhealthy");
    assert_mentions(&row("plugin:ill"), "health_detail", "broken");
    assert_eq!(a.code, 1);
}

#[test]
fn an_open_breaker_fails_fast_and_the_run_pauses_in_safe_mode() {
    let ws = Ws::new();
    plugin(&ws, "down", "cat >/dev/null; echo 1 >> calls.txt; exit 1");
    ws.plan("    - id: call\n      tool: plugin:down\n      retry: {attempts: 5, initial: 10ms, jitter: false}\n      outputs: [calls.txt]\n");
    let r = ws.run_code(
        3,
        &with_breaker(&["execute", "plan.yaml", "--json"], "2", Some("1h")),
    );
    let res = r.json();
    assert_eq!(res["status"], "paused");
    assert_eq!(stage(&res, "call")["status"], "AWAITING_INTERVENTION");
    assert!(
        stage(&res, "call")["reason"]
            .as_str()
            .unwrap()
            .contains("circuit open for adapter plugin:down until"),
        "{res}"
    );
    assert_eq!(
        ws.read("calls.txt").lines().count(),
        2,
        "the breaker must stop the calls"
    );
    let a = ws.run(&["adapters", "--json"]).json();
    assert!(
        a.as_array()
            .unwrap()
            .iter()
            .any(|r| r["adapter"] == "plugin:down" && r["breaker"] == "OPEN"),
        "{a}"
    );
    assert!(
        ws.run(&["metrics"])
            .stdout
            .contains("circuit_breaker_state{adapter=\"plugin:down\"} 2")
    );

    // Another process sees the same breaker: no call at all.
    let r = ws.run(&with_breaker(
        &["execute", "plan.yaml", "--json"],
        "2",
        Some("1h"),
    ));
    assert_eq!(r.code, 3);
    assert_eq!(ws.read("calls.txt").lines().count(), 2);

    // With a fallback, an open breaker goes straight to it.
    ws.plan("    - id: call\n      tool: plugin:down\n      fallback: {tool: run, with: {command: [sh, -c, 'echo ok > ok.txt']}}\n      outputs: [ok.txt]\n");
    ws.run_ok(&with_breaker(
        &["execute", "plan.yaml", "--json"],
        "2",
        Some("1h"),
    ));
    assert_eq!(ws.read("calls.txt").lines().count(), 2);
    assert_eq!(ws.read("ok.txt"), "ok\n");
}

#[test]
fn a_half_open_breaker_closes_after_a_good_trial() {
    let ws = Ws::new();
    plugin(
        &ws,
        "moody",
        r#"cat >/dev/null; if [ -f healthy ]; then echo '{"success": true}'; else exit 1; fi"#,
    );
    ws.plan("    - id: call\n      cache: false\n      tool: plugin:moody\n");
    let args = with_breaker(&["execute", "plan.yaml", "-q"], "1", Some("300ms"));
    assert_eq!(ws.run(&args).code, 1);
    assert_eq!(ws.run(&args).code, 3, "open: no call");
    std::thread::sleep(std::time::Duration::from_millis(400));
    ws.write("healthy", "");
    assert_eq!(ws.run(&args).code, 0, "half-open trial succeeds");
    let a = ws.run(&["adapters", "--json"]).json();
    assert!(
        a.as_array()
            .unwrap()
            .iter()
            .any(|r| r["adapter"] == "plugin:moody" && r["breaker"] == "CLOSED"),
        "{a}"
    );
}

#[test]
fn manual_intervention_pauses_without_a_terminal_and_resume_answers_it() {
    let ws = Ws::new();
    ws.plan("    - id: first\n      with: {command: [sh, -c, 'echo 1 > first.txt']}\n      outputs: [first.txt]\n    - id: needs-fix\n      depends_on: [first]\n      on_failure: manual\n      with: {command: [sh, -c, 'test -f fixed && echo done > fixed.out']}\n      outputs: [fixed.out]\n    - id: after\n      depends_on: [needs-fix]\n      with: {command: [sh, -c, 'echo after > after.txt']}\n      outputs: [after.txt]\n");
    let r = ws.run_code(3, &["execute", "plan.yaml", "--json"]);
    let res = r.json();
    assert_eq!(res["status"], "awaiting_intervention");
    assert_eq!(stage(&res, "needs-fix")["status"], "AWAITING_INTERVENTION");
    assert_eq!(stage(&res, "after")["status"], "PENDING");
    let run_id = res["run_id"].as_str().unwrap().to_string();
    assert!(
        r.stderr
            .contains(&format!("pmpo resume {run_id} --retry|--skip|--abort")),
        "{}",
        r.stderr
    );

    // Without an answer, neither execute nor resume goes on.
    let r = ws.run(&["execute", "plan.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("waiting for a decision about stage `needs-fix`"),
        "{}",
        r.stderr
    );
    assert!(!ws.p("after.txt").exists());

    // The person fixes things and answers from another process.
    ws.write("fixed", "");
    let r = ws.run_ok(&["resume", &run_id, "--retry", "--json"]);
    let res = r.json();
    assert_eq!(res["run_id"], run_id.as_str());
    assert_eq!(stage(&res, "needs-fix")["status"], "COMPLETED");
    assert_eq!(ws.read("after.txt"), "after\n");
    assert_eq!(ws.read("first.txt"), "1\n");
}

#[test]
fn skip_and_abort_answers() {
    for (answer, code, status) in [("--skip", 1, "SKIPPED"), ("--abort", 1, "FAILED")] {
        let ws = Ws::new();
        ws.plan("    - id: broken\n      on_failure: manual\n      with: {command: [sh, -c, 'exit 1']}\n    - id: dependent\n      depends_on: [broken]\n      with: {command: [echo]}\n    - id: independent\n      with: {command: [sh, -c, 'echo x > ind.txt']}\n      outputs: [ind.txt]\n");
        let r = ws.run(&["execute", "plan.yaml", "--json", "--jobs", "1"]);
        assert_eq!(r.code, 3);
        let run_id = r.json()["run_id"].as_str().unwrap().to_string();
        let r = ws.run(&["resume", &run_id, answer, "--json"]);
        assert_eq!(r.code, code, "{answer}: {}", r.stderr);
        let res = r.json();
        assert_eq!(stage(&res, "broken")["status"], status, "{answer}");
        assert_eq!(stage(&res, "dependent")["status"], "SKIPPED");
        if answer == "--skip" {
            // A person's skip is not a failure: independent stages still run.
            assert_eq!(stage(&res, "independent")["status"], "COMPLETED");
            assert_mentions(stage(&res, "broken"), "reason", "skipped by the user");
        } else {
            assert_eq!(stage(&res, "independent")["status"], "SKIPPED");
            assert_eq!(res["errors"][0]["kind"], "aborted");
        }
    }
}

#[test]
fn known_error_classes_get_hints() {
    let ws = Ws::new();
    ws.write("noexec.sh", "echo hi\n");
    ws.plan(
        "    - id: py\n      with: {language: python, code: 'import definitely_missing_module_xyz'}\n    - id: svc\n      with: {language: python, code: \"import socket; socket.create_connection(('127.0.0.1', 9))\"}\n    - id: perm\n      with: {command: [./noexec.sh]}\n    - id: sig\n      with: {command: [sh, -c, 'kill -TERM $$']}\n",
    );
    let r = ws.run(&["execute", "plan.yaml", "--json", "--keep-going"]);
    assert_eq!(r.code, 1);
    let res = r.json();
    let err = |id: &str| error_of(&res, id);
    assert_eq!(err("py")["kind"], "missing_dependency");
    assert_mentions(
        &err("py"),
        "hint",
        "pip install definitely_missing_module_xyz",
    );
    assert_eq!(err("svc")["kind"], "service_unavailable", "{}", err("svc"));
    assert_mentions(&err("svc"), "hint", "start the service");
    assert_eq!(err("perm")["kind"], "permission_denied");
    assert_mentions(&err("perm"), "hint", "chmod +x");
    assert_eq!(err("sig")["kind"], "signal");
    assert_mentions(&err("sig"), "message", "SIGTERM");
    // The terminal shows them too.
    assert!(
        r.stderr
            .contains("hint: the Python module `definitely_missing_module_xyz` is missing"),
        "{}",
        r.stderr
    );
}

#[test]
fn check_knows_the_recovery_settings() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      retry: {attempts: 0}\n      fallback: {tool: nope}\n      correct: true\n      with: {command: [echo]}\n    - id: b\n      on_failure: later\n      with: {command: [echo]}\n");
    let r = ws.run(&["check", "plan.yaml"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "unknown variant `later`");
    let ws = Ws::new();
    ws.plan("    - id: a\n      retry: {attempts: 0}\n      fallback: {tool: nope}\n      correct: true\n      with: {command: [echo]}\n");
    let r = ws.run(&["check", "plan.yaml"]);
    assert_contains(&r.stderr, "retry.attempts is 0");
    assert_contains(&r.stderr, "fallback uses unknown tool `nope`");
    assert!(
        r.stderr
            .contains("`correct: true` needs a `run` stage with `language` + `code`"),
        "{}",
        r.stderr
    );
}

#[test]
fn one_minimal_correction_by_a_command_endpoint() {
    let ws = Ws::new();
    // The "model": a local program that reads the prompt and answers with fixed code.
    ws.write(
        "fixer.sh",
        "cat > prompt.txt\nprintf 'Here is the fix:\\n```python\\nprint(\"fixed\")\\nopen(\"out.txt\", \"w\").write(\"ok\")\\n```\\n'\n",
    );
    ws.write("pmpo.toml", "[ai]\ndefault_endpoint = \"fixer\"\n\n[ai.endpoints.fixer]\nkind = \"command\"\ncommand = [\"sh\", \"fixer.sh\"]\n");
    ws.plan("    - id: buggy\n      correct: true\n      with:\n        language: python\n        code: 'print(undefined_name)'\n      outputs: [out.txt]\n");
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let res = r.json();
    assert_eq!(stage(&res, "buggy")["status"], "COMPLETED");
    assert_eq!(stage(&res, "buggy")["attempts"], 2);
    assert_eq!(ws.read("out.txt"), "ok");
    assert!(
        res["notices"][0]
            .as_str()
            .unwrap()
            .contains("passed after one correction"),
        "{res}"
    );
    // The model saw the code and the error; both attempts are in the stage log.
    let prompt = ws.read("prompt.txt");
    assert!(
        prompt.contains("print(undefined_name)") && prompt.contains("NameError"),
        "{prompt}"
    );
    let log = ws.stage_log("buggy");
    assert_eq!(log.lines().count(), 2);
    assert!(
        log.lines().nth(1).unwrap().contains("print(\\\"fixed\\\")"),
        "{log}"
    );
    // The corrected run is judged like any attempt: its stage checks still apply.
    ws.plan("    - id: buggy\n      correct: true\n      with:\n        language: python\n        code: 'print(undefined_name)'\n      outputs: [out.txt]\n      validate:\n        - {check: contains, with: {path: out.txt, text: not-what-the-fix-writes}}\n");
    let r = ws.run_code(1, &["execute", "plan.yaml", "--json"]);
    assert_eq!(stage(&r.json(), "buggy")["status"], "FAILED");
    ws.plan("    - id: buggy\n      correct: true\n      with:\n        language: python\n        code: 'print(undefined_name)'\n      outputs: [out.txt]\n");
    // A corrected result is not reused: the plan's own code still fails.
    let again = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(stage(&again.json(), "buggy")["attempts"], 2);
}

#[test]
fn correction_without_a_model_is_skipped_with_a_note() {
    let ws = Ws::new();
    ws.plan("    - id: buggy\n      correct: true\n      with:\n        language: sh\n        code: 'exit 4'\n");
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.code, 1);
    let res = r.json();
    assert!(
        res["notices"][0]
            .as_str()
            .unwrap()
            .contains("correction skipped: no model endpoint is configured"),
        "{res}"
    );
    assert_eq!(res["errors"][0]["stage"], "buggy");
}

#[test]
fn fail_fast_lets_running_stages_finish_and_starts_nothing_after_the_failure() {
    let ws = Ws::new();
    ws.plan("    - id: slow\n      cache: false\n      with: {command: [sh, -c, 'sleep 1.2; echo done > slow.txt']}\n      outputs: [slow.txt]\n    - id: bad\n      cache: false\n      with: {command: [sh, -c, 'sleep 0.3; exit 1']}\n    - id: later\n      cache: false\n      with: {command: [sh, -c, 'echo later > later.txt']}\n      outputs: [later.txt]\n");
    let r = ws.run_code(1, &["execute", "plan.yaml", "--json", "--jobs", "2"]);
    let res = r.json();
    assert_eq!(stage(&res, "bad")["status"], "FAILED");
    // The stage running beside the failure is never killed: it finishes and counts.
    assert_eq!(stage(&res, "slow")["status"], "COMPLETED");
    assert_eq!(ws.read("slow.txt"), "done\n");
    // What comes after the failure in the plan's order does not start.
    assert_eq!(stage(&res, "later")["status"], "SKIPPED");
    assert!(
        stage(&res, "later")["reason"]
            .as_str()
            .unwrap()
            .contains("stage `bad` failed and the run stops at the first failure"),
        "{res}"
    );
    assert!(!ws.p("later.txt").exists());
    // Results keep the plan's order whatever finished first.
    assert_eq!(res["stages"][0]["id"], "slow");

    ws.plan("    - id: slow\n      cache: false\n      with: {command: [sh, -c, 'sleep 0.8; echo done > slow.txt']}\n      outputs: [slow.txt]\n    - id: bad\n      cache: false\n      with: {command: [sh, -c, 'exit 1']}\n");
    let r = ws.run(&[
        "execute",
        "plan.yaml",
        "--json",
        "--jobs",
        "2",
        "--keep-going",
    ]);
    assert_eq!(r.code, 1);
    assert_eq!(stage(&r.json(), "slow")["status"], "COMPLETED");
    assert_eq!(ws.read("slow.txt"), "done\n");
}
