//! The `markdown` tool: Markdown (CommonMark + tables, strikethrough, task
//! lists, footnotes) -> an HTML fragment, with an `id` on every heading.
//!
//! ```yaml
//! with:
//!   input: docs/report.md
//!   output: dist/report-body.html   # optional: also write the fragment
//! ```
//!
//! Named outputs: `html` (the fragment), `title` (the first level-1 heading,
//! or the file name), `headings` (`[{level, text, id}]`). Pass them to the
//! `template` tool (`builtin:content-report`) for a complete page.

use std::collections::HashMap;
use std::time::Instant;

use async_trait::async_trait;
use pmpo_plan::InputIssue;
use pmpo_store::Durability;
use pulldown_cmark::{CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::inputs::{io_error, read_text};
use crate::typed::{self, Text};
use crate::{Tool, ToolContext, ToolError, ToolOutcome};

/// The `with:` of a `markdown` stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkdownInputs {
    /// The Markdown file.
    input: Text,
    /// Where to write the HTML fragment too.
    output: Option<String>,
}

impl typed::Inputs for MarkdownInputs {
    const TOOL: &'static str = "markdown";
    const PATHS: &'static [&'static str] = &["input", "output"];
    const WRITES: &'static [&'static str] = &["output"];
}

pub struct MarkdownTool;

/// One heading of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heading {
    pub level: u8,
    pub text: String,
    pub id: String,
}

/// A rendered document.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub html: String,
    pub headings: Vec<Heading>,
}

fn level_number(l: HeadingLevel) -> u8 {
    match l {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// A URL fragment for a heading: lower-case words joined by `-`.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if (c.is_whitespace() || c == '-' || c == '_') && !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "section".into()
    } else {
        trimmed.to_string()
    }
}

/// Renders Markdown to HTML, giving every heading a unique `id`.
pub fn render(markdown: &str) -> Rendered {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_HEADING_ATTRIBUTES;
    let mut events: Vec<Event<'_>> = Parser::new_ext(markdown, options).collect();
    let mut headings = Vec::new();
    let mut used: HashMap<String, usize> = HashMap::new();
    let mut i = 0;
    while i < events.len() {
        if let Event::Start(Tag::Heading { level, id, .. }) = &events[i] {
            let level = level_number(*level);
            let explicit = id.as_ref().map(|s| s.to_string());
            let mut text = String::new();
            let mut j = i + 1;
            while j < events.len() && !matches!(events[j], Event::End(TagEnd::Heading(_))) {
                if let Event::Text(t) | Event::Code(t) = &events[j] {
                    text.push_str(t);
                }
                j += 1;
            }
            let base = explicit.unwrap_or_else(|| slug(&text));
            let n = used.entry(base.clone()).or_insert(0);
            let unique = if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            *n += 1;
            if let Event::Start(Tag::Heading { id, .. }) = &mut events[i] {
                *id = Some(CowStr::from(unique.clone()));
            }
            headings.push(Heading {
                level,
                text: text.trim().to_string(),
                id: unique,
            });
            i = j;
        }
        i += 1;
    }
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    Rendered { html, headings }
}

#[async_trait]
impl Tool for MarkdownTool {
    fn name(&self) -> &'static str {
        "markdown"
    }
    fn written_paths(&self, inputs: &Map<String, Value>) -> Vec<String> {
        typed::written::<MarkdownInputs>(inputs)
    }

    fn check_inputs(&self, inputs: &Map<String, Value>) -> Vec<InputIssue> {
        typed::check::<MarkdownInputs>(inputs)
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        let started = Instant::now();
        let with: MarkdownInputs = typed::decode(inputs)?;
        let input = &*with.input;
        let text = read_text(ctx.workspace, input)?;
        let rendered = render(&text);
        if let Some(out) = with.output.as_deref() {
            ctx.workspace
                .write_atomic(out, rendered.html.as_bytes(), Durability::Relaxed)
                .map_err(|e| io_error("write", out, e))?;
        }
        let title = rendered
            .headings
            .iter()
            .find(|h| h.level == 1)
            .map(|h| h.text.clone())
            .unwrap_or_else(|| input.rsplit('/').next().unwrap_or(input).to_string());
        let summary = format!(
            "rendered {input}: {} headings, {} bytes of HTML\n",
            rendered.headings.len(),
            rendered.html.len()
        );
        let mut outputs = Map::new();
        outputs.insert("title".into(), json!(title));
        outputs.insert("headings".into(), json!(rendered.headings));
        outputs.insert("html".into(), Value::String(rendered.html));
        Ok(ToolOutcome::finished(
            started,
            &summary,
            outputs,
            json!({"input": input}),
            Vec::new(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_get_unique_ids() {
        let r =
            render("# Report\n\n## Results\n\ntext\n\n## Results\n\n### `code` & more {#custom}\n");
        let ids: Vec<&str> = r.headings.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["report", "results", "results-1", "custom"]);
        assert!(r.html.contains(r#"<h2 id="results-1">"#), "{}", r.html);
        assert_eq!(r.headings[0].level, 1);
        assert_eq!(slug("Hello, World!  2"), "hello-world-2");
    }

    #[test]
    fn inputs_are_checked() {
        let m = |v: Value| v.as_object().cloned().unwrap();
        let messages = |v: Value| -> Vec<String> {
            MarkdownTool
                .check_inputs(&m(v))
                .into_iter()
                .map(|i| i.message)
                .collect()
        };
        assert!(messages(json!({"input": "a.md", "output": "b.html"})).is_empty());
        assert_eq!(
            messages(json!({"inptu": "a.md", "output": 3})),
            [
                "unknown input `inptu` for tool `markdown`",
                "`output` must be text",
                "the `input` input is required",
            ]
        );
        assert_eq!(
            messages(json!({"input": "../a.md"})),
            ["`input` contains `..`; outputs must stay inside the workspace"]
        );
    }

    #[test]
    fn tables_render() {
        let r = render("| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert!(r.html.contains("<table>"));
    }
}
