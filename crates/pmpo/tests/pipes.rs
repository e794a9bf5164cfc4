//! A reader that closes the pipe early (`| head -1`, `| true`) never makes
//! pmpo panic: listing commands end quietly with exit 0, and runs finish
//! their work, record everything and exit with their usual code.

mod common;

use std::process::Stdio;

use common::Ws;

/// Runs pmpo with stdout and stderr connected to pipes whose reading ends
/// are closed before it writes anything.
fn run_into_closed_pipes(ws: &Ws, args: &[&str]) -> (i32, bool) {
    let mut child = common::bin()
        .args(args)
        .current_dir(ws.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
        &["ledger"],
        &["ledger", "--json"],
        &["metrics"],
        &["adapters"],
        &["provider"],
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
