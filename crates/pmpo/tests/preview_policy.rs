//! A preview that cannot run is skipped when optional and fails its stage
//! when a blocking constraint names the preview as its validation.

mod common;
use common::*;

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
