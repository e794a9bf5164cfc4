//! `pmpo report` through the real binary: the report of a failed run, of a
//! converged three-iteration refinement and of a 1,000-stage run, each
//! rendered by pmpo's own preview in the real browser (no console error, no
//! failed request, not blank); hostile file names and console text escaped;
//! a run with no preview; errors that say what to do; `--json`.

use pmpo_testkit as common;
use pmpo_testkit::model_server::*;
use pmpo_testkit::refine::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::{Value, json};

/// `pmpo report ARGS --json` in the workspace: the JSON it printed.
fn report_json(ws: &Ws, args: &[&str]) -> Value {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    all.push("--json");
    let r = ws.run_ok(&all);
    let v = r.json();
    let rel = v["relative_path"].as_str().unwrap();
    assert!(ws.p(rel).is_file(), "{rel} not written");
    assert_eq!(
        v["size"].as_u64().unwrap(),
        std::fs::metadata(ws.p(rel)).unwrap().len()
    );
    v
}

/// Nothing in the page can reach the network or another file: every `src`
/// and `href` is a `data:` URI or an anchor in the page.
fn assert_self_contained(html: &str) {
    for attr in ["src=\"", "href=\"", "url("] {
        for (at, _) in html.match_indices(attr) {
            let rest = &html[at + attr.len()..];
            assert!(
                rest.starts_with("data:") || rest.starts_with('#'),
                "an external reference: {}",
                &rest[..rest.len().min(80)]
            );
        }
    }
    assert!(!html.contains("<link"), "a <link> element");
    assert!(!html.contains("<script"), "a script");
}

/// Renders the report with `pmpo preview` in the browser at a desktop and a
/// phone width: it renders, with no console error, no uncaught error, no
/// failed request, no critical or serious accessibility violation, and is
/// not blank.
fn assert_renders(ws: &Ws, rel: &str) {
    if !have_chromium() {
        return;
    }
    for (id, viewport) in [("report-desktop", "1280x900"), ("report-phone", "390x844")] {
        let r = ws.run(&[
            "preview",
            rel,
            "--id",
            id,
            "--viewport",
            viewport,
            "--json",
            "--strict",
        ]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        let p = &r.json()["report"];
        assert_eq!(p["status"], "success", "{p}");
        assert_eq!(p["counts"]["console_errors"], 0, "{p}");
        assert_eq!(p["counts"]["page_errors"], 0, "{p}");
        assert_eq!(p["counts"]["failed_requests"], 0, "{p}");
        assert_eq!(p["image"]["blank"], false, "{p}");
        // The report is itself accessible: no critical or serious axe violation.
        let a = &p["accessibility"];
        assert_eq!(a["status"], "checked", "{a}");
        assert_eq!(a["counts"]["critical"], 0, "{a}");
        assert_eq!(a["counts"]["serious"], 0, "{a}");
    }
}

const BROKEN_PAGE: &str = r#"<!doctype html><html><head><title>hostile</title></head>
<body><h1>A page with hostile console text</h1>
<script>console.error('<img src=x onerror=alert(1)>'); console.log('</ul><script>alert(2)<\/script>');</script>
</body></html>"#;

fn failed_run_plan(ws: &Ws) {
    ws.write("pages/hostile.html", BROKEN_PAGE);
    ws.write(
        "plan.yaml",
        r#"specification:
  artifact_name: report-test
  artifact_type: ui
  constraints:
    - {id: page-ok, description: "The page renders <b>cleanly</b>", severity: blocking, type: visual}
plan:
  stages:
    - id: page
      tool: preview
      with: {input: pages/hostile.html, id: hostile, viewport: {width: 1600, height: 300}}
      outputs: [dist/previews/hostile]
    - id: names
      with: {command: [sh, -c, 'mkdir -p out && echo hi > "out/<img src=y onerror=alert(3)>.txt"']}
      outputs: [out]
    - id: boom
      depends_on: [names]
      with: {command: [sh, -c, 'echo "<script>alert(4)</script>" >&2; exit 3']}
      outputs: [never.txt]
  validation_plan:
    - constraint_id: page-ok
      validation_method: preview
      with: {report: dist/previews/hostile/preview-report.json}
"#,
    );
}

#[test]
fn a_failed_run_reads_whole_and_renders_cleanly() {
    let ws = Ws::new();
    failed_run_plan(&ws);
    let run = ws.run_code(1, &["execute", "plan.yaml", "--keep-going"]);
    // The run ends by naming the command that builds its report.
    assert!(
        run.stderr.contains("report: pmpo report "),
        "{}",
        run.stderr
    );
    let v = report_json(&ws, &[]);
    assert_eq!(v["kind"], "run");
    assert_eq!(v["counts"]["stages"], 3);
    assert_eq!(v["counts"]["failed"], 1);
    assert_eq!(v["counts"]["constraints"], 1);
    let rel = v["relative_path"].as_str().unwrap();
    assert!(rel.starts_with("reports/run-"), "{rel}");
    let html = ws.read(rel);
    assert_self_contained(&html);
    // The timeline, the failure with its error, the constraint, the preview
    // with its screenshot, the files of the ledger.
    for needle in [
        "FAILED",
        "exit code 3",
        "page-ok",
        "data:image/png;base64,",
        "<code>boom</code>",
        "created",
    ] {
        assert!(html.contains(needle), "no `{needle}` in the report");
    }
    if have_chromium() {
        assert_eq!(v["counts"]["previews"], 1);
        assert_eq!(v["counts"]["screenshots"], 1);
    }
    // Hostile names and console text are text, never markup.
    for raw in [
        "<img src=x",
        "<img src=y",
        "<script>alert(2)",
        "<script>alert(4)",
        "<b>cleanly</b>",
    ] {
        assert!(!html.contains(raw), "`{raw}` reached the page unescaped");
    }
    assert!(html.contains("&lt;img src=y onerror=alert(3)&gt;.txt"));
    if have_chromium() {
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        // A screenshot wider than 1,280 px is scaled down, and says so.
        assert!(html.contains("scaled down from 1600x300 to 1280px wide"));
    }
    assert!(html.contains("&lt;script&gt;alert(4)&lt;/script&gt;"));
    // The report was written through the store: the ledger has it.
    let ledger = ws.run_ok(&["ledger", "--path", rel, "--json"]).json();
    assert_eq!(ledger[0]["writer"], "report", "{ledger}");
    assert_renders(&ws, rel);
}

/// Runs a plan of one process stage and no preview; its results and run id.
fn one_stage_run(ws: &Ws) -> (pmpo_testkit::Run, String) {
    ws.write(
        "plan.yaml",
        "specification: {artifact_name: plain, artifact_type: code}\nplan:\n  stages:\n    - id: one\n      with: {command: [sh, -c, 'echo 1 > one.txt']}\n      outputs: [one.txt]\n",
    );
    let run = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let id = run.json()["run_id"].as_str().unwrap().to_string();
    (run, id)
}

#[test]
fn a_run_without_previews_and_a_chosen_output() {
    let ws = Ws::new();
    let (run, id) = one_stage_run(&ws);
    assert!(
        !run.stdout.contains("pmpo report"),
        "the command went to stdout"
    );
    let v = report_json(&ws, &[&id, "-o", "out/r.html"]);
    assert_eq!(v["relative_path"], "out/r.html");
    assert_eq!(v["target"], id.as_str());
    assert_eq!(v["counts"]["previews"], 0);
    let html = ws.read("out/r.html");
    assert!(html.contains("this run made no preview"));
    assert!(html.contains("one.txt"));
    assert_self_contained(&html);
    // Outside the workspace, or in pmpo's own directories: refused.
    let r = ws.run_code(2, &["report", "-o", "/tmp/pmpo-report-elsewhere.html"]);
    assert!(
        r.stderr.contains("is not a file of the workspace"),
        "{}",
        r.stderr
    );
    ws.run_code(2, &["report", "-o", ".state/r.html"]);
    // A browser that cannot be started is a warning, not a failure.
    let r = common::bin()
        .current_dir(ws.path())
        .env("BROWSER", "/nonexistent/browser")
        .args(["report", "--open"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("warning: cannot open the report with `/nonexistent/browser`"),
        "{err}"
    );
    // Plain output: the path, and nothing else.
    let r = ws.run_ok(&["report"]);
    assert_eq!(
        r.stdout.trim(),
        ws.p(&format!("reports/run-{id}.html"))
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
    );
    assert_renders(&ws, "out/r.html");
}

#[test]
fn nothing_to_report_says_what_there_is_and_what_to_do() {
    let ws = Ws::new();
    let r = ws.run_code(2, &["report"]);
    assert!(r.stderr.contains("no pmpo runs in"), "{}", r.stderr);
    assert!(
        r.stderr.contains("help: run `pmpo execute PLAN`"),
        "{}",
        r.stderr
    );
    let r = ws.run_code(2, &["report", "-w", "no/such/dir"]);
    assert!(r.stderr.contains("no/such/dir"), "{}", r.stderr);
    let (_, id) = one_stage_run(&ws);
    let r = ws.run_code(2, &["report", "20990101T000000Z-000000"]);
    assert!(
        r.stderr
            .contains("no run or artifact named `20990101T000000Z-000000`"),
        "{}",
        r.stderr
    );
    // The hint names the recent runs and the commands that list them.
    assert!(r.stderr.contains(&id), "{}", r.stderr);
    assert!(r.stderr.contains("pmpo list"), "{}", r.stderr);
    ws.run_code(2, &["report", "artifact:../x"]);
    ws.run_code(2, &["report", "artifact:plain"]);
    // A prefix says which kind a name is.
    let v = report_json(&ws, &[&format!("run:{id}")]);
    assert_eq!(
        (v["kind"].as_str(), v["target"].as_str()),
        (Some("run"), Some(id.as_str()))
    );
}

/// The three pages of a UI refinement: two with console errors (the
/// blocking `renders` is violated), then a clean one.
const PAGES: [&str; 3] = [
    "<!doctype html><html lang=\"en\"><head><title>Card</title></head><body style=\"background:#fde68a\"><h1>Draft one</h1><script>console.error('not yet')</script></body></html>",
    "<!doctype html><html lang=\"en\"><head><title>Card</title></head><body style=\"background:#bfdbfe\"><h1>Draft two</h1><p>closer</p><script>console.error('still not')</script></body></html>",
    "<!doctype html><html lang=\"en\"><head><title>Card</title></head><body style=\"background:#bbf7d0\"><h1>Final</h1><p>clean</p></body></html>",
];

fn ui_plan(k: usize) -> Value {
    json!({"stages": [
        {"id": "import", "tool": "run", "description": "this iteration's page",
         "with": {"command": ["sh", "-c", format!("mkdir -p dist && cp pages/v{k}.html dist/card.html")]},
         "outputs": ["dist/card.html"]},
        {"id": "preview", "tool": "preview", "depends_on": ["import"], "description": "render it",
         "with": {"input": "dist/card.html", "id": "card", "viewport": {"width": 480, "height": 320}},
         "outputs": ["dist/previews/card"]},
    ]})
}

#[test]
fn a_converged_three_iteration_refinement_shows_its_iterations_side_by_side() {
    if !have_chromium() {
        return;
    }
    let ws = Ws::new();
    for (k, page) in PAGES.iter().enumerate() {
        ws.write(&format!("pages/v{}.html", k + 1), page);
    }
    ws.write("pages/card.html", PAGES[2]);
    let plans = Arc::new(AtomicUsize::new(0));
    let count = plans.clone();
    let server = ModelServer::start(move |s, _| {
        let p = s.prompt();
        if p.starts_with("Phase: Specify") {
            reply_json(json!({"goals": ["a card that renders cleanly"], "constraints": []}))
        } else if p.starts_with("Phase: Plan") {
            let n = count.fetch_add(1, Ordering::SeqCst);
            reply_json(ui_plan(n.min(2) + 1))
        } else if p.starts_with("Phase: Reflect") {
            judge_all(&p, "looks right")
        } else {
            openai_error(400, "unexpected prompt", "bad")
        }
    });
    let args = [
        "refine",
        "card",
        "--type",
        "ui",
        "--input",
        "pages/card.html",
        "--json",
    ];
    let r = run_code(with_model(&ws, &server, "sk-report-test", "m"), 0, &args);
    let out = r.json();
    assert_eq!(out["outcome"], "converged", "{}", r.stderr);
    assert_eq!(out["iteration"], 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("report: pmpo report card"),
        "{}",
        r.stderr
    );
    assert_eq!(out["report_command"], "pmpo report card");
    // Persist kept each iteration's screenshot.
    for i in 1..=3 {
        let index = ws.read_json(&format!(
            ".refiner/artifacts/card/screenshots/iteration-{i}/index.json"
        ));
        assert_eq!(
            index["files"][0]["path"],
            "dist/previews/card/screenshot.png"
        );
        assert!(ws.p(index["files"][0]["copy"].as_str().unwrap()).is_file());
    }
    let v = report_json(&ws, &["card"]);
    assert_eq!(v["kind"], "artifact");
    assert_eq!(v["counts"]["iterations"], 3);
    assert_eq!(v["counts"]["diffs"], 2, "{v}");
    assert_eq!(v["counts"]["screenshots"], 3, "{v}");
    let html = ws.read(v["relative_path"].as_str().unwrap());
    assert_self_contained(&html);
    for needle in [
        "<th>iteration 1</th>",
        "<th>iteration 3</th>",
        "renders",
        "violated",
        "continue",
        "terminate",
        "changed pixels (magenta)",
    ] {
        assert!(html.contains(needle), "no `{needle}` in the report");
    }
    // The background changed: most pixels differ between the iterations.
    let pct: f64 = html
        .split("changed pixels (magenta): ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(pct > 50.0, "{pct}");
    assert_renders(&ws, v["relative_path"].as_str().unwrap());
}

#[test]
fn a_run_of_1000_stages_gives_a_report_under_2_mb() {
    let ws = Ws::new();
    ws.write("t.txt", "stage {{ N }}\n");
    let mut plan = String::from(
        "specification: {artifact_name: big, artifact_type: code}\nplan:\n  stages:\n",
    );
    for i in 0..1000 {
        plan.push_str(&format!(
            "    - id: s{i}\n      tool: template\n      with: {{template: t.txt, output: out/{i}.txt, vars: {{N: {i}}}}}\n      outputs: [out/{i}.txt]\n"
        ));
    }
    ws.write("plan.yaml", &plan);
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    let v = report_json(&ws, &[]);
    assert_eq!(v["counts"]["stages"], 1000);
    assert!(v["counts"]["files"].as_u64().unwrap() >= 1000, "{v}");
    let size = v["size"].as_u64().unwrap();
    assert!(size < 2 << 20, "{size} bytes");
    let html = ws.read(v["relative_path"].as_str().unwrap());
    assert!(html.contains("<code>s999</code>"));
    assert_renders(&ws, v["relative_path"].as_str().unwrap());
}

#[test]
fn a_link_at_the_report_or_its_folder_is_never_written_through() {
    let ws = Ws::new();
    let (_, id) = one_stage_run(&ws);
    let outside = tempfile::tempdir().unwrap();
    // The folder is a link out of the workspace.
    std::os::unix::fs::symlink(outside.path(), ws.p("reports")).unwrap();
    let r = ws.run_code(1, &["report"]);
    assert!(r.stderr.contains("through a symbolic link"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    // The file is a link to a file outside: left as it is, never followed.
    std::fs::remove_file(ws.p("reports")).unwrap();
    std::fs::create_dir(ws.p("reports")).unwrap();
    let target = outside.path().join("target.html");
    std::fs::write(&target, "untouched").unwrap();
    std::os::unix::fs::symlink(&target, ws.p(&format!("reports/run-{id}.html"))).unwrap();
    let r = ws.run_code(1, &["report"]);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    // -o through a link out of the workspace is refused before anything is written.
    std::os::unix::fs::symlink(outside.path(), ws.p("out")).unwrap();
    let r = ws.run_code(2, &["report", "-o", "out/r.html"]);
    assert!(
        r.stderr.contains("is not a file of the workspace"),
        "{}",
        r.stderr
    );
    assert!(!outside.path().join("r.html").exists());
}
