//! Model answers tell the truth about the endpoint: an answer that is cut off,
//! off-schema or refused is an answer-quality failure (kept, recorded and
//! replayed), never an outage on the endpoint's circuit breaker; connection
//! failures and 5xx still open it. The real binary against a scripted model
//! server on loopback.

mod common;
#[path = "../../pmpo-ai/tests/support/model_server.rs"]
mod model_server;

use std::path::Path;
use std::process::Command;

use common::*;
use model_server::*;
use serde_json::Value;

const KEY: &str = "sk-fake-TRUTH-8c1f42e0d3";

fn run(mut c: Command, args: &[&str]) -> Run {
    c.args(args).output().unwrap().into()
}

fn with_server(ws: &Ws, server: &ModelServer) -> Command {
    let mut c = bin_without_models(ws.path());
    c.env("OPENAI_BASE_URL", server.openai_base())
        .env("OPENAI_API_KEY", KEY);
    c
}

fn stage<'a>(results: &'a Value, id: &str) -> &'a Value {
    results["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no stage {id} in {results}"))
}

/// The breaker row of the model endpoint's adapter (`None`: never recorded).
fn model_breaker(ws: &Ws) -> Option<Value> {
    let r = run(bin_without_models(ws.path()), &["adapters", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .find(|row| {
            row["adapter"]
                .as_str()
                .is_some_and(|a| a.starts_with("model:"))
        })
        .cloned()
}

fn assert_breaker_untouched(ws: &Ws) {
    if let Some(row) = model_breaker(ws) {
        assert_eq!(row["breaker"], "CLOSED", "{row}");
        assert_eq!(row["consecutive_failures"], 0, "{row}");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn assert_no_key_under(dir: &Path) {
    for f in walk(dir) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(KEY), "{} contains the API key", f.display());
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
            with_server(&ws, &server),
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
    let r = run(
        with_server(&ws, &server),
        &["execute", "plan.yaml", "--json", "--model", "m"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.stdout);
    assert_eq!(
        ws.read("dist/haiku.txt"),
        "An old pond\na frog jumps in\nthe sound of water"
    );
    assert_breaker_untouched(&ws);
    assert_no_key_under(ws.path());
}
