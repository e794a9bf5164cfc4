//! Rendering one page in a running browser over the DevTools protocol, with
//! every diagnostic a person would see in the DevTools console and network
//! panel.
//!
//! Pages are served from a virtual origin ([`ORIGIN`]) by request
//! interception: a request for `ORIGIN/<path>` is answered with the
//! workspace file at `<path>` (confined to the workspace), so pages load
//! their relative resources and HTMX can fetch fragments with no server and
//! no `file://` restrictions. Every other request is failed as blocked
//! unless the network is allowed, and shows up as a failed request.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use base64::Engine as _;
use pmpo_store::Workspace;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::cdp::{CdpEvent, Connection};
use super::report::{ConsoleMessage, FailedRequest, PageError, Viewport};

/// The origin pages are served from. `.invalid` never resolves, so nothing
/// can reach a real host by accident.
pub const ORIGIN: &str = "http://pmpo-preview.invalid";
/// A page is quiet when, for this long, no request was in flight and no
/// console output, page error or DOM mutation happened, and no timer it set
/// (`setTimeout`, or an interval before its first run) is still due within
/// the settle cap.
const QUIET: Duration = Duration::from_millis(150);
/// How often the page is asked whether it is quiet while settling.
const PROBE_EVERY: Duration = Duration::from_millis(40);
/// The longest wait for that answer: a page that cannot answer is busy.
const PROBE_LIMIT: Duration = Duration::from_millis(500);

/// Installed in every document before its own scripts: counts the timers due
/// within the cap (a late `throw` or `console.error` is waited for) and the
/// time of the last DOM mutation. A companion timer of the same delay, set
/// after the page's own, forgets each timer once it has run, so the page's
/// callbacks and their stack traces are untouched.
const SETTLE_PROBE: &str = r#"(() => {
  const w = window, cap = __CAP__;
  if (w.__pmpoSettle) return;
  const due = new Set();
  const st = w.setTimeout, si = w.setInterval, ct = w.clearTimeout, ci = w.clearInterval;
  const track = (id, ms) => {
    ms = Number(ms) || 0;
    if (ms <= cap) { due.add(id); st.call(w, () => due.delete(id), ms); }
    return id;
  };
  w.setTimeout = function (f, ms, ...a) { return track(st.call(w, f, ms, ...a), ms); };
  w.setInterval = function (f, ms, ...a) { return track(si.call(w, f, ms, ...a), ms); };
  w.clearTimeout = function (id) { due.delete(id); return ct.call(w, id); };
  w.clearInterval = function (id) { due.delete(id); return ci.call(w, id); };
  let last = performance.now();
  new MutationObserver(() => { last = performance.now(); })
    .observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
  Object.defineProperty(w, "__pmpoSettle", {
    value: () => [due.size, performance.now() - last], enumerable: false,
  });
})()"#;

/// How a settle ended.
enum Settled {
    Quiet,
    /// The cap was reached: why the page was not quiet.
    Capped(String),
    /// The page did not answer (its main thread is busy).
    Busy,
}
/// The longest wait for a page's load event.
const LOAD_LIMIT: Duration = Duration::from_secs(30);
/// The longest wait for two animation frames (a busy page never paints).
const PAINT_LIMIT: Duration = Duration::from_secs(3);

/// The reason given for a page whose main thread never yields.
pub const PAGE_BUSY: &str = "the page did not respond: a script kept its main thread busy (an endless loop?), so nothing could be painted";

/// What to render.
pub struct RenderRequest<'a> {
    pub ws: &'a Workspace,
    /// Workspace-relative path of the page.
    pub page: &'a str,
    pub network: bool,
    pub viewport: Viewport,
    /// The longest wait for the network to become quiet after the load event.
    pub settle_limit: Duration,
    /// An extra fixed wait before the screenshot.
    pub extra_wait: Duration,
    /// CSS selectors clicked in order once the page settled (each click is
    /// followed by another settle), to show a state after interaction.
    pub clicks: &'a [String],
    pub deadline: Instant,
    pub cancel: &'a CancellationToken,
}

/// What was observed.
#[derive(Debug, Default)]
pub struct Observed {
    pub console: Vec<ConsoleMessage>,
    pub page_errors: Vec<PageError>,
    pub failed_requests: Vec<FailedRequest>,
    pub screenshot: Option<Vec<u8>>,
    pub load_ms: f64,
    pub settle_ms: f64,
    /// Each settle's wait until the page was quiet (after the load, then after each click).
    pub settle_waits: Vec<f64>,
    pub screenshot_ms: f64,
    /// The page itself could not be loaded.
    pub navigation_error: Option<String>,
    /// A `click` selector that matched nothing.
    pub click_error: Option<String>,
    pub notes: Vec<String>,
}

/// A workspace path as a URL on the virtual origin.
pub fn url_of(rel: &str) -> String {
    let mut out = String::from(ORIGIN);
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        for b in seg.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("ttf") => "font/ttf",
        Some("wasm") => "application/wasm",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

struct RequestInfo {
    url: String,
    method: String,
    resource_type: Option<String>,
}

/// The state of one page while it loads.
struct PageState<'a> {
    conn: &'a Connection,
    session: String,
    ws: &'a Workspace,
    network: bool,
    rx: UnboundedReceiver<CdpEvent>,
    requests: HashMap<String, RequestInfo>,
    inflight: HashSet<String>,
    blocked: HashSet<String>,
    /// Requests already recorded as failed (an HTTP error is often followed by a cancel).
    failed: HashSet<String>,
    /// Requests answered by interception: their outcome is known here, even
    /// when the browser reports it to another target (a worker).
    answered: HashSet<String>,
    last_activity: Instant,
    loaded: bool,
    crashed: bool,
    obs: Observed,
}

fn str_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// A console argument as DevTools shows it: strings bare, objects by their preview.
fn remote_object_text(arg: &Value) -> String {
    if let Some(preview) = arg.get("preview")
        && let Some(props) = preview.get("properties").and_then(Value::as_array)
    {
        let array = str_of(preview, "subtype") == Some("array");
        let items: Vec<String> = props
            .iter()
            .map(|p| {
                let v = str_of(p, "value").unwrap_or_default();
                let v = if str_of(p, "type") == Some("string") {
                    format!("'{v}'")
                } else {
                    v.to_string()
                };
                if array {
                    v
                } else {
                    format!("{}: {v}", str_of(p, "name").unwrap_or_default())
                }
            })
            .collect();
        let more = if preview.get("overflow").and_then(Value::as_bool) == Some(true) {
            ", …"
        } else {
            ""
        };
        return if array {
            format!("[{}{more}]", items.join(", "))
        } else {
            format!("{{{}{more}}}", items.join(", "))
        };
    }
    match arg.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => str_of(arg, "description")
            .or_else(|| str_of(arg, "unserializableValue"))
            .or_else(|| str_of(arg, "type"))
            .unwrap_or_default()
            .to_string(),
    }
}

impl PageState<'_> {
    fn handle(&mut self, ev: CdpEvent) {
        let p = &ev.params;
        match ev.method.as_str() {
            "Fetch.requestPaused" => self.on_request_paused(p),
            "Network.requestWillBeSent" => {
                if let Some(id) = str_of(p, "requestId") {
                    let req = p.get("request").cloned().unwrap_or(Value::Null);
                    self.requests.insert(
                        id.to_string(),
                        RequestInfo {
                            url: str_of(&req, "url").unwrap_or_default().to_string(),
                            method: str_of(&req, "method").unwrap_or("GET").to_string(),
                            resource_type: str_of(p, "type").map(str::to_string),
                        },
                    );
                    if !self.answered.contains(id) {
                        self.inflight.insert(id.to_string());
                    }
                    self.last_activity = Instant::now();
                }
            }
            "Network.responseReceived" => {
                // Every response here comes from memory or fails fast, and a
                // `fetch()` whose body is never read never finishes loading:
                // a response counts as the end of its request.
                if let Some(id) = str_of(p, "requestId") {
                    self.inflight.remove(id);
                    self.last_activity = Instant::now();
                }
                let resp = p.get("response").cloned().unwrap_or(Value::Null);
                let status = resp.get("status").and_then(Value::as_f64).unwrap_or(0.0) as u16;
                if status >= 400
                    && self
                        .failed
                        .insert(str_of(p, "requestId").unwrap_or_default().to_string())
                {
                    let id = str_of(p, "requestId").unwrap_or_default();
                    let info = self.requests.get(id);
                    let text = str_of(&resp, "statusText").unwrap_or_default();
                    self.obs.failed_requests.push(FailedRequest {
                        url: str_of(&resp, "url")
                            .map(str::to_string)
                            .or_else(|| info.map(|i| i.url.clone()))
                            .unwrap_or_default(),
                        method: info.map_or("GET".into(), |i| i.method.clone()),
                        resource_type: str_of(p, "type")
                            .map(str::to_string)
                            .or_else(|| info.and_then(|i| i.resource_type.clone())),
                        reason: format!("HTTP {status} {text}").trim_end().to_string(),
                        status: Some(status),
                        blocked: false,
                    });
                }
            }
            "Network.loadingFinished" => {
                if let Some(id) = str_of(p, "requestId") {
                    self.inflight.remove(id);
                    self.last_activity = Instant::now();
                }
            }
            "Network.loadingFailed" => {
                let id = str_of(p, "requestId").unwrap_or_default().to_string();
                self.inflight.remove(&id);
                self.last_activity = Instant::now();
                if !self.failed.insert(id.clone()) {
                    return;
                }
                let info = self.requests.get(&id);
                let url = info.map(|i| i.url.clone()).unwrap_or_default();
                let error = str_of(p, "errorText").unwrap_or("failed").to_string();
                let blocked = self.blocked.contains(&url);
                let canceled = p.get("canceled").and_then(Value::as_bool) == Some(true);
                let reason = if blocked {
                    format!(
                        "{error}: blocked by pmpo, network access is off for this preview (set `network: true` to allow)"
                    )
                } else if canceled {
                    format!("{error} (canceled)")
                } else if let Some(r) = str_of(p, "blockedReason") {
                    format!("{error} (blocked: {r})")
                } else {
                    error
                };
                self.obs.failed_requests.push(FailedRequest {
                    url,
                    method: info.map_or("GET".into(), |i| i.method.clone()),
                    resource_type: str_of(p, "type")
                        .map(str::to_string)
                        .or_else(|| info.and_then(|i| i.resource_type.clone())),
                    reason,
                    status: None,
                    blocked,
                });
            }
            "Runtime.consoleAPICalled" => {
                self.last_activity = Instant::now();
                let kind = str_of(p, "type").unwrap_or("log");
                let level = match kind {
                    "error" | "assert" => "error",
                    "warning" => "warning",
                    "info" => "info",
                    "debug" => "debug",
                    _ => "log",
                };
                let text = p
                    .get("args")
                    .and_then(Value::as_array)
                    .map(|args| {
                        args.iter()
                            .map(remote_object_text)
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let frame = p.pointer("/stackTrace/callFrames/0");
                self.obs.console.push(ConsoleMessage {
                    level: level.into(),
                    text: if kind == "assert" && text.is_empty() {
                        "Assertion failed".into()
                    } else {
                        text
                    },
                    source: "console-api".into(),
                    url: frame
                        .and_then(|f| str_of(f, "url"))
                        .filter(|u| !u.is_empty())
                        .map(str::to_string),
                    line: frame
                        .and_then(|f| f.get("lineNumber"))
                        .and_then(Value::as_u64)
                        .map(|l| l + 1),
                    column: frame
                        .and_then(|f| f.get("columnNumber"))
                        .and_then(Value::as_u64)
                        .map(|c| c + 1),
                });
            }
            "Log.entryAdded" => {
                self.last_activity = Instant::now();
                let e = p.get("entry").cloned().unwrap_or(Value::Null);
                let level = match str_of(&e, "level").unwrap_or("info") {
                    "verbose" => "debug",
                    "warning" => "warning",
                    "error" => "error",
                    _ => "info",
                };
                self.obs.console.push(ConsoleMessage {
                    level: level.into(),
                    text: str_of(&e, "text").unwrap_or_default().to_string(),
                    source: str_of(&e, "source").unwrap_or("other").to_string(),
                    url: str_of(&e, "url")
                        .filter(|u| !u.is_empty())
                        .map(str::to_string),
                    line: e.get("lineNumber").and_then(Value::as_u64).map(|l| l + 1),
                    column: None,
                });
            }
            "Runtime.exceptionThrown" => {
                self.last_activity = Instant::now();
                let d = p.get("exceptionDetails").cloned().unwrap_or(Value::Null);
                let description = d.pointer("/exception/description").and_then(Value::as_str);
                // As the console shows it: "Uncaught (in promise) Error: ...".
                let prefix = str_of(&d, "text").unwrap_or_default();
                let (message, stack) = match description {
                    Some(desc) => {
                        let mut lines = desc.lines();
                        let first = lines.next().unwrap_or_default();
                        let first = if prefix.is_empty() || first.starts_with(prefix) {
                            first.to_string()
                        } else {
                            format!("{prefix} {first}")
                        };
                        let rest: Vec<&str> = lines.collect();
                        (first, (!rest.is_empty()).then(|| rest.join("\n")))
                    }
                    None => {
                        let text = str_of(&d, "text").unwrap_or("Uncaught error").to_string();
                        let value = d.pointer("/exception/value").map(|v| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        });
                        (value.map_or(text.clone(), |v| format!("{text} {v}")), None)
                    }
                };
                self.obs.page_errors.push(PageError {
                    message,
                    url: str_of(&d, "url")
                        .filter(|u| !u.is_empty())
                        .map(str::to_string),
                    line: d.get("lineNumber").and_then(Value::as_u64).map(|l| l + 1),
                    column: d.get("columnNumber").and_then(Value::as_u64).map(|c| c + 1),
                    stack,
                });
            }
            "Page.loadEventFired" => {
                self.loaded = true;
                // Scripts run on load may start requests: the quiet period starts now.
                self.last_activity = Instant::now();
            }
            "Inspector.targetCrashed" => self.crashed = true,
            _ => {}
        }
    }

    fn on_request_paused(&mut self, p: &Value) {
        let Some(fetch_id) = str_of(p, "requestId") else {
            return;
        };
        let req = p.get("request").cloned().unwrap_or(Value::Null);
        let url = str_of(&req, "url").unwrap_or_default().to_string();
        let method = str_of(&req, "method").unwrap_or("GET").to_string();
        let network_id = str_of(p, "networkId").unwrap_or_default().to_string();
        let resource_type = str_of(p, "resourceType").map(str::to_string);
        if !network_id.is_empty() {
            self.answered.insert(network_id.clone());
            self.inflight.remove(&network_id);
            self.last_activity = Instant::now();
        }
        let mut failure: Option<(String, Option<u16>, bool)> = None;
        let s = Some(self.session.as_str());
        let result = if let Some(rest) = url.strip_prefix(ORIGIN) {
            let path = rest.split(['?', '#']).next().unwrap_or_default();
            let (code, phrase, ctype, body) = self.serve(path, &method);
            if code >= 400 {
                failure = Some((format!("HTTP {code} {phrase}"), Some(code), false));
            }
            let engine = base64::engine::general_purpose::STANDARD;
            self.conn.send(
                s,
                "Fetch.fulfillRequest",
                json!({
                    "requestId": fetch_id,
                    "responseCode": code,
                    "responsePhrase": phrase,
                    "responseHeaders": [
                        {"name": "Content-Type", "value": ctype},
                        {"name": "Cache-Control", "value": "no-store"},
                    ],
                    "body": engine.encode(if method == "HEAD" { &[][..] } else { &body[..] }),
                }),
            )
        } else if self.network || url.starts_with("data:") || url.starts_with("blob:") {
            self.conn
                .send(s, "Fetch.continueRequest", json!({"requestId": fetch_id}))
        } else {
            failure = Some((
                "net::ERR_BLOCKED_BY_CLIENT: blocked by pmpo, network access is off for this preview (set `network: true` to allow)".into(),
                None,
                true,
            ));
            self.blocked.insert(url.clone());
            self.conn.send(
                s,
                "Fetch.failRequest",
                json!({"requestId": fetch_id, "errorReason": "BlockedByClient"}),
            )
        };
        if let Err(e) = result {
            self.obs
                .notes
                .push(format!("could not answer a request: {e}"));
        }
        if let Some((reason, status, blocked)) = failure
            && (network_id.is_empty() || self.failed.insert(network_id))
        {
            self.obs.failed_requests.push(FailedRequest {
                url,
                method,
                resource_type,
                reason,
                status,
                blocked,
            });
        }
    }

    /// A file of the workspace for a path on the virtual origin.
    fn serve(&self, path: &str, method: &str) -> (u16, &'static str, &'static str, Vec<u8>) {
        if method != "GET" && method != "HEAD" {
            return (
                405,
                "Method Not Allowed",
                "text/plain; charset=utf-8",
                b"the preview serves files only (GET)".to_vec(),
            );
        }
        let not_found = (
            404,
            "Not Found",
            "text/plain; charset=utf-8",
            b"not found".to_vec(),
        );
        let Some(decoded) = percent_decode(path.trim_start_matches('/')) else {
            return not_found;
        };
        let rel = if decoded.is_empty() || decoded.ends_with('/') {
            format!("{decoded}index.html")
        } else {
            decoded
        };
        // Served as tools read: a link leading out of the workspace is not found.
        match self.ws.read(&rel) {
            Ok(bytes) => (200, "OK", content_type(&rel), bytes),
            // The browser asks for a site icon on its own; a page that has
            // none is not broken.
            _ if rel == "favicon.ico" => (204, "No Content", "image/x-icon", Vec::new()),
            _ => not_found,
        }
    }

    /// Drives `fut` while handling events.
    async fn pump<F: Future>(
        &mut self,
        fut: F,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<F::Output, String> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err("cancelled".into()),
                out = &mut fut => return Ok(out),
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => return Err("the browser closed the connection".into()),
                },
                _ = tokio::time::sleep_until(deadline.into()) => return Err("timed out".into()),
            }
        }
    }

    /// Handles events until `done` says so or `until` passes (not an error).
    async fn wait(
        &mut self,
        until: Instant,
        cancel: &CancellationToken,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), String> {
        while !done(self) && !self.crashed {
            let tick = (Instant::now() + Duration::from_millis(25)).min(until);
            if Instant::now() >= until {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err("cancelled".into()),
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => return Err("the browser closed the connection".into()),
                },
                _ = tokio::time::sleep_until(tick.into()) => {}
            }
        }
        if self.crashed {
            return Err("the page crashed".into());
        }
        Ok(())
    }
}

/// Waits until the page is quiet (see [`QUIET`]) or `until` passes.
async fn settle(
    state: &mut PageState<'_>,
    req: &RenderRequest<'_>,
    until: Instant,
) -> Result<Settled, String> {
    let s = state.session.clone();
    loop {
        let next = (Instant::now() + PROBE_EVERY).min(until);
        state.wait(next, req.cancel, |_| false).await?;
        let probed = state
            .pump(
                tokio::time::timeout(
                    PROBE_LIMIT,
                    state.conn.call(
                        Some(s.as_str()),
                        "Runtime.evaluate",
                        json!({"expression": "window.__pmpoSettle ? window.__pmpoSettle() : [0, 1e9]", "returnByValue": true}),
                    ),
                ),
                req.deadline,
                req.cancel,
            )
            .await?;
        let Ok(answer) = probed else {
            return Ok(Settled::Busy);
        };
        let value = answer
            .ok()
            .and_then(|a| a.pointer("/result/value").cloned())
            .unwrap_or(Value::Null);
        let timers = value.get(0).and_then(Value::as_u64).unwrap_or(0);
        let dom_idle = value.get(1).and_then(Value::as_f64).unwrap_or(f64::MAX);
        let mut busy = Vec::new();
        if !state.inflight.is_empty() {
            busy.push(format!("{} request(s) in flight", state.inflight.len()));
        }
        if timers > 0 {
            busy.push(format!("{timers} timer(s) due"));
        }
        if dom_idle < QUIET.as_secs_f64() * 1000.0 {
            busy.push("the DOM kept changing".to_string());
        }
        if state.last_activity.elapsed() < QUIET && busy.is_empty() {
            busy.push("console or network activity".to_string());
        }
        if busy.is_empty() {
            return Ok(Settled::Quiet);
        }
        if Instant::now() >= until {
            return Ok(Settled::Capped(busy.join(", ")));
        }
    }
}

fn note_settle(state: &mut PageState<'_>, end: &Settled, cap: Duration, when: &str) {
    if let Settled::Capped(why) = end {
        state.obs.notes.push(format!(
            "the page was not quiet {when} within the settle cap of {} ms ({why}); the screenshot shows it as it was then (raise `settle_ms` to wait longer)",
            cap.as_millis()
        ));
    }
}

/// Renders one page in a fresh browser context (its own cookies and
/// storage) and closes it again.
pub async fn render(conn: &Connection, req: &RenderRequest<'_>) -> Result<Observed, String> {
    let context = conn
        .call(None, "Target.createBrowserContext", json!({}))
        .await
        .map_err(|e| e.to_string())?;
    let context_id = str_of(&context, "browserContextId")
        .unwrap_or_default()
        .to_string();
    let result = render_in_context(conn, req, &context_id).await;
    let _ = conn
        .call(
            None,
            "Target.disposeBrowserContext",
            json!({"browserContextId": context_id}),
        )
        .await;
    result
}

async fn render_in_context(
    conn: &Connection,
    req: &RenderRequest<'_>,
    context_id: &str,
) -> Result<Observed, String> {
    let target = conn
        .call(
            None,
            "Target.createTarget",
            json!({"url": "about:blank", "browserContextId": context_id}),
        )
        .await
        .map_err(|e| e.to_string())?;
    let target_id = str_of(&target, "targetId").unwrap_or_default().to_string();
    let attached = conn
        .call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )
        .await
        .map_err(|e| e.to_string())?;
    let session = str_of(&attached, "sessionId")
        .unwrap_or_default()
        .to_string();
    let rx = conn.subscribe(&session);
    let mut state = PageState {
        conn,
        session: session.clone(),
        ws: req.ws,
        network: req.network,
        rx,
        requests: HashMap::new(),
        inflight: HashSet::new(),
        blocked: HashSet::new(),
        failed: HashSet::new(),
        answered: HashSet::new(),
        last_activity: Instant::now(),
        loaded: false,
        crashed: false,
        obs: Observed::default(),
    };
    let outcome = drive(&mut state, req).await;
    conn.unsubscribe(&session);
    let _ = conn
        .call(None, "Target.closeTarget", json!({"targetId": target_id}))
        .await;
    outcome.map(|()| state.obs)
}

async fn drive(state: &mut PageState<'_>, req: &RenderRequest<'_>) -> Result<(), String> {
    let conn = state.conn;
    let session = state.session.clone();
    let s = Some(session.as_str());
    let vp = req.viewport;
    let setup: [(&str, Value); 6] = [
        ("Page.enable", json!({})),
        ("Runtime.enable", json!({})),
        ("Log.enable", json!({})),
        ("Network.enable", json!({})),
        (
            "Fetch.enable",
            json!({"patterns": [{"urlPattern": "*", "requestStage": "Request"}]}),
        ),
        (
            "Emulation.setDeviceMetricsOverride",
            json!({"width": vp.width, "height": vp.height, "deviceScaleFactor": vp.device_scale_factor, "mobile": false}),
        ),
    ];
    let probe = SETTLE_PROBE.replace("__CAP__", &req.settle_limit.as_millis().to_string());
    let setup = setup.into_iter().chain([(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": probe}),
    )]);
    for (method, params) in setup {
        state
            .pump(conn.call(s, method, params), req.deadline, req.cancel)
            .await?
            .map_err(|e| e.to_string())?;
    }

    let nav_start = Instant::now();
    let url = url_of(req.page);
    let nav = state
        .pump(
            conn.call(s, "Page.navigate", json!({"url": url})),
            req.deadline,
            req.cancel,
        )
        .await?
        .map_err(|e| e.to_string())?;
    if let Some(err) = str_of(&nav, "errorText").filter(|e| !e.is_empty()) {
        state.obs.navigation_error = Some(format!("the page did not load: {err}"));
        return Ok(());
    }
    let load_until = (nav_start + LOAD_LIMIT).min(req.deadline);
    state.wait(load_until, req.cancel, |st| st.loaded).await?;
    if !state.loaded {
        // A hanging request or a busy script: keep what can be seen.
        state.obs.notes.push(format!(
            "the load event did not fire within {} s ({} request(s) in flight); the screenshot shows the page as it was",
            LOAD_LIMIT.as_secs(),
            state.inflight.len()
        ));
    }
    state.obs.load_ms = ms(nav_start.elapsed());

    // Settle: late requests (HTMX `load` triggers, lazy scripts) finish.
    let settle_start = Instant::now();
    let settle_until = (settle_start + req.settle_limit).min(req.deadline);
    let end = settle(state, req, settle_until).await?;
    state.obs.settle_waits.push(ms(settle_start.elapsed()));
    note_settle(state, &end, req.settle_limit, "after the load event");
    if !state.inflight.is_empty() {
        let mut urls: Vec<String> = state
            .inflight
            .iter()
            .filter_map(|id| state.requests.get(id).map(|r| r.url.clone()))
            .collect();
        urls.sort();
        state.obs.notes.push(format!(
            "{} request(s) were still in flight when the screenshot was taken: {}",
            state.inflight.len(),
            urls.join(", ")
        ));
    }
    for selector in req.clicks {
        let expression = format!(
            "(() => {{ const el = document.querySelector({}); if (!el) return false; el.click(); return true; }})()",
            serde_json::to_string(selector).unwrap_or_default()
        );
        let result = state
            .pump(
                conn.call(
                    s,
                    "Runtime.evaluate",
                    json!({"expression": expression, "returnByValue": true}),
                ),
                req.deadline,
                req.cancel,
            )
            .await?
            .map_err(|e| e.to_string())?;
        if result.pointer("/result/value") != Some(&Value::Bool(true)) {
            state.obs.click_error = Some(format!("`click`: no element matches `{selector}`"));
            break;
        }
        state.last_activity = Instant::now();
        let click_start = Instant::now();
        let until = (click_start + req.settle_limit).min(req.deadline);
        let end = settle(state, req, until).await?;
        state.obs.settle_waits.push(ms(click_start.elapsed()));
        note_settle(
            state,
            &end,
            req.settle_limit,
            &format!("after clicking `{selector}`"),
        );
    }
    if !req.extra_wait.is_zero() {
        let until = (Instant::now() + req.extra_wait).min(req.deadline);
        state.wait(until, req.cancel, |_| false).await?;
    }
    // Two animation frames: whatever was swapped in has been painted. A page
    // whose script never yields does not answer at all.
    let painted = state
        .pump(
            tokio::time::timeout(
                PAINT_LIMIT,
                conn.call(
                    s,
                    "Runtime.evaluate",
                    json!({"expression": "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))", "awaitPromise": true, "returnByValue": true}),
                ),
            ),
            req.deadline,
            req.cancel,
        )
        .await?;
    if painted.is_err() {
        return Err(PAGE_BUSY.into());
    }
    state.obs.settle_ms = ms(settle_start.elapsed());

    let shot_start = Instant::now();
    let shot = state
        .pump(
            conn.call(s, "Page.captureScreenshot", json!({"format": "png"})),
            req.deadline,
            req.cancel,
        )
        .await?
        .map_err(|e| e.to_string())?;
    // Events that arrived meanwhile.
    while let Ok(ev) = state.rx.try_recv() {
        state.handle(ev);
    }
    let data = str_of(&shot, "data").ok_or("the screenshot came back empty")?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("the screenshot is not valid base64: {e}"))?;
    state.obs.screenshot = Some(png);
    state.obs.screenshot_ms = ms(shot_start.elapsed());
    Ok(())
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_round_trip() {
        let u = url_of("pages/my card #1.html");
        assert_eq!(u, format!("{ORIGIN}/pages/my%20card%20%231.html"));
        let path = u.strip_prefix(ORIGIN).unwrap().trim_start_matches('/');
        assert_eq!(percent_decode(path).unwrap(), "pages/my card #1.html");
        assert_eq!(content_type("a/b.JS"), "text/javascript; charset=utf-8");
    }
}
