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
