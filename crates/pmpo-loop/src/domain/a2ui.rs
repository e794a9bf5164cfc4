//! The A2UI adapter: a component specification schema-checked,
//! cycle-checked, normalized and previewed with its bound values.

use serde_json::{Value, json};

use pmpo_plan::{ConstraintKind, Severity};

use super::values::{StageValue, stage};
use super::{AdapterError, AdapterInput, Builder, Scope, need_input, stem};

/// pmpo's own A2UI schema (nested and flat layouts).
pub const A2UI_SCHEMA: &str = include_str!("../../../../schemas/a2ui.schema.json");
/// The A2UI reference schema (an unchanged copy; see `schemas/README.md`).
pub const A2UI_REFERENCE_SCHEMA: &str =
    include_str!("../../../../schemas/a2ui-component.schema.json");

/// The schema `schema-valid` checks a spec against: the reference schema
/// when the spec is in the reference format (a top-level `bindings` key, or
/// a component of its `root` tree with a `bindings` key: the same rule as
/// the `a2ui` tool's), pmpo's own schema otherwise. One Draft 7 document
/// whose `if` tells the formats apart; each schema is embedded whole, under
/// its own `$id`.
pub fn spec_schema() -> Result<Value, String> {
    let parse = |name: &str, text: &str| {
        let mut v: Value = serde_json::from_str(text)
            .map_err(|e| format!("internal: the shipped schema {name} is not JSON: {e}"))?;
        if let Some(o) = v.as_object_mut() {
            o.remove("$schema");
        }
        Ok::<Value, String>(v)
    };
    let reference = parse("a2ui-component.schema.json", A2UI_REFERENCE_SCHEMA)?;
    let own = parse("a2ui.schema.json", A2UI_SCHEMA)?;
    Ok(json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "An A2UI specification: the reference format, or pmpo's nested or flat layout",
        "definitions": {"tree-with-bindings": {"type": "object", "anyOf": [
            {"required": ["bindings"]},
            {"required": ["children"], "properties": {"children": {"type": "array", "contains": {"$ref": "#/definitions/tree-with-bindings"}}}}
        ]}},
        "if": {"type": "object", "anyOf": [
            {"required": ["bindings"]},
            {"required": ["root"], "properties": {"root": {"$ref": "#/definitions/tree-with-bindings"}}}
        ]},
        "then": reference,
        "else": own,
    }))
}

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
    let schema = spec_schema()?;
    b.stage(
        s,
        stage(
            "normalize",
            "a2ui",
            "Check ids, references and bindings, detect binding cycles, resolve bound values, normalize field order",
        )
        .with(json!({"input": spec, "output": normalized, "report": report}))
        .reads([spec])
        .writes([normalized.as_str(), report.as_str()]),
    );
    b.stage(
        s,
        stage("layout", "template", "Lay the specification out with its bound values (the report's `resolved`)")
            .after(["normalize"])
            .with(json!({"template": "builtin:a2ui-preview", "output": page, "vars": {"TITLE": input.name}, "files": {"SPEC": normalized, "REPORT": report}}))
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
        "The specification is valid against the A2UI schema of its format (the reference schema when it has bindings, else pmpo's)",
        Some(("json_schema", json!({"path": spec, "schema": schema}))),
    );
    b.constraint(s, "no-binding-cycles", Severity::Blocking, ConstraintKind::Structural,
        "No component or binding refers to itself through children, references or bindings, and no reference names a missing binding",
        Some(("json_schema", json!({"path": report, "schema": {"type": "object", "required": ["cycles"], "properties": {"cycles": {"maxItems": 0}, "duplicates": {"maxItems": 0}, "dangling": {"maxItems": 0}}}}))));
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
    // The laid-out page's accessibility, where a browser runs.
    super::accessibility(b, s, &s.path(&format!("previews/{id}/preview-report.json")));
    b.d.required_files.push(normalized);
    b.d.required_files.push(page);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::spec_schema;

    /// `schema-valid` on a spec: `Ok(())` or the first violation's message.
    fn schema_valid(spec: Value) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spec.json"), spec.to_string()).unwrap();
        let ws = pmpo_store::Workspace::open(dir.path()).unwrap();
        let mut p = Map::new();
        p.insert("path".into(), json!("spec.json"));
        p.insert("schema".into(), spec_schema().unwrap());
        let o = pmpo_checks::run_check(&ws, "json_schema", &p);
        if o.passed() {
            Ok(())
        } else {
            Err(format!("{} {}", o.message, o.evidence))
        }
    }

    fn reference(root: Value) -> Value {
        json!({"version": "a2ui/v1", "bindings": {"n": {"kind": "literal", "value": 1}}, "root": root})
    }

    #[test]
    fn each_format_is_checked_against_its_schema() {
        // pmpo's nested layout: loose ids and types, extra keys, `$bind`.
        let nested = json!({"version": "a2ui/v1", "root": {"id": "Card", "type": "card", "extra": 1,
            "props": {"t": {"$bind": "user.name"}}, "children": [{"id": "x", "type": "Text"}]}});
        assert_eq!(schema_valid(nested), Ok(()));
        // pmpo's flat layout (its root is an id).
        let flat = json!({"version": "a2ui/v1", "root": "a", "components": [
            {"id": "a", "type": "Box", "children": ["b"]}, {"id": "b", "type": "Text"}]});
        assert_eq!(schema_valid(flat), Ok(()));
        let bad_flat = json!({"version": "a2ui/v1", "root": "a", "components": [
            {"id": "a", "type": "Box", "children": [{"id": "b", "type": "Text"}]}]});
        let err = schema_valid(bad_flat).unwrap_err();
        assert!(err.contains("/components/0/children/0"), "{err}");
        // The reference format: clean passes, its rules are enforced.
        let clean =
            reference(json!({"id": "card", "type": "Card", "bindings": {"n": {"$ref": "n"}}}));
        assert_eq!(schema_valid(clean), Ok(()));
        let upper = reference(
            json!({"id": "card", "type": "Card", "children": [{"id": "Title", "type": "Text"}]}),
        );
        let err = schema_valid(upper).unwrap_err();
        assert!(err.contains("/root/children/0/id"), "{err}");
        let unknown = reference(json!({"id": "card", "type": "Card", "colour": "red"}));
        assert!(schema_valid(unknown).unwrap_err().contains("colour"));
        let no_ref = json!({"version": "a2ui/v1", "bindings": {"a": {"kind": "ref"}},
            "root": {"id": "card", "type": "Card"}});
        let err = schema_valid(no_ref).unwrap_err();
        assert!(err.contains("/bindings/a") && err.contains("ref"), "{err}");
        // Bindings only on a deep component make it a reference spec too.
        let deep = json!({"version": "a2ui/v1", "root": {"id": "Card", "type": "Card",
            "children": [{"id": "x", "type": "Text", "children": [{"id": "y", "type": "Text", "bindings": {"t": 1}}]}]}});
        let err = schema_valid(deep).unwrap_err();
        assert!(err.contains("/root/id"), "{err}");
    }
}
