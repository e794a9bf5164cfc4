//! The `json_schema` check against the A2UI reference schema shipped in
//! `schemas/a2ui-component.schema.json` (Draft 7): each keyword that schema
//! uses (`$ref` to `#/definitions/...`, `pattern`, `patternProperties`,
//! `additionalProperties: false`, `oneOf`, `allOf` with `if`/`then`, `enum`,
//! `required`) rejects what it should and lets a good spec through.

mod common;
use common::*;
use serde_json::{Value, json};

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/a2ui-component.schema.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A spec that the reference schema accepts.
fn good() -> Value {
    json!({
        "version": "a2ui/v1.2",
        "metadata": {"name": "Counter", "extra": [1]},
        "bindings": {
            "count": {"kind": "literal", "value": 3},
            "shown": {"kind": "ref", "ref": "count"},
            "label_text": {"kind": "expression", "expression": "'Count: ' + shown"}
        },
        "root": {"id": "counter-card", "type": "Card", "props": {"anything": {"x": 1}},
            "children": [
                {"id": "value", "type": "Text", "bindings": {"text": {"$ref": "shown"}, "size": 12, "bold": true, "note": null, "alt": "x"}},
                {"id": "inc-button", "type": "Button", "bindings": {"label": {"$ref": "label_text"}}}
            ]}
    })
}

/// The pointers of the violations of `spec`, or a pass.
fn violations(w: &Ws, spec: &Value) -> Vec<String> {
    w.write("spec.json", serde_json::to_string(spec).unwrap());
    let o = w.check(
        "json_schema",
        json!({"path": "spec.json", "schema": reference()}),
    );
    if o.passed() {
        return Vec::new();
    }
    o.evidence["files"][0]["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", o.evidence))
        .iter()
        .map(|v| v["pointer"].as_str().unwrap().to_string())
        .collect()
}

/// Applies `edit` to the good spec and asserts a violation at `pointer`.
fn rejects(w: &Ws, pointer: &str, edit: impl FnOnce(&mut Value)) {
    let mut spec = good();
    edit(&mut spec);
    let found = violations(w, &spec);
    assert!(
        found.iter().any(|p| p == pointer),
        "expected a violation at {pointer}, got {found:?} for {spec}"
    );
}

#[test]
fn a_good_reference_spec_passes() {
    let w = Ws::new();
    assert_eq!(violations(&w, &good()), Vec::<String>::new());
}

#[test]
fn each_rule_of_the_reference_schema_rejects() {
    let w = Ws::new();
    // required + additionalProperties: false at the top.
    rejects(&w, "/", |s| {
        s.as_object_mut().unwrap().remove("version");
    });
    rejects(&w, "/", |s| s["extra"] = json!(1));
    // pattern of version.
    rejects(&w, "/version", |s| s["version"] = json!("v1"));
    // patternProperties + additionalProperties: false on bindings.
    rejects(&w, "/bindings", |s| {
        s["bindings"]["Count"] = json!({"kind": "literal", "value": 1})
    });
    // enum of kind.
    rejects(&w, "/bindings/count/kind", |s| {
        s["bindings"]["count"]["kind"] = json!("constant")
    });
    // allOf + if/then: each kind needs its field.
    rejects(&w, "/bindings/shown", |s| {
        s["bindings"]["shown"] = json!({"kind": "ref"})
    });
    rejects(&w, "/bindings/count", |s| {
        s["bindings"]["count"] = json!({"kind": "literal"})
    });
    rejects(&w, "/bindings/label_text", |s| {
        s["bindings"]["label_text"] = json!({"kind": "expression", "value": 1})
    });
    // additionalProperties: false on a binding; pattern of its ref.
    rejects(&w, "/bindings/count", |s| {
        s["bindings"]["count"]["unit"] = json!("px")
    });
    rejects(&w, "/bindings/shown/ref", |s| {
        s["bindings"]["shown"]["ref"] = json!("Count")
    });
    // $ref to #/definitions/component, recursively: id and type patterns.
    rejects(&w, "/root/children/0/id", |s| {
        s["root"]["children"][0]["id"] = json!("Value")
    });
    rejects(&w, "/root/children/1/type", |s| {
        s["root"]["children"][1]["type"] = json!("button")
    });
    rejects(&w, "/root/children/0", |s| {
        s["root"]["children"][0]["colour"] = json!("red")
    });
    rejects(&w, "/root", |s| {
        s["root"].as_object_mut().unwrap().remove("type");
    });
    // oneOf of a component binding: an object must be exactly {"$ref": id}.
    rejects(&w, "/root/children/0/bindings/text", |s| {
        s["root"]["children"][0]["bindings"]["text"] = json!({"$ref": "shown", "x": 1})
    });
    rejects(&w, "/root/children/0/bindings/text", |s| {
        s["root"]["children"][0]["bindings"]["text"] = json!(["a"])
    });
    rejects(&w, "/root/children/0/bindings/text", |s| {
        s["root"]["children"][0]["bindings"]["text"] = json!({"$ref": "Shown"})
    });
}
