use super::*;

#[test]
fn roundtrip_and_version_guard() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SqliteStore::open(dir.path()).unwrap();
    db.begin_run(&RunRow {
        run_id: "r1".into(),
        plan: "plan.yaml".into(),
        plan_blake3: "x".into(),
        status: "running".into(),
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
    db.set_run_status("r1", "completed", Some("t2"), 1).unwrap();
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
