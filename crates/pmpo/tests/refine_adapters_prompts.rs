//! The offline meta-prompt adapters through `pmpo refine --offline` (from an
//! intent, an input, for an image model, a composite), and the usage errors
//! that stop a refinement before it writes.
//!
//! Adapters that preview need Chromium (and esbuild for TSX). Without them
//! the outcome of those runs is not asserted, unless PMPO_REQUIRE_BROWSER=1,
//! which makes a missing browser a failure.

mod adapters;

use adapters::*;
use pmpo_testkit::{Run, Ws, bin};

const PROMPT_CHECKS: [&str; 4] = [
    "prompt-present",
    "platform-limit",
    "no-unfilled-placeholders",
    "states-the-task",
];

fn with_manifest(checks: &[&str]) -> Vec<String> {
    checks
        .iter()
        .map(|c| c.to_string())
        .chain(["manifest-complete".to_string()])
        .collect()
}

#[test]
fn meta_prompt_from_intent_input_and_for_an_image_model() {
    let ws = Ws::new();
    copy_fixture(&ws, "prompt", ".");
    let checked = with_manifest(&PROMPT_CHECKS);
    let checked: Vec<&str> = checked.iter().map(String::as_str).collect();

    let r = refine(
        &ws,
        "onboarding",
        &[
            "--type",
            "meta-prompt",
            "--intent",
            "Write an onboarding checklist for new engineers, as a numbered Markdown list",
        ],
    );
    let p = plan(&ws, "onboarding");
    assert_plan(&p, &[("compose", "prompt")], &checked);
    let with = &stage(&p, "compose")["with"];
    assert!(
        with["intent"]
            .as_str()
            .unwrap()
            .starts_with("Write an onboarding")
    );
    assert_eq!(with["output"], "dist/prompt.md");
    assert_eq!(with["meta"], "dist/prompt.meta.json");
    assert!(with.get("input").is_none());
    let report = assert_converged(&ws, &r, "onboarding");
    assert_eq!(status(&report, "intent"), "not_checked");
    assert_dist(&ws, &["dist/prompt.md", "dist/prompt.meta.json"]);

    let r = refine(
        &ws,
        "notes",
        &["--type", "meta-prompt", "--input", "prompts/notes.md"],
    );
    let p = plan(&ws, "notes");
    assert_plan(&p, &[("compose", "prompt")], &checked);
    assert_eq!(stage(&p, "compose")["with"]["input"], "prompts/notes.md");
    assert_eq!(stage(&p, "compose")["inputs"][0], "prompts/notes.md");
    assert_converged(&ws, &r, "notes");
    assert_dist(&ws, &["dist/prompt.md", "dist/prompt.meta.json"]);
    assert_eq!(
        ws.read_json("dist/prompt.meta.json")["variables"],
        serde_json::json!(["version"])
    );

    let r = refine(
        &ws,
        "lighthouse",
        &[
            "--type",
            "meta-prompt",
            "--content-type",
            "meta:image-prompt",
            "--target-platform",
            "dall-e-3",
            "--input",
            "prompts/lighthouse.md",
        ],
    );
    let p = plan(&ws, "lighthouse");
    assert_plan(&p, &[("compose", "prompt")], &checked);
    let with = &stage(&p, "compose")["with"];
    assert_eq!(with["target_platform"], "dall-e-3");
    assert_eq!(with["content_type"], "meta:image-prompt");
    let report = assert_converged(&ws, &r, "lighthouse");
    assert_eq!(report["content_type"], "meta:image-prompt");
    assert_dist(&ws, &["dist/prompt.md", "dist/prompt.meta.json"]);
    let meta = ws.read_json("dist/prompt.meta.json");
    assert_eq!(meta["target_platform"], "dall-e-3");
    assert_eq!(meta["within_limit"], true);
}

#[test]
fn meta_prompt_with_a_todo_never_converges() {
    let ws = Ws::new();
    copy_fixture(&ws, "prompt", ".");
    let r = refine(
        &ws,
        "haiku",
        &[
            "--type",
            "meta-prompt",
            "--input",
            "prompts/todo.md",
            "--max-iterations",
            "2",
        ],
    );
    let report = assert_not_converged(&ws, &r, "haiku", "no-unfilled-placeholders");
    assert_eq!(status(&report, "prompt-present"), "satisfied");
    let meta = ws.read_json("dist/prompt.meta.json");
    assert_eq!(meta["placeholders_unfilled"][0]["text"], "TODO");
}

// ---- meta:composite --------------------------------------------------------

#[test]
fn meta_composite_of_an_image_prompt_and_a_document() {
    let browser = have_chromium();
    let ws = Ws::new();
    copy_fixture(&ws, "prompt", ".");
    let r = refine(
        &ws,
        "launch",
        &[
            "--type",
            "meta-prompt",
            "--content-type",
            "meta:composite",
            "--component",
            "meta:image-prompt",
            "--component",
            "direct:content=docs/brief.md",
            "--intent",
            "A launch kit: a hero image prompt and the brief",
        ],
    );
    let p = plan(&ws, "launch");
    let mut checked: Vec<String> = PROMPT_CHECKS
        .iter()
        .map(|c| format!("c1-image-prompt_{c}"))
        .collect();
    checked.extend(
        [
            "page-exists",
            "heading-hierarchy",
            "links-resolve",
            "renders",
        ]
        .iter()
        .chain(a11y(browser))
        .map(|c| format!("c2-content_{c}")),
    );
    checked.push("manifest-complete".into());
    let checked: Vec<&str> = checked.iter().map(String::as_str).collect();
    assert_plan(
        &p,
        &[
            ("c1-image-prompt_compose", "prompt"),
            ("c2-content_render", "markdown"),
            ("c2-content_page", "template"),
            ("c2-content_preview", "preview"),
        ],
        &checked,
    );
    let compose = &stage(&p, "c1-image-prompt_compose")["with"];
    assert_eq!(compose["output"], "dist/c1-image-prompt/prompt.md");
    assert_eq!(compose["content_type"], "meta:image-prompt");
    assert_eq!(compose["target_platform"], "dall-e-3");
    let page = stage(&p, "c2-content_page");
    assert_eq!(page["depends_on"], serde_json::json!(["c2-content_render"]));
    assert_eq!(page["with"]["vars"]["BODY"], "$c2-content_render.html");
    let preview = &stage(&p, "c2-content_preview")["with"];
    assert_eq!(preview["input"], "dist/c2-content/brief.html");
    assert_eq!(
        check(&p, "c2-content_renders")["with"]["report"],
        format!(
            "{}/{}/preview-report.json",
            preview["out_dir"].as_str().unwrap(),
            preview["id"].as_str().unwrap()
        )
    );
    let spec = ws.read_json(".refiner/artifacts/launch/specification.json");
    let kinds: Vec<&str> = spec["content_type"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["content_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["meta:image-prompt", "direct:content"]);
    // Reflect reports each component under its own strategy.
    let reflection = ws.read_json(".refiner/artifacts/launch/reflections/iteration-1.json");
    let strategies: Vec<(&str, &str)> = reflection["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["strategy"].as_str().unwrap()))
        .collect();
    assert_eq!(
        strategies,
        [
            ("c1-image-prompt", "prompt_quality"),
            ("c2-content", "output_inspection")
        ]
    );
    assert!(
        ws.read("refinement_log.md")
            .contains("Component `c2-content` (direct:content, evaluated by output_inspection)")
    );
    let files = [
        "dist/c1-image-prompt/prompt.md",
        "dist/c1-image-prompt/prompt.meta.json",
        "dist/c2-content/brief.html",
    ];
    if browser {
        let report = assert_converged(&ws, &r, "launch");
        assert_eq!(status(&report, "c2-content_renders"), "satisfied");
        assert_dist(&ws, &files);
    } else {
        eprintln!("Chromium not found: the composite's outcome is not asserted");
        assert_dist(&ws, &files);
    }
}

// ---- usage errors ----------------------------------------------------------

#[test]
fn usage_errors_exit_2_and_write_nothing_to_dist() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("x.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(
        parent.path().join("x.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    let ws_dir = parent.path().join("ws");
    std::fs::create_dir_all(ws_dir.join("brand")).unwrap();
    std::fs::copy(
        fixtures().join("logo/good.svg"),
        ws_dir.join("brand/logo.svg"),
    )
    .unwrap();
    std::fs::write(ws_dir.join("notes.txt"), "not a logo\n").unwrap();
    let abs = outside.path().join("x.svg");
    let abs = abs.to_str().unwrap();

    let run = |args: &[&str]| -> Run {
        bin()
            .args(["refine"])
            .args(args)
            .arg("--offline")
            .current_dir(&ws_dir)
            .output()
            .unwrap()
            .into()
    };
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["a", "--type", "banner", "--input", "brand/logo.svg"],
            vec![
                "Unknown artifact_type: banner",
                "logo, ui, a2ui, image, content, code, meta-prompt",
            ],
        ),
        (
            vec!["b", "--type", "logo", "--input", "brand/missing.svg"],
            vec!["brand/missing.svg", "does not exist"],
        ),
        (
            vec!["c", "--type", "logo", "--input", "../x.svg"],
            vec!["../x.svg", "outside the workspace"],
        ),
        (
            vec!["d", "--type", "logo", "--input", abs],
            vec!["outside the workspace"],
        ),
        (
            vec!["e", "--type", "logo", "--input", "notes.txt"],
            vec!["needs an SVG logo", "notes.txt"],
        ),
        (
            vec!["f", "--type", "logo"],
            vec!["needs an SVG logo", "--input"],
        ),
        (
            vec!["g", "--type", "meta-prompt"],
            vec!["needs a prompt", "--intent"],
        ),
        (
            vec![
                "h",
                "--type",
                "meta-prompt",
                "--content-type",
                "meta:composite",
                "--intent",
                "a kit",
            ],
            vec!["needs components", "--component"],
        ),
    ];
    for (args, want) in cases {
        let r = run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("error:"), "{args:?}: {}", r.stderr);
        for w in want {
            assert!(r.stderr.contains(w), "{args:?}: `{w}` not in {}", r.stderr);
        }
        assert!(!ws_dir.join("dist").exists(), "{args:?} wrote to dist/");
        assert!(!ws_dir.join("artifact_manifest.json").exists(), "{args:?}");
    }
}
