//! A cached stage's outputs are verified by their stamps (device, inode,
//! size, modification and status-change times, taken right before the digest
//! was): a stamp is only a shortcut to "same digest as recorded", never a
//! way to miss a change.

use common::*;
use pmpo_store::db::{ExecStore, SqliteStore, StampRow};
use pmpo_testkit as common;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

const PLAN: &str = "    - id: s\n      with: {command: [sh, -c, 'echo aaa > out/x.txt']}\n      outputs: [out/x.txt]\n";

fn status(ws: &Ws) -> String {
    let r = ws.read_json(".state/execution_results.json");
    stage(&r, "s")["status"].as_str().unwrap().to_string()
}

fn stamp_of(ws: &Ws, rel: &str) -> Option<StampRow> {
    SqliteStore::open(ws.path()).unwrap().stamp(rel).unwrap()
}

/// Writes the stamp the store holds for `rel`.
fn put_stamp(ws: &Ws, row: &StampRow) {
    let mut db = SqliteStore::open(ws.path()).unwrap();
    db.put_stamp(row).unwrap();
    db.flush().unwrap();
}

/// A workspace where the stage ran, then ran again as a no-op long enough
/// after its output was written that the output's stamp vouches for it.
fn stamped() -> Ws {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.p("out")).unwrap();
    ws.plan(PLAN);
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "COMPLETED");
    // Past the racy window (1 s on a file system with fine times).
    std::thread::sleep(Duration::from_millis(1300));
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "CACHED");
    let s = stamp_of(&ws, "out/x.txt").expect("the no-op stamped the output");
    assert!(!s.racy(), "{s:?}");
    assert_eq!(s.blake3, blake3::hash(b"aaa\n").to_hex().as_str());
    ws
}

/// Rewrites a file in place with content of the same size, then sets its
/// modification time back to what it was.
fn tamper_keeping_size_and_mtime(path: &std::path::Path, text: &str) {
    let before = std::fs::metadata(path).unwrap();
    std::fs::write(path, text).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(before.modified().unwrap()))
        .unwrap();
    drop(f);
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec(), after.ino()),
        (
            before.len(),
            before.mtime(),
            before.mtime_nsec(),
            before.ino()
        )
    );
}

#[test]
fn a_trusted_stamp_makes_the_noop_read_nothing_and_a_change_with_mtime_set_back_is_caught() {
    let ws = stamped();
    // A third no-op: still cached, the stamp unchanged (nothing was digested).
    let s = stamp_of(&ws, "out/x.txt").unwrap();
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "CACHED");
    assert_eq!(stamp_of(&ws, "out/x.txt").unwrap(), s);

    // Same size, same inode, mtime set back: the status-change time moved.
    tamper_keeping_size_and_mtime(&ws.p("out/x.txt"), "bbb\n");
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(
        status(&ws),
        "COMPLETED",
        "the changed output made the stage run"
    );
    assert_eq!(ws.read("out/x.txt"), "aaa\n");
}

#[test]
fn an_output_replaced_by_another_file_with_the_same_content_is_accepted() {
    // A new inode: the stamp no longer matches, so the file is digested
    // again; its content is the recorded one, and the cache is by content,
    // so the stage stays cached, and the stamp is refreshed for the new file.
    let ws = stamped();
    let old = stamp_of(&ws, "out/x.txt").unwrap();
    ws.write("out/y.tmp", "aaa\n");
    std::fs::rename(ws.p("out/y.tmp"), ws.p("out/x.txt")).unwrap();
    let ino = std::fs::metadata(ws.p("out/x.txt")).unwrap().ino();
    assert_ne!(ino, old.ino);
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "CACHED");
    let new = stamp_of(&ws, "out/x.txt").unwrap();
    assert_eq!((new.ino, new.blake3.as_str()), (ino, old.blake3.as_str()));

    // Replaced by different content of the same size: runs again.
    ws.write("out/y.tmp", "ccc\n");
    std::fs::rename(ws.p("out/y.tmp"), ws.p("out/x.txt")).unwrap();
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "COMPLETED");
    assert_eq!(ws.read("out/x.txt"), "aaa\n");
}

/// The output's metadata now, as a stamp vouching for `blake3`, taken at `taken_ns`.
fn forged(ws: &Ws, blake3: &str, taken_ns: impl Fn(i64) -> i64) -> StampRow {
    let m = std::fs::metadata(ws.p("out/x.txt")).unwrap();
    let ctime_ns = m.ctime() * 1_000_000_000 + m.ctime_nsec();
    StampRow {
        path: "out/x.txt".into(),
        size: m.len(),
        blake3: blake3.into(),
        dev: m.dev(),
        ino: m.ino(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns,
        taken_ns: taken_ns(ctime_ns),
    }
}

#[test]
fn a_racy_stamp_is_not_believed() {
    // A change in the same clock tick as the stamp leaves the same metadata:
    // made here by writing, as the stamp, the changed file's metadata with
    // the old digest, taken in the tick of the change.
    let ws = stamped();
    let old = stamp_of(&ws, "out/x.txt").unwrap().blake3;
    tamper_keeping_size_and_mtime(&ws.p("out/x.txt"), "bbb\n");
    put_stamp(&ws, &forged(&ws, &old, |ctime| ctime));
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(
        status(&ws),
        "COMPLETED",
        "the racy stamp was digested again"
    );
    assert_eq!(ws.read("out/x.txt"), "aaa\n");

    // The same stamp, had it been taken well after the change, is believed:
    // the shortcut is in effect, so the racy rule is what caught the change.
    tamper_keeping_size_and_mtime(&ws.p("out/x.txt"), "bbb\n");
    put_stamp(&ws, &forged(&ws, &old, |ctime| ctime + 5_000_000_000));
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "CACHED");
    assert_eq!(ws.read("out/x.txt"), "bbb\n");
}

fn sqlite(ws: &Ws, script: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import sqlite3; c = sqlite3.connect('.state/pmpo.db'); {script}; c.commit()"),
        ])
        .current_dir(ws.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_store_from_before_stamps_opens_and_reruns_correctly() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.p("out")).unwrap();
    ws.plan(PLAN);
    ws.run_ok(&["execute", "plan.yaml"]);
    std::thread::sleep(Duration::from_millis(1300));
    // A store as a pmpo without stamps leaves it: no stamps table.
    ws.run_ok(&["execute", "plan.yaml"]);
    sqlite(&ws, "c.execute('DROP TABLE stamps')");
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "CACHED");
    assert_eq!(
        sqlite(&ws, "print(c.execute('PRAGMA user_version').fetchone()[0])"),
        "3",
        "the schema is the same: an older pmpo still opens this store"
    );
    let s = stamp_of(&ws, "out/x.txt").expect("the table is made again with the first stamp");
    assert!(!s.racy());
    tamper_keeping_size_and_mtime(&ws.p("out/x.txt"), "bbb\n");
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "COMPLETED");
    assert_eq!(ws.read("out/x.txt"), "aaa\n");
}

#[test]
fn inputs_are_digested_by_stamp_too_and_a_change_with_mtime_set_back_is_caught() {
    // A declared input and a script the command names are in the cache key;
    // their digests come from stamps as well, under the same rule.
    let ws = Ws::new();
    ws.write("in.txt", "v1\n");
    ws.write("run.sh", "cat in.txt > out.txt\n");
    ws.plan("    - id: s\n      inputs: [in.txt]\n      with: {command: [sh, run.sh]}\n      outputs: [out.txt]\n");
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "COMPLETED");
    std::thread::sleep(Duration::from_millis(1300));
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "CACHED");
    for f in ["in.txt", "run.sh"] {
        let s = stamp_of(&ws, f).unwrap_or_else(|| panic!("{f} has no stamp"));
        assert!(!s.racy(), "{s:?}");
    }

    tamper_keeping_size_and_mtime(&ws.p("in.txt"), "v2\n");
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "COMPLETED");
    assert_eq!(ws.read("out.txt"), "v2\n");

    std::thread::sleep(Duration::from_millis(1300));
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "CACHED");
    tamper_keeping_size_and_mtime(&ws.p("run.sh"), "cat in.txt >>out.txt\n");
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(status(&ws), "COMPLETED");
    assert_eq!(ws.read("out.txt"), "v2\nv2\n");
}
