//! `pmpo refine` through the real binary against a scripted model server: a
//! refinement that converges in three iterations, one that hits
//! max_iterations, a regression (with its trigger), `--offline` with a model
//! configured, test generation, a recorded refinement replayed, a webhook
//! trigger, and a stage awaiting a decision. The approval gate, status, a
//! kill -9 and bad input, without a model, are in `refine_gate.rs`.

use pmpo_testkit as common;
use pmpo_testkit::model_server;
use pmpo_testkit::refine::*;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use model_server::*;
use serde_json::{Value, json};

const KEY: &str = "sk-fake-loop-3f9c1d";

fn with_server(ws: &Ws, server: &ModelServer) -> Command {
    with_model(ws, server, KEY, "loop-test-model")
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
            judge_all(&p, "reads well")
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
    let r = run_code(with_server(&ws, &server), 0, &[HERO, &["--json"]].concat());
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
    let r = run_code(
        with_server(&ws, &server),
        1,
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
    let r = run_code(
        with_server(&ws, &server),
        0,
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

#[test]
fn offline_with_a_model_configured_never_calls_it() {
    let ws = Ws::new();
    ws.write("brand/logo.svg", LOGO);
    let (server, _) = loop_server(vec![CLEAN]);
    run_code(
        with_server(&ws, &server),
        0,
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
    let r = run_code(
        with_server(&ws, &server),
        0,
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
    let r = run_code(
        pmpo(&ws),
        0,
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
    run_code(
        pmpo(&ws),
        0,
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
    let r = run_code(with_server(&ws, &server), 3, &args);
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
    run_code(with_server(&ws, &server), 0, &["refine", "hero", "--json"]);
    assert!(
        ws.read("refinement_log.md")
            .contains(&format!("run {run_id} (finished by `pmpo resume`)"))
    );
    let r1 = ws.read_json(".refiner/artifacts/hero/reflections/iteration-1.json");
    assert_eq!(r1["execution"]["run_id"], run_id);
}
