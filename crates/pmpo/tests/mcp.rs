//! `pmpo mcp` tested with a real MCP client nobody on the team wrote: the
//! official Python SDK, in the virtual environment `scripts/test.sh` makes
//! (`target/.venv-mcp`, or the Python named by `PMPO_MCP_PYTHON`). The
//! tests themselves are `tests/mcp/test_mcp.py`: a host-driven logo
//! refinement through pending questions and through sampling, the preview's
//! image, the refusals of a host's claims, a client that goes away mid-run,
//! and bad tool arguments.
//!
//! Without that environment the test says so and passes, except under
//! `CI=true`, where it fails: CI must run the client.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PMPO_MCP_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = repo().join("target/.venv-mcp/bin/python");
    venv.is_file().then_some(venv)
}

#[test]
fn the_python_sdk_drives_the_server() {
    let Some(python) = python() else {
        let msg = "no Python with the MCP SDK: run scripts/test.sh (it makes target/.venv-mcp) or set PMPO_MCP_PYTHON";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("skipped: {msg}");
        return;
    };
    let out = Command::new(&python)
        .args(["-m", "unittest", "-v", "tests/mcp/test_mcp.py"])
        .current_dir(repo())
        .env("PMPO_BIN", env!("CARGO_BIN_EXE_pmpo"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the MCP client tests failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("\nOK"),
        "unittest did not say OK:\n{stderr}"
    );
}
