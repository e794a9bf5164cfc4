//! An `ai` stage of a plain run answered by the agent host (`pmpo execute
//! --via host`): the run pauses with the stage's question, `pmpo answer --run
//! RUN --stage S` keeps the answer and the run goes on, the stage's output is
//! written by the stage and verified by the engine; an invalid answer gets one
//! repair question; the host's answers replay offline; the refusals of
//! `pmpo answer --run`; a continuation killed mid-run resumes.

use std::time::Duration;

use pmpo_testkit::refine::{HERO, pmpo, run, run_code, wait_until};
use pmpo_testkit::*;
use serde_json::{Value, json};

/// An independent command stage (before the `ai` one in the reference order:
/// it finishes whatever `--jobs`), an `ai` stage with a schema and an output
/// file, and a stage after the `ai` one (slow while `slow` exists).
const PLAN: &str = r##"specification:
  artifact_name: fox-logo
  artifact_type: logo
  intent: A fox logo
plan:
  stages:
    - id: other
      with: {command: [sh, -c, 'echo other > other.txt']}
      outputs: [other.txt]
    - id: palette
      requires_execution: false
      with:
        prompt: "Pick the colors of {{ artifact_name }}"
        outputs_json: true
        output: dist/palette.json
        schema: {type: object, required: [primary], properties: {primary: {type: string, pattern: "^#"}}}
      outputs: [dist/palette.json]
    - id: after
      depends_on: [palette]
      with: {command: [sh, -c, 'if [ -f slow ]; then echo started > started.txt; sleep 60; fi; cp dist/palette.json after.txt']}
      outputs: [after.txt]
"##;

const RESULTS: &str = ".state/execution_results.json";

fn start(ws: &Ws) -> (Value, String) {
    ws.write("plan.yaml", PLAN);
    run_code(pmpo(ws), 3, &["execute", "plan.yaml", "--via", "host"]);
    let results = ws.read_json(RESULTS);
    let id = results["run_id"].as_str().unwrap().to_string();
    (results, id)
}

/// The questions kept in the workspace, oldest first.
fn questions(ws: &Ws) -> Vec<Value> {
    let mut qs: Vec<Value> = std::fs::read_dir(ws.p(".state/host/questions"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    qs.sort_by(|a: &Value, b: &Value| {
        a["asked_at"]
            .as_str()
            .unwrap()
            .cmp(b["asked_at"].as_str().unwrap())
    });
    qs
}

fn answer(ws: &Ws, id: &str, text: &str, code: i32) -> Run {
    ws.write("answer.json", text);
    let args = [
        "answer",
        "--run",
        id,
        "--stage",
        "palette",
        "--file",
        "answer.json",
    ];
    run_code(pmpo(ws), code, &args)
}

#[test]
fn an_ai_stage_waits_for_the_host_and_its_answer_completes_the_run() {
    let ws = Ws::new();
    let (results, id) = start(&ws);
    // The run pauses: the stage waits, the independent stage finished, the
    // one after it did not start.
    assert_eq!(results["status"], "awaiting_intervention", "{results}");
    assert_eq!(
        stage(&results, "palette")["status"],
        "AWAITING_INTERVENTION"
    );
    assert_eq!(stage(&results, "other")["status"], "COMPLETED");
    assert_ne!(stage(&results, "after")["status"], "COMPLETED");
    let qs = questions(&ws);
    assert_eq!(qs.len(), 1);
    let q = &qs[0];
    assert_eq!((&q["run_id"], &q["stage"]), (&json!(id), &json!("palette")));
    assert_eq!(q["schema"]["required"], json!(["primary"]));
    assert_eq!(q["files"], json!(["dist/palette.json"]));
    // What waits and how to answer it, in the run's errors.
    let e = error_of(&results, "palette");
    assert_eq!(e["kind"], "awaiting_answer", "{e}");
    let path = format!(".state/host/questions/{}.json", q["id"].as_str().unwrap());
    assert_mentions(&e, "message", &path);
    let command = format!("pmpo answer --run {id} --stage palette --file ANSWER.json");
    assert_mentions(&e, "hint", &command);
    // Nothing of the stage counts yet; a file the host writes itself does not either.
    assert!(!ws.p("dist/palette.json").exists());
    let generated = results["generated_files"].to_string();
    assert!(!generated.contains("dist/palette.json"), "{generated}");
    ws.write("dist/palette.json", r##"{"primary": "#forged"}"##);
    let status = run_code(pmpo(&ws), 0, &["status"]);
    assert_contains(&status.stdout, &format!("{id}  awaiting_intervention"));

    let r = answer(&ws, &id, "Here: {\"primary\": \"#f60\"}", 0);
    assert_contains(&r.stderr, "answer kept for stage `palette`");
    let results = ws.read_json(RESULTS);
    assert_eq!(results["run_id"], json!(id));
    assert_eq!(results["status"], "completed", "{results}");
    let palette = stage(&results, "palette");
    assert_eq!(palette["status"], "COMPLETED");
    assert_eq!(palette["outputs"]["primary"], "#f60");
    // The stage wrote its output from the answer, and the engine recorded it.
    let written: Value = ws.read_json("dist/palette.json");
    assert_eq!(written, json!({"primary": "#f60"}));
    assert_eq!(palette["files"][0]["path"], "dist/palette.json");
    assert_eq!(ws.read_json("after.txt"), written);
    // The answer went the way of any model answer: the routing log.
    let log = ws.read("logs/model_routing.jsonl");
    let outcomes: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["outcome"].to_string())
        .collect();
    assert_eq!(outcomes, ["\"awaiting_host\"", "\"ok\""], "{log}");
    // Answered: nothing waits any more.
    let r = answer(&ws, &id, "{\"primary\": \"#000\"}", 2);
    assert_contains(&r.stderr, "has no question waiting");
}

#[test]
fn an_invalid_answer_gets_one_repair_question_then_a_valid_one_completes() {
    let ws = Ws::new();
    let (_, id) = start(&ws);
    let r = answer(&ws, &id, "{\"primary\": \"orange\"}", 3);
    assert_contains(&r.stderr, "a repair question");
    // The repair question carries the rejected answer and what was wrong.
    let qs = questions(&ws);
    assert_eq!(qs.len(), 2);
    let repair = &qs[1];
    let messages = repair["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{repair}");
    assert_contains(messages[1]["content"].as_str().unwrap(), "orange");
    assert_contains(messages[2]["content"].as_str().unwrap(), "primary");
    let results = ws.read_json(RESULTS);
    let e = error_of(&results, "palette");
    assert_eq!(e["kind"], "awaiting_answer");
    assert_mentions(&e, "message", repair["id"].as_str().unwrap());
    // The first answer is kept where a failed model answer would be.
    assert_mentions(&e, "message", ".state/ai/");
    assert!(!ws.p("dist/palette.json").exists());

    answer(&ws, &id, "{\"primary\": \"#fa0\"}", 0);
    let written: Value = ws.read_json("dist/palette.json");
    assert_eq!(written, json!({"primary": "#fa0"}));
    assert_eq!(ws.read_json(RESULTS)["status"], "completed");
}

#[test]
fn a_second_invalid_answer_fails_the_stage_as_a_model_s_would() {
    let ws = Ws::new();
    let (_, id) = start(&ws);
    answer(&ws, &id, "{\"primary\": \"orange\"}", 3);
    let r = answer(&ws, &id, "{\"primary\": 7}", 1);
    assert_contains(&r.stderr, "still unusable after one repair request");
    let results = ws.read_json(RESULTS);
    assert_eq!(results["status"], "failed", "{results}");
    assert_eq!(stage(&results, "palette")["status"], "FAILED");
    assert_eq!(error_of(&results, "palette")["kind"], "answer_quality");
    assert!(!ws.p("dist/palette.json").exists());
}

#[test]
fn a_host_answered_run_replays_offline_from_the_workspace_cassette() {
    let ws = Ws::new();
    let (_, id) = start(&ws);
    answer(&ws, &id, "{\"primary\": \"orange\"}", 3);
    answer(&ws, &id, "{\"primary\": \"#0af\"}", 0);
    let cassette = ws.p(".state/host/cassette.jsonl");
    // A fresh workspace runs the plan again from the cassette alone: no
    // host, no question, the same output.
    let again = Ws::new();
    again.write("plan.yaml", PLAN);
    let args = [
        "execute",
        "plan.yaml",
        "--replay",
        cassette.to_str().unwrap(),
    ];
    run_code(pmpo(&again), 0, &args);
    assert_eq!(
        again.read("dist/palette.json"),
        ws.read("dist/palette.json")
    );
    assert!(!again.p(".state/host").exists());
}

#[test]
fn a_host_answered_run_recorded_with_record_replays_offline() {
    let ws = Ws::new();
    let (_, id) = start(&ws);
    // Keep the answer only, then go on recording every exchange.
    ws.write("answer.json", "{\"primary\": \"#123\"}");
    let args = [
        "answer",
        "--run",
        &id,
        "--stage",
        "palette",
        "--file",
        "answer.json",
        "--no-continue",
    ];
    run_code(pmpo(&ws), 0, &args);
    assert!(!ws.p("dist/palette.json").exists(), "kept only");
    let args = [
        "resume",
        &id,
        "--retry",
        "--via",
        "host",
        "--record",
        "rec.jsonl",
    ];
    run_code(pmpo(&ws), 0, &args);
    let rec = ws.read("rec.jsonl");
    assert_eq!(rec.lines().count(), 1, "{rec}");
    assert_contains(&rec, "\"endpoint\":\"host\"");
    let again = Ws::new();
    again.write("plan.yaml", PLAN);
    let rec = ws.p("rec.jsonl");
    let args = ["execute", "plan.yaml", "--replay", rec.to_str().unwrap()];
    run_code(pmpo(&again), 0, &args);
    let replayed: Value = again.read_json("dist/palette.json");
    assert_eq!(replayed, json!({"primary": "#123"}));
}

#[test]
fn pmpo_answer_run_refuses_what_it_cannot_answer() {
    let ws = Ws::new();
    let (_, id) = start(&ws);
    ws.write("good.json", "{\"primary\": \"#f60\"}");
    let refused = |args: &[&str], code: i32, says: &str| {
        let r = run_code(pmpo(&ws), code, args);
        assert_contains(&r.stderr, says);
    };
    let good = ["--file", "good.json"];
    let with = |run: &str, stage: &str| {
        let mut v = vec!["answer", "--run", run, "--stage", stage];
        v.extend(good);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let args = with("20200101T000000Z-000000", "palette");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, 2, "there is no run `20200101T000000Z-000000`");
    let args = with(&id, "other");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, 2, "stage `other` of run");
    let args = with(&id, "../x");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, 2, "is not a stage id");
    ws.write("empty.json", " \n");
    let empty = [
        "answer",
        "--run",
        &id,
        "--stage",
        "palette",
        "--file",
        "empty.json",
    ];
    refused(&empty, 2, "the answer is empty");
    refused(&["answer", "--stage", "palette"], 2, "--run");
    // Nothing was kept by any of them: the question still waits.
    assert!(!ws.p(".state/host/answers").exists());
    assert!(!ws.p("dist/palette.json").exists());

    // Another pmpo holds the workspace: exit 4, nothing kept, and the same
    // command works once it is done.
    ws.write(
        "hold.yaml",
        "specification:\n  artifact_name: hold\n  artifact_type: code\nplan:\n  stages:\n    - id: hold\n      cache: false\n      with: {command: [sh, -c, 'echo held > held.txt; sleep 60']}\n      outputs: [held.txt]\n",
    );
    let mut holder = ws.spawn(&["execute", "hold.yaml", "-q"]);
    ws.wait_for_text("held.txt", "held\n");
    let args = with(&id, "palette");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, 4, &format!("pid {}", holder.id()));
    assert!(!ws.p(".state/host/answers").exists());
    pmpo_testkit::refine::interrupt(&holder);
    assert_eq!(holder.wait().unwrap().code(), Some(130));
    run_code(pmpo(&ws), 0, &args);
    assert_eq!(ws.read_json(RESULTS)["status"], "completed");
}

#[test]
fn a_continuation_killed_mid_run_resumes_with_the_answer_kept() {
    let ws = Ws::new();
    let (_, id) = start(&ws);
    ws.write("slow", "");
    ws.write("answer.json", "{\"primary\": \"#f60\"}");
    let mut child = pmpo(&ws)
        .args([
            "answer",
            "--run",
            &id,
            "--stage",
            "palette",
            "--file",
            "answer.json",
        ])
        .spawn()
        .unwrap();
    // The answered stage finished and the one after it started: kill -9.
    let started = ws.p("started.txt");
    wait_until(
        "the stage after the answered one",
        Duration::from_secs(60),
        || started.exists(),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        ws.read_json("dist/palette.json"),
        json!({"primary": "#f60"})
    );
    // A re-run goes on with the same run: the answered stage is done, the
    // one after it runs again.
    std::fs::remove_file(ws.p("slow")).unwrap();
    let r = run_code(
        pmpo(&ws),
        0,
        &["execute", "plan.yaml", "--via", "host", "--json"],
    );
    let results = r.json();
    assert_eq!(results["run_id"], json!(id), "{results}");
    assert_eq!(results["status"], "completed");
    assert_eq!(ws.read_json("after.txt"), json!({"primary": "#f60"}));
    // No new question was asked.
    assert_eq!(questions(&ws).len(), 1);
}

/// What a scripted host answers in a refinement whose plan has an `ai`
/// stage: the adapter's constraints, a plan that drafts a tagline with the
/// host, the tagline itself, and every unmeasured constraint judged.
fn loop_answer(q: &Value) -> Value {
    let prompt = q["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    match q["phase"].as_str().unwrap() {
        "specify" => json!({"goals": ["a banner that reads at a glance"], "constraints": []}),
        "plan" => json!({"stages": [
            {"id": "tagline", "tool": "ai", "description": "The banner's tagline, from the host",
             "requires_execution": false,
             "with": {"prompt": "Write the banner's tagline", "output": "dist/tagline.md"},
             "outputs": ["dist/tagline.md"]},
            {"id": "compose", "tool": "prompt", "description": "Write the prompt",
             "with": {"intent": "Create a calm hero banner: a lighthouse at dawn over a quiet sea, soft pastel light, wide 16:9 framing.",
                      "title": "Hero banner", "output": "dist/prompt.md",
                      "meta": "dist/prompt.meta.json", "target_platform": "dall-e-3",
                      "content_type": "meta:image-prompt"},
             "outputs": ["dist/prompt.md", "dist/prompt.meta.json"]},
        ]}),
        "execute" => json!("Calm light, quiet sea."),
        "reflect" => {
            let judgements: Vec<Value> = pmpo_testkit::refine::to_judge(&prompt)
                .iter()
                .map(|id| json!({"id": id, "status": "satisfied", "reason": "reads well"}))
                .collect();
            json!({ "judgements": judgements })
        }
        other => panic!("unexpected phase {other}"),
    }
}

#[test]
fn a_refinement_waits_for_the_host_to_answer_an_ai_stage_of_its_plan() {
    let ws = Ws::new();
    let pending = ".refiner/artifacts/hero/pending.json";
    let mut args = HERO.to_vec();
    args.extend_from_slice(&["--via", "host"]);
    run_code(pmpo(&ws), 3, &args);
    let mut asked = Vec::new();
    let mut run_ids = Vec::new();
    for _ in 0..10 {
        let p: Value = ws.read_json(pending);
        let q = &p["question"];
        asked.push(q["phase"].as_str().unwrap().to_string());
        if q["phase"] == "execute" {
            // The stage's question, named for the artifact; its run paused.
            assert_eq!(q["stage"], "tagline", "{p}");
            assert_eq!(p["answer_with"], "pmpo answer hero --file ANSWER.json");
            let results = ws.read_json(RESULTS);
            assert_eq!(results["status"], "awaiting_intervention");
            assert_eq!(error_of(&results, "tagline")["kind"], "awaiting_answer");
            run_ids.push(results["run_id"].clone());
            assert!(!ws.p("dist/tagline.md").exists());
        }
        let a = loop_answer(q);
        let text = a.as_str().map_or_else(|| a.to_string(), str::to_string);
        ws.write("answer.json", &text);
        let r = run(
            pmpo(&ws),
            &["answer", "hero", "--file", "answer.json", "--json"],
        );
        let report = r.json();
        if report["outcome"] != "awaiting_answer" {
            assert_eq!(report["outcome"], "converged", "{report}\n{}", r.stderr);
            break;
        }
        assert_eq!(r.code, 3, "{}", r.stderr);
    }
    assert_eq!(asked, ["specify", "plan", "execute", "reflect"]);
    // The paused run went on (the same run), and the stage wrote the answer.
    let results = ws.read_json(RESULTS);
    assert_eq!(json!([results["run_id"].clone()]), json!(run_ids));
    assert_eq!(stage(&results, "tagline")["status"], "COMPLETED");
    assert_eq!(ws.read("dist/tagline.md").trim(), "Calm light, quiet sea.");
    assert!(!ws.p(pending).exists());
}
