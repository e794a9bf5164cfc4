//! AI stages through the real binary against a scripted model server on
//! loopback: files and named outputs from answers, schema repair, record then
//! replay with no network, `pmpo models`, cancellation, and the API key never
//! written anywhere.

use pmpo_testkit as common;
use pmpo_testkit::model_server;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::refine::{run, run_code};
use common::*;
use model_server::*;
use serde_json::Value;

const KEY: &str = "sk-fake-KEY-0d5e2b7a91";

/// The binary with no model settings inherited from the developer's shell.
fn pmpo(ws: &Ws) -> Command {
    bin_without_models(ws.path())
}

const LOGO_PLAN: &str = r##"specification:
  artifact_name: fox-logo
  artifact_type: logo
  intent: A fox logo
  constraints:
    - {id: svg-valid, description: The SVG is well-formed, severity: blocking}
plan:
  stages:
    - id: palette
      requires_execution: false
      with:
        prompt: "Pick colors for {{ artifact_name }}. Constraints:\n{{ constraints }}"
        outputs_json: true
        schema: {type: object, required: [primary], properties: {primary: {type: string}}}
    - id: draw
      requires_execution: false
      depends_on: [palette]
      with:
        system: You draw logos.
        prompt: "Draw {{ subject }} using {{ color }}"
        vars: {subject: a fox, color: $palette.primary}
        output: dist/logo.svg
        code_block: svg
      outputs: [dist/logo.svg]
    - id: check
      depends_on: [draw]
      with: {command: [sh, -c, 'grep -q "<svg" dist/logo.svg && echo ok']}
"##;

fn logo_server() -> ModelServer {
    ModelServer::start(|s, _| {
        let p = s.prompt();
        if p.contains("Pick colors") {
            openai("```json\n{\"primary\": \"#f60\"}\n```", "stop")
        } else if p.contains("Draw") {
            openai(
                "Here it is:\n```svg\n<svg xmlns=\"http://www.w3.org/2000/svg\"><circle r=\"4\" fill=\"#f60\"/></svg>\n```\n",
                "stop",
            )
        } else {
            openai_error(400, "unexpected prompt", "bad")
        }
    })
}

#[test]
fn ai_stages_write_files_and_outputs_then_replay_without_network() {
    let ws = Ws::new();
    ws.write("plan.yaml", LOGO_PLAN);
    let server = logo_server();
    let r = run_code(
        with_openai(&ws, &server, KEY),
        0,
        &[
            "execute",
            "plan.yaml",
            "--json",
            "--model",
            "test-model",
            "--record",
            "cassette.jsonl",
        ],
    );
    let results = r.json();
    assert_eq!(stage(&results, "palette")["outputs"]["primary"], "#f60");
    let svg = ws.read("dist/logo.svg");
    assert!(svg.starts_with("<svg") && svg.contains("#f60"), "{svg}");

    // What the model was asked: the specification, the constraints, the resolved reference.
    let asked = server.chat_requests();
    assert_eq!(asked.len(), 2);
    assert!(
        asked[0].prompt().contains("fox-logo")
            && asked[0].prompt().contains("svg-valid (blocking)")
    );
    assert_eq!(asked[1].prompt(), "Draw a fox using #f60");
    assert_eq!(asked[1].json()["model"], "test-model");
    assert!(
        asked[1].json()["messages"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("You draw logos.")
    );

    let routing: Vec<Value> = ws
        .read("logs/model_routing.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(routing.len(), 2);
    assert_eq!(routing[1]["stage"], "draw");
    assert_eq!(routing[1]["tokens_out"], 7);
    assert_eq!(ws.read("cassette.jsonl").lines().count(), 2);
    assert_no_key_under(ws.path(), KEY);
    assert!(!r.stdout.contains(KEY) && !r.stderr.contains(KEY));

    // Replay: the server is gone and no endpoint is configured.
    drop(server);
    std::fs::remove_dir_all(ws.p("dist")).unwrap();
    let replay = run(
        pmpo(&ws),
        &[
            "execute",
            "plan.yaml",
            "--json",
            "--force",
            "--replay",
            "cassette.jsonl",
        ],
    );
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    let again = replay.json();
    assert_eq!(ws.read("dist/logo.svg"), svg);
    for id in ["palette", "draw", "check"] {
        assert_eq!(stage(&again, id)["status"], "COMPLETED");
        assert_eq!(stage(&again, id)["outputs"], stage(&results, id)["outputs"]);
    }
    let last = ws.read("logs/model_routing.jsonl");
    assert!(
        last.lines()
            .last()
            .unwrap()
            .contains("\"endpoint\":\"replay\"")
    );
    assert_no_key_under(ws.path(), KEY);

    // A changed prompt is not in the cassette: the error names the stage and the prompt.
    ws.write(
        "plan.yaml",
        &LOGO_PLAN.replace("Draw {{ subject }}", "Paint {{ subject }}"),
    );
    let miss = run(
        pmpo(&ws),
        &[
            "execute",
            "plan.yaml",
            "--json",
            "--replay",
            "cassette.jsonl",
        ],
    );
    assert_eq!(miss.code, 1);
    let reason = stage(&miss.json(), "draw")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("stage `draw`") && reason.contains("Paint a fox using #f60"),
        "{reason}"
    );
}

#[test]
fn an_invalid_answer_gets_one_repair_then_fails_with_both_answers_kept() {
    let plan = r#"specification: {artifact_name: t, artifact_type: content}
plan:
  stages:
    - id: facts
      requires_execution: false
      with:
        prompt: Give facts
        outputs_json: true
        schema: {type: object, required: [count], properties: {count: {type: integer}}}
"#;
    // Repaired on the second answer.
    let ws = Ws::new();
    ws.write("plan.yaml", plan);
    let server = ModelServer::start(|_, n| match n {
        0 => openai("{\"count\": \"three\"}", "stop"),
        _ => openai("{\"count\": 3}", "stop"),
    });
    let r = run_code(
        with_openai(&ws, &server, KEY),
        0,
        &["execute", "plan.yaml", "--json", "--model", "m"],
    );
    assert_eq!(stage(&r.json(), "facts")["outputs"]["count"], 3);
    let repair = &server.chat_requests()[1];
    assert!(
        repair
            .prompt()
            .contains("/count: expected integer, found string"),
        "{}",
        repair.prompt()
    );
    assert_eq!(
        repair.json()["messages"].as_array().unwrap().len(),
        4,
        "system, ask, answer, repair"
    );

    // Still wrong after the repair: fails, both answers kept.
    let ws = Ws::new();
    ws.write("plan.yaml", plan);
    let server = ModelServer::start(|_, n| openai(&format!("{{\"count\": \"no {n}\"}}"), "stop"));
    let r = run(
        with_openai(&ws, &server, KEY),
        &["execute", "plan.yaml", "--json", "--model", "m"],
    );
    assert_eq!(r.code, 1);
    assert_eq!(
        server.chat_requests().len(),
        2,
        "exactly one repair request"
    );
    let results = r.json();
    let reason = stage(&results, "facts")["reason"].as_str().unwrap();
    assert!(reason.contains("after one repair request"), "{reason}");
    let kept: Vec<String> = ws
        .files()
        .into_iter()
        .filter(|f| f.starts_with(".state/ai/") && f.ends_with(".txt"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(ws.read(&kept[0]).contains("no 0") && ws.read(&kept[1]).contains("no 1"));
    // Each with what was wrong with it, beside it.
    let meta = ws.read_json(&kept[1].replace(".txt", ".json"));
    assert_eq!(meta["verdict"], "unusable");
    assert!(
        meta["problems"][0].as_str().unwrap().contains("/count"),
        "{meta}"
    );
}

#[test]
fn without_an_endpoint_ai_stages_fail_before_starting_and_others_run() {
    let ws = Ws::new();
    ws.plan(
        "    - id: think\n      requires_execution: false\n      with: {prompt: hi}\n    - id: work\n      with: {command: [sh, -c, 'echo done']}\n",
    );
    let r = run_code(
        pmpo(&ws),
        1,
        &["execute", "plan.yaml", "--json", "--keep-going"],
    );
    let results = r.json();
    assert_eq!(stage(&results, "think")["status"], "FAILED");
    assert_eq!(stage(&results, "work")["status"], "COMPLETED");
    let err = &results["errors"][0];
    assert_eq!(err["kind"], "not_configured");
    assert_mentions(err, "hint", "OPENAI_BASE_URL");
    assert!(!ws.p("logs/model_routing.jsonl").exists());
}

#[test]
fn wrong_key_and_truncation_fail_the_stage_clearly() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      requires_execution: false\n      with: {prompt: hi}\n    - id: b\n      requires_execution: false\n      with: {prompt: more}\n");
    let server = ModelServer::start(|s, _| {
        if s.prompt() == "hi" {
            openai_error(
                401,
                &format!("Incorrect API key provided: {KEY}"),
                "invalid_api_key",
            )
        } else {
            openai("and then", "length")
        }
    });
    let r = run(
        with_openai(&ws, &server, KEY),
        &[
            "execute",
            "plan.yaml",
            "--json",
            "--keep-going",
            "--model",
            "m",
        ],
    );
    assert_eq!(r.code, 1);
    let results = r.json();
    let a = stage(&results, "a")["reason"].as_str().unwrap();
    assert!(
        a.contains("unauthorized (HTTP 401)") && a.contains("[redacted]"),
        "{a}"
    );
    let b = stage(&results, "b")["reason"].as_str().unwrap();
    assert!(b.contains("cut off at the token limit"), "{b}");
    assert_eq!(results["errors"][0]["kind"], "permission_denied");
    assert!(!r.stdout.contains(KEY) && !r.stderr.contains(KEY));
    assert_no_key_under(ws.path(), KEY);
}

#[test]
fn models_lists_endpoints_routes_and_health() {
    let ws = Ws::new();
    let server =
        ModelServer::start(|_, _| Reply::json(200, serde_json::json!({"data": [{"id": "m"}]})));
    let mut c = with_openai(&ws, &server, KEY);
    c.env("OPENAI_MODEL", "m");
    let r = run_code(c, 0, &["models", "--json"]);
    let out = r.json();
    assert_eq!(out["endpoints"][0]["name"], "openai");
    assert_eq!(out["endpoints"][0]["healthy"], true);
    assert_eq!(out["endpoints"][0]["api_key_env"], "OPENAI_API_KEY");
    assert_eq!(out["phases"]["reflect"]["model"], "m");
    assert_eq!(server.requests()[0].path, "/v1/models");
    assert!(!r.stdout.contains(KEY));

    // Configured in pmpo.toml, one endpoint down.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    ws.write(
        "pmpo.toml",
        &format!(
            "[ai]\ndefault_endpoint = \"local\"\n[ai.endpoints.local]\nkind = \"openai\"\nbase_url = \"{}\"\nmodel = \"small\"\n[ai.endpoints.gone]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{down}/v1\"\nmodel = \"x\"\n[ai.phases.reflect]\nendpoint = \"gone\"\nfallback = \"local\"\n",
            server.openai_base()
        ),
    );
    let r = run_code(pmpo(&ws), 1, &["models"]);
    assert!(
        r.stdout.contains("UNHEALTHY")
            && r.stdout.contains("reflect  -> gone / x  (fallback local)"),
        "{}",
        r.stdout
    );

    let empty = Ws::new();
    let r = run(pmpo(&empty), &["models"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no model endpoint is configured"));
}

#[test]
fn ctrl_c_cancels_a_waiting_ai_stage() {
    let ws = Ws::new();
    ws.plan("    - id: slow\n      requires_execution: false\n      with: {prompt: wait}\n");
    let server = ModelServer::start(|_, _| openai("late", "stop").delay(Duration::from_secs(20)));
    let mut c = with_openai(&ws, &server, KEY);
    c.args(["execute", "plan.yaml", "--model", "m", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let t = Instant::now();
    while server.chat_requests().is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(stage(&out.json(), "slow")["status"], "CANCELLED");
}

#[test]
fn the_ai_example_replays_offline_from_its_cassette() {
    let ws = Ws::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/ai-logo");
    ws.write(
        "plan.yaml",
        &std::fs::read_to_string(format!("{example}/plan.yaml")).unwrap(),
    );
    let r = run_code(
        pmpo(&ws),
        0,
        &[
            "execute",
            "plan.yaml",
            "--json",
            "--replay",
            &format!("{example}/cassette.jsonl"),
        ],
    );
    assert_eq!(stage(&r.json(), "palette")["outputs"]["primary"], "#f97316");
    assert!(ws.read("dist/logo.svg").starts_with("<svg"));
}

#[test]
fn anthropic_endpoint_through_the_binary_and_a_slow_server_times_the_stage_out() {
    let ws = Ws::new();
    ws.plan("    - id: hi\n      requires_execution: false\n      with: {prompt: say hi, output: hi.txt}\n      outputs: [hi.txt]\n    - id: slow\n      requires_execution: false\n      timeout: 500ms\n      with: {prompt: take your time}\n");
    let server = ModelServer::start(|s, _| {
        if s.prompt() == "say hi" {
            anthropic("hi!", "end_turn")
        } else {
            anthropic("late", "end_turn").delay(Duration::from_secs(10))
        }
    });
    let mut c = pmpo(&ws);
    c.env("ANTHROPIC_BASE_URL", server.base())
        .env("ANTHROPIC_API_KEY", KEY)
        .env("ANTHROPIC_MODEL", "claude-test");
    let t = Instant::now();
    let r = run(c, &["execute", "plan.yaml", "--json", "--keep-going"]);
    assert!(t.elapsed() < Duration::from_secs(8));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let results = r.json();
    assert_eq!(stage(&results, "hi")["status"], "COMPLETED");
    assert_eq!(ws.read("hi.txt"), "hi!");
    assert_eq!(stage(&results, "slow")["status"], "TIMEOUT");
    assert_eq!(server.chat_requests()[0].header("x-api-key"), Some(KEY));
    assert_no_key_under(ws.path(), KEY);
}

#[test]
fn a_failing_model_endpoint_opens_its_breaker() {
    let ws = Ws::new();
    ws.plan("    - id: think\n      requires_execution: false\n      cache: false\n      with: {prompt: hi}\n");
    let server = ModelServer::start(|_, _| {
        openai_error(503, "overloaded", "server_error").header("retry-after", "0")
    });
    let args = with_breaker(
        &["execute", "plan.yaml", "--json", "--model", "m"],
        "1",
        Some("1h"),
    );
    run_code(with_openai(&ws, &server, KEY), 1, &args);
    // The endpoint is an adapter with its own breaker, held in the store...
    let row = model_breaker(&ws).expect("the model endpoint's adapter is recorded");
    assert_eq!(row["breaker"], "OPEN", "{row}");
    // ...so the next run does not call it and pauses in safe mode.
    let calls = server.requests().len();
    let r = run_code(with_openai(&ws, &server, KEY), 3, &args);
    assert_eq!(
        server.requests().len(),
        calls,
        "an open breaker must stop the calls"
    );
    assert_mentions(
        stage(&r.json(), "think"),
        "reason",
        "circuit open for adapter model:",
    );
}

#[test]
fn an_ai_stage_output_over_an_existing_file_not_in_outputs_is_restorable() {
    let ws = Ws::new();
    ws.write("hi.txt", "my own greeting\n");
    ws.plan("    - id: hi\n      requires_execution: false\n      with: {prompt: say hi, output: hi.txt}\n");
    let server = ModelServer::start(|_, _| anthropic("hi!", "end_turn"));
    let mut c = pmpo(&ws);
    c.env("ANTHROPIC_BASE_URL", server.base())
        .env("ANTHROPIC_API_KEY", KEY)
        .env("ANTHROPIC_MODEL", "claude-test");
    run_code(c, 0, &["execute", "plan.yaml", "-q"]);
    assert_eq!(ws.read("hi.txt"), "hi!");
    let r = ws.run(&["ledger", "--path", "hi.txt", "--json"]);
    let rows = r.json();
    assert_eq!(rows[0]["writer"], "hi", "{rows}");
    assert_eq!(rows[0]["status"], "completed", "{rows}");
    ws.assert_restores("hi.txt", "my own greeting\n");
}
