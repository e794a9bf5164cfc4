//! The accessibility audit of the preview tool, on real pages in real
//! Chromium: what axe-core finds is in the report with its rule, impact and
//! selector, the page itself is left as it was, and the audit can be turned
//! off or is said to be missing when it could not run.
//!
//! Needs Chromium. Without it these tests say so and pass, unless
//! PMPO_REQUIRE_BROWSER=1.

mod common;

use std::path::Path;
use std::time::Duration;

use common::have_chromium;
use pmpo_store::Workspace;
use pmpo_tools::ToolOutcome;
use pmpo_tools::preview::a11y::Accessibility;
use pmpo_tools::preview::{PreviewReport, PreviewTool, evaluate_report};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/a11y")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A workspace with the fixture pages and a few written here, or `None`
/// without Chromium.
fn workspace(extra: &[(&str, &str)]) -> Option<(tempfile::TempDir, Workspace)> {
    if !have_chromium() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "hero-undefined-vars.html",
        "clean.html",
        "missing-alt-and-label.html",
    ] {
        std::fs::write(dir.path().join(name), fixture(name)).unwrap();
    }
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let ws = Workspace::open(dir.path()).unwrap();
    Some((dir, ws))
}

async fn run(tool: &PreviewTool, ws: &Workspace, inputs: Value) -> (ToolOutcome, PreviewReport) {
    common::run(tool, ws, inputs, Duration::from_secs(90)).await
}

fn audit(r: &PreviewReport) -> &Accessibility {
    r.accessibility
        .as_ref()
        .unwrap_or_else(|| panic!("no accessibility section: {r:?}"))
}

/// (rule, impact, selectors) of each violation.
fn found(a: &Accessibility) -> Vec<(String, String, Vec<String>)> {
    a.violations
        .iter()
        .map(|v| {
            let at = v.nodes.iter().map(|n| n.selector.clone()).collect();
            (v.rule.clone(), v.impact.clone(), at)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invisible_button_of_a_hero_with_undefined_variables_is_named() {
    let Some((_d, ws)) = workspace(&[]) else {
        return;
    };
    let tool = PreviewTool::new();
    let (outcome, r) = run(&tool, &ws, json!({"input": "hero-undefined-vars.html"})).await;
    tool.shutdown().await;
    assert_eq!(r.status, "success", "{r:?}");
    let a = audit(&r);
    assert_eq!(a.status, "checked", "{a:?}");
    assert_eq!(a.engine, "axe-core 4.14.1");
    // White text on the transparent background `var(--primary)` left it.
    let contrast = a
        .violations
        .iter()
        .find(|v| v.rule == "color-contrast")
        .unwrap_or_else(|| panic!("no color-contrast violation: {:?}", found(a)));
    assert_eq!(contrast.impact, "serious");
    let node = &contrast.nodes[0];
    assert_eq!(node.selector, "#increment", "{:?}", found(a));
    assert!(node.html.contains("Increment"), "{}", node.html);
    assert!(!node.summary.is_empty());
    assert!(contrast.help_url.starts_with("https://"), "{contrast:?}");
    assert!(contrast.tags.iter().any(|t| t == "wcag2aa"));
    assert_eq!(
        contrast.nodes.len(),
        1,
        "the Reset button is readable: {:?}",
        found(a)
    );
    assert!(a.counts.serious >= 1);
    // The audit leaves no trace in the page's own diagnostics, and the
    // `preview` check does not judge accessibility.
    assert!(r.console.is_empty(), "{:?}", r.console);
    assert!(r.page_errors.is_empty(), "{:?}", r.page_errors);
    let shot = std::fs::read(ws.root().join(r.screenshot.as_ref().unwrap())).unwrap();
    assert!(evaluate_report(&r, Some(&shot)).passed);
    // The summary line counts the violations.
    let summary = String::from_utf8_lossy(&outcome.stdout.head).into_owned();
    assert!(
        summary.contains("accessibility: 1 violation(s) (1 serious: color-contrast)"),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_alternative_text_and_labels_are_found_and_a_clean_page_has_none() {
    // What the page does to its own globals does not reach the audit (it
    // runs in a world of its own): neither an `axe` of its own nor broken
    // builtins, which would break an engine loaded into the page's world.
    let own_axe = "<!doctype html><html lang=\"en\"><head><title>t</title></head><body><main><h1>Hi</h1><img src=\"x.png\"></main>\n<script>window.axe = {run: () => { throw new Error('not the real one'); }};\nwindow.getComputedStyle = () => { throw new Error('sabotaged'); };\nArray.prototype.map = function () { throw new Error('sabotaged'); };</script></body></html>";
    let Some((_d, ws)) = workspace(&[("own-axe.html", own_axe)]) else {
        return;
    };
    let tool = PreviewTool::new();
    let (_, r) = run(&tool, &ws, json!({"input": "missing-alt-and-label.html"})).await;
    let a = audit(&r);
    let rules = found(a);
    assert!(
        rules.contains(&(
            "image-alt".into(),
            "critical".into(),
            vec!["#team-photo".into()]
        )),
        "{rules:?}"
    );
    assert!(
        rules.contains(&("label".into(), "critical".into(), vec!["#search".into()])),
        "{rules:?}"
    );
    assert_eq!(a.counts.critical, 2, "{rules:?}");

    let (_, r) = run(&tool, &ws, json!({"input": "clean.html"})).await;
    let a = audit(&r);
    assert_eq!(a.status, "checked");
    assert_eq!(a.total(), 0, "{:?}", found(a));
    assert!(a.violations.is_empty());

    let (_, r) = run(&tool, &ws, json!({"input": "own-axe.html"})).await;
    let a = audit(&r);
    assert_eq!(a.status, "checked", "{a:?}");
    assert!(found(a).iter().any(|(rule, _, _)| rule == "image-alt"));
    assert!(r.page_errors.is_empty(), "{:?}", r.page_errors);
    tool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_can_be_turned_off_and_is_not_checked_without_devtools() {
    let Some((_d, ws)) = workspace(&[]) else {
        return;
    };
    let tool = PreviewTool::new();
    let (outcome, r) = run(
        &tool,
        &ws,
        json!({"input": "hero-undefined-vars.html", "id": "off", "accessibility": false}),
    )
    .await;
    assert_eq!(r.status, "success");
    let a = audit(&r);
    assert_eq!(a.status, "not_checked");
    assert!(a.violations.is_empty());
    assert!(
        a.reason
            .as_deref()
            .unwrap()
            .contains("accessibility: false"),
        "{a:?}"
    );
    let summary = String::from_utf8_lossy(&outcome.stdout.head).into_owned();
    assert!(summary.contains("accessibility not checked"), "{summary}");

    let (_, r) = run(
        &tool,
        &ws,
        json!({"input": "hero-undefined-vars.html", "id": "shot", "driver": "screenshot"}),
    )
    .await;
    assert_eq!(r.driver, "screenshot-mode", "{r:?}");
    let a = audit(&r);
    assert_eq!(a.status, "not_checked");
    assert!(
        a.reason.as_deref().unwrap().contains("--screenshot mode"),
        "{a:?}"
    );
    tool.shutdown().await;
}

#[tokio::test]
async fn a_preview_without_a_browser_says_the_page_was_not_audited() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clean.html"), fixture("clean.html")).unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let tool = PreviewTool::new();
    let (_, r) = run(
        &tool,
        &ws,
        json!({"input": "clean.html", "chromium": "/nonexistent/chromium"}),
    )
    .await;
    assert_eq!(r.status, "skipped");
    let a = audit(&r);
    assert_eq!(a.status, "not_checked");
    assert!(
        a.reason
            .as_deref()
            .unwrap()
            .starts_with("the preview skipped"),
        "{a:?}"
    );
}
