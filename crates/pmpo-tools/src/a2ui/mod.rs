//! The `a2ui` tool: checks an A2UI component specification and writes it in
//! a normalized form (the same spec always gives the same bytes).
//!
//! ```yaml
//! with:
//!   input: specs/card.a2ui.json
//!   output: dist/card.a2ui.json       # the normalized spec
//!   report: dist/card.a2ui.report.json  # optional: what was found
//! ```
//!
//! Three formats are read. Nested: `{version, metadata, root}` where `root`
//! is a component `{id, type, props, children: [components]}`. Flat:
//! `{version, metadata, components: [{id, type, props, children: [ids]}],
//! root: "id"}`. Reference (the A2UI reference schema,
//! `schemas/a2ui-component.schema.json`): nested, plus a top-level `bindings`
//! map of binding id -> `{kind: literal, value}`, `{kind: ref, ref: id}` or
//! `{kind: expression, expression}`, and on a component `bindings` mapping a
//! prop to a literal or to `{"$ref": binding-id}`. A spec is in the reference
//! format when it has a top-level `bindings` key or a component of its `root`
//! tree has a `bindings` key; otherwise a `components` list makes it flat,
//! and a `root` component nested. (The a2ui adapter's `schema-valid` tells
//! them apart by the same rule.)
//!
//! In the reference format, binding cycles (`binding cycle: a -> b -> a`,
//! through `ref`s and through the binding ids an expression names: see
//! `bindings.rs`) and dangling references (a `ref` or `$ref` naming no
//! binding, with where it is: `root.children[1].bindings.label`) are
//! problems; `props` are plain values there. The report's `resolved` gives,
//! for each component id and bound prop, what the binding shows:
//! `{state: value, value, via}` (a literal, or the end of a `ref` chain),
//! `{state: expression, expression, via}` (not evaluated), or
//! `{state: unresolved, reason, via}`.
//!
//! In pmpo's own formats, in `props` (at any depth), a data binding is an object with a `$bind`
//! path (`{"$bind": "user.name"}`) or a `{{path}}` inside a text; a prop
//! named `ref` or ending in `_ref` names another component by id. A binding
//! whose path starts with a component id (`details.label`) refers to that
//! component.
//!
//! The stage fails, naming what is wrong, when a component lacks a non-empty
//! `id` or `type`, ids repeat, a child or `ref` names no component, a
//! binding is incomplete, or components (or bindings) refer to each other in
//! a loop (`binding cycle: card -> details
//! -> card`; in the flat layout also `child cycle: a -> b -> a`). Dangling
//! binding references do not stop it: the spec is written, the stage notes
//! them, and the report lists them under `dangling` (the a2ui adapter's
//! `no-binding-cycles` constraint fails on them). The report, when asked for,
//! is written either way.
//!
//! Normalization orders keys: the top level as `version, metadata, bindings,
//! root, components`, then the rest sorted; a component as `id, type, props,
//! bindings, children`, then the rest sorted; keys inside `props`, `metadata` and other
//! values sorted at every depth. Arrays keep their order. The text is pretty
//! JSON (2-space indent) with a trailing newline.
//!
//! Named outputs: `components` (count), `types` (sorted, unique), `bindings`
//! (count of bound props), `changed` (whether the input text differs from the normalized
//! text), `path` (the normalized spec).

use std::time::Instant;

use async_trait::async_trait;
use pmpo_plan::InputIssue;
use pmpo_store::Durability;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::inputs::{invalid, io_error, read_file};
use crate::typed::{self, Text};

mod analysis;
mod bindings;
mod normalize;

use crate::{Tool, ToolContext, ToolError, ToolOutcome};
pub use analysis::{Analysis, Format, Layout, analyze};
pub use bindings::is_reference;
pub use normalize::{normalize, to_text};

/// The `with:` of an `a2ui` stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct A2uiInputs {
    /// The specification to check.
    input: Text,
    /// Where the normalized specification goes.
    output: Text,
    /// Where the report goes, if anywhere.
    report: Option<String>,
}

impl typed::Inputs for A2uiInputs {
    const TOOL: &'static str = "a2ui";
    const PATHS: &'static [&'static str] = &["input", "output", "report"];
    const WRITES: &'static [&'static str] = &["output", "report"];
}

pub struct A2uiTool;

/// Parses spec bytes, naming the position of a syntax error.
pub fn parse(bytes: &[u8], name: &str) -> Result<Value, ToolError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let full = e.to_string();
        let what = full.split(" at line ").next().unwrap_or(&full);
        invalid(format!(
            "`{name}` is not valid JSON: {what} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// What one spec gave.
#[derive(Debug, Clone)]
pub struct Processed {
    pub analysis: Analysis,
    /// The normalized text, when the spec is valid.
    pub normalized: Option<String>,
    /// Whether the normalized text differs from the input.
    pub changed: bool,
}

/// Checks and normalizes spec bytes (the tool without the files).
pub fn process(bytes: &[u8], name: &str) -> Result<Processed, ToolError> {
    let doc = parse(bytes, name)?;
    let (layout, analysis) = analyze(&doc);
    let normalized = match layout {
        Some(layout) if analysis.is_valid() => {
            Some(to_text(&normalize(&doc, layout)).map_err(|e| io_error("encode", name, e))?)
        }
        _ => None,
    };
    let changed = normalized.as_ref().is_some_and(|t| t.as_bytes() != bytes);
    Ok(Processed {
        analysis,
        normalized,
        changed,
    })
}

fn report_json(p: &Processed) -> Value {
    let a = &p.analysis;
    json!({
        "format": a.format,
        "components": a.components,
        "types": a.types,
        "bindings": a.bindings,
        "duplicates": a.duplicates,
        "cycles": a.cycles,
        "dangling": a.dangling,
        "normalized": p.normalized.is_some(),
        "changed": p.changed,
        "errors": a.errors,
        "unreachable": a.unreachable,
        "resolved": a.resolved,
    })
}

#[async_trait]
impl Tool for A2uiTool {
    fn name(&self) -> &'static str {
        "a2ui"
    }
    fn written_paths(&self, inputs: &Map<String, Value>) -> Vec<String> {
        typed::written::<A2uiInputs>(inputs)
    }

    fn check_inputs(&self, inputs: &Map<String, Value>) -> Vec<InputIssue> {
        typed::check::<A2uiInputs>(inputs)
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        let started = Instant::now();
        let with: A2uiInputs = typed::decode(inputs)?;
        let (input, output) = (&*with.input, &*with.output);
        let report = with.report.as_deref();
        let bytes = read_file(ctx.workspace, input)?;
        let p = process(&bytes, input)?;
        if let Some(report) = report {
            let text = to_text(&report_json(&p)).map_err(|e| io_error("encode", report, e))?;
            ctx.workspace
                .write_atomic(report, text.as_bytes(), Durability::Relaxed)
                .map_err(|e| io_error("write", report, e))?;
        }
        let Some(normalized) = &p.normalized else {
            let problems = p.analysis.problems();
            let mut err = invalid(format!(
                "`{input}` is not a valid A2UI specification: {}",
                problems.join("; ")
            ));
            if !p.analysis.cycles.is_empty() {
                err = err.hint(
                    "break the loop: a component or binding may not refer to itself, directly or through others",
                );
            }
            return Err(err);
        };
        ctx.workspace
            .write_atomic(output, normalized.as_bytes(), Durability::Relaxed)
            .map_err(|e| io_error("write", output, e))?;
        let a = &p.analysis;
        let mut notes = Vec::new();
        if !a.dangling.is_empty() {
            notes.push(format!(
                "dangling binding references (shown as unresolved): {}",
                a.dangling.join("; ")
            ));
        }
        if !a.unreachable.is_empty() {
            notes.push(format!(
                "components not reached from the root: {}",
                a.unreachable.join(", ")
            ));
        }
        let summary = format!(
            "normalized {input} -> {output}: {} components, {} bindings{}\n",
            a.components,
            a.bindings,
            if p.changed {
                ""
            } else {
                " (already normalized)"
            }
        );
        let mut outputs = Map::new();
        outputs.insert("components".into(), json!(a.components));
        outputs.insert("types".into(), json!(a.types));
        outputs.insert("bindings".into(), json!(a.bindings));
        outputs.insert("changed".into(), json!(p.changed));
        outputs.insert("path".into(), json!(output));
        Ok(ToolOutcome::finished(
            started,
            &summary,
            outputs,
            json!({"input": input, "output": output, "report": report}),
            notes,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pmpo_store::Workspace;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn problems(text: &str) -> String {
        let p = process(text.as_bytes(), "spec.json").unwrap();
        assert!(p.normalized.is_none(), "expected a problem in {text}");
        p.analysis.problems().join("; ")
    }

    const NESTED: &str = r#"{"root": {"children": [
        {"props": {"text": "{{user.name}}", "variant": "title"}, "type": "Text", "id": "name"},
        {"type": "Button", "id": "go", "props": {"label": {"$bind": "labels.go"}, "action": "open"}}
      ], "type": "Card", "id": "card", "props": {"z": 1, "elevation": 2, "style": {"b": 1, "a": 2}}},
      "zeta": {"y": 1, "x": 2}, "metadata": {"name": "Card"}, "version": "a2ui/v1"}"#;

    #[test]
    fn normalization_is_stable_and_idempotent() {
        let p = process(NESTED.as_bytes(), "spec.json").unwrap();
        let text = p.normalized.clone().unwrap();
        assert!(p.changed);
        assert_eq!(p.analysis.components, 3);
        assert_eq!(p.analysis.types, ["Button", "Card", "Text"]);
        assert_eq!(p.analysis.bindings, 2);
        assert!(text.starts_with(
            "{\n  \"version\": \"a2ui/v1\",\n  \"metadata\": {\n    \"name\": \"Card\"\n  },\n  \"root\": {\n    \"id\": \"card\",\n    \"type\": \"Card\",\n    \"props\": {\n      \"elevation\": 2,\n      \"style\": {\n        \"a\": 2,"
        ), "{text}");
        assert!(
            text.ends_with("  \"zeta\": {\n    \"x\": 2,\n    \"y\": 1\n  }\n}\n"),
            "{text}"
        );
        let first_child = text.find("\"id\": \"name\"").unwrap();
        assert!(text[first_child..].starts_with("\"id\": \"name\",\n        \"type\": \"Text\",\n        \"props\": {\n          \"text\""), "{text}");
        // The same input gives the same bytes; the output is a fixed point.
        let again = process(NESTED.as_bytes(), "spec.json").unwrap();
        assert_eq!(again.normalized.as_deref(), Some(text.as_str()));
        let second = process(text.as_bytes(), "out.json").unwrap();
        assert_eq!(second.normalized.as_deref(), Some(text.as_str()));
        assert!(!second.changed);
    }

    #[test]
    fn flat_layout_is_read_and_normalized() {
        let flat = r#"{"components": [
            {"children": ["title"], "type": "Card", "id": "card"},
            {"id": "title", "type": "Text", "props": {"text": {"$bind": "card.heading"}}},
            {"id": "spare", "type": "Text"}
          ], "root": "card", "version": "a2ui/v1"}"#;
        let p = process(flat.as_bytes(), "flat.json").unwrap();
        let text = p.normalized.unwrap();
        assert!(text.starts_with("{\n  \"version\": \"a2ui/v1\",\n  \"root\": \"card\",\n  \"components\": [\n    {\n      \"id\": \"card\",\n      \"type\": \"Card\",\n      \"children\": [\n        \"title\""), "{text}");
        assert_eq!(p.analysis.components, 3);
        assert_eq!(p.analysis.bindings, 1);
        assert_eq!(p.analysis.unreachable, ["spare"]);
    }

    #[test]
    fn duplicate_ids_are_named() {
        let spec = r#"{"version": "a2ui/v1", "root": {"id": "a", "type": "Card", "children": [
            {"id": "b", "type": "Text"}, {"id": "a", "type": "Text"}, {"id": "b", "type": "Text"},
            {"id": "", "type": "Text"}, {"id": "c"}]}}"#;
        let msg = problems(spec);
        assert!(msg.contains("duplicate component ids: `a`, `b`"), "{msg}");
        assert!(
            msg.contains("`root.children[3]` has an empty `id`"),
            "{msg}"
        );
        assert!(msg.contains("`root.children[4]` has no `type`"), "{msg}");
    }

    #[test]
    fn cycles_are_reported_with_their_path() {
        let flat = r#"{"version": "a2ui/v1", "root": "a", "components": [
            {"id": "a", "type": "Box", "children": ["b"]},
            {"id": "b", "type": "Box", "children": ["c"]},
            {"id": "c", "type": "Box", "children": ["a"]}]}"#;
        let p = process(flat.as_bytes(), "s").unwrap();
        assert_eq!(p.analysis.cycles, ["child cycle: a -> b -> c -> a"]);

        let refs = r#"{"version": "a2ui/v1", "root": {"id": "card", "type": "Card", "children": [
            {"id": "details", "type": "Panel", "props": {"target_ref": "summary"}},
            {"id": "summary", "type": "Text", "props": {"items": [{"ref": "card"}]}}
          ], "props": {"title": {"$bind": "details.title"}}}}"#;
        let p = process(refs.as_bytes(), "s").unwrap();
        assert_eq!(
            p.analysis.cycles,
            ["binding cycle: card -> details -> summary -> card"]
        );
        let own = r#"{"version": "a2ui/v1", "root": {"id": "card", "type": "Card",
            "props": {"label": "Hi {{ card.name }}"}}}"#;
        assert_eq!(problems(own), "binding cycle: card -> card");
    }

    #[test]
    fn missing_references_and_bad_json() {
        let flat = r#"{"version": "a2ui/v1", "root": "a", "components": [
            {"id": "a", "type": "Box", "children": ["ghost"], "props": {"ref": "nobody"}}]}"#;
        let msg = problems(flat);
        assert!(
            msg.contains("component `a` lists child `ghost`, which is not a component id"),
            "{msg}"
        );
        assert!(msg.contains("`props.ref` refers to `nobody`"), "{msg}");
        let msg = problems(r#"{"version": "a2ui/v1", "root": "x", "components": []}"#);
        assert!(msg.contains("`root` is `x`"), "{msg}");
        let msg = problems(r#"{"version": "a2ui/v1"}"#);
        assert!(msg.contains("expected `root`"), "{msg}");

        let err = process(
            b"{\n  \"version\": \"a2ui/v1\",\n  \"root\": {,}\n}",
            "bad.json",
        )
        .unwrap_err();
        assert!(
            err.message.contains("`bad.json` is not valid JSON"),
            "{}",
            err.message
        );
        assert!(err.message.contains("line 3, column 12"), "{}", err.message);
    }

    #[tokio::test]
    async fn invoke_writes_spec_and_report() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("spec.json"), NESTED).unwrap();
        let cancel = CancellationToken::new();
        let ctx = ToolContext {
            workspace: &ws,
            run_id: "test",
            stage_id: "ui",
            tool: "a2ui",
            timeout: Duration::from_secs(10),
            cancel: &cancel,
            spec: None,
            validation: &[],
            description: "",
            confine: None,
        };
        let args =
            map(json!({"input": "spec.json", "output": "dist/spec.json", "report": "dist/r.json"}));
        let out = A2uiTool.invoke(&ctx, &args).await.unwrap();
        assert_eq!(out.outputs["components"], 3);
        assert_eq!(out.outputs["types"], json!(["Button", "Card", "Text"]));
        assert_eq!(out.outputs["bindings"], 2);
        assert_eq!(out.outputs["changed"], true);
        assert_eq!(out.outputs["path"], "dist/spec.json");
        let report: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("dist/r.json")).unwrap())
                .unwrap();
        assert_eq!(report["normalized"], true);
        assert_eq!(report["duplicates"], json!([]));

        std::fs::write(
            dir.path().join("loop.json"),
            r#"{"version": "a2ui/v1", "root": {"id": "a", "type": "T", "props": {"ref": "a"}}}"#,
        )
        .unwrap();
        let args =
            map(json!({"input": "loop.json", "output": "dist/loop.json", "report": "dist/l.json"}));
        let err = A2uiTool.invoke(&ctx, &args).await.unwrap_err();
        assert!(
            err.message.contains("binding cycle: a -> a"),
            "{}",
            err.message
        );
        assert!(!dir.path().join("dist/loop.json").exists());
        let report: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("dist/l.json")).unwrap())
                .unwrap();
        assert_eq!(report["cycles"], json!(["binding cycle: a -> a"]));
        assert_eq!(report["normalized"], false);
    }

    #[test]
    fn inputs_are_checked() {
        let t = A2uiTool;
        let ok = map(json!({"input": "s.json", "output": "o.json", "report": "r.json"}));
        assert!(t.check_inputs(&ok).is_empty());
        let msgs: Vec<String> = t
            .check_inputs(&map(json!({"inptu": "s.json", "report": "../r.json"})))
            .into_iter()
            .map(|i| i.message)
            .collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("unknown input `inptu`")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("`input` input is required")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("`output` input is required")),
            "{msgs:?}"
        );
    }
}
