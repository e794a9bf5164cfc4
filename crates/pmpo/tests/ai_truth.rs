//! Model answers tell the truth about the endpoint: an answer that is cut off,
//! off-schema or refused is an answer-quality failure (kept, recorded and
//! replayed), never an outage on the endpoint's circuit breaker; connection
//! failures and 5xx still open it. The real binary against a scripted model
//! server on loopback.

use pmpo_testkit as common;
use pmpo_testkit::model_server;

use common::refine::{run, run_code};
use common::*;
use model_server::*;
use serde_json::Value;

const KEY: &str = "sk-fake-TRUTH-8c1f42e0d3";

fn assert_breaker_untouched(ws: &Ws) {
    if let Some(row) = model_breaker(ws) {
        assert_eq!(row["breaker"], "CLOSED", "{row}");
        assert_eq!(row["consecutive_failures"], 0, "{row}");
    }
}

const ONE_AI_STAGE: &str = "    - id: write\n      requires_execution: false\n      cache: false\n      with: {prompt: Write a haiku, output: dist/haiku.txt}\n      outputs: [dist/haiku.txt]\n";

#[test]
fn truncated_answers_never_open_the_breaker_of_a_healthy_server() {
    let ws = Ws::new();
    ws.plan(ONE_AI_STAGE);
    // Six answers cut off at the token limit, then a good one.
    let server = ModelServer::start(|_, n| {
        if n < 6 {
            openai(&format!("An old pond, a frog {n}"), "length")
        } else {
            openai("An old pond\na frog jumps in\nthe sound of water", "stop")
        }
    });
    for i in 0..6 {
        let r = run(
            with_openai(&ws, &server, KEY),
            &["execute", "plan.yaml", "--json", "--model", "m"],
        );
        assert_eq!(r.code, 1, "run {i}: {}\n{}", r.stderr, r.stdout);
        let results = r.json();
        assert_eq!(stage(&results, "write")["status"], "FAILED");
        assert_eq!(results["errors"][0]["kind"], "answer_quality", "{results}");
        let reason = stage(&results, "write")["reason"].as_str().unwrap();
        assert!(reason.contains("cut off at the token limit"), "{reason}");
        assert!(
            reason.contains(".state/ai/"),
            "the kept answer is named: {reason}"
        );
        assert_breaker_untouched(&ws);
    }
    assert_eq!(server.chat_requests().len(), 6);
    // `pmpo models` and the breaker agree: the server is up and counted so.
    let mut c = with_openai(&ws, &server, KEY);
    c.env("OPENAI_MODEL", "m");
    let models = run(c, &["models", "--json"]);
    assert_eq!(models.code, 0, "{}", models.stderr);
    let endpoint = &models.json()["endpoints"][0];
    assert_eq!(endpoint["healthy"], true, "{endpoint}");
    assert_eq!(endpoint["breaker"]["state"], "CLOSED", "{endpoint}");
    assert_eq!(endpoint["breaker"]["consecutive_failures"], 0, "{endpoint}");
    run_code(
        with_openai(&ws, &server, KEY),
        0,
        &["execute", "plan.yaml", "--json", "--model", "m"],
    );
    assert_eq!(
        ws.read("dist/haiku.txt"),
        "An old pond\na frog jumps in\nthe sound of water"
    );
    assert_breaker_untouched(&ws);
    assert_no_key_under(ws.path(), KEY);
}

/// Every line of a JSON-lines file, parsed.
fn lines(ws: &Ws, rel: &str) -> Vec<Value> {
    ws.read(rel)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A reason with the run's id blanked (it names the run's answer directory).
fn without_run_id(reason: &str, run_id: &str) -> String {
    reason.replace(run_id, "RUN")
}

const RECORDED_PLAN: &str = r#"specification: {artifact_name: t, artifact_type: content}
plan:
  stages:
    - id: poem
      requires_execution: false
      with: {prompt: Write a long poem, output: dist/poem.txt, max_tokens: 7}
      outputs: [dist/poem.txt]
    - id: facts
      requires_execution: false
      with:
        prompt: Give facts
        outputs_json: true
        schema: {type: object, required: [count], properties: {count: {type: integer}}}
"#;

/// What a recorded run with cut-off answers keeps: every exchange in the
/// cassette, each call in the routing log, and each answer in the workspace
/// with its finish reason and tokens. Returns the poem's kept answer and
/// its metadata.
fn assert_recorded(ws: &Ws, rec_run: &str) -> (String, Value) {
    // Everything that was said is in the cassette, the cut-off answers too.
    let cassette = lines(ws, "cassette.jsonl");
    assert_eq!(cassette.len(), 3, "{cassette:?}");
    let poem = cassette.iter().find(|e| e["stage"] == "poem").unwrap();
    assert_eq!(poem["rejected"], "truncated");
    assert_eq!(poem["response"]["finish"], "length");
    assert_eq!(poem["response"]["tokens_out"], 7);
    assert_eq!(poem["response"]["tokens_in"], 11);
    let facts: Vec<&Value> = cassette.iter().filter(|e| e["stage"] == "facts").collect();
    assert_eq!(facts.len(), 2, "the ask and the repair exchange");
    assert!(facts[0].get("rejected").is_none());
    assert_eq!(facts[1]["rejected"], "truncated");

    // ...in the routing log with its outcome, finish reason and tokens...
    let routed = lines(ws, "logs/model_routing.jsonl");
    let poem_call = routed.iter().find(|l| l["stage"] == "poem").unwrap();
    assert_eq!(poem_call["outcome"], "truncated");
    assert_eq!(poem_call["finish"], "length");
    assert_eq!(poem_call["tokens_out"], 7);
    // ...and kept in the workspace with its finish reason and tokens.
    let dir = format!(".state/ai/{rec_run}/poem");
    let text = ws.read(&format!("{dir}/answer-1.txt"));
    assert!(
        text.starts_with("Of arms and the man I sing, [redacted], who"),
        "{text}"
    );
    let meta = ws.read_json(&format!("{dir}/answer-1.json"));
    assert_eq!(meta["finish"], "length");
    assert_eq!(meta["tokens_in"], 11);
    assert_eq!(meta["tokens_out"], 7);
    assert_eq!(meta["verdict"], "truncated");
    assert_eq!(meta["endpoint"], "openai");
    assert_eq!(meta["model"], "m");
    let facts_dir = format!(".state/ai/{rec_run}/facts");
    assert_eq!(
        ws.read(&format!("{facts_dir}/answer-2.txt")),
        "{\"count\": "
    );
    assert_eq!(
        ws.read_json(&format!("{facts_dir}/answer-1.json"))["verdict"],
        "unusable"
    );
    assert_eq!(
        ws.read_json(&format!("{facts_dir}/answer-2.json"))["finish"],
        "length"
    );
    (text, meta)
}

/// The replay ended each stage as the recording did, for the same reasons
/// and with the same errors.
fn assert_same_outcome(recorded: &Value, replayed: &Value, rec_run: &str) {
    let rep_run = replayed["run_id"].as_str().unwrap();
    for id in ["poem", "facts"] {
        let (a, b) = (stage(recorded, id), stage(replayed, id));
        assert_eq!(a["status"], b["status"]);
        assert_eq!(
            without_run_id(a["reason"].as_str().unwrap(), rec_run),
            without_run_id(b["reason"].as_str().unwrap(), rep_run),
            "stage {id}"
        );
    }
    assert_eq!(
        recorded["errors"].as_array().unwrap().len(),
        replayed["errors"].as_array().unwrap().len()
    );
    for (a, b) in recorded["errors"]
        .as_array()
        .unwrap()
        .iter()
        .zip(replayed["errors"].as_array().unwrap())
    {
        assert_eq!(a["kind"], b["kind"]);
        assert_eq!(a["hint"], b["hint"]);
    }
}

#[test]
fn a_replay_of_a_run_with_a_truncated_answer_reproduces_that_run() {
    let ws = Ws::new();
    ws.write("plan.yaml", RECORDED_PLAN);
    // The poem is cut off (and echoes the key); the facts come back off-schema,
    // and the answer to the repair request is cut off too.
    let server = ModelServer::start(|s, _| {
        let p = s.prompt();
        if p.contains("long poem") {
            openai(&format!("Of arms and the man I sing, {KEY}, who"), "length")
        } else if p.contains("Answer again") {
            openai("{\"count\": ", "length")
        } else {
            openai("{\"count\": \"many\"}", "stop")
        }
    });
    let rec = run(
        with_openai(&ws, &server, KEY),
        &[
            "execute",
            "plan.yaml",
            "--json",
            "--keep-going",
            "--model",
            "m",
            "--record",
            "cassette.jsonl",
        ],
    );
    assert_eq!(rec.code, 1, "{}", rec.stderr);
    let recorded = rec.json();
    let rec_run = recorded["run_id"].as_str().unwrap().to_string();
    for id in ["poem", "facts"] {
        assert_eq!(stage(&recorded, id)["status"], "FAILED");
    }
    for e in recorded["errors"].as_array().unwrap() {
        assert_eq!(e["kind"], "answer_quality", "{e}");
    }
    let poem_reason = stage(&recorded, "poem")["reason"].as_str().unwrap();
    assert!(
        poem_reason.contains("cut off at the token limit (7 tokens out)")
            && poem_reason.contains(&format!(".state/ai/{rec_run}/poem/answer-1.txt")),
        "{poem_reason}"
    );

    let (text, meta) = assert_recorded(&ws, &rec_run);

    // The replay, with no server and no endpoint: the same run again.
    drop(server);
    let replay = run(
        bin_without_models(ws.path()),
        &[
            "execute",
            "plan.yaml",
            "--json",
            "--keep-going",
            "--replay",
            "cassette.jsonl",
        ],
    );
    assert_eq!(replay.code, rec.code, "{}", replay.stderr);
    let replayed = replay.json();
    let rep_run = replayed["run_id"].as_str().unwrap();
    assert_ne!(rep_run, rec_run);
    assert_same_outcome(&recorded, &replayed, &rec_run);
    assert_eq!(
        ws.read(&format!(".state/ai/{rep_run}/poem/answer-1.txt")),
        text,
        "the replay keeps the same answer"
    );
    assert_eq!(
        ws.read_json(&format!(".state/ai/{rep_run}/poem/answer-1.json")),
        meta,
        "with the same finish reason, tokens, endpoint and model"
    );
    assert!(!replay.stdout.contains("prompt changed") && !replay.stdout.contains("has no answer"));
    assert_no_key_under(ws.path(), KEY);
    assert!(!rec.stdout.contains(KEY) && !rec.stderr.contains(KEY));
}

#[test]
fn an_off_schema_answer_after_the_repair_is_kept_and_leaves_the_breaker_alone() {
    let ws = Ws::new();
    ws.plan("    - id: facts\n      requires_execution: false\n      cache: false\n      with:\n        prompt: Give facts\n        outputs_json: true\n        schema: {type: object, required: [count], properties: {count: {type: integer}}}\n");
    let server = ModelServer::start(|_, n| openai(&format!("{{\"count\": \"lots {n}\"}}"), "stop"));
    // The strictest breaker: one counted failure would open it.
    let args = with_breaker(
        &["execute", "plan.yaml", "--json", "--model", "m"],
        "1",
        None,
    );
    for round in 0..2 {
        let r = run(with_openai(&ws, &server, KEY), &args);
        assert_eq!(r.code, 1, "round {round}: {}", r.stderr);
        let results = r.json();
        let run_id = results["run_id"].as_str().unwrap();
        assert_eq!(results["errors"][0]["kind"], "answer_quality");
        let reason = stage(&results, "facts")["reason"].as_str().unwrap();
        assert!(
            reason.contains("after one repair request") && reason.contains("/count"),
            "{reason}"
        );
        let dir = format!(".state/ai/{run_id}/facts");
        for n in 1..=2 {
            let text = ws.read(&format!("{dir}/answer-{n}.txt"));
            assert!(
                text.contains(&format!("lots {}", 2 * round + n - 1)),
                "{text}"
            );
            let meta = ws.read_json(&format!("{dir}/answer-{n}.json"));
            assert_eq!(meta["verdict"], "unusable", "{meta}");
            assert_eq!(meta["finish"], "stop");
            assert_eq!(meta["tokens_out"], 7);
        }
        assert_breaker_untouched(&ws);
    }
    assert_eq!(
        server.chat_requests().len(),
        4,
        "both runs asked, with one repair each"
    );
}

#[test]
fn outages_still_open_the_breaker() {
    // Nothing listens on this port: every call is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ws = Ws::new();
    ws.plan(ONE_AI_STAGE);
    let refused = || {
        let mut c = bin_without_models(ws.path());
        c.env("OPENAI_BASE_URL", format!("http://127.0.0.1:{port}/v1"))
            .env("OPENAI_API_KEY", KEY);
        c
    };
    let args = [
        "execute",
        "plan.yaml",
        "--json",
        "--model",
        "m",
        "--breaker-cooldown",
        "1h",
    ];
    // The default threshold: five consecutive outages.
    for i in 0..5 {
        let r = run(refused(), &args);
        assert_eq!(r.code, 1, "run {i}: {}", r.stderr);
        assert_eq!(r.json()["errors"][0]["kind"], "service_unavailable");
        let row = model_breaker(&ws).unwrap();
        assert_eq!(row["consecutive_failures"], i + 1, "{row}");
    }
    assert_eq!(model_breaker(&ws).unwrap()["breaker"], "OPEN");
    let mut c = refused();
    c.env("OPENAI_MODEL", "m");
    let models = run(c, &["models"]);
    assert_eq!(models.code, 1);
    assert!(
        models.stdout.contains("UNHEALTHY")
            && models.stdout.contains("breaker OPEN until")
            && models.stdout.contains("after 5 outage(s)"),
        "{}",
        models.stdout
    );
    let r = run(refused(), &args);
    assert_eq!(r.code, 3, "safe mode: {}", r.stderr);
    assert_mentions(
        stage(&r.json(), "write"),
        "reason",
        "circuit open for adapter model:openai",
    );

    // 5xx (after the client's own retries) count as well.
    let ws = Ws::new();
    ws.plan(ONE_AI_STAGE);
    let server = ModelServer::start(|_, _| {
        openai_error(500, "internal error", "server_error").header("retry-after", "0")
    });
    let args = with_breaker(
        &["execute", "plan.yaml", "--json", "--model", "m"],
        "2",
        Some("1h"),
    );
    for _ in 0..2 {
        let r = run_code(with_openai(&ws, &server, KEY), 1, &args);
        assert_eq!(r.json()["errors"][0]["kind"], "service_unavailable");
    }
    assert_eq!(model_breaker(&ws).unwrap()["breaker"], "OPEN");
    let calls = server.chat_requests().len();
    assert_eq!(run(with_openai(&ws, &server, KEY), &args).code, 3);
    assert_eq!(
        server.chat_requests().len(),
        calls,
        "an open breaker stops the calls"
    );
    assert_no_key_under(ws.path(), KEY);

    // A 429 that outlasts the client's retries is an outage too.
    let ws = Ws::new();
    ws.plan(ONE_AI_STAGE);
    let server = ModelServer::start(|_, _| {
        openai_error(429, "slow down", "rate_limit_exceeded").header("retry-after", "0")
    });
    let args = with_breaker(
        &["execute", "plan.yaml", "--json", "--model", "m"],
        "1",
        Some("1h"),
    );
    let r = run_code(with_openai(&ws, &server, KEY), 1, &args);
    assert_eq!(r.json()["errors"][0]["kind"], "service_unavailable");
    assert!(server.chat_requests().len() > 1, "the client retried first");
    assert_eq!(model_breaker(&ws).unwrap()["breaker"], "OPEN");
}

#[test]
fn a_cut_off_answer_in_a_refine_phase_is_kept_recorded_and_breaks_nothing() {
    let ws = Ws::new();
    // Every phase's answer is cut off at the token limit.
    let server = ModelServer::start(|_, n| openai(&format!("{{\"goals\": [\"cut {n}"), "length"));
    let args = [
        "refine",
        "hero",
        "--type",
        "meta-prompt",
        "--intent",
        "an image prompt for a calm hero banner",
        "--json",
        "--model",
        "m",
        "--record",
        "loop.cassette.jsonl",
    ];
    let r = run(with_openai(&ws, &server, KEY), &args);
    assert_ne!(
        r.code, 3,
        "a healthy server never pauses the loop: {}",
        r.stderr
    );
    let kept: Vec<String> = ws
        .files()
        .into_iter()
        .filter(|f| f.starts_with(".state/ai/") && f.ends_with(".txt"))
        .collect();
    assert!(
        !kept.is_empty(),
        "the cut-off answers are kept: {:?}",
        ws.files()
    );
    for f in &kept {
        assert!(ws.read(f).starts_with("{\"goals\": [\"cut "), "{f}");
        let meta = ws.read_json(&f.replace(".txt", ".json"));
        assert_eq!(meta["finish"], "length", "{f}");
        assert_eq!(meta["verdict"], "truncated", "{f}");
        assert_eq!(meta["tokens_out"], 7, "{f}");
    }
    let recorded = lines(&ws, "loop.cassette.jsonl");
    assert_eq!(
        recorded.len(),
        server.chat_requests().len(),
        "every exchange recorded"
    );
    assert!(recorded.iter().all(|e| e["rejected"] == "truncated"));
    assert_breaker_untouched(&ws);
    assert_no_key_under(ws.path(), KEY);
}

#[test]
fn retried_cut_off_answers_in_one_run_are_all_kept_and_never_trip_the_breaker() {
    let ws = Ws::new();
    ws.plan("    - id: write\n      requires_execution: false\n      retry: {attempts: 7, backoff: fixed, initial: 10ms}\n      with: {prompt: Write a haiku, output: dist/haiku.txt}\n      outputs: [dist/haiku.txt]\n");
    let server = ModelServer::start(|_, n| {
        if n < 6 {
            openai(&format!("cut {n}"), "length")
        } else {
            openai("whole", "stop")
        }
    });
    let r = run_code(
        with_openai(&ws, &server, KEY),
        0,
        &with_breaker(
            &["execute", "plan.yaml", "--json", "--model", "m"],
            "1",
            None,
        ),
    );
    let results = r.json();
    assert_eq!(stage(&results, "write")["status"], "COMPLETED");
    assert_eq!(stage(&results, "write")["attempts"], 7);
    assert_eq!(ws.read("dist/haiku.txt"), "whole");
    let run_id = results["run_id"].as_str().unwrap();
    for n in 1..=6 {
        let dir = format!(".state/ai/{run_id}/write");
        assert_eq!(
            ws.read(&format!("{dir}/answer-{n}.txt")),
            format!("cut {}", n - 1)
        );
        assert_eq!(
            ws.read_json(&format!("{dir}/answer-{n}.json"))["finish"],
            "length"
        );
    }
    assert!(
        !ws.p(&format!(".state/ai/{run_id}/write/answer-7.txt"))
            .exists(),
        "a usable answer of a stage that succeeded is not kept"
    );
    assert_breaker_untouched(&ws);
}

#[test]
fn refused_empty_and_cut_off_anthropic_answers_are_answer_quality_too() {
    let ws = Ws::new();
    ws.plan("    - id: write\n      requires_execution: false\n      retry: {attempts: 4, backoff: fixed, initial: 10ms}\n      with: {prompt: Write a haiku, output: dist/haiku.txt}\n      outputs: [dist/haiku.txt]\n");
    let server = ModelServer::start(|_, n| match n {
        0 => anthropic("I won't write that.", "refusal"),
        1 => anthropic("", "end_turn"),
        2 => anthropic("An old po", "max_tokens"),
        _ => anthropic("An old pond", "end_turn"),
    });
    let mut c = bin_without_models(ws.path());
    c.env("ANTHROPIC_BASE_URL", server.base())
        .env("ANTHROPIC_API_KEY", KEY)
        .env("ANTHROPIC_MODEL", "claude-test");
    let r = run_code(
        c,
        0,
        &with_breaker(&["execute", "plan.yaml", "--json"], "1", None),
    );
    let results = r.json();
    assert_eq!(stage(&results, "write")["attempts"], 4);
    let run_id = results["run_id"].as_str().unwrap();
    let verdicts: Vec<Value> = (1..=3)
        .map(|n| {
            ws.read_json(&format!(".state/ai/{run_id}/write/answer-{n}.json"))["verdict"].clone()
        })
        .collect();
    assert_eq!(verdicts, ["refused", "empty_answer", "truncated"]);
    assert_eq!(
        ws.read(&format!(".state/ai/{run_id}/write/answer-1.txt")),
        "I won't write that."
    );
    // Every failed attempt says why, as an answer-quality failure.
    let log: Vec<Value> = ws
        .stage_log("write")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = log
        .iter()
        .filter_map(|a| a["error"]["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["answer_quality"; 3], "{log:?}");
    assert_breaker_untouched(&ws);
    assert_no_key_under(ws.path(), KEY);
}
