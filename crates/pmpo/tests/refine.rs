//! `pmpo refine` and `pmpo approve` through the real binary: a refinement
//! that converges in three iterations against a scripted model server, one
//! that hits max_iterations, a regression (with its trigger), a trigger whose
//! condition is false, the approval gate answered from another process, a
//! kill -9 in the middle of an iteration, and bad input.

use pmpo_testkit as common;
use pmpo_testkit::model_server;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use model_server::*;
use serde_json::{Value, json};

const KEY: &str = "sk-fake-loop-3f9c1d";

fn pmpo(ws: &Ws) -> Command {
    let mut c = bin_without_models(ws.path());
    c.stdin(Stdio::null());
    c
}

fn run(mut c: Command, args: &[&str]) -> Run {
    c.args(args).output().unwrap().into()
}

fn with_server(ws: &Ws, server: &ModelServer) -> Command {
    let mut c = pmpo(ws);
    c.env("OPENAI_BASE_URL", server.openai_base())
        .env("OPENAI_API_KEY", KEY)
        .env("OPENAI_MODEL", "loop-test-model");
    c
}

fn state(ws: &Ws, name: &str) -> Value {
    ws.read_json(&format!(".refiner/artifacts/{name}/state.json"))
}

/// The constraint ids a Reflect prompt asks the model to judge.
fn to_judge(prompt: &str) -> Vec<String> {
    prompt
        .split("Judge only these constraints:\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .take_while(|l| l.starts_with("- "))
        .map(|l| l[2..].split(':').next().unwrap_or("").to_string())
        .collect()
}

fn reply_json(v: Value) -> Reply {
    openai(&format!("```json\n{v}\n```"), "stop")
}

/// A prompt stage as the model would plan it.
fn prompt_plan(text: &str) -> Value {
    json!({"stages": [{
        "id": "compose", "tool": "prompt",
        "description": "Write the prompt",
        "with": {"intent": text, "title": "Hero banner", "output": "dist/prompt.md",
                 "meta": "dist/prompt.meta.json", "target_platform": "dall-e-3",
                 "content_type": "meta:image-prompt"},
        "outputs": ["dist/prompt.md", "dist/prompt.meta.json"],
    }]})
}

/// A model that specifies one extra constraint, plans the prompt text of
/// each iteration from `texts`, and judges every unmeasured constraint satisfied.
fn loop_server(texts: Vec<&'static str>) -> (ModelServer, Arc<AtomicUsize>) {
    plan_server(texts.into_iter().map(prompt_plan).collect())
}

/// Like [`loop_server`] with whole plans.
fn plan_server(answers: Vec<Value>) -> (ModelServer, Arc<AtomicUsize>) {
    let plans = Arc::new(AtomicUsize::new(0));
    let count = plans.clone();
    let server = ModelServer::start(move |s, _| {
        let p = s.prompt();
        if p.starts_with("Phase: Specify") {
            reply_json(json!({
                "goals": ["a banner that reads at a glance"],
                "constraints": [{"id": "mood", "description": "The prompt sets a calm mood", "severity": "medium", "type": "semantic"}],
            }))
        } else if p.starts_with("Phase: Plan") {
            let n = count.fetch_add(1, Ordering::SeqCst);
            reply_json(answers[n.min(answers.len() - 1)].clone())
        } else if p.starts_with("Phase: Reflect") {
            let ids = to_judge(&p);
            let judgements: Vec<Value> = ids
                .iter()
                .map(|id| json!({"id": id, "status": "satisfied", "reason": "reads well"}))
                .collect();
            reply_json(json!({"judgements": judgements}))
        } else {
            openai_error(400, "unexpected prompt", "bad")
        }
    });
    (server, plans)
}

const CLEAN: &str = "Create a calm hero banner: a lighthouse at dawn over a quiet sea, soft pastel light, wide 16:9 framing.";
const TODO: &str = "Create a hero banner of TODO at dawn, soft pastel light.";
const TBD: &str = "Create a hero banner: subject TBD, soft pastel light.";

#[test]
fn a_refinement_converges_in_three_iterations_with_a_model() {
    let ws = Ws::new();
    let (server, plans) = loop_server(vec![TODO, TBD, CLEAN]);
    let r = run(
        with_server(&ws, &server),
        &[
            "refine",
            "hero",
            "--type",
            "meta-prompt",
            "--content-type",
            "meta:image-prompt",
            "--intent",
            "an image prompt for a calm hero banner",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = r.json();
    assert_eq!(report["outcome"], "converged");
    assert_eq!(report["iteration"], 3);
    assert_eq!(plans.load(Ordering::SeqCst), 3);
    let history = report["iteration_history"].as_array().unwrap();
    let decisions: Vec<&str> = history
        .iter()
        .map(|h| h["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["continue", "continue", "terminate"]);

    // Deterministic first: the placeholder was measured, the rest judged.
    let r1: Value = ws.read_json(".refiner/artifacts/hero/reflections/iteration-1.json");
    let c = |r: &Value, id: &str| {
        r["constraints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(c(&r1, "no-unfilled-placeholders")["status"], "violated");
    assert_eq!(c(&r1, "no-unfilled-placeholders")["basis"], "measured");
    assert_eq!(c(&r1, "mood")["basis"], "judged");
    assert_eq!(c(&r1, "specificity")["status"], "satisfied");
    let r3: Value = ws.read_json(".refiner/artifacts/hero/reflections/iteration-3.json");
    assert_eq!(c(&r3, "no-unfilled-placeholders")["status"], "satisfied");

    // The prompt is the artifact.
    assert!(ws.read("dist/prompt.md").contains("lighthouse"));
    let meta = ws.read_json("dist/prompt.meta.json");
    assert_eq!(meta["target_platform"], "dall-e-3");
    // Persist records the refinement in the manifest.
    let manifest = ws.read_json("artifact_manifest.json");
    assert_eq!(manifest["refinement"]["iteration"], 3);
    assert_eq!(manifest["refinement"]["convergence_status"], "converged");
    assert!(meta["characters"].as_u64().unwrap() > 50);

    // The state, the logs and the finalized cycle.
    let st = state(&ws, "hero");
    assert_eq!(st["convergence_status"], "converged");
    assert!(st["finalized_at"].is_string());
    let decisions_md = ws.read("decisions.md");
    assert!(decisions_md.contains("## Iteration 1 — Decision: continue"));
    assert!(decisions_md.contains("- Unsatisfied constraints: no-unfilled-placeholders"));
    assert!(decisions_md.contains("## Iteration 3 — Decision: terminate"));
    assert!(decisions_md.contains("- Convergence: converged"));
    let log = ws.read("refinement_log.md");
    for phase in ["Specify", "Plan", "Execute", "Reflect", "Persist"] {
        assert!(
            log.contains(&format!("## Iteration 1 — {phase}")),
            "no {phase} entry"
        );
    }
    assert!(log.contains("Planned by: model"));
    let phases: Vec<String> = st["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}{}", c["phase"].as_str().unwrap(), c["iteration"]))
        .collect();
    assert_eq!(
        phases,
        [
            "specify1", "plan1", "execute1", "reflect1", "persist1", "plan2", "execute2",
            "reflect2", "persist2", "plan3", "execute3", "reflect3", "persist3"
        ]
    );
    let history_dir = ws.p(".refiner/history/hero");
    let cycles: Vec<_> = std::fs::read_dir(history_dir).unwrap().flatten().collect();
    assert_eq!(cycles.len(), 1);
    // The cycle's plans and reflections are archived with it.
    let archived = cycles[0].path().join("files/.refiner/artifacts/hero");
    assert!(archived.join("plans/iteration-3.json").is_file());
    assert!(archived.join("reflections/iteration-1.json").is_file());
    assert!(archived.join("specification.json").is_file());
    // The key never reaches the disk.
    for f in ws.files() {
        let text = String::from_utf8_lossy(&std::fs::read(ws.p(&f)).unwrap()).into_owned();
        assert!(!text.contains(KEY), "{f} contains the API key");
    }
    // A finalized artifact starts a new cycle, seeded from the old one.
    let again = run(with_server(&ws, &server), &["refine", "hero", "--json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.json()["started"], "new_cycle");
    assert_eq!(state(&ws, "hero")["prior_cycle_id"], st["refinement_id"]);
}

#[test]
fn max_iterations_forces_termination() {
    let ws = Ws::new();
    let (server, _) = loop_server(vec![TODO]);
    let r = run(
        with_server(&ws, &server),
        &[
            "refine",
            "stuck",
            "--type",
            "meta-prompt",
            "--intent",
            "an agent prompt",
            "--max-iterations",
            "2",
            "--json",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.json()["outcome"], "max_iterations_exceeded");
    let st = state(&ws, "stuck");
    assert_eq!(st["convergence_status"], "max_iterations_exceeded");
    assert_eq!(st["current_iteration"], 2);
    assert!(
        ws.read("refinement_log.md")
            .contains("Maximum iterations reached — forcing termination")
    );
    assert!(
        ws.read("decisions.md")
            .contains("- Convergence: max_iterations_exceeded")
    );
}

fn triggers_file(ws: &Ws) {
    ws.write(
        "triggers.json",
        &json!({"triggers": [
            {"event": "on_regression", "action": {"type": "command", "target": "sh",
              "args": {"argv": ["-c", "cat > regression-event.json"]}}},
            {"event": "on_phase_complete", "condition": "iteration > 5 && phase == reflect",
             "action": {"type": "command", "target": "touch", "args": {"argv": ["never.txt"]}}},
            {"event": "on_phase_complete", "condition": "phase == persist && content_type.startsWith(meta:)",
             "action": {"type": "command", "target": "sh", "args": {"argv": ["-c", "echo $PMPO_ITERATION >> persisted.txt"]}}},
        ]})
        .to_string(),
    );
}

#[test]
fn a_regression_forces_another_iteration_and_fires_its_trigger() {
    let ws = Ws::new();
    triggers_file(&ws);
    // Iteration 1 states its task but has a TODO; iteration 2 drops the TODO
    // and the task statement (a regression); iteration 3 is clean.
    ws.write(
        "prompts/plain.txt",
        "A lighthouse at dawn, soft pastel light.\n",
    );
    let mut plain = prompt_plan("");
    plain["stages"][0]["with"] = json!({"input": "prompts/plain.txt", "output": "dist/prompt.md",
        "meta": "dist/prompt.meta.json", "target_platform": "dall-e-3"});
    let (server, _) = plan_server(vec![prompt_plan(TODO), plain, prompt_plan(CLEAN)]);
    let r = run(
        with_server(&ws, &server),
        &[
            "refine",
            "banner",
            "--type",
            "meta-prompt",
            "--intent",
            "an image prompt",
            "--triggers",
            "triggers.json",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = r.json();
    assert_eq!(report["iteration"], 3, "{}", r.stderr);
    let r2: Value = ws.read_json(".refiner/artifacts/banner/reflections/iteration-2.json");
    let regressions = r2["regressions"].as_array().unwrap();
    assert!(
        regressions.iter().any(|g| g
            .as_str()
            .unwrap()
            .contains("`states-the-task` was satisfied in iteration 1")),
        "{regressions:?}"
    );
    // Only a regression kept iteration 2 from converging.
    assert_eq!(report["iteration_history"][1]["decision"], "continue");
    assert!(
        ws.read("decisions.md")
            .contains("- Regression: constraint `states-the-task`")
    );
    // on_regression ran its command with the hook-event payload on stdin.
    let event = ws.read_json("regression-event.json");
    assert_eq!(event["event_type"], "regression_detected");
    assert_eq!(event["artifact_name"], "banner");
    assert_eq!(event["iteration"], 2);
    // The false condition never ran its action, and the log says so.
    assert!(!ws.p("never.txt").exists());
    let wlog = ws.read(".refiner/artifacts/banner/workflow.log");
    assert!(
        wlog.lines()
            .any(|l| l.contains("\"skipped\"") && l.contains("iteration > 5")),
        "{wlog}"
    );
    // The true condition ran once per iteration.
    assert_eq!(
        ws.read("persisted.txt").lines().collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
}

const LOGO: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><circle cx="32" cy="32" r="28" fill="#38bdf8"/><path d="M16 44 L32 16 L48 44 Z" fill="#818cf8"/></svg>"##;

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
    let r = run(pmpo(&ws), &args);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let report = r.json();
    assert_eq!(report["outcome"], "awaiting_approval");
    assert!(
        report["next_step"]
            .as_str()
            .unwrap()
            .contains("pmpo approve acme-logo --continue")
    );
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
    assert!(late.stderr.contains("finalized"), "{}", late.stderr);
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
    let r = run(pmpo(ws), &args);
    assert_eq!(r.code, 3, "{}", r.stderr);
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
    assert!(r.stderr.contains("is a logo, not a image"), "{}", r.stderr);
    let r = run(pmpo(&ws), &["refine", "l", "--content-type", "direct:html"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("cannot change now"), "{}", r.stderr);
    assert_eq!(ws.read(".refiner/artifacts/l/state.json"), before);
    // An artifact that is not at the gate has nothing to approve.
    assert_eq!(run(pmpo(&ws), &["init", "other", "--type", "logo"]).code, 0);
    let r = run(pmpo(&ws), &["approve", "other", "--continue"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("is not waiting for approval"),
        "{}",
        r.stderr
    );
    assert_eq!(run(pmpo(&ws), &["approve", "l", "--terminate"]).code, 0);
    let r = run(pmpo(&ws), &["refine", "l", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["outcome"], "user_terminated");
    assert_eq!(state(&ws, "l")["convergence_status"], "user_terminated");
}

#[test]
fn status_shows_the_iteration_constraints_and_last_decision() {
    let ws = Ws::new();
    ws.write("brand/logo.svg", LOGO);
    let r = run(
        pmpo(&ws),
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
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = run(pmpo(&ws), &["status", "acme"]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert!(
        s.stdout.contains("iteration   1 of at most 5"),
        "{}",
        s.stdout
    );
    assert!(s.stdout.contains("dark-contrast"), "{}", s.stdout);
    assert!(
        s.stdout.contains("decision    terminate (converged)"),
        "{}",
        s.stdout
    );
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
        for f in ws.files() {
            if f.starts_with(".refiner/") && f.ends_with(".json") {
                let text = ws.read(&f);
                assert!(
                    serde_json::from_str::<Value>(&text).is_ok(),
                    "delay {delay_ms}: {f} is torn: {text}"
                );
            }
        }
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

#[test]
fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let ws = Ws::new();
    ws.write("brand/logo.svg", LOGO);
    let r = run(pmpo(&ws), &["refine", "x", "--type", "banner"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("Unknown artifact_type: banner"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("logo, ui, a2ui, image, content, code, meta-prompt"),
        "{}",
        r.stderr
    );
    let r = run(pmpo(&ws), &["refine", "x"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("new artifact: say what it is with --type"),
        "{}",
        r.stderr
    );
    let r = run(pmpo(&ws), &["refine", "../evil", "--type", "logo"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = run(
        pmpo(&ws),
        &["refine", "x", "--type", "logo", "--input", "/etc/hostname"],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("outside the workspace"), "{}", r.stderr);
    let r = run(
        pmpo(&ws),
        &[
            "refine",
            "x",
            "--type",
            "logo",
            "--input",
            "brand/missing.svg",
        ],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    let r = run(
        pmpo(&ws),
        &["refine", "x", "--type", "logo", "--content-type", "svg"],
    );
    assert_eq!(r.code, 2);
    let r = run(
        pmpo(&ws),
        &["refine", "x", "--type", "logo", "--set", "novalue"],
    );
    assert_eq!(r.code, 2);
    ws.write(
        "bad-triggers.json",
        r#"{"triggers": [{"event": "on_lunch", "action": {"type": "command", "target": "true"}}]}"#,
    );
    let r = run(
        pmpo(&ws),
        &[
            "refine",
            "x",
            "--type",
            "logo",
            "--input",
            "brand/logo.svg",
            "--triggers",
            "bad-triggers.json",
        ],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("on_lunch"), "{}", r.stderr);
    for component in [
        "direct:content=../../etc/nope.md",
        "direct:content=docs/missing.md",
    ] {
        let r = run(
            pmpo(&ws),
            &[
                "refine",
                "kit",
                "--type",
                "meta-prompt",
                "--content-type",
                "meta:composite",
                "--component",
                component,
                "--intent",
                "a kit",
            ],
        );
        assert_eq!(r.code, 2, "{component}: {}", r.stderr);
    }
    assert!(
        !ws.p(".refiner").exists(),
        "nothing may be written for bad input"
    );
    assert!(!ws.p("dist").exists());

    let r = run(
        pmpo(&ws),
        &[
            "refine",
            "x",
            "--type",
            "logo",
            "--input",
            "brand/logo.svg",
            "--max-iterations",
            "0",
        ],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("at least 1"), "{}", r.stderr);

    // A damaged state file is reported, not overwritten.
    ws.write(".refiner/artifacts/x/state.json", "{not json");
    let r = run(
        pmpo(&ws),
        &["refine", "x", "--type", "logo", "--input", "brand/logo.svg"],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("damaged"), "{}", r.stderr);
    assert_eq!(ws.read(".refiner/artifacts/x/state.json"), "{not json");
}

#[test]
fn offline_with_a_model_configured_never_calls_it() {
    let ws = Ws::new();
    ws.write("brand/logo.svg", LOGO);
    let (server, _) = loop_server(vec![CLEAN]);
    let r = run(
        with_server(&ws, &server),
        &[
            "refine",
            "o",
            "--type",
            "logo",
            "--input",
            "brand/logo.svg",
            "--offline",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(server.chat_requests().is_empty());
    assert!(ws.read("refinement_log.md").contains("Planned by: adapter"));
}

#[test]
fn test_generation_runs_the_prompt_and_an_invalid_plan_gets_one_repair() {
    let ws = Ws::new();
    ws.write(
        "prompts/hero.md",
        "Create a calm hero banner of {{subject}} at dawn, soft pastel light, 16:9.\n",
    );
    let server = ModelServer::start(|s, _| {
        let p = s.prompt();
        if p.starts_with("Phase: Specify") {
            reply_json(json!({"constraints": []}))
        } else if p.starts_with("Phase: Plan") || p.starts_with("Your answer is not valid") {
            // Never a valid plan: one repair, then the adapter's plan.
            reply_json(json!({"steps": []}))
        } else if p.starts_with("Phase: Reflect") {
            let ids = to_judge(&p);
            reply_json(
                json!({"judgements": ids.iter().map(|id| json!({"id": id, "status": "satisfied"})).collect::<Vec<_>>()}),
            )
        } else if p.contains("{{subject}}") {
            openai(
                "A pale lighthouse stands over a still sea as the sun rises.",
                "stop",
            )
        } else {
            openai_error(400, "unexpected prompt", "bad")
        }
    });
    let r = run(
        with_server(&ws, &server),
        &[
            "refine",
            "hero",
            "--type",
            "meta-prompt",
            "--input",
            "prompts/hero.md",
            "--content-type",
            "meta:image-prompt",
            "--test-generation",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = r.json();
    assert_eq!(report["evaluation_strategy"], "test_execution");
    assert_eq!(report["outcome"], "converged");
    assert!(ws.read("dist/test-output.md").contains("lighthouse"));
    let meta = ws.read_json("dist/prompt.meta.json");
    assert_eq!(meta["variables"], json!(["subject"]));
    let log = ws.read("refinement_log.md");
    assert!(
        log.contains("the model's plan was invalid after one repair"),
        "{log}"
    );
    assert!(log.contains("Planned by: adapter"));
    // The plan was asked for twice (the question and its repair), no more.
    let plans = server
        .chat_requests()
        .iter()
        .filter(|s| {
            s.json()["messages"].as_array().unwrap().iter().any(|m| {
                m["role"] == "user"
                    && m["content"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("Phase: Plan")
            })
        })
        .count();
    assert_eq!(plans, 2);
}

#[test]
fn test_generation_without_a_model_evaluates_the_prompt_only() {
    let ws = Ws::new();
    let r = run(
        pmpo(&ws),
        &[
            "refine",
            "p",
            "--type",
            "meta-prompt",
            "--intent",
            "Create a calm banner prompt",
            "--test-generation",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = r.json();
    assert_eq!(report["evaluation_strategy"], "prompt_quality");
    assert!(
        report["notes"]
            .to_string()
            .contains("test generation needs a model endpoint")
    );
    let plan = ws.read_json(".refiner/artifacts/p/plans/iteration-1.json");
    assert_eq!(plan["plan"]["stages"].as_array().unwrap().len(), 1);
}

#[test]
fn a_recorded_refinement_replays_without_the_server() {
    let rec = Ws::new();
    let cassette = rec.p("loop.cassette.jsonl");
    let (server, _) = loop_server(vec![TODO, CLEAN]);
    let args = |c: &str| {
        vec![
            "refine".to_string(),
            "hero".into(),
            "--type".into(),
            "meta-prompt".into(),
            "--content-type".into(),
            "meta:image-prompt".into(),
            "--intent".into(),
            "an image prompt for a calm hero banner".into(),
            "--json".into(),
            c.into(),
            cassette.display().to_string(),
        ]
    };
    let first = run(
        with_server(&rec, &server),
        &args("--record")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.json()["iteration"], 2);
    let calls = server.chat_requests().len();
    drop(server);

    // Another workspace, no server: every model call is answered from the cassette.
    let replay = Ws::new();
    let again = run(
        pmpo(&replay),
        &args("--replay")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    let report = again.json();
    assert_eq!(report["iteration"], 2);
    assert_eq!(report["outcome"], "converged");
    assert!(calls >= 5, "specify, two plans, two reflections: {calls}");
    assert_eq!(replay.read("dist/prompt.md"), rec.read("dist/prompt.md"));
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
    assert!(
        second.stderr.contains("in use by another pmpo"),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("pmpo refine a"), "{}", second.stderr);
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
    let r = run(
        pmpo(&ws),
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
    assert_eq!(r.code, 3, "{}", r.stderr);
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
    let r = run(pmpo(&ws), &["refine", "mark", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
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
    let r = run(pmpo(&ws), &["refine", "d"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("reflections/iteration-1.json` is damaged"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("help:"), "{}", r.stderr);
    assert_eq!(ws.read(spec), "{\"iteration\": 1, \"constr");
    // Moved aside, the phase that writes it runs again and the loop goes on.
    std::fs::remove_file(ws.p(spec)).unwrap();
    let r = run(pmpo(&ws), &["refine", "d", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["outcome"], "converged");
}

#[test]
fn a_webhook_trigger_posts_the_hook_event_during_a_refinement() {
    use std::io::{Read, Write};
    let ws = Ws::new();
    ws.write("brand/logo.svg", LOGO);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/pmpo", listener.local_addr().unwrap());
    let received = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        // on_refinement_complete is the only event asked for.
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    bodies.push((head.to_string(), body.to_string()));
                    break;
                }
            }
        }
        let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        bodies
    });
    ws.write(
        "triggers.json",
        &json!({"triggers": [{"event": "on_refinement_complete", "condition": "metadata.status == converged",
            "action": {"type": "webhook", "target": url, "timeout_ms": 5000}}]})
        .to_string(),
    );
    let r = run(
        pmpo(&ws),
        &[
            "refine",
            "w",
            "--type",
            "logo",
            "--input",
            "brand/logo.svg",
            "--triggers",
            "triggers.json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let bodies = received.join().unwrap();
    let (head, body) = &bodies[0];
    assert!(head.starts_with("POST /hooks/pmpo"), "{head}");
    let event: Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["event_type"], "refinement_complete");
    assert_eq!(event["artifact_name"], "w");
    assert_eq!(event["metadata"]["status"], "converged");
    let wlog = ws.read(".refiner/artifacts/w/workflow.log");
    assert!(wlog.contains("\"ok\""), "{wlog}");
}

#[test]
fn a_stage_awaiting_a_decision_pauses_the_loop_until_pmpo_resume() {
    let ws = Ws::new();
    let mut manual = prompt_plan(CLEAN);
    manual["stages"].as_array_mut().unwrap().push(json!({
        "id": "publish", "tool": "run", "on_failure": "manual",
        "description": "Publish the prompt (needs a person when it fails)",
        "with": {"command": ["sh", "-c", "exit 3"]},
    }));
    let (server, _) = plan_server(vec![manual, prompt_plan(CLEAN)]);
    let args = [
        "refine",
        "hero",
        "--type",
        "meta-prompt",
        "--intent",
        "an image prompt",
        "--json",
    ];
    let r = run(with_server(&ws, &server), &args);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let report = r.json();
    assert_eq!(report["outcome"], "execution_paused");
    let next = report["next_step"].as_str().unwrap().to_string();
    let run_id = next
        .split("pmpo resume ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    // The person skips the stage; the run finishes; the loop takes its results.
    let resumed = run(with_server(&ws, &server), &["resume", &run_id, "--skip"]);
    assert_ne!(resumed.code, 3, "{}", resumed.stderr);
    let r = run(with_server(&ws, &server), &["refine", "hero", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        ws.read("refinement_log.md")
            .contains(&format!("run {run_id} (finished by `pmpo resume`)"))
    );
    let r1 = ws.read_json(".refiner/artifacts/hero/reflections/iteration-1.json");
    assert_eq!(r1["execution"]["run_id"], run_id);
}
