use super::*;
use crate::states::{FailureKind, StageStatus};

#[test]
fn roundtrip_and_version_guard() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStore::open(dir.path()).unwrap();
    db.begin_run(&RunRow {
        run_id: "r1".into(),
        plan: "plan.yaml".into(),
        plan_blake3: "x".into(),
        status: RunStatus::Running,
        started_at: "t".into(),
        finished_at: None,
        pid: 1,
        stages: 2,
        heartbeat_at: None,
    })
    .unwrap();
    db.flush().unwrap();
    assert_eq!(
        db.interrupted_run("plan.yaml").unwrap().unwrap().run_id,
        "r1"
    );
    db.set_run_status("r1", RunStatus::Completed, Some("t2"), 1)
        .unwrap();
    db.flush().unwrap();
    assert!(db.interrupted_run("plan.yaml").unwrap().is_none());
    drop(db);
    // A database from a newer pmpo is refused, untouched.
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(dir.path()).err().unwrap();
    assert!(matches!(err, DbError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn a_schema_2_ledger_is_migrated_with_its_entries_complete() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".state")).unwrap();
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    // The layout of schema 2: no `state` column.
    let old = SCHEMA.replace(",\n    state TEXT NOT NULL DEFAULT 'completed');", ");");
    assert_ne!(old, SCHEMA);
    conn.execute_batch(&old).unwrap();
    conn.execute(
        "INSERT INTO patch_history (time, run_id, writer, path, before_blake3, backed_up) VALUES ('t', 'r', 'w', 'a.txt', 'abc', 1)",
        [],
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    drop(conn);
    let mut db = SqliteStore::open(dir.path()).unwrap();
    let rows = db.patches(None, None).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, PatchState::Completed);
    // New entries: an intent, then completed; another dropped.
    let id = db
        .add_patch(&PatchRow::new(PatchState::Pending, "r2", "s", "b.txt"))
        .unwrap();
    let gone = db
        .add_patch(&PatchRow::new(PatchState::Pending, "r2", "s", "c.txt"))
        .unwrap();
    db.flush().unwrap();
    assert_eq!(
        db.patches(Some("b.txt"), None).unwrap()[0].state,
        PatchState::Pending
    );
    db.finish_patch(id, Some(("def", 3)), PatchState::Completed, "t2")
        .unwrap();
    db.drop_patch(gone).unwrap();
    db.flush().unwrap();
    let b = &db.patches(Some("b.txt"), None).unwrap()[0];
    assert_eq!((b.state, b.after_size), (PatchState::Completed, Some(3)));
    assert!(db.patches(Some("c.txt"), None).unwrap().is_empty());
    let v: i64 = db
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, DB_SCHEMA_VERSION);
}

#[test]
fn garbage_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".state")).unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![7u8; 8192]).unwrap();
    let err = SqliteStore::open(dir.path()).err().unwrap();
    assert!(matches!(err, DbError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("pmpo.db"));
}

#[test]
fn states_are_written_as_before_and_an_unknown_one_is_an_error_naming_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStore::open(dir.path()).unwrap();
    let run = |id: &str| RunRow {
        run_id: id.into(),
        plan: "plan.yaml".into(),
        plan_blake3: "x".into(),
        status: RunStatus::AwaitingIntervention,
        started_at: "t".into(),
        finished_at: None,
        pid: 1,
        stages: 1,
        heartbeat_at: None,
    };
    db.begin_run(&run("r1")).unwrap();
    db.add_attempt(&AttemptRow {
        run_id: "r1".into(),
        stage_id: "build".into(),
        attempt: 1,
        status: StageStatus::Timeout,
        started_at: "t".into(),
        finished_at: "t".into(),
        duration_ms: 1.0,
        exit_code: None,
        signal: None,
        error_kind: Some(FailureKind::ValidationFailed),
        error_message: None,
        stdout_bytes: 0,
        stderr_bytes: 0,
    })
    .unwrap();
    db.flush().unwrap();
    let a = &db.attempts(None).unwrap()[0];
    assert_eq!(
        (a.status, a.error_kind),
        (StageStatus::Timeout, Some(FailureKind::ValidationFailed))
    );
    drop(db);
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let written: (String, String, String) = conn
        .query_row(
            "SELECT r.status, e.status, e.error_kind FROM runs r, execution_log e",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        written,
        (
            "awaiting_intervention".to_string(),
            "TIMEOUT".to_string(),
            "validation_failed".to_string()
        )
    );
    conn.execute("UPDATE runs SET status = 'done'", []).unwrap();
    conn.execute("UPDATE execution_log SET error_kind = 'gremlins'", [])
        .unwrap();
    drop(conn);
    let mut db = SqliteStore::open(dir.path()).unwrap();
    let err = db.run("r1").unwrap_err().to_string();
    assert!(
        err.contains("runs row `r1`, column `status`: unknown RunStatus `done`"),
        "{err}"
    );
    let err = db.attempts(None).unwrap_err().to_string();
    assert!(
        err.contains(
            "execution_log row `r1/build#1`, column `error_kind`: unknown FailureKind `gremlins`"
        ),
        "{err}"
    );
}

#[test]
fn the_stamps_table_is_made_with_the_first_stamp_and_stamps_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStore::open(dir.path()).unwrap();
    let tables = |db: &SqliteStore| -> i64 {
        db.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'stamps'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    // A store without the table (new, or from before stamps) has no stamps.
    assert_eq!(tables(&db), 0);
    assert!(db.stamp("a").unwrap().is_none());
    // Device and inode numbers keep all their 64 bits.
    let row = StampRow {
        path: "out/a.txt".into(),
        size: 3,
        blake3: "d".into(),
        dev: u64::MAX - 1,
        ino: 1 << 63,
        mtime_ns: 1_700_000_000_123_456_789,
        ctime_ns: 1_700_000_000_223_456_789,
        taken_ns: 1_700_000_009_000_000_000,
    };
    db.put_stamp(&row).unwrap();
    db.flush().unwrap();
    assert_eq!(tables(&db), 1);
    assert_eq!(db.stamp("out/a.txt").unwrap(), Some(row.clone()));
    let newer = StampRow {
        blake3: "e".into(),
        ..row
    };
    db.put_stamp(&newer).unwrap();
    db.flush().unwrap();
    drop(db);
    // The schema is unchanged: a store with stamps is still schema 3.
    let mut db = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(db.stamp("out/a.txt").unwrap(), Some(newer));
    let v: i64 = db
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 3);
}

#[test]
fn the_attempts_of_one_run_leave_out_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStore::open(dir.path()).unwrap();
    for (run, stage) in [("r1", "a"), ("r2", "b"), ("r1", "c")] {
        db.begin_run(&RunRow {
            run_id: run.into(),
            plan: "plan.yaml".into(),
            plan_blake3: "x".into(),
            status: RunStatus::Running,
            started_at: "t".into(),
            finished_at: None,
            pid: 1,
            stages: 1,
            heartbeat_at: None,
        })
        .unwrap();
        db.add_attempt(&AttemptRow {
            run_id: run.into(),
            stage_id: stage.into(),
            attempt: 1,
            status: StageStatus::Failed,
            started_at: "t".into(),
            finished_at: "t".into(),
            duration_ms: 1.0,
            exit_code: Some(1),
            signal: None,
            error_kind: None,
            error_message: Some(format!("{stage} failed")),
            stdout_bytes: 0,
            stderr_bytes: 0,
        })
        .unwrap();
    }
    db.flush().unwrap();
    let mut stages = |run: Option<&str>| -> Vec<String> {
        db.attempts(run)
            .unwrap()
            .into_iter()
            .map(|a| a.stage_id)
            .collect()
    };
    assert_eq!(stages(Some("r1")), ["a", "c"]);
    assert_eq!(stages(Some("r2")), ["b"]);
    assert_eq!(stages(None), ["a", "b", "c"]);
    assert!(stages(Some("nope")).is_empty());
}
