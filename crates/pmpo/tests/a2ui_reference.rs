//! A2UI specs in the reference format (`schemas/a2ui-component.schema.json`)
//! through `pmpo refine --type a2ui --offline` with the real binary: a clean
//! spec converges and its preview shows each bound value; a binding cycle
//! (`a -> b -> a`) and a dangling reference keep the artifact from
//! converging, named in its constraint table; specs that break the reference
//! schema fail `schema-valid`, naming the path.
//!
//! The preview needs Chromium; without it only the files written before the
//! browser are asserted (unless PMPO_REQUIRE_BROWSER=1).

mod adapters;

use adapters::*;
use pmpo_testkit::{Run, Ws};
use serde_json::Value;

fn ws() -> Ws {
    let ws = Ws::new();
    copy_fixture(&ws, "a2ui-reference", "specs");
    ws
}

/// `pmpo refine NAME --type a2ui --input specs/NAME.a2ui.json`, two iterations at most.
fn refine_spec(ws: &Ws, name: &str) -> Run {
    let input = format!("specs/{name}.a2ui.json");
    refine(
        ws,
        name,
        &["--type", "a2ui", "--input", &input, "--max-iterations", "2"],
    )
}

/// The evidence text of a constraint in the refine report.
fn evidence<'a>(report: &'a Value, id: &str) -> &'a str {
    report["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no constraint {id}: {report}"))["evidence"]
        .as_str()
        .unwrap_or_default()
}

#[test]
fn a_clean_reference_spec_converges_and_its_preview_shows_bound_values() {
    let browser = have_chromium();
    let ws = ws();
    let r = refine_spec(&ws, "counter");
    let found = ws.read_json("dist/counter.a2ui-report.json");
    assert_eq!(found["format"], "reference");
    assert_eq!(found["cycles"], serde_json::json!([]));
    assert_eq!(
        found["resolved"]["count-value"]["text"],
        serde_json::json!({"state": "value", "value": 41, "via": ["shown_count", "count"]})
    );
    // The layout (before any browser) holds the values the bindings give.
    let page = ws.read("dist/counter.html");
    for shown in [
        "<span class=\"value\">Welcome back, Ada Kowalska</span>",
        "<span class=\"value\">41</span><span class=\"via\">via shown_count → count</span>",
        "<span class=\"tag\">expression</span><code>shown_count + 1</code>",
        "<span class=\"value\">Add one</span>",
    ] {
        assert!(
            page.contains(shown),
            "{shown} is not in the layout:\n{page}"
        );
    }
    if !browser {
        eprintln!("Chromium not found: the preview is not asserted");
        return;
    }
    let report = assert_converged(&ws, &r, "counter");
    for c in ["schema-valid", "no-binding-cycles", "renders"] {
        assert_eq!(status(&report, c), "satisfied", "{c}: {report}");
    }
    // The page as the browser rendered it shows the bound values, on a
    // screenshot that is not blank.
    let rendered = ws.read("dist/previews/counter/preview.html");
    assert!(
        rendered.contains("<span class=\"value\">Welcome back, Ada Kowalska</span>"),
        "{rendered}"
    );
    assert!(
        rendered.contains("<span class=\"value\">41</span>"),
        "{rendered}"
    );
    let preview = ws.read_json("dist/previews/counter/preview-report.json");
    assert_eq!(preview["status"], "success", "{preview}");
    assert_eq!(preview["image"]["blank"], false, "{preview}");
    assert_eq!(preview["page_errors"], serde_json::json!([]), "{preview}");
    assert!(ws.p("dist/previews/counter/screenshot.png").is_file());
}

#[test]
fn a_binding_cycle_does_not_converge_and_is_named() {
    let ws = ws();
    let r = refine_spec(&ws, "loop");
    let report = assert_not_converged(&ws, &r, "loop", "no-binding-cycles");
    assert_eq!(status(&report, "schema-valid"), "satisfied", "{report}");
    let why = evidence(&report, "no-binding-cycles");
    assert!(why.contains("binding cycle: a -> b -> a"), "{why}");
    let found = ws.read_json("dist/loop.a2ui-report.json");
    assert_eq!(
        found["cycles"],
        serde_json::json!(["binding cycle: a -> b -> a"])
    );
    // The human table names it too.
    let r = bin_refine_text(&ws, "loop", "specs/loop.a2ui.json");
    assert!(r.contains("binding cycle: a -> b -> a"), "{r}");
}

#[test]
fn a_dangling_reference_does_not_converge_and_shows_unresolved() {
    let ws = ws();
    let r = refine_spec(&ws, "dangling");
    let report = assert_not_converged(&ws, &r, "dangling", "no-binding-cycles");
    let why = evidence(&report, "no-binding-cycles");
    assert!(
        why.contains("root.children[1].bindings.label") && why.contains("user_name"),
        "{why}"
    );
    let page = ws.read("dist/dangling.html");
    assert!(
        page.contains("<span class=\"tag\">unresolved</span>user_name is not defined in bindings"),
        "{page}"
    );
    assert!(
        page.contains("<span class=\"value\">Profile</span>"),
        "{page}"
    );
}

#[test]
fn specs_breaking_the_reference_schema_fail_schema_valid_naming_the_path() {
    let ws = ws();
    for (name, path, word) in [
        ("uppercase", "/root/children/0/id", "Heading"),
        ("unknown-key", "/root", "style"),
        ("ref-without-target", "/bindings/title", "ref"),
    ] {
        let r = refine_spec(&ws, name);
        let report = assert_not_converged(&ws, &r, name, "schema-valid");
        let why = evidence(&report, "schema-valid");
        assert!(
            why.contains(&format!("first at {path}:")) && why.contains(word),
            "{name}: {why}"
        );
    }
}

/// `pmpo refine` without `--json`: the text a person reads.
fn bin_refine_text(ws: &Ws, name: &str, input: &str) -> String {
    let out = pmpo_testkit::bin()
        .args([
            "refine",
            name,
            "--offline",
            "--type",
            "a2ui",
            "--input",
            input,
        ])
        .args(["--max-iterations", "1"])
        .current_dir(ws.path())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn pmpo_flat_layout_passes_its_own_schema_and_is_laid_out() {
    let browser = have_chromium();
    let ws = ws();
    let r = refine_spec(&ws, "flat");
    let found = ws.read_json("dist/flat.a2ui-report.json");
    assert_eq!(found["format"], "flat");
    let page = ws.read("dist/flat.html");
    for id in ["card", "title", "body"] {
        assert!(
            page.contains(&format!("<div class=\"component\" data-id=\"{id}\">")),
            "{id}: {page}"
        );
    }
    assert!(page.contains("text: Flat body"), "{page}");
    if browser {
        let report = assert_converged(&ws, &r, "flat");
        assert_eq!(status(&report, "schema-valid"), "satisfied");
    } else {
        eprintln!("Chromium not found: the outcome is not asserted");
        assert_eq!(status(&r.json(), "schema-valid"), "satisfied");
    }
}
