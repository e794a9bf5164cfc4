//! The server's argument checks, without a client (the client's view is
//! `tests/mcp/test_mcp.py`).

use serde_json::{Map, Value, json};

use super::tools::{Args, rel_path};

fn args(tool: &str, v: Value) -> Result<Args, String> {
    let map: Map<String, Value> = v.as_object().cloned().unwrap_or_default();
    Args::new(tool, Some(map))
}

#[test]
fn paths_that_lead_outside_the_workspace_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(root.join("plan.yaml"), "x").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("pw")).unwrap();
    assert_eq!(
        rel_path(&root, "plan.yaml", "the plan").unwrap(),
        "plan.yaml"
    );
    let inside = root.join("plan.yaml");
    assert_eq!(
        rel_path(&root, inside.to_str().unwrap(), "the plan").unwrap(),
        "plan.yaml"
    );
    for (hostile, says) in [
        ("../../etc/passwd", "`..`"),
        ("/etc/passwd", "outside the workspace"),
        ("out/passwd", "symbolic link"),
        ("pw", "symbolic link"),
        ("", "empty"),
    ] {
        let e = rel_path(&root, hostile, "the plan").unwrap_err();
        assert!(e.starts_with("error: "), "{e}");
        assert!(e.contains(says), "{hostile}: {e}");
    }
}

#[test]
fn arguments_are_checked_against_the_tools_schema() {
    let e = args("paint", json!({})).err().unwrap();
    assert!(
        e.contains("there is no tool `paint`") && e.contains("check_plan"),
        "{e}"
    );
    let e = args("check_plan", json!({})).err().unwrap();
    assert!(e.contains("needs the argument `plan`"), "{e}");
    let e = args("check_plan", json!({"plan": "p", "rm": true}))
        .err()
        .unwrap();
    assert!(
        e.contains("has no argument `rm`") && e.contains("plan"),
        "{e}"
    );
    let a = args(
        "refine",
        json!({"name": 5, "inputs": "x", "max_iterations": 0}),
    )
    .unwrap();
    assert!(a.need("name").unwrap_err().contains("must be a string"));
    assert!(a.strings("inputs").unwrap_err().contains("list of strings"));
    assert!(
        a.uint("max_iterations", 10)
            .unwrap_err()
            .contains("from 1 to 10")
    );
    let a = args(
        "answer",
        json!({"name": "x", "answer": {"constraints": []}}),
    )
    .unwrap();
    assert_eq!(a.answer_text().unwrap(), r#"{"constraints":[]}"#);
    let a = args("answer", json!({"name": "x", "answer": 7})).unwrap();
    assert!(a.answer_text().is_err());
}
