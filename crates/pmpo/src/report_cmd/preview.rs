//! A preview in the report: its screenshot and what the browser said
//! (console, uncaught errors, failed requests, notes, findings,
//! accessibility). Preview reports are read as plain JSON so that fields
//! added later (or missing in older reports) never stop the report.

use std::fmt::Write as _;

use pmpo_store::Workspace;
use serde_json::Value;

use super::html::{self, MAX_ITEMS, badge, esc, esc_cut};
use super::images::Gallery;

/// A preview report a stage wrote.
pub struct PreviewRef {
    pub stage: String,
    pub report: String,
}

/// The preview reports among the stages' outputs and files, in stage order,
/// each once.
pub fn refs_of(stages: &[Value]) -> Vec<PreviewRef> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for s in stages {
        let stage = s["id"].as_str().unwrap_or("").to_string();
        let mut paths: Vec<String> = Vec::new();
        for p in [
            &s["outputs"]["report"],
            &s["outputs"]["preview_run"]["report"],
        ] {
            if let Some(p) = p.as_str() {
                paths.push(p.to_string());
            }
        }
        for f in s["files"].as_array().into_iter().flatten() {
            if let Some(p) = f["path"]
                .as_str()
                .filter(|p| p.ends_with("preview-report.json"))
            {
                paths.push(p.to_string());
            }
        }
        for p in paths {
            if p.ends_with(".json") && seen.insert(p.clone()) {
                out.push(PreviewRef {
                    stage: stage.clone(),
                    report: p,
                });
            }
        }
    }
    out
}

/// Reads a workspace file a stage wrote (confined: never out of the workspace).
pub fn read_user(ws: &Workspace, rel: &str) -> Option<Vec<u8>> {
    ws.read(rel).ok()
}

pub fn section(out: &mut String, ws: &Workspace, r: &PreviewRef, g: &mut Gallery) {
    let report: Option<Value> =
        read_user(ws, &r.report).and_then(|b| serde_json::from_slice(&b).ok());
    let _ = write!(
        out,
        "<h3>{} <span class=\"dim\">stage <code>{}</code></span></h3>",
        esc(report
            .as_ref()
            .and_then(|v| v["artifact_id"].as_str())
            .unwrap_or(&r.report)),
        esc(&r.stage)
    );
    let Some(v) = report else {
        let _ = write!(
            out,
            "<p class=\"cut\">the preview report <code>{}</code> is missing or not JSON</p>",
            esc(&r.report)
        );
        return;
    };
    let shot = v["screenshot"].as_str().and_then(|p| read_user(ws, p));
    out.push_str("<div class=\"shots\"><div>");
    html::figure(
        out,
        g,
        shot.as_deref(),
        v["screenshot"].as_str().unwrap_or("(no screenshot)"),
    );
    out.push_str("</div><div>");
    findings(out, &v);
    out.push_str("</div></div>");
}

/// Everything the preview report says besides the picture.
pub fn findings(out: &mut String, v: &Value) {
    let _ = write!(
        out,
        "<p>{} <span class=\"dim\">{} driver; runtime: {}</span></p>",
        badge(v["status"].as_str().unwrap_or("?")),
        esc(v["driver"].as_str().unwrap_or("?")),
        esc(v["runtime_detail"]
            .as_str()
            .or(v["runtime_source"].as_str())
            .unwrap_or("?"))
    );
    for key in ["reason", "hint"] {
        if let Some(s) = v[key].as_str() {
            let _ = write!(out, "<p>{key}: {}</p>", esc_cut(s, html::MAX_TEXT));
        }
    }
    let c = &v["counts"];
    let _ = write!(
        out,
        "<p class=\"dim\">console errors {}, warnings {}; uncaught errors {}; failed requests {}</p>",
        c["console_errors"].as_u64().unwrap_or(0),
        c["console_warnings"].as_u64().unwrap_or(0),
        c["page_errors"].as_u64().unwrap_or(0),
        c["failed_requests"].as_u64().unwrap_or(0),
    );
    list(out, "Findings", v["findings"].as_array(), |f| {
        format!(
            "{} <code>{}</code> {}{}",
            badge(f["severity"].as_str().unwrap_or("info")),
            esc(f["code"].as_str().unwrap_or("")),
            esc_cut(f["message"].as_str().unwrap_or(""), 600),
            f["hint"]
                .as_str()
                .map(|h| format!("<div class=\"dim\">help: {}</div>", esc_cut(h, 600)))
                .unwrap_or_default()
        )
    });
    accessibility(out, &v["accessibility"]);
    list(out, "Console", v["console"].as_array(), |m| {
        let at = match (m["url"].as_str(), m["line"].as_u64()) {
            (Some(u), Some(l)) => format!(" <span class=\"dim\">({}:{l})</span>", esc_cut(u, 200)),
            (Some(u), None) => format!(" <span class=\"dim\">({})</span>", esc_cut(u, 200)),
            _ => String::new(),
        };
        format!(
            "{} {}{at}",
            badge(m["level"].as_str().unwrap_or("log")),
            esc_cut(m["text"].as_str().unwrap_or(""), 600)
        )
    });
    list(out, "Uncaught errors", v["page_errors"].as_array(), |e| {
        format!(
            "{}{}",
            esc_cut(e["message"].as_str().unwrap_or(""), 600),
            e["stack"]
                .as_str()
                .map(|s| format!(
                    "<div class=\"dim\" style=\"white-space:pre-wrap\">{}</div>",
                    esc_cut(s, 600)
                ))
                .unwrap_or_default()
        )
    });
    list(
        out,
        "Failed requests",
        v["failed_requests"].as_array(),
        |f| {
            format!(
                "{} <code>{}</code>: {}",
                esc(f["method"].as_str().unwrap_or("GET")),
                esc_cut(f["url"].as_str().unwrap_or(""), 300),
                esc_cut(f["reason"].as_str().unwrap_or(""), 400)
            )
        },
    );
    list(out, "Notes", v["notes"].as_array(), |n| {
        esc_cut(n.as_str().unwrap_or(""), 600)
    });
}

fn list(
    out: &mut String,
    title: &str,
    items: Option<&Vec<Value>>,
    item: impl Fn(&Value) -> String,
) {
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return;
    };
    let _ = write!(out, "<h4>{title} ({})</h4><ul class=\"msgs\">", items.len());
    for i in items.iter().take(MAX_ITEMS) {
        let _ = write!(out, "<li>{}</li>", item(i));
    }
    out.push_str("</ul>");
    if items.len() > MAX_ITEMS {
        let _ = write!(
            out,
            "<p class=\"cut\">… and {} more not shown (see the preview report)</p>",
            items.len() - MAX_ITEMS
        );
    }
}

/// The accessibility result: counts by impact and each violation with its
/// rule, impact and selectors.
fn accessibility(out: &mut String, a: &Value) {
    if !a.is_object() {
        return;
    }
    let status = a["status"].as_str().unwrap_or("?");
    let _ = write!(
        out,
        "<h4>Accessibility</h4><p>{} <span class=\"dim\">{}</span>",
        badge(status),
        esc(a["engine"].as_str().unwrap_or(""))
    );
    if let Some(r) = a["reason"].as_str() {
        let _ = write!(out, " {}", esc_cut(r, 600));
    }
    out.push_str("</p>");
    if let Some(c) = a["counts"].as_object() {
        let parts: Vec<String> = c
            .iter()
            .map(|(k, n)| format!("{} {}", esc(k), esc(&n.to_string())))
            .collect();
        let _ = write!(out, "<p class=\"dim\">{}</p>", parts.join(", "));
    }
    list(out, "Violations", a["violations"].as_array(), |v| {
        let selectors: Vec<String> = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .take(10)
            .map(|n| {
                let sel = match &n["selector"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("<code>{}</code>", esc_cut(&sel, 200))
            })
            .collect();
        format!(
            "{} <b>{}</b> {}{}",
            badge(v["impact"].as_str().unwrap_or("?")),
            esc(v["rule"].as_str().unwrap_or("")),
            esc_cut(v["help"].as_str().unwrap_or(""), 400),
            if selectors.is_empty() {
                String::new()
            } else {
                format!("<div>at {}</div>", selectors.join(", "))
            }
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A preview report with the fields the accessibility check and the
    /// findings add (read as plain JSON: they may be absent, or newer).
    #[test]
    fn accessibility_violations_and_findings_are_shown_escaped() {
        let v = json!({
            "status": "success", "driver": "devtools", "runtime_source": "none",
            "counts": {"console_errors": 0},
            "accessibility": {
                "status": "checked", "engine": "axe-core 4.14.1", "reason": null,
                "counts": {"critical": 0, "serious": 1, "moderate": 0, "minor": 0},
                "violations": [{"rule": "color-contrast", "impact": "serious",
                    "help": "Elements must meet minimum color contrast ratio thresholds",
                    "nodes": [{"selector": "#increment", "html": "<button id=\"increment\">", "summary": "Fix"},
                              {"selector": ["iframe", "<b>x</b>"]}]}]
            },
            "findings": [{"code": "missing-runtime", "severity": "warning",
                "message": "the page uses Alpine.js directives (x-data, @click) but loads no <script> runtime",
                "hint": "add `runtimes: [alpine]`"}],
            "notes": ["a <note>"]
        });
        let mut out = String::new();
        findings(&mut out, &v);
        for needle in [
            "color-contrast",
            "serious 1",
            "<code>#increment</code>",
            "&lt;b&gt;x&lt;/b&gt;",
            "missing-runtime",
            "loads no &lt;script&gt; runtime",
            "help: add `runtimes: [alpine]`",
            "a &lt;note&gt;",
            "axe-core 4.14.1",
        ] {
            assert!(out.contains(needle), "no `{needle}` in {out}");
        }
        assert!(!out.contains("<script>") && !out.contains("<note>"));
        // An older report without them still reads.
        let mut old = String::new();
        findings(&mut old, &json!({"status": "success"}));
        assert!(!old.contains("Accessibility") && !old.contains("Findings"));
    }
}
