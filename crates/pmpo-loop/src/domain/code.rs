//! The code adapter: the language's syntax check, linter, format check and
//! tests, each a constraint with its check when the tool is on `PATH`.

use std::path::Path;

use serde_json::{Value, json};

use pmpo_plan::{ConstraintKind, Severity};

use super::values::{StageValue, stage};
use super::{AdapterError, AdapterInput, Builder, Scope, argv, ext, need_input, on_path};

/// Whether a workspace directory and every directory above it (up to the
/// root) hold an `__init__.py`, so that it imports as a package from the root.
fn is_python_package(root: &Path, dir: &str) -> bool {
    if dir.is_empty() || dir == "." {
        return false;
    }
    let mut at = root.to_path_buf();
    dir.split('/').filter(|p| !p.is_empty()).all(|part| {
        at.push(part);
        at.join("__init__.py").is_file()
    })
}

/// Whether the workspace root has an eslint configuration (flat or legacy).
fn has_eslint_config(root: &Path) -> bool {
    let flat = ["js", "mjs", "cjs", "ts", "mts", "cts"]
        .iter()
        .any(|e| root.join(format!("eslint.config.{e}")).is_file());
    let legacy = ["", ".js", ".cjs", ".json", ".yml", ".yaml"]
        .iter()
        .any(|e| root.join(format!(".eslintrc{e}")).is_file());
    let in_package = std::fs::read_to_string(root.join("package.json"))
        .is_ok_and(|t| t.contains("\"eslintConfig\""));
    flat || legacy || in_package
}

/// Test files next to the inputs or in a `tests`/`test` directory.
fn find_tests(root: &Path, inputs: &[String], is_test: impl Fn(&str) -> bool) -> Vec<String> {
    let mut dirs: Vec<String> = vec!["tests".into(), "test".into()];
    for i in inputs {
        let parent = i
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        if !dirs.contains(&parent) {
            dirs.push(parent);
        }
    }
    let mut found = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(if d.is_empty() { "." } else { &d })) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| is_test(n))
            .collect();
        names.sort();
        for n in names {
            let rel = if d.is_empty() { n } else { format!("{d}/{n}") };
            if !found.contains(&rel) {
                found.push(rel);
            }
        }
    }
    found
}

pub(super) fn code(
    b: &mut Builder,
    s: &Scope,
    input: &AdapterInput<'_>,
) -> Result<(), AdapterError> {
    let lang_exts = ["py", "js", "mjs", "cjs", "sh", "bash", "rs"];
    let first = need_input(input, "source files", &lang_exts)?;
    let language = match ext(first).as_str() {
        "py" => "python",
        "js" | "mjs" | "cjs" => "node",
        "sh" | "bash" => "shell",
        _ => "rust",
    };
    let sources: Vec<String> = input
        .inputs
        .iter()
        .filter(|p| lang_exts.contains(&ext(p).as_str()))
        .cloned()
        .collect();
    // The sources go to dist/code/ once their checks are known; the stage
    // copies each file (paths are arguments, never shell text).
    let outputs: Vec<String> = sources
        .iter()
        .map(|p| s.path(&format!("code/{p}")))
        .collect();
    let mut package = vec![
        json!("sh"),
        json!("-c"),
        json!(format!(
            "for f; do mkdir -p \"{}/code/$(dirname \"$f\")\" && cp \"$f\" \"{}/code/$f\"; done",
            s.dist, s.dist
        )),
        json!("sh"),
    ];
    package.extend(sources.iter().map(|p| json!(p)));
    b.stage(
        s,
        stage("package", "run", "Copy the sources into dist/code/")
            .with(json!({"command": package}))
            .reads(&sources)
            .writes(outputs),
    );
    let files = json!(sources);
    let language_checks = match language {
        "python" => python,
        "node" => node,
        "shell" => shell,
        _ => rust,
    };
    language_checks(b, s, input, &sources, &files);
    b.d.required_files
        .extend(sources.iter().map(|p| s.path(&format!("code/{p}"))));
    Ok(())
}

/// Python: compile, ruff or pyflakes, ruff format or black, pytest or unittest.
fn python(b: &mut Builder, s: &Scope, input: &AdapterInput<'_>, sources: &[String], files: &Value) {
    b.constraint(
        s,
        "syntax",
        Severity::Blocking,
        ConstraintKind::Technical,
        "Every source file compiles",
        Some(("syntax", json!({"path": files, "language": "python"}))),
    );
    let linter = if on_path("ruff") {
        Some(argv(&["ruff", "check"], sources))
    } else if on_path("pyflakes") {
        Some(argv(&["pyflakes"], sources))
    } else {
        note(
            b,
            "python",
            "no linter (ruff, pyflakes) on PATH; the lint constraint is left to judgement",
        );
        None
    };
    lint(b, s, "The linter reports no error", linter);
    let fmt = if on_path("ruff") {
        Some(json!({"command": argv(&["ruff", "format", "--check"], sources)}))
    } else if on_path("black") {
        Some(json!({"command": argv(&["black", "--check", "-q"], sources)}))
    } else {
        note(
            b,
            "python",
            "no formatter (ruff, black) on PATH; the format constraint is left to judgement",
        );
        None
    };
    b.constraint(
        s,
        "format",
        Severity::Medium,
        ConstraintKind::Technical,
        "The sources are formatted",
        fmt.map(|w| ("command", w)),
    );
    let tests = find_tests(input.root, sources, |n| {
        n.ends_with(".py") && (n.starts_with("test_") || n.ends_with("_test.py"))
    });
    if tests.is_empty() {
        tests_left_to_judgement(b, s, "python", "test_*.py, *_test.py");
    } else {
        let dir = tests[0]
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_else(|| ".".into());
        let cmd = if on_path("pytest") {
            json!(["pytest", "-q", "-p", "no:cacheprovider", dir])
        } else {
            // `-t .` makes unittest import the start directory as a
            // package from the workspace root, which fails ("Start
            // directory is not importable") unless every directory on
            // the way has an `__init__.py`; a plain `tests/` has none.
            let mut cmd = vec![
                json!("python3"),
                json!("-B"),
                json!("-m"),
                json!("unittest"),
                json!("discover"),
                json!("-s"),
                json!(dir),
            ];
            if is_python_package(input.root, &dir) {
                cmd.push(json!("-t"));
                cmd.push(json!("."));
            }
            cmd.push(json!("-p"));
            cmd.push(json!("*test*.py"));
            Value::Array(cmd)
        };
        b.constraint(
            s,
            "tests",
            Severity::Blocking,
            ConstraintKind::Technical,
            &format!("The tests pass ({})", tests.join(", ")),
            Some((
                "tests",
                json!({"command": cmd, "env": {"PYTHONDONTWRITEBYTECODE": "1"}}),
            )),
        );
    }
}

/// Node: node --check, eslint (with a configuration), prettier, node --test.
fn node(b: &mut Builder, s: &Scope, input: &AdapterInput<'_>, sources: &[String], files: &Value) {
    b.constraint(
        s,
        "syntax",
        Severity::Blocking,
        ConstraintKind::Technical,
        "Every source file parses (node --check)",
        Some(("syntax", json!({"path": files, "language": "node"}))),
    );
    // eslint refuses to run (exit 2) in a project without its
    // configuration, which would fail the lint constraint of any code.
    let eslint_config = has_eslint_config(input.root);
    let linter = if on_path("eslint") && eslint_config {
        Some(argv(&["eslint"], sources))
    } else {
        note(
            b,
            "node",
            if eslint_config {
                "no linter (eslint) on PATH; the lint constraint is left to judgement"
            } else {
                "no eslint configuration in the workspace (eslint.config.*, .eslintrc*), so eslint is not run; the lint constraint is left to judgement"
            },
        );
        None
    };
    lint(b, s, "The linter reports no error", linter);
    if on_path("prettier") {
        b.constraint(
            s,
            "format",
            Severity::Medium,
            ConstraintKind::Technical,
            "The sources are formatted",
            Some((
                "command",
                json!({"command": argv(&["prettier", "--check"], sources)}),
            )),
        );
    } else {
        note(
            b,
            "node",
            "no formatter (prettier) on PATH; the format constraint is left to judgement",
        );
        b.constraint(
            s,
            "format",
            Severity::Medium,
            ConstraintKind::Technical,
            "The sources are formatted",
            None,
        );
    }
    let tests = find_tests(input.root, sources, |n| {
        (n.ends_with(".js") || n.ends_with(".mjs"))
            && (n.contains(".test.") || n.starts_with("test"))
    });
    if tests.is_empty() {
        tests_left_to_judgement(b, s, "node", "*.test.js, test*.js");
    } else {
        let mut cmd = vec![json!("node"), json!("--test")];
        cmd.extend(tests.iter().map(|t| json!(t)));
        b.constraint(
            s,
            "tests",
            Severity::Blocking,
            ConstraintKind::Technical,
            &format!("The tests pass ({})", tests.join(", ")),
            Some(("tests", json!({"command": cmd}))),
        );
    }
}

/// Shell: bash -n, shellcheck.
fn shell(
    b: &mut Builder,
    s: &Scope,
    _input: &AdapterInput<'_>,
    sources: &[String],
    _files: &Value,
) {
    let mut cmd = vec![
        json!("sh"),
        json!("-c"),
        json!("for f; do bash -n \"$f\" || exit 1; done"),
        json!("sh"),
    ];
    cmd.extend(sources.iter().map(|p| json!(p)));
    b.constraint(
        s,
        "syntax",
        Severity::Blocking,
        ConstraintKind::Technical,
        "Every script parses (bash -n)",
        Some(("command", json!({"command": cmd}))),
    );
    if on_path("shellcheck") {
        let linter = argv(&["shellcheck"], sources);
        lint(b, s, "shellcheck reports no problem", Some(linter));
    } else {
        note(
            b,
            "shell",
            "no linter (shellcheck) on PATH; the lint constraint is left to judgement",
        );
        lint(b, s, "The linter reports no problem", None);
    }
}

/// Rust: cargo check, fmt and test in a crate; rustfmt --check otherwise.
fn rust(b: &mut Builder, s: &Scope, input: &AdapterInput<'_>, sources: &[String], _files: &Value) {
    if input.root.join("Cargo.toml").is_file() && on_path("cargo") {
        b.constraint(
            s,
            "build",
            Severity::Blocking,
            ConstraintKind::Technical,
            "The crate builds (cargo check)",
            Some((
                "build",
                json!({"command": ["cargo", "check", "--quiet"], "timeout": "10m"}),
            )),
        );
        b.constraint(
            s,
            "format",
            Severity::Medium,
            ConstraintKind::Technical,
            "The sources are formatted (cargo fmt --check)",
            Some(("command", json!({"command": ["cargo", "fmt", "--check"]}))),
        );
        b.constraint(
            s,
            "tests",
            Severity::Blocking,
            ConstraintKind::Technical,
            "The tests pass (cargo test)",
            Some((
                "tests",
                json!({"command": ["cargo", "test", "--quiet"], "timeout": "20m"}),
            )),
        );
    } else {
        note(
            b,
            "rust",
            "no Cargo.toml in the workspace (or no cargo); only the format is checked",
        );
        let mut cmd = vec![
            json!("rustfmt"),
            json!("--check"),
            json!("--edition"),
            json!("2021"),
        ];
        cmd.extend(sources.iter().map(|p| json!(p)));
        b.constraint(
            s,
            "format",
            Severity::Medium,
            ConstraintKind::Technical,
            "The sources are formatted (rustfmt --check)",
            on_path("rustfmt").then(|| ("command", json!({"command": cmd}))),
        );
    }
}

/// A note for the user, naming the language.
/// The `lint` constraint: checked by running `linter` (an argv), or left to
/// judgement when there is none.
fn lint(b: &mut Builder, s: &Scope, description: &str, linter: Option<Value>) {
    b.constraint(
        s,
        "lint",
        Severity::High,
        ConstraintKind::Technical,
        description,
        linter.map(|command| ("lint", json!({ "command": command }))),
    );
}

/// No test file was found: the `tests` constraint stays, judged rather than measured.
fn tests_left_to_judgement(b: &mut Builder, s: &Scope, language: &str, patterns: &str) {
    note(
        b,
        language,
        &format!("no test files ({patterns}) found; the tests constraint is left to judgement"),
    );
    b.constraint(
        s,
        "tests",
        Severity::High,
        ConstraintKind::Technical,
        "The tests pass",
        None,
    );
}

fn note(b: &mut Builder, language: &str, what: &str) {
    b.d.notes.push(format!("{language}: {what}"));
}
