//! Formats: json, yaml, xml, html, markdown headings and JSON Schema, good and bad.

mod common;
use common::*;
use serde_json::json;

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
