//! The examples under examples/, run as a new user would run them (copied to
//! a temp directory), and the `pmpo preview` command. Real Chromium: without
//! it these tests say so and pass, unless PMPO_REQUIRE_BROWSER=1 (scripts/test.sh).

use pmpo_testkit as common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Ws, assert_contains, bin, have_chromium};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Copies an example's sources (not what running it in place produced).
fn copy_example(name: &str) -> Ws {
    let ws = Ws::new();
    let src = repo().join("examples").join(name);
    copy_dir(&src, ws.path());
    ws
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if [
            "dist",
            "logs",
            ".state",
            "artifact_manifest.json",
            "refinement_log.md",
        ]
        .contains(&name.as_str())
        {
            continue;
        }
        let target = to.join(&name);
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Width and height from a PNG's header.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[1..4], b"PNG", "{} is not a PNG", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// Chromium processes whose profile directory is gone: orphans of a run
/// that did not clean up (a closed browser is killed before its profile is removed).
fn orphaned_chromium() -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if let Some(pos) = cmd.find("--user-data-dir=") {
            let dir: String = cmd[pos + 16..]
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_string();
            if dir.contains("pmpo-chromium-") && !Path::new(&dir).exists() {
                found.push(cmd);
            }
        }
    }
    found
}

#[test]
fn logo_example_runs_as_is() {
    if !have_chromium() {
        return;
    }
    let ws = copy_example("logo");
    let run = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let results = run.json();
    assert_eq!(results["status"], "completed");
    for size in [16, 32, 48, 64, 128, 192, 256, 512] {
        assert_eq!(
            png_size(&ws.p(&format!("dist/logo-{size}.png"))),
            (size, size)
        );
    }
    let svg = ws.read("dist/logo.svg");
    assert!(svg.contains("#38bdf8") && !svg.contains("{{"));
    let html = ws.read("dist/index.html");
    assert!(
        html.contains("src=\"logo-16.png\""),
        "showcase links the PNGs relatively"
    );
    let report = ws.read_json("dist/previews/showcase/preview-report.json");
    assert_eq!(report["status"], "success", "{report}");
    assert_eq!(report["counts"]["failed_requests"], 0, "{report}");
    assert_eq!(
        png_size(&ws.p("dist/previews/showcase/screenshot.png")),
        (1100, 560)
    );
    let manifest = ws.read_json("artifact_manifest.json");
    assert_eq!(manifest["sizes"].as_array().unwrap().len(), 8);
    assert_eq!(manifest["preview"]["runs"][0]["artifact_id"], "showcase");
    assert_eq!(manifest["preview"]["runs"][0]["runtime_source"], "none");
    assert_eq!(manifest["validation"]["preview_status"], "pass");
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for f in [
        "dist/logo.svg",
        "dist/logo-512.png",
        "dist/index.html",
        "dist/previews/showcase/preview-report.json",
        "dist/previews/showcase/screenshot.png",
    ] {
        assert!(
            files.contains(&f),
            "{f} missing from the manifest: {files:?}"
        );
    }
    // The validation plan is recorded for the checks library.
    let methods: Vec<&str> = results["validation_outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["constraint_id"].is_string())
        .map(|v| v["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["xml", "image_dimensions", "contrast", "manifest", "preview"]
    );
    assert!(orphaned_chromium().is_empty(), "{:?}", orphaned_chromium());
}

#[test]
fn ui_example_shows_diagnostics() {
    if !have_chromium() {
        return;
    }
    let ws = copy_example("ui");
    let run = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let card = ws.read_json("dist/previews/card/preview-report.json");
    assert_eq!(card["status"], "success");
    assert_eq!(card["runtime_source"], "local");
    assert_eq!(card["counts"]["console_errors"], 0, "{card}");
    assert_eq!(card["counts"]["failed_requests"], 0, "{card}");
    let broken = ws.read_json("dist/previews/broken/preview-report.json");
    assert_eq!(broken["status"], "success");
    let text = broken.to_string();
    assert!(text.contains("deliberate: the price list could not be parsed"));
    assert!(text.contains("renderPrices is not defined"));
    assert!(text.contains("https://images.example.com/hero.png"));
    assert!(text.contains("styles/missing.css"));
    assert!(
        broken["timings"]["browser_reused"].as_bool().unwrap(),
        "one browser for the run"
    );
    let manifest = ws.read_json("artifact_manifest.json");
    assert_eq!(manifest["preview"]["runs"].as_array().unwrap().len(), 5);
    let details = ws.read_json("dist/previews/card-details/preview-report.json");
    assert_eq!(details["status"], "success", "{details}");
    assert_eq!(manifest["validation"]["has_console_errors"], true);
    assert_eq!(manifest["validation"]["has_request_failures"], true);
    assert!(
        ws.read("dist/a2ui.html")
            .contains("<span class=\"value\">Ada Kowalska</span>")
    );
    assert!(orphaned_chromium().is_empty(), "{:?}", orphaned_chromium());
}

#[test]
fn content_example_links_resolve() {
    if !have_chromium() {
        return;
    }
    let ws = copy_example("content");
    let run = ws.run(&["execute", "plan.yaml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let html = ws.read("dist/report.html");
    assert!(html.contains("<h2 id=\"build-times\">"));
    assert!(html.contains("href=\"#build-times\""), "table of contents");
    for link in ["figures/build-times.png", "data/builds.csv"] {
        assert!(html.contains(link));
        assert!(ws.p("dist").join(link).is_file(), "{link} resolves");
    }
    assert_eq!(png_size(&ws.p("dist/figures/build-times.png")), (640, 260));
    let report = ws.read_json("dist/previews/report/preview-report.json");
    assert_eq!(report["status"], "success");
    assert_eq!(report["counts"]["failed_requests"], 0, "{report}");
}

#[test]
fn preview_command() {
    if !have_chromium() {
        return;
    }
    let ws = Ws::new();
    ws.write("page.html", "<html><body style=\"background:#0a7\"><h1>ok</h1><script>console.error('bad')</script></body></html>");
    let run = ws.run(&[
        "preview",
        "page.html",
        "--id",
        "card",
        "--viewport",
        "300x200",
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_contains(&run.stdout, "preview card: success");
    assert_contains(&run.stdout, "console error: bad");
    assert_eq!(
        png_size(&ws.p("dist/previews/card/screenshot.png")),
        (300, 200)
    );
    // --strict: the console error fails the check.
    let strict = ws.run(&["preview", "page.html", "--strict", "--json"]);
    assert_eq!(strict.code, 1);
    let out = strict.json();
    assert_eq!(out["check"]["passed"], false);
    assert_eq!(out["report"]["console"][0]["text"], "bad");
    // Not inside the workspace: a usage error.
    let outside = bin()
        .args(["preview", "/etc/hostname"])
        .current_dir(ws.path())
        .output()
        .unwrap();
    assert_eq!(outside.status.code(), Some(2));
}

#[test]
fn killing_pmpo_leaves_no_browser_behind() {
    if !have_chromium() {
        return;
    }
    let ws = Ws::new();
    ws.write("slow.html", "<html><body><h1>slow</h1></body></html>");
    ws.plan("    - id: p\n      tool: preview\n      with: {input: slow.html, wait_ms: 30000}\n");
    // The run's own temp directory, where its browser profile goes: the
    // preview of another test sweeps dead runs' profiles in the shared one.
    let tmp = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["execute", "plan.yaml", "-q"])
        .env("TMPDIR", tmp.path())
        .current_dir(ws.path())
        .spawn()
        .unwrap();
    // Wait for its browser to be up.
    let pid = child.id().to_string();
    let start = Instant::now();
    let ours = || children_of(&pid).len();
    while ours() == 0 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ours() > 0, "the browser did not start");
    let profile = profile_of_child(&pid).expect("the browser's profile directory");
    assert!(
        profile.starts_with(tmp.path()),
        "profile {} is not in the run's TMPDIR {}",
        profile.display(),
        tmp.path().display()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The browser notices its closed pipe and exits, and its helpers with it
    // (in about a second; the bound is for a machine busy with other tests).
    let start = Instant::now();
    while !orphans_of_dead_runs().is_empty() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        orphans_of_dead_runs().is_empty(),
        "{:?}",
        orphans_of_dead_runs()
    );
    // Only the killed run's profile directory stayed; the next browser start removes it.
    assert!(profile.exists());
    ws.write("ok.html", "<html><body><h1>ok</h1></body></html>");
    let run: common::Run = bin()
        .args(["preview", "ok.html"])
        .env("TMPDIR", tmp.path())
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        !profile.exists(),
        "stale profile {} not removed",
        profile.display()
    );
}

/// The `/proc` entries of the processes whose parent is `pid`.
fn children_of(pid: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            // Fields after the command name, which may hold spaces: the parent is field 4.
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                == Some(pid)
        })
        .collect()
}

/// The `--user-data-dir` of the browser started by process `pid`.
fn profile_of_child(pid: &str) -> Option<PathBuf> {
    children_of(pid).into_iter().find_map(|proc_dir| {
        let cmd = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmd)
            .split('\0')
            .find_map(|a| a.strip_prefix("--user-data-dir="))
            .map(PathBuf::from)
    })
}

/// Chromium processes started by pmpo whose parent is gone (re-parented).
fn orphans_of_dead_runs() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains("pmpo-chromium-") || !cmd.contains("--remote-debugging-pipe") {
            continue;
        }
        let ppid = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1).map(str::to_string))
            });
        let parent_alive = ppid.as_ref().is_some_and(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("pmpo"))
                .unwrap_or(false)
        });
        if !parent_alive {
            out.push(cmd);
        }
    }
    out
}

/// `pmpo execute` of a copied example with the given environment.
fn execute_with(ws: &Ws, env: &[(&str, &str)]) -> common::Run {
    let mut cmd = bin();
    cmd.args(["execute", "plan.yaml", "--json"])
        .current_dir(ws.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap().into()
}

/// Every stage of a run's results: (id, status, the reason it was skipped).
fn stages(run: &common::Run) -> Vec<(String, String, String)> {
    let results: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "results are not JSON ({e}):\n{}\n{}",
            run.stdout, run.stderr
        )
    });
    results["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
            (text("id"), text("status"), s.to_string())
        })
        .collect()
}

/// The examples on a machine with neither Chromium nor esbuild: the plans
/// promise that previews are then skipped with the reason, and no stage is
/// skipped because of another tool's absence. The UI example, whose blocking
/// constraint is that the card renders, says it could not be checked.
#[test]
fn examples_without_chromium_or_esbuild_skip_with_the_reason() {
    let none = [
        ("PMPO_CHROMIUM", "/nonexistent/chromium"),
        ("PMPO_ESBUILD", "/nonexistent/esbuild"),
    ];
    for (name, code) in [
        ("hello", 0),
        ("logo", 0),
        ("content", 0),
        ("checks", 0),
        ("ui", 1),
    ] {
        let ws = copy_example(name);
        let run = execute_with(&ws, &none);
        assert_eq!(run.code, code, "{name}:\n{}", run.stderr);
        for (id, status, detail) in stages(&run) {
            assert!(
                status == "COMPLETED" || status == "SKIPPED",
                "{name}/{id} {status}: {detail}"
            );
            if status == "SKIPPED" {
                assert!(
                    detail.contains("Chromium")
                        || detail.contains("PMPO_CHROMIUM")
                        || detail.contains("esbuild"),
                    "{name}/{id} is skipped for another reason than a missing tool: {detail}"
                );
            }
        }
        if name == "ui" {
            assert_contains(&run.stderr, "`card-renders` could not be checked");
            assert_contains(&run.stderr, "esbuild was not found");
        }
    }
}

/// With Chromium but without esbuild, the UI example passes: only the TSX
/// preview (optional) is skipped, and it says why.
#[test]
fn ui_example_without_esbuild_skips_only_the_component() {
    if !have_chromium() {
        return;
    }
    let ws = copy_example("ui");
    let run = execute_with(&ws, &[("PMPO_ESBUILD", "/nonexistent/esbuild")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for (id, status, detail) in stages(&run) {
        if id == "badge" {
            assert_eq!(status, "SKIPPED", "{detail}");
            assert!(detail.contains("esbuild was not found"), "{detail}");
        } else {
            assert_eq!(status, "COMPLETED", "{id}: {detail}");
        }
    }
}
