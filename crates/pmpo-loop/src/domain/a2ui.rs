//! The A2UI adapter: a component specification schema-checked,
//! cycle-checked, normalized and previewed.

use serde_json::{Value, json};

use pmpo_plan::{ConstraintKind, Severity};

use super::values::{StageValue, stage};
use super::{AdapterError, AdapterInput, Builder, Scope, need_input, stem};

/// The A2UI schema this project ships.
pub const A2UI_SCHEMA: &str = include_str!("../../../../schemas/a2ui.schema.json");

pub(super) fn a2ui(
    b: &mut Builder,
    s: &Scope,
    input: &AdapterInput<'_>,
) -> Result<(), AdapterError> {
    let spec = need_input(input, "an A2UI specification", &["json"])?;
    let st = stem(spec);
    let normalized = s.path(&format!("{st}.a2ui.json"));
    let report = s.path(&format!("{st}.a2ui-report.json"));
    let page = s.path(&format!("{st}.html"));
    let id = s.id(&st);
    let schema: Value = serde_json::from_str(A2UI_SCHEMA)
        .map_err(|e| format!("internal: the shipped A2UI schema is not JSON: {e}"))?;
    b.stage(
        s,
        stage(
            "normalize",
            "a2ui",
            "Check ids and references, detect binding cycles, normalize field order",
        )
        .with(json!({"input": spec, "output": normalized, "report": report}))
        .reads([spec])
        .writes([normalized.as_str(), report.as_str()]),
    );
    b.stage(
        s,
        stage("layout", "template", "Lay the specification out with the A2UI preview template")
            .after(["normalize"])
            .with(json!({"template": "builtin:a2ui-preview", "output": page, "vars": {"TITLE": input.name}, "files": {"SPEC": normalized}}))
            .writes([page.as_str()]),
    );
    b.stage(
        s,
        stage("preview", "preview", "Render the A2UI layout in a headless browser")
            .after(["layout"])
            .with(json!({"input": page, "id": id, "out_dir": s.path("previews"), "viewport": {"width": 800, "height": 600}}))
            .writes([s.path(&format!("previews/{id}"))]),
    );
    b.constraint(
        s,
        "schema-valid",
        Severity::Blocking,
        ConstraintKind::Structural,
        "The specification is valid against the A2UI schema",
        Some(("json_schema", json!({"path": spec, "schema": schema}))),
    );
    b.constraint(s, "no-binding-cycles", Severity::Blocking, ConstraintKind::Structural,
        "No component refers to itself through children, references or bindings",
        Some(("json_schema", json!({"path": report, "schema": {"type": "object", "required": ["cycles"], "properties": {"cycles": {"maxItems": 0}, "duplicates": {"maxItems": 0}}}}))));
    b.constraint(s, "normalized", Severity::Low, ConstraintKind::Structural,
        "The specification's fields are in the normalized order (id, type, props, children)",
        Some(("json_schema", json!({"path": report, "schema": {"type": "object", "properties": {"normalized": {"const": true}}}}))));
    b.constraint(
        s,
        "renders",
        Severity::High,
        ConstraintKind::Visual,
        "The layout renders in a browser without errors",
        Some((
            "preview",
            json!({"report": s.path(&format!("previews/{id}/preview-report.json"))}),
        )),
    );
    b.d.required_files.push(normalized);
    b.d.required_files.push(page);
    Ok(())
}
