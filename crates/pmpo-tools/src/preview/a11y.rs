//! Accessibility of the rendered page: axe-core (shipped with pmpo, see
//! `assets/vendor/`) run on the page once it settled and was screenshotted,
//! and what it found, as the `accessibility` field of `preview-report.json`.
//!
//! The engine is run in a world of its own (`Page.createIsolatedWorld`): it
//! sees the page's DOM and computed styles, while the page's scripts, globals
//! and console never see it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::report::PreviewReport;

/// The vendored axe-core engine (MPL-2.0; see assets/vendor/).
pub const AXE_JS: &str = include_str!("../../assets/vendor/axe.min.js");
pub const AXE_VERSION: &str = "4.14.1";
/// The rule tags run: WCAG 2.0, 2.1 and 2.2, levels A and AA.
pub const WCAG_TAGS: &[&str] = &["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"];
/// At most this many elements are kept per rule (the rest are counted).
pub const MAX_NODES: usize = 20;
/// An element's HTML is cut to this many characters.
pub const MAX_HTML: usize = 300;
/// A failure summary is cut to this many characters.
const MAX_SUMMARY: usize = 600;

/// What axe found on the rendered page, or why it did not look.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Accessibility {
    /// `checked`, `not_checked` (the reason says why) or `failed` (the
    /// engine could not run; the reason says what happened).
    pub status: String,
    /// `axe-core VERSION`.
    pub engine: String,
    pub reason: Option<String>,
    /// The rule tags that were run.
    pub tags: Vec<String>,
    pub counts: ImpactCounts,
    pub violations: Vec<Violation>,
    /// Rules axe could not decide on its own (a person should look), by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs_review: Vec<String>,
    /// How long the audit took (injection and run), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
}

/// Violated rules by impact.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImpactCounts {
    pub critical: usize,
    pub serious: usize,
    pub moderate: usize,
    pub minor: usize,
}

/// One violated rule and the elements that violate it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Violation {
    /// The axe rule id (`color-contrast`, `image-alt`, `label`, ...).
    pub rule: String,
    /// `critical`, `serious`, `moderate` or `minor`.
    pub impact: String,
    pub help: String,
    pub help_url: String,
    pub tags: Vec<String>,
    pub nodes: Vec<ViolationNode>,
    /// Elements beyond [`MAX_NODES`] that violate it too (not listed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_nodes: usize,
}

/// One element that violates a rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ViolationNode {
    /// A CSS selector of the element (`a >>> b` crosses into a shadow root,
    /// `a >> b` into a frame).
    pub selector: String,
    /// The element's opening HTML (cut to [`MAX_HTML`] characters).
    pub html: String,
    /// What to fix, in axe's words.
    pub summary: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Accessibility {
    fn base(status: &str, reason: Option<String>) -> Accessibility {
        Accessibility {
            status: status.into(),
            engine: format!("axe-core {AXE_VERSION}"),
            reason,
            tags: WCAG_TAGS.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    /// The page was not audited, for `reason`.
    pub fn not_checked(reason: impl Into<String>) -> Accessibility {
        Accessibility::base("not_checked", Some(reason.into()))
    }

    /// The engine was started and did not give an answer.
    pub fn failed(reason: impl Into<String>, duration_ms: f64) -> Accessibility {
        Accessibility {
            duration_ms: Some(duration_ms),
            ..Accessibility::base("failed", Some(reason.into()))
        }
    }

    /// The violations of an audit, from the value [`RUN_SCRIPT`] returns.
    pub fn from_axe(value: &Value, duration_ms: f64) -> Result<Accessibility, String> {
        let list = value
            .get("violations")
            .and_then(Value::as_array)
            .ok_or("axe returned no list of violations")?;
        let mut a = Accessibility::base("checked", None);
        a.duration_ms = Some(duration_ms);
        a.needs_review = strings(value.get("review"));
        for v in list {
            let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let nodes: Vec<ViolationNode> = v
                .get("nodes")
                .and_then(Value::as_array)
                .map(|n| n.iter().map(node).collect())
                .unwrap_or_default();
            let total = v.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
            let violation = Violation {
                rule: text("id"),
                impact: Some(text("impact"))
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| "minor".into()),
                help: text("help"),
                help_url: text("helpUrl"),
                tags: strings(v.get("tags")),
                more_nodes: total.saturating_sub(nodes.len()),
                nodes,
            };
            match violation.impact.as_str() {
                "critical" => a.counts.critical += 1,
                "serious" => a.counts.serious += 1,
                "moderate" => a.counts.moderate += 1,
                _ => a.counts.minor += 1,
            }
            a.violations.push(violation);
        }
        let invisible = value.get("invisible").and_then(Value::as_array);
        for v in invisible.into_iter().flatten() {
            a.add_invisible(v);
        }
        Ok(a)
    }

    /// Text as light or dark as its background (contrast 1:1) is a
    /// `color-contrast` violation: nobody can read it.
    fn add_invisible(&mut self, v: &Value) {
        let found: Vec<ViolationNode> = v
            .get("nodes")
            .and_then(Value::as_array)
            .map(|n| n.iter().map(node).collect())
            .unwrap_or_default();
        if found.is_empty() {
            return;
        }
        let total = v.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
        let more = total.saturating_sub(found.len());
        let found = found.into_iter().map(|mut n| {
            n.summary = "Fix the following:\n  The text has the same colour as its background (contrast 1:1): it cannot be seen".into();
            n
        });
        let at = match self
            .violations
            .iter()
            .position(|x| x.rule == "color-contrast")
        {
            Some(at) => at,
            None => {
                self.counts.serious += 1;
                self.violations.push(Violation {
                    rule: "color-contrast".into(),
                    impact: "serious".into(),
                    help: v.get("help").and_then(Value::as_str).unwrap_or("").into(),
                    help_url: v
                        .get("helpUrl")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    tags: strings(v.get("tags")),
                    ..Default::default()
                });
                self.violations.len() - 1
            }
        };
        let c = &mut self.violations[at];
        for n in found {
            if c.nodes.len() < MAX_NODES {
                c.nodes.push(n);
            } else {
                c.more_nodes += 1;
            }
        }
        c.more_nodes += more;
    }

    /// Violated rules in all, whatever their impact.
    pub fn total(&self) -> usize {
        let c = &self.counts;
        c.critical + c.serious + c.moderate + c.minor
    }

    /// A few words for the preview's summary line: `accessibility: 2
    /// violation(s) (1 serious, 1 moderate)`, `accessibility: none found`,
    /// or why it was not checked.
    pub fn summary(&self) -> String {
        match self.status.as_str() {
            "checked" if self.total() == 0 => "accessibility: no violation".into(),
            "checked" => {
                let c = &self.counts;
                let parts: Vec<String> = [
                    ("critical", c.critical),
                    ("serious", c.serious),
                    ("moderate", c.moderate),
                    ("minor", c.minor),
                ]
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
                let rules: Vec<&str> = self.violations.iter().map(|v| v.rule.as_str()).collect();
                format!(
                    "accessibility: {} violation(s) ({}: {})",
                    self.total(),
                    parts.join(", "),
                    rules.join(", ")
                )
            }
            other => format!(
                "accessibility {}: {}",
                other.replace('_', " "),
                self.reason.as_deref().unwrap_or("no reason given")
            ),
        }
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// axe names an element by a list of selectors: one per frame, and within a
/// frame a list again when it lies in shadow roots.
fn selector(target: Option<&Value>) -> String {
    let part = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" >>> "),
        _ => String::new(),
    };
    target
        .and_then(Value::as_array)
        .map(|t| t.iter().map(part).collect::<Vec<_>>().join(" >> "))
        .unwrap_or_default()
}

fn node(n: &Value) -> ViolationNode {
    let text = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("");
    ViolationNode {
        selector: selector(n.get("target")),
        html: cut(text("html"), MAX_HTML),
        summary: cut(text("failureSummary"), MAX_SUMMARY),
    }
}

/// Runs axe in the world it was loaded into, with the WCAG A/AA rules, and
/// returns a small JSON-able answer: `violations`, per rule its id, impact,
/// help, link, tags, element count and the first [`MAX_NODES`] elements;
/// `invisible`, the elements whose text has the colour of its background
/// (axe leaves a 1:1 contrast for a person to review, since text is
/// sometimes hidden on purpose; on a rendered page it cannot be read);
/// `review`, the other rules axe could not decide. Frames are not entered
/// (the engine is not loaded in them).
pub fn run_script() -> String {
    format!(
        r#"(async () => {{
  if (typeof axe === "undefined") throw new Error("axe-core did not load");
  const r = await axe.run(document, {{
    runOnly: {{type: "tag", values: {tags}}},
    resultTypes: ["violations", "incomplete"],
    iframes: false,
    elementRef: false,
  }});
  const nodes = ns => ns.slice(0, {max}).map(n => ({{
    target: n.target, html: n.html, failureSummary: n.failureSummary,
  }}));
  const rule = (v, ns) => ({{
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl, tags: v.tags,
    total: ns.length, nodes: nodes(ns),
  }});
  const same = n => n.any.concat(n.all, n.none)
    .some(c => c.data && c.data.messageKey === "equalRatio");
  const contrast = r.incomplete.find(v => v.id === "color-contrast");
  return {{
    violations: r.violations.map(v => rule(v, v.nodes)),
    invisible: contrast ? [rule(contrast, contrast.nodes.filter(same))] : [],
    review: r.incomplete.filter(v => v !== contrast || !v.nodes.every(same)).map(v => v.id),
  }};
}})()"#,
        tags = serde_json::to_string(WCAG_TAGS).unwrap_or_default(),
        max = MAX_NODES,
    )
}

/// Says why a preview has no audit when the driver did not run one: it was
/// turned off, the page was not rendered with the DevTools driver, or the
/// preview did not get that far.
pub fn explain_missing(report: &mut PreviewReport, enabled: bool) {
    if report.accessibility.is_some() {
        return;
    }
    let reason = if !enabled {
        "turned off by the stage (`accessibility: false`)".to_string()
    } else if report.driver == "screenshot-mode" {
        "the page was rendered with Chromium's --screenshot mode, which cannot run the accessibility engine in it (the DevTools driver can)".to_string()
    } else if report.status == "success" {
        "the page was rendered without the DevTools driver".to_string()
    } else {
        format!(
            "the preview {}: {}",
            report.status,
            report.reason.as_deref().unwrap_or("no page was rendered")
        )
    };
    report.accessibility = Some(Accessibility::not_checked(reason));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn axe_results_are_mapped_and_capped() {
        let long = "x".repeat(MAX_HTML + 50);
        let raw = json!({"violations": [
            {"id": "color-contrast", "impact": "serious", "help": "Contrast", "helpUrl": "u",
             "tags": ["wcag2aa"], "total": 25,
             "nodes": [{"target": ["#increment"], "html": long, "failureSummary": "Fix any"},
                       {"target": [["#host", "button"]], "html": "<b>", "failureSummary": ""}]},
            {"id": "region", "impact": null, "help": "h", "helpUrl": "u", "tags": [], "total": 1,
             "nodes": [{"target": ["iframe", "p"], "html": "<p>", "failureSummary": "s"}]}
        ], "invisible": [{"id": "color-contrast", "help": "Contrast", "total": 1,
             "nodes": [{"target": ["#ghost"], "html": "<button>", "failureSummary": "?"}]}],
           "review": ["link-in-text-block"]});
        let a = Accessibility::from_axe(&raw, 12.5).unwrap();
        assert_eq!(a.status, "checked");
        assert_eq!(a.engine, "axe-core 4.14.1");
        assert_eq!(a.counts.serious, 1);
        assert_eq!(a.counts.minor, 1);
        let v = &a.violations[0];
        assert_eq!(v.nodes[0].selector, "#increment");
        assert_eq!(v.nodes[0].html.chars().count(), MAX_HTML + 1);
        assert_eq!(v.nodes[1].selector, "#host >>> button");
        assert_eq!(v.more_nodes, 23);
        assert_eq!(
            v.nodes[2].selector, "#ghost",
            "the invisible text joins the rule"
        );
        assert!(v.nodes[2].summary.contains("same colour as its background"));
        assert_eq!(a.needs_review, ["link-in-text-block"]);
        assert_eq!(a.violations[1].nodes[0].selector, "iframe >> p");
        assert_eq!(
            a.summary(),
            "accessibility: 2 violation(s) (1 serious, 1 minor: color-contrast, region)"
        );
        let text = serde_json::to_value(&a).unwrap();
        assert!(text["violations"][1].get("more_nodes").is_none());
        assert!(Accessibility::from_axe(&json!({}), 1.0).is_err());
        // Only invisible text: a serious color-contrast violation of its own.
        let only = json!({"violations": [], "invisible": [{"id": "color-contrast", "total": 1,
            "nodes": [{"target": ["#increment"], "html": "<button>"}]}]});
        let a = Accessibility::from_axe(&only, 1.0).unwrap();
        assert_eq!(
            (a.counts.serious, a.violations[0].rule.as_str()),
            (1, "color-contrast")
        );
        let none = json!({"violations": [], "invisible": [{"id": "color-contrast", "total": 0, "nodes": []}]});
        assert_eq!(Accessibility::from_axe(&none, 1.0).unwrap().total(), 0);
    }

    #[test]
    fn a_missing_audit_says_why() {
        let mut r = PreviewReport {
            driver: "screenshot-mode".into(),
            status: "success".into(),
            ..Default::default()
        };
        explain_missing(&mut r, true);
        let a = r.accessibility.clone().unwrap();
        assert_eq!(a.status, "not_checked");
        assert!(a.reason.unwrap().contains("--screenshot mode"));
        r.accessibility = None;
        explain_missing(&mut r, false);
        assert!(
            r.accessibility
                .unwrap()
                .summary()
                .contains("accessibility: false")
        );
    }
}
