//! The offline content and code adapters through `pmpo refine --offline`:
//! markdown with relative links, Python and Node projects with passing and
//! failing tests, and eslint run only with a configuration.
//!
//! Adapters that preview need Chromium (and esbuild for TSX). Without them
//! the outcome of those runs is not asserted, unless PMPO_REQUIRE_BROWSER=1,
//! which makes a missing browser a failure.

mod adapters;

use adapters::*;
use pmpo_testkit::{Run, Ws, bin};

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
            &[
                "page-exists",
                "heading-hierarchy",
                "links-resolve",
                "renders",
            ][..],
            a11y(browser),
            &["manifest-complete"],
        ]
        .concat(),
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
        assert_eq!(status(&report, "accessible"), "satisfied");
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
