//! Whole outputs of the CLI, stdout and stderr with the exit code, as
//! reviewed snapshots (`tests/snapshots/*.snap`): a plan check failure, an
//! execute summary (plain and `--json`), validate passing and failing,
//! `pmpo status` and a refine summary. What changes from run to run (times,
//! durations, run ids, digests, the temporary workspace's path, the sandbox
//! the kernel offers) is replaced by a `[NAME]` before the comparison.
//!
//! A changed output fails here with a diff; when the change is meant, run
//! `INSTA_UPDATE=always cargo test -p pmpo --test snapshots`, read the new
//! `.snap` files and commit them.

use std::process::Stdio;

use pmpo_testkit::{Run, Ws, bin_without_models};

/// Two stages, two constraints that hold once `write` has run.
const PLAN: &str = "specification:
  artifact_name: greeting
  artifact_type: content
  constraints:
    - {id: has-text, description: the greeting says hello, severity: blocking}
    - {id: short, description: the greeting is short, severity: low}
plan:
  stages:
    - id: write
      with: {command: [sh, -c, \"mkdir -p out && echo hello > out/greeting.txt\"]}
      outputs: [out/greeting.txt]
    - id: count
      depends_on: [write]
      with: {command: [wc, -c, out/greeting.txt]}
  validation_plan:
    - {constraint_id: has-text, validation_method: contains, with: {path: out/greeting.txt, text: hello}}
    - {constraint_id: short, validation_method: non_empty, with: {path: out/greeting.txt}}
";

/// What varies between runs and machines, and what stands in for it.
const FILTERS: &[(&str, &str)] = &[
    (r"\d{8}T\d{6}Z-[0-9a-f]{6}", "[RUN_ID]"),
    (
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?",
        "[TIME]",
    ),
    (r"[0-9a-f]{64}", "[BLAKE3]"),
    (r"\b[0-9a-f]{12}\b", "[HASH]"),
    (r#""(\w*_ms|duration\w*)": [0-9.]+"#, r#""$1": "[N]""#),
    (r"\b\d+(\.\d+)? ?(ms|s)\b", "[DUR]"),
    (r#""sandbox": "[^"]*""#, r#""sandbox": "[SANDBOX]""#),
    (r#"time="[0-9.]+""#, r#"time="[N]""#),
];

/// Runs `pmpo ARGS` in the workspace: no terminal, no colours, no model
/// settings from the shell.
fn pmpo(ws: &Ws, args: &[&str]) -> Run {
    bin_without_models(ws.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
        .into()
}

/// The whole output of a run, its workspace's path replaced.
fn whole(ws: &Ws, r: &Run) -> String {
    let text = format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        r.code, r.stdout, r.stderr
    );
    let real = ws.path().canonicalize().unwrap();
    text.replace(&real.display().to_string(), "[WS]")
        .replace(&ws.path().display().to_string(), "[WS]")
}

/// Compares the whole output of `r` with the snapshot `name`.
fn check(name: &str, ws: &Ws, r: &Run) {
    let mut settings = insta::Settings::clone_current();
    for (pattern, with) in FILTERS {
        settings.add_filter(pattern, *with);
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, whole(ws, r)));
}

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("plan.yaml", PLAN);
    ws
}

#[test]
fn a_plan_check_failure() {
    let ws = Ws::new();
    ws.write(
        "plan.yaml",
        &PLAN
            .replace("depends_on: [write]", "dependson: [write]")
            .replace("non_empty", "non_emty"),
    );
    let r = pmpo(&ws, &["check", "plan.yaml"]);
    assert_eq!(r.code, 2);
    check("check_failure", &ws, &r);
}

#[test]
fn an_execute_summary_plain_and_json() {
    let ws = workspace();
    let r = pmpo(&ws, &["execute", "plan.yaml", "-j", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    check("execute_plain", &ws, &r);
    let r = pmpo(
        &ws,
        &["execute", "plan.yaml", "-j", "1", "--json", "--force"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    check("execute_json", &ws, &r);
}

#[test]
fn validate_passing_and_failing() {
    let ws = workspace();
    ws.write("out/greeting.txt", "hello\n");
    let r = pmpo(&ws, &["validate", "plan.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    check("validate_passing", &ws, &r);
    ws.write("out/greeting.txt", "goodbye\n");
    let r = pmpo(&ws, &["validate", "plan.yaml", "--junit", "junit.xml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    check("validate_failing", &ws, &r);
    // The JUnit report of the same validation, whole.
    let junit = Run {
        code: 0,
        stdout: ws.read("junit.xml"),
        stderr: String::new(),
    };
    check("validate_failing_junit", &ws, &junit);
}

#[test]
fn status_after_two_runs() {
    let ws = workspace();
    for _ in 0..2 {
        assert_eq!(pmpo(&ws, &["execute", "plan.yaml", "-q"]).code, 0);
    }
    let r = pmpo(&ws, &["status"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    check("status", &ws, &r);
}

#[test]
fn a_refine_summary_without_a_model() {
    let ws = Ws::new();
    let r = pmpo(
        &ws,
        &[
            "refine",
            "hero-prompt",
            "--type",
            "meta-prompt",
            "--intent",
            "an image prompt for a hero banner",
            "--offline",
            "--max-iterations",
            "1",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    check("refine_summary", &ws, &r);
}
