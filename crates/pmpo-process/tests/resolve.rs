//! A program named without a `/` is found on `PATH` once and started by its
//! path: the program still sees the name it was given, a program that went
//! away is searched again, and one missing everywhere is the same error.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pmpo_process::{ProcessSpec, Termination, run_blocking};

/// The tests of this file take turns: a test that forks while another has a
/// script it is writing open hands that open file to its child until the
/// child's exec, and running the script then fails with "text file busy".
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn script(dir: &Path, name: &str, says: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\necho {says}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn on_path(argv: &[&str], path: &str) -> ProcessSpec {
    let mut spec = ProcessSpec::new(argv.iter().copied());
    spec.env.push(("PATH".into(), path.into()));
    spec
}

fn says(spec: &ProcessSpec) -> String {
    let r = run_blocking(spec, None).unwrap();
    assert_eq!(r.termination, Termination::Exited(0), "{r:?}");
    r.stdout.text().trim().to_string()
}

#[test]
fn the_program_sees_the_name_it_was_given() {
    let _turn = turn();
    // Twice: found by the search, then by what was kept of it.
    for _ in 0..2 {
        let r = run_blocking(&ProcessSpec::new(["sh", "-c", "echo $0"]), None).unwrap();
        assert_eq!(r.stdout.text(), "sh\n");
    }
}

#[test]
fn a_kept_program_that_went_away_is_searched_for_again() {
    let _turn = turn();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let path = format!("{}:{}", a.path().display(), b.path().display());
    script(a.path(), "pmpo-test-tool", "first");
    let spec = on_path(&["pmpo-test-tool"], &path);
    assert_eq!(says(&spec), "first");
    assert_eq!(says(&spec), "first");

    // Removed from the directory it was found in, present further on.
    std::fs::remove_file(a.path().join("pmpo-test-tool")).unwrap();
    script(b.path(), "pmpo-test-tool", "second");
    assert_eq!(says(&spec), "second");

    // Made not executable where it was found: the search goes on past it, as
    // the child's own search would.
    std::fs::set_permissions(
        b.path().join("pmpo-test-tool"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    script(a.path(), "pmpo-test-tool", "third");
    assert_eq!(says(&spec), "third");

    // Gone everywhere: the error is the one of a program not found.
    std::fs::remove_file(a.path().join("pmpo-test-tool")).unwrap();
    std::fs::remove_file(b.path().join("pmpo-test-tool")).unwrap();
    let e = run_blocking(&spec, None).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
}

#[test]
fn a_program_missing_from_the_start_is_not_found() {
    let _turn = turn();
    let a = tempfile::tempdir().unwrap();
    let spec = on_path(&["pmpo-no-such-tool"], &a.path().display().to_string());
    let e = run_blocking(&spec, None).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    // Appearing later, it is found (a miss is not kept).
    script(a.path(), "pmpo-no-such-tool", "here");
    assert_eq!(says(&spec), "here");
}
