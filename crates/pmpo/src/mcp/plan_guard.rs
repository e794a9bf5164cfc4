//! A plan run through MCP (`execute`, `validate`) is the host's plan, not a
//! person's: it may not loosen confinement. `sandbox: false`, `network`,
//! `env_passthrough` and a check's `allow_network` are refused before
//! anything runs; only a person's plan file run with `pmpo execute` may set
//! them.
//!
//! The rules are those the loop applies to a plan a model or a host proposes
//! (the Plan phase's refusals, `pmpo_loop::plan_refusals`).

use std::path::Path;

use pmpo_plan::Node;
use pmpo_plan::node::{NodeKind, Resolved};
use serde_json::{Map, Value, json};

/// Why the plan document (as JSON) may not run for the host; empty: it may.
/// The loop's own refusals of a proposed plan: one set of rules.
pub(super) fn refusals(doc: &Value) -> Vec<String> {
    pmpo_loop::plan_refusals(doc)
}

/// The tool error for a workspace plan file the host may not run, if it is
/// one. A plan that does not parse is left to the command, which names its
/// errors.
pub(super) fn refuse(root: &Path, rel: &str) -> Result<(), String> {
    let Ok(loaded) = pmpo_plan::load_plan(&root.join(rel)) else {
        return Ok(());
    };
    // The document as written: a setting spelled out counts even where it
    // is the default.
    let why = refusals(&as_json(&loaded.root));
    if why.is_empty() {
        return Ok(());
    }
    Err(format!(
        "error: the plan `{rel}` is refused: nothing was run\n{}\n  help: remove these settings; a person who wants them runs the plan with `pmpo execute`",
        why.iter()
            .map(|w| format!("  - {w}"))
            .collect::<Vec<_>>()
            .join("\n")
    ))
}

/// A parsed plan document as JSON, scalars typed as YAML's core schema
/// types them.
fn as_json(node: &Node) -> Value {
    match &node.kind {
        NodeKind::Scalar { text, .. } => match node.resolve() {
            Some(Resolved::Null) => Value::Null,
            Some(Resolved::Bool(b)) => json!(b),
            Some(Resolved::Int(i)) => json!(i),
            Some(Resolved::Float(f)) => json!(f),
            Some(Resolved::Str(s)) => json!(s),
            None => json!(text),
        },
        NodeKind::Seq(items) => Value::Array(items.iter().map(as_json).collect()),
        NodeKind::Map(pairs) => {
            let mut m = Map::new();
            for (k, v) in pairs {
                let key = match &k.kind {
                    NodeKind::Scalar { text, .. } => text.clone(),
                    _ => continue,
                };
                m.insert(key, as_json(v));
            }
            Value::Object(m)
        }
    }
}
