//! A reader that closes the pipe early (`| head -1`, `| true`) never makes
//! pmpo panic: listing commands end quietly with exit 0, and runs finish
//! their work, record everything and exit with their usual code.

use pmpo_testkit as common;

use std::process::Stdio;

use common::Ws;

/// Starts pmpo with no standard input and its stdout and stderr on pipes.
fn spawn_piped(ws: &Ws, args: &[&str]) -> std::process::Child {
    common::bin()
        .args(args)
        .current_dir(ws.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `pmpo {}`: {e}", args.join(" ")))
}

/// Runs pmpo with stdout and stderr connected to pipes whose reading ends
/// are closed before it writes anything.
fn run_into_closed_pipes(ws: &Ws, args: &[&str]) -> (i32, bool) {
    let mut child = spawn_piped(ws, args);
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    // A panic exits 101; a signal (SIGPIPE) would leave no code.
    (status.code().unwrap_or(-1), status.code().is_some())
}

#[test]
fn every_command_survives_a_reader_that_went_away() {
    let ws = Ws::new();
    ws.plan(
        "    - id: a\n      with: {command: [sh, -c, 'echo a > a.txt']}\n      outputs: [a.txt]\n    - id: b\n      depends_on: [a]\n      with: {command: [sh, -c, 'cat a.txt > b.txt']}\n      outputs: [b.txt]\n",
    );
    // A run writes progress, a summary and (with --json) results: it still
    // finishes and records everything.
    let (code, exited) = run_into_closed_pipes(&ws, &["execute", "plan.yaml", "--json"]);
    assert!(exited);
    assert_eq!(code, 0);
    let res = ws.read_json(".state/execution_results.json");
    assert_eq!(res["status"], "completed");
    assert_eq!(ws.read("b.txt"), "a\n");
    // Its exit code stays the run's own.
    ws.plan("    - id: bad\n      with: {command: [sh, -c, 'exit 3']}\n");
    let (code, _) = run_into_closed_pipes(&ws, &["execute", "plan.yaml"]);
    assert_eq!(code, 1);
    // A refinement too: it converges and keeps its state, whatever its readers do.
    ws.write("notes.md", "# Notes\n\nA short report.\n");
    let (code, _) = run_into_closed_pipes(
        &ws,
        &[
            "refine", "r", "--type", "content", "--input", "notes.md", "--json",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(
        ws.read_json(".refiner/artifacts/r/state.json")["convergence_status"],
        "converged"
    );
    for args in [
        &["status"][..],
        &["status", "r"],
        &["status", "--json"],
        &["list"],
        &["list", "--json"],
        &["ledger"],
        &["ledger", "--json"],
        &["metrics"],
        &["adapters"],
        &["adapters", "--json"],
        &["provider"],
        &["doctor"],
        &["check", "plan.yaml"],
        &["check", "plan.yaml", "--json"],
        &["validate", "plan.yaml"],
        &["--help"],
    ] {
        let (code, exited) = run_into_closed_pipes(&ws, args);
        assert!(exited, "{args:?} was killed by a signal");
        assert_ne!(code, 101, "{args:?} panicked");
        assert_eq!(code, 0, "{args:?}");
    }
}

/// Runs pmpo with only stdout going to a pipe closed before it writes
/// (stderr kept, as `pmpo execute | true` leaves it); returns the exit code.
fn run_with_closed_stdout(ws: &Ws, args: &[&str]) -> (i32, String) {
    let mut child = spawn_piped(ws, args);
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The facts of a workspace that must not depend on who reads the output:
/// the files present (timestamps and run ids aside) and the verdicts.
fn recorded(ws: &Ws) -> (Vec<String>, serde_json::Value) {
    let files: Vec<String> = ws
        .files()
        .into_iter()
        .filter(|f| !f.starts_with(".state/output/") && !f.starts_with(".refiner/backups/"))
        .filter(|f| !f.contains(".pmpo-tmp-"))
        .map(|f| {
            // Refinement ids and archive times differ from run to run.
            f.split('/')
                .map(|part| {
                    if part.len() > 11 && part.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
                        "TIME".to_string()
                    } else if let Some(rest) = part.strip_prefix("cp-") {
                        format!("cp-ID{}", &rest[rest.find('-').unwrap_or(0)..])
                    } else {
                        part.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    let results = ws.read_json(".state/execution_results.json");
    let stages: Vec<(String, String)> = results["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let constraints: Vec<(String, String)> = ws.read_json("constraints.json")["constraints"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| (c["id"].to_string(), c["status"].to_string()))
                .collect()
        })
        .unwrap_or_default();
    (
        files,
        serde_json::json!({"status": results["status"], "stages": stages, "constraints": constraints}),
    )
}

#[test]
fn runs_into_a_closed_stdout_finish_and_record_as_an_unpiped_run_does() {
    let plan = "specification:
  artifact_name: t
  artifact_type: code
  constraints:
    - {id: has-b, description: b.txt holds a, severity: blocking}
plan:
  stages:
    - id: a
      with: {command: [sh, -c, 'echo a > a.txt']}
      outputs: [a.txt]
    - id: b
      depends_on: [a]
      with: {command: [sh, -c, 'cat a.txt > b.txt']}
      outputs: [b.txt]
    - id: broken
      with: {command: [sh, -c, 'echo no >&2; exit 3']}
  validation_plan:
    - constraint_id: has-b
      validation_method: contains
      with: {path: b.txt, text: zzz}
";
    let piped = Ws::new();
    let plain = Ws::new();
    for ws in [&piped, &plain] {
        ws.write("plan.yaml", plan);
        ws.write("notes.md", "# Notes\n\nA short report.\n");
    }
    let runs: &[&[&str]] = &[
        &["execute", "plan.yaml", "--keep-going", "--json"],
        &["execute", "plan.yaml", "--keep-going"],
        &["validate", "plan.yaml"],
        &[
            "refine", "r", "--type", "content", "--input", "notes.md", "--json",
        ],
    ];
    for args in runs {
        let (code, stderr) = run_with_closed_stdout(&piped, args);
        let normal = plain.run(args);
        assert_ne!(code, 101, "{args:?} panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(code, normal.code, "{args:?}: {stderr}");
        assert_eq!(recorded(&piped), recorded(&plain), "{args:?}");
    }
    // The usual outcome codes: a failed stage, a violated blocking constraint.
    assert_eq!(plain.run(runs[0]).code, 1);
    assert_eq!(plain.run(runs[2]).code, 1);
    let state = |ws: &Ws| {
        let s = ws.read_json(".refiner/artifacts/r/state.json");
        (s["convergence_status"].clone(), s["iteration"].clone())
    };
    assert_eq!(state(&piped), state(&plain));
    assert_eq!(state(&piped).0, "converged");
}
