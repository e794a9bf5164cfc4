//! What each fuzz target does with one input. Shared, word for word, by the
//! fuzz targets (`fuzz/fuzz_targets/*.rs`) and by the test that replays the
//! corpus and every crash found (`crates/pmpo/tests/fuzz_corpus.rs`): a crash
//! the fuzzer finds stays a failing test until it is fixed.
//!
//! Each function must return whatever the input; a panic, an overflow or an
//! endless loop is the bug being looked for.

use serde_json::{Value, json};

/// One fuzz target: takes any bytes, must return.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` name them.
#[allow(dead_code)]
pub const TARGETS: &[(&str, Target)] = &[
    ("plan_loader", plan_loader),
    ("condition", condition),
    ("template_scanner", template_scanner),
    ("model_answer", model_answer),
];

/// The plan loader and checker: YAML (or JSON when the input starts with `{`)
/// through `pmpo check`'s own path.
pub fn plan_loader(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let name = if text.trim_start().starts_with('{') {
        "plan.json"
    } else {
        "plan.yaml"
    };
    // A path in a directory that does not exist: a plan naming files (a
    // prompt file, a template) reads nothing real.
    let path = std::path::PathBuf::from("/nonexistent-pmpo-fuzz").join(name);
    if let Ok(plan) = pmpo_plan::parse_plan_text(text.to_string(), path, name.to_string()) {
        let engine = pmpo_engine::Engine::default();
        let _ = engine.check_report(&plan);
        let _ = engine.prepare(plan);
    }
}

/// The condition language of triggers: parse, then evaluate against a payload.
pub fn condition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = pmpo_loop::condition::parse(text) {
        let vars = json!({
            "phase": "execute", "iteration": 3, "artifact": {"name": "fox", "score": 0.5},
            "content_type": "direct:svg", "tags": ["a", "b"], "ok": true, "none": null,
        });
        let _ = c.eval(&vars);
        let _ = c.eval(&Value::Null);
    }
}

/// The prompt template scanner: the placeholders, and a render against a context.
pub fn template_scanner(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = pmpo_ai::template::variables(text);
    let context = json!({"a": "x", "name": {"first": "y", "list": [1, 2, {"z": 3}]}, "n": 1});
    let _ = pmpo_ai::template::render(text, &context);
}

/// The model-answer reader: thinking stripped, fenced blocks, code blocks, JSON.
pub fn model_answer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let answer = pmpo_tools::ai::strip_thinking(&text);
    let _ = pmpo_tools::ai::fenced_blocks(answer);
    for lang in ["svg", "json", "html", "python", ""] {
        let _ = pmpo_tools::ai::code_block(answer, lang);
    }
    let _ = pmpo_tools::ai::parse_json_answer(answer);
}
