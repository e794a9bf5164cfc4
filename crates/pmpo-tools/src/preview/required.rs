//! Whether a preview without an explicit `required:` is required: a blocking
//! constraint judged by a preview makes it so (seed 001: a hard failure) —
//! but only the preview whose report that constraint's check reads. A plan
//! with one blocking preview constraint and several previews must not turn
//! an optional one (a TSX badge skipped without esbuild) into a failure.

use pmpo_plan::{Severity, Specification, ValidationItem};

/// Whether a validation method names the preview check.
fn is_preview(method: &str) -> bool {
    matches!(
        method
            .trim()
            .to_ascii_lowercase()
            .replace('-', "_")
            .as_str(),
        "preview" | "render_preview" | "browser_render"
    )
}

/// A path as a plan may write it: `./dist//x` and `dist/x` are one path.
fn same_path(a: &str, b: &str) -> bool {
    let norm = |p: &str| {
        p.split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect::<Vec<_>>()
            .join("/")
    };
    norm(a) == norm(b)
}

/// Whether the preview writing `report` is required by a blocking constraint:
/// one whose validation_plan check reads that report, or one judged by a
/// preview with no report named anywhere (which preview it means cannot be
/// told, so every preview is).
pub(super) fn required_by(spec: &Specification, plan: &[ValidationItem], report: &str) -> bool {
    spec.constraints
        .iter()
        .filter(|c| c.severity == Severity::Blocking)
        .any(|c| {
            let items: Vec<&ValidationItem> = plan
                .iter()
                .filter(|v| v.constraint_id == c.id && is_preview(&v.validation_method))
                .collect();
            let declared = c
                .validation
                .as_ref()
                .and_then(|v| v.validation_method.as_deref())
                .is_some_and(is_preview);
            if items.is_empty() {
                return declared;
            }
            let reports: Vec<&str> = items
                .iter()
                .filter_map(|v| v.inputs.get("report").and_then(|r| r.as_str()))
                .collect();
            reports.is_empty() || reports.iter().any(|r| same_path(r, report))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(constraints: serde_json::Value) -> Specification {
        serde_json::from_value(serde_json::json!({
            "artifact_name": "a", "artifact_type": "ui", "constraints": constraints,
        }))
        .unwrap()
    }

    fn item(constraint: &str, method: &str, report: Option<&str>) -> ValidationItem {
        let mut v = serde_json::json!({"constraint_id": constraint, "validation_method": method});
        if let Some(r) = report {
            v["with"] = serde_json::json!({"report": r});
        }
        serde_json::from_value(v).unwrap()
    }

    fn blocking(id: &str, method: Option<&str>) -> serde_json::Value {
        let mut c = serde_json::json!({"id": id, "description": "d", "severity": "blocking"});
        if let Some(m) = method {
            c["validation"] = serde_json::json!({"validation_method": m});
        }
        c
    }

    #[test]
    fn only_the_preview_a_blocking_check_reads_is_required() {
        let s = spec(serde_json::json!([blocking("renders", Some("preview"))]));
        let plan = [item(
            "renders",
            "preview",
            Some("./dist/previews/card//preview-report.json"),
        )];
        assert!(required_by(
            &s,
            &plan,
            "dist/previews/card/preview-report.json"
        ));
        assert!(!required_by(
            &s,
            &plan,
            "dist/previews/badge/preview-report.json"
        ));
    }

    #[test]
    fn a_preview_constraint_naming_no_report_requires_every_preview() {
        let s = spec(serde_json::json!([blocking(
            "renders",
            Some("render-preview")
        )]));
        assert!(required_by(&s, &[], "dist/previews/x/preview-report.json"));
        let plan = [item("renders", "preview", None)];
        assert!(required_by(
            &s,
            &plan,
            "dist/previews/x/preview-report.json"
        ));
    }

    #[test]
    fn a_validation_plan_entry_alone_makes_its_preview_required() {
        let s = spec(serde_json::json!([blocking("renders", None)]));
        let plan = [item(
            "renders",
            "preview",
            Some("dist/previews/x/preview-report.json"),
        )];
        assert!(required_by(
            &s,
            &plan,
            "dist/previews/x/preview-report.json"
        ));
        assert!(!required_by(&s, &[], "dist/previews/x/preview-report.json"));
    }

    #[test]
    fn non_blocking_or_other_checks_require_nothing() {
        let mut high = blocking("renders", Some("preview"));
        high["severity"] = "high".into();
        let s = spec(serde_json::json!([
            high,
            blocking("exists", Some("file_exists"))
        ]));
        let plan = [item("exists", "file_exists", None)];
        assert!(!required_by(
            &s,
            &plan,
            "dist/previews/x/preview-report.json"
        ));
    }
}
