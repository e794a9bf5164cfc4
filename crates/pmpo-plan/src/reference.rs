//! `$stage.field` references: how one stage's output becomes another's input.
//!
//! A reference is a whole string value: `$render.files`, `$analyze.colors.primary`.
//! A string that starts with `$$` is a literal that starts with one `$`.
//! Strings such as `$HOME` (no dot) or text with a `$` inside are left alone,
//! so shell code keeps its variables.

use serde_json::Value;

/// A parsed `$stage.field[.sub...]` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference<'a> {
    pub stage: &'a str,
    /// The field and any nested keys: `["colors", "primary"]`.
    pub field: Vec<&'a str>,
}

/// Stage ids are restricted to these characters (so they are safe file names
/// and references are unambiguous).
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl<'a> Reference<'a> {
    /// Parses a whole string as a reference, or returns `None` for a literal.
    pub fn parse(text: &'a str) -> Option<Reference<'a>> {
        let body = text.strip_prefix('$')?;
        if body.starts_with('$') {
            return None;
        }
        let (stage, field) = body.split_once('.')?;
        if stage.is_empty() || !stage.chars().all(is_id_char) {
            return None;
        }
        let field: Vec<&str> = field.split('.').collect();
        if field
            .iter()
            .any(|f| f.is_empty() || f.chars().any(|c| c.is_whitespace() || c == '$'))
        {
            return None;
        }
        Some(Reference { stage, field })
    }
}

/// Unescapes `$$literal` to `$literal`.
pub fn unescape(text: &str) -> &str {
    if text.starts_with("$$") {
        &text[1..]
    } else {
        text
    }
}

/// One step of a path inside a `with:` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    pub fn as_path_seg(&self) -> crate::PathSeg<'_> {
        match self {
            Seg::Key(k) => crate::PathSeg::Key(k),
            Seg::Index(i) => crate::PathSeg::Index(*i),
        }
    }
}

/// Calls `f` with every reference in a value tree, with its path of keys/indexes.
pub fn visit_references<'a>(
    value: &'a Value,
    path: &mut Vec<Seg>,
    f: &mut dyn FnMut(&[Seg], Reference<'a>),
) {
    match value {
        Value::String(s) => {
            if let Some(r) = Reference::parse(s) {
                f(path, r);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                visit_references(item, path, f);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                path.push(Seg::Key(k.clone()));
                visit_references(v, path, f);
                path.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_references() {
        assert_eq!(
            Reference::parse("$a.stdout"),
            Some(Reference {
                stage: "a",
                field: vec!["stdout"]
            })
        );
        assert_eq!(
            Reference::parse("$gen-1.colors.primary"),
            Some(Reference {
                stage: "gen-1",
                field: vec!["colors", "primary"]
            })
        );
        for literal in [
            "$HOME",
            "$$a.b",
            "echo $a.b",
            "a.b",
            "$a.",
            "$.b",
            "$a b.c",
            "$a.b c",
        ] {
            assert_eq!(Reference::parse(literal), None, "{literal}");
        }
        assert_eq!(unescape("$$a.b"), "$a.b");
        assert_eq!(unescape("$a"), "$a");
    }
}
