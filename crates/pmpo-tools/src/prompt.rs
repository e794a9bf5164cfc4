//! The `prompt` tool: meta-prompt artifacts, where the prompt text itself is
//! what the stage produces. The text comes from a file or is composed from an
//! intent; the tool writes it and a metadata file describing it.
//!
//! ```yaml
//! with:
//!   input: prompts/hero.md            # a prompt file (.md, .txt), or:
//!   # intent: A watercolour fox in a misty forest
//!   # title: Hero image                 (with `intent`; default "Prompt")
//!   # requirements: [16:9, no text]     (with `intent`)
//!   # output_format: one PNG image      (with `intent`)
//!   output: dist/prompt.md
//!   meta: dist/prompt.meta.json
//!   target_platform: dall-e-3         # optional: sets the length limit
//!   content_type: meta:image-prompt   # optional: recorded in the metadata
//! ```
//!
//! The metadata (pretty JSON) holds the platform and content type, counts
//! (`characters` are Unicode scalar values, `words` are whitespace-separated,
//! `approx_tokens` is characters / 4 rounded up), the `{{name}}` variables,
//! the platform's character limit and whether the text is within it, the
//! unfilled placeholders found and the text's blake3 digest.
//!
//! Named outputs: `path`, `characters`, `approx_tokens`, `variables`,
//! `within_limit`. Going over the limit or leaving placeholders is reported
//! (in the metadata and as notes), not treated as a failure: the stage's
//! checks decide that.

use std::collections::BTreeSet;
use std::time::Instant;

use async_trait::async_trait;
use pmpo_plan::InputIssue;
use pmpo_store::Durability;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::inputs::{check_path, invalid, io_error, read_file};
use crate::typed::{self, Inputs, Wrong};
use crate::{Captured, Termination, Tool, ToolContext, ToolError, ToolOutcome, issue};

/// The named outputs of a `prompt` stage (see `invoke`).
pub const OUTPUTS: &[&str] = &[
    "path",
    "characters",
    "approx_tokens",
    "variables",
    "within_limit",
];

/// The inputs of a `prompt` stage (`with:`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptInputs {
    input: Option<String>,
    intent: Option<String>,
    title: Option<String>,
    requirements: Option<Vec<String>>,
    output_format: Option<String>,
    output: String,
    meta: String,
    target_platform: Option<String>,
    content_type: Option<String>,
}

impl Inputs for PromptInputs {
    const TOOL: &'static str = "prompt";
    const WRITES: &'static [&'static str] = &["output", "meta"];

    fn wrong(key: &str) -> Wrong {
        match key {
            "requirements" => Wrong::Say("`requirements` must be a list of texts"),
            // Paths are checked with their own words.
            "input" | "output" | "meta" => Wrong::Elsewhere,
            _ => Wrong::Reader,
        }
    }
}

/// The keys that only shape a prompt composed from `intent`.
const INTENT_KEYS: &[&str] = &["title", "requirements", "output_format"];

const DEFAULT_TITLE: &str = "Prompt";
const DEFAULT_PLATFORM: &str = "generic";

/// Known prompt length limits, in characters, by platform (lower case).
/// Stable Diffusion has no hard limit; 2000 is a practical approximation.
const PLATFORM_LIMITS: &[(&str, usize)] = &[
    ("dall-e-3", 4000),
    ("dall-e-2", 1000),
    ("midjourney", 6000),
    ("stable-diffusion", 2000),
    ("sora", 10000),
];

/// Words that mark text someone meant to come back to.
const MARKER_WORDS: &[&str] = &["TODO", "TBD", "FIXME"];

pub struct PromptTool;

/// What is to be composed from an intent.
#[derive(Debug, Clone, Default)]
pub struct Intent<'a> {
    pub title: Option<&'a str>,
    pub intent: &'a str,
    pub requirements: Vec<&'a str>,
    pub output_format: Option<&'a str>,
    pub target_platform: Option<&'a str>,
}

/// A placeholder that was left in the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unfilled {
    pub text: String,
    /// 1-based line number.
    pub line: usize,
}

/// The metadata written next to a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptMeta {
    pub target_platform: String,
    pub content_type: Option<String>,
    pub characters: usize,
    pub words: usize,
    pub lines: usize,
    pub approx_tokens: usize,
    pub variables: Vec<String>,
    pub max_characters: Option<usize>,
    pub within_limit: bool,
    pub placeholders_unfilled: Vec<Unfilled>,
    pub blake3: String,
}

/// Collapses the whitespace of a one-line field (a title or a requirement).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Composes a Markdown prompt from an intent. The same intent always gives
/// the same text.
pub fn compose(i: &Intent<'_>) -> String {
    let title = i
        .title
        .map(one_line)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| DEFAULT_TITLE.to_string());
    let mut out = format!(
        "# {title}\n\n## Goal\n\n{}\n\n## Requirements\n\n",
        i.intent.trim()
    );
    let requirements: Vec<String> = i
        .requirements
        .iter()
        .map(|r| one_line(r))
        .filter(|r| !r.is_empty())
        .collect();
    if requirements.is_empty() {
        out.push_str("- No specific requirements.\n");
    }
    for r in &requirements {
        out.push_str(&format!("- {r}\n"));
    }
    out.push_str("\n## Output\n\n");
    let format = i.output_format.map(str::trim).filter(|f| !f.is_empty());
    match format {
        Some(f) => out.push_str(&format!("- Format: {f}\n")),
        None => out.push_str("- Format: not specified\n"),
    }
    let platform = i
        .target_platform
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_PLATFORM);
    out.push_str(&format!("- Target platform: {platform}\n"));
    out
}

/// The character limit of a platform, if it has a known one.
pub fn platform_limit(platform: &str) -> Option<usize> {
    let p = platform.trim().to_ascii_lowercase();
    PLATFORM_LIMITS
        .iter()
        .find(|(name, _)| *name == p)
        .map(|(_, n)| *n)
}

/// The sorted, unique names of the `{{name}}` placeholders of a text
/// (spaces inside the braces are allowed: `{{ name }}`). The scanner is the
/// one the `ai` tool renders prompts with, so the list is exactly what a
/// model call would fill.
pub fn variables(text: &str) -> Vec<String> {
    let found: BTreeSet<String> = pmpo_ai::template::variables(text).into_iter().collect();
    found.into_iter().collect()
}

/// Whether the text inside `<...>` looks like a template hole rather than
/// markup: several plain words (`<your text here>`) or one upper-case name
/// (`<PRODUCT_NAME>`). Anything with `=`, `/`, quotes or other punctuation
/// (HTML tags, `<a href="...">`, arrows) is not a hole.
fn is_angle_hole(inner: &str) -> bool {
    let plain = |c: char| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '\'');
    if inner.is_empty() || !inner.chars().all(plain) || inner.starts_with(' ') {
        return false;
    }
    let several_words = inner.split_whitespace().count() >= 2;
    let upper_name = inner.len() >= 2
        && inner.starts_with(|c: char| c.is_ascii_uppercase())
        && inner
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    several_words || upper_name
}

/// Placeholders left unfilled in a text, in order, with their line. The
/// heuristic is deliberately simple:
/// - the words `TODO`, `TBD` and `FIXME` (upper case, as whole words);
/// - `[insert ...]` (any case, on one line);
/// - `<...>` holes on one line, as decided by [`is_angle_hole`].
pub fn unfilled_placeholders(text: &str) -> Vec<Unfilled> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let mut hits: Vec<(usize, String)> = Vec::new();
        // Marker words.
        let word_char = |c: char| c.is_alphanumeric() || c == '_';
        for word in MARKER_WORDS {
            let mut from = 0;
            while let Some(pos) = line[from..].find(word) {
                let at = from + pos;
                let end = at + word.len();
                let before_ok = !line[..at].chars().next_back().is_some_and(word_char);
                let after_ok = !line[end..].chars().next().is_some_and(word_char);
                if before_ok && after_ok {
                    hits.push((at, (*word).to_string()));
                }
                from = end;
            }
        }
        // `[insert ...]` and `<...>`.
        for (open, close) in [('[', ']'), ('<', '>')] {
            let mut from = 0;
            while let Some(pos) = line[from..].find(open) {
                let at = from + pos;
                let inner_start = at + open.len_utf8();
                let Some(len) = line[inner_start..].find(close) else {
                    break;
                };
                let inner = &line[inner_start..inner_start + len];
                let end = inner_start + len + close.len_utf8();
                let hole = if open == '[' {
                    inner
                        .get(..6)
                        .is_some_and(|w| w.eq_ignore_ascii_case("insert"))
                        && inner[6..].chars().next().is_none_or(char::is_whitespace)
                } else {
                    // The nearest `<` before the `>` (`a < b <x y>` is one hole).
                    !inner.contains(open) && is_angle_hole(inner)
                };
                if hole {
                    hits.push((at, line[at..end].to_string()));
                    from = end;
                } else {
                    from = inner_start;
                }
            }
        }
        hits.sort();
        found.extend(hits.into_iter().map(|(_, text)| Unfilled {
            text,
            line: line_no,
        }));
    }
    found
}

/// Describes a prompt text.
pub fn metadata(
    text: &str,
    target_platform: Option<&str>,
    content_type: Option<&str>,
) -> PromptMeta {
    let platform = target_platform
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_PLATFORM)
        .to_string();
    let characters = text.chars().count();
    let max_characters = platform_limit(&platform);
    PromptMeta {
        content_type: content_type.map(str::to_string),
        characters,
        words: text.split_whitespace().count(),
        lines: text.lines().count(),
        approx_tokens: characters.div_ceil(4),
        variables: variables(text),
        max_characters,
        within_limit: max_characters.is_none_or(|max| characters <= max),
        placeholders_unfilled: unfilled_placeholders(text),
        blake3: pmpo_store::hash_bytes(text.as_bytes()).blake3,
        target_platform: platform,
    }
}

/// The text of a prompt file: UTF-8, not binary, not empty.
fn prompt_text(path: &str, bytes: Vec<u8>) -> Result<String, ToolError> {
    let binary = || {
        invalid(format!("`{path}` looks like a binary file, not a prompt"))
            .hint("give a text file (.md or .txt) with the prompt")
    };
    if bytes.contains(&0) {
        return Err(binary());
    }
    let mut text = String::from_utf8(bytes).map_err(|_| binary())?;
    if text.starts_with('\u{feff}') {
        text.remove(0);
    }
    if text.trim().is_empty() {
        return Err(invalid(format!("the prompt file `{path}` is empty"))
            .hint("write the prompt into the file, or give `intent` instead of `input`"));
    }
    Ok(text)
}

#[async_trait]
impl Tool for PromptTool {
    fn name(&self) -> &'static str {
        "prompt"
    }
    fn written_paths(&self, inputs: &Map<String, Value>) -> Vec<String> {
        typed::written::<PromptInputs>(inputs)
    }

    fn check_inputs(&self, inputs: &Map<String, Value>) -> Vec<InputIssue> {
        let mut issues = typed::check::<PromptInputs>(inputs);
        let has_input = inputs.contains_key("input");
        let has_intent = inputs.contains_key("intent");
        match (has_input, has_intent) {
            (true, true) => issues.push(issue(
                "intent",
                "give either `input` or `intent`, not both",
                Some("`input` is a prompt file; `intent` is composed into a prompt"),
            )),
            (false, false) => issues.push(issue(
                "",
                "one of `input` (a prompt file) or `intent` (text to compose a prompt from) is required",
                None,
            )),
            _ => {}
        }
        check_path(inputs, "input", false, &mut issues);
        check_path(inputs, "output", true, &mut issues);
        check_path(inputs, "meta", true, &mut issues);
        if has_input && !has_intent {
            for key in INTENT_KEYS.iter().filter(|k| inputs.contains_key(**k)) {
                issues.push(issue(
                    key,
                    format!("`{key}` is only used with `intent`"),
                    Some("remove it, or compose the prompt from `intent`"),
                ));
            }
        }
        issues
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        let started = Instant::now();
        let input: PromptInputs = typed::decode(inputs)?;
        let (output, meta_path) = (input.output.as_str(), input.meta.as_str());
        let platform = input.target_platform.as_deref();
        let content_type = input.content_type.as_deref();
        let (text, source) = match (input.input.as_deref(), input.intent.as_deref()) {
            (Some(_), Some(_)) => return Err(invalid("give either `input` or `intent`, not both")),
            (Some(input), None) => (
                prompt_text(input, read_file(ctx.workspace, input)?)?,
                input.to_string(),
            ),
            (None, Some(intent)) => {
                if intent.trim().is_empty() {
                    return Err(invalid(
                        "`intent` is empty: there is nothing to compose a prompt from",
                    ));
                }
                let text = compose(&Intent {
                    title: input.title.as_deref(),
                    intent,
                    requirements: input
                        .requirements
                        .iter()
                        .flatten()
                        .map(String::as_str)
                        .collect(),
                    output_format: input.output_format.as_deref(),
                    target_platform: platform,
                });
                (text, "intent".to_string())
            }
            (None, None) => {
                return Err(invalid(
                    "one of `input` (a prompt file) or `intent` is required",
                ));
            }
        };
        let meta = metadata(&text, platform, content_type);
        ctx.workspace
            .write_atomic(output, text.as_bytes(), Durability::Relaxed)
            .map_err(|e| io_error("write", output, e))?;
        let meta_json = serde_json::to_string_pretty(&meta)
            .map_err(|e| io_error("encode", meta_path, e))?
            + "\n";
        ctx.workspace
            .write_atomic(meta_path, meta_json.as_bytes(), Durability::Relaxed)
            .map_err(|e| io_error("write", meta_path, e))?;

        let mut notes = Vec::new();
        if let (false, Some(max)) = (meta.within_limit, meta.max_characters) {
            notes.push(format!(
                "the prompt has {} characters, over the {max} of `{}`",
                meta.characters, meta.target_platform
            ));
        }
        if !meta.placeholders_unfilled.is_empty() {
            let list: Vec<String> = meta
                .placeholders_unfilled
                .iter()
                .map(|u| format!("{} (line {})", u.text, u.line))
                .collect();
            notes.push(format!(
                "unfilled placeholders in the prompt: {}",
                list.join(", ")
            ));
        }
        let summary = format!(
            "wrote {output} from {source}: {} characters, ~{} tokens, {} variables\n",
            meta.characters,
            meta.approx_tokens,
            meta.variables.len()
        );
        let mut outputs = Map::new();
        outputs.insert("path".into(), json!(output));
        outputs.insert("characters".into(), json!(meta.characters));
        outputs.insert("approx_tokens".into(), json!(meta.approx_tokens));
        outputs.insert("variables".into(), json!(meta.variables));
        outputs.insert("within_limit".into(), json!(meta.within_limit));
        Ok(ToolOutcome {
            termination: Termination::Exited(0),
            stdout: Captured::from_bytes(summary.as_bytes()),
            stderr: Captured::default(),
            duration: started.elapsed(),
            outputs,
            invocation: json!({"source": source, "output": output, "meta": meta_path}),
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

    async fn run(ws: &Workspace, inputs: Value) -> Result<ToolOutcome, ToolError> {
        let cancel = CancellationToken::new();
        let ctx = ToolContext {
            workspace: ws,
            run_id: "test",
            stage_id: "prompt",
            tool: "prompt",
            timeout: Duration::from_secs(10),
            cancel: &cancel,
            spec: None,
            validation: &[],
            description: "",
            confine: None,
        };
        PromptTool.invoke(&ctx, &map(inputs)).await
    }

    #[test]
    fn composing_from_intent_is_deterministic() {
        let i = Intent {
            title: Some("Hero  image"),
            intent: "  A watercolour fox in a misty forest. ",
            requirements: vec!["16:9", " no text ", ""],
            output_format: Some("one PNG image"),
            target_platform: Some("dall-e-3"),
        };
        let a = compose(&i);
        assert_eq!(a, compose(&i.clone()));
        assert_eq!(
            a,
            "# Hero image\n\n## Goal\n\nA watercolour fox in a misty forest.\n\n\
             ## Requirements\n\n- 16:9\n- no text\n\n\
             ## Output\n\n- Format: one PNG image\n- Target platform: dall-e-3\n"
        );
        let bare = compose(&Intent {
            intent: "x",
            ..Intent::default()
        });
        assert!(bare.starts_with("# Prompt\n"), "{bare}");
        assert!(bare.contains("- No specific requirements.\n"), "{bare}");
        assert!(bare.contains("- Target platform: generic\n"), "{bare}");
    }

    #[test]
    fn metadata_of_a_known_text() {
        let text = "Draw {{subject}} in {{ style }} for {{subject}}.\nKeep it {{bad name}} é\n";
        let m = metadata(text, Some("DALL-E-3"), Some("meta:image-prompt"));
        assert_eq!(m.characters, 72);
        assert_eq!(m.approx_tokens, 18);
        assert_eq!(m.words, 13);
        assert_eq!(m.lines, 2);
        assert_eq!(m.variables, ["style", "subject"]);
        assert_eq!(m.max_characters, Some(4000));
        assert!(m.within_limit);
        assert_eq!(m.target_platform, "DALL-E-3");
        assert_eq!(m.content_type.as_deref(), Some("meta:image-prompt"));
        assert_eq!(m.blake3.len(), 64);

        let long = "a".repeat(1001);
        let m = metadata(&long, Some("dall-e-2"), None);
        assert_eq!((m.max_characters, m.within_limit), (Some(1000), false));
        let m = metadata(&long, None, None);
        assert_eq!(m.target_platform, "generic");
        assert_eq!((m.max_characters, m.within_limit), (None, true));
        assert_eq!(platform_limit("sora"), Some(10000));
        assert_eq!(platform_limit("midjourney"), Some(6000));
        assert_eq!(platform_limit("stable-diffusion"), Some(2000));
        assert_eq!(platform_limit("claude"), None);
        assert_eq!(variables("{{a.b-c}} {{1x}} {{_y}} {{ }}"), ["_y", "a.b-c"]);
    }

    #[test]
    fn unfilled_placeholders_are_found() {
        let text = "Title: <your title here>\nTODO: pick colours; TODOs and todo are fine\n\
                    Use [Insert brand name] and [inserted] and [insert]\n\
                    <div class=\"x\"> <br/> a <b> <PRODUCT_NAME> 1 < 2 > 0\nFIXME TBD.";
        let found: Vec<(String, usize)> = unfilled_placeholders(text)
            .into_iter()
            .map(|u| (u.text, u.line))
            .collect();
        let expected = [
            ("<your title here>", 1),
            ("TODO", 2),
            ("[Insert brand name]", 3),
            ("[insert]", 3),
            ("<PRODUCT_NAME>", 4),
            ("FIXME", 5),
            ("TBD", 5),
        ];
        let expected: Vec<(String, usize)> =
            expected.iter().map(|(t, l)| (t.to_string(), *l)).collect();
        assert_eq!(found, expected);
    }

    #[tokio::test]
    async fn writes_prompt_and_metadata_and_refuses_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("p.md"), "Paint {{subject}}. TBD\n").unwrap();
        let out = run(
            &ws,
            json!({"input": "p.md", "output": "dist/prompt.md", "meta": "dist/prompt.meta.json",
                   "target_platform": "sora", "content_type": "meta:video-prompt"}),
        )
        .await
        .unwrap();
        assert_eq!(out.outputs["path"], "dist/prompt.md");
        assert_eq!(out.outputs["characters"], 23);
        assert_eq!(out.outputs["approx_tokens"], 6);
        assert_eq!(out.outputs["variables"], json!(["subject"]));
        assert_eq!(out.outputs["within_limit"], true);
        assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
        let written = std::fs::read_to_string(dir.path().join("dist/prompt.md")).unwrap();
        assert_eq!(written, "Paint {{subject}}. TBD\n");
        let meta: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("dist/prompt.meta.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["max_characters"], 10000);
        assert_eq!(meta["content_type"], "meta:video-prompt");
        assert_eq!(meta["placeholders_unfilled"][0]["text"], "TBD");

        // Composed twice: the same bytes.
        let args =
            json!({"intent": "A fox", "requirements": ["red"], "output": "a.md", "meta": "a.json"});
        run(&ws, args.clone()).await.unwrap();
        let first = std::fs::read(dir.path().join("a.md")).unwrap();
        run(&ws, args).await.unwrap();
        assert_eq!(first, std::fs::read(dir.path().join("a.md")).unwrap());

        std::fs::write(dir.path().join("empty.md"), " \n\t\n").unwrap();
        let err = run(
            &ws,
            json!({"input": "empty.md", "output": "o.md", "meta": "o.json"}),
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("is empty"), "{}", err.message);
        std::fs::write(dir.path().join("bin.txt"), b"ab\0cd").unwrap();
        let err = run(
            &ws,
            json!({"input": "bin.txt", "output": "o.md", "meta": "o.json"}),
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("binary"), "{}", err.message);
        let err = run(
            &ws,
            json!({"intent": "  ", "output": "o.md", "meta": "o.json"}),
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("empty"), "{}", err.message);
        assert!(!dir.path().join("o.md").exists());
    }

    #[test]
    fn inputs_are_checked() {
        let t = PromptTool;
        let ok = map(
            json!({"intent": "x", "requirements": ["a"], "output": "o.md", "meta": "m.json",
                            "target_platform": "sora", "content_type": "meta:video-prompt"}),
        );
        assert!(t.check_inputs(&ok).is_empty(), "{:?}", t.check_inputs(&ok));
        let msgs = |v: Value| -> Vec<String> {
            t.check_inputs(&map(v))
                .into_iter()
                .map(|i| i.message)
                .collect()
        };
        let m = msgs(json!({"input": "p.md", "otput": "o.md"}));
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(
            m.iter().any(|s| s.contains("unknown input `otput`")),
            "{m:?}"
        );
        assert!(
            m.iter().any(|s| s.contains("`output` input is required")),
            "{m:?}"
        );
        assert!(
            m.iter().any(|s| s.contains("`meta` input is required")),
            "{m:?}"
        );
        let m = msgs(json!({"output": "o.md", "meta": "m.json"}));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("one of `input`"), "{m:?}");
        let m = msgs(
            json!({"input": "p.md", "intent": "x", "output": "/o.md", "meta": "m.json",
                            "requirements": "x"}),
        );
        assert_eq!(m.len(), 3, "{m:?}");
        let m = msgs(json!({"input": "p.md", "title": "T", "output": "o.md", "meta": "m.json"}));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("only used with `intent`"), "{m:?}");
    }
}
