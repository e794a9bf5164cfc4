//! Content types (`direct:*` / `meta:*`): which one an artifact is, and how
//! the Reflect phase evaluates it.
//!
//! Detection tries, in order: the explicit flag, the inputs' file
//! extensions, markers inside the inputs (an A2UI tree, a prompt's
//! placeholders), the artifact type, keywords of the intent, and finally the
//! artifact type's default.

use serde::Serialize;

/// The content types of the reference taxonomy.
pub const KNOWN: &[&str] = &[
    "direct:react",
    "direct:html",
    "direct:a2ui",
    "direct:ag-ui",
    "direct:content",
    "direct:image",
    "direct:code",
    "meta:image-prompt",
    "meta:video-prompt",
    "meta:agent-prompt",
    "meta:workflow",
    "meta:composite",
];

/// How the Reflect phase judges an iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Look at the generated artifact itself (`direct:*`).
    OutputInspection,
    /// Judge the prompt text: clarity, specificity, platform fit (`meta:*`).
    PromptQuality,
    /// Run the prompt through the model and judge what it produced too.
    TestExecution,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::OutputInspection => "output_inspection",
            Strategy::PromptQuality => "prompt_quality",
            Strategy::TestExecution => "test_execution",
        }
    }

    /// The strategy `as_str` spells `text`, if any.
    pub fn parse(text: &str) -> Option<Strategy> {
        [
            Strategy::OutputInspection,
            Strategy::PromptQuality,
            Strategy::TestExecution,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// The evaluation strategy of a content type.
pub fn strategy(content_type: &str, test_generation: bool) -> Strategy {
    if content_type.starts_with("direct:") {
        Strategy::OutputInspection
    } else if test_generation {
        Strategy::TestExecution
    } else {
        Strategy::PromptQuality
    }
}

/// A detected content type and the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detected {
    pub content_type: String,
    /// `flag`, `extension`, `markers`, `artifact_type`, `intent` or `default`.
    pub source: &'static str,
}

/// Why a content type cannot be used.
pub fn check(content_type: &str) -> Result<(), String> {
    let Some((kind, rest)) = content_type.split_once(':') else {
        return Err(format!(
            "content type `{content_type}` must look like `direct:KIND` or `meta:KIND` (known: {})",
            KNOWN.join(", ")
        ));
    };
    if !matches!(kind, "direct" | "meta") || rest.is_empty() {
        return Err(format!(
            "content type `{content_type}` must start with `direct:` or `meta:` (known: {})",
            KNOWN.join(", ")
        ));
    }
    if !rest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "content type `{content_type}`: the part after `:` may hold letters, digits, `-` and `_`"
        ));
    }
    Ok(())
}

/// The artifact type a content type implies (used when `--type` is not given).
pub fn artifact_type_of(content_type: &str) -> Option<&'static str> {
    Some(match content_type {
        "direct:react" | "direct:html" | "direct:ag-ui" => "ui",
        "direct:a2ui" => "a2ui",
        "direct:content" => "content",
        "direct:image" => "image",
        "direct:code" => "code",
        c if c.starts_with("meta:") => "meta-prompt",
        _ => return None,
    })
}

fn by_extension(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".a2ui.json") {
        return Some("direct:a2ui");
    }
    if lower.ends_with(".prompt.md") || lower.ends_with(".prompt") {
        return Some("meta:agent-prompt");
    }
    let ext = lower.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext {
        "tsx" | "jsx" => "direct:react",
        "html" | "htm" => "direct:html",
        "md" | "markdown" => "direct:content",
        "svg" | "png" | "jpg" | "jpeg" | "webp" | "gif" => "direct:image",
        // The languages the code adapter checks.
        "py" | "rs" | "js" | "mjs" | "cjs" | "sh" | "bash" => "direct:code",
        _ => return None,
    })
}

/// Markers inside an input's text.
fn by_markers(text: &str) -> Option<&'static str> {
    let t = text.trim_start();
    if t.starts_with('{') {
        if t.contains("\"a2ui/") || (t.contains("\"root\"") && t.contains("\"children\"")) {
            return Some("direct:a2ui");
        }
        if t.contains("\"ag-ui") || t.contains("\"agui") {
            return Some("direct:ag-ui");
        }
    }
    if t.starts_with("<svg") || t.starts_with("<?xml") && t.contains("<svg") {
        return Some("direct:image");
    }
    if !t.contains("<html") && !pmpo_ai::template::spans(t, |inner| !inner.is_empty()).is_empty() {
        return Some("meta:agent-prompt");
    }
    None
}

fn by_intent(intent: &str) -> Option<&'static str> {
    let i = intent.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| i.contains(w));
    if !has(&["prompt"]) {
        return None;
    }
    Some(
        if has(&["video", "sora", "runway", "veo", "clip", "animation"]) {
            "meta:video-prompt"
        } else if has(&[
            "image",
            "dall-e",
            "dalle",
            "midjourney",
            "stable diffusion",
            "illustration",
            "picture",
            "photo",
        ]) {
            "meta:image-prompt"
        } else if has(&["workflow", "pipeline"]) {
            "meta:workflow"
        } else {
            "meta:agent-prompt"
        },
    )
}

fn by_artifact_type(artifact_type: &str) -> Option<&'static str> {
    Some(match artifact_type {
        "logo" | "image" => "direct:image",
        "a2ui" => "direct:a2ui",
        "content" => "direct:content",
        "code" => "direct:code",
        _ => return None,
    })
}

/// Detects the content type. `input_texts` are the first bytes of each input
/// (for markers). `artifact_type` is known when given or stored.
pub fn detect(
    flag: Option<&str>,
    inputs: &[String],
    input_texts: &[String],
    artifact_type: Option<&str>,
    intent: Option<&str>,
) -> Detected {
    let found = |ct: &str, source| Detected {
        content_type: ct.to_string(),
        source,
    };
    if let Some(f) = flag {
        return found(f, "flag");
    }
    // The artifact type fixes the family: a `meta-prompt` artifact is never `direct:*`.
    let compatible = |ct: &str| match artifact_type {
        None => true,
        Some("meta-prompt") => ct.starts_with("meta:"),
        Some("logo") | Some("image") => ct == "direct:image",
        Some(t) => artifact_type_of(ct) == Some(t),
    };
    if let Some(ct) = inputs
        .iter()
        .filter_map(|p| by_extension(p))
        .find(|c| compatible(c))
    {
        return found(ct, "extension");
    }
    if let Some(ct) = input_texts
        .iter()
        .filter_map(|t| by_markers(t))
        .find(|c| compatible(c))
    {
        return found(ct, "markers");
    }
    if let Some(ct) = artifact_type.and_then(by_artifact_type) {
        return found(ct, "artifact_type");
    }
    if let Some(ct) = intent.and_then(by_intent).filter(|c| compatible(c)) {
        return found(ct, "intent");
    }
    let default = match artifact_type {
        Some(t) => pmpo_store::artifacts::default_content_type(t),
        None => "direct:content",
    };
    found(default, "default")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(
        flag: Option<&str>,
        inputs: &[&str],
        texts: &[&str],
        t: Option<&str>,
        intent: Option<&str>,
    ) -> Detected {
        let inputs: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        let texts: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
        detect(flag, &inputs, &texts, t, intent)
    }

    #[test]
    fn each_rule_in_order() {
        assert_eq!(
            d(Some("direct:html"), &["a.tsx"], &[], None, None).source,
            "flag"
        );
        let r = d(None, &["src/Card.tsx"], &[], Some("ui"), None);
        assert_eq!(
            (r.content_type.as_str(), r.source),
            ("direct:react", "extension")
        );
        let r = d(
            None,
            &["spec.json"],
            &["{\"version\": \"a2ui/v1\", \"root\": {}}"],
            None,
            None,
        );
        assert_eq!(
            (r.content_type.as_str(), r.source),
            ("direct:a2ui", "markers")
        );
        let r = d(None, &[], &[], Some("logo"), Some("an image prompt"));
        assert_eq!(
            (r.content_type.as_str(), r.source),
            ("direct:image", "artifact_type")
        );
        let r = d(
            None,
            &[],
            &[],
            Some("meta-prompt"),
            Some("A prompt for Sora: a drone shot"),
        );
        assert_eq!(
            (r.content_type.as_str(), r.source),
            ("meta:video-prompt", "intent")
        );
        let r = d(
            None,
            &[],
            &[],
            Some("meta-prompt"),
            Some("write the best thing"),
        );
        assert_eq!(
            (r.content_type.as_str(), r.source),
            ("meta:agent-prompt", "default")
        );
        let r = d(None, &[], &[], Some("ui"), None);
        assert_eq!(
            (r.content_type.as_str(), r.source),
            ("direct:html", "default")
        );
    }

    #[test]
    fn the_type_rules_out_other_families() {
        // A Markdown input of a meta-prompt artifact is a prompt, not content.
        let r = d(
            None,
            &["p.md"],
            &["Describe {{subject}} in oil paint"],
            Some("meta-prompt"),
            None,
        );
        assert_eq!(r.content_type, "meta:agent-prompt");
        assert_eq!(r.source, "markers");
    }

    #[test]
    fn strategies_follow_the_routing_table() {
        assert_eq!(strategy("direct:react", true), Strategy::OutputInspection);
        assert_eq!(
            strategy("meta:image-prompt", false),
            Strategy::PromptQuality
        );
        assert_eq!(strategy("meta:image-prompt", true), Strategy::TestExecution);
        assert!(check("direct:svg").is_ok());
        assert!(check("svg").is_err());
        assert!(check("meta:").is_err());
        assert!(check("meta:a b").is_err());
    }
}
