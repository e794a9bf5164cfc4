//! Every check on real files, good and bad: each check must be able to fail.

mod common;
use common::*;
use serde_json::json;

// ---------- files ----------

#[test]
fn file_exists_and_globs() {
    let w = Ws::new();
    w.write("dist/a.txt", "a");
    pass(&w.check("file_exists", json!({"path": "dist/a.txt"})));
    pass(&w.check("file-exists", json!({"path": ["dist/a.txt", "dist/*.txt"]})));
    fail(
        &w.check("file_exists", json!({"path": "dist/b.txt"})),
        "missing: dist/b.txt",
    );
    // A glob that matches nothing cannot pass.
    fail(
        &w.check("file_exists", json!({"path": "dist/*.png"})),
        "matches no file",
    );
    // A directory is not a file.
    fail(&w.check("non_empty", json!({"path": "dist"})), "directory");
}

#[test]
fn sizes_and_counts() {
    let w = Ws::new();
    w.write("e.txt", "");
    w.write("k.bin", vec![7u8; 2048]);
    fail(
        &w.check("non_empty", json!({"path": "e.txt"})),
        "e.txt is empty",
    );
    pass(&w.check("non_empty", json!({"path": "k.bin"})));
    pass(&w.check(
        "file_size",
        json!({"path": "k.bin", "min_bytes": 1, "max_bytes": "2KiB"}),
    ));
    fail(
        &w.check("file_size", json!({"path": "k.bin", "max_bytes": "2KB"})),
        "above the maximum 2000",
    );
    fail(
        &w.check("file_size", json!({"path": "e.txt", "min_bytes": 1})),
        "below the minimum 1",
    );
    fail(
        &w.check("max_file_size", json!({"path": "k.bin", "max_bytes": 100})),
        "above the maximum 100",
    );
    for i in 0..3 {
        w.write(&format!("out/{i}.png"), png(4, 4));
    }
    w.write("out/sub/x.png", png(4, 4));
    pass(&w.check("glob_count", json!({"pattern": "out/*.png", "equals": 3})));
    pass(&w.check(
        "glob_count",
        json!({"pattern": "out/**/*.png", "min": 4, "max": 4}),
    ));
    fail(
        &w.check("glob_count", json!({"pattern": "out/*.png", "min": 5})),
        "expected at least 5",
    );
    fail(
        &w.check("glob_count", json!({"pattern": "none/*.png", "min": 1})),
        "matches 0 file(s)",
    );
}

// ---------- safety ----------

#[cfg(unix)]
#[test]
fn symlinks_leading_outside_are_refused_not_followed() {
    let w = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.json"), "{\"a\": 1}").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.json"), w.p("link.json")).unwrap();
    std::os::unix::fs::symlink(outside.path(), w.p("dirlink")).unwrap();
    for name in ["json", "file_exists", "non_empty"] {
        fail(
            &w.check(name, json!({"path": "link.json"})),
            "outside the workspace",
        );
    }
    fail(
        &w.check("contains", json!({"path": "link.json", "text": "a"})),
        "refused, not followed",
    );
    fail(
        &w.check("json", json!({"path": "dirlink/secret.json"})),
        "symbolic link",
    );
    // A command's working directory cannot be a link leading out either.
    fail(
        &w.check("command", json!({"command": ["true"], "cwd": "dirlink"})),
        "outside the workspace",
    );
    fail(
        &w.check("import", json!({"module": "os", "cwd": "dirlink"})),
        "outside the workspace",
    );
    fail(
        &w.check("glob_count", json!({"pattern": "dirlink/*.json", "min": 1})),
        "symbolic link",
    );
    // Globs do not walk through a linked directory, and a linked file leading out is refused.
    w.write("g/ok.json", "{}");
    std::os::unix::fs::symlink(outside.path(), w.p("g/out")).unwrap();
    pass(&w.check("json", json!({"path": "g/**/*.json"})));
    std::os::unix::fs::symlink(outside.path().join("secret.json"), w.p("g/leak.json")).unwrap();
    fail(
        &w.check("json", json!({"path": "g/*.json"})),
        "refused, not followed",
    );
    // A link that stays inside is fine.
    w.write("real.json", "{}");
    std::os::unix::fs::symlink(w.p("real.json"), w.p("inner.json")).unwrap();
    pass(&w.check("json", json!({"path": "inner.json"})));
}

#[cfg(unix)]
#[test]
fn special_files_are_refused_without_blocking() {
    let w = Ws::new();
    let made = std::process::Command::new("mkfifo")
        .arg(w.p("pipe.json"))
        .status()
        .is_ok_and(|s| s.success());
    if made {
        fail(
            &w.check("json", json!({"path": "pipe.json"})),
            "not a regular file",
        );
    }
}

#[test]
fn paths_outside_the_workspace_are_refused() {
    let w = Ws::new();
    for bad in ["../x.json", "/etc/passwd", "a/../../x"] {
        let o = w.check("json", json!({"path": bad}));
        assert!(!o.passed(), "{bad}: {}", o.message);
        assert!(o.message.contains("workspace"), "{bad}: {}", o.message);
    }
}

#[test]
fn binary_where_text_is_expected_fails_clearly() {
    let w = Ws::new();
    w.write("logo.json", png(8, 8));
    fail(
        &w.check("json", json!({"path": "logo.json"})),
        "is not text",
    );
    w.write("latin1.md", b"# Caf\xe9\n");
    fail(
        &w.check("markdown_headings", json!({"path": "latin1.md"})),
        "not valid UTF-8",
    );
    fail(
        &w.check("contains", json!({"path": "logo.json", "text": "x"})),
        "NUL byte",
    );
}

/// A file too large to read whole was not looked at: not checked, not failed.
#[test]
fn enormous_files_are_refused_before_reading() {
    let w = Ws::new();
    let f = std::fs::File::create(w.p("huge.json")).unwrap();
    f.set_len(pmpo_checks::MAX_TEXT_BYTES + 1).unwrap(); // sparse: no disk used
    let start = std::time::Instant::now();
    for name in ["json", "yaml", "xml", "html", "markdown_headings"] {
        unseen(
            &w.check(name, json!({"path": "huge.json"})),
            "this check reads at most",
        );
    }
    unseen(
        &w.check("regex", json!({"path": "huge.json", "pattern": "x"})),
        "reads at most",
    );
    unseen(
        &w.check("json_schema", json!({"path": "huge.json", "schema": {}})),
        "reads at most",
    );
    assert!(
        start.elapsed().as_secs() < 5,
        "refusing must not read the file"
    );
}

#[test]
fn enormous_images_are_measured_from_their_headers() {
    use std::io::{Seek, SeekFrom, Write};
    let w = Ws::new();
    // A 1 GiB PNG (sparse): signature, IHDR, one huge IDAT chunk, IEND at the very end.
    let small = png(4000, 3000);
    let ihdr_end = 8 + 25;
    let idat_len: u64 = 1 << 30;
    let mut f = std::fs::File::create(w.p("huge.png")).unwrap();
    f.write_all(&small[..ihdr_end]).unwrap();
    f.write_all(&(idat_len as u32).to_be_bytes()).unwrap();
    f.write_all(b"IDAT").unwrap();
    f.seek(SeekFrom::Current(idat_len as i64)).unwrap();
    f.write_all(&[0, 0, 0, 0]).unwrap(); // CRC
    f.write_all(&small[small.len() - 12..]).unwrap(); // IEND
    drop(f);
    let start = std::time::Instant::now();
    pass(&w.check(
        "image_dimensions",
        json!({"path": "huge.png", "size": "4000x3000"}),
    ));
    // Cut before the end: truncated, and said so.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(w.p("huge.png"))
        .unwrap();
    f.set_len(idat_len / 2).unwrap();
    fail(
        &w.check("image_format", json!({"path": "huge.png", "format": "png"})),
        "truncated PNG",
    );
    assert!(
        start.elapsed().as_secs() < 5,
        "headers only, never the pixels"
    );
}

#[test]
fn truncated_and_empty_files() {
    let w = Ws::new();
    w.write("t.json", "{\"a\": [1, 2");
    fail(&w.check("json", json!({"path": "t.json"})), "line 1 column");
    let mut p = png(32, 32);
    p.truncate(p.len() - 20);
    w.write("t.png", &p);
    fail(
        &w.check(
            "image_dimensions",
            json!({"path": "t.png", "size": "32x32"}),
        ),
        "truncated PNG",
    );
    w.write("e.png", "");
    fail(
        &w.check("image_format", json!({"path": "e.png", "format": "png"})),
        "empty",
    );
    let mut j = jpeg(10, 10);
    j.truncate(j.len() - 2);
    w.write("t.jpg", &j);
    fail(
        &w.check("image_format", json!({"path": "t.jpg", "format": "jpeg"})),
        "truncated JPEG",
    );
}

// ---------- well-formedness ----------

#[test]
fn json_yaml_xml() {
    let w = Ws::new();
    w.write("ok.json", "{\"a\": [1, 2, {\"b\": null}]}");
    w.write("ok.yaml", "a: 1\nb: [x, y]\n");
    w.write("bad.yaml", "a: [1, 2\nb: 3\n");
    pass(&w.check("json", json!({"path": "ok.json"})));
    pass(&w.check("yaml", json!({"path": "ok.yaml"})));
    fail(
        &w.check("yaml", json!({"path": "bad.yaml"})),
        "invalid YAML at line",
    );
    // Several documents are fine; an alias bomb is only syntax (never expanded).
    w.write("multi.yaml", "a: 1\n---\nb: 2\n");
    let o = w.check("yaml", json!({"path": "multi.yaml"}));
    pass(&o);
    assert_eq!(o.evidence["files"][0]["documents"], 2);
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = if i == 1 {
            "a".to_string()
        } else {
            format!("a{}", i - 1)
        };
        bomb.push_str(&format!("a{i}: &a{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    w.write("bomb.yaml", &bomb);
    pass(&w.check("yaml", json!({"path": "bomb.yaml"})));
    fail(
        &w.check("json_schema", json!({"path": "bomb.yaml", "schema": {}})),
        "aliases",
    );

    w.write("logo.svg", r##"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect fill="#000"/></svg>"##);
    w.write(
        "broken.svg",
        r##"<svg xmlns="http://www.w3.org/2000/svg"><rect fill="#000"></svg>"##,
    );
    w.write("notsvg.svg", "<html><body/></html>");
    pass(&w.check("xml", json!({"path": "logo.svg"})));
    let o = w.check("xml", json!({"path": "broken.svg"}));
    fail(&o, "not well-formed XML");
    assert_eq!(o.evidence["files"][0]["line"], 1, "{}", o.evidence);
    fail(
        &w.check("xml", json!({"path": "notsvg.svg"})),
        "root element is <html>, not <svg>",
    );
    w.write("feed.xml", "<feed><entry/></feed>");
    pass(&w.check("xml", json!({"path": "feed.xml"})));
    fail(
        &w.check("xml", json!({"path": "feed.xml", "root": "rss"})),
        "not <rss>",
    );
    // Several files: one bad one fails the check and is named.
    let o = w.check("xml", json!({"path": ["logo.svg", "broken.svg"]}));
    fail(&o, "broken.svg");
}

#[test]
fn html_structure() {
    let w = Ws::new();
    w.write(
        "good.html",
        "<!DOCTYPE html>\n<html><head><title>t</title></head><body><p>Hi <b>there</b></p></body></html>\n",
    );
    w.write(
        "bad.html",
        "<html><body><div><span>x</div></p></body></html>\n",
    );
    pass(&w.check("html", json!({"path": "good.html"})));
    let o = w.check("html", json!({"path": "bad.html"}));
    fail(&o, "HTML structural error");
    assert!(
        o.evidence["files"][0]["error_count"].as_u64().unwrap() >= 2,
        "{}",
        o.evidence
    );
    let n = o.evidence["files"][0]["error_count"].as_u64().unwrap();
    pass(&w.check("html", json!({"path": "bad.html", "max_errors": n})));
}

#[test]
fn markdown_headings() {
    let w = Ws::new();
    w.write("ok.md", "# Title\n\nText\n\n## A\n\n### A.1\n\n## B\n");
    w.write("skip.md", "# Title\n\n## A\n\n#### Deep\n");
    w.write("two.md", "# One\n\n# Two\n");
    w.write("none.md", "## Only two\n");
    w.write(
        "code.md",
        "# T\n\n```\n#### not a heading\n```\n\nSetext\n------\n",
    );
    pass(&w.check("markdown_headings", json!({"path": "ok.md"})));
    pass(&w.check("markdown_headings", json!({"path": "code.md"})));
    fail(
        &w.check("markdown_headings", json!({"path": "skip.md"})),
        "line 5: H4 \"Deep\" follows an H2, skipping level 3",
    );
    fail(
        &w.check("markdown_headings", json!({"path": "two.md"})),
        "2 level-1 headings (lines 1, 3)",
    );
    fail(
        &w.check("markdown_headings", json!({"path": "none.md"})),
        "no level-1 heading",
    );
}

// ---------- json_schema ----------

#[test]
fn json_schema_reports_every_violation_with_its_pointer() {
    let w = Ws::new();
    let schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "required": ["name", "people"],
        "properties": {
            "name": {"type": "string"},
            "people": {"type": "array", "items": {
                "type": "object", "required": ["age"],
                "properties": {"age": {"type": "integer", "minimum": 0}}
            }}
        }
    });
    w.write("ok.json", r#"{"name": "x", "people": [{"age": 3}]}"#);
    w.write(
        "bad.json",
        r#"{"people": [{"age": 3}, {"age": -1}, {"age": "old"}]}"#,
    );
    pass(&w.check("json_schema", json!({"path": "ok.json", "schema": schema})));
    let o = w.check("json_schema", json!({"path": "bad.json", "schema": schema}));
    fail(&o, "3 schema violation(s)");
    let v = &o.evidence["files"][0]["violations"];
    let pointers: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["pointer"].as_str().unwrap())
        .collect();
    assert!(pointers.contains(&"/"), "{pointers:?}"); // missing `name`
    assert!(pointers.contains(&"/people/1/age"), "{pointers:?}");
    assert!(pointers.contains(&"/people/2/age"), "{pointers:?}");
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|x| !x["message"].as_str().unwrap().is_empty())
    );

    // The schema from a file (YAML instance too).
    w.write("schemas/s.json", serde_json::to_string(&schema).unwrap());
    w.write("data.yaml", "name: y\npeople:\n  - age: 1\n");
    pass(&w.check(
        "json_schema",
        json!({"path": "data.yaml", "schema_file": "schemas/s.json"}),
    ));
    // A broken instance and a broken schema both fail.
    w.write("trunc.json", r#"{"name": "#);
    fail(
        &w.check(
            "json_schema",
            json!({"path": "trunc.json", "schema": schema}),
        ),
        "not valid JSON",
    );
    fail(
        &w.check(
            "json_schema",
            json!({"path": "ok.json", "schema": {"type": 12}}),
        ),
        "cannot be used (invalid",
    );
}

#[test]
fn json_schema_drafts_differ() {
    let w = Ws::new();
    // prefixItems exists in 2020-12 only; under Draft 7 it is an unknown keyword.
    let schema = json!({"prefixItems": [{"type": "string"}]});
    w.write("a.json", "[1]");
    fail(
        &w.check(
            "json_schema",
            json!({"path": "a.json", "schema": schema, "draft": "2020-12"}),
        ),
        "/0",
    );
    pass(&w.check(
        "json_schema",
        json!({"path": "a.json", "schema": schema, "draft": 7}),
    ));
    // Draft 7 tuple form of items.
    let s7 = json!({"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}]});
    fail(
        &w.check("json_schema", json!({"path": "a.json", "schema": s7})),
        "/0",
    );
}

// ---------- images ----------

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

#[test]
fn commands_exit_codes_timeouts_and_output() {
    let w = Ws::new();
    pass(&w.check(
        "command",
        json!({"command": ["sh", "-c", "echo built"], "stdout_contains": "built"}),
    ));
    let o = w.check(
        "build",
        json!({"command": ["sh", "-c", "echo oops >&2; exit 3"]}),
    );
    fail(&o, "exited with 3, expected 0: oops");
    assert_eq!(o.evidence["stderr"], "oops\n");
    pass(&w.check(
        "tests",
        json!({"command": ["sh", "-c", "exit 3"], "expect_exit": 3}),
    ));
    fail(
        &w.check("lint", json!({"command": ["no-such-linter-xyz"]})),
        "not found",
    );
    let start = std::time::Instant::now();
    let o = w.check(
        "command",
        json!({"command": ["sh", "-c", "sleep 30 & sleep 30"], "timeout": "300ms"}),
    );
    fail(&o, "timed out");
    assert!(
        start.elapsed().as_secs() < 10,
        "the whole group is killed at the limit"
    );
    // A process that leaves the group (setsid) and keeps the pipes open cannot hang the check.
    if std::path::Path::new("/usr/bin/setsid").exists()
        || std::path::Path::new("/bin/setsid").exists()
    {
        let start = std::time::Instant::now();
        let o = w.check(
            "command",
            json!({"command": ["sh", "-c", "setsid sleep 5 & echo started"]}),
        );
        pass(&o);
        assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    }
    w.write("sub/f.txt", "x");
    pass(&w.check(
        "command",
        json!({"command": ["test", "-f", "f.txt"], "cwd": "sub"}),
    ));
}

#[test]
fn syntax_and_import_checks() {
    let w = Ws::new();
    w.write("ok.py", "def f(x):\n    return x + 1\n");
    w.write("bad.py", "def f(x)\n    return x\n");
    w.write("ok.js", "const f = (x) => x + 1;\n");
    w.write("bad.js", "const f = (x => ;\n");
    w.write("pkg_ok.py", "VALUE = 1\n");
    w.write("pkg_bad.py", "import no_such_module_xyz\n");
    pass(&w.check("syntax", json!({"path": ["ok.py", "ok.js"]})));
    fail(
        &w.check("syntax", json!({"path": "bad.py"})),
        "python syntax error",
    );
    fail(
        &w.check("syntax", json!({"path": "bad.js"})),
        "node syntax error",
    );
    assert!(
        !w.p("__pycache__").exists(),
        "py_compile must not litter the workspace"
    );
    pass(&w.check("import", json!({"module": "pkg_ok"})));
    fail(
        &w.check("import", json!({"module": "pkg_bad"})),
        "does not import",
    );
    fail(
        &w.check("import", json!({"module": "os; print(1)"})),
        "not a module name",
    );
    pass(&w.check("import", json!({"module": "path", "language": "node"})));
    fail(
        &w.check(
            "import",
            json!({"module": "no-such-node-module-xyz", "language": "node"}),
        ),
        "does not import",
    );
}

// ---------- http ----------

fn serve(status: &'static str, body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn http_health() {
    let w = Ws::new();
    let ok = serve("200 OK", "{\"status\": \"healthy\"}");
    let down = serve("503 Service Unavailable", "nope");
    pass(&w.check(
        "http",
        json!({"url": format!("http://127.0.0.1:{ok}/health"), "contains": "healthy"}),
    ));
    fail(
        &w.check(
            "http",
            json!({"url": format!("http://localhost:{ok}/health"), "contains": "sick"}),
        ),
        "does not contain",
    );
    fail(
        &w.check(
            "http",
            json!({"url": format!("http://127.0.0.1:{down}/health")}),
        ),
        "status 503, expected 200",
    );
    pass(&w.check(
        "http",
        json!({"url": format!("http://127.0.0.1:{down}/"), "status": 503}),
    ));
    // Nobody listening.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fail(
        &w.check(
            "http",
            json!({"url": format!("http://127.0.0.1:{free}/"), "timeout": "2s"}),
        ),
        "failed",
    );
    // Not loopback: refused without connecting, so not checked.
    unseen(
        &w.check("http", json!({"url": "http://192.0.2.1/health"})),
        "not a loopback address",
    );
}

// ---------- text ----------

#[test]
fn contains_not_contains_regex() {
    let w = Ws::new();
    w.write("dist/index.html", "<h1>Acme</h1>\n<p>{{TAGLINE}}</p>\n");
    pass(&w.check(
        "contains",
        json!({"path": "dist/index.html", "text": ["Acme", "<h1>"]}),
    ));
    fail(
        &w.check(
            "contains",
            json!({"path": "dist/index.html", "text": "acme"}),
        ),
        "does not contain \"acme\"",
    );
    pass(&w.check(
        "contains",
        json!({"path": "dist/index.html", "text": "acme", "ignore_case": true}),
    ));
    fail(
        &w.check("not_contains", json!({"path": "dist/*.html", "text": "{{"})),
        "contains \"{{\" at line 2",
    );
    pass(&w.check(
        "regex",
        json!({"path": "dist/index.html", "pattern": "(?m)^<h1>"}),
    ));
    fail(
        &w.check(
            "regex",
            json!({"path": "dist/index.html", "pattern": "\\{\\{[A-Z_]+\\}\\}", "max": 0}),
        ),
        "expected at most 0",
    );
    fail(
        &w.check(
            "regex",
            json!({"path": "dist/index.html", "pattern": "<h2>"}),
        ),
        "expected at least 1",
    );
}

// ---------- manifest ----------

#[test]
fn manifest_schema_and_files() {
    let w = Ws::new();
    w.write("dist/logo.svg", "<svg/>");
    let digest = blake3::hash(b"<svg/>").to_hex().to_string();
    let good = json!({
        "artifact_name": "a", "artifact_type": "logo", "run_id": "r", "status": "completed",
        "variants": [{"name": "draw", "files": ["dist/logo.svg"], "format": "svg"}],
        "files": [{"path": "dist/logo.svg", "size": 6, "blake3": digest, "stage": "draw"}],
        "generated_at": "2026-01-01T00:00:00Z"
    });
    w.write("artifact_manifest.json", serde_json::to_vec(&good).unwrap());
    pass(&w.check("manifest", json!({"verify_digests": true})));

    w.write("dist/logo.svg", "<svg></svg>");
    fail(
        &w.check("manifest", json!({"verify_digests": true})),
        "the manifest says 6",
    );

    let mut missing = good.clone();
    missing["variants"][0]["files"] = json!(["dist/logo.svg", "dist/gone.png"]);
    w.write(
        "artifact_manifest.json",
        serde_json::to_vec(&missing).unwrap(),
    );
    fail(
        &w.check("manifest", json!({})),
        "`dist/gone.png` is named in the manifest but does not exist",
    );

    let bad = json!({"artifact_type": "logo", "variants": {"x": 1}, "files": [{"path": "../etc/passwd"}]});
    w.write("m2.json", serde_json::to_vec(&bad).unwrap());
    let o = w.check("manifest", json!({"path": "m2.json"}));
    fail(&o, "violates the manifest schema");
    let ptrs: Vec<&str> = o.evidence["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pointer"].as_str().unwrap())
        .collect();
    assert!(ptrs.contains(&"/variants"), "{ptrs:?}");
    assert!(ptrs.contains(&"/files/0/path"), "{ptrs:?}");
    assert!(
        o.evidence["problems"][0]
            .as_str()
            .unwrap()
            .contains("outside the workspace"),
        "{}",
        o.evidence
    );
    fail(
        &w.check("manifest", json!({"path": "nope.json"})),
        "does not exist",
    );
}

// ---------- parameters ----------

#[test]
fn parameters_are_checked_statically_and_at_run_time() {
    use pmpo_plan::CheckCatalog;
    let cat = pmpo_checks::Checks;
    let params = |v: serde_json::Value| v.as_object().unwrap().clone();
    assert_eq!(cat.resolve("file-exists"), Some("file_exists"));
    assert_eq!(cat.resolve("contrast-check"), Some("contrast"));
    assert_eq!(cat.resolve("schema-validate"), Some("json_schema"));
    assert_eq!(cat.resolve("nope"), None);

    let issues = cat.check_params("file_exists", &params(json!({"paht": "x"})));
    let text: Vec<String> = issues
        .iter()
        .map(|i| format!("{} {:?}", i.message, i.help))
        .collect();
    assert!(
        text.iter()
            .any(|t| t.contains("unknown parameter `paht`") && t.contains("did you mean `path`?")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("missing parameter `path`")),
        "{text:?}"
    );
    let issues = cat.check_params(
        "image_dimensions",
        &params(json!({"path": "a.png", "width": "wide"})),
    );
    assert!(
        issues[0]
            .message
            .contains("parameter `width`: expected a whole number"),
        "{}",
        issues[0].message
    );
    let issues = cat.check_params(
        "contrast",
        &params(json!({"foreground": "#12", "background": "#fff"})),
    );
    assert!(
        issues[0].message.contains("not a CSS colour"),
        "{}",
        issues[0].message
    );
    let issues = cat.check_params("file_size", &params(json!({"path": "a"})));
    assert!(
        issues[0]
            .message
            .contains("needs `min_bytes` or `max_bytes`"),
        "{}",
        issues[0].message
    );
    let issues = cat.check_params(
        "regex",
        &params(json!({"path": "a", "pattern": "(unclosed"})),
    );
    assert!(issues[0].message.contains("invalid regular expression"));
    for (name, p) in [
        ("regex", json!({"path": "a", "pattern": "x", "min": 0})),
        ("glob_count", json!({"pattern": "*.png", "min": 0})),
        ("file_size", json!({"path": "a", "min_bytes": "0KB"})),
    ] {
        let issues = cat.check_params(name, &params(p));
        assert!(
            issues[0].message.contains("cannot fail"),
            "{name}: {}",
            issues[0].message
        );
    }
    assert!(
        cat.check_params(
            "regex",
            &params(json!({"path": "a", "pattern": "x", "min": 0, "max": 0}))
        )
        .is_empty()
    );
    let issues = cat.check_params("json", &params(json!({"path": "../x"})));
    assert!(issues[0].message.contains("`..`"), "{}", issues[0].message);

    // Run time: the same problems make a failed check, never a panic.
    let w = Ws::new();
    fail(&w.check("json", json!({})), "missing parameter `path`");
    fail(
        &w.check("no_such_check", json!({})),
        "unknown check `no_such_check`; known checks:",
    );
}

// ---------- not checked: the check could not look ----------

fn preview_report(w: &Ws, diagnostics: bool, status: &str, console_error: bool) {
    w.write("dist/previews/p/screenshot.png", png_two_colours(40, 20));
    let console = if console_error {
        json!([{"level": "error", "text": "boom", "source": "console-api"}])
    } else {
        json!([])
    };
    let report = json!({
        "version": 1, "artifact_id": "p", "status": status, "required": false,
        "source": "page.html", "html": "dist/previews/p/preview.html",
        "screenshot": "dist/previews/p/screenshot.png",
        "driver": if diagnostics { "devtools" } else { "screenshot-mode" },
        "diagnostics_available": diagnostics, "runtime_source": "none", "runtime_detail": "",
        "network_allowed": false, "viewport": {"width": 40, "height": 20, "device_scale_factor": 1.0},
        "console": console, "page_errors": [], "failed_requests": [],
        "counts": {"console_errors": 0, "console_warnings": 0, "page_errors": 0, "failed_requests": 0},
        "timings": {"browser_start_ms": 0.0, "browser_reused": false, "load_ms": 0.0, "settle_ms": 0.0, "screenshot_ms": 0.0, "total_ms": 0.0},
        "generated_at": "2026-01-01T00:00:00Z",
    });
    w.write(
        "dist/previews/p/preview-report.json",
        serde_json::to_vec(&report).unwrap(),
    );
}

#[test]
fn a_preview_without_diagnostics_is_not_checked_never_clean() {
    let w = Ws::new();
    let report = json!({"report": "dist/previews/p/preview-report.json"});
    preview_report(&w, true, "success", false);
    pass(&w.check("preview", report.clone()));
    preview_report(&w, true, "success", true);
    fail(&w.check("preview", report.clone()), "boom");
    // Chromium's --screenshot mode sees no console: the same page is not judged clean.
    preview_report(&w, false, "success", false);
    let o = w.check("preview", report.clone());
    unseen(&o, "no_console_errors");
    assert!(!o.message.contains("rendered cleanly"), "{}", o.message);
    // Nor is a page that was expected to fail.
    unseen(
        &w.check(
            "preview",
            json!({"report": "dist/previews/p/preview-report.json", "expect": "fail"}),
        ),
        "not observe",
    );
    preview_report(&w, false, "skipped", false);
    unseen(&w.check("preview", report), "skipped");
}

#[test]
fn output_cut_before_the_awaited_text_is_not_checked() {
    let w = Ws::new();
    // 100 KB of output before the word and after it: the word is in the
    // middle part, which the check does not keep (its first and last 64 KiB).
    let long = json!({"command": ["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a; echo; echo needle; head -c 100000 /dev/zero | tr '\\0' b"], "stdout_contains": "needle"});
    unseen(&w.check("command", long), "not checked");
    // At the end of a long output it is kept, so it is found.
    let at_end = json!({"command": ["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a; echo; echo needle"], "stdout_contains": "needle"});
    pass(&w.check("command", at_end));
    let short = json!({"command": ["sh", "-c", "echo hay"], "stdout_contains": "needle"});
    fail(&w.check("command", short), "does not contain");
}

#[test]
fn a_body_cut_before_the_awaited_text_is_not_checked() {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let body = format!("{}needle", "x".repeat(2 * 1024 * 1024));
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let w = Ws::new();
    unseen(
        &w.check(
            "http",
            json!({"url": format!("http://127.0.0.1:{port}/"), "contains": "needle"}),
        ),
        "not checked",
    );
}

#[test]
fn named_files_are_the_file_parameters() {
    let w = Ws::new();
    w.write("dist/a.png", png(2, 2));
    w.write("dist/b.png", png(2, 2));
    let p = |v: serde_json::Value| v.as_object().unwrap().clone();
    let ws = &w.ws;
    assert_eq!(
        pmpo_checks::named_files(
            ws,
            "image_format",
            &p(json!({"path": "dist/*.png", "format": "png"}))
        ),
        ["dist/a.png", "dist/b.png"]
    );
    assert_eq!(
        pmpo_checks::named_files(ws, "manifest", &p(json!({}))),
        ["artifact_manifest.json"]
    );
    assert_eq!(
        pmpo_checks::named_files(ws, "preview", &p(json!({"report": "dist/r.json"}))),
        ["dist/r.json"]
    );
    assert!(pmpo_checks::named_files(ws, "http", &p(json!({"url": "http://x/"}))).is_empty());
}
