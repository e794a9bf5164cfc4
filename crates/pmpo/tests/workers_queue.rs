//! The queue itself (`pmpo_store::pg::queue`) on a real PostgreSQL: claims
//! under leases, epochs that fence a stale completion, duplicates, versions.
//! The binary's side is in workers.rs.

use std::time::Duration;

use pmpo_store::pg::PgConn;
use pmpo_store::pg::queue;

#[test]
fn the_queue_fences_a_stale_completion() {
    let Some(url) = pmpo_testkit::pg::fresh_db("workers_fence") else {
        return;
    };
    let db = PgConn::connect(&url, Duration::from_secs(30)).unwrap();
    queue::ensure(&db).unwrap();
    queue::ensure(&db).unwrap();
    let job = queue::NewJob {
        run_id: "r1".into(),
        stage_id: "s".into(),
        attempt: 1,
        plan: "plan.yaml".into(),
        plan_blake3: "x".into(),
        version: "v1".into(),
        payload: "{}".into(),
        submitted_by: "h:1".into(),
    };
    let queue::Enqueued::Added(id) = queue::enqueue(&db, &job).unwrap() else {
        panic!("not added");
    };
    match queue::enqueue(
        &db,
        &queue::NewJob {
            submitted_by: "h:2".into(),
            ..job.clone()
        },
    )
    .unwrap()
    {
        queue::Enqueued::Duplicate(v) => assert_eq!(v.submitted_by, "h:1"),
        other => panic!("a duplicate was {other:?}"),
    }
    assert!(
        queue::claim(&db, "w-other", "v2", 0.3).unwrap().is_none(),
        "another version"
    );
    let first = queue::claim(&db, "w1", "v1", 0.3).unwrap().unwrap();
    assert_eq!((first.id, first.epoch), (id, 1));
    assert!(
        queue::claim(&db, "w2", "v1", 0.3).unwrap().is_none(),
        "leased"
    );
    std::thread::sleep(Duration::from_millis(500));
    let second = queue::claim(&db, "w2", "v1", 5.0).unwrap().unwrap();
    assert_eq!(second.epoch, 2);
    assert!(!queue::renew(&db, id, 1, "w1", 5.0).unwrap());
    assert!(queue::renew(&db, id, 2, "w2", 5.0).unwrap());
    match queue::complete(&db, id, 1, "w1", "{}", "{}", None).unwrap() {
        queue::Completed::FencedOut(v) => {
            assert_eq!((v.worker.as_deref(), v.epoch), (Some("w2"), 2))
        }
        other => panic!("a stale completion was {other:?}"),
    }
    assert!(matches!(
        queue::complete(&db, id, 2, "w2", "{\"ok\":1}", "{}", Some(1.0)).unwrap(),
        queue::Completed::Recorded
    ));
    assert!(matches!(
        queue::complete(&db, id, 2, "w2", "{}", "{}", None).unwrap(),
        queue::Completed::FencedOut(_) | queue::Completed::Recorded
    ));
    let v = queue::job(&db, id).unwrap().unwrap();
    assert_eq!(
        v.outcome.as_deref(),
        Some("{\"ok\":1}"),
        "completed exactly once"
    );
    assert!(
        queue::claim(&db, "w3", "v1", 5.0).unwrap().is_none(),
        "done is never claimed"
    );
    let n = db.query("SELECT count(*) FROM pmpo_jobs", vec![]).unwrap()[0][0].int();
    assert_eq!(n, Some(1));
}

fn new_job(run: &str, stage: &str) -> queue::NewJob {
    queue::NewJob {
        run_id: run.into(),
        stage_id: stage.into(),
        attempt: 1,
        plan: "plan.yaml".into(),
        plan_blake3: "x".into(),
        version: "v1".into(),
        payload: "{}".into(),
        submitted_by: "h:1".into(),
    }
}

fn added(db: &PgConn, job: &queue::NewJob) -> i64 {
    match queue::enqueue(db, job).unwrap() {
        queue::Enqueued::Added(id) => id,
        other => panic!("not added: {other:?}"),
    }
}

#[test]
fn gc_prunes_the_ended_jobs_of_older_runs_and_stopped_workers_and_nothing_else() {
    let Some(url) = pmpo_testkit::pg::fresh_db("workers_gc") else {
        return;
    };
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(
        ws.path().join("plan.yaml"),
        "specification:\n  artifact_name: t\n  artifact_type: code\nplan:\n  stages:\n    - id: a\n      with: {command: [sh, -c, 'true']}\n",
    )
    .unwrap();
    let pmpo = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pmpo"))
            .current_dir(ws.path())
            .env("PMPO_STORE", &url)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(pmpo(&["execute", "plan.yaml", "-q"]).status.success());
    let db = PgConn::connect(&url, Duration::from_secs(30)).unwrap();
    let kept_run = db.query("SELECT run_id FROM runs", vec![]).unwrap()[0][0]
        .text()
        .unwrap();
    // Ended jobs of the kept run and of an older one, a cancelled one, and
    // one still queued.
    for run in [kept_run.as_str(), "old"] {
        let id = added(&db, &new_job(run, "s"));
        let c = queue::claim(&db, "w1", "v1", 30.0).unwrap().unwrap();
        assert_eq!(c.id, id);
        assert!(matches!(
            queue::complete(&db, id, c.epoch, "w1", "{}", "{}", None).unwrap(),
            queue::Completed::Recorded
        ));
    }
    let cancelled = added(&db, &new_job("old", "t"));
    assert!(queue::cancel(&db, cancelled).unwrap());
    let waiting = added(&db, &new_job("older", "u"));
    queue::register_worker(&db, "gone:1:1", "v1", "/w").unwrap();
    queue::worker_stopped(&db, "gone:1:1").unwrap();
    queue::register_worker(&db, "here:2:1", "v1", "/w").unwrap();

    let out = pmpo(&["gc", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (j["jobs_removed"].as_u64(), j["workers_removed"].as_u64()),
        (Some(2), Some(1)),
        "{j:#}"
    );
    let left: Vec<(String, String)> = db
        .query("SELECT run_id, state FROM pmpo_jobs ORDER BY id", vec![])
        .unwrap()
        .iter()
        .map(|r| (r[0].text().unwrap(), r[1].text().unwrap()))
        .collect();
    assert_eq!(
        left,
        vec![(kept_run, "done".into()), ("older".into(), "queued".into())]
    );
    assert!(queue::job(&db, waiting).unwrap().is_some());
    let workers = db
        .query("SELECT worker_id FROM pmpo_workers", vec![])
        .unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0][0].text().as_deref(), Some("here:2:1"));
    // With SQLite there is no queue: the fields are null.
    let sqlite = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pmpo"))
            .current_dir(ws.path())
            .env_remove("PMPO_STORE")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(sqlite(&["execute", "plan.yaml", "-q"]).status.success());
    let out = sqlite(&["gc", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["jobs_removed"].is_null(), "{j:#}");
}
