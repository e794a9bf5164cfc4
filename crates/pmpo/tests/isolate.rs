//! Tools that can run long run in a child process of pmpo (issue 15, item 2):
//! a template that would spin for hours ends at its timeout, a cancel stops
//! it at once, a huge allocation hits the memory limit instead of the
//! machine, and a killed tool writes nothing. Normal stages give the same
//! bytes as the same tools in pmpo's own process.

use pmpo_testkit as common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Run, Ws, bin, stage};
use serde_json::Value;

/// Two nested loops of 100000: 10^10 turns, hours of rendering.
const SPIN: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x\n";

/// Doubles a 1 MB string 20 times: a terabyte asked for, one step at a time.
const GROW: &str = "{% set ns = namespace(s=\"a\" * 1000000) %}{% for i in range(20) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}\n";

fn ledger_rows(ws: &Ws, path: &str) -> Vec<Value> {
    let r = ws.run_ok(&["ledger", "--json", "--path", path]);
    r.json().as_array().unwrap().clone()
}

/// Nothing was staged on disk: a tool's writes travel in its answer.
fn staging_is_empty(ws: &Ws) {
    assert!(!ws.p(".state/staging").exists());
}

#[test]
fn a_spinning_template_times_out_writes_nothing_and_the_run_fails_cleanly() {
    let ws = Ws::new();
    ws.write("spin.j2", SPIN);
    ws.write("out.txt", "precious\n");
    ws.plan(
        "    - id: spin\n      tool: template\n      timeout: 2s\n      with: {template: spin.j2, output: out.txt}\n    - id: after\n      with: {command: [sh, -c, 'echo after > after.txt']}\n      outputs: [after.txt]\n",
    );
    let t = Instant::now();
    let r = ws.run(&["execute", "plan.yaml", "--json", "-j", "1"]);
    let took = t.elapsed();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(took < Duration::from_secs(8), "the run took {took:?}");
    let j = r.json();
    let spin = stage(&j, "spin");
    assert_eq!(spin["status"], "TIMEOUT", "{spin}");
    let secs = spin["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    assert!((1.9..4.0).contains(&secs), "the stage ran {secs} s: {spin}");
    // The run fails cleanly: the stage after is not started, the results are written.
    assert_eq!(stage(&j, "after")["status"], "SKIPPED");
    assert!(!ws.p("after.txt").exists());
    assert_eq!(
        ws.read_json(".state/execution_results.json")["run_id"],
        j["run_id"]
    );
    // The output is untouched, and the ledger has no completed change of it.
    assert_eq!(std::fs::read(ws.p("out.txt")).unwrap(), b"precious\n");
    let rows = ledger_rows(&ws, "out.txt");
    assert!(rows.iter().all(|r| r["status"] != "completed"), "{rows:?}");
    staging_is_empty(&ws);
}

#[test]
fn sigterm_stops_a_spinning_template_at_once() {
    let ws = Ws::new();
    ws.write("spin.j2", SPIN);
    ws.write("out.txt", "precious\n");
    ws.plan(
        "    - id: first\n      with: {command: [sh, -c, 'echo 1 > first.txt']}\n      outputs: [first.txt]\n    - id: spin\n      depends_on: [first]\n      tool: template\n      with: {template: spin.j2, output: out.txt}\n",
    );
    let child = bin()
        .args(["execute", "plan.yaml", "--json", "-j", "1"])
        .current_dir(ws.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !ws.p("first.txt").exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "first never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let t = Instant::now();
    let r: Run = child.wait_with_output().unwrap().into();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "SIGTERM took {:?} to act",
        t.elapsed()
    );
    assert_eq!(r.code, 143, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["status"], "cancelled");
    assert_eq!(stage(&j, "spin")["status"], "CANCELLED");
    assert_eq!(
        ws.read_json(".state/execution_results.json")["run_id"],
        j["run_id"]
    );
    assert_eq!(std::fs::read(ws.p("out.txt")).unwrap(), b"precious\n");
    staging_is_empty(&ws);
}

#[test]
fn a_huge_allocation_hits_the_memory_limit_and_the_run_fails_cleanly() {
    let ws = Ws::new();
    ws.write("grow.j2", GROW);
    ws.write("out.txt", "precious\n");
    ws.plan(
        "    - id: grow\n      tool: template\n      timeout: 60s\n      with: {template: grow.j2, output: out.txt}\n    - id: after\n      with: {command: [echo, after]}\n",
    );
    let r: Run = bin()
        .args(["execute", "plan.yaml", "--json", "-j", "1"])
        .env("PMPO_TOOL_MEMORY_LIMIT", "512M")
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 1, "{}", r.stderr);
    let j = r.json();
    assert_eq!(stage(&j, "grow")["status"], "FAILED");
    assert_eq!(stage(&j, "after")["status"], "SKIPPED");
    let err = common::error_of(&j, "grow");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("ran out of memory") && message.contains("512 MiB"),
        "{err}"
    );
    assert!(
        err["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("PMPO_TOOL_MEMORY_LIMIT"),
        "{err}"
    );
    assert_eq!(std::fs::read(ws.p("out.txt")).unwrap(), b"precious\n");
    staging_is_empty(&ws);
}

#[test]
fn a_bad_memory_limit_is_named_with_what_to_set() {
    let ws = Ws::new();
    ws.write("t.j2", "hi\n");
    ws.plan("    - id: t\n      tool: template\n      with: {template: t.j2, output: out.txt}\n");
    let r: Run = bin()
        .args(["execute", "plan.yaml", "--json"])
        .env("PMPO_TOOL_MEMORY_LIMIT", "lots")
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 1, "{}", r.stderr);
    let err = common::error_of(&r.json(), "t");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("PMPO_TOOL_MEMORY_LIMIT"),
        "{err}"
    );
    assert!(!ws.p("out.txt").exists());
}

/// A plan with a stage of each isolated tool (and a tool error).
fn all_tools(ws: &Ws) {
    ws.write(
        "page.j2",
        "<h1>{{ TITLE }}</h1>{% for w in words.items %}<li>{{ w }}</li>{% endfor %}\n",
    );
    ws.write("words.json", r#"{"items": ["a", "b & c"]}"#);
    ws.write(
        "doc.md",
        "# Report\n\n## Results\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    );
    ws.write(
        "logo.svg",
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle cx="5" cy="5" r="4" fill="teal"/></svg>"#,
    );
    ws.write(
        "spec.json",
        r#"{"root": {"type": "Column", "id": "c", "children": [{"type": "Text", "id": "t", "props": {"text": "hi"}}]}, "version": "a2ui/v1"}"#,
    );
    ws.write("dist/page.html", "old page\n");
    ws.write(
        "cycle.json",
        r#"{"root": {"type": "Column", "id": "a", "children": [{"type": "Text", "id": "a", "props": {"text": "x"}}]}, "version": "a2ui/v1"}"#,
    );
    ws.plan(concat!(
        "    - id: page\n      tool: template\n      with: {template: page.j2, output: dist/page.html, vars: {TITLE: A & B}, files: {words: words.json}}\n",
        "    - id: md\n      tool: markdown\n      with: {input: doc.md, output: dist/doc.html}\n",
        "    - id: icons\n      tool: rasterize\n      with: {input: logo.svg, sizes: [16, 32], output: 'dist/icon-{size}.png'}\n",
        "    - id: prompt\n      tool: prompt\n      with: {intent: A red fox, requirements: [red], output: dist/prompt.md, meta: dist/prompt.json}\n",
        "    - id: ui\n      tool: a2ui\n      with: {input: spec.json, output: dist/ui.json, report: dist/ui-report.json}\n",
        "    - id: broken\n      tool: template\n      with: {template: missing.j2, output: dist/never.html}\n",
        // Fails, having written its report of why: the report is kept, as in process.
        "    - id: cycle\n      tool: a2ui\n      with: {input: cycle.json, output: dist/cycle.json, report: dist/cycle-report.json}\n",
    ));
}

fn run_with(ws: &Ws, isolation: &str) -> Value {
    let r: Run = bin()
        .args(["execute", "plan.yaml", "--json", "-j", "1", "--keep-going"])
        .env("PMPO_TOOL_ISOLATION", isolation)
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 1, "only `broken` and `cycle` fail: {}", r.stderr);
    r.json()
}

/// The user's files of a workspace (not pmpo's own), with their bytes.
fn user_files(ws: &Ws) -> Vec<(String, Vec<u8>)> {
    ws.files()
        .into_iter()
        .filter(|f| !pmpo_own(f))
        .map(|f| {
            let bytes = std::fs::read(ws.p(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

fn pmpo_own(rel: &str) -> bool {
    [".state/", ".refiner/", "logs/"]
        .iter()
        .any(|d| rel.starts_with(d))
        || ["artifact_manifest.json", "refinement_log.md"].contains(&rel)
}

#[test]
fn every_isolated_tool_gives_the_same_bytes_as_in_process() {
    let (child, own) = (Ws::new(), Ws::new());
    all_tools(&child);
    all_tools(&own);
    let (a, b) = (run_with(&child, "on"), run_with(&own, "off"));
    let files_a = user_files(&child);
    assert_eq!(files_a, user_files(&own));
    for f in [
        "dist/page.html",
        "dist/doc.html",
        "dist/icon-16.png",
        "dist/icon-32.png",
        "dist/prompt.md",
        "dist/prompt.json",
        "dist/ui.json",
        "dist/ui-report.json",
        "dist/cycle-report.json",
    ] {
        assert!(files_a.iter().any(|(n, _)| n == f), "{f} was not written");
    }
    assert_eq!(
        child.read("dist/page.html"),
        "<h1>A &amp; B</h1><li>a</li><li>b &amp; c</li>\n"
    );
    for id in ["page", "md", "icons", "prompt", "ui", "broken", "cycle"] {
        let (sa, sb) = (stage(&a, id), stage(&b, id));
        assert_eq!(sa["status"], sb["status"], "{id}");
        assert_eq!(sa["outputs"], sb["outputs"], "{id}");
        assert_eq!(sa["files"], sb["files"], "{id}");
    }
    assert_eq!(stage(&a, "broken")["status"], "FAILED");
    assert_eq!(stage(&a, "cycle")["status"], "FAILED");
    assert!(child.p("dist/cycle-report.json").is_file());
    assert!(!child.p("dist/cycle.json").exists());
    assert_eq!(
        common::error_of(&a, "broken"),
        common::error_of(&b, "broken")
    );
    staging_is_empty(&child);
}

/// A plan whose stage is checked by each heavy check (some pass, some fail).
fn heavy_checks(ws: &Ws) {
    ws.write("a.yaml", "a: 1\nb: [1, 2\n");
    ws.write("a.xml", "<a><b/></a>\n");
    ws.write("a.html", "<!doctype html><html><head><title>t</title></head><body><a href=\"b.html\">b</a><img src=\"missing.png\"></body></html>\n");
    ws.write("b.html", "<p>b</p>\n");
    ws.write("a.md", "# One\n\n### Three\n");
    ws.write("data.json", r#"{"name": "x", "size": "big"}"#);
    ws.write(
        "logo.svg",
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="32" height="16"><text fill="#777" x="0" y="10">a</text><rect fill="#fff" width="1" height="1"/></svg>"##,
    );
    ws.plan(concat!(
        "    - id: a\n      with: {command: [echo]}\n      validate:\n",
        "        - {check: yaml, with: {path: a.yaml}}\n",
        "        - {check: xml, with: {path: a.xml}}\n",
        "        - {check: html, with: {path: a.html}}\n",
        "        - {check: links, with: {path: a.html}}\n",
        "        - {check: markdown_headings, with: {path: a.md}}\n",
        "        - {check: json_schema, with: {path: data.json, schema: {type: object, required: [name], properties: {size: {type: integer}}}}}\n",
        "        - {check: image_dimensions, with: {path: logo.svg, width: 32, height: 16}}\n",
        "        - {check: aspect_ratio, with: {path: logo.svg, ratio: '2:1'}}\n",
        "        - {check: image_format, with: {path: logo.svg, format: svg}}\n",
        "        - {check: contrast, with: {foreground: '#777', background: '#fff'}}\n",
    ));
}

fn validations(ws: &Ws, env: &[(&str, &str)]) -> (Run, Vec<Value>) {
    let mut c = bin();
    c.args(["execute", "plan.yaml", "--json"])
        .current_dir(ws.path());
    for (k, v) in env {
        c.env(k, v);
    }
    let r: Run = c.output().unwrap().into();
    let j = r.json();
    let v = j["validation_outputs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (r, v)
}

#[test]
fn heavy_checks_give_the_same_verdicts_in_a_child_process() {
    let ws = Ws::new();
    heavy_checks(&ws);
    let (r, child) = validations(&ws, &[("PMPO_TOOL_ISOLATION", "on")]);
    assert_eq!(child.len(), 10, "{}", r.stderr);
    let (_, own) = validations(&ws, &[("PMPO_TOOL_ISOLATION", "off")]);
    let verdict = |v: &Value| {
        let mut e = v["evidence"].clone();
        if let Some(m) = e.as_object_mut() {
            m.remove("duration_ms");
        }
        (v["check"].clone(), v["status"].clone(), e)
    };
    for (a, b) in child.iter().zip(&own) {
        assert_eq!(verdict(a), verdict(b));
    }
    let status = |name: &str| {
        child
            .iter()
            .find(|v| v["check"] == name)
            .map(|v| v["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    // Both kinds of verdict come back from the child.
    assert_eq!(status("xml"), "passed");
    assert_eq!(status("yaml"), "failed");
    assert_eq!(status("json_schema"), "failed");
}

#[test]
fn a_heavy_check_runs_under_the_memory_limit() {
    // Proof that the check runs in a child process under the limit: a 4 MB
    // file cannot be read in 8 MiB of address space (the binary alone takes
    // more), so the check fails saying so, while pmpo itself goes on and
    // reports it; without the low limit the same check passes.
    let ws = Ws::new();
    let big = format!("<a>{}</a>\n", "<b/>".repeat(1 << 20));
    ws.write("a.xml", &big);
    ws.plan("    - id: a\n      with: {command: [echo]}\n      validate:\n        - {check: xml, with: {path: a.xml}}\n");
    let (r, v) = validations(&ws, &[("PMPO_TOOL_MEMORY_LIMIT", "8M")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(v[0]["status"], "failed", "{v:?}");
    let msg = v[0]["evidence"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("`xml` check ran out of memory") && msg.contains("8 MiB"),
        "{msg}"
    );
    std::fs::remove_dir_all(ws.p(".state")).unwrap();
    let (r, v) = validations(&ws, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(v[0]["status"], "passed", "{v:?}");
}
