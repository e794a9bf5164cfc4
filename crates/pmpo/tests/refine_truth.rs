//! `pmpo refine` tells the truth about what this run proved, through the
//! real binary: Ctrl-C during a model call leaves the phase not done (and the
//! next run asks again); a failed Execute never converges on files an
//! earlier run left behind; named artifacts refined in one workspace never
//! fail one another and the shared manifest keeps every owner's entries.

use pmpo_testkit as common;
use pmpo_testkit::model_server;
use pmpo_testkit::refine::*;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use model_server::*;
use serde_json::{Value, json};

const KEY: &str = "sk-fake-truth-7a2e91";

fn with_server(ws: &Ws, server: &ModelServer) -> Command {
    with_model(ws, server, KEY, "truth-test-model")
}

/// The baseline stages a Plan prompt shows (the model answers with them).
fn baseline(prompt: &str) -> Value {
    let line = prompt
        .split("The deterministic baseline plan (stages as JSON):\n")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or("[]");
    serde_json::from_str(line).unwrap_or(json!([]))
}

/// The model's "calm" constraint, with this severity.
fn calm(severity: &str) -> Value {
    json!({"id": "calm", "description": "The mark feels calm", "severity": severity, "type": "brand"})
}

/// `answer`, held back a minute while `hold` is set (the model "thinks").
fn held(answer: Reply, hold: &AtomicBool) -> Reply {
    if hold.load(Ordering::SeqCst) {
        answer.delay(Duration::from_secs(60))
    } else {
        answer
    }
}

/// Ctrl-C while the model is asked for the specification: the run ends as
/// cancelled (130), Specify is not checkpointed and no adapter fallback is
/// recorded in its place; the next `pmpo refine` asks the model again and
/// goes on to the end.
#[test]
fn ctrl_c_during_a_model_call_leaves_the_phase_not_done_and_the_next_run_asks_again() {
    let ws = Ws::new();
    ws.write("brand/logo.svg", LOGO);
    // While `hold` is set, every Specify request is held open (the model
    // "thinks"); afterwards the server answers every phase.
    let hold = Arc::new(AtomicBool::new(true));
    let h = hold.clone();
    let server = ModelServer::start(move |s, _| {
        let p = s.prompt();
        if p.starts_with("Phase: Specify") {
            let answer = reply_json(json!({
                "goals": ["a mark that reads at 16 px"],
                "constraints": [calm("medium")],
            }));
            held(answer, &h)
        } else if p.starts_with("Phase: Plan") {
            reply_json(json!({"stages": baseline(&p)}))
        } else if p.starts_with("Phase: Reflect") {
            judge_all(&p, "calm enough")
        } else {
            openai_error(400, "unexpected prompt", "bad")
        }
    });
    let specify_requests = |server: &ModelServer| {
        server
            .chat_requests()
            .iter()
            .filter(|r| r.prompt().starts_with("Phase: Specify"))
            .count()
    };

    let child = with_server(&ws, &server)
        .args([
            "refine",
            "calm",
            "--type",
            "logo",
            "--input",
            "brand/logo.svg",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the Specify request", Duration::from_secs(60), || {
        specify_requests(&server) >= 1
    });
    interrupt(&child);
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, 130, "stderr: {}", out.stderr);
    let report = out.json();
    assert_eq!(report["outcome"], "cancelled");
    let done = phases(&ws, "calm");
    assert!(
        !done.iter().any(|p| p == "specify"),
        "a cancelled Specify is not a completed phase: {done:?}"
    );
    assert!(
        !ws.p(".refiner/artifacts/calm/specification.json").exists(),
        "no fallback specification stands in for the answer that never came"
    );
    let log = std::fs::read_to_string(ws.p("refinement_log.md")).unwrap_or_default();
    assert!(
        !log.contains("— Specify"),
        "no Specify entry is logged for a cancelled call: {log}"
    );
    assert!(
        !out.stderr.contains("adapter's defaults are used"),
        "{}",
        out.stderr
    );

    // The next run asks the model again, and this time it answers.
    hold.store(false, Ordering::SeqCst);
    let r = run(with_server(&ws, &server), &["refine", "calm", "--json"]);
    assert_eq!(
        specify_requests(&server),
        2,
        "the Specify request is sent again"
    );
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let report = r.json();
    assert_eq!(report["outcome"], "converged", "{}", r.stderr);
    // The cycle's specification (archived with it) is the model's.
    let spec = ws
        .files()
        .into_iter()
        .find(|f| f.starts_with(".refiner/artifacts/calm/") && f.ends_with("specification.json"))
        .expect("the cycle's specification is kept");
    let spec = ws.read_json(&spec);
    assert_eq!(spec["specified_by"], "model", "{spec}");
    assert!(
        spec["specification"]["constraints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "calm")
    );
}

/// A refinement that converged, then loses its input: the import stage
/// fails, and the loop must not converge on the files the earlier run left
/// in dist/. It says which files are unproven and why, per constraint and in
/// the decision; the manifest lists none of them as this run's.
#[test]
fn a_failed_execute_never_converges_on_files_an_earlier_run_left() {
    let ws = Ws::new();
    ws.write("logo.svg", LOGO);
    let first = run(
        pmpo(&ws),
        &[
            "refine", "L", "--type", "logo", "--input", "logo.svg", "--json",
        ],
    );
    assert_eq!(first.code, 0, "{}", first.stderr);
    let report = first.json();
    assert_eq!(report["outcome"], "converged");
    // Every measured constraint names its run and the files it rests on.
    let run_id = report["iteration_history"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let svg = report["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "svg-valid")
        .unwrap()
        .clone();
    assert_eq!(svg["run_id"], run_id.as_str());
    assert_eq!(svg["files"][0]["path"], "dist/logo.svg");
    assert_eq!(
        svg["files"][0]["blake3"].as_str().unwrap(),
        blake3::hash(ws.read("dist/logo.svg").as_bytes())
            .to_hex()
            .as_str()
    );
    assert!(
        first
            .stderr
            .contains(&format!("evidence: run {run_id} on dist/logo.svg")),
        "{}",
        first.stderr
    );

    std::fs::remove_file(ws.p("logo.svg")).unwrap();
    assert!(
        ws.p("dist/logo.svg").exists(),
        "the earlier output is still there"
    );
    let again = run(
        pmpo(&ws),
        &["refine", "L", "--max-iterations", "2", "--json"],
    );
    assert_ne!(again.code, 0, "{}", again.stderr);
    let report = again.json();
    assert_eq!(
        report["outcome"], "max_iterations_exceeded",
        "{}",
        again.stderr
    );
    assert!(!again.stderr.contains("converged"), "{}", again.stderr);
    let reason = report["last_decision"]["reason"].as_str().unwrap();
    assert!(reason.contains("Execute did not complete"), "{reason}");
    assert!(
        reason.contains("`dist/logo.svg`: stage `import` failed"),
        "{reason}"
    );
    // No constraint that reads the artifact's files is satisfied on old files
    // (a violation seen on them stands: it claims no success).
    for c in report["constraints"].as_array().unwrap() {
        if c["id"] == "manifest-complete" {
            continue;
        }
        assert_ne!(c["status"], "satisfied", "{c}");
        assert!(
            c["unproven"].as_array().is_some_and(|u| !u.is_empty()),
            "{c}"
        );
    }
    let status_of = |id: &str| {
        report["constraints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status_of("svg-valid"), "not_checked");
    assert_eq!(status_of("png-sizes"), "not_checked");
    assert!(
        again
            .stderr
            .contains("unproven: `dist/logo.svg`: stage `import` failed"),
        "{}",
        again.stderr
    );
    // The manifest names no file as this run's.
    let m = ws.read_json("artifact_manifest.json");
    assert_eq!(m["files"].as_array().map_or(0, Vec::len), 0, "{m}");
}

/// Runs `pmpo refine NAME` (creating it from `NAME.md` the first time).
fn refine_content(ws: &Ws, name: &str) -> Run {
    let input = format!("{name}.md");
    let state = ws.p(&format!(".refiner/artifacts/{name}/state.json"));
    let mut args = vec!["refine", name, "--max-iterations", "1", "--json"];
    if !state.exists() {
        args.extend(["--type", "content", "--input", &input]);
    }
    run(pmpo(ws), &args)
}

/// The owners in the shared manifest, each with its files.
fn manifest_owners(ws: &Ws) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::<String, Vec<String>>::new();
    for f in ws.read_json("artifact_manifest.json")["files"]
        .as_array()
        .unwrap()
    {
        out.entry(f["owner"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(f["path"].as_str().unwrap().to_string());
    }
    out
}

/// The dist/ files the artifact's latest reflection looked at.
fn reflected_files(ws: &Ws, name: &str) -> Vec<String> {
    let dir = format!(".refiner/artifacts/{name}/");
    let f = ws
        .files()
        .into_iter()
        .filter(|f| f.starts_with(&dir) && f.contains("reflections/iteration-"))
        .max_by_key(|f| std::fs::metadata(ws.p(f)).unwrap().modified().unwrap())
        .unwrap();
    ws.read_json(&f)["dist_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn check_isolated(ws: &Ws, names: &[&str]) {
    for n in names {
        for f in reflected_files(ws, n) {
            assert!(
                f.starts_with(&format!("dist/{n}")) || f.starts_with(&format!("dist/previews/{n}")),
                "`{n}` looked at another artifact's file {f}"
            );
        }
    }
}

/// Named artifacts refined in one workspace, interleaved: one artifact's
/// empty output or failed run never fails another, each one looks only at
/// its own files, and the shared manifest keeps every owner's entries.
#[test]
fn named_artifacts_in_one_workspace_never_fail_one_another() {
    let ws = Ws::new();
    for (n, title) in [("a", "Alpha"), ("b", "Beta"), ("c", "Gamma")] {
        ws.write(
            &format!("{n}.md"),
            &format!("# {title}\n\nA short note about {title}.\n"),
        );
    }
    // Two artifacts, interleaved.
    for n in ["a", "b"] {
        let r = refine_content(&ws, n);
        assert_eq!(r.code, 0, "{n}: {}", r.stderr);
    }
    assert_eq!(
        manifest_owners(&ws).keys().cloned().collect::<Vec<_>>(),
        ["a", "b"]
    );
    // `a` now makes an empty page body: `a` does not converge...
    ws.write("a.md", "");
    let r = refine_content(&ws, "a");
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(ws.read("dist/a-body.html").is_empty());
    // ...and `b` is not touched by it.
    let r = refine_content(&ws, "b");
    assert_eq!(r.code, 0, "b: {}", r.stderr);
    assert_eq!(r.json()["outcome"], "converged");
    assert!(!r.stdout.contains("a-body.html"), "{}", r.stdout);
    check_isolated(&ws, &["a", "b"]);

    // A third one joins; then `c` fails outright (its input is gone).
    let r = refine_content(&ws, "c");
    assert_eq!(r.code, 0, "c: {}", r.stderr);
    let owners = manifest_owners(&ws);
    assert_eq!(
        owners.keys().cloned().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "{owners:?}"
    );
    std::fs::remove_file(ws.p("c.md")).unwrap();
    let r = refine_content(&ws, "c");
    assert_ne!(r.code, 0, "{}", r.stderr);
    // `c`'s failed run dropped only its own entries.
    let owners = manifest_owners(&ws);
    assert!(!owners.contains_key("c"), "{owners:?}");
    assert!(
        owners["b"].contains(&"dist/b.html".to_string()),
        "{owners:?}"
    );
    for n in ["b", "a"] {
        if n == "a" {
            ws.write("a.md", "# Alpha again\n\nBack to a real note.\n");
        }
        let r = refine_content(&ws, n);
        assert_eq!(r.code, 0, "{n}: {}", r.stderr);
        assert_eq!(r.json()["outcome"], "converged", "{n}");
    }
    check_isolated(&ws, &["a", "b", "c"]);
    let owners = manifest_owners(&ws);
    assert_eq!(
        owners.keys().cloned().collect::<Vec<_>>(),
        ["a", "b"],
        "{owners:?}"
    );
    // Someone changes `b`'s page by hand: `a` is not failed by it (its
    // manifest check covers its own entries), `b` is.
    ws.write("dist/b.html", "<p>edited</p>");
    let r = refine_content(&ws, "a");
    assert_eq!(r.code, 0, "a: {}", r.stderr);
    let m = ws.read_json("artifact_manifest.json");
    assert!(
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["owner"] == "b"),
        "{m}"
    );
}

/// A plain `pmpo execute` in a workspace where artifacts were refined
/// writes its own (ownerless) entries and keeps every artifact's.
#[test]
fn pmpo_execute_keeps_the_entries_of_refined_artifacts() {
    let ws = Ws::new();
    ws.write("a.md", "# Alpha\n\nA short note.\n");
    let r = refine_content(&ws, "a");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before: Vec<Value> = ws.read_json("artifact_manifest.json")["files"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!before.is_empty() && before.iter().all(|f| f["owner"] == "a"));
    ws.plan(
        "    - id: note\n      tool: run\n      with:\n        command: [sh, -c, \"mkdir -p dist && echo hi > dist/note.txt\"]\n      outputs: [dist/note.txt]\n",
    );
    ws.run_ok(&["execute", "plan.yaml"]);
    let m = ws.read_json("artifact_manifest.json");
    let files = m["files"].as_array().unwrap();
    for f in &before {
        assert!(files.contains(f), "`pmpo execute` dropped {f}: {m}");
    }
    let note = files.iter().find(|f| f["path"] == "dist/note.txt").unwrap();
    assert!(note.get("owner").is_none(), "{note}");
    // A second plain run replaces its own entries, not the artifact's.
    ws.run_ok(&["execute", "plan.yaml", "--force"]);
    let m = ws.read_json("artifact_manifest.json");
    let files = m["files"].as_array().unwrap();
    assert_eq!(
        files
            .iter()
            .filter(|f| f["path"] == "dist/note.txt")
            .count(),
        1,
        "{m}"
    );
    assert_eq!(files.len(), before.len() + 1, "{m}");
}

/// Ctrl-C while the model is asked for the plan: the plan phase is not
/// done (no adapter plan is written in its place); the next run asks again.
#[test]
fn ctrl_c_while_the_model_plans_leaves_plan_not_done() {
    let ws = Ws::new();
    ws.write("brand/logo.svg", LOGO);
    let hold = Arc::new(AtomicBool::new(true));
    let h = hold.clone();
    let server = ModelServer::start(move |s, _| {
        let p = s.prompt();
        if p.starts_with("Phase: Specify") {
            reply_json(json!({"goals": ["g"], "constraints": []}))
        } else if p.starts_with("Phase: Plan") {
            let answer = reply_json(json!({"stages": baseline(&p)}));
            held(answer, &h)
        } else {
            reply_json(json!({"judgements": []}))
        }
    });
    let plans = |server: &ModelServer| phase_requests(server, "Plan");
    let out = ctrl_c_during(
        with_server(&ws, &server),
        &server,
        "p",
        "Plan",
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert_eq!(phases(&ws, "p"), ["specify"]);
    assert!(!ws.p(".refiner/artifacts/p/plans/iteration-1.json").exists());
    hold.store(false, Ordering::SeqCst);
    let r = run(with_server(&ws, &server), &["refine", "p", "--json"]);
    assert_eq!(plans(&server), 2, "the Plan request is sent again");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["outcome"], "converged");
}

/// Ctrl-C typed at the approval gate's terminal prompt ends the run at
/// once (130) with nothing answered: the gate stays pending and the next
/// run asks again. The prompt needs a terminal, so the run is given one by
/// `script`; Ctrl-C is the byte the terminal turns into SIGINT.
#[test]
fn ctrl_c_at_the_approval_prompt_cancels_and_leaves_the_gate_pending() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    }
    use std::io::Write as _;
    let ws = Ws::new();
    ws.write("logo.svg", LOGO);
    let cmd = format!(
        "{} refine g --type logo --input logo.svg --approval",
        env!("CARGO_BIN_EXE_pmpo")
    );
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .current_dir(ws.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("PMPO_PROVIDER_CONFIG")
        .env("NO_COLOR", "1")
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pending = |ws: &Ws| {
        ws.p(".refiner/artifacts/g/state.json").exists()
            && state(ws, "g")["loop"]["approval"]["status"] == "pending"
    };
    wait_until("the approval prompt", Duration::from_secs(90), || {
        pending(&ws)
    });
    // The prompt is printed right after the pending state is saved.
    std::thread::sleep(Duration::from_millis(500));
    child.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    child.stdin.as_mut().unwrap().flush().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            // Closing the terminal (SIGHUP) ends what is left.
            let _ = child.kill();
            panic!("Ctrl-C at the prompt did not end the run");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    let st = state(&ws, "g");
    assert_eq!(st["loop"]["approval"]["status"], "pending", "{st}");
    assert!(st["loop"]["approval"]["answered_at"].is_null());
    assert!(!phases(&ws, "g").iter().any(|p| p == "persist"));
    let d = ws.read("decisions.md");
    assert!(!d.contains("Approval: "), "no answer is recorded: {d}");
    // Without a terminal the next run pauses at the same gate again.
    run_code(pmpo(&ws), 3, &["refine", "g"]);
}

/// Ctrl-C while the model judges (Reflect): the constraints it was asked
/// about are not left `not_checked` as if it had failed; Reflect is not done
/// and the next run asks for the judgement again.
#[test]
fn ctrl_c_while_the_model_judges_leaves_reflect_not_done() {
    let ws = Ws::new();
    ws.write("brand/logo.svg", LOGO);
    let hold = Arc::new(AtomicBool::new(true));
    let h = hold.clone();
    let server = ModelServer::start(move |s, _| {
        let p = s.prompt();
        if p.starts_with("Phase: Specify") {
            reply_json(json!({
                "goals": ["g"],
                "constraints": [calm("blocking")],
            }))
        } else if p.starts_with("Phase: Plan") {
            reply_json(json!({"stages": baseline(&p)}))
        } else {
            let answer = judge_all(&p, "calm");
            held(answer, &h)
        }
    });
    let judged = |server: &ModelServer| phase_requests(server, "Reflect");
    let out = ctrl_c_during(
        with_server(&ws, &server),
        &server,
        "j",
        "Reflect",
        Duration::from_secs(90),
    );
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert_eq!(phases(&ws, "j"), ["specify", "plan", "execute"]);
    assert!(
        !ws.p(".refiner/artifacts/j/reflections/iteration-1.json")
            .exists()
    );
    hold.store(false, Ordering::SeqCst);
    let r = run(with_server(&ws, &server), &["refine", "j", "--json"]);
    assert_eq!(judged(&server), 2, "the judgement is asked again");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = r.json();
    assert_eq!(report["outcome"], "converged");
    let calm = report["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "calm")
        .unwrap()
        .clone();
    assert_eq!(calm["basis"], "judged", "{calm}");
}

/// With a model: when the run fails, the model is not asked to judge files
/// the run did not produce; the constraints it would judge stay
/// `not_checked` and say why.
#[test]
fn a_failed_execute_is_not_judged_by_the_model() {
    let ws = Ws::new();
    ws.write("logo.svg", LOGO);
    let server = ModelServer::start(move |s, _| {
        let p = s.prompt();
        if p.starts_with("Phase: Specify") {
            reply_json(json!({
                "goals": ["g"],
                "constraints": [calm("medium")],
            }))
        } else if p.starts_with("Phase: Plan") {
            reply_json(json!({"stages": baseline(&p)}))
        } else {
            judge_all(&p, "calm")
        }
    });
    let judged = |server: &ModelServer| {
        server
            .chat_requests()
            .iter()
            .filter(|r| r.prompt().starts_with("Phase: Reflect"))
            .count()
    };
    run_code(
        with_server(&ws, &server),
        0,
        &[
            "refine", "m", "--type", "logo", "--input", "logo.svg", "--json",
        ],
    );
    assert_eq!(judged(&server), 1);
    std::fs::remove_file(ws.p("logo.svg")).unwrap();
    let r = run_code(
        with_server(&ws, &server),
        1,
        &["refine", "m", "--max-iterations", "1", "--json"],
    );
    assert_eq!(
        judged(&server),
        1,
        "no judgement of files the run did not produce"
    );
    let report = r.json();
    let calm = report["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "calm")
        .unwrap()
        .clone();
    assert_eq!(calm["status"], "not_checked", "{calm}");
    assert!(
        calm["unproven"][0]
            .as_str()
            .unwrap()
            .contains("did not complete"),
        "{calm}"
    );
}

/// What the model may judge: a constraint without a check, or one the plan
/// marks `execution_required: false` (a judgement by design). A constraint
/// whose check ran is never handed to the model, whatever it found.
#[test]
fn only_constraints_without_a_check_are_judged() {
    let ws = Ws::new();
    ws.write("logo.svg", LOGO);
    let server = ModelServer::start(move |s, _| {
        let p = s.prompt();
        if p.starts_with("Phase: Specify") {
            reply_json(json!({
                "goals": ["g"],
                "constraints": [
                    calm("medium"),
                    {"id": "tidy", "description": "The SVG is tidy", "severity": "low", "type": "technical"},
                ],
            }))
        } else if p.starts_with("Phase: Plan") {
            reply_json(json!({
                "stages": baseline(&p),
                "validation_plan": [
                    {"constraint_id": "calm", "validation_method": "human review", "execution_required": false},
                    {"constraint_id": "tidy", "validation_method": "max_file_size", "with": {"path": "dist/logo.svg", "max_bytes": 10}},
                ],
            }))
        } else {
            // Judge everything asked as satisfied (a lenient judge).
            judge_all(&p, "fine")
        }
    });
    let r = run(
        with_server(&ws, &server),
        &[
            "refine",
            "q",
            "--type",
            "logo",
            "--input",
            "logo.svg",
            "--max-iterations",
            "1",
            "--json",
        ],
    );
    let report = r.json();
    let of = |id: &str| {
        report["constraints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(of("calm")["basis"], "judged", "{}", of("calm"));
    assert_eq!(of("calm")["status"], "satisfied");
    // `tidy` was measured (the SVG is over 10 bytes): the lenient judge
    // never saw it.
    assert_eq!(of("tidy")["status"], "violated", "{}", of("tidy"));
    assert_eq!(of("tidy")["basis"], "measured");
    let asked: Vec<String> = server
        .chat_requests()
        .iter()
        .filter(|r| r.prompt().starts_with("Phase: Reflect"))
        .flat_map(|r| to_judge(&r.prompt()))
        .collect();
    assert_eq!(asked, ["calm"]);
}
