//! A preview that cannot run is skipped when optional and fails its stage
//! when a blocking constraint names the preview as its validation.

use common::*;
use pmpo_testkit as common;

fn plan(ws: &Ws, blocking: bool) {
    let severity = if blocking { "blocking" } else { "low" };
    ws.write("page.html", "<!doctype html><title>t</title><p>hello</p>\n");
    ws.write(
        "plan.yaml",
        &format!(
            "specification:\n  artifact_name: t\n  artifact_type: ui\n  constraints:\n    - id: renders\n      description: the page renders\n      severity: {severity}\n      validation: {{validation_method: preview}}\nplan:\n  stages:\n    - id: look\n      tool: preview\n      with: {{input: page.html, id: page}}\n"
        ),
    );
}

fn run_without_browser(ws: &Ws) -> Run {
    bin()
        .args(["execute", "plan.yaml", "--json"])
        .env("PMPO_CHROMIUM", ws.p("no-such-chromium"))
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into()
}

#[test]
fn optional_preview_is_skipped_with_a_reason() {
    let ws = Ws::new();
    plan(&ws, false);
    let r = run_without_browser(&ws);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = ws.read_json("dist/previews/page/preview-report.json");
    assert_eq!(report["status"], "skipped", "{report}");
}

#[test]
fn a_blocking_constraint_makes_the_preview_required() {
    let ws = Ws::new();
    plan(&ws, true);
    let r = run_without_browser(&ws);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let res = r.json();
    assert_eq!(res["stages"][0]["status"], "FAILED", "{res}");
}

#[test]
fn a_skipped_optional_preview_is_reported_skipped_everywhere() {
    let ws = Ws::new();
    plan(&ws, false);
    let human: Run = bin()
        .args(["execute", "plan.yaml"])
        .env("PMPO_CHROMIUM", ws.p("no-such-chromium"))
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(human.code, 0, "{}", human.stderr);
    let terminal = format!("{}{}", human.stdout, human.stderr);
    assert!(
        terminal.contains("look SKIPPED: optional preview `page` skipped:"),
        "{terminal}"
    );
    assert!(!terminal.contains("COMPLETED"), "{terminal}");
    assert!(terminal.contains("1 skipped"), "{terminal}");

    let res = ws.read_json(".state/execution_results.json");
    assert_eq!(res["status"], "completed", "{res}");
    assert_eq!(res["stages"][0]["status"], "SKIPPED", "{res}");
    assert!(
        res["stages"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no-such-chromium"),
        "{res}"
    );
    assert_eq!(res["summary"]["skipped"], 1, "{res}");
    assert_eq!(res["summary"]["completed"], 0, "{res}");

    let events = ws.read("logs/executor.jsonl");
    let last_of_stage = events
        .lines()
        .rfind(|l| l.contains("\"stage_id\":\"look\""))
        .unwrap();
    assert!(
        last_of_stage.contains("\"status\":\"SKIPPED\""),
        "{last_of_stage}"
    );

    let status = ws.run(&["status", "--json"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert_contains(&status.stdout, "completed");

    // Nothing was observed, so the manifest does not say the preview passed.
    let m = ws.read_json("artifact_manifest.json");
    assert_eq!(m["validation"]["preview_status"], "partial", "{m}");
}

#[test]
fn a_stage_after_a_skipped_optional_preview_still_runs() {
    let ws = Ws::new();
    plan(&ws, false);
    let text = ws.read("plan.yaml")
        + "    - id: after\n      depends_on: [look]\n      with: {command: [echo, done]}\n";
    ws.write("plan.yaml", &text);
    let r = run_without_browser(&ws);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["stages"][0]["status"], "SKIPPED", "{}", j["stages"]);
    assert_eq!(j["stages"][1]["status"], "COMPLETED", "{}", j["stages"]);
}

// ---------- with a real browser ----------

/// A page that logs a console error and throws, previewed with `driver`, and a
/// blocking constraint that rests on the `preview` check.
fn throwing_page(ws: &Ws, driver: &str) -> serde_json::Value {
    ws.write(
        "page.html",
        "<!doctype html><html><body style=\"background:#fff\"><h1 style=\"color:#123\">Card</h1>\n<script>console.error(\"card broke\"); throw new Error(\"boom from the card\");</script></body></html>\n",
    );
    ws.write(
        "plan.yaml",
        &format!(
            "specification:\n  artifact_name: t\n  artifact_type: ui\n  constraints:\n    - id: renders\n      description: the page renders cleanly\n      severity: blocking\n      validation: {{validation_method: preview}}\nplan:\n  stages:\n    - id: look\n      tool: preview\n      with: {{input: page.html, id: page, driver: {driver}}}\n  validation_plan:\n    - {{constraint_id: renders, validation_method: preview, with: {{report: dist/previews/page/preview-report.json}}}}\n"
        ),
    );
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert!(r.stdout.starts_with('{'), "{}", r.stderr);
    r.json()
}

#[test]
fn without_devtools_a_throwing_page_is_not_checked_never_clean() {
    if !have_chromium() {
        return;
    }
    let ws = Ws::new();
    let j = throwing_page(&ws, "screenshot");
    let report = ws.read_json("dist/previews/page/preview-report.json");
    assert_eq!(report["diagnostics_available"], false, "{report}");
    let check = validation_of(&j, "preview");
    assert_eq!(check["status"], "not_checked", "{check}");
    let msg = check["evidence"]["message"].as_str().unwrap();
    assert!(
        msg.contains("console not observed (no DevTools driver)") && !msg.contains("cleanly"),
        "{msg}"
    );
    let c = ws.read_json("constraints.json");
    assert_eq!(c["constraints"][0]["status"], "not_checked", "{c}");
    assert_eq!(c["summary"]["satisfied"], 0, "{c}");
    let m = ws.read_json("artifact_manifest.json");
    assert_eq!(m["validation"]["preview_status"], "partial", "{m}");
}

#[test]
fn with_devtools_a_throwing_page_fails_its_preview() {
    if !have_chromium() {
        return;
    }
    let ws = Ws::new();
    let j = throwing_page(&ws, "devtools");
    let check = validation_of(&j, "preview");
    assert_eq!(check["status"], "failed", "{check}");
    let msg = check["evidence"]["message"].as_str().unwrap();
    assert!(
        msg.contains("card broke") && msg.contains("boom from the card"),
        "{msg}"
    );
    let c = ws.read_json("constraints.json");
    assert_eq!(c["constraints"][0]["status"], "violated", "{c}");
    let m = ws.read_json("artifact_manifest.json");
    assert_eq!(m["validation"]["preview_status"], "fail", "{m}");
    assert_eq!(m["validation"]["has_console_errors"], true, "{m}");
}

#[test]
fn when_devtools_fails_the_fallback_does_not_make_a_throwing_page_clean() {
    if !have_chromium() {
        return;
    }
    let real = std::env::var("PMPO_CHROMIUM").unwrap_or_else(|_| {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap()
            .to_string()
    });
    let ws = Ws::new();
    // A Chromium whose DevTools pipe never works: the automatic driver falls
    // back to --screenshot mode, which sees no console.
    let wrapper = ws.write(
        "no-devtools-chromium.sh",
        &format!(
            "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in --remote-debugging-pipe) echo 'no DevTools here' >&2; exit 1;; esac; done\nexec '{real}' \"$@\"\n"
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    ws.write(
        "page.html",
        "<!doctype html><html><body><h1 style=\"color:#123\">Card</h1>\n<script>console.error(\"card broke\"); throw new Error(\"boom\");</script></body></html>\n",
    );
    ws.write(
        "plan.yaml",
        "specification:\n  artifact_name: t\n  artifact_type: ui\n  constraints:\n    - {id: renders, description: the page renders cleanly, severity: blocking}\nplan:\n  stages:\n    - id: look\n      tool: preview\n      with: {input: page.html, id: page}\n  validation_plan:\n    - {constraint_id: renders, validation_method: preview, with: {report: dist/previews/page/preview-report.json}}\n",
    );
    let r: Run = bin()
        .args(["execute", "plan.yaml", "--json"])
        .env("PMPO_CHROMIUM", &wrapper)
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into();
    let j = r.json();
    let report = ws.read_json("dist/previews/page/preview-report.json");
    assert_eq!(report["driver"], "screenshot-mode", "{report}");
    assert!(
        report["notes"][0]
            .as_str()
            .unwrap_or_default()
            .contains("fell back"),
        "{report}"
    );
    let check = validation_of(&j, "preview");
    assert_eq!(check["status"], "not_checked", "{check}");
    let c = ws.read_json("constraints.json");
    assert_eq!(c["constraints"][0]["status"], "not_checked", "{c}");
}
