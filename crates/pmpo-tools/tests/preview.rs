//! The preview tool on real pages in real Chromium: screenshots are decoded
//! and looked at, reports are compared with what the pages do.
//!
//! Needs Chromium (`scripts/test.sh` installs it). Without it these tests
//! say so and pass, unless PMPO_REQUIRE_BROWSER=1 (set by scripts/test.sh).

mod common;

use std::path::Path;
use std::time::Duration;

use common::pages;
use pmpo_store::Workspace;
use pmpo_tools::preview::{PreviewReport, PreviewTool, evaluate_report};
use pmpo_tools::{Termination, Tool, ToolOutcome};
use serde_json::{Value, json};

async fn run(tool: &PreviewTool, ws: &Workspace, inputs: Value) -> (ToolOutcome, PreviewReport) {
    common::run(tool, ws, inputs, Duration::from_secs(60)).await
}

fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let ch = info.color_type.samples();
    let rgb: Vec<u8> = buf[..info.buffer_size()]
        .chunks(ch)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, rgb)
}

fn count_color(rgb: &[u8], c: [u8; 3]) -> usize {
    rgb.chunks(3)
        .filter(|p| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 3))
        .count()
}

const CARD: &str = r##"<!doctype html>
<html><head><title>card</title>
<style>body{margin:0;background:#ffffff} .card{margin:20px;padding:20px;background:#1e40af;color:#fff;width:300px}</style>
</head><body>
<div class="card">
  <h1>Card</h1>
  <div id="slot" hx-get="fragment.html" hx-trigger="load" hx-swap="innerHTML">loading</div>
  <button id="more" hx-get="details.html" hx-target="#details">More</button>
  <div id="details"></div>
</div>
</body></html>"##;

const DETAILS: &str = r##"<div style="width:120px;height:60px;background:#cc00cc">details</div>"##;

const FRAGMENT: &str =
    r##"<div id="loaded" style="width:200px;height:80px;background:#00aa55">from fragment</div>"##;

const BROKEN: &str = r##"<!doctype html>
<html><head><title>broken</title>
<script src="missing.js"></script>
</head><body style="background:#fafafa">
<h1 style="color:#b91c1c">Broken page</h1>
<img src="https://example.com/logo.png" alt="remote">
<script>
console.log("hello", 42);
console.warn("careful");
console.error("deliberate console error");
undefinedFunction();
</script>
</body></html>"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htmx_card_error_page_and_blank_page_in_one_browser() {
    let Some((_dir, ws)) = pages(&[
        ("pages/card.html", CARD),
        ("pages/fragment.html", FRAGMENT),
        ("pages/details.html", DETAILS),
        ("pages/broken.html", BROKEN),
        (
            "pages/blank.html",
            "<!doctype html><html><body></body></html>",
        ),
    ]) else {
        return;
    };
    let tool = PreviewTool::new();
    htmx_card(&tool, &ws).await;
    htmx_clicks(&tool, &ws).await;
    every_kind_of_error(&tool, &ws).await;
    blank_page(&tool, &ws).await;
    browser_gone(&tool).await;
}

/// 1. HTMX card: the local runtime is injected and fetches the fragment.
async fn htmx_card(tool: &PreviewTool, ws: &Workspace) {
    let root = ws.root();
    let (outcome, card) = run(
        tool,
        ws,
        json!({"input": "pages/card.html", "viewport": {"width": 400, "height": 300}}),
    )
    .await;
    assert_eq!(outcome.termination, Termination::Exited(0));
    assert_eq!(card.status, "success", "{card:?}");
    assert_eq!(card.driver, "devtools");
    assert_eq!(card.runtime_source, "local");
    assert!(
        card.failed_requests.is_empty(),
        "{:?}",
        card.failed_requests
    );
    assert!(card.page_errors.is_empty(), "{:?}", card.page_errors);
    assert_eq!(card.counts.console_errors, 0, "{:?}", card.console);
    assert!(!card.timings.browser_reused);
    let html = std::fs::read_to_string(root.join("dist/previews/card/preview.html")).unwrap();
    assert!(html.contains("data-pmpo-runtime=\"htmx"));
    let (w, h, rgb) = decode(&root.join("dist/previews/card/screenshot.png"));
    assert_eq!((w, h), (400, 300));
    // The card's blue and the fragment's green (swapped in by HTMX) are on screen.
    assert!(
        count_color(&rgb, [0x1e, 0x40, 0xaf]) > 5000,
        "card not drawn"
    );
    assert!(
        count_color(&rgb, [0x00, 0xaa, 0x55]) > 10000,
        "HTMX fragment not swapped in"
    );
    assert_eq!(
        count_color(&rgb, [0xcc, 0x00, 0xcc]),
        0,
        "details appear only on click"
    );
    let shot = std::fs::read(root.join("dist/previews/card/screenshot.png")).unwrap();
    assert!(evaluate_report(&card, Some(&shot)).passed);
}

/// A click: HTMX fetches the details fragment and swaps it in; a selector
/// that matches nothing fails the preview.
async fn htmx_clicks(tool: &PreviewTool, ws: &Workspace) {
    let root = ws.root();
    let (_, clicked) = run(
        tool,
        ws,
        json!({"input": "pages/card.html", "id": "card-clicked", "click": ["#more"], "viewport": {"width": 400, "height": 400}}),
    )
    .await;
    assert_eq!(clicked.status, "success", "{clicked:?}");
    let (_, _, rgb) = decode(&root.join("dist/previews/card-clicked/screenshot.png"));
    assert!(
        count_color(&rgb, [0xcc, 0x00, 0xcc]) > 5000,
        "clicked details not swapped in"
    );
    let (_, missing) = run(
        tool,
        ws,
        json!({"input": "pages/card.html", "id": "bad-click", "click": "#nope"}),
    )
    .await;
    assert_eq!(missing.status, "failed");
    assert!(missing.reason.unwrap().contains("#nope"));
}

/// 2. A page with every kind of error: each is in the report, and the check fails.
async fn every_kind_of_error(tool: &PreviewTool, ws: &Workspace) {
    let root = ws.root();
    let (outcome, bad) = run(
        tool,
        ws,
        json!({"input": "pages/broken.html", "id": "broken"}),
    )
    .await;
    assert_eq!(
        outcome.termination,
        Termination::Exited(0),
        "render succeeded; errors are diagnostics"
    );
    assert_eq!(bad.status, "success");
    assert!(bad.timings.browser_reused, "one browser per run");
    assert_eq!(bad.runtime_source, "none");
    let console = |level: &str, text: &str| {
        bad.console
            .iter()
            .any(|m| m.level == level && m.text.contains(text))
    };
    assert!(
        console("error", "deliberate console error"),
        "{:?}",
        bad.console
    );
    assert!(console("warning", "careful"), "{:?}", bad.console);
    assert!(console("log", "hello 42"), "{:?}", bad.console);
    assert!(
        bad.page_errors
            .iter()
            .any(|e| e.message.contains("undefinedFunction")),
        "{:?}",
        bad.page_errors
    );
    let blocked = bad
        .failed_requests
        .iter()
        .find(|r| r.url == "https://example.com/logo.png")
        .expect("blocked request recorded");
    assert!(
        blocked.blocked && blocked.reason.contains("network access is off"),
        "{blocked:?}"
    );
    let missing = bad
        .failed_requests
        .iter()
        .find(|r| r.url.ends_with("/pages/missing.js"))
        .expect("404 recorded");
    assert_eq!(missing.status, Some(404));
    let shot = std::fs::read(root.join("dist/previews/broken/screenshot.png")).unwrap();
    let verdict = evaluate_report(&bad, Some(&shot));
    assert!(!verdict.passed);
}

/// 3. A blank page is caught by the check.
async fn blank_page(tool: &PreviewTool, ws: &Workspace) {
    let root = ws.root();
    let (_, blank) = run(tool, ws, json!({"input": "pages/blank.html"})).await;
    assert_eq!(blank.status, "success");
    assert!(blank.image.as_ref().unwrap().blank);
    let shot = std::fs::read(root.join("dist/previews/blank/screenshot.png")).unwrap();
    let v = evaluate_report(&blank, Some(&shot));
    assert!(!v.passed);
    assert!(
        v.criteria.iter().any(|c| c.name == "screenshot_not_blank"
            && c.state == pmpo_tools::preview::CheckState::Failed)
    );
}

/// The run ends: the browser and every process of it are gone.
async fn browser_gone(tool: &PreviewTool) {
    let (pid, profile) = tool.browser_process().await.expect("a browser runs");
    tool.end_run().await;
    assert!(tool.browser_process().await.is_none());
    assert!(!profile.exists(), "profile directory removed");
    let still = processes_mentioning(&profile.to_string_lossy());
    assert!(still.is_empty(), "Chromium processes left: {still:?}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

#[tokio::test]
async fn screenshot_mode_fallback_and_missing_browser() {
    let Some((_dir, ws)) = pages(&[(
        "p.html",
        "<html><body style=\"background:#123456\"><h1 style=\"color:white\">Hi</h1></body></html>",
    )]) else {
        return;
    };
    let root = ws.root();
    let tool = PreviewTool::new();
    let (outcome, r) = run(&tool, &ws, json!({"input": "p.html", "driver": "screenshot", "viewport": {"width": 320, "height": 200}})).await;
    assert_eq!(outcome.termination, Termination::Exited(0));
    assert_eq!(r.status, "success", "{r:?}");
    assert_eq!(r.driver, "screenshot-mode");
    assert!(!r.diagnostics_available);
    assert!(r.notes.iter().any(|n| n.contains("not observed")));
    assert_eq!(outcome.skipped, None, "a rendered preview is not skipped");
    let (_, _, rgb) = decode(&root.join("dist/previews/p/screenshot.png"));
    assert!(count_color(&rgb, [0x12, 0x34, 0x56]) > 1000);
    // Nothing failed, but console, page errors and requests were not observed.
    let shot = std::fs::read(root.join("dist/previews/p/screenshot.png")).unwrap();
    let verdict = evaluate_report(&r, Some(&shot));
    assert!(verdict.passed && !verdict.observed(), "{verdict:?}");

    // No browser: optional -> skipped (stage succeeds), required -> stage fails.
    let (outcome, r) = run(
        &tool,
        &ws,
        json!({"input": "p.html", "id": "x", "chromium": "/nonexistent/chromium"}),
    )
    .await;
    assert_eq!(outcome.termination, Termination::Exited(0));
    assert_eq!(r.status, "skipped");
    // The tool tells the engine it skipped, and why: the stage is SKIPPED, not COMPLETED.
    let why = outcome.skipped.as_deref().unwrap_or_default();
    assert!(
        why.contains("optional preview `x` skipped") && why.contains("/nonexistent/chromium"),
        "{why}"
    );
    assert!(
        r.hint
            .as_deref()
            .unwrap_or_default()
            .contains("apt-get install")
    );
    let (outcome, r) = run(&tool, &ws, json!({"input": "p.html", "id": "y", "required": true, "chromium": "/nonexistent/chromium"})).await;
    assert_eq!(outcome.termination, Termination::Exited(1));
    assert_eq!(r.status, "failed");
    assert_eq!(
        outcome.skipped, None,
        "a required preview fails, it is not skipped"
    );
    tool.end_run().await;
}

#[tokio::test]
async fn tsx_entry_is_compiled_and_rendered() {
    let Some((_dir, ws)) = pages(&[(
        "ui/app.tsx",
        r##"/** @jsx h */
function h(tag: string, props: Record<string, string> | null, ...children: (string | HTMLElement)[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) el.setAttribute(k, v);
  for (const c of children) el.append(c);
  return el;
}
const title: string = "Typed hello";
document.getElementById("root")!.append(
  <div style="background:#aa2266;color:white;padding:40px;font-size:32px">{title}</div>
);
"##,
    )]) else {
        return;
    };
    let root = ws.root();
    let tool = PreviewTool::new();
    let esbuild = pmpo_tools::preview::tsx::find_esbuild(None, root);
    let (_, r) = run(
        &tool,
        &ws,
        json!({"input": "ui/app.tsx", "viewport": {"width": 400, "height": 200}}),
    )
    .await;
    tool.end_run().await;
    match esbuild {
        None => {
            assert!(
                std::env::var("PMPO_REQUIRE_BROWSER").ok().as_deref() != Some("1"),
                "esbuild is required (PMPO_REQUIRE_BROWSER=1) but was not found"
            );
            assert_eq!(r.status, "skipped");
            assert!(r.hint.unwrap().contains("npm"));
        }
        Some(_) => {
            assert_eq!(r.status, "success", "{r:?}");
            assert!(r.timings.compile_ms.is_some());
            assert!(r.page_errors.is_empty(), "{:?}", r.page_errors);
            let (_, _, rgb) = decode(&root.join("dist/previews/app/screenshot.png"));
            assert!(
                count_color(&rgb, [0xaa, 0x22, 0x66]) > 5000,
                "TSX output not drawn"
            );
        }
    }
}

#[tokio::test]
async fn busy_page_fails_and_the_browser_serves_the_next_page() {
    let Some((_dir, ws)) = pages(&[
        (
            "loop.html",
            "<html><body><h1>busy</h1><script>setTimeout(function () { for (;;) {} }, 50)</script></body></html>",
        ),
        (
            "ok.html",
            "<html><body style=\"background:#335577\"><h1>fine</h1></body></html>",
        ),
    ]) else {
        return;
    };
    let tool = PreviewTool::new();
    let (outcome, r) = run(&tool, &ws, json!({"input": "loop.html"})).await;
    assert_eq!(
        outcome.termination,
        Termination::Exited(0),
        "optional preview"
    );
    assert_eq!(r.status, "failed");
    assert!(r.reason.unwrap().contains("busy"));
    let (_, r) = run(&tool, &ws, json!({"input": "ok.html"})).await;
    assert_eq!(r.status, "success", "{r:?}");
    assert!(r.timings.browser_reused);
    tool.end_run().await;
}

/// Errors that come after the load event (a timer's `throw` at 500 ms and
/// 1 s, a `console.error` at 1 s, a rejected promise after a late timer) are
/// waited for and reported; a timer due after the cap is not waited for,
/// and a page that never goes quiet is shot at the cap with a note saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_errors_are_waited_for_within_the_settle_cap() {
    let Some((_dir, ws)) = pages(&[
        (
            "late.html",
            "<html><body><h1>late</h1><script>\n\
         setTimeout(function () { throw new Error('late at 500') }, 500);\n\
         setTimeout(function () { throw new Error('late at 1000') }, 1000);\n\
         setTimeout(function () { console.error('logged at 1000') }, 1000);\n\
         setTimeout(function () { Promise.reject(new Error('rejected at 1200')) }, 1200);\n\
         </script></body></html>",
        ),
        (
            "far.html",
            "<html><body><h1>far</h1><script>setTimeout(function () { throw new Error('after the cap') }, 60000)</script></body></html>",
        ),
        (
            "busy.html",
            "<html><body><p id=t>0</p><script>\n\
         (function tick(n) { document.getElementById('t').textContent = n; requestAnimationFrame(function () { tick(n + 1) }) })(0)\n\
         </script></body></html>",
        ),
    ]) else {
        return;
    };
    let tool = PreviewTool::new();
    let (_, r) = run(&tool, &ws, json!({"input": "late.html"})).await;
    let errors: Vec<&str> = r.page_errors.iter().map(|e| e.message.as_str()).collect();
    for want in ["late at 500", "late at 1000", "rejected at 1200"] {
        assert!(errors.iter().any(|e| e.contains(want)), "{want}: {r:?}");
    }
    assert!(
        r.console
            .iter()
            .any(|c| c.level == "error" && c.text.contains("logged at 1000")),
        "{r:?}"
    );
    let waited = r.timings.quiet_waits_ms[0];
    assert!(
        (1200.0..3000.0).contains(&waited),
        "waited {waited} ms: {r:?}"
    );

    let (_, r) = run(&tool, &ws, json!({"input": "far.html"})).await;
    assert!(r.page_errors.is_empty(), "{r:?}");
    assert!(r.timings.quiet_waits_ms[0] < 2000.0, "{r:?}");
    assert!(r.notes.iter().all(|n| !n.contains("not quiet")), "{r:?}");

    let (_, r) = run(&tool, &ws, json!({"input": "busy.html", "settle_ms": 800})).await;
    assert_eq!(r.status, "success", "{r:?}");
    assert!(r.timings.quiet_waits_ms[0] >= 800.0, "{r:?}");
    assert!(
        r.notes.iter().any(|n| n
            .contains("not quiet after the load event within the settle cap of 800 ms")
            && n.contains("the DOM kept changing")),
        "{:?}",
        r.notes
    );
    tool.end_run().await;
}
