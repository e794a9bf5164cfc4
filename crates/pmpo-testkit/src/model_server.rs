//! A scripted model server on 127.0.0.1 (an ephemeral port) that speaks the
//! OpenAI chat-completions and Anthropic Messages wire formats, including
//! their errors. Tests give it a handler; it records every request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// The last user message's text (either wire format).
    pub fn prompt(&self) -> String {
        let v = self.json();
        v["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_string()
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    /// Closes the connection instead of answering.
    pub fn body_drop(mut self) -> Reply {
        self.body = DROP.to_string();
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// An OpenAI chat completion.
pub fn openai(text: &str, finish: &str) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        }),
    )
}

/// An Anthropic message.
pub fn anthropic(text: &str, stop: &str) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "msg_test", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop, "usage": {"input_tokens": 5, "output_tokens": 3}
        }),
    )
}

/// An error in OpenAI's shape.
pub fn openai_error(status: u16, message: &str, code: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {"message": message, "type": "invalid_request_error", "code": code}}),
    )
}

/// An error in Anthropic's shape.
pub fn anthropic_error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// A reply body that makes the server close the connection without answering.
pub const DROP: &str = "\u{0}drop";

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// The server; it stops when dropped.
pub struct ModelServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl ModelServer {
    /// Starts a server; `handler` gets each request and its index (0-based,
    /// counting only chat requests, not probes).
    pub fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let count = Arc::new(AtomicUsize::new(0));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (h, s, c, st) = (
                    Arc::clone(&handler),
                    Arc::clone(&seen2),
                    Arc::clone(&count),
                    Arc::clone(&stop2),
                );
                std::thread::spawn(move || serve(conn, &*h, &s, &c, &st));
            }
        });
        ModelServer { addr, seen, stop }
    }

    /// The OpenAI-style base URL (`.../v1`).
    pub fn openai_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Anthropic-style base URL (the host).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests other than health probes.
    pub fn chat_requests(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    conn: TcpStream,
    handler: &Handler,
    seen: &Mutex<Vec<Seen>>,
    count: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Seen {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    seen.lock().unwrap().push(req.clone());
    let n = if req.method == "POST" {
        count.fetch_add(1, Ordering::SeqCst)
    } else {
        usize::MAX
    };
    let reply = handler(&req, n);
    // A slow reply sleeps in small steps so a stopped server lets go.
    let mut waited = Duration::ZERO;
    while waited < reply.delay && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
        waited += Duration::from_millis(10);
    }
    if reply.body == DROP {
        // Close the connection without an answer.
        return;
    }
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    let mut conn = conn;
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.flush();
}

/// The binary in `ws`, talking to `server` as its OpenAI endpoint with `key`.
pub fn with_openai(ws: &crate::Ws, server: &ModelServer, key: &str) -> std::process::Command {
    let mut c = crate::bin_without_models(ws.path());
    c.env("OPENAI_BASE_URL", server.openai_base())
        .env("OPENAI_API_KEY", key);
    c
}

/// The breaker row of the model endpoint's adapter (`None`: never recorded).
pub fn model_breaker(ws: &crate::Ws) -> Option<Value> {
    crate::refine::run_code(
        crate::bin_without_models(ws.path()),
        0,
        &["adapters", "--json"],
    )
    .json()
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

/// Fails if any file under `dir` holds `key`.
pub fn assert_no_key_under(dir: &std::path::Path, key: &str) {
    for f in crate::ws::walk(dir) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(key), "{} contains the API key", f.display());
    }
}
