//! What a preview adds to a run's artifact manifest (`preview.runs` and the
//! `validation` section), and its one-line summary.

use serde_json::{Value, json};

use super::report::PreviewReport;

pub(super) fn summary_line(r: &PreviewReport, report_path: &str) -> String {
    format!(
        "preview {}: {} via {} (runtime {}), {} console error(s), {} page error(s), {} failed request(s){}{}, {:.0} ms{}; report {}\n",
        r.artifact_id,
        r.status,
        r.driver,
        r.runtime_source,
        r.counts.console_errors,
        r.counts.page_errors,
        r.counts.failed_requests,
        r.accessibility
            .as_ref()
            .map(|a| format!(", {}", a.summary()))
            .unwrap_or_default(),
        findings_note(r),
        r.timings.total_ms,
        r.reason
            .as_ref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default(),
        report_path,
    )
}

/// The findings that say something is wrong (not the `info` ones), by code:
/// `, findings: missing-runtime, blank-screenshot`.
fn findings_note(r: &PreviewReport) -> String {
    let codes: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.severity != "info")
        .map(|f| f.code.as_str())
        .collect();
    if codes.is_empty() {
        String::new()
    } else {
        format!(", findings: {}", codes.join(", "))
    }
}

/// The entry of `preview.runs` in the artifact manifest.
pub fn manifest_run(r: &PreviewReport, report_path: &str) -> Value {
    json!({
        "artifact_id": r.artifact_id,
        "status": r.status,
        "html": Some(&r.html).filter(|h| !h.is_empty()),
        "screenshot": r.screenshot,
        "report": report_path,
        "runtime_source": r.runtime_source,
        "runtime_detail": r.runtime_detail,
        "required": r.required,
        "driver": r.driver,
        "diagnostics_available": r.diagnostics_available,
        "console_errors": r.counts.console_errors,
        "page_errors": r.counts.page_errors,
        "failed_requests": r.counts.failed_requests,
        "screenshot_blank": r.image.as_ref().map(|i| i.blank),
        "accessibility": r.accessibility.as_ref().map(|a| json!({"status": a.status, "counts": a.counts})),
        "findings": r.findings.iter().map(|f| json!({"code": f.code, "severity": f.severity})).collect::<Vec<_>>(),
    })
}

/// How one `preview.runs` entry of the manifest went, by the preview's own
/// criteria (the `preview` check's, on the counts the run recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunVerdict {
    Pass,
    Fail,
    /// Skipped, or rendered without diagnostics: nothing says the page is clean.
    Unobserved,
}

fn run_verdict(r: &Value) -> RunVerdict {
    let count = |key: &str| r[key].as_u64().unwrap_or(0);
    match r["status"].as_str() {
        Some("success") => {
            if count("console_errors") + count("page_errors") + count("failed_requests") > 0
                || r["screenshot_blank"] == true
            {
                RunVerdict::Fail
            } else if r["diagnostics_available"] == true {
                RunVerdict::Pass
            } else {
                RunVerdict::Unobserved
            }
        }
        Some("skipped") => RunVerdict::Unobserved,
        _ => RunVerdict::Fail,
    }
}

/// The manifest's `preview` (`{required, runs}`) and `validation`
/// (`{preview_status, has_console_errors, has_request_failures, notes}`)
/// sections of the reference manifest schema, from the `preview_run` outputs
/// of a run's preview stages. `(None, None)` when there were none.
pub fn manifest_summary<'a>(
    runs: impl IntoIterator<Item = &'a Value>,
) -> (Option<Value>, Option<Value>) {
    let runs: Vec<Value> = runs
        .into_iter()
        .filter(|r| r.is_object())
        .cloned()
        .collect();
    if runs.is_empty() {
        return (None, None);
    }
    let count = |key: &str| -> u64 { runs.iter().filter_map(|r| r[key].as_u64()).sum() };
    let verdicts: Vec<RunVerdict> = runs.iter().map(run_verdict).collect();
    let mut notes: Vec<String> = runs
        .iter()
        .zip(&verdicts)
        .filter(|(r, v)| r["status"] != "success" || **v == RunVerdict::Fail)
        .map(|(r, _)| {
            let id = r["artifact_id"].as_str().unwrap_or("?");
            match r["status"].as_str() {
                Some("success") => format!(
                    "preview `{id}` shows problems: {} console error(s), {} page error(s), {} failed request(s){}",
                    r["console_errors"].as_u64().unwrap_or(0),
                    r["page_errors"].as_u64().unwrap_or(0),
                    r["failed_requests"].as_u64().unwrap_or(0),
                    if r["screenshot_blank"] == true { ", a blank screenshot" } else { "" }
                ),
                other => format!("preview `{id}` {}", other.unwrap_or("?")),
            }
        })
        .collect();
    if runs
        .iter()
        .any(|r| r["diagnostics_available"] == false && r["status"] == "success")
    {
        notes.push(
            "some previews were rendered without diagnostics (Chromium --screenshot mode): console, page errors and requests were not checked".into(),
        );
    }
    // The reference vocabulary has no "not checked": `partial` is a preview
    // that found no problem but could not look at everything.
    let status = if verdicts.contains(&RunVerdict::Fail) {
        "fail"
    } else if verdicts.iter().all(|v| *v == RunVerdict::Pass) {
        "pass"
    } else {
        "partial"
    };
    let validation = json!({
        "preview_status": status,
        "has_console_errors": count("console_errors") + count("page_errors") > 0,
        "has_request_failures": count("failed_requests") > 0,
        "notes": notes,
    });
    let section = json!({
        "required": runs.iter().any(|r| r["required"] == true),
        "runs": runs,
    });
    (Some(section), Some(validation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_sections() {
        assert_eq!(manifest_summary(&[]), (None, None));
        let clean = json!({"artifact_id": "c", "status": "success", "console_errors": 0, "page_errors": 0, "failed_requests": 0, "diagnostics_available": true, "screenshot_blank": false});
        let unseen =
            json!({"artifact_id": "u", "status": "success", "diagnostics_available": false});
        let skipped = json!({"artifact_id": "b", "status": "skipped", "required": false});
        let errors = json!({"artifact_id": "a", "status": "success", "console_errors": 1, "failed_requests": 0, "diagnostics_available": true});
        let status = |runs: &[Value]| manifest_summary(runs).1.unwrap()["preview_status"].clone();
        assert_eq!(status(std::slice::from_ref(&clean)), "pass");
        assert_eq!(status(&[clean.clone(), unseen.clone()]), "partial");
        assert_eq!(status(&[clean.clone(), skipped.clone()]), "partial");
        assert_eq!(status(&[clean.clone(), errors.clone()]), "fail");
        let mut blank = clean.clone();
        blank["screenshot_blank"] = json!(true);
        assert_eq!(status(&[blank]), "fail");
        let (section, validation) = manifest_summary(&[errors, skipped]);
        let (section, validation) = (section.unwrap(), validation.unwrap());
        assert_eq!(section["runs"].as_array().unwrap().len(), 2);
        assert_eq!(section["required"], false);
        assert_eq!(validation["preview_status"], "fail");
        assert_eq!(validation["has_console_errors"], true);
        assert_eq!(validation["has_request_failures"], false);
        assert!(
            validation["notes"][0]
                .as_str()
                .unwrap()
                .contains("1 console error(s)")
        );
        assert_eq!(validation["notes"][1], "preview `b` skipped");
    }

    #[test]
    fn the_summary_names_the_findings_that_say_something_is_wrong() {
        use crate::preview::report::Finding;
        let mut r = PreviewReport {
            artifact_id: "p".into(),
            ..Default::default()
        };
        assert!(!summary_line(&r, "x.json").contains("findings"));
        r.findings
            .push(Finding::new("runtime-added", "info", "added".into(), None));
        assert!(!summary_line(&r, "x.json").contains("findings"));
        r.findings.push(Finding::new(
            "missing-runtime",
            "warning",
            "no Alpine".into(),
            None,
        ));
        r.findings.push(Finding::new(
            "blank-screenshot",
            "error",
            "white".into(),
            None,
        ));
        let line = summary_line(&r, "x.json");
        assert!(
            line.contains(", findings: missing-runtime, blank-screenshot,"),
            "{line}"
        );
        let run = manifest_run(&r, "x.json");
        assert_eq!(run["findings"].as_array().unwrap().len(), 3, "{run}");
    }
}
