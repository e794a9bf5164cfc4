//! The PostgreSQL store through the real binary: a run, its status, ledger,
//! metrics, a resume after kill -9 and a restore, with every row in the
//! database and no `.state/pmpo.db`; `--store` and `PMPO_STORE` select it as
//! `pmpo.toml` does; a server that cannot be reached and a value that is not
//! a store stop the command at once (exit 2) with what, where and what to do.

use pmpo_testkit as common;

use std::process::Command;

use common::{Run, Ws, assert_contains, bin};
use pmpo_store::pg::PgConn;

/// `pmpo ARGS` in the workspace with the store taken from `PMPO_STORE` only.
fn pmpo(ws: &Ws, store: Option<&str>, args: &[&str]) -> Run {
    let mut c: Command = bin();
    c.current_dir(ws.path())
        .args(args)
        .env("PMPO_STORE_QUIET", "1");
    match store {
        Some(s) => c.env("PMPO_STORE", s),
        None => c.env_remove("PMPO_STORE"),
    };
    c.output().unwrap().into()
}

fn count(url: &str, sql: &str) -> i64 {
    let c = PgConn::connect(url, std::time::Duration::from_secs(5)).unwrap();
    c.query(sql, vec![]).unwrap()[0][0].int().unwrap()
}

fn no_sqlite(ws: &Ws) {
    assert!(
        !ws.p(".state/pmpo.db").exists(),
        "a PostgreSQL store made .state/pmpo.db"
    );
}

/// Three stages in a chain: the first replaces `data.txt`, the second waits
/// until `go` exists (so the run can be killed in it), the third writes c.
const PLAN: &str = "    - id: a\n      sandbox: false\n      cache: false\n      with: {command: [sh, -c, 'echo a >> count.txt; echo changed > data.txt']}\n      outputs: [data.txt]\n    - id: b\n      depends_on: [a]\n      sandbox: false\n      with: {command: [sh, -c, 'touch started; while [ ! -e go ]; do sleep 0.05; done; echo b > b.txt']}\n      outputs: [b.txt]\n    - id: c\n      depends_on: [b]\n      with: {command: [sh, -c, 'echo c > c.txt']}\n      outputs: [c.txt]\n";

#[test]
fn a_run_killed_then_resumed_and_restored_lives_in_postgres() {
    let Some(url) = pmpo_testkit::pg::fresh_db("cli_store") else {
        return;
    };
    let ws = Ws::new();
    ws.write("pmpo.toml", &format!("[store]\nurl = \"{url}\"\n"));
    ws.write("data.txt", "precious\n");
    ws.plan(PLAN);
    let mut child = bin()
        .current_dir(ws.path())
        .args(["execute", "plan.yaml", "-q"])
        .env_remove("PMPO_STORE")
        .spawn()
        .unwrap();
    common::refine::wait_until(
        "stage b to start",
        std::time::Duration::from_secs(60),
        || ws.p("started").exists(),
    );
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let status = pmpo(&ws, None, &["status", "--json"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let run = status.json()["runs"][0].clone();
    assert_eq!(run["status"], "interrupted", "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    ws.write("go", "");
    let r = pmpo(&ws, None, &["resume", &run_id]);
    assert_eq!(r.code, 0, "resume: {}", r.stderr);
    assert_contains(&r.stderr, &format!("continuing run {run_id}"));
    // Stage a completed before the kill: not run again.
    assert_eq!(ws.read("count.txt"), "a\n");
    assert_eq!(ws.read("c.txt"), "c\n");
    let j = pmpo(&ws, None, &["status", "--json"]).json();
    assert_eq!(j["runs"][0]["run_id"], run_id.as_str());
    assert_eq!(j["runs"][0]["status"], "completed", "{j}");
    // The rows are in PostgreSQL, once each.
    assert_eq!(count(&url, "SELECT count(*) FROM runs"), 1);
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM tasks WHERE status = 'COMPLETED'"
        ),
        3
    );
    let ledger = pmpo(&ws, None, &["ledger", "--json", "--path", "data.txt"]);
    assert_eq!(ledger.code, 0, "{}", ledger.stderr);
    let rows = ledger.json().as_array().unwrap().clone();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["writer"], "a");
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM patch_history WHERE path = 'data.txt'"
        ),
        1
    );
    let metrics = pmpo(&ws, None, &["metrics"]);
    assert_eq!(metrics.code, 0, "{}", metrics.stderr);
    assert_contains(
        &metrics.stdout,
        "tasks_executed_total{status=\"COMPLETED\"} 3",
    );
    let restored = pmpo(&ws, None, &["restore", "data.txt"]);
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    assert_eq!(ws.read("data.txt"), "precious\n");
    let doctor = pmpo(&ws, None, &["doctor", "--json"]);
    assert_eq!(doctor.code, 0, "{}{}", doctor.stdout, doctor.stderr);
    let store = &doctor.json()["store"];
    assert_eq!(
        (&store["reachable"], &store["schema_version"]),
        (&serde_json::json!(true), &serde_json::json!(1)),
        "{store}"
    );
    assert_contains(store["summary"].as_str().unwrap(), "markers match");
    no_sqlite(&ws);
}

#[test]
fn the_store_flag_and_the_environment_select_postgres_as_pmpo_toml_does() {
    let Some(url) = pmpo_testkit::pg::fresh_db("cli_flag") else {
        return;
    };
    let ws = Ws::new();
    ws.plan(
        "    - id: a\n      with: {command: [sh, -c, 'echo a > a.txt']}\n      outputs: [a.txt]\n",
    );
    let r = pmpo(&ws, None, &["--store", &url, "execute", "plan.yaml", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    no_sqlite(&ws);
    let j = pmpo(&ws, Some(&url), &["status", "--json"]).json();
    assert_eq!(j["runs"][0]["status"], "completed", "{j}");
    let j = pmpo(&ws, None, &["--store", &url, "status", "--json"]).json();
    assert_eq!(j["runs"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(count(&url, "SELECT count(*) FROM runs"), 1);
    // Without the setting, the workspace's SQLite store has no runs.
    let r = pmpo(&ws, None, &["status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    no_sqlite(&ws);
    // Another workspace may not use this database.
    let other = Ws::new();
    other.plan("    - id: a\n      with: {command: [echo, a]}\n");
    let r = pmpo(&other, Some(&url), &["execute", "plan.yaml", "-q"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_contains(&r.stderr, "serves the workspace");
    assert_contains(&r.stderr, "same shared directory");
    assert!(!other.p(".state/pmpo.db").exists());
    // Doctor there says so, naming the workspace the database serves.
    let d = pmpo(&other, Some(&url), &["doctor"]);
    assert_eq!(d.code, 1, "{}", d.stdout);
    assert_contains(&d.stdout, "serves another workspace");
    assert_contains(&d.stdout, &ws.path().display().to_string());
    // A database of a newer layout: every command refuses it, doctor names it.
    let c = PgConn::connect(&url, std::time::Duration::from_secs(5)).unwrap();
    c.once(
        "UPDATE pmpo_meta SET value = '7' WHERE key = 'schema_version'",
        vec![],
        true,
    )
    .unwrap();
    let r = pmpo(&ws, Some(&url), &["status"]);
    assert_ne!(r.code, 0);
    assert_contains(&r.stderr, "database schema 7, this build reads up to 1");
    let d = pmpo(&ws, Some(&url), &["doctor"]);
    assert_contains(&d.stdout, "reachable, schema 7");
    assert_contains(&d.stdout, "the database has schema 7");
}

#[test]
fn an_unreachable_server_or_a_bad_value_stops_at_once_with_exit_2() {
    let ws = Ws::new();
    ws.plan(
        "    - id: a\n      with: {command: [sh, -c, 'echo a > a.txt']}\n      outputs: [a.txt]\n",
    );
    let dead = "postgres://pmpo:hunter2@127.0.0.1:1/none";
    for args in [
        &["execute", "plan.yaml"][..],
        &["validate", "plan.yaml"][..],
        &["status"][..],
        &["ledger"][..],
        &["metrics"][..],
    ] {
        let r = pmpo(&ws, Some(dead), args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert_contains(
            &r.stderr,
            "cannot connect to the PostgreSQL store at postgres://127.0.0.1:1/none",
        );
        assert_contains(&r.stderr, "check PMPO_STORE");
        assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    }
    // The refine loop as well (it takes the artifact lock first).
    ws.write("notes.md", "# Notes\n\nHello.\n");
    let r = pmpo(
        &ws,
        Some(dead),
        &[
            "refine", "notes", "--type", "content", "--input", "notes.md",
        ],
    );
    assert_eq!(r.code, 2, "refine: {}", r.stderr);
    assert_contains(&r.stderr, "check PMPO_STORE");
    let r = pmpo(&ws, None, &["--store", dead, "execute", "plan.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!ws.p("a.txt").exists(), "a stage ran without a store");
    for bad in ["mysql://u:hunter2@db/x", "postgress://db/x"] {
        let r = pmpo(&ws, Some(bad), &["execute", "plan.yaml"]);
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
        assert_contains(&r.stderr, "PMPO_STORE");
        assert_contains(&r.stderr, "is not a store");
        assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    }
    ws.write("pmpo.toml", "[store]\nurl = 5\n");
    let r = pmpo(&ws, None, &["execute", "plan.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_contains(&r.stderr, "pmpo.toml [store]");
    // Doctor says the server cannot be reached, and opens no database file.
    ws.write("pmpo.toml", &format!("[store]\nurl = \"{dead}\"\n"));
    let d = pmpo(&ws, None, &["doctor"]);
    assert_eq!(d.code, 1, "{}", d.stdout);
    assert_contains(&d.stdout, "store: postgres://127.0.0.1:1/none: unreachable");
    assert!(!d.stdout.contains("hunter2"));
    no_sqlite(&ws);
}

/// Every file under `dir`, recursively.
fn all_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn the_store_password_reaches_no_stage_and_no_file() {
    let Some(url) = pmpo_testkit::pg::fresh_db("cli_secret") else {
        return;
    };
    // The test server trusts its users: any password is accepted.
    let secret = "Pw9-store-secret-4711";
    let with_password = url.replacen("://pmpo@", &format!("://pmpo:{secret}@"), 1);
    assert_ne!(
        with_password, url,
        "the test server's URL names the user pmpo"
    );
    let ws = Ws::new();
    ws.plan("    - id: a\n      sandbox: false\n      with: {command: [sh, -c, 'env > env.txt; echo \"store=$PMPO_STORE\"']}\n      outputs: [env.txt]\n");
    let r = pmpo(
        &ws,
        Some(&with_password),
        &["execute", "plan.yaml", "--json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let env = ws.read("env.txt");
    assert!(
        !env.lines().any(|l| l.starts_with("PMPO_STORE=")) && !env.contains(secret),
        "a stage saw PMPO_STORE: {env}"
    );
    for args in [&["status"][..], &["ledger"][..], &["doctor", "--json"][..]] {
        let r = pmpo(&ws, Some(&with_password), args);
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "{args:?}"
        );
    }
    assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret));
    let mut files = Vec::new();
    all_files(ws.path(), &mut files);
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{} holds the store's password",
            f.display()
        );
    }
    no_sqlite(&ws);
}

#[test]
fn a_database_restart_mid_run_is_waited_out_and_nothing_is_doubled() {
    let Some(cluster) = pmpo_testkit::pg::Cluster::start("cli_restart") else {
        return;
    };
    let url = cluster.fresh_db("cli_restart");
    let ws = Ws::new();
    ws.write("data.txt", "precious\n");
    ws.plan(PLAN);
    let child = bin()
        .current_dir(ws.path())
        .args(["execute", "plan.yaml", "--json"])
        .env("PMPO_STORE", &url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::refine::wait_until(
        "stage b to start",
        std::time::Duration::from_secs(60),
        || ws.p("started").exists(),
    );
    cluster.restart();
    ws.write("go", "");
    let r: Run = child.wait_with_output().unwrap().into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_contains(&r.stderr, "pausing, retrying");
    assert_contains(&r.stderr, "reconnected to the store");
    assert_eq!(r.json()["status"], "completed");
    assert_eq!(count(&url, "SELECT count(*) FROM runs"), 1);
    assert_eq!(count(&url, "SELECT count(*) FROM tasks"), 3);
    // One attempt per stage, one ledger entry for the file stage a replaced.
    assert_eq!(count(&url, "SELECT count(*) FROM execution_log"), 3);
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM patch_history WHERE path = 'data.txt'"
        ),
        1
    );
    no_sqlite(&ws);
}

#[test]
fn a_database_gone_past_the_patience_stops_the_run_and_it_resumes_later() {
    let Some(cluster) = pmpo_testkit::pg::Cluster::start("cli_gone") else {
        return;
    };
    let url = cluster.fresh_db("cli_gone");
    let ws = Ws::new();
    ws.write("data.txt", "precious\n");
    ws.plan(PLAN);
    let child = bin()
        .current_dir(ws.path())
        .args(["execute", "plan.yaml"])
        .env("PMPO_STORE", &url)
        .env("PMPO_STORE_PATIENCE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::refine::wait_until(
        "stage b to start",
        std::time::Duration::from_secs(60),
        || ws.p("started").exists(),
    );
    cluster.stop();
    ws.write("go", "");
    let r: Run = child.wait_with_output().unwrap().into();
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_contains(&r.stderr, "went away and did not come back");
    assert_contains(&r.stderr, "start the server again");
    cluster.resume();
    // The same command continues the run: a is not run again.
    let again = pmpo(&ws, Some(&url), &["execute", "plan.yaml", "--json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(ws.read("count.txt"), "a\n");
    assert_eq!(ws.read("c.txt"), "c\n");
    assert_eq!(count(&url, "SELECT count(*) FROM runs"), 1);
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM execution_log WHERE stage_id = 'a'"
        ),
        1
    );
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM tasks WHERE status = 'COMPLETED'"
        ),
        3
    );
    no_sqlite(&ws);
}
