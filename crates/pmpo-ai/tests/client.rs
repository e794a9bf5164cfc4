//! The client against a scripted local server speaking both wire formats.

use pmpo_testkit::model_server;

use std::path::Path;
use std::time::{Duration, Instant};

use model_server::*;
use pmpo_ai::{
    AiConfig, CallContext, ChatRequest, Client, ErrorKind, Overrides, Phase, ROUTING_LOG, Route,
};
use pmpo_store::Workspace;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk-test-SECRET-4f9a1c";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn config(toml: &str, env: &[(&str, &str)]) -> AiConfig {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut cfg = AiConfig::from_toml(toml, "pmpo.toml", &move |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    cfg.max_retries = 3;
    cfg
}

fn openai_cfg(server: &ModelServer) -> AiConfig {
    config(
        "",
        &[
            ("OPENAI_BASE_URL", &server.openai_base()),
            ("OPENAI_API_KEY", KEY),
            ("OPENAI_MODEL", "test-model"),
        ],
    )
}

struct Call {
    ws_dir: tempfile::TempDir,
    ws: Workspace,
    cancel: CancellationToken,
}

impl Call {
    fn new() -> Call {
        let ws_dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(ws_dir.path()).unwrap();
        Call {
            ws_dir,
            ws,
            cancel: CancellationToken::new(),
        }
    }
    fn ctx(&self, stage: &'static str, timeout: Duration) -> CallContext<'_> {
        CallContext {
            workspace: &self.ws,
            run_id: "run-1",
            stage,
            phase: Phase::Execute,
            route: Route::default(),
            cancel: &self.cancel,
            deadline: Instant::now() + timeout,
            brief: None,
        }
    }
    fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.ws_dir.path().join(ROUTING_LOG))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn ask(client: &Client, call: &Call, prompt: &str) -> Result<pmpo_ai::Answer, pmpo_ai::AiError> {
    let mut req = ChatRequest::user(prompt);
    req.system = Some("be brief".into());
    rt().block_on(client.complete(&call.ctx("draw", Duration::from_secs(20)), &req))
}

/// Every file under `dir`, read as text, must not contain the key.
fn assert_no_key(dir: &Path) {
    assert_no_key_under(dir, KEY);
}

/// A client that records every exchange into `cassette`.
fn recording(mut cfg: AiConfig, cassette: &Path) -> Client {
    cfg.apply(&Overrides {
        record: Some(cassette.to_path_buf()),
        ..Default::default()
    });
    Client::new(cfg).unwrap()
}

/// A client that answers from `cassette` alone.
fn replaying(cassette: &Path) -> Client {
    let mut cfg = config("", &[]);
    cfg.apply(&Overrides {
        replay: Some(cassette.to_path_buf()),
        ..Default::default()
    });
    Client::new(cfg).unwrap()
}

/// Asks each prompt once; every one must fail.
fn failures(client: &Client, call: &Call, asked: &[&str]) -> Vec<pmpo_ai::AiError> {
    asked
        .iter()
        .map(|p| match ask(client, call, p) {
            Ok(a) => panic!("`{p}` was answered: {:?}", a.completion),
            Err(e) => e,
        })
        .collect()
}

/// Asking `prompt` again (from a cassette) fails as `was` did: the same
/// kind, message and hint.
fn assert_fails_again(
    client: &Client,
    call: &Call,
    prompt: &str,
    was: &pmpo_ai::AiError,
) -> pmpo_ai::AiError {
    let again = match ask(client, call, prompt) {
        Ok(a) => panic!("`{prompt}` was answered on replay: {:?}", a.completion),
        Err(e) => e,
    };
    assert_eq!(again.kind, was.kind, "{prompt}");
    assert_eq!(again.message, was.message, "{prompt}");
    assert_eq!(again.hint, was.hint, "{prompt}");
    again
}

#[test]
fn openai_wire_format_and_routing_log() {
    let server = ModelServer::start(|_, _| openai("hello there", "stop"));
    let client = Client::new(openai_cfg(&server)).unwrap();
    let call = Call::new();
    let a = ask(&client, &call, "say hello").unwrap();
    assert_eq!(a.completion.text, "hello there");
    assert_eq!(
        (a.endpoint.as_str(), a.model.as_str()),
        ("openai", "test-model")
    );
    let req = &server.chat_requests()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let body = req.json();
    assert_eq!(body["model"], "test-model");
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "say hello"})
    );
    let log = call.log();
    assert_eq!(log.len(), 1);
    for (k, v) in [
        ("phase", json!("execute")),
        ("stage", json!("draw")),
        ("endpoint", json!("openai")),
        ("model", json!("test-model")),
        ("tokens_in", json!(11)),
        ("tokens_out", json!(7)),
        ("outcome", json!("ok")),
    ] {
        assert_eq!(log[0][k], v, "{k}");
    }
    assert!(log[0]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_no_key(call.ws_dir.path());
}

#[test]
fn anthropic_wire_format() {
    let server = ModelServer::start(|_, _| anthropic("bonjour", "end_turn"));
    let cfg = config(
        "",
        &[
            ("ANTHROPIC_BASE_URL", &server.base()),
            ("ANTHROPIC_API_KEY", KEY),
            ("ANTHROPIC_MODEL", "claude-test"),
        ],
    );
    let client = Client::new(cfg).unwrap();
    let call = Call::new();
    let a = ask(&client, &call, "say hello").unwrap();
    assert_eq!(a.completion.text, "bonjour");
    assert_eq!(a.completion.tokens_out, Some(3));
    let req = &server.chat_requests()[0];
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some(KEY));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    let body = req.json();
    assert_eq!(body["system"], "be brief");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "say hello"}])
    );
}

#[test]
fn retries_429_honouring_retry_after_and_5xx() {
    let server = ModelServer::start(|_, n| match n {
        0 => openai_error(429, "slow down", "rate_limit_exceeded").header("retry-after", "1"),
        1 => openai_error(503, "overloaded", "server_error"),
        _ => openai("finally", "stop"),
    });
    let client = Client::new(openai_cfg(&server)).unwrap();
    let call = Call::new();
    let t = Instant::now();
    let a = ask(&client, &call, "x").unwrap();
    assert_eq!(a.completion.text, "finally");
    assert_eq!(a.attempts, 3);
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured"
    );
    assert_eq!(call.log()[0]["attempts"], 3);

    // A server that keeps failing: the last error, after the retries.
    let server = ModelServer::start(|_, _| {
        openai_error(500, "boom", "server_error").header("retry-after", "0")
    });
    let err = ask(
        &Client::new(openai_cfg(&server)).unwrap(),
        &Call::new(),
        "x",
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ServerError);
    assert_eq!(server.chat_requests().len(), 4);
    assert!(
        err.message.contains("HTTP 500") && err.message.contains("boom"),
        "{}",
        err.message
    );
}

#[test]
fn clear_errors_for_each_failure() {
    let cases: Vec<(Reply, ErrorKind, &str)> = vec![
        (
            openai_error(
                401,
                &format!("Incorrect API key provided: {KEY}"),
                "invalid_api_key",
            ),
            ErrorKind::Auth,
            "unauthorized",
        ),
        (
            openai_error(404, "The model `nope` does not exist", "model_not_found"),
            ErrorKind::UnknownModel,
            "does not know model `test-model`",
        ),
        (
            Reply::json(
                404,
                json!({"error": "model \"nope\" not found, try pulling it first"}),
            ),
            ErrorKind::UnknownModel,
            "not found",
        ),
        (
            openai_error(
                400,
                "Your request was rejected by our content_policy",
                "content_policy_violation",
            ),
            ErrorKind::Refused,
            "refused",
        ),
        (
            openai_error(400, "context too long", "context_length_exceeded"),
            ErrorKind::BadRequest,
            "did not accept",
        ),
        (
            openai("half an answ", "length"),
            ErrorKind::Truncated,
            "cut off",
        ),
        (openai("", "stop"), ErrorKind::EmptyAnswer, "empty"),
        (
            openai("no", "content_filter"),
            ErrorKind::Refused,
            "refused",
        ),
        (
            Reply::json(200, json!({"unexpected": true})),
            ErrorKind::BadResponse,
            "unexpected format",
        ),
    ];
    for (reply, kind, words) in cases {
        let r = reply.clone();
        let server = ModelServer::start(move |_, _| r.clone());
        let call = Call::new();
        let err = ask(&Client::new(openai_cfg(&server)).unwrap(), &call, "x").unwrap_err();
        assert_eq!(err.kind, kind, "{reply:?}: {}", err.message);
        assert!(
            err.message.contains(words),
            "{words:?} not in {}",
            err.message
        );
        assert!(!err.message.contains(KEY) && !format!("{err:?}").contains(KEY));
        assert_eq!(call.log()[0]["outcome"], kind.as_str());
        assert_no_key(call.ws_dir.path());
    }
    let err401 = {
        let server = ModelServer::start(|_, _| openai_error(401, "bad key", "invalid_api_key"));
        ask(
            &Client::new(openai_cfg(&server)).unwrap(),
            &Call::new(),
            "x",
        )
        .unwrap_err()
    };
    assert!(err401.hint.unwrap().contains("OPENAI_API_KEY"));

    // Anthropic's truncation and errors.
    let server = ModelServer::start(|_, n| match n {
        0 => anthropic("cut", "max_tokens"),
        _ => anthropic_error(404, "not_found_error", "model: claude-nope"),
    });
    let cfg = config(
        "",
        &[
            ("ANTHROPIC_BASE_URL", &server.base()),
            ("ANTHROPIC_MODEL", "claude-nope"),
        ],
    );
    let client = Client::new(cfg).unwrap();
    assert_eq!(
        ask(&client, &Call::new(), "x").unwrap_err().kind,
        ErrorKind::Truncated
    );
    assert_eq!(
        ask(&client, &Call::new(), "x").unwrap_err().kind,
        ErrorKind::UnknownModel
    );
}

#[test]
fn unreachable_slow_and_cancelled() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        "",
        &[
            ("OPENAI_BASE_URL", &format!("http://127.0.0.1:{port}/v1")),
            ("OPENAI_MODEL", "m"),
        ],
    );
    let err = ask(&Client::new(cfg).unwrap(), &Call::new(), "x").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unreachable, "{}", err.message);
    assert!(err.message.contains(&port.to_string()) && err.hint.unwrap().contains("running"));

    // Slower than the time limit.
    let server = ModelServer::start(|_, _| openai("late", "stop").delay(Duration::from_secs(5)));
    let client = Client::new(openai_cfg(&server)).unwrap();
    let call = Call::new();
    let t = Instant::now();
    let err = rt()
        .block_on(client.complete(
            &call.ctx("slow", Duration::from_millis(300)),
            &ChatRequest::user("x"),
        ))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(t.elapsed() < Duration::from_secs(4));

    // Cancelled while waiting.
    let call = Call::new();
    let cancel = call.cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        cancel.cancel();
    });
    let t = Instant::now();
    let err = rt()
        .block_on(client.complete(
            &call.ctx("slow", Duration::from_secs(30)),
            &ChatRequest::user("x"),
        ))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Cancelled);
    assert!(t.elapsed() < Duration::from_secs(4));
}

#[test]
fn fallback_when_the_preferred_endpoint_fails_its_probe() {
    let down = ModelServer::start(|s, _| {
        if s.method == "GET" {
            openai_error(503, "down", "server_error")
        } else {
            openai("from preferred", "stop")
        }
    });
    let up = ModelServer::start(|_, _| openai("from fallback", "stop"));
    let toml = format!(
        r#"
[ai.endpoints.primary]
kind = "openai"
base_url = "{}"
model = "p"
[ai.endpoints.backup]
kind = "openai"
base_url = "{}"
model = "b"
[ai.phases.execute]
endpoint = "primary"
fallback = "backup"
"#,
        down.openai_base(),
        up.openai_base()
    );
    let client = Client::new(config(&toml, &[])).unwrap();
    let call = Call::new();
    let a = ask(&client, &call, "x").unwrap();
    assert_eq!(a.completion.text, "from fallback");
    assert_eq!((a.endpoint.as_str(), a.model.as_str()), ("backup", "b"));
    assert_eq!(a.fallback_from.as_deref(), Some("primary"));
    assert!(a.notes[0].contains("failed its health probe"));
    ask(&client, &call, "y").unwrap();
    // The probe result is cached: one probe for two calls.
    assert_eq!(down.requests().len(), 1);
    assert!(down.chat_requests().is_empty());
    assert_eq!(call.log()[1]["fallback_from"], "primary");
}

#[test]
fn record_then_replay_without_network() {
    let server = ModelServer::start(|s, _| openai(&format!("answer to {}", s.prompt()), "stop"));
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("cassette.jsonl");
    let client = recording(openai_cfg(&server), &cassette);
    let call = Call::new();
    let a1 = ask(&client, &call, "one").unwrap();
    let a2 = ask(&client, &call, "two").unwrap();
    drop(server);

    let replay = replaying(&cassette);
    assert_eq!(
        ask(&replay, &call, "two").unwrap().completion,
        a2.completion
    );
    assert_eq!(
        ask(&replay, &call, "one").unwrap().completion,
        a1.completion
    );
    let err = ask(&replay, &call, "three").unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotRecorded);
    assert!(
        err.message.contains("stage `draw`") && err.message.contains("\"three\""),
        "{}",
        err.message
    );
    assert_no_key(dir.path());
    assert_no_key(call.ws_dir.path());
}

#[test]
fn a_broken_connection_is_retried_and_an_echoed_key_is_redacted() {
    let server = ModelServer::start(|_, n| match n {
        0 => Reply::json(200, json!(null)).body_drop(),
        _ => openai(&format!("your key is {KEY}"), "stop"),
    });
    let call = Call::new();
    let a = ask(&Client::new(openai_cfg(&server)).unwrap(), &call, "x").unwrap();
    assert_eq!(a.attempts, 2);
    assert_eq!(a.completion.text, "your key is [redacted]");
}

#[test]
fn without_a_model_the_only_model_the_server_lists_is_used() {
    let one = ModelServer::start(|s, _| {
        if s.method == "GET" {
            Reply::json(
                200,
                json!({"object": "list", "data": [{"id": "tiny-1b", "object": "model"}]}),
            )
        } else {
            openai("ok", "stop")
        }
    });
    let cfg = config("", &[("OPENAI_BASE_URL", &one.openai_base())]);
    let client = Client::new(cfg).unwrap();
    let a = ask(&client, &Call::new(), "x").unwrap();
    assert_eq!(a.model, "tiny-1b");
    assert!(a.notes[0].contains("the only model it lists"));
    assert_eq!(one.chat_requests()[0].json()["model"], "tiny-1b");

    let two =
        ModelServer::start(|_, _| Reply::json(200, json!({"data": [{"id": "a"}, {"id": "b"}]})));
    let cfg = config("", &[("OPENAI_BASE_URL", &two.openai_base())]);
    let err = ask(&Client::new(cfg).unwrap(), &Call::new(), "x").unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotConfigured);
    assert!(err.message.contains("offers: a, b") && err.hint.unwrap().contains("--model"));
}

#[test]
fn max_tokens_is_renamed_for_models_that_want_max_completion_tokens() {
    let server = ModelServer::start(|s, _| {
        if s.json().get("max_tokens").is_some() {
            openai_error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                "unsupported_parameter",
            )
        } else {
            openai("ok", "stop")
        }
    });
    let mut req = ChatRequest::user("x");
    req.max_tokens = Some(50);
    let call = Call::new();
    let client = Client::new(openai_cfg(&server)).unwrap();
    let a = rt()
        .block_on(client.complete(&call.ctx("s", Duration::from_secs(10)), &req))
        .unwrap();
    assert_eq!(a.completion.text, "ok");
    assert_eq!(
        server.chat_requests()[1].json()["max_completion_tokens"],
        50
    );
}

#[test]
fn rejected_answers_are_recorded_and_replayed_as_the_same_failure() {
    // A cut-off answer, a refusal (OpenAI's `refusal` field) and an empty one.
    let server = ModelServer::start(|s, _| match s.prompt().as_str() {
        "long" => openai(&format!("it goes on and {KEY}"), "length"),
        "bad" => Reply::json(
            200,
            json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 4, "completion_tokens": 6}
            }),
        ),
        _ => openai("   ", "stop"),
    });
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("cassette.jsonl");
    let client = recording(openai_cfg(&server), &cassette);
    let call = Call::new();
    let asked = ["long", "bad", "blank"];
    let live = failures(&client, &call, &asked);
    let kinds: Vec<ErrorKind> = live.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            ErrorKind::Truncated,
            ErrorKind::Refused,
            ErrorKind::EmptyAnswer
        ]
    );
    assert!(kinds.iter().all(|k| k.answer_quality() && !k.outage()));
    assert!(
        live[1].message.contains("refused: I can't help with that."),
        "{}",
        live[1].message
    );
    // The rejected answer travels with the error, redacted, with its tokens,
    // and is kept in the workspace, numbered in the order the answers came.
    for (n, e) in live.iter().enumerate() {
        let kept = format!(".state/ai/run-1/draw/answer-{}.txt", n + 1);
        assert_eq!(
            e.answer.as_ref().unwrap().kept.as_deref(),
            Some(kept.as_str())
        );
        assert!(
            e.message
                .ends_with(&format!("the answer is kept in {kept}")),
            "{}",
            e.message
        );
    }
    let kept = |rel: &str| std::fs::read_to_string(call.ws_dir.path().join(rel)).unwrap();
    assert_eq!(
        kept(".state/ai/run-1/draw/answer-1.txt"),
        "it goes on and [redacted]"
    );
    let meta: Value = serde_json::from_str(&kept(".state/ai/run-1/draw/answer-1.json")).unwrap();
    assert_eq!(meta["finish"], "length");
    assert_eq!(meta["tokens_out"], 7);
    assert_eq!(meta["verdict"], "truncated");
    assert_eq!(
        kept(".state/ai/run-1/draw/answer-2.txt"),
        "I can't help with that."
    );
    let cut = live[0].answer.as_ref().unwrap();
    assert_eq!(cut.completion.text, "it goes on and [redacted]");
    assert_eq!(cut.completion.tokens_out, Some(7));
    assert_eq!(
        (cut.endpoint.as_str(), cut.model.as_str()),
        ("openai", "test-model")
    );
    // The routing log has the tokens and the finish reason of a rejected answer.
    let log = call.log();
    assert_eq!(log[0]["outcome"], "truncated");
    assert_eq!(log[0]["finish"], "length");
    assert_eq!(log[0]["tokens_out"], 7);
    assert_eq!(log[1]["tokens_out"], 6);

    let recorded: Vec<Value> = std::fs::read_to_string(&cassette)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rejected: Vec<&str> = recorded
        .iter()
        .map(|e| e["rejected"].as_str().unwrap())
        .collect();
    assert_eq!(rejected, ["truncated", "refused", "empty_answer"]);
    assert_eq!(recorded[0]["response"]["finish"], "length");
    drop(server);

    let replay = replaying(&cassette);
    // Another workspace, as a fresh checkout would be: the same answer numbers.
    let elsewhere = Call::new();
    for (p, was) in asked.iter().zip(&live) {
        let again = assert_fails_again(&replay, &elsewhere, p, was);
        assert_eq!(
            again.answer, was.answer,
            "{p}: the same answer, endpoint and model"
        );
    }
    assert_no_key(dir.path());
    assert_no_key(call.ws_dir.path());
}

#[test]
fn a_cassette_written_before_rejected_answers_were_recorded_still_replays() {
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("old.jsonl");
    let req = {
        let mut r = ChatRequest::user("old");
        r.system = Some("be brief".into());
        r
    };
    // The layout of a cassette from before: no `rejected`, no token counts.
    let line = json!({
        "hash": req.hash(), "stage": "draw", "phase": "execute", "endpoint": "openai",
        "model": "m", "request": req, "response": {"text": "from the past", "finish": "stop"}
    });
    std::fs::write(&cassette, format!("{line}\n")).unwrap();
    let replay = replaying(&cassette);
    let call = Call::new();
    assert_eq!(
        ask(&replay, &call, "old").unwrap().completion.text,
        "from the past"
    );
    // A miss names which case it is: this stage asked other things...
    let miss = ask(&replay, &call, "new").unwrap_err();
    assert_eq!(miss.kind, ErrorKind::NotRecorded);
    assert!(
        miss.hint.as_deref().unwrap().contains("prompt changed"),
        "{miss:?}"
    );
    // ...or has no exchange in the recording at all.
    let req = ChatRequest::user("x");
    let other = rt()
        .block_on(replay.complete(&call.ctx("later", Duration::from_secs(5)), &req))
        .unwrap_err();
    let hint = other.hint.unwrap();
    assert!(
        hint.contains("stage `later` has no exchange in the cassette")
            && !hint.contains("prompt changed"),
        "{hint}"
    );
}

#[test]
fn errors_an_endpoint_answered_with_are_recorded_and_replayed() {
    let server = ModelServer::start(|s, _| match s.prompt().as_str() {
        "key" => openai_error(
            401,
            &format!("Incorrect API key provided: {KEY}"),
            "invalid_api_key",
        ),
        "busy" => openai_error(500, "internal error", "server_error").header("retry-after", "0"),
        _ => openai_error(400, "context too long", "context_length_exceeded"),
    });
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("cassette.jsonl");
    let client = recording(openai_cfg(&server), &cassette);
    let call = Call::new();
    let asked = ["key", "busy", "long"];
    let live = failures(&client, &call, &asked);
    assert_eq!(
        live.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [
            ErrorKind::Auth,
            ErrorKind::ServerError,
            ErrorKind::BadRequest
        ]
    );
    let busy_calls = server
        .chat_requests()
        .iter()
        .filter(|r| r.prompt() == "busy")
        .count();
    assert_eq!(busy_calls, 4, "the client retried the 500 three times");
    drop(server);
    let recorded = std::fs::read_to_string(&cassette).unwrap();
    assert_eq!(
        recorded.lines().count(),
        3,
        "one outcome per call: {recorded}"
    );
    let first: Value = serde_json::from_str(recorded.lines().next().unwrap()).unwrap();
    assert_eq!(first["error"]["kind"], "auth");
    assert!(first.get("response").is_none());

    let replay = replaying(&cassette);
    for (p, was) in asked.iter().zip(&live) {
        assert_fails_again(&replay, &call, p, was);
        let last = call.log().last().cloned().unwrap();
        assert_eq!(last["endpoint"], "replay");
        assert_eq!(last["attempts"], 1, "{p}: a replay does not retry");
    }

    // Nothing listened: nothing was said, so nothing is recorded.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = dir.path().join("gone.jsonl");
    let mut cfg = config(
        "",
        &[
            ("OPENAI_BASE_URL", &format!("http://127.0.0.1:{port}/v1")),
            ("OPENAI_MODEL", "m"),
        ],
    );
    cfg.apply(&Overrides {
        record: Some(gone.clone()),
        ..Default::default()
    });
    let err = ask(&Client::new(cfg).unwrap(), &call, "x").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unreachable);
    assert_eq!(std::fs::read_to_string(&gone).unwrap(), "");
    assert_no_key(dir.path());
    assert_no_key(call.ws_dir.path());
}
