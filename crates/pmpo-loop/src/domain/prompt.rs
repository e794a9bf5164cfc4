//! The meta-prompt adapter: a prompt for another model is the artifact.

use serde_json::json;

use pmpo_plan::{ConstraintKind, Severity};

use super::values::{StageValue, stage};
use super::{AdapterError, AdapterInput, Builder, Scope, ext};

/// Character limits of prompt targets (the `prompt` tool knows the same ones).
fn platform_of(input: &AdapterInput<'_>, content_type: &str) -> String {
    input
        .target_platform
        .map(str::to_string)
        .unwrap_or_else(|| {
            match content_type {
                "meta:image-prompt" => "dall-e-3",
                "meta:video-prompt" => "sora",
                _ => "generic",
            }
            .to_string()
        })
}

pub(super) fn meta_prompt(
    b: &mut Builder,
    s: &Scope,
    input: &AdapterInput<'_>,
) -> Result<(), AdapterError> {
    let content_type =
        if input.content_type.starts_with("meta:") && input.content_type != "meta:composite" {
            input.content_type
        } else {
            "meta:agent-prompt"
        };
    let platform = platform_of(input, content_type);
    let prompt = s.path("prompt.md");
    let meta = s.path("prompt.meta.json");
    let source = input
        .inputs
        .iter()
        .find(|p| matches!(ext(p).as_str(), "md" | "txt" | "prompt"));
    let mut with = json!({"output": prompt, "meta": meta, "target_platform": platform, "content_type": content_type});
    match (source, input.intent) {
        (Some(p), _) => with["input"] = json!(p),
        (None, Some(intent)) if !intent.trim().is_empty() => {
            with["intent"] = json!(intent.trim());
            with["title"] = json!(input.name);
        }
        _ => {
            return Err(
                "a meta-prompt artifact needs a prompt: pass --input FILE (.md or .txt) or --intent \"what the prompt is for\"".into(),
            );
        }
    }
    let compose = stage(
        "compose",
        "prompt",
        "Write the prompt and its metadata (platform, characters, tokens, variables)",
    )
    .with(with)
    .writes([prompt.as_str(), meta.as_str()])
    .reads(source);
    b.stage(s, compose);
    b.constraint(
        s,
        "prompt-present",
        Severity::Blocking,
        ConstraintKind::Structural,
        "The prompt text exists and is not empty",
        Some(("non_empty", json!({"path": prompt}))),
    );
    b.constraint(s, "platform-limit", Severity::Blocking, ConstraintKind::Technical,
        &format!("The prompt fits the target platform's length limit ({platform})"),
        Some(("json_schema", json!({"path": meta, "schema": {"type": "object", "required": ["within_limit"], "properties": {"within_limit": {"const": true}}}}))));
    b.constraint(s, "no-unfilled-placeholders", Severity::High, ConstraintKind::Structural,
        "No TODO, TBD or template hole is left in the prompt",
        Some(("json_schema", json!({"path": meta, "schema": {"type": "object", "properties": {"placeholders_unfilled": {"maxItems": 0}}}}))));
    b.constraint(s, "states-the-task", Severity::Medium, ConstraintKind::Semantic,
        "The prompt states its task (a goal or an instruction)",
        Some(("regex", json!({"path": prompt, "pattern": "(?im)^(#+\\s*(goal|task|role|objective)\\b|you are\\b|(create|write|generate|describe|draw|render|produce|design)\\b)", "min": 1}))));
    b.constraint(
        s,
        "specificity",
        Severity::Medium,
        ConstraintKind::Semantic,
        "The prompt is specific: subject, style, constraints and output format are stated",
        None,
    );
    b.constraint(s, "platform-fit", Severity::Medium, ConstraintKind::Semantic,
        &format!("The prompt suits {platform}: its vocabulary and parameters are ones the platform understands"), None);
    if input.test_generation {
        let out = s.path("test-output.md");
        b.stage(
            s,
            stage(
                "test-generation",
                "ai",
                "Run the prompt through the model to see what it produces",
            )
            .ai_only()
            .after(["compose"])
            .with(
                json!({"prompt_file": prompt, "verbatim": true, "output": out, "phase": "execute"}),
            )
            .writes([out.as_str()]),
        );
        b.constraint(
            s,
            "test-output",
            Severity::Blocking,
            ConstraintKind::Structural,
            "Running the prompt produced an output",
            Some(("non_empty", json!({"path": out}))),
        );
        b.constraint(
            s,
            "test-output-meets-intent",
            Severity::High,
            ConstraintKind::Semantic,
            "What the prompt produced meets the intent",
            None,
        );
        b.d.required_files.push(out);
    }
    b.d.required_files.push(prompt);
    b.d.required_files.push(meta);
    Ok(())
}
