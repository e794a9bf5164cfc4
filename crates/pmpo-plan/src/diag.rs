//! Diagnostics: what is wrong, where, and what to do about it.

use std::fmt;
use std::ops::Range;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use crate::node::Pos;

/// Lines longer than this (a generated or hostile plan) get no excerpt: the
/// line and column still say where.
pub const MAX_EXCERPT_CHARS: usize = 300;

/// One problem found in a plan file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Where in the document (`plan.stages[2].depends_on`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The text of the offending line, shown under the message with a caret
    /// (not in `--json`: the line and column say where).
    #[serde(skip)]
    pub excerpt: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &str, pos: Option<Pos>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            path: None,
            message: message.into(),
            help: None,
            excerpt: None,
        }
    }

    /// Keeps the offending line of the plan's text, when the position is
    /// known and the line is short enough to read ([`MAX_EXCERPT_CHARS`]).
    pub fn with_source(mut self, text: &str) -> Self {
        self.excerpt = self
            .line
            .and_then(|n| text.lines().nth(n.checked_sub(1)?))
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.chars().count() <= MAX_EXCERPT_CHARS)
            .map(str::to_string);
        self
    }

    /// The diagnostic as the CLI prints it after `error: `: the first line
    /// (`FILE:LINE:COL: MESSAGE (at PATH)`) as scripts match it, then the
    /// offending line with a caret under the spot, then the help. `color`
    /// styles the excerpt with ANSI codes (only for a terminal).
    pub fn render(&self, color: bool) -> String {
        let mut out = self.head();
        if let Some(excerpt) = self.excerpt_block(color) {
            out.push('\n');
            out.push_str(&excerpt);
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("\n  help: {help}"));
        }
        out
    }

    fn head(&self) -> String {
        let mut out = self.file.clone();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
            if let Some(col) = self.column {
                out.push_str(&format!(":{col}"));
            }
        }
        out.push_str(&format!(": {}", self.message));
        if let Some(path) = &self.path {
            out.push_str(&format!(" (at {path})"));
        }
        out
    }

    /// The excerpt, drawn as rustc draws one: a gutter with the line number and
    /// carets under the offending token.
    fn excerpt_block(&self, color: bool) -> Option<String> {
        let text = self.excerpt.as_deref()?;
        let line = self.line?;
        let span = token_span(text, self.column.unwrap_or(1));
        let report = &[Group::with_level(Level::ERROR).element(
            Snippet::source(text)
                .line_start(line)
                .fold(false)
                .annotation(AnnotationKind::Primary.span(span)),
        )];
        let renderer = if color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let drawn = renderer.render(report);
        let drawn = drawn.trim_matches('\n');
        Some(drawn.to_string()).filter(|d| !d.is_empty())
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }
}

/// The byte range of the token starting at a 1-based character column: a
/// quoted scalar up to its closing quote, otherwise up to the end of the key
/// or of the plain value (`:`, `,`, `]`, `}`, ` #` or the end of the line).
fn token_span(line: &str, column: usize) -> Range<usize> {
    let start = line
        .char_indices()
        .nth(column.saturating_sub(1))
        .map_or(line.len(), |(i, _)| i);
    let rest = &line[start..];
    let len = match rest.chars().next() {
        None => 0,
        Some(q @ ('"' | '\'')) => rest[1..].find(q).map_or(rest.len(), |e| e + 2),
        Some(_) => {
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                let next = rest[i + c.len_utf8()..].chars().next();
                let stop = match c {
                    ',' | ']' | '}' => i > 0,
                    ':' => next.is_none_or(char::is_whitespace),
                    '#' => rest[..i].ends_with(' '),
                    _ => false,
                };
                if stop {
                    end = i;
                    break;
                }
            }
            rest[..end].trim_end().len()
        }
    };
    if len == 0 {
        // Nothing to underline (the end of the line): one caret after it.
        return start..start;
    }
    start..start + len
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // Few edits (a transposition counts as one), relative to the word's length;
    // ties go to the more similar prefix.
    let allowed = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| {
            (
                strsim::damerau_levenshtein(word, c),
                strsim::jaro_winkler(word, c),
                c,
            )
        })
        .filter(|(edits, _, _)| *edits <= allowed)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Pos;

    fn at(line: usize, column: usize, text: &str) -> Diagnostic {
        Diagnostic::new("plan.yaml", Some(Pos { line, column }), "bad")
            .with_help("fix it")
            .with_source(text)
    }

    #[test]
    fn the_excerpt_shows_the_line_with_carets_under_the_token() {
        let text = "plan:\n  stages:\n    - id: a\n      dependz_on: [b]\n";
        let d = at(4, 7, text);
        assert_eq!(
            d.to_string(),
            "plan.yaml:4:7: bad\n  |\n4 |       dependz_on: [b]\n  |       ^^^^^^^^^^\n  help: fix it"
        );
    }

    #[test]
    fn color_is_only_asked_for_by_a_terminal() {
        let d = at(1, 1, "plan: 1\n");
        assert!(d.render(true).contains('\x1b'), "{}", d.render(true));
        assert!(!d.render(false).contains('\x1b'));
        assert_eq!(d.render(false), d.to_string());
    }

    #[test]
    fn tokens_end_where_yaml_ends_them() {
        assert_eq!(token_span("a: \"x y\" # c", 4), 3..8);
        assert_eq!(token_span("  key: value # note", 3), 2..5);
        assert_eq!(token_span("  key: value # note", 8), 7..12);
        assert_eq!(token_span("[a, b]", 2), 1..2);
        assert_eq!(token_span("url: http://x", 6), 5..13);
        assert_eq!(token_span("ab", 9), 2..2);
    }

    #[test]
    fn without_a_position_or_source_there_is_no_excerpt() {
        let d = Diagnostic::new("p.yaml", None, "cannot read").with_source("x");
        assert_eq!(d.to_string(), "p.yaml: cannot read");
        let d = Diagnostic::new("p.yaml", Some(Pos { line: 9, column: 1 }), "m").with_source("x");
        assert_eq!(d.to_string(), "p.yaml:9:1: m");
        let long = "- ".repeat(MAX_EXCERPT_CHARS);
        let d = Diagnostic::new("p.yaml", Some(Pos { line: 1, column: 9 }), "m").with_source(&long);
        assert_eq!(d.to_string(), "p.yaml:1:9: m");
    }
}
