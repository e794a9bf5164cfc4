//! A plan run through MCP (`execute`, `validate`) is the host's plan, not a
//! person's: it may not loosen confinement. `sandbox: false`, `network`,
//! `env_passthrough` and a check's `allow_network` are refused before
//! anything runs; only a person's plan file run with `pmpo execute` may set
//! them.
//!
//! The rules are those the loop applies to a plan a model or a host proposes
//! (the Plan phase's refusals); where `pmpo_loop` exports them
//! (`pmpo_loop::plan_refusals`), this check is that function.

use std::path::Path;

use pmpo_plan::Node;
use pmpo_plan::node::{NodeKind, Resolved};
use serde_json::{Map, Value, json};

const CONFINEMENT: &str = "a plan from a model or a host may not loosen confinement (sandbox, env_passthrough, network); only a person's plan file run with `pmpo execute` may";

/// Why the plan document (as JSON) may not run for the host; empty: it may.
pub(super) fn refusals(doc: &Value) -> Vec<String> {
    let plan = doc.get("plan").unwrap_or(doc);
    let mut p = Vec::new();
    let loosened = |v: &Value, safe: bool| *v != Value::Bool(safe);
    for (i, stage) in plan["stages"].as_array().into_iter().flatten().enumerate() {
        let who = match stage["id"].as_str() {
            Some(id) => format!("stage `{id}`"),
            None => format!("stage {}", i + 1),
        };
        if let Some(v) = stage.get("sandbox").filter(|v| loosened(v, true)) {
            p.push(format!("{who} sets `sandbox: {v}`: {CONFINEMENT}"));
        }
        if let Some(v) = stage.get("network").filter(|v| loosened(v, false)) {
            p.push(format!("{who} sets `network: {v}`: {CONFINEMENT}"));
        }
        let withs = [
            ("with", stage.get("with")),
            (
                "fallback.with",
                stage.get("fallback").and_then(|f| f.get("with")),
            ),
        ];
        for (place, with) in withs {
            let Some(with) = with else { continue };
            if with.get("env_passthrough").is_some() {
                p.push(format!(
                    "{who} sets `{place}.env_passthrough`: {CONFINEMENT}"
                ));
            }
            if let Some(v) = with.get("network").filter(|v| loosened(v, false)) {
                p.push(format!("{who} sets `{place}.network: {v}`: {CONFINEMENT}"));
            }
        }
        for k in stage["validate"].as_array().into_iter().flatten() {
            if let Some(v) = k["with"]
                .get("allow_network")
                .filter(|v| loosened(v, false))
            {
                p.push(format!(
                    "{who} has a check with `allow_network: {v}`: {CONFINEMENT}"
                ));
            }
        }
    }
    for k in plan["validation_plan"].as_array().into_iter().flatten() {
        if let Some(v) = k["with"]
            .get("allow_network")
            .filter(|v| loosened(v, false))
        {
            p.push(format!(
                "the check for `{}` sets `allow_network: {v}`: {CONFINEMENT}",
                k["constraint_id"].as_str().unwrap_or("?")
            ));
        }
    }
    p
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
