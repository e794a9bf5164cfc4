//! The offline domain adapters, run through `pmpo refine --offline` on real
//! inputs: the plan each adapter writes (stage ids, tools, validation plan),
//! the outcome on good and bad inputs, the files in `dist/` and the
//! manifest, and the usage errors that stop a refinement before it writes.
//!
//! Adapters that preview need Chromium (and esbuild for TSX). Without them
//! the outcome of those runs is not asserted, unless PMPO_REQUIRE_BROWSER=1,
//! which makes a missing browser a failure.

use pmpo_testkit as common;

use std::path::Path;

use common::{Run, Ws, bin};
use serde_json::Value;

fn fixtures() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/refine"
    ))
}

fn require_browser() -> bool {
    std::env::var("PMPO_REQUIRE_BROWSER").ok().as_deref() == Some("1")
}

/// Whether previews can run here (Chromium found); a failure when required but missing.
fn have_chromium() -> bool {
    let found = std::env::var_os("PMPO_CHROMIUM").is_some()
        || ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .any(|p| Path::new(p).exists());
    assert!(
        found || !require_browser(),
        "Chromium is required (PMPO_REQUIRE_BROWSER=1) but was not found"
    );
    found
}

/// Whether TSX previews can run here (Chromium and esbuild).
fn have_esbuild() -> bool {
    let found = std::env::var_os("PMPO_ESBUILD").is_some()
        || Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tools/node_modules/.bin/esbuild")
            .is_file();
    assert!(
        found || !require_browser(),
        "esbuild is required for TSX previews (PMPO_REQUIRE_BROWSER=1) but was not found; run `npm ci --prefix tools`"
    );
    found
}

/// Copies a fixture directory (recursively) into the workspace at `to`.
fn copy_fixture(ws: &Ws, from: &str, to: &str) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                copy(&p, &to.join(e.file_name()));
            } else {
                std::fs::copy(&p, to.join(e.file_name())).unwrap();
            }
        }
    }
    copy(&fixtures().join(from), &ws.p(to));
}

/// `pmpo refine NAME --offline --json ARGS...` in the workspace.
fn refine(ws: &Ws, name: &str, args: &[&str]) -> Run {
    let r: Run = bin()
        .args(["refine", name, "--offline", "--json"])
        .args(args)
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into();
    assert!(
        r.code != 2,
        "refine {name} {args:?} was refused:\n{}",
        r.stderr
    );
    r
}

/// The plan of an artifact's first iteration.
fn plan(ws: &Ws, name: &str) -> Value {
    ws.read_json(&format!(".refiner/artifacts/{name}/plans/iteration-1.json"))
}

/// `(stage id, tool)` in plan order.
fn stages(plan: &Value) -> Vec<(String, String)> {
    plan["plan"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["tool"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn stage<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan["plan"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no stage {id} in the plan"))
}

fn check<'a>(plan: &'a Value, constraint: &str) -> &'a Value {
    plan["plan"]["validation_plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["constraint_id"] == constraint)
        .unwrap_or_else(|| panic!("no check of {constraint} in the validation plan"))
}

/// Asserts the stages (ids and tools, in order), and that the validation
/// plan holds exactly one check per constraint that declares a validation
/// method, with that method, and that those are the `checked` ones.
fn assert_plan(plan: &Value, want_stages: &[(&str, &str)], checked: &[&str]) {
    let got = stages(plan);
    let want: Vec<(String, String)> = want_stages
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want, "stages of the plan");
    let invocations: Vec<&str> = plan["plan"]["tool_invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["stage"].as_str().unwrap())
        .collect();
    let ids: Vec<&str> = want_stages.iter().map(|(id, _)| *id).collect();
    assert_eq!(invocations, ids, "tool_invocations follow the stages");

    let vp: Vec<&Value> = plan["plan"]["validation_plan"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let vp_ids: Vec<&str> = vp
        .iter()
        .map(|v| v["constraint_id"].as_str().unwrap())
        .collect();
    let constraints = plan["specification"]["constraints"].as_array().unwrap();
    let with_method: Vec<&str> = constraints
        .iter()
        .filter(|c| c["validation"]["validation_method"].is_string())
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        vp_ids, with_method,
        "one check per constraint that has a validation method"
    );
    assert_eq!(vp_ids, checked, "the checked constraints");
    for v in vp {
        let c = constraints
            .iter()
            .find(|c| c["id"] == v["constraint_id"])
            .unwrap();
        assert_eq!(
            v["validation_method"], c["validation"]["validation_method"],
            "method of {}",
            v["constraint_id"]
        );
        assert!(
            v["with"].is_object(),
            "parameters of {}",
            v["constraint_id"]
        );
    }
}

fn status<'a>(report: &'a Value, id: &str) -> &'a str {
    report["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no constraint {id} in the report: {report}"))["status"]
        .as_str()
        .unwrap()
}

/// Asserts a run converged in its first iteration, every checked constraint satisfied.
fn assert_converged(ws: &Ws, r: &Run, name: &str) -> Value {
    assert_eq!(r.code, 0, "{name}: {}", r.stderr);
    let report = r.json();
    assert_eq!(report["outcome"], "converged", "{report}");
    assert_eq!(report["iteration"], 1, "{report}");
    for c in report["constraints"].as_array().unwrap() {
        assert_ne!(c["status"], "violated", "{name}: {c}");
    }
    assert_eq!(
        ws.read_json(&format!(".refiner/artifacts/{name}/state.json"))["convergence_status"],
        "converged"
    );
    report
}

/// Asserts a run with `--max-iterations 2` ended unconverged with `violated` violated.
fn assert_not_converged(ws: &Ws, r: &Run, name: &str, violated: &str) -> Value {
    assert_eq!(r.code, 1, "{name}: {}", r.stderr);
    let report = r.json();
    assert_eq!(report["outcome"], "max_iterations_exceeded", "{report}");
    assert_eq!(report["iteration"], 2, "{report}");
    assert_eq!(status(&report, violated), "violated", "{report}");
    assert_eq!(
        ws.read_json(&format!(".refiner/artifacts/{name}/state.json"))["convergence_status"],
        "max_iterations_exceeded"
    );
    assert!(
        ws.p(&format!(
            ".refiner/artifacts/{name}/reflections/iteration-2.json"
        ))
        .is_file()
    );
    report
}

/// Asserts the files exist and the manifest lists each of them.
fn assert_dist(ws: &Ws, files: &[&str]) {
    let manifest = ws.read_json("artifact_manifest.json");
    let listed: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for f in files {
        assert!(ws.p(f).is_file(), "{f} is missing");
        assert!(
            listed.contains(f),
            "artifact_manifest.json does not list {f}: {listed:?}"
        );
    }
}

/// A small real PNG (RGB, 8 bits), built with the zlib "stored" mode.
fn png(width: u32, height: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    // Each row: filter type 0, then the pixels.
    let row: Vec<u8> = std::iter::once(0)
        .chain((0..width).flat_map(|_| [200, 30, 30]))
        .collect();
    let raw = row.repeat(height as usize);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    let mut z = vec![0x78, 0x01, 1];
    z.extend((raw.len() as u16).to_le_bytes());
    z.extend((!(raw.len() as u16)).to_le_bytes());
    z.extend(&raw);
    z.extend(((b << 16) | a).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

// ---- logo ------------------------------------------------------------------

#[test]
fn logo_plan_dist_and_contrast_failure() {
    let browser = have_chromium();
    let ws = Ws::new();
    copy_fixture(&ws, "logo", "brand");

    let r = refine(
        &ws,
        "beacon",
        &["--type", "logo", "--input", "brand/good.svg"],
    );
    let p = plan(&ws, "beacon");
    assert_plan(
        &p,
        &[
            ("import", "run"),
            ("sizes", "rasterize"),
            ("showcase", "template"),
            ("preview", "preview"),
        ],
        &[
            "svg-valid",
            "png-sizes",
            "dark-contrast",
            "light-contrast",
            "svg-lightweight",
            "showcase-renders",
            "manifest-complete",
        ],
    );
    let import = stage(&p, "import");
    assert_eq!(import["inputs"][0], "brand/good.svg");
    assert_eq!(import["outputs"][0], "dist/logo.svg");
    let sizes = stage(&p, "sizes");
    assert_eq!(sizes["with"]["input"], "dist/logo.svg");
    assert_eq!(
        sizes["with"]["sizes"],
        serde_json::json!([16, 32, 48, 64, 128, 192, 256, 512])
    );
    assert_eq!(sizes["with"]["output"], "dist/logo-{size}.png");
    assert_eq!(
        stage(&p, "showcase")["with"]["template"],
        "builtin:logo-showcase"
    );
    let preview = stage(&p, "preview");
    assert_eq!(preview["with"]["input"], "dist/index.html");
    assert_eq!(
        check(&p, "showcase-renders")["with"]["report"],
        format!(
            "{}/{}/preview-report.json",
            preview["with"]["out_dir"]
                .as_str()
                .unwrap_or("dist/previews"),
            preview["with"]["id"].as_str().unwrap()
        )
    );
    assert_eq!(check(&p, "dark-contrast")["with"]["background"], "#111318");
    assert_eq!(check(&p, "light-contrast")["with"]["background"], "#ffffff");

    let mut dist = vec!["dist/logo.svg".to_string(), "dist/index.html".to_string()];
    dist.extend([16, 32, 48, 64, 128, 192, 256, 512].map(|s| format!("dist/logo-{s}.png")));
    let dist: Vec<&str> = dist.iter().map(String::as_str).collect();
    if browser {
        let report = assert_converged(&ws, &r, "beacon");
        assert_eq!(status(&report, "png-sizes"), "satisfied");
        assert_eq!(status(&report, "showcase-renders"), "satisfied");
        assert_dist(&ws, &dist);
        assert!(ws.p("dist/previews/showcase/screenshot.png").is_file());
    } else {
        eprintln!("Chromium not found: the logo's outcome is not asserted");
        assert_dist(&ws, &dist);
    }

    // A colour that disappears on the dark background: dark-contrast (high)
    // is violated, so the loop never converges.
    let r = refine(
        &ws,
        "night",
        &[
            "--type",
            "logo",
            "--input",
            "brand/dark.svg",
            "--max-iterations",
            "2",
        ],
    );
    let report = assert_not_converged(&ws, &r, "night", "dark-contrast");
    assert_eq!(status(&report, "svg-valid"), "satisfied");
    assert_eq!(status(&report, "light-contrast"), "satisfied");
}

// ---- ui --------------------------------------------------------------------

#[test]
fn ui_html_page() {
    let browser = have_chromium();
    let ws = Ws::new();
    copy_fixture(&ws, "ui", "pages");
    let r = refine(
        &ws,
        "status",
        &["--type", "ui", "--input", "pages/card.html"],
    );
    let p = plan(&ws, "status");
    assert_plan(
        &p,
        &[("import", "run"), ("preview", "preview")],
        &[
            "renders",
            "html-valid",
            "offline-runtime",
            "manifest-complete",
        ],
    );
    let preview = stage(&p, "preview");
    assert_eq!(preview["with"]["input"], "pages/card.html");
    assert_eq!(preview["with"]["required"], true);
    assert_eq!(
        check(&p, "renders")["with"]["report"],
        "dist/previews/card/preview-report.json"
    );
    assert_eq!(check(&p, "html-valid")["with"]["path"], "pages/card.html");
    if browser {
        let report = assert_converged(&ws, &r, "status");
        assert_eq!(status(&report, "renders"), "satisfied");
        assert_eq!(status(&report, "accessible-names"), "not_checked");
        assert_dist(
            &ws,
            &["dist/card.html", "dist/previews/card/screenshot.png"],
        );
    } else {
        eprintln!("Chromium not found: the page's outcome is not asserted");
    }

    // A remote script, not written as `<script src="http...`: still caught.
    let page = ws.read("pages/card.html").replace(
        "<script>",
        "<script type=\"module\" src=\"//cdn.example.com/app.js\"></script>\n  <script>",
    );
    ws.write("pages/remote.html", &page);
    let r = refine(
        &ws,
        "remote",
        &[
            "--type",
            "ui",
            "--input",
            "pages/remote.html",
            "--max-iterations",
            "1",
        ],
    );
    assert_eq!(
        status(&r.json(), "offline-runtime"),
        "violated",
        "{}",
        r.stdout
    );
}

#[test]
fn ui_tsx_component() {
    let browser = have_chromium() && have_esbuild();
    let ws = Ws::new();
    copy_fixture(&ws, "ui", "src");
    let r = refine(&ws, "badge", &["--type", "ui", "--input", "src/Badge.tsx"]);
    let p = plan(&ws, "badge");
    assert_plan(
        &p,
        &[("import", "run"), ("preview", "preview")],
        &["renders", "exports-component", "manifest-complete"],
    );
    assert_eq!(stage(&p, "preview")["with"]["input"], "src/Badge.tsx");
    assert_eq!(
        check(&p, "renders")["with"]["report"],
        "dist/previews/Badge/preview-report.json"
    );
    if browser {
        // The component mounts itself into #root, which the preview host page provides.
        let report = assert_converged(&ws, &r, "badge");
        assert_eq!(status(&report, "exports-component"), "satisfied");
        assert_dist(
            &ws,
            &["dist/Badge.tsx", "dist/previews/Badge/screenshot.png"],
        );
    } else {
        eprintln!("Chromium or esbuild not found: the component's outcome is not asserted");
    }
}

// ---- a2ui ------------------------------------------------------------------

#[test]
fn a2ui_spec_and_binding_cycle() {
    let browser = have_chromium();
    let ws = Ws::new();
    copy_fixture(&ws, "a2ui", "specs");
    let r = refine(
        &ws,
        "profile",
        &["--type", "a2ui", "--input", "specs/profile.a2ui.json"],
    );
    let p = plan(&ws, "profile");
    assert_plan(
        &p,
        &[
            ("normalize", "a2ui"),
            ("layout", "template"),
            ("preview", "preview"),
        ],
        &[
            "schema-valid",
            "no-binding-cycles",
            "normalized",
            "renders",
            "manifest-complete",
        ],
    );
    let normalize = stage(&p, "normalize");
    assert_eq!(normalize["with"]["input"], "specs/profile.a2ui.json");
    assert_eq!(normalize["with"]["output"], "dist/profile.a2ui.json");
    assert_eq!(normalize["with"]["report"], "dist/profile.a2ui-report.json");
    assert_eq!(
        stage(&p, "layout")["with"]["files"]["SPEC"],
        "dist/profile.a2ui.json"
    );
    assert_eq!(stage(&p, "preview")["with"]["input"], "dist/profile.html");
    assert_eq!(
        check(&p, "no-binding-cycles")["with"]["path"],
        "dist/profile.a2ui-report.json"
    );
    assert_eq!(
        check(&p, "renders")["with"]["report"],
        "dist/previews/profile/preview-report.json"
    );
    let files = [
        "dist/profile.a2ui.json",
        "dist/profile.a2ui-report.json",
        "dist/profile.html",
    ];
    if browser {
        let report = assert_converged(&ws, &r, "profile");
        assert_eq!(status(&report, "no-binding-cycles"), "satisfied");
        assert_eq!(status(&report, "renders"), "satisfied");
        assert_dist(&ws, &files);
        assert!(ws.p("dist/previews/profile/screenshot.png").is_file());
    } else {
        eprintln!("Chromium not found: the spec's outcome is not asserted");
        assert_dist(&ws, &files);
    }

    // A binding loop (panel -> toggle -> panel) and a repeated id.
    let r = refine(
        &ws,
        "loop",
        &[
            "--type",
            "a2ui",
            "--input",
            "specs/cycle.a2ui.json",
            "--max-iterations",
            "2",
        ],
    );
    let report = assert_not_converged(&ws, &r, "loop", "no-binding-cycles");
    assert_eq!(status(&report, "schema-valid"), "satisfied");
    let found = ws.read_json("dist/cycle.a2ui-report.json");
    assert_eq!(found["duplicates"], serde_json::json!(["toggle"]));
    assert_eq!(found["cycles"].as_array().unwrap().len(), 1, "{found}");
}

// ---- image -----------------------------------------------------------------

#[test]
fn image_png_and_svg() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.p("art")).unwrap();
    std::fs::write(ws.p("art/dot.png"), png(4, 2)).unwrap();
    let r = refine(
        &ws,
        "dot",
        &[
            "--type",
            "image",
            "--input",
            "art/dot.png",
            "--set",
            "width=4",
            "--set",
            "height=2",
            "--set",
            "aspect=2:1",
        ],
    );
    let p = plan(&ws, "dot");
    assert_plan(
        &p,
        &[("import", "run")],
        &[
            "format",
            "size-budget",
            "dimensions",
            "aspect",
            "manifest-complete",
        ],
    );
    assert_eq!(check(&p, "dimensions")["with"]["path"], "dist/dot.png");
    assert_eq!(check(&p, "dimensions")["with"]["width"], 4);
    let report = assert_converged(&ws, &r, "dot");
    assert_eq!(status(&report, "format"), "satisfied");
    assert_eq!(status(&report, "dimensions"), "satisfied");
    assert_dist(&ws, &["dist/dot.png"]);

    // An SVG is rasterized first; the checks look at the PNG.
    copy_fixture(&ws, "logo", "art");
    let r = refine(
        &ws,
        "mark",
        &[
            "--type",
            "image",
            "--input",
            "art/good.svg",
            "--set",
            "size=96",
        ],
    );
    let p = plan(&ws, "mark");
    assert_plan(
        &p,
        &[("import", "run"), ("rasterize", "rasterize")],
        &["format", "size-budget", "manifest-complete"],
    );
    let raster = stage(&p, "rasterize");
    assert_eq!(raster["with"]["input"], "dist/good.svg");
    assert_eq!(raster["with"]["sizes"], serde_json::json!([96]));
    assert_eq!(check(&p, "format")["with"]["path"], "dist/good-96.png");
    assert_converged(&ws, &r, "mark");
    assert_dist(&ws, &["dist/good.svg", "dist/good-96.png"]);

    // Text with a .png name: the format check fails.
    ws.write("art/fake.png", "not an image\n");
    let r = refine(
        &ws,
        "fake",
        &[
            "--type",
            "image",
            "--input",
            "art/fake.png",
            "--max-iterations",
            "2",
        ],
    );
    assert_not_converged(&ws, &r, "fake", "format");
}

// ---- content ---------------------------------------------------------------

#[test]
fn content_markdown_with_relative_links() {
    let browser = have_chromium();
    let ws = Ws::new();
    copy_fixture(&ws, "content", ".");
    let r = refine(
        &ws,
        "guide",
        &["--type", "content", "--input", "docs/guide.md"],
    );
    let p = plan(&ws, "guide");
    assert_plan(
        &p,
        &[
            ("render", "markdown"),
            ("page", "template"),
            ("assets", "run"),
            ("preview", "preview"),
        ],
        &[
            "page-exists",
            "heading-hierarchy",
            "links-resolve",
            "renders",
            "manifest-complete",
        ],
    );
    assert_eq!(stage(&p, "render")["with"]["input"], "docs/guide.md");
    assert_eq!(
        stage(&p, "page")["with"]["template"],
        "builtin:content-report"
    );
    let assets = stage(&p, "assets");
    assert_eq!(
        assets["outputs"],
        serde_json::json!(["dist/data/checks.csv", "dist/img/pipeline.svg"])
    );
    let deps = stage(&p, "preview")["depends_on"].clone();
    assert_eq!(deps, serde_json::json!(["page", "assets"]));
    assert_eq!(
        check(&p, "links-resolve")["with"]["path"],
        "dist/guide.html"
    );
    assert_eq!(
        check(&p, "heading-hierarchy")["with"]["path"],
        "docs/guide.md"
    );
    let files = [
        "dist/guide.html",
        "dist/guide-body.html",
        "dist/img/pipeline.svg",
        "dist/data/checks.csv",
    ];
    if browser {
        let report = assert_converged(&ws, &r, "guide");
        assert_eq!(status(&report, "links-resolve"), "satisfied");
        assert_eq!(status(&report, "renders"), "satisfied");
        assert_dist(&ws, &files);
    } else {
        eprintln!("Chromium not found: the document's outcome is not asserted");
        assert_dist(&ws, &files);
    }
}

// ---- code ------------------------------------------------------------------

#[test]
fn code_python_passing_and_failing_tests() {
    let ws = Ws::new();
    copy_fixture(&ws, "code/py", ".");
    copy_fixture(&ws, "code/py-bad", ".");
    let r = refine(&ws, "mathx", &["--type", "code", "--input", "pkg/mathx.py"]);
    let p = plan(&ws, "mathx");
    let st = stages(&p);
    assert_eq!(st, vec![("package".to_string(), "run".to_string())]);
    let ids: Vec<&str> = p["plan"]["validation_plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["constraint_id"].as_str().unwrap())
        .collect();
    // lint and format get a check only when a linter/formatter is on PATH.
    assert!(ids.starts_with(&["syntax"]), "{ids:?}");
    assert!(ids.contains(&"tests") && ids.ends_with(&["manifest-complete"]));
    let checked: Vec<&str> = ids.clone();
    let want_stages = [("package", "run")];
    assert_plan(&p, &want_stages, &checked);
    assert_eq!(
        check(&p, "syntax")["with"],
        serde_json::json!({"path": ["pkg/mathx.py"], "language": "python"})
    );
    let tests = check(&p, "tests")["with"]["command"].clone();
    let tests: Vec<&str> = tests
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(tests.contains(&"pkg"), "{tests:?}");
    assert_eq!(stage(&p, "package")["outputs"][0], "dist/code/pkg/mathx.py");
    let report = assert_converged(&ws, &r, "mathx");
    assert_eq!(status(&report, "tests"), "satisfied");
    assert_dist(&ws, &["dist/code/pkg/mathx.py"]);

    // The test next to the module (a plain directory, not a package) fails.
    let r = refine(
        &ws,
        "subx",
        &[
            "--type",
            "code",
            "--input",
            "calc/subx.py",
            "--max-iterations",
            "2",
        ],
    );
    let report = assert_not_converged(&ws, &r, "subx", "tests");
    assert_eq!(status(&report, "syntax"), "satisfied");
    let evidence = report["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "tests")
        .unwrap()["evidence"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        evidence.contains("FAIL") || evidence.contains("failed"),
        "the test ran and failed (not an import error): {evidence}"
    );
    assert!(!evidence.contains("not importable"), "{evidence}");
}

#[test]
fn code_node_module_with_node_test() {
    let ws = Ws::new();
    copy_fixture(&ws, "code/js", ".");
    let r = refine(&ws, "add", &["--type", "code", "--input", "lib/add.js"]);
    let p = plan(&ws, "add");
    assert_eq!(stages(&p), vec![("package".to_string(), "run".to_string())]);
    let ids: Vec<String> = p["plan"]["validation_plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["constraint_id"].as_str().unwrap().to_string())
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert!(ids.contains(&"syntax") && ids.contains(&"tests"), "{ids:?}");
    assert_plan(&p, &[("package", "run")], &ids);
    assert_eq!(
        check(&p, "tests")["with"]["command"],
        serde_json::json!(["node", "--test", "lib/add.test.js"])
    );
    assert_eq!(check(&p, "syntax")["with"]["language"], "node");
    let report = assert_converged(&ws, &r, "add");
    assert_eq!(status(&report, "tests"), "satisfied");
    assert_dist(&ws, &["dist/code/lib/add.js"]);
}

// ---- meta-prompt -----------------------------------------------------------

const PROMPT_CHECKS: [&str; 4] = [
    "prompt-present",
    "platform-limit",
    "no-unfilled-placeholders",
    "states-the-task",
];

fn with_manifest(checks: &[&str]) -> Vec<String> {
    checks
        .iter()
        .map(|c| c.to_string())
        .chain(["manifest-complete".to_string()])
        .collect()
}

#[test]
fn meta_prompt_from_intent_input_and_for_an_image_model() {
    let ws = Ws::new();
    copy_fixture(&ws, "prompt", ".");
    let checked = with_manifest(&PROMPT_CHECKS);
    let checked: Vec<&str> = checked.iter().map(String::as_str).collect();

    let r = refine(
        &ws,
        "onboarding",
        &[
            "--type",
            "meta-prompt",
            "--intent",
            "Write an onboarding checklist for new engineers, as a numbered Markdown list",
        ],
    );
    let p = plan(&ws, "onboarding");
    assert_plan(&p, &[("compose", "prompt")], &checked);
    let with = &stage(&p, "compose")["with"];
    assert!(
        with["intent"]
            .as_str()
            .unwrap()
            .starts_with("Write an onboarding")
    );
    assert_eq!(with["output"], "dist/prompt.md");
    assert_eq!(with["meta"], "dist/prompt.meta.json");
    assert!(with.get("input").is_none());
    let report = assert_converged(&ws, &r, "onboarding");
    assert_eq!(status(&report, "intent"), "not_checked");
    assert_dist(&ws, &["dist/prompt.md", "dist/prompt.meta.json"]);

    let r = refine(
        &ws,
        "notes",
        &["--type", "meta-prompt", "--input", "prompts/notes.md"],
    );
    let p = plan(&ws, "notes");
    assert_plan(&p, &[("compose", "prompt")], &checked);
    assert_eq!(stage(&p, "compose")["with"]["input"], "prompts/notes.md");
    assert_eq!(stage(&p, "compose")["inputs"][0], "prompts/notes.md");
    assert_converged(&ws, &r, "notes");
    assert_dist(&ws, &["dist/prompt.md", "dist/prompt.meta.json"]);
    assert_eq!(
        ws.read_json("dist/prompt.meta.json")["variables"],
        serde_json::json!(["version"])
    );

    let r = refine(
        &ws,
        "lighthouse",
        &[
            "--type",
            "meta-prompt",
            "--content-type",
            "meta:image-prompt",
            "--target-platform",
            "dall-e-3",
            "--input",
            "prompts/lighthouse.md",
        ],
    );
    let p = plan(&ws, "lighthouse");
    assert_plan(&p, &[("compose", "prompt")], &checked);
    let with = &stage(&p, "compose")["with"];
    assert_eq!(with["target_platform"], "dall-e-3");
    assert_eq!(with["content_type"], "meta:image-prompt");
    let report = assert_converged(&ws, &r, "lighthouse");
    assert_eq!(report["content_type"], "meta:image-prompt");
    assert_dist(&ws, &["dist/prompt.md", "dist/prompt.meta.json"]);
    let meta = ws.read_json("dist/prompt.meta.json");
    assert_eq!(meta["target_platform"], "dall-e-3");
    assert_eq!(meta["within_limit"], true);
}

#[test]
fn meta_prompt_with_a_todo_never_converges() {
    let ws = Ws::new();
    copy_fixture(&ws, "prompt", ".");
    let r = refine(
        &ws,
        "haiku",
        &[
            "--type",
            "meta-prompt",
            "--input",
            "prompts/todo.md",
            "--max-iterations",
            "2",
        ],
    );
    let report = assert_not_converged(&ws, &r, "haiku", "no-unfilled-placeholders");
    assert_eq!(status(&report, "prompt-present"), "satisfied");
    let meta = ws.read_json("dist/prompt.meta.json");
    assert_eq!(meta["placeholders_unfilled"][0]["text"], "TODO");
}

// ---- meta:composite --------------------------------------------------------

#[test]
fn meta_composite_of_an_image_prompt_and_a_document() {
    let browser = have_chromium();
    let ws = Ws::new();
    copy_fixture(&ws, "prompt", ".");
    let r = refine(
        &ws,
        "launch",
        &[
            "--type",
            "meta-prompt",
            "--content-type",
            "meta:composite",
            "--component",
            "meta:image-prompt",
            "--component",
            "direct:content=docs/brief.md",
            "--intent",
            "A launch kit: a hero image prompt and the brief",
        ],
    );
    let p = plan(&ws, "launch");
    let mut checked: Vec<String> = PROMPT_CHECKS
        .iter()
        .map(|c| format!("c1-image-prompt_{c}"))
        .collect();
    checked.extend(
        [
            "page-exists",
            "heading-hierarchy",
            "links-resolve",
            "renders",
        ]
        .iter()
        .map(|c| format!("c2-content_{c}")),
    );
    checked.push("manifest-complete".into());
    let checked: Vec<&str> = checked.iter().map(String::as_str).collect();
    assert_plan(
        &p,
        &[
            ("c1-image-prompt_compose", "prompt"),
            ("c2-content_render", "markdown"),
            ("c2-content_page", "template"),
            ("c2-content_preview", "preview"),
        ],
        &checked,
    );
    let compose = &stage(&p, "c1-image-prompt_compose")["with"];
    assert_eq!(compose["output"], "dist/c1-image-prompt/prompt.md");
    assert_eq!(compose["content_type"], "meta:image-prompt");
    assert_eq!(compose["target_platform"], "dall-e-3");
    let page = stage(&p, "c2-content_page");
    assert_eq!(page["depends_on"], serde_json::json!(["c2-content_render"]));
    assert_eq!(page["with"]["vars"]["BODY"], "$c2-content_render.html");
    let preview = &stage(&p, "c2-content_preview")["with"];
    assert_eq!(preview["input"], "dist/c2-content/brief.html");
    assert_eq!(
        check(&p, "c2-content_renders")["with"]["report"],
        format!(
            "{}/{}/preview-report.json",
            preview["out_dir"].as_str().unwrap(),
            preview["id"].as_str().unwrap()
        )
    );
    let spec = ws.read_json(".refiner/artifacts/launch/specification.json");
    let kinds: Vec<&str> = spec["content_type"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["content_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["meta:image-prompt", "direct:content"]);
    // Reflect reports each component under its own strategy.
    let reflection = ws.read_json(".refiner/artifacts/launch/reflections/iteration-1.json");
    let strategies: Vec<(&str, &str)> = reflection["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["strategy"].as_str().unwrap()))
        .collect();
    assert_eq!(
        strategies,
        [
            ("c1-image-prompt", "prompt_quality"),
            ("c2-content", "output_inspection")
        ]
    );
    assert!(
        ws.read("refinement_log.md")
            .contains("Component `c2-content` (direct:content, evaluated by output_inspection)")
    );
    let files = [
        "dist/c1-image-prompt/prompt.md",
        "dist/c1-image-prompt/prompt.meta.json",
        "dist/c2-content/brief.html",
    ];
    if browser {
        let report = assert_converged(&ws, &r, "launch");
        assert_eq!(status(&report, "c2-content_renders"), "satisfied");
        assert_dist(&ws, &files);
    } else {
        eprintln!("Chromium not found: the composite's outcome is not asserted");
        assert_dist(&ws, &files);
    }
}

// ---- usage errors ----------------------------------------------------------

#[test]
fn usage_errors_exit_2_and_write_nothing_to_dist() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("x.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(
        parent.path().join("x.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    let ws_dir = parent.path().join("ws");
    std::fs::create_dir_all(ws_dir.join("brand")).unwrap();
    std::fs::copy(
        fixtures().join("logo/good.svg"),
        ws_dir.join("brand/logo.svg"),
    )
    .unwrap();
    std::fs::write(ws_dir.join("notes.txt"), "not a logo\n").unwrap();
    let abs = outside.path().join("x.svg");
    let abs = abs.to_str().unwrap();

    let run = |args: &[&str]| -> Run {
        bin()
            .args(["refine"])
            .args(args)
            .arg("--offline")
            .current_dir(&ws_dir)
            .output()
            .unwrap()
            .into()
    };
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["a", "--type", "banner", "--input", "brand/logo.svg"],
            vec![
                "Unknown artifact_type: banner",
                "logo, ui, a2ui, image, content, code, meta-prompt",
            ],
        ),
        (
            vec!["b", "--type", "logo", "--input", "brand/missing.svg"],
            vec!["brand/missing.svg", "does not exist"],
        ),
        (
            vec!["c", "--type", "logo", "--input", "../x.svg"],
            vec!["../x.svg", "outside the workspace"],
        ),
        (
            vec!["d", "--type", "logo", "--input", abs],
            vec!["outside the workspace"],
        ),
        (
            vec!["e", "--type", "logo", "--input", "notes.txt"],
            vec!["needs an SVG logo", "notes.txt"],
        ),
        (
            vec!["f", "--type", "logo"],
            vec!["needs an SVG logo", "--input"],
        ),
        (
            vec!["g", "--type", "meta-prompt"],
            vec!["needs a prompt", "--intent"],
        ),
        (
            vec![
                "h",
                "--type",
                "meta-prompt",
                "--content-type",
                "meta:composite",
                "--intent",
                "a kit",
            ],
            vec!["needs components", "--component"],
        ),
    ];
    for (args, want) in cases {
        let r = run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("error:"), "{args:?}: {}", r.stderr);
        for w in want {
            assert!(r.stderr.contains(w), "{args:?}: `{w}` not in {}", r.stderr);
        }
        assert!(!ws_dir.join("dist").exists(), "{args:?} wrote to dist/");
        assert!(!ws_dir.join("artifact_manifest.json").exists(), "{args:?}");
    }
}

#[test]
fn code_node_runs_eslint_only_with_a_configuration() {
    // A stand-in eslint on PATH: it passes, and says what it was given.
    let tools = tempfile::tempdir().unwrap();
    let eslint = tools.path().join("eslint");
    std::fs::write(&eslint, "#!/bin/sh\necho \"linted $*\"\nexit 0\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&eslint, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = std::env::join_paths(
        std::iter::once(tools.path().to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let ws = Ws::new();
    copy_fixture(&ws, "code/js", ".");
    let run = |name: &str| -> Run {
        bin()
            .args(["refine", name, "--offline", "--json", "--type", "code"])
            .args(["--input", "lib/add.js"])
            .env("PATH", &path)
            .current_dir(ws.path())
            .output()
            .unwrap()
            .into()
    };

    // Without a configuration eslint exits 2 whatever the code: not run.
    let r = run("plain");
    let p = plan(&ws, "plain");
    let vp = &p["plan"]["validation_plan"];
    assert!(
        !vp.as_array()
            .unwrap()
            .iter()
            .any(|v| v["constraint_id"] == "lint"),
        "{vp}"
    );
    let report = assert_converged(&ws, &r, "plain");
    assert_eq!(status(&report, "lint"), "not_checked");

    ws.write("eslint.config.js", "module.exports = [];\n");
    let r = run("linted");
    let p = plan(&ws, "linted");
    assert_eq!(
        check(&p, "lint")["with"]["command"],
        serde_json::json!(["eslint", "lib/add.js"])
    );
    let report = assert_converged(&ws, &r, "linted");
    assert_eq!(status(&report, "lint"), "satisfied");
}
