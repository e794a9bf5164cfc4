//! The normalized form of an A2UI specification: keys in a fixed order,
//! the same spec always the same bytes.

use serde_json::{Map, Value};

use super::Layout;

/// Component keys that come first, in this order.
const COMPONENT_KEYS: &[&str] = &["id", "type", "props", "bindings", "children"];
/// Top-level keys that come first, in this order.
const TOP_KEYS: &[&str] = &["version", "metadata", "bindings", "root", "components"];

/// A value with the keys of every object sorted, at every depth.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// An object with `first` keys in that order, then the others sorted.
fn ordered(
    m: &Map<String, Value>,
    first: &[&str],
    mut value: impl FnMut(&str, &Value) -> Value,
) -> Value {
    let mut out = Map::new();
    for k in first {
        if let Some(v) = m.get(*k) {
            out.insert((*k).to_string(), value(k, v));
        }
    }
    let mut rest: Vec<&String> = m.keys().filter(|k| !first.contains(&k.as_str())).collect();
    rest.sort();
    for k in rest {
        out.insert(k.clone(), sorted(&m[k]));
    }
    Value::Object(out)
}

fn normalize_component(v: &Value, layout: Layout) -> Value {
    let Value::Object(m) = v else {
        return sorted(v);
    };
    ordered(m, COMPONENT_KEYS, |k, v| match (k, v, layout) {
        ("children", Value::Array(items), Layout::Nested) => Value::Array(
            items
                .iter()
                .map(|c| normalize_component(c, layout))
                .collect(),
        ),
        ("id" | "type" | "children", v, _) => v.clone(),
        (_, v, _) => sorted(v),
    })
}

/// A spec with its keys in the normalized order.
pub fn normalize(doc: &Value, layout: Layout) -> Value {
    let Value::Object(top) = doc else {
        return sorted(doc);
    };
    ordered(top, TOP_KEYS, |k, v| match (k, v, layout) {
        ("root", v, Layout::Nested) => normalize_component(v, layout),
        ("components", Value::Array(items), Layout::Flat) => Value::Array(
            items
                .iter()
                .map(|c| normalize_component(c, layout))
                .collect(),
        ),
        ("version", v, _) => v.clone(),
        (_, v, _) => sorted(v),
    })
}

/// The text of a normalized spec: pretty JSON, 2-space indent, final newline.
pub fn to_text(v: &Value) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(v).map(|s| s + "\n")
}
