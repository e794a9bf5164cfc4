//! Previews say what is missing: Alpine.js pages with and without a
//! runtime, `.tsx` components mounted by pmpo, React that is not installed,
//! and blank renders that say why. Real Chromium, real esbuild; the
//! screenshots are decoded and their pixels counted.
//!
//! Without Chromium (or esbuild, for the `.tsx` tests) these tests say so
//! and pass, unless PMPO_REQUIRE_BROWSER=1 (set by scripts/test.sh).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{pages, required};
use pmpo_store::Workspace;
use pmpo_tools::Tool;
use pmpo_tools::preview::report::Finding;
use pmpo_tools::preview::{CheckState, PreviewReport, PreviewTool, evaluate_report};

async fn run(tool: &PreviewTool, ws: &Workspace, inputs: Value) -> PreviewReport {
    common::run(tool, ws, inputs, Duration::from_secs(60))
        .await
        .1
}
use serde_json::{Value, json};

/// A workspace of `.tsx` pages, or `None` (the test says so and passes)
/// without Chromium or esbuild.
fn tsx_pages(files: &[(&str, &str)]) -> Option<(tempfile::TempDir, Workspace)> {
    let (dir, ws) = pages(files)?;
    if pmpo_tools::preview::tsx::find_esbuild(None, ws.root()).is_none() {
        assert!(!required(), "esbuild is required but was not found");
        eprintln!("skipping: esbuild not found");
        return None;
    }
    Some((dir, ws))
}

/// The RGB pixels of a preview's screenshot.
fn pixels(ws: &Workspace, id: &str) -> Vec<[u8; 3]> {
    let path = ws.root().join(format!("dist/previews/{id}/screenshot.png"));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(ch)
        .map(|p| [p[0], p[1], p[2]])
        .collect()
}

fn count(px: &[[u8; 3]], c: [u8; 3]) -> usize {
    px.iter()
        .filter(|p| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 3))
        .count()
}

fn finding<'r>(r: &'r PreviewReport, code: &str) -> Option<&'r Finding> {
    r.findings.iter().find(|f| f.code == code)
}

const GREEN: [u8; 3] = [0x00, 0xaa, 0x55];

/// A counter in the style of the seed's sample page. The bar is `count`
/// hundred pixels wide (a full-width block when Alpine does not run), and
/// the purple box only shows once the count is above 1.
const COUNTER: &str = r##"<!doctype html>
<html><head><title>counter</title>
__SCRIPT__
<style>body{margin:0;background:#fff} .bar{height:50px;background:#00aa55}</style>
</head><body>
<div x-data="{ count: 0 }">
  <button id="increment" @click="count++">Increment</button>
  <p>Click count: <span id="count" x-text="count"></span></p>
  <div class="bar" :style="{ width: (count * 100) + 'px' }"></div>
  <div x-show="count > 1" style="width:120px;height:60px;background:#8800cc"></div>
</div>
</body></html>"##;

fn counter(script: &str) -> String {
    COUNTER.replace("__SCRIPT__", script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpine_pages_run_the_shipped_runtime_or_say_it_is_missing() {
    let remote = "<script defer src=\"https://cdn.jsdelivr.net/npm/alpinejs@3.14.1/dist/cdn.min.js\"></script>";
    let Some((_dir, ws)) = pages(&[
        ("plain.html", &counter("")),
        ("remote.html", &counter(remote)),
    ]) else {
        return;
    };
    let tool = PreviewTool::new();
    let clicks = json!(["#increment", "#increment"]);
    // 1. Auto: pmpo adds its Alpine, the page counts to 2, no request leaves.
    let r = run(&tool, &ws, json!({"input": "plain.html", "click": clicks})).await;
    assert_eq!(r.status, "success", "{r:?}");
    assert_eq!(r.runtime_source, "local");
    assert!(
        r.failed_requests.is_empty() && r.page_errors.is_empty(),
        "{r:?}"
    );
    let added = finding(&r, "runtime-added").expect("a finding says Alpine was added");
    assert!(added.message.contains("Alpine.js 3.17.5"), "{added:?}");
    let px = pixels(&ws, "plain");
    // The bar is 200 px wide: the count really is 2.
    let bar = count(&px, GREEN);
    assert!(
        (9_000..=11_000).contains(&bar),
        "bar of {bar} px, not 200x50"
    );
    assert!(count(&px, [0x88, 0x00, 0xcc]) > 6_000, "x-show box missing");
    // 2. The page's remote Alpine is replaced by the local copy: still no request.
    let r = run(&tool, &ws, json!({"input": "remote.html", "click": clicks})).await;
    assert_eq!(r.status, "success");
    assert!(r.failed_requests.is_empty(), "{:?}", r.failed_requests);
    assert!(
        r.runtime_detail.contains("was replaced"),
        "{}",
        r.runtime_detail
    );
    assert!(finding(&r, "missing-runtime").is_none());
    let bar = count(&pixels(&ws, "remote"), GREEN);
    assert!((9_000..=11_000).contains(&bar), "bar of {bar} px");
    // 3. `runtimes: []` adds nothing: the finding says so, and the page is as written.
    for runtimes in [json!([]), json!(["htmx"])] {
        let r = run(
            &tool,
            &ws,
            json!({"input": "plain.html", "id": "bare", "runtimes": runtimes}),
        )
        .await;
        assert_eq!(r.status, "success");
        let f = finding(&r, "missing-runtime").expect("missing-runtime finding");
        assert_eq!(f.severity, "warning");
        assert!(
            f.message
                .contains("Alpine.js directives (x-data, @click, x-text, :style, x-show)")
                && f.message.contains("loads no Alpine runtime"),
            "{}",
            f.message
        );
        assert!(f.hint.as_deref().unwrap().contains("runtimes"));
        let html = std::fs::read_to_string(ws.root().join("dist/previews/bare/preview.html"));
        assert!(!html.unwrap().contains("data-pmpo-runtime"));
        // Alpine did not run: the bar is a full-width block.
        assert!(count(&pixels(&ws, "bare"), GREEN) > 40_000);
    }
    // 4. The remote copy with `runtimes: []` is left alone, blocked, and said so.
    let r = run(
        &tool,
        &ws,
        json!({"input": "remote.html", "id": "remote-bare", "runtimes": []}),
    )
    .await;
    let f = finding(&r, "missing-runtime").expect("missing-runtime finding");
    assert!(f.message.contains("blocked"), "{}", f.message);
    assert!(
        r.failed_requests
            .iter()
            .any(|q| q.blocked && q.url.contains("alpinejs"))
    );
    tool.end_run().await;
}

/// A page whose own script (a bundle whose name does not say Alpine) starts
/// Alpine: pmpo's copy stands aside, and the count is still right.
#[tokio::test]
async fn a_page_that_starts_alpine_itself_gets_no_second_copy() {
    let page = counter("<script defer src=\"js/app.js\"></script>");
    let bundle = pmpo_tools::preview::runtimes::ALPINE_JS;
    let Some((_dir, ws)) = pages(&[("own.html", &page), ("js/app.js", bundle)]) else {
        return;
    };
    let tool = PreviewTool::new();
    let clicks = json!(["#increment", "#increment"]);
    let r = run(&tool, &ws, json!({"input": "own.html", "click": clicks})).await;
    tool.end_run().await;
    assert_eq!(r.status, "success", "{r:?}");
    assert!(r.page_errors.is_empty() && r.console.is_empty(), "{r:?}");
    assert!(finding(&r, "runtime-added").is_none(), "{:?}", r.findings);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("pmpo's copy stood aside")),
        "{:?}",
        r.notes
    );
    let bar = count(&pixels(&ws, "own"), GREEN);
    assert!(
        (9_000..=11_000).contains(&bar),
        "bar of {bar} px, not 200x50"
    );
}

#[tokio::test]
async fn alpine_look_alikes_are_not_alpine() {
    let page = r##"<!doctype html><html><head><title>plain</title>
<style>@media (min-width: 10px) { a:hover { color: red } } .x-data { color: #222 }</style>
<script>const tpl = '<div x-data="{}" @click="go">'; document.title = "a: b";</script>
</head><body>
<p>Meeting at 10:30 @home, ratio 1:2. x-data="not an attribute"</p>
<button @click="save" :disabled="busy" class="x-data">Save</button>
<!-- <div x-data="{ old: true }"></div> -->
</body></html>"##;
    let Some((_dir, ws)) = pages(&[("plain.html", page)]) else {
        return;
    };
    let tool = PreviewTool::new();
    let r = run(&tool, &ws, json!({"input": "plain.html"})).await;
    tool.end_run().await;
    assert_eq!(r.status, "success");
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let html = std::fs::read_to_string(ws.root().join("dist/previews/plain/preview.html"));
    assert!(!html.unwrap().contains("data-pmpo-runtime"));
}

const HELLO: &str = r##"export default function Hello() {
  return <h1 style={{ background: "#aa2266", color: "white", padding: "40px", margin: "0" }}>Hello</h1>;
}
"##;

/// A stand-in for React with the same entry points, so the React path
/// (bundled from the workspace's node_modules, mounted with createRoot)
/// runs without the real package.
const FAKE_REACT: &str = r#"function createElement(type, props, ...children) {
  return { type, props: Object.assign({}, props, children.length ? { children } : {}) };
}
module.exports = { createElement, Fragment: "fragment" };"#;
const FAKE_JSX_RUNTIME: &str = r#"const jsx = (type, props) => ({ type, props });
module.exports = { jsx, jsxs: jsx, Fragment: "fragment" };"#;
const FAKE_REACT_DOM: &str = r#"function toDom(v) {
  if (v == null || v === false) return document.createTextNode("");
  if (typeof v !== "object") return document.createTextNode(String(v));
  if (typeof v.type === "function") return toDom(v.type(v.props || {}));
  const el = document.createElement(v.type);
  const p = v.props || {};
  if (p.style) Object.assign(el.style, p.style);
  [].concat(p.children ?? []).forEach(c => el.append(toDom(c)));
  return el;
}
module.exports = { createRoot: root => ({ render: v => root.append(toDom(v)) }) };"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsx_components_are_mounted_or_say_why_not() {
    let badge = include_str!("../../../examples/ui/components/Badge.tsx");
    let Some((_dir, ws)) = tsx_pages(&[
        ("ui/Hello.tsx", HELLO),
        ("ui/Badge.tsx", badge),
        ("ui/Version.tsx", "export const VERSION = 3;\n"),
        (
            "ui/Element.tsx",
            "export default <div style={{ background: \"#aa2266\", height: \"120px\" }}>an element</div>;\n",
        ),
    ]) else {
        return;
    };
    let tool = PreviewTool::new();
    let vp = json!({"width": 400, "height": 200});
    // A default export without React: mounted with pmpo's JSX factory.
    let r = run(&tool, &ws, json!({"input": "ui/Hello.tsx", "viewport": vp})).await;
    assert_eq!(r.status, "success", "{r:?}");
    assert!(r.page_errors.is_empty(), "{:?}", r.page_errors);
    assert!(!r.image.as_ref().unwrap().blank);
    assert!(
        count(&pixels(&ws, "Hello"), [0xaa, 0x22, 0x66]) > 5_000,
        "Hello not drawn"
    );
    let mounted = finding(&r, "mounted").expect("a finding says pmpo mounted it");
    assert!(mounted.message.contains("`Hello`"), "{}", mounted.message);
    // A default export that is an element, not a component: appended.
    let r = run(
        &tool,
        &ws,
        json!({"input": "ui/Element.tsx", "viewport": vp}),
    )
    .await;
    assert_eq!(r.status, "success", "{r:?}");
    assert!(
        count(&pixels(&ws, "Element"), [0xaa, 0x22, 0x66]) > 5_000,
        "element not drawn"
    );
    // The example with its own `@jsx` pragma mounts itself, as before.
    let r = run(&tool, &ws, json!({"input": "ui/Badge.tsx", "viewport": vp})).await;
    assert_eq!(r.status, "success", "{r:?}");
    assert!(
        count(&pixels(&ws, "Badge"), [0x0f, 0x76, 0x6e]) > 2_000,
        "Badge not drawn"
    );
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    // Nothing mountable: said so, and the blank screenshot names it as the cause.
    let r = run(
        &tool,
        &ws,
        json!({"input": "ui/Version.tsx", "viewport": vp}),
    )
    .await;
    let f = finding(&r, "nothing-to-mount").expect("nothing-to-mount finding");
    assert!(f.message.contains("(exports: VERSION)"), "{}", f.message);
    let blank = finding(&r, "blank-screenshot").expect("blank finding");
    assert!(
        blank.message.contains("`#root` is empty"),
        "{}",
        blank.message
    );
    tool.end_run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn react_components_are_mounted_with_react_dom_or_say_it_is_missing() {
    let react_app = format!("import {{ useState }} from \"react\";\n{HELLO}");
    let Some((_dir, ws)) = tsx_pages(&[
        ("app/App.tsx", &react_app),
        ("bare/App.tsx", &react_app),
        (
            "deep/Main.tsx",
            "import Card from \"./Card\";\nexport default Card;\n",
        ),
        (
            "deep/Card.tsx",
            "import { createElement } from \"react\";\nexport default () => createElement(\"b\", null, \"card\");\n",
        ),
        (
            "app/node_modules/react/package.json",
            "{\"name\":\"react\",\"main\":\"index.js\"}",
        ),
        ("app/node_modules/react/index.js", FAKE_REACT),
        ("app/node_modules/react/jsx-runtime.js", FAKE_JSX_RUNTIME),
        (
            "app/node_modules/react-dom/package.json",
            "{\"name\":\"react-dom\"}",
        ),
        ("app/node_modules/react-dom/client.js", FAKE_REACT_DOM),
    ]) else {
        return;
    };
    let tool = PreviewTool::new();
    let vp = json!({"width": 400, "height": 200});
    // React found in the workspace: bundled and mounted with createRoot.
    let r = run(&tool, &ws, json!({"input": "app/App.tsx", "viewport": vp})).await;
    assert_eq!(r.status, "success", "{r:?}");
    assert!(r.runtime_detail.contains("React"), "{}", r.runtime_detail);
    assert!(
        count(&pixels(&ws, "App"), [0xaa, 0x22, 0x66]) > 5_000,
        "React app not drawn"
    );
    assert!(
        finding(&r, "mounted")
            .unwrap()
            .message
            .contains("createRoot")
    );
    // React imported but not installed: the render fails and says how to install it.
    let r = run(&tool, &ws, json!({"input": "bare/App.tsx", "id": "bare"})).await;
    assert_eq!(r.status, "failed");
    let f = finding(&r, "missing-runtime").expect("missing-runtime finding");
    assert!(f.message.contains("`react` was not found"), "{}", f.message);
    assert!(
        f.hint
            .as_deref()
            .unwrap()
            .contains("npm install react react-dom")
    );
    assert_eq!(r.reason.as_deref(), Some(f.message.as_str()));
    // React needed by a file the entry imports: esbuild's failure is a finding too.
    let r = run(&tool, &ws, json!({"input": "deep/Main.tsx"})).await;
    assert_eq!(r.status, "failed");
    let f = finding(&r, "missing-runtime").expect("missing-runtime finding");
    assert!(
        f.message.contains("`deep/Main.tsx` imports needs React"),
        "{}",
        f.message
    );
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("Could not resolve \"react\"")
    );
    tool.end_run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_render_says_why() {
    let invisible = r##"<!doctype html><html><head><title>t</title>
<style>body{margin:0;background:#ffffff} .hero{padding:40px}
#increment{color:var(--on-primary, #ffffff);background:var(--primary, transparent);border:0;font-size:24px}</style>
</head><body><div class="hero"><button id="increment">Increment</button></div></body></html>"##;
    let hidden = r##"<!doctype html><html><body style="margin:0;background:#102030">
<main style="display:none"><h1>Hidden</h1></main></body></html>"##;
    let failing = r##"<!doctype html><html><body style="margin:0;background:#fff">
<div id="root"></div><script>throw new Error("render failed before paint")</script></body></html>"##;
    let cloaked = r##"<!doctype html><html><head><style>[x-cloak]{display:none}</style></head>
<body style="margin:0;background:#fff"><div x-data="{ name: 'Ada' }" x-cloak><h1 x-text="name">Name</h1></div></body></html>"##;
    let Some((_dir, ws)) = pages(&[
        ("invisible.html", invisible),
        ("hidden.html", hidden),
        ("failing.html", failing),
        ("cloaked.html", cloaked),
    ]) else {
        return;
    };
    let tool = PreviewTool::new();
    let cases = [
        (
            "invisible",
            "#ffffff",
            "text drawn in the colour of its background: `#increment`",
        ),
        (
            "hidden",
            "#102030",
            "everything in <body> that has content is hidden",
        ),
        ("failing", "#ffffff", "render failed before paint"),
    ];
    for (id, colour, cause) in cases {
        let r = run(&tool, &ws, json!({"input": format!("{id}.html")})).await;
        assert_eq!(r.status, "success", "{r:?}");
        let image = r.image.clone().unwrap();
        assert!(image.blank, "{id}: {image:?}");
        assert_eq!(image.main_color.as_deref(), Some(colour));
        assert_eq!(image.main_color_percent, Some(100.0));
        let f = finding(&r, "blank-screenshot").expect("blank finding");
        assert!(
            f.message
                .contains(&format!("one colour, {colour}, on 100% of the pixels")),
            "{}",
            f.message
        );
        assert!(f.message.contains(cause), "{id}: {}", f.message);
        // An empty element is not called hidden.
        assert_eq!(
            f.message.contains("is hidden"),
            id == "hidden",
            "{}",
            f.message
        );
        let shot =
            std::fs::read(ws.root().join(format!("dist/previews/{id}/screenshot.png"))).unwrap();
        let v = evaluate_report(&r, Some(&shot));
        let c = v
            .criteria
            .iter()
            .find(|c| c.name == "screenshot_not_blank")
            .unwrap();
        assert_eq!(c.state, CheckState::Failed);
        assert!(c.detail.contains(cause), "{}", c.detail);
    }
    // A page left cloaked because Alpine never ran: the missing runtime is the first cause.
    let r = run(&tool, &ws, json!({"input": "cloaked.html", "runtimes": []})).await;
    let f = finding(&r, "blank-screenshot").expect("blank finding");
    let why = f.message.split("Likely why: ").nth(1).unwrap_or_default();
    assert!(
        why.starts_with("the page uses Alpine.js directives (x-data, x-cloak, x-text)"),
        "{why}"
    );
    assert!(
        why.contains("everything in <body> that has content is hidden"),
        "{why}"
    );
    tool.end_run().await;
}

#[tokio::test]
async fn white_text_over_a_picture_is_not_invisible() {
    let page = r##"<!doctype html><html><body style="margin:0;background:#fff">
<div style="position:relative;height:300px">
  <div style="position:absolute;inset:0;background:#112233"></div>
  <h1 id="title" style="position:relative;color:#fff;margin:0;padding:40px">Over the picture</h1>
</div>
<p id="ghost" style="color:#ffffff">Nobody sees this</p>
</body></html>"##;
    let Some((_dir, ws)) = pages(&[("hero.html", page)]) else {
        return;
    };
    let tool = PreviewTool::new();
    let r = run(&tool, &ws, json!({"input": "hero.html"})).await;
    tool.end_run().await;
    assert_eq!(r.status, "success");
    let f = finding(&r, "invisible-text").expect("the white paragraph is named");
    assert!(f.message.contains("`#ghost`"), "{}", f.message);
    assert!(!f.message.contains("#title"), "{}", f.message);
}

/// The real React (installed by `npm ci --prefix tools`, beside esbuild): a
/// default-exported component with a hook is bundled with React and mounted
/// with react-dom, and what it renders is on the screenshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_react_component_with_a_hook_renders() {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/node_modules");
    if !modules.join("react-dom/package.json").is_file() {
        assert!(
            !required(),
            "React is required but tools/node_modules has none: run `npm ci --prefix tools`"
        );
        eprintln!(
            "skipping: React is not installed in tools/node_modules (`npm ci --prefix tools`)"
        );
        return;
    }
    let app = r##"import { useState } from "react";
export default function Counter() {
  const [n] = useState(41);
  return <h1 style={{ background: "#aa2266", color: "white", padding: "40px", margin: "0" }}>Count {n + 1}</h1>;
}
"##;
    let Some((_dir, ws)) = tsx_pages(&[("real/App.tsx", app)]) else {
        return;
    };
    std::os::unix::fs::symlink(
        modules.canonicalize().unwrap(),
        ws.root().join("real/node_modules"),
    )
    .unwrap();
    let tool = PreviewTool::new();
    let r = run(
        &tool,
        &ws,
        json!({"input": "real/App.tsx", "viewport": {"width": 400, "height": 200}}),
    )
    .await;
    tool.end_run().await;
    assert_eq!(r.status, "success", "{r:?}");
    assert_eq!(r.counts.console_errors, 0, "{:?}", r.console);
    assert_eq!(r.counts.page_errors, 0, "{:?}", r.page_errors);
    assert!(
        finding(&r, "mounted")
            .unwrap()
            .message
            .contains("createRoot"),
        "{:?}",
        r.findings
    );
    assert!(
        count(&pixels(&ws, "App"), [0xaa, 0x22, 0x66]) > 5_000,
        "the component was not drawn"
    );
    let html = std::fs::read_to_string(ws.root().join("dist/previews/App/bundle.js")).unwrap();
    assert!(html.contains("useState"), "React itself is bundled");
}
