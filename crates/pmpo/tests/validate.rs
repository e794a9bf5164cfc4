//! `pmpo validate`, per-stage `validate:` in `pmpo execute`, constraints.json,
//! JUnit reports, and `pmpo check` on check names and parameters.

use common::assert_mentions;
use common::*;
use pmpo_testkit as common;

const SPEC: &str = "specification:
  artifact_name: t
  artifact_type: logo
  constraints:
    - {id: svg-valid, description: The logo is valid SVG, severity: blocking}
    - {id: readable, description: Text reaches AA, severity: high}
    - {id: brand, description: Feels on brand, severity: low}
    - {id: docs, description: Docs are structured, severity: medium}
";

fn plan(ws: &Ws, stages: &str, validation_plan: &str) {
    ws.write(
        "plan.yaml",
        &if validation_plan.is_empty() {
            format!("{SPEC}plan:\n  stages:\n{stages}")
        } else {
            format!("{SPEC}plan:\n  stages:\n{stages}  validation_plan:\n{validation_plan}")
        },
    );
}

const NOOP: &str = "    - id: a\n      with: {command: [echo, hi]}\n";

const VPLAN: &str = "    - {constraint_id: svg-valid, validation_method: xml, with: {path: dist/logo.svg}}
    - {constraint_id: readable, validation_method: contrast, with: {foreground: \"#777\", background: \"#fff\"}}
    - {constraint_id: brand, validation_method: human review, execution_required: false}
";

fn good_svg(ws: &Ws) {
    ws.write(
        "dist/logo.svg",
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"8\" height=\"8\"/>",
    );
}

#[test]
fn validate_records_each_constraint_and_exits_by_blocking_severity() {
    let ws = Ws::new();
    plan(&ws, NOOP, VPLAN);
    good_svg(&ws);
    // `readable` (high) is violated: #777 on white is 4.48:1. Not blocking: exit 0.
    let r = ws.run_ok(&["validate", "plan.yaml"]);
    assert_contains(&r.stdout, "svg-valid (blocking): satisfied");
    assert_contains(&r.stdout, "readable (high): VIOLATED");
    assert_contains(&r.stdout, "FAIL contrast");
    let c = ws.read_json("constraints.json");
    let by: std::collections::HashMap<String, serde_json::Value> = c["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["id"].as_str().unwrap().to_string(), x.clone()))
        .collect();
    assert_eq!(by["svg-valid"]["status"], "satisfied");
    assert_eq!(by["svg-valid"]["severity"], "blocking");
    assert_eq!(by["readable"]["status"], "violated");
    assert_mentions(&by["readable"]["checks"][0], "message", "4.47");
    assert_eq!(by["brand"]["status"], "not_checked");
    assert_eq!(by["docs"]["status"], "not_checked");
    assert_eq!(c["summary"]["violated"], 1);
    assert_eq!(c["summary"]["blocking_violated"], 0);
    // Reference layout: artifact_type + constraints with id/description/severity.
    assert_eq!(c["artifact_type"], "logo");
    // --strict: any violation fails.
    assert_eq!(ws.run(&["validate", "plan.yaml", "--strict"]).code, 1);
    // The log has a summary; the results file has every outcome.
    let log = ws.read("refinement_log.md");
    assert!(log.contains("| `readable` | high | violated |"), "{log}");
    let res = ws.read_json(".state/validation_results.json");
    assert_eq!(res["validation_outputs"].as_array().unwrap().len(), 3);

    // Break the blocking constraint: exit 1.
    ws.write(
        "dist/logo.svg",
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><g></svg>",
    );
    let r = ws.run_code(1, &["validate", "plan.yaml", "--json"]);
    let j = r.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["summary"]["blocking_violated"], 1);
    let xml = &j["validation_outputs"][0];
    assert_eq!(xml["status"], "failed");
    assert_mentions(&xml["evidence"], "message", "not well-formed XML");
    // Missing file: also a violation, not a crash.
    std::fs::remove_file(ws.p("dist/logo.svg")).unwrap();
    let r = ws.run(&["validate", "plan.yaml"]);
    assert_eq!(r.code, 1);
    assert_contains(&r.stdout, "does not exist");
}

#[test]
fn junit_report_parses_back() {
    let ws = Ws::new();
    plan(&ws, NOOP, VPLAN);
    good_svg(&ws);
    ws.run_ok(&["validate", "plan.yaml", "--junit", "reports/junit.xml"]);
    let text = ws.read("reports/junit.xml");
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some("4"));
    assert_eq!(root.attribute("failures"), Some("1"));
    assert_eq!(root.attribute("skipped"), Some("2"));
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    let names: Vec<&str> = suites.iter().filter_map(|s| s.attribute("name")).collect();
    assert_eq!(names, ["svg-valid", "readable", "brand", "docs"]);
    let readable = suites[1];
    assert_eq!(readable.attribute("failures"), Some("1"));
    let case = readable
        .children()
        .find(|n| n.has_tag_name("testcase"))
        .unwrap();
    assert_eq!(case.attribute("classname"), Some("pmpo.readable"));
    let failure = case.children().find(|n| n.has_tag_name("failure")).unwrap();
    assert!(
        failure
            .attribute("message")
            .unwrap()
            .contains("below 4.5:1"),
        "{text}"
    );
    assert!(failure.text().unwrap().contains("\"ratio\""), "{text}");
    let sev = readable
        .descendants()
        .find(|n| n.attribute("name") == Some("severity"))
        .unwrap();
    assert_eq!(sev.attribute("value"), Some("high"));
    // A case whose constraint is not executed is skipped, not passed.
    assert!(
        suites[2].descendants().any(|n| n.has_tag_name("skipped")),
        "{text}"
    );
}

#[test]
fn a_failing_validate_item_fails_its_stage() {
    let ws = Ws::new();
    plan(
        &ws,
        "    - id: draw
      with: {command: [sh, -c, \"mkdir -p dist && echo '<svg xmlns=\\\"http://www.w3.org/2000/svg\\\"><g></svg>' > dist/logo.svg\"]}
      outputs: [dist/logo.svg]
      validate:
        - {check: non_empty, with: {path: dist/logo.svg}}
        - {check: xml, with: {path: dist/logo.svg}, constraint_id: svg-valid}
    - id: after
      depends_on: draw
      with: {command: [echo, later]}
",
        VPLAN,
    );
    let r = ws.run_code(1, &["execute", "plan.yaml", "--json"]);
    let j = r.json();
    assert_eq!(j["stages"][0]["status"], "FAILED", "{}", j["stages"]);
    assert!(
        j["stages"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("check `xml` failed: dist/logo.svg: not well-formed XML"),
        "{}",
        j["stages"][0]
    );
    assert_eq!(j["stages"][1]["status"], "SKIPPED");
    assert_eq!(j["errors"][0]["kind"], "validation_failed");
    let outs = j["validation_outputs"].as_array().unwrap();
    let stage_checks: Vec<(&str, &str)> = outs
        .iter()
        .filter(|o| o["stage"] == "draw")
        .map(|o| (o["check"].as_str().unwrap(), o["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stage_checks,
        [
            ("declared_outputs", "passed"),
            ("non_empty", "passed"),
            ("xml", "failed")
        ]
    );
    // The validation_plan still ran after the stages. The file is under the
    // outputs of a stage that failed, but that stage wrote it in this run:
    // the failure found in it stands (a pass would not count).
    let plan_checks: Vec<&str> = outs
        .iter()
        .filter(|o| o["stage"].is_null())
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(plan_checks, ["failed", "failed", "not_checked"]);
    let xml = outs
        .iter()
        .find(|o| o["stage"].is_null() && o["check"] == "xml")
        .unwrap();
    let unproven = xml["evidence"]["unproven"][0].as_str().unwrap();
    assert!(
        unproven.contains("`dist/logo.svg` is unproven: stage `draw` FAILED in run")
            && unproven.contains("written by that failed stage"),
        "{unproven}"
    );
    let saved = ws.read_json(".state/execution_results.json");
    assert_eq!(saved["validation_outputs"], j["validation_outputs"]);
    let c = ws.read_json("constraints.json");
    assert_eq!(c["constraints"][0]["status"], "violated");
    assert_eq!(c["constraints"][0]["checks"].as_array().unwrap().len(), 2);
    assert!(ws.read("refinement_log.md").contains("Validation: "));
}

#[test]
fn passing_validate_items_complete_the_stage() {
    let ws = Ws::new();
    plan(
        &ws,
        "    - id: docs
      with: {command: [sh, -c, \"printf '# T\\\\n\\\\n## A\\\\n' > README.md\"]}
      outputs: [README.md]
      validate:
        - {check: markdown_headings, with: {path: README.md}, constraint_id: docs}
        - {check: contains, with: {path: README.md, text: \"## A\"}}
",
        "    - {constraint_id: docs, validation_method: markdown_headings, with: {path: README.md}}\n",
    );
    ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let c = ws.read_json("constraints.json");
    assert_eq!(c["constraints"][3]["id"], "docs");
    assert_eq!(c["constraints"][3]["status"], "satisfied");
}

/// `pmpo check` on a plan; returns stderr (exit 2 expected).
fn check_fails(ws: &Ws) -> String {
    let r = ws.run_code(2, &["check", "plan.yaml"]);
    let v = ws.run(&["validate", "plan.yaml"]);
    assert_eq!(v.code, 2, "validate refuses an invalid plan too");
    assert!(!ws.p("constraints.json").exists());
    r.stderr
}

#[test]
fn check_names_unknown_checks_with_the_valid_ones() {
    let ws = Ws::new();
    plan(
        &ws,
        "    - id: a
      with: {command: [echo]}
      validate:
        - {check: file_exsts, with: {path: x}}
",
        "    - {constraint_id: svg-valid, validation_method: svg_lint, with: {path: x}}\n",
    );
    let err = check_fails(&ws);
    assert!(
        err.contains("plan.yaml:14:19: stage `a`: validate[0] uses unknown check `file_exsts`"),
        "{err}"
    );
    assert!(err.contains("did you mean `file_exists`?"), "{err}");
    assert!(
        err.contains(
            "known checks: accessibility, aspect_ratio, build, command, contains, contrast"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "plan.yaml:16:53: validation_plan[0] (`svg-valid`) uses unknown check `svg_lint`"
        ),
        "{err}"
    );
}

#[test]
fn check_names_bad_parameters_with_their_line() {
    let ws = Ws::new();
    plan(
        &ws,
        "    - id: a
      with: {command: [echo]}
      validate:
        - check: image_dimensions
          with:
            path: dist/logo.png
            width: wide
        - check: contrast
          with: {foreground: \"#12\", background: white}
        - check: json
          with: {paht: data.json}
        - check: xml
          with: {path: ../outside.svg}
          constraint_id: nope
",
        "    - {constraint_id: svg-valid, validation_method: json_schema, with: {path: a.json}}\n",
    );
    let err = check_fails(&ws);
    for needle in [
        "plan.yaml:17:20: stage `a`: validate[0]: check `image_dimensions`: parameter `width`: expected a whole number >= 0, found the string \"wide\"",
        "plan.yaml:19:30: stage `a`: validate[1]: check `contrast`: `#12` is not a CSS colour",
        "plan.yaml:21:24: stage `a`: validate[2]: check `json`: unknown parameter `paht`",
        "did you mean `path`?",
        "validate[2]: check `json`: missing parameter `path`",
        "plan.yaml:23:24: stage `a`: validate[3]: check `xml`: parameter `path`: path `../outside.svg` contains `..`",
        "plan.yaml:24:26: stage `a`: validate[3] names constraint `nope`",
        "validation_plan[0] (`svg-valid`): check `json_schema`: needs `schema` or `schema_file`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn free_text_methods_are_fine_when_not_executed() {
    let ws = Ws::new();
    plan(
        &ws,
        NOOP,
        "    - {constraint_id: brand, validation_method: ask the art director, execution_required: false}\n",
    );
    ws.run_ok(&["check", "plan.yaml"]);
}

#[test]
fn the_checks_example_executes_and_validates() {
    let ws = Ws::new();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/checks/plan.yaml"
    );
    std::fs::copy(example, ws.p("plan.yaml")).unwrap();
    let r = ws.run_ok(&["execute", "plan.yaml", "--json", "-q"]);
    let j = r.json();
    let failed: Vec<&serde_json::Value> = j["validation_outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["status"] == "failed")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    // The engine's own manifest passes the manifest check, with digests.
    let c = ws.read_json("constraints.json");
    assert_eq!(c["summary"]["satisfied"], 6, "{c}");
    assert_eq!(c["summary"]["not_checked"], 1);
    ws.run_ok(&["validate", "plan.yaml", "--junit", "junit.xml"]);
    // constraints.json matches the schema the project ships (checked by pmpo's own json_schema check).
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/constraints.schema.json"
    );
    std::fs::create_dir_all(ws.p("schemas")).unwrap();
    std::fs::copy(schema, ws.p("schemas/constraints.schema.json")).unwrap();
    ws.write(
        "meta/plan.yaml",
        "specification:\n  artifact_name: m\n  artifact_type: meta\n  constraints:\n    - {id: shape, description: d, severity: blocking}\nplan:\n  stages:\n    - id: a\n      with: {command: [echo]}\n  validation_plan:\n    - {constraint_id: shape, validation_method: json_schema, with: {path: constraints.json, schema_file: schemas/constraints.schema.json}}\n",
    );
    ws.run_ok(&["validate", "meta/plan.yaml", "-w", "."]);
    // Break a PNG: the blocking `sizes` constraint is violated.
    let png = ws.p("out/logo-32.png");
    let bytes = std::fs::read(&png).unwrap();
    std::fs::write(&png, &bytes[..bytes.len() / 2]).unwrap();
    let r = ws.run_code(1, &["validate", "plan.yaml"]);
    assert_contains(&r.stdout, "sizes (blocking): VIOLATED");
    assert_contains(&r.stdout, "truncated PNG");
    assert_contains(&r.stdout, "manifest (blocking): VIOLATED");
}

fn interrupt_after(child: &std::process::Child, ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn process_alive(ws: &Ws, pidfile: &str) -> bool {
    let pid = ws.read(pidfile).trim().to_string();
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Starts `pmpo ARGS`, presses Ctrl-C once its command check has written
/// `bg.pid`, and checks that it ends as cancelled (130). Returns when it began.
fn ctrl_c_once_the_check_runs(ws: &Ws, args: &[&str]) -> std::time::Instant {
    let start = std::time::Instant::now();
    let child = bin()
        .args(args)
        .current_dir(ws.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while !ws.p("bg.pid").exists() && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    interrupt_after(&child, 100);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "`pmpo {}`: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    start
}

#[test]
fn ctrl_c_stops_a_running_command_check_and_its_process_group() {
    let ws = Ws::new();
    plan(
        &ws,
        NOOP,
        "    - {constraint_id: svg-valid, validation_method: command, with: {command: [sh, -c, \"sleep 30 & echo $! > bg.pid; wait\"], timeout: 60s, writes: [bg.pid]}}\n",
    );
    let start = ctrl_c_once_the_check_runs(&ws, &["validate", "plan.yaml"]);
    assert!(start.elapsed().as_secs() < 20);
    assert!(
        !process_alive(&ws, "bg.pid"),
        "the check's background process must be killed"
    );
}

#[test]
fn ctrl_c_during_a_stage_check_cancels_the_run() {
    let ws = Ws::new();
    plan(
        &ws,
        "    - id: a
      with: {command: [echo, hi]}
      validate:
        - {check: command, with: {command: [sh, -c, \"sleep 30 & echo $! > bg.pid; wait\"], writes: [bg.pid]}}
",
        "",
    );
    ctrl_c_once_the_check_runs(&ws, &["execute", "plan.yaml", "-q"]);
    assert!(!process_alive(&ws, "bg.pid"));
    let res = ws.read_json(".state/execution_results.json");
    assert_eq!(res["status"], "cancelled");
    assert_eq!(res["errors"][0]["kind"], "cancelled");
}

#[test]
fn check_json_lists_check_errors_and_validate_refuses_a_missing_workspace() {
    let ws = Ws::new();
    plan(
        &ws,
        NOOP,
        "    - {constraint_id: svg-valid, validation_method: xml, with: {pth: a.svg}}\n",
    );
    let j = ws.run(&["check", "plan.yaml", "--json"]).json();
    assert_eq!(j["ok"], false);
    let errors = j["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["path"] == "plan.validation_plan[0].with.pth"
                && e["line"] == 14
                && e["help"].as_str().unwrap().contains("did you mean `path`?")),
        "{j}"
    );
    plan(&ws, NOOP, VPLAN);
    let r = ws.run_code(2, &["validate", "plan.yaml", "-w", "no/such/dir"]);
    assert_contains(&r.stderr, "no/such/dir");
}

/// A blocking constraint whose check could not look (a file too large to read
/// whole) is not satisfied: `pmpo validate` says NOT CHECKED, exits 1, and the
/// JUnit report does not show it green.
#[test]
fn a_blocking_constraint_a_check_could_not_look_at_is_not_a_success() {
    let ws = Ws::new();
    ws.write("dist/logo.svg", "");
    let f = std::fs::File::create(ws.p("dist/logo.svg")).unwrap();
    f.set_len(64 * 1024 * 1024 + 1).unwrap(); // sparse: no disk used
    plan(
        &ws,
        NOOP,
        "    - {constraint_id: svg-valid, validation_method: xml, with: {path: dist/logo.svg}}\n",
    );
    let r = ws.run_code(1, &["validate", "plan.yaml", "--junit", "junit.xml"]);
    assert_contains(&r.stdout, "svg-valid (blocking): not checked");
    assert_contains(&r.stdout, "NOT CHECKED xml");
    assert_contains(&r.stdout, "reads at most");
    assert_contains(&r.stdout, "4 not checked (1 blocking)");

    let text = ws.read("junit.xml");
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite") && n.attribute("name") == Some("svg-valid"))
        .unwrap();
    assert_eq!(suite.attribute("failures"), Some("1"), "{text}");
    assert_eq!(suite.attribute("skipped"), Some("1"), "{text}");
    let failure = suite
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert_eq!(failure.attribute("type"), Some("not_checked"), "{text}");

    let j = ws.run(&["validate", "plan.yaml", "--json"]).json();
    assert_eq!(j["ok"], false, "{j}");
    assert_eq!(j["summary"]["blocking_not_checked"], 1, "{j}");
    assert_eq!(j["summary"]["blocking_violated"], 0, "{j}");

    // The same check under a constraint that is not blocking: reported, exit 0.
    plan(
        &ws,
        NOOP,
        "    - {constraint_id: brand, validation_method: xml, with: {path: dist/logo.svg}}\n",
    );
    let r = ws.run_ok(&["validate", "plan.yaml"]);
    assert_contains(&r.stdout, "brand (low): not checked");
}

/// A constraint whose description holds terminal colour codes and a control
/// character still gives a JUnit report that parses: what XML cannot hold is
/// dropped, the rest of the text is kept.
#[test]
fn junit_drops_what_xml_cannot_hold() {
    let ws = Ws::new();
    ws.write(
        "plan.yaml",
        &format!(
            "{}plan:\n  stages:\n{NOOP}  validation_plan:\n    - {{constraint_id: loud, validation_method: non_empty, with: {{path: plan.yaml}}}}\n",
            SPEC.replace(
                "  constraints:\n",
                "  constraints:\n    - {id: loud, description: \"\\e[1mbold\\e[0m and \\x01bell\", severity: low}\n"
            )
        ),
    );
    ws.run_ok(&["validate", "plan.yaml", "--junit", "junit.xml"]);
    let text = ws.read("junit.xml");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{1}'),
        "{text:?}"
    );
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let description = doc
        .descendants()
        .find(|n| {
            n.attribute("name") == Some("description")
                && n.attribute("value").is_some_and(|v| v.contains("bold"))
        })
        .unwrap_or_else(|| panic!("no description in {text}"));
    assert_eq!(description.attribute("value"), Some("bold and bell"));
}
