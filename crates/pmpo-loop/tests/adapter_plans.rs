//! Every adapter's plan, for every artifact type: the stages, constraints and
//! checks it builds are values of the plan format (they read back as they
//! were written), and every check names a constraint of its own plan.

use pmpo_loop::domain::{self, AdapterInput};
use pmpo_plan::{Constraint, Stage, ValidationItem};
use serde_json::{Map, Value, json};

/// (artifact type, content type, inputs, intent, components)
type Case = (
    &'static str,
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    &'static [&'static str],
);

const CASES: &[Case] = &[
    ("logo", "direct:image", &["logo.svg"], None, &[]),
    ("ui", "direct:html", &["page.html"], Some("a card"), &[]),
    ("ui", "direct:tsx", &["Card.tsx"], None, &[]),
    ("a2ui", "direct:a2ui", &["spec.json"], None, &[]),
    ("image", "direct:image", &["photo.png"], None, &[]),
    ("image", "direct:image", &["logo.svg"], None, &[]),
    ("content", "direct:content", &["docs/guide.md"], None, &[]),
    (
        "code",
        "direct:code",
        &["app.py", "tests/test_app.py"],
        None,
        &[],
    ),
    ("code", "direct:code", &["app.js", "app.test.js"], None, &[]),
    ("code", "direct:code", &["run.sh"], None, &[]),
    ("code", "direct:code", &["main.rs"], None, &[]),
    (
        "meta-prompt",
        "meta:image-prompt",
        &["prompt.md"],
        None,
        &[],
    ),
    (
        "meta-prompt",
        "meta:agent-prompt",
        &[],
        Some("review pull requests"),
        &[],
    ),
    (
        "meta-prompt",
        "meta:composite",
        &[],
        Some("a launch kit"),
        &["meta:image-prompt", "direct:content=docs/guide.md"],
    ),
];

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files: &[(&str, &str)] = &[
        ("logo.svg", "<svg xmlns='http://www.w3.org/2000/svg'/>"),
        ("page.html", "<p>hi</p>"),
        ("Card.tsx", "export default () => null;"),
        ("spec.json", "{}"),
        ("photo.png", "png"),
        (
            "docs/guide.md",
            "# Guide\n\n![a](img/a.png) [b](other.md)\n",
        ),
        ("docs/img/a.png", "png"),
        ("docs/other.md", "# Other\n"),
        ("app.py", "print(1)\n"),
        ("tests/test_app.py", "def test(): pass\n"),
        ("app.js", "1;\n"),
        ("app.test.js", "1;\n"),
        ("run.sh", "true\n"),
        ("main.rs", "fn main() {}\n"),
        ("prompt.md", "Draw a fox.\n"),
    ];
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// Each case's plan as JSON (stages, constraints, checks, required files).
fn plans(root: &std::path::Path, test_generation: bool) -> Vec<Value> {
    let options = Map::new();
    let mut out = Vec::new();
    for (artifact_type, content_type, inputs, intent, components) in CASES {
        let inputs: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        let components: Vec<String> = components.iter().map(|s| s.to_string()).collect();
        let input = AdapterInput {
            name: "demo",
            artifact_type,
            content_type,
            inputs: &inputs,
            intent: *intent,
            options: &options,
            target_platform: None,
            test_generation,
            components: &components,
            root,
        };
        let (defaults, plan) = domain::build(&input)
            .unwrap_or_else(|e| panic!("{artifact_type} ({content_type}): {e}"));
        out.push(json!({
            "case": format!("{artifact_type} {content_type} {inputs:?}"),
            "stages": plan.stages,
            "constraints": defaults.constraints,
            "checks": defaults.checks,
            "required_files": defaults.required_files,
        }));
    }
    out
}

#[test]
fn every_adapter_builds_plan_values_that_read_back_as_written() {
    let ws = workspace();
    for test_generation in [false, true] {
        for plan in plans(ws.path(), test_generation) {
            let case = plan["case"].as_str().unwrap();
            let stages: Vec<Stage> = serde_json::from_value(plan["stages"].clone()).unwrap();
            let constraints: Vec<Constraint> =
                serde_json::from_value(plan["constraints"].clone()).unwrap();
            let checks: Vec<ValidationItem> =
                serde_json::from_value(plan["checks"].clone()).unwrap();
            assert_eq!(json!(stages), plan["stages"], "{case}");
            assert_eq!(json!(constraints), plan["constraints"], "{case}");
            assert!(!stages.is_empty(), "{case}");
            let ids: Vec<&str> = stages.iter().map(|s| s.id.as_str()).collect();
            for s in &stages {
                for d in &s.depends_on {
                    assert!(ids.contains(&d.as_str()), "{case}: `{}` after `{d}`", s.id);
                }
            }
            for k in &checks {
                let c = constraints.iter().find(|c| c.id == k.constraint_id);
                let c = c.unwrap_or_else(|| panic!("{case}: check of `{}`", k.constraint_id));
                assert_eq!(
                    c.validation
                        .as_ref()
                        .and_then(|v| v.validation_method.as_deref()),
                    Some(k.validation_method.as_str()),
                    "{case}"
                );
            }
        }
    }
}
