//! Accessibility of rendered pages through the real binary: `pmpo preview`
//! prints what axe-core found, the `accessibility` check passes, fails or is
//! not checked on a preview report, and the `ui` and `content` adapters'
//! `accessible` constraint keeps a page with an invisible button from
//! converging (and is left out, said so, where no browser runs).
//!
//! Tests that render need Chromium; without it they say so and pass, unless
//! PMPO_REQUIRE_BROWSER=1.

mod adapters;

use std::path::Path;

use adapters::{assert_converged, copy_fixture, have_chromium, plan, refine, status};
use pmpo_testkit::{Run, Ws, bin, validation_of};

/// The pages of the preview tool's accessibility tests, copied into `ws`.
fn pages(ws: &Ws) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pmpo-tools/tests/fixtures/a11y");
    for name in [
        "hero-undefined-vars.html",
        "clean.html",
        "missing-alt-and-label.html",
    ] {
        ws.write(name, &std::fs::read_to_string(dir.join(name)).unwrap());
    }
}

#[test]
fn pmpo_preview_prints_the_violations_and_its_check_ignores_them() {
    if !have_chromium() {
        return;
    }
    let ws = Ws::new();
    pages(&ws);
    let r = ws.run_ok(&["preview", "hero-undefined-vars.html", "--strict"]);
    assert!(
        r.stdout
            .contains("accessibility: 1 violation(s) (1 serious: color-contrast)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("color-contrast (serious)") && r.stdout.contains("at #increment"),
        "{}",
        r.stdout
    );
    // The `preview` check is about errors and requests, not accessibility.
    assert!(r.stdout.contains("check: passed"), "{}", r.stdout);
    let report = ws.read_json("dist/previews/hero-undefined-vars/preview-report.json");
    let a = &report["accessibility"];
    assert_eq!(a["status"], "checked", "{a}");
    assert_eq!(a["counts"]["serious"], 1, "{a}");
    assert_eq!(a["violations"][0]["nodes"][0]["selector"], "#increment");
    // --no-accessibility: the page is not audited, and the report says so.
    let r = ws.run_ok(&[
        "preview",
        "hero-undefined-vars.html",
        "--id",
        "off",
        "--no-accessibility",
    ]);
    assert!(!r.stdout.contains("color-contrast"), "{}", r.stdout);
    let off = ws.read_json("dist/previews/off/preview-report.json");
    assert_eq!(off["accessibility"]["status"], "not_checked", "{off}");
}

/// A plan previewing the three pages (`off` without the audit) and checking
/// each report with the `accessibility` check.
const CHECK_PLAN: &str = r#"specification:
  artifact_name: t
  artifact_type: ui
  constraints:
    - {id: hero, description: hero, severity: low, validation: {validation_method: accessibility}}
    - {id: clean, description: clean, severity: low, validation: {validation_method: accessibility}}
    - {id: off, description: off, severity: low, validation: {validation_method: accessibility}}
    - {id: names, description: names, severity: low, validation: {validation_method: accessibility}}
plan:
  stages:
    - {id: hero, tool: preview, with: {input: hero-undefined-vars.html}}
    - {id: clean, tool: preview, with: {input: clean.html}}
    - {id: off, tool: preview, with: {input: clean.html, id: off, accessibility: false}}
    - {id: names, tool: preview, with: {input: missing-alt-and-label.html, id: names}}
  validation_plan:
    - {constraint_id: hero, validation_method: accessibility, with: {report: dist/previews/hero-undefined-vars/preview-report.json}}
    - {constraint_id: clean, validation_method: accessibility, with: {report: dist/previews/clean/preview-report.json, impacts: [critical, serious, moderate, minor]}}
    - {constraint_id: off, validation_method: accessibility, with: {report: dist/previews/off/preview-report.json}}
    - {constraint_id: names, validation_method: accessibility, with: {report: dist/previews/names/preview-report.json, impacts: [moderate], expect: fail}}
"#;

fn outcome_of(results: &serde_json::Value, constraint: &str) -> serde_json::Value {
    results["validation_outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["constraint_id"] == constraint)
        .unwrap_or_else(|| panic!("no outcome for {constraint}: {results}"))
        .clone()
}

#[test]
fn the_accessibility_check_passes_fails_and_is_not_checked() {
    if !have_chromium() {
        return;
    }
    let ws = Ws::new();
    pages(&ws);
    ws.write("plan.yaml", CHECK_PLAN);
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert!(r.stdout.starts_with('{'), "{}", r.stderr);
    let j = r.json();
    validation_of(&j, "accessibility");
    let hero = outcome_of(&j, "hero");
    assert_eq!(hero["status"], "failed", "{hero}");
    let ev = &hero["evidence"];
    assert_eq!(ev["violations"][0]["rule"], "color-contrast", "{ev}");
    assert_eq!(ev["violations"][0]["impact"], "serious", "{ev}");
    assert_eq!(ev["violations"][0]["selectors"][0], "#increment", "{ev}");
    assert_eq!(outcome_of(&j, "clean")["status"], "passed");
    let off = outcome_of(&j, "off");
    assert_eq!(off["status"], "not_checked", "{off}");
    assert!(
        off["evidence"]["reason"]
            .as_str()
            .unwrap()
            .contains("accessibility: false"),
        "{off}"
    );
    // Both of its violations are critical, none moderate: `expect: fail` is not met.
    assert_eq!(outcome_of(&j, "names")["status"], "failed");
    // The manifest's preview runs carry the audit's counts.
    let m = ws.read_json("artifact_manifest.json");
    let runs = m["preview"]["runs"].as_array().unwrap();
    let hero = runs
        .iter()
        .find(|r| r["artifact_id"] == "hero-undefined-vars")
        .unwrap();
    assert_eq!(hero["accessibility"]["status"], "checked", "{hero}");
    assert_eq!(hero["accessibility"]["counts"]["serious"], 1, "{hero}");
}

#[test]
fn a_ui_page_with_an_invisible_button_does_not_converge_and_a_clean_one_does() {
    if !have_chromium() {
        return;
    }
    let ws = Ws::new();
    pages(&ws);
    let r = refine(
        &ws,
        "hero",
        &[
            "--type",
            "ui",
            "--input",
            "hero-undefined-vars.html",
            "--max-iterations",
            "1",
        ],
    );
    assert_ne!(r.code, 0, "{}", r.stderr);
    let report = r.json();
    assert_ne!(report["outcome"], "converged", "{report}");
    assert_eq!(status(&report, "accessible"), "violated", "{report}");
    let accessible = report["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "accessible")
        .unwrap();
    let evidence = accessible["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("color-contrast (serious) at #increment"),
        "{evidence}"
    );
    // The summary a person reads says why, not only which run it rests on.
    assert!(
        r.stderr
            .contains("why: accessibility failed: 1 accessibility violation(s): color-contrast (serious) at #increment"),
        "{}",
        r.stderr
    );
    assert!(
        report["last_decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("accessible"),
        "{report}"
    );

    let r = refine(&ws, "clean", &["--type", "ui", "--input", "clean.html"]);
    let report = assert_converged(&ws, &r, "clean");
    assert_eq!(status(&report, "accessible"), "satisfied");
    assert_eq!(status(&report, "accessible-moderate"), "satisfied");
}

#[test]
fn without_a_browser_the_constraints_are_left_out_and_the_summary_says_so() {
    let ws = Ws::new();
    copy_fixture(&ws, "content", ".");
    let r: Run = bin()
        .args([
            "refine",
            "guide",
            "--offline",
            "--type",
            "content",
            "--input",
            "docs/guide.md",
        ])
        .env("PMPO_CHROMIUM", ws.p("no-such-chromium"))
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "the document still converges: {}", r.stderr);
    let summary = r.stderr.rsplit("converged").next().unwrap();
    assert!(
        summary.contains("note: no Chromium was found")
            && summary.contains("`accessible` and `accessible-moderate` constraints are left out"),
        "{}",
        r.stderr
    );
    let p = plan(&ws, "guide");
    let ids: Vec<&str> = p["specification"]["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&"accessible"), "{ids:?}");
    assert!(!ids.contains(&"accessible-moderate"), "{ids:?}");
}
