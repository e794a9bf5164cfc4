//! The accessibility audit of a rendered page: axe-core loaded into an
//! isolated world of the page's main frame and run there (see
//! [`crate::preview::a11y`]).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{PageState, RenderRequest, ms, str_of};
use crate::preview::a11y::{AXE_JS, Accessibility, run_script};
use crate::preview::cdp::Connection;

/// The longest an audit may take (loading the engine and running it).
const AUDIT_LIMIT: Duration = Duration::from_secs(20);

/// Audits the page. Whatever goes wrong with the engine is an audit that
/// `failed` (the reason says what); only a cancellation is an error.
pub(super) async fn audit(
    state: &mut PageState<'_>,
    req: &RenderRequest<'_>,
) -> Result<Accessibility, String> {
    let start = Instant::now();
    let until = (start + AUDIT_LIMIT).min(req.deadline);
    if until <= start {
        return Ok(Accessibility::failed(
            "the stage's time was used up before the audit could start (raise the stage's timeout)",
            0.0,
        ));
    }
    let found = match audited(state, req, until).await {
        Err(e) if req.cancel.is_cancelled() => return Err(e),
        Err(e) => Err(e),
        Ok(value) => Accessibility::from_axe(&value, ms(start.elapsed())),
    };
    // Output the engine made meanwhile is not the page's.
    while let Ok(ev) = state.rx.try_recv() {
        state.handle(ev);
    }
    Ok(found.unwrap_or_else(|e| Accessibility::failed(e, ms(start.elapsed()))))
}

/// Drives one step of the audit until `until`, handling the page's events.
async fn step<T>(
    state: &mut PageState<'_>,
    req: &RenderRequest<'_>,
    until: Instant,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let limit = until.saturating_duration_since(Instant::now());
    match state
        .pump(
            tokio::time::timeout(limit, fut),
            until + Duration::from_millis(100),
            req.cancel,
        )
        .await?
    {
        Ok(done) => done,
        Err(_) => Err(format!(
            "the audit did not finish in time ({} s at most, within the stage's time limit): a very large page? turn it off with `accessibility: false`",
            AUDIT_LIMIT.as_secs()
        )),
    }
}

/// Makes the isolated world (its output is then told apart from the
/// page's), loads the engine there and runs it: the violations.
async fn audited(
    state: &mut PageState<'_>,
    req: &RenderRequest<'_>,
    until: Instant,
) -> Result<Value, String> {
    let (conn, session) = (state.conn, state.session.clone());
    let context = step(state, req, until, world(conn, &session)).await?;
    state.audit_context = Some(context);
    let eval = |expression: String| {
        let session = session.clone();
        async move {
            conn.call(
                Some(&session),
                "Runtime.evaluate",
                json!({"expression": expression, "contextId": context, "awaitPromise": true,
                       "returnByValue": true, "silent": true}),
            )
            .await
            .map_err(|e| e.to_string())
        }
    };
    let loaded = step(state, req, until, eval(format!("{AXE_JS}\n;true"))).await?;
    thrown(&loaded, "loading axe-core")?;
    let ran = step(state, req, until, eval(run_script())).await?;
    thrown(&ran, "axe-core")?;
    ran.pointer("/result/value")
        .cloned()
        .ok_or_else(|| "axe-core returned nothing".to_string())
}

/// An isolated world of the page's main frame: its execution context id.
async fn world(conn: &Connection, session: &str) -> Result<i64, String> {
    let s = Some(session);
    let tree = conn
        .call(s, "Page.getFrameTree", json!({}))
        .await
        .map_err(|e| format!("cannot read the page's frames: {e}"))?;
    let frame = tree
        .pointer("/frameTree/frame/id")
        .and_then(Value::as_str)
        .ok_or("the page has no main frame")?;
    let world = conn
        .call(
            s,
            "Page.createIsolatedWorld",
            json!({"frameId": frame, "worldName": "pmpo-accessibility"}),
        )
        .await
        .map_err(|e| format!("cannot make a world for the audit: {e}"))?;
    world
        .get("executionContextId")
        .and_then(Value::as_i64)
        .ok_or_else(|| "the browser gave the audit's world no context".to_string())
}

/// The exception a `Runtime.evaluate` answer reports, as an error.
fn thrown(answer: &Value, what: &str) -> Result<(), String> {
    match answer.get("exceptionDetails") {
        None => Ok(()),
        Some(d) => {
            let text = d
                .pointer("/exception/description")
                .and_then(Value::as_str)
                .or_else(|| str_of(d, "text"))
                .unwrap_or("an exception");
            let first = text.lines().next().unwrap_or(text);
            Err(format!("{what} threw: {first}"))
        }
    }
}
