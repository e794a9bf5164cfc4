//! Checking an A2UI specification: its components, ids, children,
//! references and bindings, and the loops among them.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Map, Value};

/// Which of the two layouts a spec uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `root` is a component holding its children.
    Nested,
    /// `components` lists every component; children and `root` are ids.
    Flat,
}

/// Which of the three formats a spec is written in (see `bindings::is_reference`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// pmpo's nested layout (`$bind` and `{{path}}` bindings in props).
    #[default]
    Nested,
    /// pmpo's flat layout.
    Flat,
    /// The reference format: top-level `bindings`, component `bindings`.
    Reference,
}

/// What checking a spec found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Analysis {
    pub format: Format,
    pub components: usize,
    pub types: Vec<String>,
    pub bindings: usize,
    /// Ids used by more than one component.
    pub duplicates: Vec<String>,
    /// Each loop as `KIND cycle: a -> b -> a`.
    pub cycles: Vec<String>,
    /// References (`ref`, `$ref`) naming no binding, each with where it is.
    pub dangling: Vec<String>,
    /// Every other problem (missing ids or types, unknown children, ...).
    pub errors: Vec<String>,
    /// Components of the flat layout that the root does not reach.
    pub unreachable: Vec<String>,
    /// Reference format: component id -> prop -> what its binding gives
    /// (`{state: value|expression|unresolved, ...}`).
    /// In document order.
    pub resolved: Map<String, Value>,
}

impl Analysis {
    /// Whether the spec can be normalized: no problem was found, other than
    /// dangling binding references (the spec stays whole; their props show
    /// as unresolved, and the report lists them).
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
        out.extend(self.dangling.iter().cloned());
        out.extend(self.errors.iter().cloned());
        out
    }
}

/// One component as read from the spec.
pub(super) struct Node<'a> {
    /// Empty when the component has no usable id.
    pub id: &'a str,
    /// Where it is, for messages: `root.children[1]`, `components[3]`.
    pub at: String,
    props: Option<&'a Map<String, Value>>,
    /// The component's own `bindings` (reference format).
    pub bindings: Option<&'a Map<String, Value>>,
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
    let bindings = match m.get("bindings") {
        None | Some(Value::Null) => None,
        Some(Value::Object(b)) => Some(b),
        Some(_) => {
            errors.push(format!(
                "the `bindings` of the component at `{at}` must be an object of prop -> binding"
            ));
            None
        }
    };
    let index = nodes.len();
    nodes.push(Node {
        id,
        at: at.clone(),
        props,
        bindings,
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

/// The paths of the `{{path}}` bindings in a text (through the one `{{ }}`
/// scanner, with A2UI's path grammar: any text without braces).
fn text_bindings(s: &str) -> Vec<String> {
    pmpo_ai::template::spans(s, |inner| !inner.is_empty() && !inner.contains(['{', '}']))
        .into_iter()
        .map(|(path, _)| path)
        .collect()
}

/// The first segment of a binding path (`details` of `details.label[0]`).
fn path_head(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

/// Loops of a directed graph, each as the node path from where it was
/// entered back to it (`[a, b, a]`), each loop once. Deterministic: nodes and
/// edges are visited in their given order.
pub(super) fn find_cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
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
    check_header(top, &mut a);
    let mut nodes = Vec::new();
    let Some(layout) = read_components(top, &mut nodes, &mut a) else {
        return (None, a);
    };
    let index = index_ids(&nodes, &mut a);
    let child_edges = if layout == Layout::Flat {
        flat_children(top, &nodes, &index, &mut a)
    } else {
        Vec::new()
    };
    // The same order as the a2ui adapter's schema: bindings first.
    a.format = if super::bindings::is_reference(top) {
        Format::Reference
    } else if layout == Layout::Flat {
        Format::Flat
    } else {
        Format::Nested
    };
    // In the reference format props are plain values: references go
    // through `bindings`.
    let ref_edges = if a.format == Format::Reference {
        super::bindings::check(top, &nodes, &mut a);
        Vec::new()
    } else {
        reference_edges(&nodes, &index, &mut a)
    };
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

/// `version` and `metadata`.
fn check_header(top: &Map<String, Value>, a: &mut Analysis) {
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
}

/// Reads every component of either layout into `nodes` (and the count and
/// types into `a`); `None` when the spec has neither layout.
fn read_components<'a>(
    top: &'a Map<String, Value>,
    nodes: &mut Vec<Node<'a>>,
    a: &mut Analysis,
) -> Option<Layout> {
    let mut types = BTreeSet::new();
    let layout = match (top.get("root"), top.get("components")) {
        (Some(root @ Value::Object(_)), None) => {
            collect(
                root,
                "root".into(),
                Layout::Nested,
                nodes,
                &mut types,
                &mut a.errors,
            );
            Layout::Nested
        }
        (root, Some(Value::Array(list))) => {
            for (i, c) in list.iter().enumerate() {
                let at = format!("components[{i}]");
                collect(c, at, Layout::Flat, nodes, &mut types, &mut a.errors);
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
            return None;
        }
        _ => {
            a.errors.push(
                "expected `root` (a component) or `components` (a list of components with a root id)"
                    .into(),
            );
            return None;
        }
    };
    a.components = nodes.len();
    a.types = types.into_iter().collect();
    Some(layout)
}

/// Ids: the first component with an id owns it; the others are duplicates.
fn index_ids<'a>(nodes: &[Node<'a>], a: &mut Analysis) -> HashMap<&'a str, usize> {
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
    index
}

/// Child edges of the flat layout (the only one that can loop through
/// children), and what the root does not reach.
fn flat_children(
    top: &Map<String, Value>,
    nodes: &[Node<'_>],
    index: &HashMap<&str, usize>,
    a: &mut Analysis,
) -> Vec<Vec<usize>> {
    let mut child_edges = vec![Vec::new(); nodes.len()];
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
    child_edges
}

/// Reference edges: `ref`/`*_ref` props and bindings into a component.
fn reference_edges(
    nodes: &[Node<'_>],
    index: &HashMap<&str, usize>,
    a: &mut Analysis,
) -> Vec<Vec<usize>> {
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
    ref_edges
}
