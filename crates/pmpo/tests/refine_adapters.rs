//! The offline domain adapters that draw, run through `pmpo refine --offline`
//! on real inputs (logo, ui, a2ui, image): the plan each adapter writes
//! (stage ids, tools, validation plan), the outcome on good and bad inputs,
//! the files in `dist/` and the manifest. Content and code adapters are in
//! `refine_adapters_code.rs`, prompts and usage errors in
//! `refine_adapters_prompts.rs`.
//!
//! Adapters that preview need Chromium (and esbuild for TSX). Without them
//! the outcome of those runs is not asserted, unless PMPO_REQUIRE_BROWSER=1,
//! which makes a missing browser a failure.

mod adapters;

use adapters::*;
use pmpo_testkit::Ws;

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
    let mut checked = vec!["renders", "html-valid", "offline-runtime"];
    // The rendered page's accessibility is checked where a browser runs.
    checked.extend(a11y(browser));
    checked.push("manifest-complete");
    assert_plan(&p, &[("import", "run"), ("preview", "preview")], &checked);
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
        assert_eq!(status(&report, "accessible"), "satisfied");
        assert_eq!(status(&report, "accessible-moderate"), "satisfied");
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
    let chromium = have_chromium();
    let browser = chromium && have_esbuild();
    let ws = Ws::new();
    copy_fixture(&ws, "ui", "src");
    let r = refine(&ws, "badge", &["--type", "ui", "--input", "src/Badge.tsx"]);
    let p = plan(&ws, "badge");
    let mut checked = vec!["renders", "exports-component"];
    checked.extend(a11y(chromium));
    checked.push("manifest-complete");
    assert_plan(&p, &[("import", "run"), ("preview", "preview")], &checked);
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
            &["schema-valid", "no-binding-cycles", "normalized", "renders"][..],
            a11y(browser),
            &["manifest-complete"],
        ]
        .concat(),
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
