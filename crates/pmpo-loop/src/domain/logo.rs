//! The logo adapter: an SVG logo validated, rasterized to icon sizes and
//! shown on dark and light backgrounds.

use serde_json::json;

use pmpo_plan::{ConstraintKind, Severity, Stage};

use super::values::{StageValue, copy_stage, stage};
use super::{AdapterError, AdapterInput, Builder, Scope, need_input, opt_f64, opt_str};

const LOGO_SIZES: [u64; 8] = [16, 32, 48, 64, 128, 192, 256, 512];

pub(super) fn logo(
    b: &mut Builder,
    s: &Scope,
    input: &AdapterInput<'_>,
) -> Result<(), AdapterError> {
    let svg_in = need_input(input, "an SVG logo", &["svg"])?;
    let svg = s.path("logo.svg");
    let dark = opt_str(input, "dark_background").unwrap_or("#111318");
    let light = opt_str(input, "light_background").unwrap_or("#ffffff");
    let min = opt_f64(input, "min_contrast").unwrap_or(3.0);
    let pattern = s.path("logo-{size}.png");
    let import = copy_stage("import", svg_in, &svg);
    let import = Stage {
        description: "Take the SVG into dist/ and check that it is well-formed SVG".into(),
        ..import
    }
    .checked_by("xml", json!({"path": svg, "root": "svg"}));
    b.stage(s, import);
    b.stage(
        s,
        stage("sizes", "rasterize", "Rasterize the SVG to the icon sizes")
            .after(["import"])
            .with(json!({"input": svg, "sizes": LOGO_SIZES, "output": pattern}))
            .writes([s.path("logo-*.png")]),
    );
    b.stage(
        s,
        stage("showcase", "template", "Lay the logo out on dark and light backgrounds")
            .after(["sizes"])
            .with(json!({"template": "builtin:logo-showcase", "output": s.path("index.html"),
                     "vars": {"NAME": input.name, "SVG": format!("${}.svg", s.id("sizes")), "IMAGES": format!("${}.images", s.id("sizes"))}}))
            .writes([s.path("index.html")]),
    );
    b.stage(
        s,
        stage("preview", "preview", "Render the showcase in a headless browser and keep the evidence")
            .after(["showcase"])
            .with(json!({"input": s.path("index.html"), "id": s.id("showcase"), "out_dir": s.path("previews"), "viewport": {"width": 1100, "height": 560}}))
            .writes([s.path(&format!("previews/{}", s.id("showcase")))]),
    );
    b.constraint(
        s,
        "svg-valid",
        Severity::Blocking,
        ConstraintKind::Technical,
        "The logo is well-formed SVG (an <svg> root)",
        Some(("xml", json!({"path": svg, "root": "svg"}))),
    );
    b.constraint(
        s,
        "png-sizes",
        Severity::Blocking,
        ConstraintKind::Structural,
        "One PNG per icon size (16 to 512 px), each exactly size x size",
        Some((
            "image_dimensions",
            json!({"sizes": LOGO_SIZES, "pattern": pattern}),
        )),
    );
    b.constraint(s, "dark-contrast", Severity::High, ConstraintKind::Accessibility,
        &format!("Every colour of the logo keeps a contrast of at least {min}:1 on the dark background {dark}"),
        Some(("contrast", json!({"file": svg, "background": dark, "min_ratio": min}))));
    b.constraint(s, "light-contrast", Severity::Medium, ConstraintKind::Accessibility,
        &format!("Every colour of the logo keeps a contrast of at least {min}:1 on the light background {light}"),
        Some(("contrast", json!({"file": svg, "background": light, "min_ratio": min}))));
    b.constraint(
        s,
        "svg-lightweight",
        Severity::Low,
        ConstraintKind::Performance,
        "The SVG stays under 50 KB",
        Some(("max_file_size", json!({"path": svg, "max_bytes": 50_000}))),
    );
    b.constraint(s, "showcase-renders", Severity::High, ConstraintKind::Visual,
        "The showcase renders in a browser without console errors or failed requests",
        Some(("preview", json!({"report": s.path(&format!("previews/{}/preview-report.json", s.id("showcase")))}))));
    b.d.required_files.push(svg);
    b.d.required_files.push(s.path("index.html"));
    for size in LOGO_SIZES {
        b.d.required_files.push(s.path(&format!("logo-{size}.png")));
    }
    Ok(())
}
