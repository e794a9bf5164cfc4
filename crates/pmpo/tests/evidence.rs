//! The evidence rule, on the real binary: a constraint is satisfied only by
//! checks that ran in this run on files this run produced or verified. A file
//! left by an earlier run under the outputs of a stage that failed now is not
//! evidence; a check that could not look leaves its constraint unsatisfied.

use common::*;
use pmpo_testkit as common;

/// A stage copies `src.txt` to `dist/x.txt`; a blocking constraint checks the copy.
fn copy_plan(ws: &Ws) {
    ws.write(
        "plan.yaml",
        "specification:
  artifact_name: t
  artifact_type: code
  constraints:
    - {id: x-says-hello, description: dist/x.txt says hello, severity: blocking}
plan:
  stages:
    - id: copy
      with: {command: [sh, -c, \"mkdir -p dist && cp src.txt dist/x.txt\"]}
      inputs: [src.txt]
      outputs: [dist/x.txt]
  validation_plan:
    - {constraint_id: x-says-hello, validation_method: contains, with: {path: dist/x.txt, text: hello}}
",
    );
}

fn constraint(ws: &Ws) -> serde_json::Value {
    ws.read_json("constraints.json")["constraints"][0].clone()
}

#[test]
fn a_file_left_by_an_earlier_run_is_not_evidence() {
    let ws = Ws::new();
    copy_plan(&ws);
    ws.write("src.txt", "hello\n");

    // 1. The stage produces the file: the check on it satisfies the constraint.
    let first = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let run1 = first.json()["run_id"].as_str().unwrap().to_string();
    let c = constraint(&ws);
    assert_eq!(c["status"], "satisfied", "{c}");
    assert_eq!(c["run_id"], run1.as_str(), "{c}");
    // The evidence: the file the check read, with its digest.
    let digest = blake3::hash(b"hello\n").to_hex().to_string();
    assert_eq!(c["checks"][0]["files"][0]["path"], "dist/x.txt", "{c}");
    assert_eq!(c["checks"][0]["files"][0]["blake3"], digest.as_str(), "{c}");

    // 2. The stage fails (its input is gone); the old dist/x.txt is still there
    // and still says hello, but this run did not produce it.
    std::fs::remove_file(ws.p("src.txt")).unwrap();
    let second = ws.run(&["execute", "plan.yaml", "--json"]);
    let j = second.json();
    let run2 = j["run_id"].as_str().unwrap().to_string();
    assert_eq!(j["stages"][0]["status"], "FAILED", "{}", j["stages"]);
    assert_eq!(
        ws.read("dist/x.txt"),
        "hello\n",
        "the stale file is still there"
    );
    let c = constraint(&ws);
    assert_eq!(c["status"], "not_checked", "{c}");
    assert_eq!(c["run_id"], run2.as_str(), "{c}");
    assert_eq!(c["checks"][0]["status"], "not_checked", "{c}");
    let why = c["checks"][0]["message"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "`dist/x.txt` is unproven: stage `copy` FAILED in run {run2}"
        )),
        "{why}"
    );
    let outs = j["validation_outputs"].as_array().unwrap();
    let plan_check = outs.iter().find(|o| o["stage"].is_null()).unwrap();
    assert_eq!(plan_check["status"], "not_checked", "{plan_check}");
    let log = ws.read("refinement_log.md");
    assert!(
        log.contains("| `x-says-hello` | blocking | not_checked |"),
        "{log}"
    );
    // `pmpo validate` runs no stage: it judges by the last run, the same way.
    let v = ws.run(&["validate", "plan.yaml", "--json"]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    let vj = v.json();
    assert_eq!(vj["constraints"][0]["status"], "not_checked", "{vj}");
    assert_eq!(vj["summary"]["blocking_not_checked"], 1, "{vj}");

    // 3. Restored: the stage produces the file again and the constraint is satisfied.
    ws.write("src.txt", "hello\n");
    let third = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    let c = constraint(&ws);
    assert_eq!(c["status"], "satisfied", "{c}");
    assert_eq!(c["run_id"], third.json()["run_id"], "{c}");
    ws.run_ok(&["validate", "plan.yaml"]);
}

#[test]
fn a_stage_check_on_a_file_of_a_stage_that_did_not_run_is_not_checked() {
    // `late` owns dist/late.txt but comes after `early`, which checks it without
    // depending on it: with --jobs 1 the file on disk is an earlier run's.
    let ws = Ws::new();
    ws.write("dist/late.txt", "stale\n");
    ws.plan(
        "    - id: early
      with: {command: [\"true\"]}
      validate:
        - {check: contains, with: {path: dist/late.txt, text: stale}}
    - id: late
      with: {command: [sh, -c, \"echo fresh > dist/late.txt\"]}
      outputs: [dist/late.txt]
",
    );
    let r = ws.run(&[
        "execute",
        "plan.yaml",
        "--json",
        "--jobs",
        "1",
        "--keep-going",
    ]);
    let j = r.json();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(j["stages"][0]["status"], "FAILED", "{}", j["stages"]);
    let reason = j["stages"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("could not check") && reason.contains("stage `late` did not run"),
        "{reason}"
    );
}

#[test]
fn one_check_that_could_not_look_leaves_the_constraint_unsatisfied() {
    let ws = Ws::new();
    ws.write("notes.txt", "hello\n");
    // A file larger than a text check reads whole (sparse: no disk used).
    let big = std::fs::File::create(ws.p("big.txt")).unwrap();
    big.set_len(64 * 1024 * 1024 + 1).unwrap();
    ws.write(
        "plan.yaml",
        "specification:
  artifact_name: t
  artifact_type: code
  constraints:
    - {id: says-hello, description: the notes say hello, severity: blocking}
    - {id: only-passed, description: one check that passes, severity: low}
plan:
  stages:
    - id: noop
      with: {command: [\"true\"]}
  validation_plan:
    - {constraint_id: says-hello, validation_method: contains, with: {path: notes.txt, text: hello}}
    - {constraint_id: says-hello, validation_method: contains, with: {path: big.txt, text: hello}}
    - {constraint_id: only-passed, validation_method: contains, with: {path: notes.txt, text: hello}}
",
    );
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    let j = r.json();
    let statuses: Vec<&str> = j["validation_outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["passed", "not_checked", "passed"], "{j}");
    let doc = ws.read_json("constraints.json");
    let c = &doc["constraints"];
    assert_eq!(c[0]["status"], "not_checked", "{c}");
    assert!(
        c[0]["checks"][1]["message"]
            .as_str()
            .unwrap()
            .contains("reads at most"),
        "{c}"
    );
    assert_eq!(c[1]["status"], "satisfied", "{c}");
    assert_eq!(doc["summary"]["satisfied"], 1);
    assert_eq!(doc["summary"]["not_checked"], 1);

    // `pmpo validate` judges the same way.
    let v = ws.run(&["validate", "plan.yaml", "--json"]);
    let vj = v.json();
    assert_eq!(vj["summary"]["not_checked"], 1, "{vj}");
    assert_eq!(vj["summary"]["satisfied"], 1, "{vj}");
}

/// A stage that runs and fails without touching its output leaves the earlier
/// run's file: not evidence, whether the check on it would pass or fail. A
/// stage that fails after writing a bad file: the failure found in it stands.
#[test]
fn a_failed_stage_file_is_judged_by_who_wrote_it() {
    let ws = Ws::new();
    let plan = |cmd: &str| {
        ws.write(
            "plan.yaml",
            &format!(
                "specification:
  artifact_name: t
  artifact_type: code
  constraints:
    - {{id: json-ok, description: dist/d.json is JSON, severity: blocking}}
plan:
  stages:
    - id: emit
      with: {{command: [sh, -c, \"{cmd}\"]}}
      outputs: [dist/d.json]
  validation_plan:
    - {{constraint_id: json-ok, validation_method: json, with: {{path: dist/d.json}}}}
"
            ),
        )
    };
    plan("mkdir -p dist && echo '{}' > dist/d.json");
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(constraint(&ws)["status"], "satisfied");

    // Fails without writing: the good file from the first run proves nothing.
    plan("exit 3");
    ws.run(&["execute", "plan.yaml"]);
    let c = constraint(&ws);
    assert_eq!(c["status"], "not_checked", "{c}");
    assert!(
        c["checks"][0]["message"]
            .as_str()
            .unwrap()
            .contains("stage `emit` FAILED"),
        "{c}"
    );

    // Writes a broken file, then fails: the broken file is this run's, and so is the violation.
    plan("echo '{broken' > dist/d.json; exit 3");
    ws.run(&["execute", "plan.yaml"]);
    let c = constraint(&ws);
    assert_eq!(c["status"], "violated", "{c}");

    // Writes a good file, then fails: still not a proof.
    plan("echo '[]' > dist/d.json; exit 3");
    ws.run(&["execute", "plan.yaml"]);
    let c = constraint(&ws);
    assert_eq!(c["status"], "not_checked", "{c}");
}
