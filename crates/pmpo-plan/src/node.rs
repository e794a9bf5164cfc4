//! A YAML/JSON document tree that remembers where every node came from.
//!
//! Plans are parsed into this tree first, so that every later error (a type
//! mismatch, an unknown field, a stage that depends on a missing stage) can
//! point at a line and column of the user's file.

use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a source file, both 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

/// One node of the document.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: NodeKind,
    /// Where the node starts; `None` for documents that came without positions.
    pub pos: Option<Pos>,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    /// A scalar as written; typed on demand (a plain `12` is an integer
    /// when a number is wanted and the string "12" when a string is wanted).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// What a scalar resolves to under YAML 1.2's core schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Node {
    pub fn resolve(&self) -> Option<Resolved<'_>> {
        match &self.kind {
            NodeKind::Scalar { text, plain } => Some(if *plain {
                resolve_plain(text)
            } else {
                Resolved::Str(text)
            }),
            _ => None,
        }
    }

    /// Describes the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.resolve() {
            Some(Resolved::Null) => "null",
            Some(Resolved::Bool(_)) => "a boolean",
            Some(Resolved::Int(_)) => "an integer",
            Some(Resolved::Float(_)) => "a number",
            Some(Resolved::Str(_)) => "a string",
            None => match self.kind {
                NodeKind::Seq(_) => "a list",
                _ => "a mapping",
            },
        }
    }

    /// Looks up a child by a path of mapping keys and sequence indexes.
    pub fn get_path<'a>(&'a self, path: &[PathSeg<'_>]) -> Option<&'a Node> {
        let mut node = self;
        for seg in path {
            node = match (seg, &node.kind) {
                (PathSeg::Key(k), NodeKind::Map(entries)) => entries
                    .iter()
                    .find(
                        |(key, _)| matches!(&key.kind, NodeKind::Scalar { text, .. } if text == k),
                    )
                    .map(|(_, v)| v)?,
                (PathSeg::Index(i), NodeKind::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Like [`Node::get_path`] but for a mapping key: the position of the key itself.
    pub fn key_pos(&self, path: &[PathSeg<'_>], key: &str) -> Option<Pos> {
        match &self.get_path(path)?.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.kind, NodeKind::Scalar { text, .. } if text == key))
                .and_then(|(k, _)| k.pos),
            _ => None,
        }
    }

    /// The dotted path (`plan.stages[2].with`) of the innermost node that starts at `pos`.
    pub fn path_to(&self, pos: Pos) -> Option<String> {
        fn walk(node: &Node, pos: Pos, path: &mut String) -> bool {
            match &node.kind {
                NodeKind::Scalar { .. } => node.pos == Some(pos),
                NodeKind::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        if walk(item, pos, path) {
                            return true;
                        }
                        path.truncate(len);
                    }
                    node.pos == Some(pos)
                }
                NodeKind::Map(entries) => {
                    for (k, v) in entries {
                        let name = match &k.kind {
                            NodeKind::Scalar { text, .. } => text.as_str(),
                            _ => "?",
                        };
                        let len = path.len();
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(name);
                        if k.pos == Some(pos) || walk(v, pos, path) {
                            return true;
                        }
                        path.truncate(len);
                    }
                    node.pos == Some(pos)
                }
            }
        }
        let mut path = String::new();
        walk(self, pos, &mut path)
            .then_some(path)
            .filter(|p| !p.is_empty())
    }

    /// The tree as JSON, the document as written: scalars typed as YAML's
    /// core schema types them (the inverse of [`Node::from_json`]); a key
    /// that is not a scalar is left out.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Map, Value, json};
        match &self.kind {
            NodeKind::Scalar { text, .. } => match self.resolve() {
                Some(Resolved::Null) => Value::Null,
                Some(Resolved::Bool(b)) => json!(b),
                Some(Resolved::Int(i)) => json!(i),
                Some(Resolved::Float(f)) => json!(f),
                Some(Resolved::Str(s)) => json!(s),
                None => json!(text),
            },
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(pairs) => {
                let mut m = Map::new();
                for (k, v) in pairs {
                    if let NodeKind::Scalar { text, .. } = &k.kind {
                        m.insert(text.clone(), v.to_json());
                    }
                }
                Value::Object(m)
            }
        }
    }

    /// Builds a position-less tree from a JSON value.
    pub fn from_json(value: &serde_json::Value) -> Node {
        use serde_json::Value;
        let kind = match value {
            Value::Null => NodeKind::Scalar {
                text: "null".into(),
                plain: true,
            },
            Value::Bool(b) => NodeKind::Scalar {
                text: b.to_string(),
                plain: true,
            },
            Value::Number(n) => NodeKind::Scalar {
                text: n.to_string(),
                plain: true,
            },
            Value::String(s) => NodeKind::Scalar {
                text: s.clone(),
                plain: false,
            },
            Value::Array(items) => NodeKind::Seq(items.iter().map(Node::from_json).collect()),
            Value::Object(map) => NodeKind::Map(
                map.iter()
                    .map(|(k, v)| {
                        (
                            Node {
                                kind: NodeKind::Scalar {
                                    text: k.clone(),
                                    plain: false,
                                },
                                pos: None,
                            },
                            Node::from_json(v),
                        )
                    })
                    .collect(),
            ),
        };
        Node { kind, pos: None }
    }
}

/// One step of a path into a document.
#[derive(Clone, Copy, Debug)]
pub enum PathSeg<'a> {
    Key(&'a str),
    Index(usize),
}

fn resolve_plain(text: &str) -> Resolved<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.' {
        if let Some(hex) = text.strip_prefix("0x") {
            if let Ok(i) = i64::from_str_radix(hex, 16) {
                return Resolved::Int(i);
            }
        } else if let Some(oct) = text.strip_prefix("0o") {
            if let Ok(i) = i64::from_str_radix(oct, 8) {
                return Resolved::Int(i);
            }
        } else if let Ok(i) = text.parse::<i64>() {
            return Resolved::Int(i);
        } else if text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            && let Ok(f) = text.parse::<f64>()
        {
            return Resolved::Float(f);
        }
    }
    Resolved::Str(text)
}

/// A syntax error found while parsing, with its position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: String,
    pub pos: Option<Pos>,
}

/// Most nodes that aliases may add to one document, counted before anything
/// is copied: a guard against "billion laughs" documents. Raised with
/// `PMPO_YAML_MAX_ALIAS_NODES`.
pub const MAX_ALIAS_NODES: usize = 200_000;
/// Deepest nesting of sequences and mappings in one document: deeper trees
/// would exhaust the stack of every recursive reader after the parser.
/// Raised with `PMPO_YAML_MAX_DEPTH` (up to 10,000).
pub const MAX_DEPTH: usize = 256;

fn limit(var: &str, default: usize, most: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(default, |n| n.clamp(1, most))
}

/// Parses a single YAML (or JSON) document into a [`Node`] tree.
pub fn parse_yaml(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder {
        max_depth: limit("PMPO_YAML_MAX_DEPTH", MAX_DEPTH, 10_000),
        max_alias_nodes: limit("PMPO_YAML_MAX_ALIAS_NODES", MAX_ALIAS_NODES, usize::MAX),
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    // Events are pulled one by one: the parser's own `load` recurses once per
    // level of nesting, and a deep document would overflow the stack before
    // the depth limit could refuse it.
    loop {
        let (ev, mark) = match parser.next_token() {
            Ok(x) => x,
            Err(e) => {
                let m = *e.marker();
                let info = e.info().to_string();
                return Err(SyntaxError {
                    message: format!("YAML syntax error: {info}"),
                    pos: Some(m.into()),
                });
            }
        };
        let end = ev == Event::StreamEnd;
        builder.on_event(ev, mark);
        if end || builder.error.is_some() {
            break;
        }
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    match builder.documents {
        0 => Err(SyntaxError {
            message: "the file is empty: expected a mapping with `plan:`".into(),
            pos: None,
        }),
        1 => builder.root.ok_or_else(|| SyntaxError {
            message: "the document is empty".into(),
            pos: None,
        }),
        _ => Err(SyntaxError {
            message: "the file holds more than one YAML document (`---`); a plan is one document"
                .into(),
            pos: builder.second_doc_pos,
        }),
    }
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Node, usize)>,
    /// Pending mapping key per open mapping.
    keys: Vec<Option<Node>>,
    anchors: std::collections::HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    second_doc_pos: Option<Pos>,
    error: Option<SyntaxError>,
    /// Nodes added by aliases so far.
    alias_nodes: usize,
    max_depth: usize,
    max_alias_nodes: usize,
}

/// Counts a subtree's nodes, stopping as soon as the count passes `budget`
/// (the tree's depth is bounded by the parser's depth limit).
fn count_nodes(node: &Node, budget: usize) -> usize {
    let mut n = 1;
    match &node.kind {
        NodeKind::Scalar { .. } => {}
        NodeKind::Seq(items) => {
            for item in items {
                n += count_nodes(item, budget.saturating_sub(n));
                if n > budget {
                    break;
                }
            }
        }
        NodeKind::Map(entries) => {
            for (k, v) in entries {
                n += count_nodes(k, budget.saturating_sub(n));
                n += count_nodes(v, budget.saturating_sub(n));
                if n > budget {
                    break;
                }
            }
        }
    }
    n
}

impl Builder {
    /// Refuses one more level of nesting past the limit.
    fn too_deep(&mut self, pos: Option<Pos>) -> bool {
        if self.stack.len() < self.max_depth {
            return false;
        }
        self.error = Some(SyntaxError {
            message: format!(
                "the document nests sequences and mappings more than {} levels deep; the limit is PMPO_YAML_MAX_DEPTH",
                self.max_depth
            ),
            pos,
        });
        true
    }

    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some((parent, _)) => match &mut parent.kind {
                NodeKind::Seq(items) => items.push(node),
                NodeKind::Map(entries) => {
                    let slot = self.keys.last_mut().expect("a key slot per open mapping");
                    match slot.take() {
                        None => *slot = Some(node),
                        Some(key) => {
                            if let NodeKind::Scalar { text, .. } = &key.kind
                                && entries.iter().any(|(k, _)| matches!(&k.kind, NodeKind::Scalar { text: t, .. } if t == text))
                                && self.error.is_none()
                            {
                                self.error = Some(SyntaxError {
                                    message: format!("duplicate key `{text}` in this mapping"),
                                    pos: key.pos,
                                });
                            }
                            entries.push((key, node));
                        }
                    }
                }
                NodeKind::Scalar { .. } => unreachable!("scalars are never open containers"),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Some(Pos::from(mark));
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    self.second_doc_pos = pos;
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = matches!(style, TScalarStyle::Plain);
                self.push_value(
                    Node {
                        kind: NodeKind::Scalar { text, plain },
                        pos,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => {
                if self.too_deep(pos) {
                    return;
                }
                self.stack.push((
                    Node {
                        kind: NodeKind::Seq(Vec::new()),
                        pos,
                    },
                    anchor,
                ));
            }
            Event::MappingStart(anchor, _) => {
                if self.too_deep(pos) {
                    return;
                }
                self.stack.push((
                    Node {
                        kind: NodeKind::Map(Vec::new()),
                        pos,
                    },
                    anchor,
                ));
                self.keys.push(None);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if matches!(ev, Event::MappingEnd) {
                    self.keys.pop();
                }
                if let Some((mut node, anchor)) = self.stack.pop() {
                    // A block mapping's start mark lies after its first key; point at the key.
                    if let NodeKind::Map(entries) = &node.kind
                        && let Some(first) = entries.first().and_then(|(k, _)| k.pos)
                        && node.pos.is_none_or(|p| first < p)
                    {
                        node.pos = Some(first);
                    }
                    self.push_value(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    // Counted before it is copied: a refused expansion allocates nothing.
                    let left = self.max_alias_nodes.saturating_sub(self.alias_nodes);
                    self.alias_nodes += count_nodes(node, left);
                    if self.alias_nodes > self.max_alias_nodes {
                        self.error = Some(SyntaxError {
                            message: format!(
                                "the document expands to more than {} nodes through aliases (`*name`); the limit is PMPO_YAML_MAX_ALIAS_NODES",
                                self.max_alias_nodes
                            ),
                            pos,
                        });
                        return;
                    }
                    let mut node = node.clone();
                    node.pos = pos;
                    self.push_value(node, 0);
                }
                None => {
                    self.error = Some(SyntaxError {
                        message: "alias to an unknown anchor".into(),
                        pos,
                    });
                }
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_resolve_by_core_schema() {
        assert_eq!(resolve_plain("12"), Resolved::Int(12));
        assert_eq!(resolve_plain("-3"), Resolved::Int(-3));
        assert_eq!(resolve_plain("1.5"), Resolved::Float(1.5));
        assert_eq!(resolve_plain("true"), Resolved::Bool(true));
        assert_eq!(resolve_plain("~"), Resolved::Null);
        assert_eq!(resolve_plain("30s"), Resolved::Str("30s"));
        assert_eq!(resolve_plain("1.2.3"), Resolved::Str("1.2.3"));
        assert_eq!(resolve_plain("-"), Resolved::Str("-"));
    }

    #[test]
    fn a_document_as_written_becomes_json_and_back() {
        let root =
            parse_yaml("s:\n  - {sandbox: false, n: 3, f: 1.5, none: ~, t: 30s, q: 'true'}\n")
                .unwrap();
        let v = root.to_json();
        assert_eq!(
            v,
            serde_json::json!({"s": [{"sandbox": false, "n": 3, "f": 1.5, "none": null,
                                      "t": "30s", "q": "true"}]})
        );
        assert_eq!(Node::from_json(&v).to_json(), v);
    }

    #[test]
    fn positions_and_paths() {
        let root = parse_yaml("plan:\n  stages:\n    - id: a\n      tool: run\n").unwrap();
        let tool = root
            .get_path(&[
                PathSeg::Key("plan"),
                PathSeg::Key("stages"),
                PathSeg::Index(0),
                PathSeg::Key("tool"),
            ])
            .unwrap();
        assert_eq!(
            tool.pos,
            Some(Pos {
                line: 4,
                column: 13
            })
        );
        assert_eq!(
            root.path_to(tool.pos.unwrap()).as_deref(),
            Some("plan.stages[0].tool")
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse_yaml("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(err.message.contains("duplicate key `a`"), "{}", err.message);
        assert_eq!(err.pos, Some(Pos { line: 3, column: 1 }));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            doc.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let t = std::time::Instant::now();
        let err = parse_yaml(&doc).unwrap_err();
        assert_eq!(
            err.message,
            "the document expands to more than 200000 nodes through aliases (`*name`); the limit is PMPO_YAML_MAX_ALIAS_NODES"
        );
        assert_eq!(err.pos.map(|p| p.line), Some(6));
        // Refused while counting, long before a billion nodes could be built.
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // Block style: the parser itself does not recurse, the limit stops it.
        let block = format!("plan:\n  stages:\n    - {}x\n", "- ".repeat(20_000));
        let err = parse_yaml(&block).unwrap_err();
        assert!(
            err.message
                .starts_with("the document nests sequences and mappings more than 256 levels deep"),
            "{}",
            err.message
        );
        assert_eq!(err.pos.map(|p| p.line), Some(3));
        // Flow style: the parser's own recursion limit answers first.
        let flow = format!("a: {}x{}\n", "[".repeat(20_000), "]".repeat(20_000));
        assert!(parse_yaml(&flow).is_err());
        let ok = format!("plan:\n  stages:\n    - {}x\n", "- ".repeat(200));
        assert!(parse_yaml(&ok).is_ok());
    }

    #[test]
    fn several_documents_are_refused() {
        let err = parse_yaml("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.message.contains("more than one YAML document"));
    }
}
