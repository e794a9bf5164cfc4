//! `pmpo preview` and a plan's preview stage say what a page is missing: a
//! page in the style of the seed system's sample (a hero whose primary
//! button is styled by a CSS variable the page never defines, Alpine.js
//! and HTMX loaded from the network), through the real binary and Chromium.

mod adapters;

use common::{Run, Ws, bin, have_chromium};
use pmpo_testkit as common;

const SAMPLE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sample</title>
<script src="https://unpkg.com/htmx.org@1.9.10"></script>
<script defer src="https://cdn.jsdelivr.net/npm/alpinejs@3.x.x/dist/cdn.min.js"></script>
<style>
 body { margin: 0; background: #fff }
 .hero { padding: 48px; font-family: sans-serif }
 .btn { padding: 12px 20px; border: 0; font-size: 16px }
 .primary { background: var(--primary); color: white }
 .secondary { background: #e5e7eb; color: #111 }
</style></head>
<body>
<section class="hero" x-data="{ count: 0 }">
  <h1>Welcome</h1>
  <p>Click count: <span x-text="count"></span></p>
  <button id="increment" class="btn primary" @click="count++">Increment</button>
  <button class="btn secondary" hx-get="more.html" hx-target="#out">Load</button>
  <div id="out"></div>
</section>
</body></html>
"##;

fn preview(ws: &Ws, args: &[&str]) -> Run {
    bin()
        .arg("preview")
        .args(args)
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into()
}

#[test]
fn pmpo_preview_prints_what_the_page_is_missing() {
    let ws = Ws::new();
    ws.write("sample.html", SAMPLE);
    // A wrong runtime name is a usage error that lists the right ones.
    let bad = preview(&ws, &["sample.html", "--runtimes", "vue"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("htmx, alpine"), "{}", bad.stderr);
    if !have_chromium() {
        return;
    }
    // Default: pmpo's copies replace the blocked network ones; the invisible button is named.
    let r = preview(&ws, &["sample.html", "--id", "auto"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("runtime: local"), "{}", r.stdout);
    assert!(
        r.stdout.contains("finding (warning) invisible-text: text drawn in the colour of its background: `#increment` (rgb(255, 255, 255) on rgb(255, 255, 255))"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("missing-runtime"), "{}", r.stdout);
    // No runtime added: the blocked copies and what they leave undone are said.
    let r = preview(
        &ws,
        &[
            "sample.html",
            "--id",
            "bare",
            "--runtimes",
            "none",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.json();
    let findings = out["report"]["findings"].as_array().unwrap();
    let missing: Vec<&str> = findings
        .iter()
        .filter(|f| f["code"] == "missing-runtime")
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert_eq!(missing.len(), 2, "{findings:?}");
    assert!(missing[0].contains("HTMX") && missing[0].contains("blocked"));
    assert!(missing[1].contains("Alpine.js directives (x-data, x-text, @click)"));
    assert_eq!(out["report"]["runtime_source"], "none");
}

#[test]
fn a_plan_stage_chooses_its_runtimes() {
    if !have_chromium() {
        return;
    }
    let ws = Ws::new();
    ws.write("sample.html", SAMPLE);
    ws.write(
        "plan.yaml",
        "specification:\n  artifact_name: sample\n  artifact_type: ui\nplan:\n  stages:\n    - id: look\n      tool: preview\n      with: {input: sample.html, id: only-htmx, runtimes: [htmx]}\n",
    );
    let r: Run = bin()
        .args(["execute", "plan.yaml"])
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let report = ws.read_json("dist/previews/only-htmx/preview-report.json");
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["missing-runtime", "invisible-text"], "{report}");
    assert!(
        report["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Alpine")
    );
    let html = ws.read("dist/previews/only-htmx/preview.html");
    assert!(html.contains("data-pmpo-runtime=\"htmx"), "HTMX added");
    assert!(
        !html.contains("data-pmpo-runtime=\"alpine"),
        "Alpine left out"
    );
}

/// A default-exported component with no React import: the ui adapter's
/// blocking `renders` constraint holds (its screenshot was blank before).
#[test]
fn a_default_exported_tsx_component_converges() {
    if !(adapters::have_chromium() && adapters::have_esbuild()) {
        eprintln!("skipping: Chromium or esbuild not found");
        return;
    }
    let ws = Ws::new();
    ws.write(
        "ui/Hello.tsx",
        "export default function Hello() {\n  return <main style={{ padding: \"32px\" }}><h1>Hello</h1><p>No React import.</p></main>;\n}\n",
    );
    let r = adapters::refine(&ws, "hello", &["--type", "ui", "--input", "ui/Hello.tsx"]);
    let report = adapters::assert_converged(&ws, &r, "hello");
    assert_eq!(adapters::status(&report, "renders"), "satisfied");
    let preview = ws.read_json("dist/previews/Hello/preview-report.json");
    assert_eq!(preview["image"]["blank"], false, "{preview}");
    assert_eq!(preview["findings"][0]["code"], "mounted", "{preview}");
}
