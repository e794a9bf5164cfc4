//! Honest outcomes of `pmpo execute`: the exit code follows the final
//! validation, `--jobs` never changes the verdict, every place that counts
//! stages counts them the same way, and a cut stdout is never passed on as whole.

use pmpo_testkit as common;

use common::{Run, Ws};
use serde_json::Value;

/// The closing summary of a run (stderr from the status line on), with run
/// ids, durations and the workspace path made stable so the whole block can
/// be compared.
fn summary_block(r: &Run) -> String {
    let start = r
        .stderr
        .lines()
        .position(|l| {
            [
                "completed:",
                "failed:",
                "incomplete:",
                "cancelled:",
                "awaiting_intervention:",
                "paused:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .unwrap_or_else(|| panic!("no summary line in:\n{}", r.stderr));
    let lines: Vec<String> = r.stderr.lines().skip(start).map(normalize).collect();
    lines.join("\n")
}

/// Replaces run ids (`20261129T065502Z-f10113`) by `RUN` and the duration
/// that ends a summary line (` in 12 ms`, ` in 1.2 s`) by ` in T`.
fn normalize(line: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let is_id = chars.len() - i >= 23
            && chars[i..i + 8].iter().all(char::is_ascii_digit)
            && chars[i + 8] == 'T'
            && chars[i + 9..i + 15].iter().all(char::is_ascii_digit)
            && chars[i + 15] == 'Z'
            && chars[i + 16] == '-'
            && chars[i + 17..i + 23].iter().all(char::is_ascii_hexdigit);
        if is_id {
            out.push_str("RUN");
            i += 23;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    let is_summary = [
        "completed:",
        "failed:",
        "incomplete:",
        "cancelled:",
        "awaiting_intervention:",
        "paused:",
    ]
    .iter()
    .any(|p| out.starts_with(p));
    if is_summary && let Some((head, _)) = out.rsplit_once(" in ") {
        out = format!("{head} in T");
    }
    out
}

/// The counts of a summary object, in one fixed order.
fn counts(summary: &Value) -> Vec<(String, u64)> {
    [
        "total",
        "completed",
        "cached",
        "failed",
        "timeout",
        "cancelled",
        "skipped",
        "awaiting_decision",
        "not_started",
    ]
    .iter()
    .map(|k| (k.to_string(), summary[k].as_u64().unwrap_or(0)))
    .collect()
}

/// The EXECUTION_FINISHED message of the last run in the event log.
fn finished_event(ws: &Ws) -> String {
    ws.read("logs/executor.jsonl")
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "EXECUTION_FINISHED")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no EXECUTION_FINISHED event"))
}

/// Checks that the terminal, `--json`, the results file, the event log, the
/// refinement log and `pmpo status` all tell the same counts and status.
fn assert_one_vocabulary(ws: &Ws, r: &Run) {
    let json = r.json();
    let file = ws.read_json(".state/execution_results.json");
    assert_eq!(counts(&json["summary"]), counts(&file["summary"]));
    assert_eq!(json["status"], file["status"]);
    let status = json["status"].as_str().unwrap();
    let summary_line = r
        .stderr
        .lines()
        .find(|l| l.starts_with(&format!("{status}:")))
        .unwrap_or_else(|| panic!("no `{status}:` line in:\n{}", r.stderr));
    // "<status>: <describe> in <T>"
    let described = summary_line
        .strip_prefix(&format!("{status}: "))
        .and_then(|s| s.rsplit_once(" in "))
        .map(|(d, _)| d.to_string())
        .unwrap();
    assert_eq!(finished_event(ws), format!("{status}: {described}"));
    let log = ws.read("refinement_log.md");
    let last_entry = log.rsplit("## Execute run ").next().unwrap();
    assert!(
        last_entry.contains(&format!("- Result: **{status}**: {described}, in ")),
        "refinement log disagrees with `{described}`:\n{last_entry}"
    );
    let st = ws.run(&["status", "--json"]).json();
    let run = &st["runs"][0];
    assert_eq!(run["run_id"], json["run_id"]);
    assert_eq!(run["status"], json["status"]);
    assert_eq!(run["summary_text"].as_str().unwrap(), described);
    assert_eq!(counts(&run["summary"]), counts(&json["summary"]));
}

fn blocking_plan(ws: &Ws, text: &str) {
    ws.write(
        "plan.yaml",
        &format!(
            "specification:
  artifact_name: t
  artifact_type: content
  constraints:
    - {{id: greets, description: out.txt says hello, severity: blocking}}
    - {{id: short, description: out.txt is short, severity: medium}}
    - {{id: feel, description: it feels right, severity: blocking}}
plan:
  stages:
    - id: write
      with: {{command: [sh, -c, 'echo {text} > out.txt']}}
      outputs: [out.txt]
  validation_plan:
    - {{constraint_id: greets, validation_method: contains, with: {{path: out.txt, text: hello}}}}
    - {{constraint_id: short, validation_method: file_size, with: {{path: out.txt, max_bytes: 2}}}}
    - {{constraint_id: feel, validation_method: contains, execution_required: false, with: {{path: out.txt, text: x}}}}
"
        ),
    );
}

#[test]
fn a_violated_blocking_constraint_fails_execute_and_the_summary_names_it() {
    let ws = Ws::new();
    blocking_plan(&ws, "bye");
    let r = ws.run_code(1, &["execute", "plan.yaml", "--json"]);
    assert_eq!(
        summary_block(&r),
        "failed: 1 of 1 stage succeeded (1 ran, 0 reused) in T
  blocking constraint `greets` violated: out.txt says hello
    contains failed: out.txt: does not contain \"hello\"
results: ./.state/execution_results.json
report: pmpo report RUN"
    );
    let j = r.json();
    assert_eq!(j["status"], "failed");
    // Only the blocking one fails the run; the medium one and the one left to
    // Reflect (`execution_required: false`) do not.
    let v = j["violations"].as_array().unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["constraint_id"], "greets");
    assert_eq!(v[0]["status"], "violated");
    assert_eq!(v[0]["checks"][0]["check"], "contains");
    assert!(j.get("allowed_violations").is_none());
    assert_one_vocabulary(&ws, &r);

    // Opting out reports the same violation and exits 0.
    let r = ws.run_ok(&["execute", "plan.yaml", "--json", "--allow-violations"]);
    let j = r.json();
    assert_eq!(j["status"], "completed");
    assert_eq!(j["allowed_violations"], true);
    assert_eq!(j["violations"][0]["constraint_id"], "greets");
    assert!(
        r.stderr
            .contains("note: --allow-violations: the violations above do not fail the run"),
        "{}",
        r.stderr
    );

    // Fixed: exit 0, nothing listed.
    blocking_plan(&ws, "hello");
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.json()["violations"], serde_json::json!([]));
    assert_one_vocabulary(&ws, &r);
}

/// A plan where the first stage is slow, a stage declared early depends on one
/// declared late, a stage fails while others run, and stages follow it.
const MIXED: &str = "    - id: slow
      with: {command: [sh, -c, 'sleep 0.6; echo slow > slow.txt']}
      outputs: [slow.txt]
    - id: early
      depends_on: [late]
      with: {command: [sh, -c, 'sleep 0.3; echo early > early.txt']}
      outputs: [early.txt]
    - id: after
      with: {command: [sh, -c, 'echo after > after.txt']}
      outputs: [after.txt]
    - id: late
      with: {command: [sh, -c, 'sleep 0.1; echo late > late.txt']}
      outputs: [late.txt]
    - id: breaks
      with: {command: [sh, -c, 'sleep 0.05; exit 3']}
    - id: tail
      with: {command: [sh, -c, 'echo tail > tail.txt']}
      outputs: [tail.txt]
    - id: needs_breaks
      depends_on: [breaks]
      with: {command: [echo]}
";
/// Per stage: id, status, reason.
type Verdicts = Vec<(String, String, String)>;

/// What must not depend on `--jobs`: per stage, the status and the reason.
fn verdicts(results: &Value, upto: Option<&str>) -> Verdicts {
    let mut out = Vec::new();
    for s in results["stages"].as_array().unwrap() {
        let id = s["id"].as_str().unwrap().to_string();
        if Some(id.as_str()) == upto {
            break;
        }
        out.push((
            id,
            s["status"].as_str().unwrap().to_string(),
            s["reason"].as_str().unwrap_or_default().to_string(),
        ));
    }
    out
}

/// The results and manifest without what legitimately varies between runs
/// (ids, times, durations; the run's id in its stage log's name).
fn stable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::String(s) if s.starts_with("logs/execution/") => {
                *s = "logs/execution/RUN.jsonl".into();
            }
            Value::Object(m) => {
                for k in [
                    "run_id",
                    "started_at",
                    "finished_at",
                    "generated_at",
                    "duration_ms",
                    "teardown_ms",
                    "logs",
                ] {
                    m.remove(k);
                }
                for (_, x) in m.iter_mut() {
                    strip(x);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[test]
fn the_verdict_and_what_precedes_the_first_failure_do_not_depend_on_jobs() {
    let mut reference: Option<(i32, Verdicts)> = None;
    for jobs in ["1", "2", "8"] {
        let ws = Ws::new();
        ws.plan(MIXED);
        let r = ws.run(&["execute", "plan.yaml", "--json", "-j", jobs]);
        let j = r.json();
        // The reference order: declared, dependencies first.
        let order: Vec<&str> = j["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "slow",
                "after",
                "late",
                "early",
                "breaks",
                "tail",
                "needs_breaks"
            ]
        );
        // Every stage before the failure in that order completes, even the ones
        // that could only start after the failure happened (`early` waits for `late`);
        // a failure never kills a running stage (`slow`).
        let got = (r.code, verdicts(&j, Some("breaks")));
        for (id, status, _) in &got.1 {
            assert_eq!(status, "COMPLETED", "{id} with --jobs {jobs}");
            assert!(ws.p(&format!("{id}.txt")).exists());
        }
        assert_eq!(got.1.len(), 4);
        assert_eq!(j["stages"][4]["status"], "FAILED");
        assert_eq!(j["stages"][6]["reason"], "upstream stage `breaks` FAILED");
        assert_eq!(r.code, 1);
        match &reference {
            None => reference = Some(got),
            Some(want) => assert_eq!(&got, want, "--jobs {jobs}"),
        }
        assert_one_vocabulary(&ws, &r);
    }
    // With --jobs 1 nothing after the failure starts.
    let ws = Ws::new();
    ws.plan(MIXED);
    let j = ws
        .run(&["execute", "plan.yaml", "--json", "-j", "1"])
        .json();
    assert_eq!(j["stages"][5]["status"], "SKIPPED");
    assert_eq!(
        j["stages"][5]["reason"],
        "not run: stage `breaks` failed and the run stops at the first failure (use --keep-going to run independent stages)"
    );
    assert!(!ws.p("tail.txt").exists());
}

#[test]
fn with_keep_going_the_whole_results_and_manifest_do_not_depend_on_jobs() {
    let mut reference: Option<(i32, Value, Value)> = None;
    for jobs in ["1", "2", "8"] {
        let ws = Ws::new();
        ws.plan(MIXED);
        let r = ws.run_code(
            1,
            &["execute", "plan.yaml", "--json", "--keep-going", "-j", jobs],
        );
        let results = stable(ws.read_json(".state/execution_results.json"));
        let manifest = stable(ws.read_json("artifact_manifest.json"));
        assert_eq!(
            counts(&results["summary"]),
            counts(&serde_json::json!({"total": 7, "completed": 5, "failed": 1, "skipped": 1}))
        );
        match &reference {
            None => reference = Some((r.code, results, manifest)),
            Some((code, res, man)) => {
                assert_eq!(r.code, *code);
                assert_eq!(&results, res, "--jobs {jobs}");
                assert_eq!(&manifest, man, "--jobs {jobs}");
            }
        }
        assert_one_vocabulary(&ws, &r);
    }
}

#[test]
fn a_succeeding_plan_gives_the_same_results_for_every_jobs() {
    let plan = "    - id: b
      depends_on: [a]
      with: {command: [sh, -c, 'cat a.txt > b.txt']}
      outputs: [b.txt]
    - id: a
      with: {command: [sh, -c, 'sleep 0.1; echo a > a.txt']}
      outputs: [a.txt]
    - id: c
      with: {command: [sh, -c, 'echo c > c.txt']}
      outputs: [c.txt]
";
    let mut reference = None;
    for jobs in ["1", "2", "8"] {
        let ws = Ws::new();
        ws.plan(plan);
        let r = ws.run_ok(&["execute", "plan.yaml", "--json", "-j", jobs]);
        let got = (
            stable(ws.read_json(".state/execution_results.json")),
            stable(ws.read_json("artifact_manifest.json")),
        );
        match &reference {
            None => reference = Some(got),
            Some(want) => assert_eq!(&got, want, "--jobs {jobs}"),
        }
        assert_one_vocabulary(&ws, &r);
    }
}

const PAUSING: &str = "    - id: first
      with: {command: [sh, -c, 'sleep 0.3; echo 1 > first.txt']}
      outputs: [first.txt]
    - id: broken
      on_failure: manual
      with: {command: [sh, -c, 'echo cannot >&2; exit 1']}
    - id: dependent
      depends_on: [broken]
      with: {command: [echo]}
    - id: independent
      with: {command: [sh, -c, 'echo x > ind.txt']}
      outputs: [ind.txt]
";

#[test]
fn a_paused_run_counts_what_waits_and_names_it_in_errors_for_every_jobs() {
    for jobs in ["1", "2", "8"] {
        let ws = Ws::new();
        ws.plan(PAUSING);
        let r = ws.run_code(3, &["execute", "plan.yaml", "--json", "-j", jobs]);
        let j = r.json();
        assert_eq!(j["status"], "awaiting_intervention");
        // What precedes the paused stage ran, whatever the number of jobs.
        assert_eq!(j["stages"][0]["status"], "COMPLETED", "--jobs {jobs}");
        assert_eq!(j["stages"][1]["status"], "AWAITING_INTERVENTION");
        assert_eq!(j["summary"]["awaiting_decision"], 1);
        assert_eq!(j["summary"]["failed"], 0);
        let e = common::error_of(&j, "broken");
        assert_eq!(e["kind"], "awaiting_decision");
        let run_id = j["run_id"].as_str().unwrap();
        assert!(
            e["hint"]
                .as_str()
                .unwrap()
                .contains(&format!("pmpo resume {run_id} --retry")),
            "{e}"
        );
        assert_eq!(e["stderr_tail"], "cannot");
        assert_one_vocabulary(&ws, &r);
        if jobs == "1" {
            assert_eq!(
                summary_block(&r),
                format!(
                    "awaiting_intervention: 1 of 4 stages succeeded (1 ran, 0 reused), 1 awaiting a decision, 2 not started in T
  error in `broken` (awaiting_decision): awaiting a decision after: exited with code 1: cannot; answer with `pmpo resume RUN --retry|--skip|--abort`
    hint: decide with `pmpo resume RUN --retry`, `--skip` or `--abort`
results: ./.state/execution_results.json
report: pmpo report RUN"
                )
            );
        }

        // Skipping the stage: nothing failed, but the run is not complete.
        let r = ws.run_code(1, &["resume", run_id, "--skip", "--json", "-j", jobs]);
        let j = r.json();
        assert_eq!(j["status"], "incomplete");
        // `first` is carried over from before the pause; `independent` ran.
        assert_eq!(
            counts(&j["summary"]),
            counts(&serde_json::json!({"total": 4, "completed": 2, "skipped": 2}))
        );
        assert_eq!(j["stages"][1]["status"], "SKIPPED");
        assert!(
            j["stages"][1]["reason"]
                .as_str()
                .unwrap()
                .starts_with("skipped by the user")
        );
        assert_one_vocabulary(&ws, &r);
    }
}

#[test]
fn a_cached_rerun_is_counted_as_reused_everywhere() {
    let ws = Ws::new();
    ws.plan(
        "    - id: a\n      with: {command: [sh, -c, 'echo a > a.txt']}\n      outputs: [a.txt]\n    - id: b\n      depends_on: [a]\n      with: {command: [sh, -c, 'cat a.txt > b.txt']}\n      outputs: [b.txt]\n",
    );
    ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    assert_eq!(
        summary_block(&r),
        "completed: 2 of 2 stages succeeded (0 ran, 2 reused) in T
results: ./.state/execution_results.json
report: pmpo report RUN"
    );
    assert_eq!(r.json()["summary"]["cached"], 2);
    assert_one_vocabulary(&ws, &r);
}

#[test]
fn a_cut_stdout_is_never_passed_on_and_stdout_file_has_all_of_it() {
    let ws = Ws::new();
    ws.plan(
        "    - id: big
      with: {command: [python3, -c, \"import sys; sys.stdout.write('x' * 2000000 + 'END')\"]}
    - id: small
      with: {command: [echo, hello]}
    - id: whole
      depends_on: [big]
      with: {command: [sh, -c, 'wc -c < \"$0\" > whole.txt; tail -c 3 \"$0\" >> whole.txt', $big.stdout_file]}
      outputs: [whole.txt]
    - id: small_file
      depends_on: [small]
      with: {command: [sh, -c, 'cat \"$1\" > small.txt; echo \"$0\" >> small.txt', $small.stdout, $small.stdout_file]}
      outputs: [small.txt]
    - id: cut
      depends_on: [big]
      with: {command: [echo, $big.stdout]}
",
    );
    let r = ws.run_code(
        1,
        &["execute", "plan.yaml", "--json", "--keep-going", "-j", "1"],
    );
    let j = r.json();
    let e = common::error_of(&j, "cut");
    assert_eq!(
        e["message"],
        "`$big.stdout`: stage `big` printed 2000003 bytes on stdout, of which pmpo keeps 1114112 (the first 1 MiB and the last 64 KiB), so the value would be cut; read the whole output from the file `$big.stdout_file` names instead"
    );
    assert_eq!(ws.read("whole.txt"), "2000003\nEND");
    assert_eq!(ws.read("small.txt"), "hello\nhello\n");
    let run_id = j["run_id"].as_str().unwrap();
    assert_eq!(
        std::fs::metadata(ws.p(&format!(".state/output/{run_id}/big.stdout")))
            .unwrap()
            .len(),
        2_000_003
    );
    // Resumed or cached, the reference still refuses the cut value.
    let r = ws.run(&["execute", "plan.yaml", "--json", "--keep-going"]);
    assert_eq!(r.code, 1);
    assert_eq!(common::error_of(&r.json(), "cut")["message"], e["message"]);
}

#[test]
fn a_cancelled_run_counts_the_stopped_stage_as_cancelled_not_failed() {
    let ws = Ws::new();
    ws.plan(
        "    - id: a\n      with: {command: [sh, -c, 'echo a']}\n    - id: b\n      with: {command: [sh, -c, 'touch started; sleep 20']}\n      outputs: [started]\n    - id: c\n      with: {command: [echo, c]}\n",
    );
    let child = common::bin()
        .args(["execute", "plan.yaml", "--json", "-j", "1"])
        .current_dir(ws.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !ws.p("started").exists() {
        assert!(t.elapsed().as_secs() < 20, "stage b never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let r: Run = child.wait_with_output().unwrap().into();
    assert_eq!(r.code, 130, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["status"], "cancelled");
    assert_eq!(j["stages"][1]["status"], "CANCELLED");
    assert_eq!(j["stages"][2]["status"], "SKIPPED");
    assert_eq!(
        counts(&j["summary"]),
        counts(&serde_json::json!({"total": 3, "completed": 1, "cancelled": 1, "skipped": 1}))
    );
    assert_eq!(
        summary_block(&r),
        "cancelled: 1 of 3 stages succeeded (1 ran, 0 reused), 1 cancelled, 1 skipped in T
  error in `b` (cancelled): cancelled by the user; its process group was killed
results: ./.state/execution_results.json
report: pmpo report RUN"
    );
    assert_one_vocabulary(&ws, &r);
}
