//! Images (dimensions, format, aspect ratio) and colour contrast, on real files.

mod common;
use common::*;
use serde_json::json;

#[test]
fn image_dimensions_exact_and_by_pattern() {
    let w = Ws::new();
    for s in [16, 32, 64] {
        w.write(&format!("dist/logo-{s}.png"), png(s, s));
    }
    w.write("dist/banner.png", png(120, 40));
    pass(&w.check(
        "image_dimensions",
        json!({"path": "dist/logo-16.png", "width": 16, "height": 16}),
    ));
    pass(&w.check(
        "image_dimensions",
        json!({"path": "dist/banner.png", "size": "120x40"}),
    ));
    fail(
        &w.check(
            "image_dimensions",
            json!({"path": "dist/banner.png", "size": "40x120"}),
        ),
        "120x40, expected 40x120",
    );
    pass(&w.check(
        "image_dimensions",
        json!({"sizes": [16, 32, 64], "pattern": "dist/logo-{size}.png"}),
    ));
    // A missing size and a wrong size are both named.
    w.write("dist/logo-128.png", png(100, 100));
    let o = w.check(
        "image_dimensions",
        json!({"sizes": [16, 128, 256], "pattern": "dist/logo-{size}.png"}),
    );
    fail(&o, "2 of 3 files fail");
    assert!(
        o.message
            .contains("dist/logo-128.png: 100x100, expected 128x128"),
        "{}",
        o.message
    );
    assert!(o.message.contains("dist/logo-256.png"), "{}", o.message);
    // Non-square sizes and their placeholders.
    w.write("dist/banner-120x40.png", png(120, 40));
    pass(&w.check(
        "image_dimensions",
        json!({"sizes": ["120x40"], "pattern": "dist/banner-{size}.png"}),
    ));
    pass(&w.check(
        "image_dimensions",
        json!({"sizes": ["120x40"], "pattern": "dist/banner-{width}x{height}.png"}),
    ));
    // JPEG, GIF and SVG headers.
    w.write("p.jpg", jpeg(300, 200));
    w.write("a.gif", gif(7, 9));
    w.write(
        "v.svg",
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 48 24"/>"#,
    );
    pass(&w.check(
        "image_dimensions",
        json!({"path": "p.jpg", "size": "300x200"}),
    ));
    pass(&w.check("image_dimensions", json!({"path": "a.gif", "size": "7x9"})));
    pass(&w.check(
        "image_dimensions",
        json!({"path": "v.svg", "size": "48x24"}),
    ));
    w.write("notes.png", "just text");
    fail(
        &w.check(
            "image_dimensions",
            json!({"path": "notes.png", "size": "1x1"}),
        ),
        "not an image",
    );
}

#[test]
fn image_format_and_aspect_ratio() {
    let w = Ws::new();
    w.write("real-png.jpg", png(10, 10));
    w.write("photo.jpg", jpeg(1920, 1080));
    fail(
        &w.check(
            "image_format",
            json!({"path": "real-png.jpg", "format": "jpeg"}),
        ),
        "is png, expected jpeg",
    );
    pass(&w.check(
        "image_format",
        json!({"path": "photo.jpg", "format": ["jpg", "png"]}),
    ));
    pass(&w.check(
        "aspect_ratio",
        json!({"path": "photo.jpg", "ratio": "16:9"}),
    ));
    fail(
        &w.check("aspect_ratio", json!({"path": "photo.jpg", "ratio": "4:3"})),
        "expected 1.3333",
    );
    pass(&w.check("aspect_ratio", json!({"path": "real-png.jpg", "ratio": 1})));
}

// ---------- contrast ----------

/// The WCAG 2.x formula, written out independently of the crate.
fn wcag(fg: [u8; 3], bg: [u8; 3]) -> f64 {
    fn lum(c: [u8; 3]) -> f64 {
        let lin = |v: u8| {
            let s = v as f64 / 255.0;
            if s <= 0.03928 {
                s / 12.92
            } else {
                ((s + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
    }
    let (a, b) = (lum(fg), lum(bg));
    (a.max(b) + 0.05) / (a.min(b) + 0.05)
}

fn ratio_of(o: &pmpo_checks::CheckOutcome, i: usize) -> f64 {
    o.evidence["pairs"][i]["ratio"].as_f64().unwrap()
}

#[test]
fn contrast_explicit_colours_match_the_formula() {
    let w = Ws::new();
    // #777 on white: 4.48:1. Fails AA normal text, passes AA large text.
    let o = w.check(
        "contrast",
        json!({"foreground": "#777", "background": "white"}),
    );
    fail(&o, "below 4.5:1 (AA normal text)");
    let expected = wcag([0x77; 3], [0xff; 3]);
    assert!(
        (ratio_of(&o, 0) - expected).abs() < 0.001,
        "{} vs {expected}",
        ratio_of(&o, 0)
    );
    assert!((expected - 4.478).abs() < 0.001);
    pass(&w.check(
        "contrast",
        json!({"foreground": "#777", "background": "white", "text": "large"}),
    ));
    // #767676 is the lightest grey that passes AA on white.
    let o = w.check(
        "contrast",
        json!({"foreground": "rgb(118, 118, 118)", "background": "#ffffff"}),
    );
    pass(&o);
    assert!((ratio_of(&o, 0) - wcag([118; 3], [255; 3])).abs() < 0.001);
    // AAA needs 7:1 (4.5:1 for large text).
    fail(
        &w.check(
            "contrast",
            json!({"foreground": "#767676", "background": "#fff", "level": "AAA"}),
        ),
        "7:1",
    );
    pass(&w.check(
        "contrast",
        json!({"foreground": "#767676", "background": "#fff", "level": "AAA", "text": "large"}),
    ));
    // Black on white is 21:1 in every syntax.
    for (fg, bg) in [
        ("#000", "#fff"),
        ("#000000ff", "#ffff"),
        ("rgb(0 0 0)", "hsl(0, 0%, 100%)"),
        ("black", "white"),
    ] {
        let o = w.check(
            "contrast",
            json!({"foreground": fg, "background": bg, "level": "AAA"}),
        );
        pass(&o);
        assert!((ratio_of(&o, 0) - 21.0).abs() < 1e-6, "{fg} on {bg}");
    }
    // A colourful pair, both ways round.
    let (fg, bg) = ([0x1d, 0x35, 0x57], [0xf1, 0xfa, 0xee]);
    let o = w.check(
        "contrast",
        json!({"foreground": "#1d3557", "background": "#f1faee"}),
    );
    assert!((ratio_of(&o, 0) - wcag(fg, bg)).abs() < 0.001);
    let o2 = w.check(
        "contrast",
        json!({"foreground": "#f1faee", "background": "#1d3557"}),
    );
    assert!((ratio_of(&o2, 0) - wcag(fg, bg)).abs() < 0.001);
    // hsl() and named colours.
    let o = w.check(
        "contrast",
        json!({"foreground": "hsl(0, 100%, 50%)", "background": "navy"}),
    );
    assert!((ratio_of(&o, 0) - wcag([255, 0, 0], [0, 0, 128])).abs() < 0.001);
}

#[test]
fn contrast_from_svg_and_css() {
    let w = Ws::new();
    w.write(
        "logo.svg",
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10">
  <style>.t { fill: #999999; }</style>
  <rect fill="#1d3557" stroke="none"/>
  <circle style="stroke: rgb(0, 0, 0); fill: none"/>
  <path fill="url(#g)"/>
</svg>"##,
    );
    let o = w.check(
        "contrast",
        json!({"file": "logo.svg", "background": "#ffffff"}),
    );
    fail(&o, "1 of 3 pair(s) below 4.5:1");
    assert!(o.message.contains("#999999 on #ffffff"), "{}", o.message);
    let pairs = o.evidence["pairs"].as_array().unwrap();
    let by: std::collections::HashMap<&str, f64> = pairs
        .iter()
        .map(|p| {
            (
                p["foreground"].as_str().unwrap(),
                p["ratio"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!((by["#1d3557"] - wcag([0x1d, 0x35, 0x57], [255; 3])).abs() < 0.001);
    assert!((by["rgb(0, 0, 0)"] - 21.0).abs() < 0.001);
    assert!((by["#999999"] - wcag([0x99; 3], [255; 3])).abs() < 0.001);

    w.write(
        "theme.css",
        ":root {\n  --bg: #ffffff;\n  --text: #222;\n  --muted: var(--grey);\n  --grey: #aaaaaa;\n  --gap: 4px; /* not a colour */\n}\n",
    );
    let o = w.check(
        "contrast",
        json!({"file": "theme.css", "background": "var(--bg)"}),
    );
    fail(&o, "--muted on var(--bg)");
    assert_eq!(
        o.evidence["pairs"].as_array().unwrap().len(),
        3,
        "{}",
        o.evidence
    );
    let o = w.check(
        "contrast",
        json!({"file": "theme.css", "pairs": [["--text", "--bg"]]}),
    );
    pass(&o);
    assert!((ratio_of(&o, 0) - wcag([0x22; 3], [255; 3])).abs() < 0.001);
    fail(
        &w.check(
            "contrast",
            json!({"file": "theme.css", "pairs": [["--nope", "--bg"]]}),
        ),
        "no custom property",
    );
    w.write("plain.svg", r#"<svg xmlns="http://www.w3.org/2000/svg"/>"#);
    fail(
        &w.check(
            "contrast",
            json!({"file": "plain.svg", "background": "white"}),
        ),
        "no fill or stroke",
    );
}

// ---------- command ----------
