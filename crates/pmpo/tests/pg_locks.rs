//! The one-writer locks with a PostgreSQL store, through the real binary:
//! advisory locks instead of `.state/lock` and `.refiner/lock`, the same
//! exit 4 and holder in the message, a holder killed by SIGKILL taken over
//! and reported, two directories that are one workspace (the same marker, as
//! two machines mounting one share) excluding each other, and
//! `pmpo status --all`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pmpo_testkit::refine::{LOGO, run};
use pmpo_testkit::*;

/// The binary in `ws` with its store in the database at `url`.
fn pmpo_pg(ws: &Ws, url: &str) -> Command {
    let mut c = bin_without_models(ws.path());
    c.env("PMPO_STORE", url)
        .env("PMPO_STORE_QUIET", "1")
        .stdin(Stdio::null());
    c
}

fn kill9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Waits (at most a minute, as a safety net) until `ws` has `rel`.
fn wait_for(ws: &Ws, rel: &str) {
    let t = Instant::now();
    while !ws.p(rel).exists() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ws.p(rel).exists(), "{rel} never appeared");
}

const SLOW: &str = "    - id: slow\n      sandbox: false\n      cache: false\n      with: {command: [sh, -c, 'touch started; sleep 30']}\n";

#[test]
fn a_second_execute_on_one_database_exits_4_naming_the_holder_and_a_killed_holder_is_taken_over() {
    let Some(url) = pg::fresh_db("cli_locks") else {
        return;
    };
    let ws = Ws::new();
    ws.plan(SLOW);
    let mut first = pmpo_pg(&ws, &url)
        .args(["execute", "plan.yaml", "-q"])
        .spawn()
        .unwrap();
    wait_for(&ws, "started");
    let second = run(pmpo_pg(&ws, &url), &["execute", "plan.yaml"]);
    second.assert_exit(4, &["execute", "plan.yaml"]);
    assert!(
        second.stderr.contains(&format!(
            "in use by another pmpo: pid {} (pmpo execute plan.yaml",
            first.id()
        )),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("--wait"), "{}", second.stderr);
    // `status` sees the live holder through the database.
    let st = run(pmpo_pg(&ws, &url), &["status"]);
    assert!(
        st.stdout.contains(&format!("live: pid {}", first.id())),
        "{}",
        st.stdout
    );
    // The lock is not a file.
    assert!(!ws.p(".state/lock").exists(), "a lock file was made");

    // kill -9: PostgreSQL releases the lock with the session; the next run
    // takes it over and says the previous one did not finish.
    let pid = first.id();
    kill9(&mut first);
    ws.plan("    - id: slow\n      sandbox: false\n      cache: false\n      with: {command: [sh, -c, 'true']}\n");
    let next = run(pmpo_pg(&ws, &url), &["execute", "plan.yaml"]);
    next.assert_exit(0, &["execute", "plan.yaml"]);
    assert!(
        next.stderr
            .contains(&format!("the previous pmpo (pid {pid}) did not finish")),
        "{}",
        next.stderr
    );
    assert!(!ws.p(".state/lock").exists(), "a lock file was made");
    // Released cleanly this time: nothing is reported the time after.
    let again = run(pmpo_pg(&ws, &url), &["execute", "plan.yaml"]);
    again.assert_exit(0, &["execute", "plan.yaml"]);
    assert!(!again.stderr.contains("did not finish"), "{}", again.stderr);
}

#[test]
fn two_directories_with_one_workspace_marker_exclude_each_other() {
    let Some(url) = pg::fresh_db("cli_locks_marker") else {
        return;
    };
    // Two mounts of one shared workspace (on two machines they would have
    // the same path or not): the marker, not the path, names the workspace.
    let (a, b) = (Ws::new(), Ws::new());
    for ws in [&a, &b] {
        ws.write(".state/workspace-id", "0123456789abcdef0123456789abcdef\n");
        ws.plan(SLOW);
    }
    let mut first = pmpo_pg(&a, &url)
        .args(["execute", "plan.yaml", "-q"])
        .spawn()
        .unwrap();
    wait_for(&a, "started");
    let second = run(pmpo_pg(&b, &url), &["execute", "plan.yaml"]);
    second.assert_exit(4, &["execute", "plan.yaml"]);
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        second.stderr
    );
    // Another workspace (another marker) on the same database is not held up.
    let c = Ws::new();
    c.write(".state/workspace-id", "fedcba9876543210fedcba9876543210\n");
    c.plan("    - id: quick\n      with: {command: [sh, -c, 'true']}\n");
    run(pmpo_pg(&c, &url), &["execute", "plan.yaml"]).assert_exit(0, &["execute"]);
    kill9(&mut first);
}

#[test]
fn the_artifact_lock_refuses_a_second_refine_and_is_taken_over_after_a_kill() {
    let Some(url) = pg::fresh_db("cli_locks_refine") else {
        return;
    };
    let ws = Ws::new();
    // A module whose test takes a while keeps the first refine busy.
    ws.write("slow.py", "def answer():\n    return 42\n");
    ws.write(
        "test_slow.py",
        "import time, unittest\nfrom slow import answer\n\nclass T(unittest.TestCase):\n    def test_it(self):\n        time.sleep(30)\n        self.assertEqual(answer(), 42)\n",
    );
    let mut first = pmpo_pg(&ws, &url)
        .args(["refine", "a", "--type", "code", "--input", "slow.py", "-q"])
        .spawn()
        .unwrap();
    wait_for(&ws, ".refiner/artifacts/a/plans/iteration-1.json");
    let second = run(pmpo_pg(&ws, &url), &["refine", "a"]);
    assert_eq!(second.code, 4, "{}", second.stderr);
    assert!(
        second.stderr.contains(&format!(
            "artifact state is in use by another pmpo: pid {} (pmpo refine a)",
            first.id()
        )),
        "{}",
        second.stderr
    );
    assert!(!ws.p(".refiner/lock").exists(), "a lock file was made");
    kill9(&mut first);
    // The killed refine's lock went with its session: another artifact's
    // refine and this one's checkpoint run.
    ws.write("brand/logo.svg", LOGO);
    let other = run(
        pmpo_pg(&ws, &url),
        &["refine", "b", "--type", "logo", "--input", "brand/logo.svg"],
    );
    other.assert_exit(0, &["refine", "b"]);
    // The artifact commands that wait for the lock get it at once.
    run(pmpo_pg(&ws, &url), &["init", "c", "--type", "content"]).assert_exit(0, &["init"]);
    let cp = run(pmpo_pg(&ws, &url), &["checkpoint", "c", "specify"]);
    cp.assert_exit(0, &["checkpoint", "c", "specify"]);
    assert!(!ws.p(".refiner/lock").exists(), "a lock file was made");
}

#[test]
fn an_unreachable_database_is_a_clear_error_not_busy() {
    let ws = Ws::new();
    ws.plan("    - id: quick\n      with: {command: [sh, -c, 'true']}\n");
    // A port nothing listens on.
    let r = run(
        pmpo_pg(&ws, "postgres://pmpo@127.0.0.1:9/none"),
        &["execute", "plan.yaml"],
    );
    assert_ne!(r.code, 4, "{}", r.stderr);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("cannot connect to the PostgreSQL store at postgres://127.0.0.1:9/none"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("check PMPO_STORE"), "{}", r.stderr);
    assert!(!ws.p(".state/lock").exists());
}
