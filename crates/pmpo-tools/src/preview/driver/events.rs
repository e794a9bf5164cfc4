//! What a page tells while it loads: requests and responses, console
//! output, the browser's own log, uncaught exceptions, the load event and a
//! crash, each recorded in the page's [`Observed`](super::Observed).

use std::time::Instant;

use serde_json::Value;

use super::{PageState, RequestInfo, str_of};
use crate::preview::cdp::CdpEvent;
use crate::preview::report::{ConsoleMessage, FailedRequest, PageError, SourceAt};

impl PageState<'_> {
    /// Records one event of the page.
    pub(super) fn handle(&mut self, ev: CdpEvent) {
        let p = &ev.params;
        // The audit's own output is not the page's.
        let context = p
            .get("executionContextId")
            .or_else(|| p.pointer("/exceptionDetails/executionContextId"))
            .and_then(Value::as_i64);
        if context.is_some() && context == self.audit_context {
            return;
        }
        match ev.method.as_str() {
            "Fetch.requestPaused" => self.on_request_paused(p),
            "Network.requestWillBeSent" => self.on_request_sent(p),
            "Network.responseReceived" => self.on_response(p),
            "Network.loadingFinished" => self.on_loading_finished(p),
            "Network.loadingFailed" => self.on_loading_failed(p),
            "Runtime.consoleAPICalled" => self.on_console(p),
            "Log.entryAdded" => self.on_log_entry(p),
            "Runtime.exceptionThrown" => self.on_exception(p),
            "Page.loadEventFired" => self.on_load(),
            "Inspector.targetCrashed" => self.crashed = true,
            _ => {}
        }
    }

    /// A request starts.
    fn on_request_sent(&mut self, p: &Value) {
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

    /// A response arrived (an HTTP error is a failed request).
    fn on_response(&mut self, p: &Value) {
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

    /// A request finished loading.
    fn on_loading_finished(&mut self, p: &Value) {
        if let Some(id) = str_of(p, "requestId") {
            self.inflight.remove(id);
            self.last_activity = Instant::now();
        }
    }

    /// A request failed (blocked, cancelled, refused).
    fn on_loading_failed(&mut self, p: &Value) {
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

    /// A `console.*` call of the page.
    fn on_console(&mut self, p: &Value) {
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
            at: frame.map(source_at).unwrap_or_default(),
        });
    }

    /// A message of the browser itself (a failed resource, a violation).
    fn on_log_entry(&mut self, p: &Value) {
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
            // A log entry has no column.
            at: SourceAt {
                column: None,
                ..source_at(&e)
            },
        });
    }

    /// An uncaught exception, as the console shows it.
    fn on_exception(&mut self, p: &Value) {
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
            at: source_at(&d),
            stack,
        });
    }

    /// The load event.
    fn on_load(&mut self) {
        self.loaded = true;
        // Scripts run on load may start requests: the quiet period starts now.
        self.last_activity = Instant::now();
    }
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

/// The place a DevTools call frame, log entry or exception names
/// (`url`, 0-based `lineNumber` and `columnNumber`), 1-based as editors count.
fn source_at(v: &Value) -> SourceAt {
    let number = |key: &str| v.get(key).and_then(Value::as_u64).map(|n| n + 1);
    SourceAt {
        url: str_of(v, "url")
            .filter(|u| !u.is_empty())
            .map(str::to_string),
        line: number("lineNumber"),
        column: number("columnNumber"),
    }
}
