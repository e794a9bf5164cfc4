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

/// `pmpo execute` of `ws`'s plan started in the background and waited for
/// until its stage has started (the plan's stage touches `started`).
fn started(ws: &Ws, url: &str) -> std::process::Child {
    let child = pmpo_pg(ws, url)
        .args(["execute", "plan.yaml", "-q"])
        .spawn()
        .unwrap();
    wait_for(ws, "started");
    child
}

#[test]
fn a_second_execute_on_one_database_exits_4_naming_the_holder_and_a_killed_holder_is_taken_over() {
    let Some(url) = pg::fresh_db("cli_locks") else {
        return;
    };
    let ws = Ws::new();
    ws.plan(SLOW);
    let mut first = started(&ws, &url);
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

    // kill -9: PostgreSQL releases the lock with the session; `pmpo resume`
    // takes it over and says the previous pmpo did not finish.
    let pid = first.id();
    kill9(&mut first);
    ws.plan("    - id: slow\n      sandbox: false\n      cache: false\n      with: {command: [sh, -c, 'true']}\n");
    let st = run(pmpo_pg(&ws, &url), &["status", "--json"]).json();
    let run_id = st["runs"][0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(st["runs"][0]["status"], "interrupted");
    let next = run(pmpo_pg(&ws, &url), &["resume", &run_id]);
    next.assert_exit(0, &["resume", &run_id]);
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
    let mut first = started(&a, &url);
    let second = run(pmpo_pg(&b, &url), &["execute", "plan.yaml"]);
    second.assert_exit(4, &["execute", "plan.yaml"]);
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        second.stderr
    );
    // Another workspace (another marker) is refused by the database, which
    // serves one workspace: exit 2, not 4, and the hint says why.
    let c = Ws::new();
    c.write(".state/workspace-id", "fedcba9876543210fedcba9876543210\n");
    c.plan("    - id: quick\n      with: {command: [sh, -c, 'true']}\n");
    let other = run(pmpo_pg(&c, &url), &["execute", "plan.yaml"]);
    other.assert_exit(2, &["execute"]);
    assert!(
        other.stderr.contains("one database serves one workspace"),
        "{}",
        other.stderr
    );
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

fn this_host() -> String {
    pmpo_store::lock::this_host()
}

#[test]
fn status_all_lists_every_run_with_its_machine_the_live_workers_and_the_database_states() {
    let Some(url) = pg::fresh_db("cli_status_all") else {
        return;
    };
    let ws = Ws::new();
    ws.plan(SLOW);
    let mut killed = started(&ws, &url);
    let killed_pid = killed.id();
    kill9(&mut killed);
    ws.write("other.yaml", "specification:\n  artifact_name: t\n  artifact_type: code\nplan:\n  stages:\n    - id: a\n      with: {command: [sh, -c, 'true']}\n    - id: b\n      depends_on: [a]\n      with: {command: [sh, -c, 'true']}\n");
    run(pmpo_pg(&ws, &url), &["execute", "other.yaml"]).assert_exit(0, &["execute"]);
    run(pmpo_pg(&ws, &url), &["init", "notes", "--type", "content"]).assert_exit(0, &["init"]);
    // A worker registered as `pmpo worker` registers (heartbeat now: live).
    let conn = pmpo_store::pg::PgConn::connect(&url, Duration::ZERO).unwrap();
    pmpo_store::pg::queue::ensure(&conn).unwrap();
    pmpo_store::pg::queue::register_worker(&conn, "box-2:77:1", "0.1.0", "/shared").unwrap();
    pmpo_store::pg::queue::worker_beat(&conn, "box-2:77:1", Some(5)).unwrap();

    let r = run(pmpo_pg(&ws, &url), &["status", "--all", "--json"]);
    r.assert_exit(0, &["status", "--all", "--json"]);
    let j = r.json();
    let runs = j["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{j:#}");
    // Newest first: the finished run of the other plan, then the killed one.
    assert_eq!(runs[0]["plan"], "other.yaml");
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(
        (runs[0]["stages_done"].as_u64(), runs[0]["stages"].as_i64()),
        (Some(2), Some(2))
    );
    assert!(runs[0]["finished_at"].is_string());
    assert_eq!(runs[1]["plan"], "plan.yaml");
    assert_eq!(runs[1]["status"], "interrupted");
    assert_eq!(runs[1]["pid"], killed_pid);
    for run in runs {
        assert_eq!(run["host"], this_host().as_str(), "{run:#}");
    }
    assert!(j["live"].is_null());
    let workers = j["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["worker_id"], "box-2:77:1");
    assert_eq!(workers[0]["state"], "running");
    assert_eq!(workers[0]["live"], true);
    let arts = j["artifacts"].as_array().unwrap();
    assert_eq!(arts.len(), 1);
    assert_eq!(
        (arts[0]["name"].as_str(), arts[0]["version"].as_i64()),
        (Some("notes"), Some(1))
    );
    assert_eq!(j["problems"].as_array().map(Vec::len), Some(0), "{j:#}");

    let text = run(pmpo_pg(&ws, &url), &["status", "--all"]);
    text.assert_exit(0, &["status", "--all"]);
    for want in [
        "workers: 1 live",
        "box-2:77:1  pmpo 0.1.0  running (job 5)  0 stage(s) done",
        "runs (2, newest first):",
        &format!(
            "interrupted 0/1 stages  on {} (pid {killed_pid})  plan.yaml",
            this_host()
        ),
        "notes  content  running  version 1",
    ] {
        assert!(
            text.stdout.contains(want),
            "missing `{want}` in:\n{}",
            text.stdout
        );
    }
    // The provider the artifact commands use is the database's.
    let p = run(pmpo_pg(&ws, &url), &["provider"]);
    assert!(
        p.stdout.contains("provider: postgres (postgres://"),
        "{}",
        p.stdout
    );
}

#[test]
fn status_all_with_sqlite_lists_every_run_of_the_workspace() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      cache: false\n      with: {command: [sh, -c, 'true']}\n");
    for _ in 0..12 {
        ws.run_ok(&["execute", "plan.yaml", "-q"]);
    }
    let mut c = bin_without_models(ws.path());
    c.env_remove("PMPO_STORE");
    let few = run(c, &["status", "--json"]).json();
    assert_eq!(few["runs"].as_array().unwrap().len(), 10);
    let mut c = bin_without_models(ws.path());
    c.env_remove("PMPO_STORE");
    let all = run(c, &["status", "--all", "--json"]).json();
    let runs = all["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 12);
    assert!(all["workers"].is_null() && all["artifacts"].is_null());
    assert_eq!(all["store"], "sqlite (.state/pmpo.db)");
    // Newest first.
    let started: Vec<&str> = runs
        .iter()
        .map(|r| r["started_at"].as_str().unwrap())
        .collect();
    let mut sorted = started.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(started, sorted);
}

fn run_json_status(ws: &Ws, url: &str) -> serde_json::Value {
    let r = pmpo_testkit::refine::run(pmpo_pg(ws, url), &["status", "--json"]);
    serde_json::from_str(&r.stdout).unwrap_or_default()
}

/// The key of the advisory lock held in the database now (there is one:
/// the run's workspace lock), and the session holding it cut off.
fn cut_the_lock_session(url: &str) -> i64 {
    let admin = pmpo_store::pg::PgConn::connect(url, Duration::ZERO).unwrap();
    let here = "locktype = 'advisory' AND granted
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let rows = admin
        .query(
            &format!("SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks WHERE {here}"),
            vec![],
        )
        .unwrap();
    assert_eq!(rows.len(), 1, "one advisory lock was expected: {rows:?}");
    admin
        .query(
            &format!("SELECT pg_terminate_backend(pid, 10000) FROM pg_locks WHERE {here}"),
            vec![],
        )
        .unwrap();
    rows[0][0].int().unwrap()
}

#[test]
fn a_run_whose_lock_session_is_cut_takes_the_lock_back_and_completes() {
    let Some(url) = pg::fresh_db("cli_lock_cut") else {
        return;
    };
    let ws = Ws::new();
    ws.plan("    - id: slow\n      sandbox: false\n      cache: false\n      with: {command: [sh, -c, 'touch started; for i in $(seq 600); do [ -e go ] && break; sleep 0.05; done']}\n");
    let mut c = pmpo_pg(&ws, &url);
    c.env_remove("PMPO_STORE_QUIET").stderr(Stdio::piped());
    let run = c.args(["execute", "plan.yaml", "-q"]).spawn().unwrap();
    wait_for(&ws, "started");
    cut_the_lock_session(&url);
    // Taken back: `status` sees the same holder live again (a pmpo started
    // before that, in the moment the lock was free, would take it: see the
    // next test), and a second run is refused.
    let t = Instant::now();
    loop {
        let st = run_json_status(&ws, &url);
        if st["live"]["pid"] == run.id() || t.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = pmpo_testkit::refine::run(pmpo_pg(&ws, &url), &["execute", "plan.yaml"]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!("pid {}", run.id())),
        "{}",
        refused.stderr
    );
    ws.write("go", "");
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the lock was taken back before anyone else took it"),
        "{stderr}"
    );
}

#[test]
fn a_run_whose_lock_another_pmpo_took_stops_as_if_terminated() {
    let Some(url) = pg::fresh_db("cli_lock_stolen") else {
        return;
    };
    let ws = Ws::new();
    ws.plan(SLOW);
    // The run checks its lock every 2 s: the thief, right after the cut, wins
    // all but (rarely) a race, and then the scenario is played again.
    for _ in 0..3 {
        let _ = std::fs::remove_file(ws.p("started"));
        let mut c = pmpo_pg(&ws, &url);
        c.stderr(Stdio::piped());
        let mut run = c.args(["execute", "plan.yaml", "-q"]).spawn().unwrap();
        wait_for(&ws, "started");
        let key = cut_the_lock_session(&url);
        let thief = pmpo_store::pg::PgConn::connect(&url, Duration::ZERO).unwrap();
        let got = thief
            .once("SELECT pg_try_advisory_lock($1)", vec![key.into()], true)
            .unwrap();
        if got[0][0].boolean() != Some(true) {
            kill9(&mut run);
            continue;
        }
        let out = run.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(143), "{stderr}");
        assert!(
            stderr.contains("the lock .state/lock was lost") && stderr.contains("pmpo resume"),
            "{stderr}"
        );
        return;
    }
    panic!("the run took its lock back first three times");
}

#[test]
fn a_database_stopped_and_started_mid_run_leaves_the_lock_with_its_run() {
    let Some(cluster) = pg::Cluster::start("cli_lock_restart") else {
        return;
    };
    let url = cluster.fresh_db("locks_restart");
    let ws = Ws::new();
    ws.plan("    - id: slow\n      sandbox: false\n      cache: false\n      with: {command: [sh, -c, 'touch started; for i in $(seq 1200); do [ -e go ] && break; sleep 0.05; done']}\n");
    let mut c = pmpo_pg(&ws, &url);
    c.env_remove("PMPO_STORE_QUIET").stderr(Stdio::piped());
    let run = c.args(["execute", "plan.yaml", "-q"]).spawn().unwrap();
    wait_for(&ws, "started");
    cluster.stop();
    // While the server is down nobody can take the lock: a second run fails
    // to reach the store, and says so.
    let down = pmpo_testkit::refine::run(pmpo_pg(&ws, &url), &["execute", "plan.yaml"]);
    assert!(down.code != 0 && down.code != 4, "{}", down.stderr);
    assert!(
        down.stderr
            .contains("cannot connect to the PostgreSQL store"),
        "{}",
        down.stderr
    );
    // Long enough for the run's check (every 2 s) to find the server gone.
    std::thread::sleep(Duration::from_millis(4500));
    cluster.resume();
    // Back: the run takes its lock back, and a second run is refused.
    let t = Instant::now();
    while run_json_status(&ws, &url)["live"]["pid"] != run.id()
        && t.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = pmpo_testkit::refine::run(pmpo_pg(&ws, &url), &["execute", "plan.yaml"]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    // A restart (every connection cut at once) is the same.
    cluster.restart();
    let t = Instant::now();
    while run_json_status(&ws, &url)["live"]["pid"] != run.id()
        && t.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = pmpo_testkit::refine::run(pmpo_pg(&ws, &url), &["execute", "plan.yaml"]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    ws.write("go", "");
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("taking the lock back as soon as the server answers"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the lock was taken back before anyone else took it"),
        "{stderr}"
    );
}

#[test]
fn the_password_in_the_store_url_is_never_printed_nor_written() {
    let Some(url) = pg::fresh_db("cli_locks_secret") else {
        return;
    };
    // The test server trusts its users: the password is accepted and unused.
    let secret = "pw-4f9c2e7d1b";
    let url = url.replacen("postgres://pmpo@", &format!("postgres://pmpo:{secret}@"), 1);
    assert!(url.contains(secret), "{url}");
    let ws = Ws::new();
    ws.plan(SLOW);
    let mut first = pmpo_pg(&ws, &url)
        .args(["execute", "plan.yaml", "-q"])
        .spawn()
        .unwrap();
    wait_for(&ws, "started");
    let mut printed = String::new();
    for args in [
        &["execute", "plan.yaml"][..],
        &["status", "--all"],
        &["status", "--all", "--json"],
        &["provider", "--json"],
        &["init", "n", "--type", "content"],
        &["status", "n", "--json"],
    ] {
        let r = run(pmpo_pg(&ws, &url), args);
        printed.push_str(&r.stdout);
        printed.push_str(&r.stderr);
    }
    kill9(&mut first);
    assert!(printed.contains("postgres://127.0.0.1:"), "{printed}");
    assert!(!printed.contains(secret), "{printed}");
    for entry in walkdir(ws.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{} holds the password",
            entry.display()
        );
    }
    // Nor in the database's rows.
    let conn = pmpo_store::pg::PgConn::connect(&url, Duration::ZERO).unwrap();
    let rows = conn
        .query(
            "SELECT holder FROM pmpo_holders UNION ALL SELECT state FROM pmpo_artifact_state",
            vec![],
        )
        .unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        assert!(!r[0].text().unwrap_or_default().contains(secret));
    }
}

/// Every file under `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}
