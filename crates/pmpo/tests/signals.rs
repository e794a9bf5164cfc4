//! Every terminating signal is a cancel: SIGINT, SIGTERM and SIGHUP stop the
//! stages' process groups (even children that ignore signals), write the
//! results and exit 130/143/129; a second signal stops pmpo at once.

use pmpo_testkit as common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Run, Ws, assert_contains};

fn spawn(ws: &Ws, args: &[&str]) -> Child {
    common::bin()
        .args(args)
        .current_dir(ws.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(ws: &Ws, rel: &str) {
    let t = Instant::now();
    while !ws.p(rel).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{rel} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

fn alive(marker: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn sigterm_and_sighup_cancel_like_ctrl_c_even_when_the_stage_ignores_them() {
    for (sig, code) in [("TERM", 143), ("HUP", 129), ("INT", 130)] {
        let ws = Ws::new();
        let marker = format!("sleep 31.{code}");
        ws.plan(&format!(
            "    - id: stubborn\n      with: {{command: [sh, -c, \"trap '' TERM INT HUP; touch started; {marker} & wait; {marker}\"]}}\n      outputs: [started]\n    - id: after\n      with: {{command: [echo, after]}}\n"
        ));
        let child = spawn(&ws, &["execute", "plan.yaml", "--json", "-j", "1"]);
        wait_for(&ws, "started");
        signal(&child, sig);
        let t = Instant::now();
        let r: Run = child.wait_with_output().unwrap().into();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "SIG{sig} was not acted on"
        );
        assert_eq!(r.code, code, "SIG{sig}: {}", r.stderr);
        let j = r.json();
        assert_eq!(j["status"], "cancelled");
        assert_eq!(j["stages"][0]["status"], "CANCELLED");
        assert_eq!(j["stages"][1]["status"], "SKIPPED");
        // The results and the run's record are written.
        assert_eq!(
            ws.read_json(".state/execution_results.json")["run_id"],
            j["run_id"]
        );
        assert!(
            !alive(&marker),
            "SIG{sig}: the stage's processes outlived pmpo"
        );
    }
}

#[test]
fn the_first_signal_stops_a_spinning_template_and_a_rerun_reuses_what_was_done() {
    let ws = Ws::new();
    // A template that would render for hours. It runs in a child process of
    // pmpo, so the first signal stops it at once (before, on pmpo's own
    // thread, only a second signal could). A second signal not waiting for
    // a stuck cancel is shown with a check below.
    ws.write(
        "spin.txt",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    );
    ws.write("ok.txt", "fine\n");
    ws.plan(
        "    - id: first\n      with: {command: [sh, -c, 'echo 1 > first.txt']}\n      outputs: [first.txt]\n    - id: spin\n      depends_on: [first]\n      tool: template\n      with: {template: spin.txt, output: out.txt}\n      outputs: [out.txt]\n",
    );
    let child = spawn(&ws, &["execute", "plan.yaml", "-j", "1"]);
    wait_for(&ws, "first.txt");
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "TERM");
    let t = Instant::now();
    let r: Run = child.wait_with_output().unwrap().into();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the first signal took {:?}",
        t.elapsed()
    );
    assert_eq!(r.code, 143, "{}", r.stderr);
    assert!(!r.stderr.contains("second signal"), "{}", r.stderr);
    assert!(!ws.p("out.txt").exists());

    // The cancelled run was recorded as such: a re-run reuses `first`
    // (not run again) and does the rest.
    ws.plan(
        "    - id: first\n      with: {command: [sh, -c, 'echo 1 > first.txt']}\n      outputs: [first.txt]\n    - id: spin\n      depends_on: [first]\n      tool: template\n      with: {template: ok.txt, output: out.txt}\n      outputs: [out.txt]\n",
    );
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let j = r.json();
    assert_eq!(j["stages"][0]["status"], "CACHED", "{}", r.stderr);
    assert_eq!(j["stages"][1]["status"], "COMPLETED");
    assert_eq!(ws.read("out.txt"), "fine\n");
}

#[test]
fn sigterm_stops_validate_with_143() {
    let ws = Ws::new();
    ws.write(
        "plan.yaml",
        "specification:\n  artifact_name: t\n  artifact_type: code\n  constraints:\n    - {id: slow, description: a slow check, severity: blocking}\nplan:\n  stages:\n    - id: a\n      with: {command: [echo]}\n  validation_plan:\n    - constraint_id: slow\n      validation_method: command\n      with: {command: [sh, -c, 'touch started; sleep 32.5'], timeout: 60s, writes: [started]}\n",
    );
    let child = spawn(&ws, &["validate", "plan.yaml", "--json"]);
    wait_for(&ws, "started");
    signal(&child, "TERM");
    let r: Run = child.wait_with_output().unwrap().into();
    assert_eq!(r.code, 143, "{}", r.stderr);
    assert!(!alive("sleep 32.5"));
}

#[test]
fn a_second_signal_does_not_wait_out_a_checks_grace_and_leaves_nothing_behind() {
    let ws = Ws::new();
    // The check's command ignores SIGTERM: the first signal stops it gently
    // (SIGTERM, then SIGKILL after a grace); the second must not wait.
    ws.write(
        "plan.yaml",
        "specification:\n  artifact_name: t\n  artifact_type: code\n  constraints:\n    - {id: slow, description: a slow check, severity: blocking}\nplan:\n  stages:\n    - id: a\n      with: {command: [echo]}\n  validation_plan:\n    - constraint_id: slow\n      validation_method: command\n      with: {command: [sh, -c, \"trap '' TERM INT HUP; touch started; sleep 33.5\"], timeout: 60s, writes: [started]}\n",
    );
    let child = spawn(&ws, &["validate", "plan.yaml", "--json"]);
    wait_for(&ws, "started");
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, "TERM");
    let t = Instant::now();
    let r: Run = child.wait_with_output().unwrap().into();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(r.code, 143, "{}", r.stderr);
    assert_contains(&r.stderr, "second signal: stopped at once");
    // Only the registry of live groups can have stopped it: pmpo did not
    // wait for the check, and the command ignores SIGTERM.
    let until = Instant::now() + Duration::from_secs(2);
    while alive("sleep 33.5") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive("sleep 33.5"),
        "the check's process outlived pmpo:\n{}\n{}",
        r.stderr,
        String::from_utf8_lossy(
            &std::process::Command::new("ps")
                .args(["-eo", "pid,ppid,pgid,stat,args"])
                .output()
                .unwrap()
                .stdout
        )
        .lines()
        .filter(|l| l.contains("33.5"))
        .collect::<Vec<_>>()
        .join("\n")
    );
}
