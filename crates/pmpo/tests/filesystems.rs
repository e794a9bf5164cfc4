//! Errors that name the real cause: a read-only workspace is not "damaged"
//! and not "busy", and a full disk leaves no half-made database behind.
//! These tests mount small tmpfs file systems, which needs root (CI runs as
//! root); elsewhere they say so and do nothing.

use common::assert_contains;
use pmpo_testkit as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Run;

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn new(size: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here (this test needs root)");
            return None;
        }
        Some(Mount { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn remount(&self, how: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(self.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {how}");
    }

    fn run(&self, args: &[&str]) -> Run {
        common::bin()
            .args(args)
            .current_dir(self.path())
            .output()
            .unwrap()
            .into()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

const PLAN: &str = "specification: {artifact_name: t, artifact_type: code}\nplan:\n  stages:\n    - {id: a, with: {command: [sh, -c, 'echo $RANDOM > x.txt']}, outputs: [x.txt], cache: false}\n";

#[test]
fn a_read_only_workspace_is_read_and_never_called_damaged_or_busy() {
    let Some(m) = Mount::new("20m") else { return };
    std::fs::write(m.p("plan.yaml"), PLAN).unwrap();
    assert_eq!(m.run(&["execute", "plan.yaml", "-q"]).code, 0);
    assert_eq!(m.run(&["execute", "plan.yaml", "-q"]).code, 0);
    m.remount("ro");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["ledger"],
        &["metrics"],
        &["doctor"],
    ] {
        let r = m.run(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(
            !r.stdout.contains("damaged") && !r.stderr.contains("damaged"),
            "{args:?}: {}{}",
            r.stdout,
            r.stderr
        );
    }
    assert_eq!(
        m.run(&["status", "--json"]).json()["runs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for args in [
        &["gc"][..],
        &["restore", "x.txt"],
        &["execute", "plan.yaml"],
    ] {
        let r = m.run(args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("the workspace is on a read-only file system"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("wait for the running pmpo"),
            "{args:?}: {}",
            r.stderr
        );
    }
    m.remount("rw");
}

#[test]
fn a_full_disk_is_named_and_leaves_no_half_made_database() {
    let Some(m) = Mount::new("256k") else { return };
    std::fs::write(m.p("plan.yaml"), PLAN).unwrap();
    // Fill the disk, leaving too little for the database.
    let room = 256 * 1024 - 8 * 1024;
    let _ = std::fs::write(m.p("fill.bin"), vec![0u8; room]);
    let r = m.run(&["execute", "plan.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_contains(&r.stderr, "the disk is full");
    assert!(!r.stderr.contains("damaged"), "{}", r.stderr);
    assert!(
        !m.p(".state/pmpo.db").exists(),
        "a half-made database was left"
    );
    // With room again, the same command just works.
    std::fs::remove_file(m.p("fill.bin")).unwrap();
    let r = m.run(&["execute", "plan.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}
