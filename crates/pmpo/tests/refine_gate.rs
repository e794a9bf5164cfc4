//! `pmpo refine` without a model, through the real binary: the approval
//! gate answered from another process (continue, terminate, a fixed input),
//! `pmpo status` of an artifact, a kill -9 in the middle of an iteration,
//! bad input, a second refine refused while one runs, and a damaged loop file.

use std::time::Duration;

use pmpo_testkit::refine::*;
use pmpo_testkit::*;
use serde_json::json;

#[test]
fn the_approval_gate_pauses_until_another_process_answers() {
    let ws = Ws::new();
    ws.write("brand/logo.svg", LOGO);
    let args = [
        "refine",
        "acme-logo",
        "--type",
        "logo",
        "--input",
        "brand/logo.svg",
        "--approval",
        "--json",
    ];
    let r = run_code(pmpo(&ws), 3, &args);
    let report = r.json();
    assert_eq!(report["outcome"], "awaiting_approval");
    assert_mentions(&report, "next_step", "pmpo approve acme-logo --continue");
    let st = state(&ws, "acme-logo");
    assert_eq!(st["loop"]["approval"]["status"], "pending");
    assert_eq!(
        st["phases_completed"],
        json!(["specify", "plan", "execute", "reflect"])
    );
    assert!(
        ws.read("decisions.md")
            .contains("## Iteration 1 — Approval requested")
    );

    // Running again without an answer pauses again, and changes nothing.
    let again = run(pmpo(&ws), &["refine", "acme-logo"]);
    assert_eq!(again.code, 3);
    assert_eq!(
        state(&ws, "acme-logo")["phases_completed"],
        st["phases_completed"]
    );

    // Another process answers.
    let a = run(
        pmpo(&ws),
        &[
            "approve",
            "acme-logo",
            "--continue",
            "--note",
            "colours look right",
        ],
    );
    assert_eq!(a.code, 0, "{}", a.stderr);
    let d = ws.read("decisions.md");
    assert!(d.contains("## Iteration 1 — Approval: continue"));
    assert!(d.contains("- Note: colours look right"));
    let done = run(pmpo(&ws), &["refine", "acme-logo", "--json"]);
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(done.json()["outcome"], "converged");
    // Nothing to approve any more.
    let late = run(pmpo(&ws), &["approve", "acme-logo", "--terminate"]);
    assert_eq!(late.code, 2);
    assert_contains(&late.stderr, "finalized");
}

/// A logo refinement with the approval gate, paused after its first Reflect.
fn paused_at_the_gate(ws: &Ws, name: &str) {
    ws.write("brand/logo.svg", LOGO);
    let args = [
        "refine",
        name,
        "--type",
        "logo",
        "--input",
        "brand/logo.svg",
        "--approval",
    ];
    run_code(pmpo(ws), 3, &args);
}

#[test]
fn terminate_at_the_approval_gate_finalizes_as_user_terminated() {
    let ws = Ws::new();
    paused_at_the_gate(&ws, "l");
    let early = run(pmpo(&ws), &["approve", "nope", "--continue"]);
    assert_eq!(early.code, 2);
    // A running cycle's type and content type cannot change, and nothing is written.
    let before = ws.read(".refiner/artifacts/l/state.json");
    let r = run(pmpo(&ws), &["refine", "l", "--type", "image"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "is a logo, not a image");
    let r = run(pmpo(&ws), &["refine", "l", "--content-type", "direct:html"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "cannot change now");
    assert_eq!(ws.read(".refiner/artifacts/l/state.json"), before);
    // An artifact that is not at the gate has nothing to approve.
    assert_eq!(run(pmpo(&ws), &["init", "other", "--type", "logo"]).code, 0);
    let r = run(pmpo(&ws), &["approve", "other", "--continue"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "is not waiting for approval");
    assert_eq!(run(pmpo(&ws), &["approve", "l", "--terminate"]).code, 0);
    let r = run_code(pmpo(&ws), 0, &["refine", "l", "--json"]);
    assert_eq!(r.json()["outcome"], "user_terminated");
    assert_eq!(state(&ws, "l")["convergence_status"], "user_terminated");
}

#[test]
fn status_shows_the_iteration_constraints_and_last_decision() {
    let ws = Ws::new();
    ws.write("brand/logo.svg", LOGO);
    run_code(
        pmpo(&ws),
        0,
        &[
            "refine",
            "acme",
            "--type",
            "logo",
            "--input",
            "brand/logo.svg",
            "--intent",
            "works on dark backgrounds",
        ],
    );
    let s = run(pmpo(&ws), &["status", "acme"]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert_contains(&s.stdout, "iteration   1 of at most 5");
    assert_contains(&s.stdout, "dark-contrast");
    assert_contains(&s.stdout, "decision    terminate (converged)");
    let j = run(pmpo(&ws), &["status", "acme", "--json"]).json();
    assert_eq!(j["loop"]["last_decision"]["status"], "converged");
}

#[test]
fn a_kill_in_the_middle_of_an_iteration_resumes_cleanly() {
    // Kill at increasing delays; each re-run must finish the same cycle with
    // one entry per phase and a valid state.
    for delay_ms in [40u64, 120, 250, 500, 900] {
        let ws = Ws::new();
        ws.write("brand/logo.svg", LOGO);
        let mut child = pmpo(&ws)
            .args([
                "refine",
                "k",
                "--type",
                "logo",
                "--input",
                "brand/logo.svg",
                "-q",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever the moment of the kill, every state file is whole JSON and
        // the completed phases are a prefix of the loop's order.
        assert_state_whole(&ws, &format!("delay {delay_ms}"));
        if ws.p(".refiner/artifacts/k/state.json").exists() {
            let st = state(&ws, "k");
            let done: Vec<&str> = st["phases_completed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            let order = ["specify", "plan", "execute", "reflect", "persist"];
            assert_eq!(done, order[..done.len()].to_vec(), "delay {delay_ms}");
            for p in &done {
                let cp = st["checkpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["phase"] == *p);
                assert!(
                    cp,
                    "delay {delay_ms}: phase {p} completed without a checkpoint"
                );
            }
        }
        // Killed before the artifact existed (a loaded machine is slow to start):
        // the re-run must name what to refine again.
        let r = if ws.p(".refiner/artifacts/k/state.json").exists() {
            run(pmpo(&ws), &["refine", "k", "--json"])
        } else {
            run(
                pmpo(&ws),
                &[
                    "refine",
                    "k",
                    "--type",
                    "logo",
                    "--input",
                    "brand/logo.svg",
                    "--json",
                ],
            )
        };
        let st = state(&ws, "k");
        if st["finalized_at"].is_string() && r.code == 0 {
            assert_eq!(st["convergence_status"], "converged", "delay {delay_ms}");
        } else {
            panic!("delay {delay_ms}: exit {} {}", r.code, r.stderr);
        }
        let d = ws.read("decisions.md");
        assert_eq!(
            d.matches("## Iteration 1 — Decision: terminate").count(),
            1,
            "delay {delay_ms}: {d}"
        );
        let log = ws.read("refinement_log.md");
        assert_eq!(
            log.matches("## Iteration 1 — Reflect").count(),
            1,
            "delay {delay_ms}"
        );
        assert_eq!(ws.read_json("artifact_manifest.json")["artifact_name"], "k");
    }
}

/// `pmpo ARGS` is refused as bad input (exit 2), its error saying each of `says`.
fn refused(ws: &Ws, args: &[&str], says: &[&str]) {
    let r = run(pmpo(ws), args);
    assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    for s in says {
        assert!(r.stderr.contains(s), "{args:?}: `{s}` not in {}", r.stderr);
    }
}

#[test]
fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let ws = Ws::new();
    ws.write("brand/logo.svg", LOGO);
    let logo = ["refine", "x", "--type", "logo"];
    let with = |more: &[&'static str]| [&logo[..], more].concat();
    refused(
        &ws,
        &["refine", "x", "--type", "banner"],
        &[
            "Unknown artifact_type: banner",
            "logo, ui, a2ui, image, content, code, meta-prompt",
        ],
    );
    refused(
        &ws,
        &["refine", "x"],
        &["new artifact: say what it is with --type"],
    );
    refused(&ws, &["refine", "../evil", "--type", "logo"], &[]);
    refused(
        &ws,
        &with(&["--input", "/etc/hostname"]),
        &["outside the workspace"],
    );
    refused(
        &ws,
        &with(&["--input", "brand/missing.svg"]),
        &["does not exist"],
    );
    refused(&ws, &with(&["--content-type", "svg"]), &[]);
    refused(&ws, &with(&["--set", "novalue"]), &[]);
    ws.write(
        "bad-triggers.json",
        r#"{"triggers": [{"event": "on_lunch", "action": {"type": "command", "target": "true"}}]}"#,
    );
    refused(
        &ws,
        &with(&[
            "--input",
            "brand/logo.svg",
            "--triggers",
            "bad-triggers.json",
        ]),
        &["on_lunch"],
    );
    for component in [
        "direct:content=../../etc/nope.md",
        "direct:content=docs/missing.md",
    ] {
        let kit = ["refine", "kit", "--type", "meta-prompt", "--content-type"];
        let rest = [
            "meta:composite",
            "--component",
            component,
            "--intent",
            "a kit",
        ];
        refused(&ws, &[&kit[..], &rest[..]].concat(), &[]);
    }
    assert!(
        !ws.p(".refiner").exists(),
        "nothing may be written for bad input"
    );
    assert!(!ws.p("dist").exists());
    refused(
        &ws,
        &with(&["--input", "brand/logo.svg", "--max-iterations", "0"]),
        &["at least 1"],
    );

    // A damaged state file is reported, not overwritten.
    ws.write(".refiner/artifacts/x/state.json", "{not json");
    let r = run(pmpo(&ws), &with(&["--input", "brand/logo.svg"]));
    assert_ne!(r.code, 0);
    assert_contains(&r.stderr, "damaged");
    assert_eq!(ws.read(".refiner/artifacts/x/state.json"), "{not json");
}

#[test]
fn a_second_refine_of_the_same_workspace_is_refused_while_one_runs() {
    let ws = Ws::new();
    // A module whose test takes two seconds keeps the first refine busy.
    ws.write("slow.py", "def answer():\n    return 42\n");
    ws.write(
        "test_slow.py",
        "import time, unittest\nfrom slow import answer\n\nclass T(unittest.TestCase):\n    def test_it(self):\n        time.sleep(2)\n        self.assertEqual(answer(), 42)\n",
    );
    let mut first = pmpo(&ws)
        .args(["refine", "a", "--type", "code", "--input", "slow.py", "-q"])
        .spawn()
        .unwrap();
    // Wait until the first one is in its Execute phase.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ws.p(".refiner/artifacts/a/plans/iteration-1.json").exists()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first refine ended too early"
    );
    let second = run(pmpo(&ws), &["refine", "a"]);
    let approve = run(pmpo(&ws), &["approve", "a", "--continue"]);
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first refine ended too early"
    );
    assert_eq!(second.code, 4, "{}", second.stderr);
    assert_contains(&second.stderr, "in use by another pmpo");
    assert_contains(&second.stderr, "pmpo refine a");
    assert_eq!(approve.code, 4, "{}", approve.stderr);
    assert!(first.wait().unwrap().success());
    // Once it is done, the artifact is free again.
    assert_eq!(run(pmpo(&ws), &["status", "a"]).code, 0);
}

#[test]
fn a_person_fixes_the_input_at_the_approval_gate_and_the_next_iteration_uses_it() {
    let ws = Ws::new();
    // A dark navy mark disappears on the dark showcase background.
    ws.write(
        "brand/v1.svg",
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><circle cx="32" cy="32" r="28" fill="#0f172a"/></svg>"##,
    );
    // A mid blue keeps 3:1 on both the dark and the light background.
    ws.write(
        "brand/v2.svg",
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><circle cx="32" cy="32" r="28" fill="#3b82f6"/></svg>"##,
    );
    run_code(
        pmpo(&ws),
        3,
        &[
            "refine",
            "mark",
            "--type",
            "logo",
            "--input",
            "brand/v1.svg",
            "--approval",
            "--json",
        ],
    );
    let reflection = ws.read_json(".refiner/artifacts/mark/reflections/iteration-1.json");
    let dark = reflection["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "dark-contrast")
        .unwrap()
        .clone();
    assert_eq!(dark["status"], "violated");

    // The person answers and points the artifact at a better file.
    assert_eq!(run(pmpo(&ws), &["approve", "mark", "--continue"]).code, 0);
    let r = run(
        pmpo(&ws),
        &["refine", "mark", "--input", "brand/v2.svg", "--json"],
    );
    // Iteration 1 ends with `continue`; iteration 2 pauses at the gate again.
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.json()["notes"]
            .to_string()
            .contains("the specification is made again")
    );
    let plan2 = ws.read_json(".refiner/artifacts/mark/plans/iteration-2.json");
    assert_eq!(
        plan2["plan"]["stages"][0]["with"]["command"][4],
        "brand/v2.svg"
    );
    assert_eq!(run(pmpo(&ws), &["approve", "mark", "--continue"]).code, 0);
    let r = run_code(pmpo(&ws), 0, &["refine", "mark", "--json"]);
    assert_eq!(r.json()["outcome"], "converged");
    assert_eq!(r.json()["iteration"], 2);
    let st = state(&ws, "mark");
    let specify_checkpoints = st["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["phase"] == "specify")
        .count();
    assert_eq!(specify_checkpoints, 2);
}

#[test]
fn a_damaged_loop_file_is_reported_and_left_alone() {
    let ws = Ws::new();
    paused_at_the_gate(&ws, "d");
    let spec = ".refiner/artifacts/d/reflections/iteration-1.json";
    ws.write(spec, "{\"iteration\": 1, \"constr");
    assert_eq!(run(pmpo(&ws), &["approve", "d", "--continue"]).code, 0);
    let r = run_code(pmpo(&ws), 1, &["refine", "d"]);
    assert!(
        r.stderr
            .contains("reflections/iteration-1.json` is damaged"),
        "{}",
        r.stderr
    );
    assert_contains(&r.stderr, "help:");
    assert_eq!(ws.read(spec), "{\"iteration\": 1, \"constr");
    // Moved aside, the phase that writes it runs again and the loop goes on.
    std::fs::remove_file(ws.p(spec)).unwrap();
    let r = run_code(pmpo(&ws), 0, &["refine", "d", "--json"]);
    assert_eq!(r.json()["outcome"], "converged");
}
