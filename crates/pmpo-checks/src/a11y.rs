//! `accessibility`: the violations axe-core found on a rendered page, read
//! from the `accessibility` section of a preview report.

use serde_json::{Value, json};

use pmpo_tools::preview::PreviewReport;
use pmpo_tools::preview::a11y::Violation;

use crate::fsx;
use crate::params::{self, Kind, get_str, get_strs, opt};
use crate::{CheckDef, CheckError, Verdict};

const IMPACTS: &[&str] = &["critical", "serious", "moderate", "minor"];
const DEFAULT_IMPACTS: &[&str] = &["critical", "serious"];

pub(crate) const ACCESSIBILITY: CheckDef = CheckDef {
    name: "accessibility",
    aliases: &["a11y", "axe"],
    summary: "the page a preview rendered has no accessibility violation (axe-core, WCAG A/AA) of the given impacts",
    params: &[
        crate::page::PREVIEW_REPORT,
        opt(
            "impacts",
            Kind::StrOrList,
            "the impacts that fail the check: critical, serious, moderate, minor (default: [critical, serious])",
        ),
        opt(
            "expect",
            Kind::OneOf(&["pass", "fail"]),
            "`pass` (default), or `fail` for a page that is meant to have such violations",
        ),
    ],
    rules: |p| {
        get_strs(p, "impacts")
            .iter()
            .filter(|i| !IMPACTS.contains(&i.as_str()))
            .map(|i| {
                params::issue(
                    "impacts",
                    format!("unknown impact `{i}`"),
                    Some(format!("the impacts are {}", IMPACTS.join(", "))),
                )
            })
            .collect()
    },
    run: |ctx, p| {
        let report = get_str(p, "report").unwrap_or_default();
        let expect_fail = get_str(p, "expect") == Some("fail");
        let mut impacts = get_strs(p, "impacts");
        if !p.contains_key("impacts") {
            impacts = DEFAULT_IMPACTS.iter().map(|s| s.to_string()).collect();
        }
        // The report must be a real file of the workspace (no symlink out).
        let text = fsx::read_text(&fsx::file(ctx.ws, report)?)?;
        let parsed: PreviewReport = serde_json::from_str(&text).map_err(|e| CheckError::File {
            path: report.to_string(),
            why: format!("not a preview report: {e}"),
        })?;
        Ok(judge(report, &parsed, &impacts, expect_fail))
    },
};

/// `#increment`, `#a, #b and 3 more`.
fn selectors(v: &Violation) -> Vec<String> {
    let mut out: Vec<String> = v.nodes.iter().map(|n| n.selector.clone()).collect();
    if v.more_nodes > 0 {
        out.push(format!("and {} more", v.more_nodes));
    }
    out
}

fn judge(report: &str, r: &PreviewReport, impacts: &[String], expect_fail: bool) -> Verdict {
    let mut evidence = json!({
        "report": report,
        "impacts": impacts,
        "expect": if expect_fail { "fail" } else { "pass" },
    });
    let Some(a) = r.accessibility.as_ref().filter(|a| a.status == "checked") else {
        let why = match &r.accessibility {
            Some(a) => format!(
                "{}: {}",
                if a.status == "failed" {
                    "the accessibility audit failed"
                } else {
                    "the page's accessibility was not audited"
                },
                a.reason.as_deref().unwrap_or("no reason given")
            ),
            None => "the preview report has no accessibility section (made by a pmpo without the audit, or not a rendered page): preview the page again".to_string(),
        };
        evidence["reason"] = json!(why);
        return Verdict::not_checked(format!("not checked: {why}"), evidence);
    };
    let (failing, others): (Vec<&Violation>, Vec<&Violation>) = a
        .violations
        .iter()
        .partition(|v| impacts.contains(&v.impact));
    let list = |vs: &[&Violation]| -> Value {
        vs.iter()
            .map(|v| json!({"rule": v.rule, "impact": v.impact, "help": v.help, "selectors": selectors(v)}))
            .collect()
    };
    evidence["engine"] = json!(a.engine);
    evidence["counts"] = json!(a.counts);
    evidence["violations"] = list(&failing);
    if !others.is_empty() {
        evidence["other_violations"] = list(&others);
    }
    let named: Vec<String> = failing
        .iter()
        .map(|v| format!("{} ({}) at {}", v.rule, v.impact, selectors(v).join(", ")))
        .collect();
    let clean = failing.is_empty();
    let message = match (clean, expect_fail) {
        (true, false) => format!(
            "no {} accessibility violation ({} violation(s) of other impacts)",
            impacts.join(" or "),
            others.len()
        ),
        (false, false) => format!(
            "{} accessibility violation(s): {}",
            named.len(),
            named.join("; ")
        ),
        (false, true) => format!("the expected violations were found: {}", named.join("; ")),
        (true, true) => format!(
            "the page was expected to have {} accessibility violations, and has none",
            impacts.join(" or ")
        ),
    };
    Verdict::new(clean != expect_fail, message, evidence)
}

#[cfg(test)]
mod tests {
    use pmpo_tools::preview::a11y::{Accessibility, ViolationNode};

    use super::*;

    fn report(violations: &[(&str, &str)]) -> PreviewReport {
        let raw = json!({"violations": violations.iter().map(|(rule, impact)| json!({
            "id": rule, "impact": impact, "help": "h", "total": 1,
            "nodes": [{"target": [format!("#{rule}")], "html": "<p>"}]})).collect::<Vec<_>>()});
        PreviewReport {
            accessibility: Some(Accessibility::from_axe(&raw, 1.0).unwrap()),
            ..Default::default()
        }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn violations_of_the_given_impacts_fail() {
        let default = strs(DEFAULT_IMPACTS);
        let r = report(&[("color-contrast", "serious"), ("region", "moderate")]);
        let v = judge("r.json", &r, &default, false);
        assert!(!v.passed());
        assert!(
            v.message
                .contains("color-contrast (serious) at #color-contrast"),
            "{}",
            v.message
        );
        assert_eq!(
            v.evidence["violations"][0]["selectors"][0],
            "#color-contrast"
        );
        assert_eq!(v.evidence["other_violations"][0]["rule"], "region");
        assert!(judge("r.json", &r, &default, true).passed());
        let moderate = judge("r.json", &r, &strs(&["moderate"]), false);
        assert!(!moderate.passed() && moderate.message.contains("region"));
        let r = report(&[("region", "moderate")]);
        assert!(judge("r.json", &r, &default, false).passed());
        assert!(!judge("r.json", &r, &default, true).passed());
    }

    #[test]
    fn unknown_impacts_are_refused_before_the_run() {
        let params = |v: Value| v.as_object().unwrap().clone();
        let issues = crate::check_params(
            &ACCESSIBILITY,
            &params(json!({"report": "r.json", "impacts": ["serious", "severe"]})),
        );
        let text: Vec<&str> = issues.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(text, ["unknown impact `severe`"]);
        let ok = params(json!({"report": "r.json", "impacts": "moderate", "expect": "fail"}));
        assert!(crate::check_params(&ACCESSIBILITY, &ok).is_empty());
        assert_eq!(crate::find("a11y").unwrap().name, "accessibility");
    }

    #[test]
    fn an_unchecked_page_is_not_a_pass() {
        let mut r = PreviewReport::default();
        let v = judge("r.json", &r, &strs(DEFAULT_IMPACTS), false);
        assert_eq!(v.status, crate::ValidationStatus::NotChecked);
        r.accessibility = Some(Accessibility::not_checked("turned off"));
        let v = judge("r.json", &r, &strs(DEFAULT_IMPACTS), false);
        assert_eq!(v.status, crate::ValidationStatus::NotChecked);
        assert!(
            v.message.contains("not audited: turned off"),
            "{}",
            v.message
        );
        let mut a = Accessibility::failed("axe-core threw: boom", 3.0);
        a.violations.push(Violation {
            nodes: vec![ViolationNode::default()],
            ..Default::default()
        });
        r.accessibility = Some(a);
        let v = judge("r.json", &r, &strs(DEFAULT_IMPACTS), true);
        assert!(
            v.message.contains("audit failed: axe-core threw"),
            "{}",
            v.message
        );
    }
}
