//! A minimal DevTools protocol client over Chromium's `--remote-debugging-pipe`
//! (JSON messages separated by NUL bytes on file descriptors 3 and 4). No port
//! is opened, and the browser exits by itself when the pipe closes.
//!
//! A reader thread parses messages: responses complete the pending call with
//! the same `id`, events go to the subscriber of their `sessionId`. It works
//! the same under any tokio runtime (or none).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// A protocol-level failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CdpError {
    #[error("the browser connection is closed")]
    Closed,
    #[error("`{method}` got no answer within {secs} s")]
    Timeout { method: String, secs: u64 },
    #[error("`{method}` failed: {message}")]
    Protocol { method: String, message: String },
    #[error("cannot write to the browser: {0}")]
    Write(String),
}

/// A protocol event (`method` + `params`).
#[derive(Debug, Clone)]
pub struct CdpEvent {
    pub method: String,
    pub params: Value,
}

type Pending = HashMap<u64, oneshot::Sender<Result<Value, String>>>;
type Subscribers = HashMap<String, mpsc::UnboundedSender<CdpEvent>>;

struct Shared {
    pending: Mutex<Pending>,
    subscribers: Mutex<Subscribers>,
    closed: AtomicBool,
}

/// One connection to a browser.
pub struct Connection {
    writer: Mutex<File>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
    closed_rx: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// How long one command may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

impl Connection {
    /// Starts reading `from_browser` on a thread; commands go to `to_browser`.
    pub fn new(to_browser: File, from_browser: File) -> std::io::Result<Arc<Self>> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let (closed_tx, closed_rx) = std::sync::mpsc::channel();
        let reader_shared = shared.clone();
        std::thread::Builder::new()
            .name("pmpo-cdp-reader".into())
            .spawn(move || {
                read_loop(from_browser, &reader_shared);
                reader_shared.closed.store(true, Ordering::SeqCst);
                // Fail every call still waiting.
                if let Ok(mut p) = reader_shared.pending.lock() {
                    p.clear();
                }
                if let Ok(mut s) = reader_shared.subscribers.lock() {
                    s.clear();
                }
                let _ = closed_tx.send(());
            })?;
        Ok(Arc::new(Connection {
            writer: Mutex::new(to_browser),
            next_id: AtomicU64::new(1),
            shared,
            closed_rx: Mutex::new(Some(closed_rx)),
        }))
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    fn write(&self, message: &Value) -> Result<(), CdpError> {
        let mut bytes = serde_json::to_vec(message).map_err(|e| CdpError::Write(e.to_string()))?;
        bytes.push(0);
        let mut w = self
            .writer
            .lock()
            .map_err(|_| CdpError::Write("writer lock poisoned".into()))?;
        w.write_all(&bytes)
            .map_err(|e| CdpError::Write(e.to_string()))
    }

    fn message(&self, id: u64, session: Option<&str>, method: &str, params: Value) -> Value {
        let mut m = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            m["sessionId"] = Value::String(s.to_string());
        }
        m
    }

    /// Sends a command and waits for its result.
    pub async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, CdpError> {
        if self.is_closed() {
            return Err(CdpError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .map_err(|_| CdpError::Closed)?
            .insert(id, tx);
        if let Err(e) = self.write(&self.message(id, session, method, params)) {
            if let Ok(mut p) = self.shared.pending.lock() {
                p.remove(&id);
            }
            return Err(e);
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(message))) => Err(CdpError::Protocol {
                method: method.to_string(),
                message,
            }),
            Ok(Err(_)) => Err(CdpError::Closed),
            Err(_) => {
                if let Ok(mut p) = self.shared.pending.lock() {
                    p.remove(&id);
                }
                Err(CdpError::Timeout {
                    method: method.to_string(),
                    secs: CALL_TIMEOUT.as_secs(),
                })
            }
        }
    }

    /// Sends a command without waiting for its result (request interception
    /// answers, which must not wait on the event loop that sends them).
    pub fn send(&self, session: Option<&str>, method: &str, params: Value) -> Result<(), CdpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.write(&self.message(id, session, method, params))
    }

    /// Events of one session from now on.
    pub fn subscribe(&self, session: &str) -> mpsc::UnboundedReceiver<CdpEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut s) = self.shared.subscribers.lock() {
            s.insert(session.to_string(), tx);
        }
        rx
    }

    pub fn unsubscribe(&self, session: &str) {
        if let Ok(mut s) = self.shared.subscribers.lock() {
            s.remove(session);
        }
    }

    /// Waits (blocking, up to `limit`) until the browser closed its end of the pipe.
    pub fn wait_closed(&self, limit: Duration) -> bool {
        if self.is_closed() {
            return true;
        }
        let rx = self.closed_rx.lock().ok().and_then(|mut r| r.take());
        match rx {
            Some(rx) => rx.recv_timeout(limit).is_ok() || self.is_closed(),
            None => self.is_closed(),
        }
    }
}

fn read_loop(from_browser: File, shared: &Shared) {
    let mut reader = BufReader::with_capacity(1 << 20, from_browser);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(0, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() == Some(&0) {
            buf.pop();
        }
        let Ok(msg) = serde_json::from_slice::<Value>(&buf) else {
            continue;
        };
        if let Some(id) = msg.get("id").and_then(Value::as_u64) {
            let waiter = shared.pending.lock().ok().and_then(|mut p| p.remove(&id));
            if let Some(tx) = waiter {
                let result = match msg.get("error") {
                    Some(err) => Err(err
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                        .to_string()),
                    None => Ok(msg.get("result").cloned().unwrap_or(Value::Null)),
                };
                let _ = tx.send(result);
            }
        } else if let Some(method) = msg.get("method").and_then(Value::as_str) {
            let session = msg.get("sessionId").and_then(Value::as_str).unwrap_or("");
            let sub = shared
                .subscribers
                .lock()
                .ok()
                .and_then(|s| s.get(session).cloned());
            if let Some(tx) = sub {
                let _ = tx.send(CdpEvent {
                    method: method.to_string(),
                    params: msg.get("params").cloned().unwrap_or(Value::Null),
                });
            }
        }
    }
}
