//! The bindings of the reference format: a top-level map of binding id ->
//! `{kind: literal|ref|expression, ...}`, and components whose `bindings`
//! map a prop to a literal or to `{"$ref": binding-id}`.
//!
//! Edges between bindings: a `ref` binding points at its `ref`; an
//! `expression` binding points at every binding whose id appears in its
//! expression as a word (a run of letters, digits and `_`), except words
//! inside quotes ('...', "..." or `...`) and words right after a `.`
//! (`user.count` names the field `count`, not the binding `count`). A loop
//! among these edges is a cycle; a `ref` or `$ref` naming no binding is a
//! dangling reference.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::analysis::{Analysis, Node, find_cycles};

/// Whether a spec is in the reference format: it has a top-level `bindings`
/// key, or a component of its `root` tree has a `bindings` key.
pub fn is_reference(top: &Map<String, Value>) -> bool {
    fn has_bindings(v: &Value) -> bool {
        let Value::Object(m) = v else {
            return false;
        };
        m.contains_key("bindings")
            || m.get("children")
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(has_bindings))
    }
    top.contains_key("bindings") || top.get("root").is_some_and(has_bindings)
}

/// What one top-level binding says (`None`: the field it needs is missing).
enum Kind<'a> {
    Literal(Option<&'a Value>),
    Ref(Option<&'a str>),
    Expression(Option<&'a str>),
    /// Not an object, or no known `kind`.
    Broken,
}

/// The top-level bindings, in document order, with a problem for each one
/// that is not usable.
fn read_defs<'a>(top: &'a Map<String, Value>, a: &mut Analysis) -> Vec<(&'a str, Kind<'a>)> {
    let defs = match top.get("bindings") {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            a.errors
                .push("`bindings` must be an object of binding id -> {kind, ...}".into());
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (id, v) in defs {
        let at = format!("bindings.{id}");
        let kind = v.get("kind").and_then(Value::as_str);
        let field = |name: &str| v.get(name);
        let k = match kind {
            Some("literal") => Kind::Literal(field("value")),
            Some("ref") => Kind::Ref(field("ref").and_then(Value::as_str)),
            Some("expression") => Kind::Expression(field("expression").and_then(Value::as_str)),
            _ => Kind::Broken,
        };
        let (needs, missing) = match &k {
            Kind::Literal(v) => ("value", v.is_none()),
            Kind::Ref(r) => ("ref", r.is_none()),
            Kind::Expression(e) => ("expression", e.is_none()),
            Kind::Broken => ("", true),
        };
        if matches!(k, Kind::Broken) {
            a.errors.push(format!(
                "`{at}` must be an object whose `kind` is `literal`, `ref` or `expression`"
            ));
        } else if missing {
            a.errors.push(format!(
                "`{at}` is of kind `{}` but has no `{needs}`{}",
                kind.unwrap_or_default(),
                if needs == "value" { "" } else { " text" }
            ));
        }
        out.push((id.as_str(), k));
    }
    out
}

/// The binding ids an expression names (see the module's rule).
fn expression_words(expr: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut quote: Option<char> = None;
    let mut start: Option<usize> = None;
    let mut prev = ' ';
    let mut after_dot = false;
    for (i, c) in expr.char_indices().chain([(expr.len(), ' ')]) {
        let word_char = c.is_ascii_alphanumeric() || c == '_';
        if let Some(s) = start
            && !word_char
        {
            if !after_dot && !expr[s..].starts_with(|d: char| d.is_ascii_digit()) {
                words.push(&expr[s..i]);
            }
            start = None;
        }
        match quote {
            Some(q) if c == q && prev != '\\' => quote = None,
            Some(_) => {}
            None if matches!(c, '\'' | '"' | '`') => quote = Some(c),
            None if word_char && start.is_none() => {
                start = Some(i);
                after_dot = prev == '.';
            }
            None => {}
        }
        prev = c;
    }
    words
}

/// Follows a binding to what it finally gives: `{state: value, value, via}`,
/// `{state: expression, expression, via}` or `{state: unresolved, reason, via}`.
fn resolve(start: &str, defs: &[(&str, Kind<'_>)], index: &HashMap<&str, usize>) -> Value {
    let mut via: Vec<&str> = Vec::new();
    let mut cur = start;
    loop {
        if via.contains(&cur) {
            via.push(cur);
            let reason = format!("binding cycle: {}", via.join(" -> "));
            return json!({"state": "unresolved", "reason": reason, "via": via});
        }
        via.push(cur);
        let Some(&i) = index.get(cur) else {
            let reason = format!("`{cur}` is not defined in `bindings`");
            return json!({"state": "unresolved", "reason": reason, "via": via});
        };
        match &defs[i].1 {
            Kind::Literal(Some(v)) => return json!({"state": "value", "value": v, "via": via}),
            Kind::Expression(Some(e)) => {
                return json!({"state": "expression", "expression": e, "via": via});
            }
            Kind::Ref(Some(next)) => cur = next,
            _ => {
                let reason = format!("binding `{cur}` is incomplete");
                return json!({"state": "unresolved", "reason": reason, "via": via});
            }
        }
    }
}

/// Checks the bindings of a reference-format spec: cycles, dangling
/// references, and each component prop resolved to what it shows.
pub fn check(top: &Map<String, Value>, nodes: &[Node<'_>], a: &mut Analysis) {
    let defs = read_defs(top, a);
    let index: HashMap<&str, usize> = defs.iter().enumerate().map(|(i, d)| (d.0, i)).collect();
    let mut edges = vec![Vec::new(); defs.len()];
    for (i, (id, kind)) in defs.iter().enumerate() {
        let targets = match kind {
            Kind::Ref(Some(to)) => {
                if !index.contains_key(to) {
                    a.dangling.push(format!(
                        "`bindings.{id}.ref` names binding `{to}`, which is not defined in `bindings`"
                    ));
                }
                vec![*to]
            }
            Kind::Expression(Some(e)) => expression_words(e),
            _ => Vec::new(),
        };
        for t in targets {
            if let Some(&j) = index.get(t)
                && !edges[i].contains(&j)
            {
                edges[i].push(j);
            }
        }
    }
    for c in find_cycles(&edges) {
        let ids: Vec<&str> = c.iter().map(|&i| defs[i].0).collect();
        a.cycles
            .push(format!("binding cycle: {}", ids.join(" -> ")));
    }
    for n in nodes {
        let Some(map) = n.bindings else {
            continue;
        };
        for (prop, v) in map {
            a.bindings += 1;
            let at = format!("{}.bindings.{prop}", n.at);
            let shown = match v {
                Value::Object(o) => match o.get("$ref").and_then(Value::as_str) {
                    Some(to) if o.len() == 1 => {
                        if !index.contains_key(to) {
                            a.dangling.push(format!(
                                "`{at}` refers to binding `{to}`, which is not defined in `bindings`"
                            ));
                        }
                        resolve(to, &defs, &index)
                    }
                    _ => {
                        a.errors.push(format!(
                            "`{at}` must be a literal or {{\"$ref\": binding-id}} (an object with only `$ref`)"
                        ));
                        json!({"state": "unresolved", "reason": "not a binding reference"})
                    }
                },
                Value::Array(_) => {
                    a.errors.push(format!(
                        "`{at}` must be a text, a number, true/false, null or {{\"$ref\": binding-id}}, not a list"
                    ));
                    json!({"state": "unresolved", "reason": "a list is not a binding"})
                }
                literal => json!({"state": "value", "value": literal}),
            };
            if !n.id.is_empty() {
                let props = a.resolved.entry(n.id).or_insert_with(|| json!({}));
                if let Value::Object(m) = props {
                    m.insert(prop.clone(), shown);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Format, process};
    use super::*;

    /// A reference-format spec with these top-level bindings and a root
    /// whose second child binds `label` to `bind`.
    fn spec(bindings: Value, bind: Value) -> String {
        json!({"version": "a2ui/v1", "bindings": bindings, "root": {"id": "card", "type": "Card",
            "children": [
                {"id": "title", "type": "Text", "bindings": {"text": "Hello"}},
                {"id": "go", "type": "Button", "bindings": {"label": bind}}]}})
        .to_string()
    }

    fn analysis(text: &str) -> Analysis {
        process(text.as_bytes(), "spec.json").unwrap().analysis
    }

    #[test]
    fn ref_cycles_self_loops_and_long_chains() {
        let a = analysis(&spec(
            json!({"a": {"kind": "ref", "ref": "b"}, "b": {"kind": "ref", "ref": "a"}}),
            json!({"$ref": "a"}),
        ));
        assert_eq!(a.format, Format::Reference);
        assert_eq!(a.cycles, ["binding cycle: a -> b -> a"]);
        assert!(!a.is_valid());
        assert_eq!(
            a.resolved["go"]["label"],
            json!({"state": "unresolved", "reason": "binding cycle: a -> b -> a", "via": ["a", "b", "a"]})
        );
        let a = analysis(&spec(json!({"me": {"kind": "ref", "ref": "me"}}), json!(1)));
        assert_eq!(a.cycles, ["binding cycle: me -> me"]);
        let a = analysis(&spec(
            json!({"w": {"kind": "ref", "ref": "x"}, "x": {"kind": "ref", "ref": "y"},
                   "y": {"kind": "ref", "ref": "z"}, "z": {"kind": "ref", "ref": "x"}}),
            json!({"$ref": "w"}),
        ));
        assert_eq!(a.cycles, ["binding cycle: x -> y -> z -> x"]);
    }

    #[test]
    fn expressions_are_edges() {
        let a = analysis(&spec(
            json!({"total": {"kind": "expression", "expression": "price * qty"},
                   "price": {"kind": "literal", "value": 3},
                   "qty": {"kind": "expression", "expression": "total / price"}}),
            json!({"$ref": "total"}),
        ));
        assert_eq!(a.cycles, ["binding cycle: total -> qty -> total"]);
        // The same names as a field and in quotes are no edges.
        let a = analysis(&spec(
            json!({"total": {"kind": "expression", "expression": "cart.qty + 'qty'"},
                   "qty": {"kind": "expression", "expression": "total"}}),
            json!({"$ref": "qty"}),
        ));
        assert!(a.is_valid(), "{a:?}");
    }

    #[test]
    fn dangling_references_name_where_they_are() {
        let a = analysis(&spec(
            json!({"a": {"kind": "ref", "ref": "ghost"}}),
            json!({"$ref": "nobody"}),
        ));
        assert_eq!(
            a.dangling,
            [
                "`bindings.a.ref` names binding `ghost`, which is not defined in `bindings`",
                "`root.children[1].bindings.label` refers to binding `nobody`, which is not defined in `bindings`"
            ]
        );
        assert!(a.cycles.is_empty());
        let p = process(
            spec(json!({}), json!({"$ref": "nobody"})).as_bytes(),
            "s.json",
        )
        .unwrap();
        // Still written: the preview shows the prop as unresolved.
        assert!(p.normalized.is_some());
        assert!(!p.analysis.problems().is_empty());
        assert_eq!(
            a.resolved["go"]["label"]["reason"],
            "`nobody` is not defined in `bindings`"
        );
    }

    #[test]
    fn bound_values_are_resolved() {
        let a = analysis(&spec(
            json!({"count": {"kind": "literal", "value": 41},
                   "shown": {"kind": "ref", "ref": "count"},
                   "text": {"kind": "expression", "expression": "'n=' + shown"},
                   "half": {"kind": "ref"}}),
            json!({"$ref": "shown"}),
        ));
        assert_eq!(a.cycles, Vec::<String>::new());
        assert_eq!(
            a.errors,
            ["`bindings.half` is of kind `ref` but has no `ref` text"]
        );
        assert_eq!(a.bindings, 2);
        assert_eq!(
            a.resolved["go"]["label"],
            json!({"state": "value", "value": 41, "via": ["shown", "count"]})
        );
        assert_eq!(
            a.resolved["title"]["text"],
            json!({"state": "value", "value": "Hello"})
        );
        let a = analysis(&spec(
            json!({"text": {"kind": "expression", "expression": "'n=' + 1"}}),
            json!({"$ref": "text"}),
        ));
        assert!(a.is_valid(), "{a:?}");
        assert_eq!(
            a.resolved["go"]["label"],
            json!({"state": "expression", "expression": "'n=' + 1", "via": ["text"]})
        );
        // Normalized: bindings after metadata at the top, after props in a component.
        let p = process(
            spec(json!({"b": {"value": 1, "kind": "literal"}}), json!(2)).as_bytes(),
            "s.json",
        )
        .unwrap();
        let text = p.normalized.unwrap();
        assert!(
            text.starts_with("{\n  \"version\": \"a2ui/v1\",\n  \"bindings\": {\n    \"b\": {\n      \"kind\": \"literal\""),
            "{text}"
        );
        assert!(
            text.contains("\"type\": \"Text\",\n        \"bindings\""),
            "{text}"
        );
    }

    #[test]
    fn expression_words_skip_quotes_fields_and_numbers() {
        assert_eq!(
            expression_words("'Count: ' + shown * 2 + user.count + \"a b\" + `c` + f(x_1)"),
            ["shown", "user", "f", "x_1"]
        );
        assert_eq!(expression_words("a+b"), ["a", "b"]);
        assert_eq!(expression_words("'it\\'s' + z"), ["z"]);
        assert!(expression_words("").is_empty());
    }

    #[test]
    fn the_format_is_recognised() {
        let top = |v: Value| v.as_object().cloned().unwrap();
        assert!(is_reference(&top(json!({"bindings": {}, "root": {}}))));
        assert!(is_reference(&top(
            json!({"root": {"id": "a", "children": [{"id": "b", "bindings": {}}]}})
        )));
        assert!(!is_reference(&top(
            json!({"root": {"id": "a", "props": {"bindings": 1}}})
        )));
        assert!(!is_reference(&top(json!({"root": "a", "components": []}))));
        // Top-level bindings make a flat spec a reference one (whose schema
        // then rejects `components`), and its bindings are still checked.
        let flat = json!({"version": "a2ui/v1", "root": "a",
            "bindings": {"x": {"kind": "ref", "ref": "x"}},
            "components": [{"id": "a", "type": "Box", "bindings": {"t": {"$ref": "x"}}}]});
        let a = process(flat.to_string().as_bytes(), "s.json")
            .unwrap()
            .analysis;
        assert_eq!(a.format, Format::Reference);
        assert_eq!(a.cycles, ["binding cycle: x -> x"]);
    }
}
