//! One reader of model answers, through the real binary: the same answer
//! text (reasoning first, then a fenced JSON block) is read the same way by
//! an `ai` stage and by the Specify phase of `pmpo refine`, and the same
//! schema violation (`pattern`, which the old hand-written validator of `ai`
//! stages ignored) is refused by both after one repair request.

use pmpo_testkit as common;
use pmpo_testkit::model_server;

use std::process::{Command, Stdio};

use common::*;
use model_server::*;
use serde_json::{Value, json};

const KEY: &str = "sk-fake-reader-5c1d";

/// The schema the Specify phase checks its answers with, used as the `ai`
/// stage's schema too.
const SPECIFY_SCHEMA: &str = include_str!("../../../schemas/specify-answer.schema.json");

/// An answer as a reasoning model writes it: a thought holding a decoy
/// block, then the answer in a fenced block.
fn answer(id: &str) -> String {
    let object = json!({"goals": ["calm"], "constraints": [
        {"id": id, "description": "The prompt sets a calm mood", "severity": "medium"}]});
    format!(
        "<think>First idea:\n```json\n{{\"constraints\": []}}\n```\nno.</think>\nHere it is:\n```json\n{object}\n```\n"
    )
}

fn server(id: &'static str) -> ModelServer {
    ModelServer::start(move |s, _| {
        let p = s.prompt();
        if p.starts_with("Phase: Specify")
            || p.starts_with("Give constraints")
            || p.starts_with("Your answer is not valid")
        {
            openai(&answer(id), "stop")
        } else {
            openai_error(400, "not part of this test", "bad")
        }
    })
}

fn with_server(ws: &Ws, server: &ModelServer) -> Command {
    let mut c = bin_without_models(ws.path());
    c.stdin(Stdio::null())
        .env("OPENAI_BASE_URL", server.openai_base())
        .env("OPENAI_API_KEY", KEY)
        .env("OPENAI_MODEL", "reader-test-model");
    c
}

fn run(mut c: Command, args: &[&str]) -> Run {
    c.args(args).output().unwrap().into()
}

/// Runs the `ai` stage: its result as `pmpo execute --json` reports it.
fn ai_stage(id: &'static str) -> (Run, Value) {
    let ws = Ws::new();
    ws.write("schemas/specify.json", SPECIFY_SCHEMA);
    ws.write(
        "plan.yaml",
        "specification: {artifact_name: t, artifact_type: content}\nplan:\n  stages:\n    - id: facts\n      requires_execution: false\n      cache: false\n      with:\n        prompt: Give constraints\n        outputs_json: true\n        schema: schemas/specify.json\n",
    );
    let server = server(id);
    let r = run(
        with_server(&ws, &server),
        &["execute", "plan.yaml", "--json"],
    );
    let report = r.json();
    let stage = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "facts")
        .cloned()
        .unwrap();
    assert_eq!(
        server.chat_requests().len(),
        if r.code == 0 { 1 } else { 2 }
    );
    (r, stage)
}

/// Runs `pmpo refine` on a prompt: its refinement log.
fn specify(id: &'static str) -> String {
    let ws = Ws::new();
    ws.write("prompts/hero.md", "Create a calm hero banner at dawn.\n");
    let server = server(id);
    run(
        with_server(&ws, &server),
        &[
            "refine",
            "hero",
            "--type",
            "meta-prompt",
            "--input",
            "prompts/hero.md",
            "--max-iterations",
            "1",
            "--json",
        ],
    );
    ws.read("refinement_log.md")
}

#[test]
fn the_same_answer_is_read_the_same_by_an_ai_stage_and_a_loop_phase() {
    let (r, stage) = ai_stage("calm-mood");
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The fenced block after the thought, not the decoy inside it.
    assert_eq!(stage["outputs"]["constraints"][0]["id"], "calm-mood");

    let log = specify("calm-mood");
    assert!(log.contains("- Specified by: model\n"), "{log}");
    assert!(log.contains("calm-mood"), "{log}");
}

#[test]
fn a_pattern_violation_is_refused_by_an_ai_stage_and_a_loop_phase_alike() {
    // `bad id!` breaks the schema's `pattern` for constraint ids.
    let (r, stage) = ai_stage("bad id!");
    assert_ne!(r.code, 0, "{}", r.stdout);
    let reason = stage["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("after one repair request") && reason.contains("/constraints/0/id: "),
        "{reason}"
    );

    let log = specify("bad id!");
    assert!(
        log.contains("the model's specification was invalid after one repair")
            && log.contains("/constraints/0/id: "),
        "{log}"
    );
    assert!(log.contains("- Specified by: adapter\n"), "{log}");
}
