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
//! Two layouts are read. Nested: `{version, metadata, root}` where `root` is
//! a component `{id, type, props, children: [components]}`. Flat:
//! `{version, metadata, components: [{id, type, props, children: [ids]}],
//! root: "id"}`.
//!
//! In `props` (at any depth), a data binding is an object with a `$bind`
//! path (`{"$bind": "user.name"}`) or a `{{path}}` inside a text; a prop
//! named `ref` or ending in `_ref` names another component by id. A binding
//! whose path starts with a component id (`details.label`) refers to that
//! component.
//!
//! The stage fails, naming what is wrong, when a component lacks a non-empty
//! `id` or `type`, ids repeat, a child or `ref` names no component, or
//! components refer to each other in a loop (`binding cycle: card -> details
//! -> card`; in the flat layout also `child cycle: a -> b -> a`). The report,
//! when asked for, is written either way.
//!
//! Normalization orders keys: the top level as `version, metadata, root,
//! components`, then the rest sorted; a component as `id, type, props,
//! children`, then the rest sorted; keys inside `props`, `metadata` and other
//! values sorted at every depth. Arrays keep their order. The text is pretty
//! JSON (2-space indent) with a trailing newline.
//!
//! Named outputs: `components` (count), `types` (sorted, unique), `bindings`
//! (count), `changed` (whether the input text differs from the normalized
//! text), `path` (the normalized spec).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use async_trait::async_trait;
use pmpo_plan::InputIssue;
use pmpo_store::Durability;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::inputs::{invalid, io_error, read_file};
use crate::typed::{self, Text};
use crate::{Captured, Termination, Tool, ToolContext, ToolError, ToolOutcome};

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
}

/// Component keys that come first, in this order.
const COMPONENT_KEYS: &[&str] = &["id", "type", "props", "children"];
/// Top-level keys that come first, in this order.
const TOP_KEYS: &[&str] = &["version", "metadata", "root", "components"];

pub struct A2uiTool;

/// Which of the two layouts a spec uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `root` is a component holding its children.
    Nested,
    /// `components` lists every component; children and `root` are ids.
    Flat,
}

/// What checking a spec found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Analysis {
    pub components: usize,
    pub types: Vec<String>,
    pub bindings: usize,
    /// Ids used by more than one component.
    pub duplicates: Vec<String>,
    /// Each loop as `KIND cycle: a -> b -> a`.
    pub cycles: Vec<String>,
    /// Every other problem (missing ids or types, unknown children, ...).
    pub errors: Vec<String>,
    /// Components of the flat layout that the root does not reach.
    pub unreachable: Vec<String>,
}

impl Analysis {
    /// Whether the spec can be normalized (no problem was found).
    pub fn is_valid(&self) -> bool {
        self.duplicates.is_empty() && self.cycles.is_empty() && self.errors.is_empty()
    }

    /// Every problem, as sentences.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.duplicates.is_empty() {
            let names: Vec<String> = self.duplicates.iter().map(|d| format!("`{d}`")).collect();
            out.push(format!("duplicate component ids: {}", names.join(", ")));
        }
        out.extend(self.cycles.iter().cloned());
        out.extend(self.errors.iter().cloned());
        out
    }
}

/// One component as read from the spec.
struct Node<'a> {
    /// Empty when the component has no usable id.
    id: &'a str,
    /// Where it is, for messages: `root.children[1]`, `components[3]`.
    at: String,
    props: Option<&'a Map<String, Value>>,
    /// Child ids, in order (in the nested layout, those of the child components).
    children: Vec<&'a str>,
}

impl Node<'_> {
    fn name(&self) -> String {
        if self.id.is_empty() {
            format!("the component at `{}`", self.at)
        } else {
            format!("component `{}`", self.id)
        }
    }
}

/// A non-empty text field of a component, or an error.
fn text_field<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    at: &str,
    errors: &mut Vec<String>,
) -> &'a str {
    match m.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) => {
            errors.push(format!("the component at `{at}` has an empty `{key}`"));
            ""
        }
        Some(_) => {
            errors.push(format!(
                "the `{key}` of the component at `{at}` must be text"
            ));
            ""
        }
        None => {
            errors.push(format!("the component at `{at}` has no `{key}`"));
            ""
        }
    }
}

/// Reads the components of a spec, in document order.
fn collect<'a>(
    v: &'a Value,
    at: String,
    layout: Layout,
    nodes: &mut Vec<Node<'a>>,
    types: &mut BTreeSet<String>,
    errors: &mut Vec<String>,
) {
    let Value::Object(m) = v else {
        errors.push(format!("`{at}` must be a component (an object)"));
        return;
    };
    let id = text_field(m, "id", &at, errors);
    let ty = text_field(m, "type", &at, errors);
    if !ty.is_empty() {
        types.insert(ty.to_string());
    }
    let props = match m.get("props") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(p),
        Some(_) => {
            errors.push(format!(
                "the `props` of the component at `{at}` must be an object"
            ));
            None
        }
    };
    let index = nodes.len();
    nodes.push(Node {
        id,
        at: at.clone(),
        props,
        children: Vec::new(),
    });
    let children = match m.get("children") {
        None | Some(Value::Null) => return,
        Some(Value::Array(c)) => c,
        Some(_) => {
            errors.push(format!(
                "the `children` of the component at `{at}` must be a list"
            ));
            return;
        }
    };
    for (i, child) in children.iter().enumerate() {
        let child_at = format!("{at}.children[{i}]");
        match (layout, child) {
            (Layout::Flat, Value::String(s)) => nodes[index].children.push(s),
            (Layout::Flat, _) => errors.push(format!(
                "`{child_at}` must be a component id: the flat layout lists children by id"
            )),
            (Layout::Nested, Value::String(_)) => errors.push(format!(
                "`{child_at}` is an id, but the nested layout holds the child components themselves"
            )),
            (Layout::Nested, _) => {
                let child_id = child.get("id").and_then(Value::as_str).unwrap_or("");
                nodes[index].children.push(child_id);
                collect(child, child_at, layout, nodes, types, errors);
            }
        }
    }
}

/// The references in a component's props: `(key path, component id)` for
/// `ref`/`*_ref` props, and the paths of its bindings.
fn scan_props<'a>(
    v: &'a Value,
    path: &str,
    refs: &mut Vec<(String, &'a str)>,
    bindings: &mut Vec<String>,
) {
    match v {
        Value::Object(m) => {
            if let Some(bind) = m.get("$bind") {
                bindings.push(bind.as_str().unwrap_or("").trim().to_string());
                return;
            }
            for (k, child) in m {
                let child_path = format!("{path}.{k}");
                if (k == "ref" || k.ends_with("_ref"))
                    && let Value::String(id) = child
                {
                    refs.push((child_path, id));
                } else {
                    scan_props(child, &child_path, refs, bindings);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                scan_props(item, &format!("{path}[{i}]"), refs, bindings);
            }
        }
        Value::String(s) => bindings.extend(text_bindings(s)),
        _ => {}
    }
}

/// The paths of the `{{path}}` bindings in a text.
fn text_bindings(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let inner = after[..end].trim();
        if !inner.is_empty() && !inner.contains('{') {
            out.push(inner.to_string());
        }
        rest = &after[end + 2..];
    }
    out
}

/// The first segment of a binding path (`details` of `details.label[0]`).
fn path_head(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

/// Loops of a directed graph, each as the node path from where it was
/// entered back to it (`[a, b, a]`), each loop once. Deterministic: nodes and
/// edges are visited in their given order.
fn find_cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; edges.len()];
    let mut seen = BTreeSet::new();
    let mut cycles = Vec::new();
    for start in 0..edges.len() {
        if state[start] != NEW {
            continue;
        }
        state[start] = OPEN;
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            let Some(&to) = edges[node].get(next) else {
                state[node] = DONE;
                stack.pop();
                continue;
            };
            top.1 += 1;
            match state[to] {
                NEW => {
                    state[to] = OPEN;
                    stack.push((to, 0));
                }
                OPEN => {
                    let from = stack.iter().position(|(v, _)| *v == to).unwrap_or(0);
                    let mut path: Vec<usize> = stack[from..].iter().map(|(v, _)| *v).collect();
                    // The same loop entered elsewhere is the same rotation set.
                    let mut key = path.clone();
                    let min = key.iter().enumerate().min_by_key(|(_, v)| **v);
                    if let Some((i, _)) = min {
                        key.rotate_left(i);
                    }
                    if seen.insert(key) {
                        path.push(to);
                        cycles.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    cycles
}

/// Checks a parsed spec.
pub fn analyze(doc: &Value) -> (Option<Layout>, Analysis) {
    let mut a = Analysis::default();
    let Value::Object(top) = doc else {
        a.errors
            .push("an A2UI specification must be a JSON object".to_string());
        return (None, a);
    };
    match top.get("version") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        Some(_) => a
            .errors
            .push("`version` must be a non-empty text (`a2ui/v1`)".into()),
        None => a.errors.push("`version` is missing (`a2ui/v1`)".into()),
    }
    if let Some(m) = top.get("metadata")
        && !m.is_object()
    {
        a.errors.push("`metadata` must be an object".into());
    }
    let mut nodes = Vec::new();
    let mut types = BTreeSet::new();
    let layout = match (top.get("root"), top.get("components")) {
        (Some(root @ Value::Object(_)), None) => {
            collect(
                root,
                "root".into(),
                Layout::Nested,
                &mut nodes,
                &mut types,
                &mut a.errors,
            );
            Layout::Nested
        }
        (root, Some(Value::Array(list))) => {
            for (i, c) in list.iter().enumerate() {
                let at = format!("components[{i}]");
                collect(c, at, Layout::Flat, &mut nodes, &mut types, &mut a.errors);
            }
            if !matches!(root, Some(Value::String(_))) {
                a.errors
                    .push("`root` must be the id of one of `components` in the flat layout".into());
            }
            Layout::Flat
        }
        (_, Some(_)) => {
            a.errors
                .push("`components` must be a list of components".into());
            return (None, a);
        }
        _ => {
            a.errors.push(
                "expected `root` (a component) or `components` (a list of components with a root id)"
                    .into(),
            );
            return (None, a);
        }
    };
    a.components = nodes.len();
    a.types = types.into_iter().collect();

    // Ids: the first component with an id owns it.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut dup_set = BTreeSet::new();
    for (i, n) in nodes.iter().enumerate() {
        if n.id.is_empty() {
            continue;
        }
        if index.contains_key(n.id) {
            if dup_set.insert(n.id) {
                a.duplicates.push(n.id.to_string());
            }
        } else {
            index.insert(n.id, i);
        }
    }

    // Child edges (only the flat layout can loop through children).
    let mut child_edges = vec![Vec::new(); nodes.len()];
    if layout == Layout::Flat {
        for (i, n) in nodes.iter().enumerate() {
            for child in &n.children {
                match index.get(child) {
                    Some(&j) => {
                        if !child_edges[i].contains(&j) {
                            child_edges[i].push(j);
                        }
                    }
                    None => a.errors.push(format!(
                        "{} lists child `{child}`, which is not a component id",
                        n.name()
                    )),
                }
            }
        }
        if let Some(Value::String(root)) = top.get("root") {
            match index.get(root.as_str()) {
                None => a
                    .errors
                    .push(format!("`root` is `{root}`, which is not a component id")),
                Some(&r) => {
                    let mut reached = vec![false; nodes.len()];
                    let mut todo = vec![r];
                    while let Some(i) = todo.pop() {
                        if !std::mem::replace(&mut reached[i], true) {
                            todo.extend(child_edges[i].iter().copied());
                        }
                    }
                    a.unreachable = nodes
                        .iter()
                        .zip(&reached)
                        .filter(|(n, r)| !**r && !n.id.is_empty())
                        .map(|(n, _)| n.id.to_string())
                        .collect();
                }
            }
        }
    }

    // Reference edges: `ref`/`*_ref` props and bindings into a component.
    let mut ref_edges = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let Some(props) = n.props else {
            continue;
        };
        let mut refs = Vec::new();
        let mut bindings = Vec::new();
        for (k, v) in props {
            let path = format!("props.{k}");
            if (k == "ref" || k.ends_with("_ref"))
                && let Value::String(id) = v
            {
                refs.push((path, id.as_str()));
            } else {
                scan_props(v, &path, &mut refs, &mut bindings);
            }
        }
        a.bindings += bindings.len();
        for b in &bindings {
            if b.is_empty() {
                a.errors
                    .push(format!("{} has a binding with no path", n.name()));
            } else if let Some(&j) = index.get(path_head(b))
                && !ref_edges[i].contains(&j)
            {
                ref_edges[i].push(j);
            }
        }
        for (path, id) in refs {
            match index.get(id) {
                Some(&j) => {
                    if !ref_edges[i].contains(&j) {
                        ref_edges[i].push(j);
                    }
                }
                None => a.errors.push(format!(
                    "{}: `{path}` refers to `{id}`, which is not a component id",
                    n.name()
                )),
            }
        }
    }

    let named = |path: Vec<usize>, kind: &str| {
        let ids: Vec<&str> = path.iter().map(|&i| nodes[i].id).collect();
        format!("{kind} cycle: {}", ids.join(" -> "))
    };
    if layout == Layout::Flat {
        for c in find_cycles(&child_edges) {
            a.cycles.push(named(c, "child"));
        }
    }
    for c in find_cycles(&ref_edges) {
        a.cycles.push(named(c, "binding"));
    }
    (Some(layout), a)
}

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
        "components": a.components,
        "types": a.types,
        "bindings": a.bindings,
        "duplicates": a.duplicates,
        "cycles": a.cycles,
        "normalized": p.normalized.is_some(),
        "changed": p.changed,
        "errors": a.errors,
        "unreachable": a.unreachable,
    })
}

#[async_trait]
impl Tool for A2uiTool {
    fn name(&self) -> &'static str {
        "a2ui"
    }
    fn written_paths(&self, inputs: &Map<String, Value>) -> Vec<String> {
        crate::path_inputs(inputs, &["output", "report"])
    }

    fn check_inputs(&self, inputs: &Map<String, Value>) -> Vec<InputIssue> {
        let mut issues = typed::check::<A2uiInputs>(inputs);
        typed::check_patterns(inputs, &["input", "output", "report"], &mut issues);
        issues
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
                    "break the loop: a component may not refer to itself, directly or through others",
                );
            }
            return Err(err);
        };
        ctx.workspace
            .write_atomic(output, normalized.as_bytes(), Durability::Relaxed)
            .map_err(|e| io_error("write", output, e))?;
        let a = &p.analysis;
        let mut notes = Vec::new();
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
        Ok(ToolOutcome {
            termination: Termination::Exited(0),
            stdout: Captured::from_bytes(summary.as_bytes()),
            stderr: Captured::default(),
            duration: started.elapsed(),
            outputs,
            invocation: json!({"input": input, "output": output, "report": report}),
            notes,
            skipped: None,
        })
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
