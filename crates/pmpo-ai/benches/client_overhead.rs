//! What the client adds to a model call beyond the HTTP exchange itself.
//!
//! `cargo bench -p pmpo-ai --bench client_overhead`. Against a model server on
//! 127.0.0.1 in this process, it times (a) the bare exchange: a minimal
//! HTTP/1.1 POST of the same request body over a new connection, reading the
//! whole answer, and (b) `Client::complete` for the same request (routing,
//! request building, the HTTP exchange, answer parsing and checks, the
//! routing-log line). The difference of the medians is the client's cost.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pmpo_ai::{AiConfig, CallContext, ChatRequest, Client, Phase, Route};
use pmpo_store::Workspace;
use pmpo_testkit::model_server::{ModelServer, openai};
use tokio_util::sync::CancellationToken;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bare(addr: std::net::SocketAddr, body: &str) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    assert!(out.starts_with(b"HTTP/1.1 200"));
    t.elapsed()
}

fn main() {
    let n: usize = std::env::var("PMPO_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let answer = "```svg\n<svg xmlns=\"http://www.w3.org/2000/svg\"><circle r=\"4\"/></svg>\n```";
    let server = ModelServer::start(move |_, _| openai(answer, "stop"));
    let base = server.openai_base();
    let cfg = AiConfig::from_toml("", "pmpo.toml", &|k| match k {
        "OPENAI_BASE_URL" => Some(base.clone()),
        "OPENAI_MODEL" => Some("m".into()),
        _ => None,
    })
    .expect("config");
    let client = Client::new(cfg).expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = Workspace::open(dir.path()).expect("workspace");
    let cancel = CancellationToken::new();
    let mut req = ChatRequest::user(
        "Draw a small icon for the artifact. Constraints: - c1 (high): Small SVG",
    );
    req.system = Some("You draw logos.".into());
    let body = serde_json::json!({
        "model": "m",
        "messages": [{"role": "system", "content": "You draw logos."}, {"role": "user", "content": req.messages[0].content}],
        "stream": false
    })
    .to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut bare_t = Vec::new();
    let mut client_t = Vec::new();
    for i in 0..n + 20 {
        let b = bare(server.addr, &body);
        let ctx = CallContext {
            workspace: &ws,
            run_id: "bench",
            stage: "s",
            phase: Phase::Execute,
            route: Route::default(),
            cancel: &cancel,
            deadline: Instant::now() + Duration::from_secs(30),
            brief: None,
        };
        let t = Instant::now();
        rt.block_on(client.complete(&ctx, &req)).expect("answer");
        let c = t.elapsed();
        if i >= 20 {
            bare_t.push(b);
            client_t.push(c);
        }
    }
    let (b, c) = (median(bare_t), median(client_t));
    println!("model call against a loopback server, median of {n} calls (new connection each):");
    println!("  bare HTTP exchange:  {:7.3} ms", b.as_secs_f64() * 1000.0);
    println!("  Client::complete:    {:7.3} ms", c.as_secs_f64() * 1000.0);
    println!(
        "  client overhead:     {:+7.3} ms per call (target: under 1 ms)",
        (c.as_secs_f64() - b.as_secs_f64()) * 1000.0
    );
}
