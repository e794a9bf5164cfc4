//! The host cannot bypass verification: a hostile host drives `pmpo refine
//! --via host` and `pmpo answer` and tries every way around the verifier:
//! judging a measured constraint satisfied (or an unknown one, or one twice),
//! a plan that loosens confinement, a plan whose stage "already completed",
//! writing a declared output itself before the stage runs, and a
//! specification that weakens a default constraint. Each is refused with its
//! reason (in the repair question and the log) or has no effect.

use pmpo_testkit::refine::*;
use pmpo_testkit::*;
use serde_json::{Value, json};

const PENDING: &str = ".refiner/artifacts/acme/pending.json";
/// A logo whose only colour is black: the measured `dark-contrast` fails.
const DARK_LOGO: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><circle cx="32" cy="32" r="28" fill="#000000"/></svg>"##;

fn start(ws: &Ws, logo: &str) {
    ws.write("brand/logo.svg", logo);
    run_code(
        pmpo(ws),
        3,
        &[
            "refine",
            "acme",
            "--type",
            "logo",
            "--input",
            "brand/logo.svg",
            "--via",
            "host",
        ],
    );
}

/// The pending question.
fn question(ws: &Ws) -> Value {
    ws.read_json(PENDING)["question"].clone()
}

/// The text of the pending question.
fn asked(ws: &Ws) -> String {
    let q = question(ws);
    q["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Answers the pending question with `answer`; returns the report.
fn answer(ws: &Ws, answer: &Value) -> (Value, Run) {
    ws.write("answer.json", &answer.to_string());
    let r = run(
        pmpo(ws),
        &["answer", "acme", "--file", "answer.json", "--json"],
    );
    assert!(r.code == 0 || r.code == 3 || r.code == 1, "{}", r.stderr);
    (r.json(), r)
}

/// The adapter's plan as the Plan question shows it.
fn baseline(ws: &Ws) -> Value {
    let text = asked(ws);
    let start = text.find("(stages as JSON):\n").unwrap() + "(stages as JSON):\n".len();
    let end = start + text[start..].find("\n\nTools:").unwrap();
    serde_json::from_str(&text[start..end]).unwrap()
}

/// Answers Specify with one judged constraint (`mood`), then Plan with the
/// adapter's own stages: the loop then asks Reflect.
fn to_reflect(ws: &Ws) {
    assert_eq!(question(ws)["phase"], "specify");
    answer(
        ws,
        &json!({"constraints": [{"id": "mood", "description": "The logo feels calm", "severity": "medium"}]}),
    );
    assert_eq!(question(ws)["phase"], "plan");
    let stages = baseline(ws);
    answer(ws, &json!({ "stages": stages }));
    assert_eq!(question(ws)["phase"], "reflect", "{}", asked(ws));
}

fn log(ws: &Ws) -> String {
    ws.read("refinement_log.md")
}

fn constraint(ws: &Ws, iteration: u64, id: &str) -> Value {
    let r: Value = ws.read_json(&format!(
        ".refiner/artifacts/acme/reflections/iteration-{iteration}.json"
    ));
    r["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no constraint {id} in {r}"))
        .clone()
}

#[test]
fn a_judgement_of_a_measured_unknown_or_twice_judged_constraint_is_refused() {
    let ws = Ws::new();
    start(&ws, DARK_LOGO);
    to_reflect(&ws);
    // The question says what is measured, and so not the host's to judge.
    let measured = question(&ws)["measured"].clone();
    for id in ["dark-contrast", "png-sizes", "manifest-complete"] {
        assert!(
            measured.as_array().unwrap().iter().any(|m| m == id),
            "{measured}"
        );
    }
    let hostile = json!({"judgements": [
        {"id": "dark-contrast", "status": "satisfied", "reason": "black reads fine on dark"},
        {"id": "manifest-complete", "status": "satisfied", "reason": "trust me"},
        {"id": "made-up", "status": "satisfied", "reason": "?"},
        {"id": "mood", "status": "satisfied", "reason": "calm"},
        {"id": "mood", "status": "violated", "reason": "not calm"},
    ]});
    let (report, _) = answer(&ws, &hostile);
    assert_eq!(report["outcome"], "awaiting_answer", "{report}");
    // One repair question, naming each refusal.
    assert_eq!(question(&ws)["stage"], "reflect-1-repair");
    let text = asked(&ws);
    for needle in [
        "`dark-contrast` is measured by a deterministic check (it is violated): its status comes from the check, never from a judgement",
        "`manifest-complete` is measured by a deterministic check",
        "`made-up` is not one of the constraints to judge",
        "`mood` is judged more than once",
        "judge only: mood",
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    // Still hostile after the repair: nothing of it counts.
    answer(
        &ws,
        &json!({"judgements": [{"id": "dark-contrast", "status": "satisfied", "reason": "again"}]}),
    );
    let dark = constraint(&ws, 1, "dark-contrast");
    assert_eq!(
        (&dark["status"], &dark["basis"]),
        (&json!("violated"), &json!("measured")),
        "{dark}"
    );
    let mood = constraint(&ws, 1, "mood");
    assert_eq!(mood["status"], "not_checked", "{mood}");
    let log = log(&ws);
    assert!(log.contains("invalid after one repair"), "{log}");
    assert!(
        log.contains("`dark-contrast` is measured by a deterministic check"),
        "{log}"
    );
}

#[test]
fn a_judgement_of_only_the_open_constraints_is_taken() {
    // The control of the test above: the same set-up, an honest answer.
    let ws = Ws::new();
    start(&ws, DARK_LOGO);
    to_reflect(&ws);
    answer(
        &ws,
        &json!({"judgements": [{"id": "mood", "status": "satisfied", "reason": "calm"}]}),
    );
    let mood = constraint(&ws, 1, "mood");
    assert_eq!(
        (&mood["status"], &mood["basis"]),
        (&json!("satisfied"), &json!("judged"))
    );
    assert_eq!(constraint(&ws, 1, "dark-contrast")["status"], "violated");
}

/// Answers Specify with nothing to add; the loop then asks Plan.
fn to_plan(ws: &Ws) {
    answer(ws, &json!({"constraints": []}));
    assert_eq!(question(ws)["phase"], "plan", "{}", asked(ws));
}

fn plan_of(ws: &Ws, iteration: u64) -> Value {
    ws.read_json(&format!(
        ".refiner/artifacts/acme/plans/iteration-{iteration}.json"
    ))
}

#[test]
fn a_plan_that_loosens_confinement_is_refused_and_the_adapters_plan_is_used() {
    let ws = Ws::new();
    start(&ws, LOGO);
    to_plan(&ws);
    let base = baseline(&ws);
    let mut stages = base.clone();
    stages[0]["sandbox"] = json!(false);
    stages[0]["network"] = json!(true);
    stages[0]["with"]["env_passthrough"] = json!(["HOME"]);
    stages[3]["with"]["network"] = json!(true);
    answer(&ws, &json!({ "stages": stages }));
    assert_eq!(question(&ws)["stage"], "plan-1-repair");
    let text = asked(&ws);
    for needle in [
        "stage `import` sets `sandbox: false`: a plan from a model or a host may not loosen confinement",
        "stage `import` sets `network: true`",
        "stage `import` sets `with.env_passthrough`",
        "stage `preview` sets `with.network: true`",
        "only a person's plan file run with `pmpo execute` may",
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    // Only `env_passthrough` this time: still refused; the adapter's plan runs.
    let mut stages = base;
    stages[0]["with"]["env_passthrough"] = json!([]);
    answer(&ws, &json!({ "stages": stages }));
    let plan = plan_of(&ws, 1);
    assert_eq!(plan["plan"]["state_updates"]["planned_by"], "adapter");
    let text = plan.to_string();
    assert!(!text.contains("env_passthrough") && !text.contains("\"sandbox\""));
    let log = log(&ws);
    assert!(
        log.contains("invalid after one repair") && log.contains("the adapter's plan is used"),
        "{log}"
    );
    assert!(log.contains("`with.env_passthrough`"), "{log}");
    // A person's plan file may set them.
    let person = Ws::new();
    person.plan(
        "    - id: open\n      tool: run\n      sandbox: false\n      network: true\n      with:\n        command: [sh, -c, \"echo hi > out.txt\"]\n        env_passthrough: [HOME]\n      outputs: [out.txt]\n",
    );
    person.run_ok(&["execute", "plan.yaml"]);
}

#[test]
fn a_plan_with_a_stage_that_already_completed_is_refused() {
    let ws = Ws::new();
    start(&ws, LOGO);
    to_plan(&ws);
    let base = baseline(&ws);
    let mut stages = base.clone();
    stages[1]["status"] = json!("COMPLETED");
    stages[1]["completed"] = json!(true);
    stages[1]["result"] = json!({"files": ["dist/logo-16.png"]});
    stages[2]["cached"] = json!(true);
    // And a stage that writes the verdicts itself.
    stages.as_array_mut().unwrap().push(json!({
        "id": "verdict", "tool": "run", "outputs": ["constraints.json"],
        "with": {"command": ["sh", "-c", "echo '{\"constraints\": []}' > constraints.json"]},
    }));
    answer(&ws, &json!({ "stages": stages }));
    let text = asked(&ws);
    for needle in [
        "stage `sizes` sets `status`: a stage's status, result and files come only from running it",
        "stage `sizes` sets `completed`",
        "stage `sizes` sets `result`",
        "stage `showcase` sets `cached`",
        "stage `verdict` would write `constraints.json`: `constraints.json` is pmpo's own record of the run",
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    // The repair claims the work done by a tool that does not exist.
    let mut stages = base;
    stages[1]["tool"] = json!("already_done");
    answer(&ws, &json!({ "stages": stages }));
    let log = log(&ws);
    assert!(log.contains("invalid after one repair"), "{log}");
    assert!(log.contains("already_done"), "{log}");
    assert_eq!(
        plan_of(&ws, 1)["plan"]["state_updates"]["planned_by"],
        "adapter"
    );
    // Every stage's status is from its run.
    let results: Value = ws.read_json(".state/execution_results.json");
    let sizes = results["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "sizes")
        .unwrap();
    assert_eq!(sizes["tool"], "rasterize");
    assert_eq!(sizes["status"], "COMPLETED");
    assert!(ws.p("dist/logo-16.png").is_file());
}

#[test]
fn a_declared_output_the_host_wrote_itself_does_not_count() {
    let ws = Ws::new();
    start(&ws, LOGO);
    to_plan(&ws);
    // Between the pause and the answer, the host writes the output itself
    // and proposes a stage that declares it but does not write it.
    ws.write("dist/logo-16.png", "not made by any stage");
    let stages = json!([
        {"id": "import", "tool": "run",
         "with": {"command": ["sh", "-c", "mkdir -p dist && cp brand/logo.svg dist/logo.svg"]},
         "outputs": ["dist/logo.svg"]},
        {"id": "sizes", "tool": "run", "depends_on": ["import"],
         "with": {"command": ["true"]}, "outputs": ["dist/logo-16.png"]},
    ]);
    answer(&ws, &json!({ "stages": stages }));
    let results: Value = ws.read_json(".state/execution_results.json");
    let stage = |id: &str| {
        results["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(stage("import")["status"], "COMPLETED");
    let sizes = stage("sizes");
    assert_eq!(sizes["status"], "FAILED", "{sizes}");
    assert_eq!(sizes["files"], json!([]));
    let error = &results["errors"][0];
    assert_eq!(error["kind"], "missing_output", "{results}");
    assert!(
        error["message"].as_str().unwrap().contains(
            "declared output `dist/logo-16.png` was there before the stage ran and the stage did not write it"
        ),
        "{error}"
    );
    assert_ne!(constraint(&ws, 1, "png-sizes")["status"], "satisfied");
    // The host's file is untouched (the engine judged it, it did not delete it).
    assert_eq!(ws.read("dist/logo-16.png"), "not made by any stage");
}

#[test]
fn a_stage_must_write_its_declared_output_even_when_the_file_is_there() {
    let ws = Ws::new();
    ws.write("src.txt", "made");
    ws.write("out/pre.txt", "made");
    ws.write("out/kept.txt", "made");
    ws.plan(
        "    - id: writes\n      tool: run\n      with:\n        command: [cp, src.txt, out/pre.txt]\n      outputs: [out/pre.txt]\n      cache: false\n    - id: leaves\n      tool: run\n      with:\n        command: [\"true\"]\n      outputs: [out/kept.txt]\n      cache: false\n",
    );
    let r = ws.run_code(1, &["execute", "plan.yaml", "--json"]);
    let results: Value = ws.read_json(".state/execution_results.json");
    let status = |id: &str| {
        results["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    // Same bytes, but written by the stage: its output.
    assert_eq!(status("writes"), "COMPLETED", "{}", r.stderr);
    assert_eq!(status("leaves"), "FAILED");
    assert_eq!(results["errors"][0]["kind"], "missing_output");
}

#[test]
fn a_specification_cannot_replace_or_weaken_a_measured_constraint() {
    let ws = Ws::new();
    start(&ws, LOGO);
    answer(
        &ws,
        &json!({"constraints": [
            {"id": "svg-valid", "description": "anything goes", "severity": "low"},
            {"id": "png-sizes", "description": "one size is enough", "severity": "low", "type": "visual"},
            {"id": "mood", "description": "The logo feels calm", "severity": "medium"},
        ]}),
    );
    let spec: Value = ws.read_json(".refiner/artifacts/acme/specification.json");
    let find = |id: &str| {
        spec["specification"]["constraints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["id"] == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    for id in ["svg-valid", "png-sizes"] {
        let c = find(id);
        assert_eq!(c.len(), 1, "{spec}");
        assert_eq!(c[0]["severity"], "blocking", "{spec}");
        assert!(
            !c[0]["description"]
                .as_str()
                .unwrap()
                .contains("anything goes")
        );
        // Its check is still the adapter's.
        assert!(
            spec["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["constraint_id"] == id)
        );
    }
    assert_eq!(find("mood").len(), 1);
    let log = log(&ws);
    assert!(
        log.contains(
            "the model's constraint `svg-valid` repeats a default one; the default is kept"
        ),
        "{log}"
    );
}
