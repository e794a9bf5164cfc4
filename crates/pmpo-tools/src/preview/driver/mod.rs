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

use super::a11y::Accessibility;
use super::cdp::{CdpEvent, Connection};
use super::report::{ConsoleMessage, FailedRequest, PageError, Viewport};

mod audit;
mod dom_facts;
mod events;
mod serve;

pub use serve::url_of;

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
    /// Whether axe-core audits the page after the screenshot.
    pub accessibility: bool,
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
    /// The accessibility audit, when it was asked for and the page rendered.
    pub accessibility: Option<Accessibility>,
    /// What the settled page shows (see `dom_facts.rs`), if it answered.
    pub dom_facts: Option<Value>,
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
    /// The execution context the audit runs in: its console output and
    /// exceptions are not the page's.
    audit_context: Option<i64>,
    obs: Observed,
}

fn str_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

impl PageState<'_> {
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
        audit_context: None,
        obs: Observed::default(),
    };
    let outcome = drive(&mut state, req).await;
    conn.unsubscribe(&session);
    let _ = conn
        .call(None, "Target.closeTarget", json!({"targetId": target_id}))
        .await;
    outcome.map(|()| state.obs)
}

/// Sets the page up, loads it, lets it settle, clicks, and takes the
/// screenshot, recording what it sees in `state.obs`.
async fn drive(state: &mut PageState<'_>, req: &RenderRequest<'_>) -> Result<(), String> {
    set_up(state, req).await?;
    if !load(state, req).await? {
        return Ok(());
    }
    // Settle: late requests (HTMX `load` triggers, lazy scripts) finish.
    let settle_start = Instant::now();
    let settle_until = (settle_start + req.settle_limit).min(req.deadline);
    let end = settle(state, req, settle_until).await?;
    state.obs.settle_waits.push(ms(settle_start.elapsed()));
    note_settle(state, &end, req.settle_limit, "after the load event");
    note_inflight(state);
    click_all(state, req).await?;
    if !req.extra_wait.is_zero() {
        let until = (Instant::now() + req.extra_wait).min(req.deadline);
        state.wait(until, req.cancel, |_| false).await?;
    }
    paint(state, req).await?;
    state.obs.dom_facts = dom_facts::collect(state, req).await;
    state.obs.settle_ms = ms(settle_start.elapsed());
    screenshot(state, req).await?;
    // After the screenshot: the picture shows the page as the page made it.
    if req.accessibility {
        state.obs.accessibility = Some(audit::audit(state, req).await?);
    }
    Ok(())
}

/// Enables the domains whose events are observed, intercepts requests,
/// sets the viewport and installs the settle probe.
async fn set_up(state: &mut PageState<'_>, req: &RenderRequest<'_>) -> Result<(), String> {
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
    Ok(())
}

/// Navigates to the page and waits for its load event; `false` when the
/// page did not load at all (the navigation error is recorded).
async fn load(state: &mut PageState<'_>, req: &RenderRequest<'_>) -> Result<bool, String> {
    let (conn, session) = (state.conn, state.session.clone());
    let s = Some(session.as_str());
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
        return Ok(false);
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
    Ok(true)
}

/// Names the requests still in flight once the page settled.
fn note_inflight(state: &mut PageState<'_>) {
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
}

/// Clicks each selector in order, letting the page settle after each.
async fn click_all(state: &mut PageState<'_>, req: &RenderRequest<'_>) -> Result<(), String> {
    let (conn, session) = (state.conn, state.session.clone());
    let s = Some(session.as_str());
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
    Ok(())
}

/// Waits two animation frames: whatever was swapped in has been painted. A
/// page whose script never yields does not answer at all.
async fn paint(state: &mut PageState<'_>, req: &RenderRequest<'_>) -> Result<(), String> {
    let (conn, session) = (state.conn, state.session.clone());
    let s = Some(session.as_str());
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
    Ok(())
}

/// Takes the screenshot, then records the events that arrived meanwhile.
async fn screenshot(state: &mut PageState<'_>, req: &RenderRequest<'_>) -> Result<(), String> {
    let (conn, session) = (state.conn, state.session.clone());
    let s = Some(session.as_str());
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
