//! The execution store's behaviour through its trait, run against both back
//! ends: SQLite (`.state/pmpo.db`) and PostgreSQL (a fresh database on the
//! test server; skipped with a line when there is none). Then what only the
//! PostgreSQL store has: its schema version, the workspace marker, and a
//! server restart between a write and its flush.

use std::path::Path;

use pmpo_store::db::{
    AttemptRow, CacheRow, DbError, EventRow, ExecStore, PatchRow, RunRow, SqliteStore, StampRow,
    TaskRow,
};
use pmpo_store::pg::{PgConn, PgStore, schema};
use pmpo_store::states::{FailureKind, PatchState, RunStatus, StageStatus};

/// A store to test and a way to open a second one on the same database.
struct Case {
    name: &'static str,
    root: tempfile::TempDir,
    url: Option<String>,
}

impl Case {
    fn open(&self) -> Box<dyn ExecStore> {
        match &self.url {
            None => Box::new(SqliteStore::open(self.root.path()).unwrap()),
            Some(url) => Box::new(PgStore::open(url, self.root.path()).unwrap()),
        }
    }
}

/// Runs `check` on a SQLite store, then on a PostgreSQL one when there is a server.
fn both(tag: &str, check: impl Fn(&Case, &mut dyn ExecStore)) {
    let sqlite = Case {
        name: "sqlite",
        root: tempfile::tempdir().unwrap(),
        url: None,
    };
    check(&sqlite, sqlite.open().as_mut());
    if let Some(url) = pmpo_testkit::pg::fresh_db(tag) {
        let pg = Case {
            name: "postgres",
            root: tempfile::tempdir().unwrap(),
            url: Some(url),
        };
        check(&pg, pg.open().as_mut());
        assert!(
            !pg.root.path().join(pmpo_store::db::DB_FILE).exists(),
            "a PostgreSQL store made .state/pmpo.db"
        );
    }
}

fn run(id: &str, started_at: &str) -> RunRow {
    RunRow {
        run_id: id.into(),
        plan: "plan.yaml".into(),
        plan_blake3: "x".into(),
        status: RunStatus::Running,
        started_at: started_at.into(),
        finished_at: None,
        pid: 1,
        stages: 2,
        heartbeat_at: None,
    }
}

fn task(run: &str, stage: &str, position: i64, status: StageStatus) -> TaskRow {
    TaskRow {
        run_id: run.into(),
        stage_id: stage.into(),
        position,
        status,
        tool: "shell".into(),
        def_hash: "h".into(),
        cache_key: Some("k".into()),
        reason: None,
        started_at: Some("t".into()),
        finished_at: None,
        duration_ms: 1.5,
        exit_code: Some(0),
        signal: None,
        attempts: 1,
        outputs: "{}".into(),
        files: "[]".into(),
        data: "{\"a\":1}".into(),
    }
}

fn attempt(run: &str, stage: &str, status: StageStatus) -> AttemptRow {
    AttemptRow {
        run_id: run.into(),
        stage_id: stage.into(),
        attempt: 1,
        status,
        started_at: "t".into(),
        finished_at: "t".into(),
        duration_ms: 2.25,
        exit_code: Some(1),
        signal: Some(9),
        error_kind: Some(FailureKind::ValidationFailed),
        error_message: Some(format!("{stage} failed")),
        stdout_bytes: 10,
        stderr_bytes: 20,
    }
}

fn cache(key: &str, stage: &str) -> CacheRow {
    CacheRow {
        cache_key: key.into(),
        stage_id: stage.into(),
        run_id: "r1".into(),
        created_at: "t".into(),
        outputs: "{}".into(),
        files: "[]".into(),
        data: "{}".into(),
    }
}

#[test]
fn runs_are_written_found_listed_newest_first_and_settled() {
    both("suite_runs", |case, db| {
        db.begin_run(&run("r1", "2026-01-01T00:00:00.000Z"))
            .unwrap();
        db.begin_run(&run("r2", "2026-01-02T00:00:00.000Z"))
            .unwrap();
        db.flush().unwrap();
        let ids: Vec<String> = db.runs(10).unwrap().into_iter().map(|r| r.run_id).collect();
        assert_eq!(ids, ["r2", "r1"], "{}", case.name);
        assert_eq!(db.runs(1).unwrap().len(), 1);
        assert_eq!(
            db.interrupted_run("plan.yaml").unwrap().unwrap().run_id,
            "r2"
        );
        db.set_run_status("r2", RunStatus::Completed, Some("t2"), 7)
            .unwrap();
        db.heartbeat("r1", "2026-01-01T00:00:05.000Z").unwrap();
        db.flush().unwrap();
        let r2 = db.run("r2").unwrap().unwrap();
        assert_eq!(
            (r2.status, r2.finished_at.as_deref(), r2.pid),
            (RunStatus::Completed, Some("t2"), 7)
        );
        let r1 = db.run("r1").unwrap().unwrap();
        assert_eq!(r1.heartbeat_at.as_deref(), Some("2026-01-01T00:00:05.000Z"));
        assert_eq!(
            db.interrupted_run("plan.yaml").unwrap().unwrap().run_id,
            "r1"
        );
        assert!(db.interrupted_run("other.yaml").unwrap().is_none());
        assert!(db.run("nope").unwrap().is_none());
        // Beginning a run again replaces it.
        let mut again = run("r1", "2026-01-01T00:00:00.000Z");
        again.status = RunStatus::Paused;
        db.begin_run(&again).unwrap();
        db.flush().unwrap();
        assert_eq!(db.run("r1").unwrap().unwrap().status, RunStatus::Paused);
        assert_eq!(db.runs(10).unwrap().len(), 2, "{}", case.name);
    });
}

#[test]
fn tasks_are_replaced_by_stage_and_read_in_plan_order() {
    both("suite_tasks", |case, db| {
        db.put_task(&task("r1", "b", 2, StageStatus::InProgress))
            .unwrap();
        db.put_task(&task("r1", "a", 1, StageStatus::Completed))
            .unwrap();
        db.put_task(&task("r2", "a", 1, StageStatus::Failed))
            .unwrap();
        let mut done = task("r1", "b", 2, StageStatus::Completed);
        done.exit_code = None;
        done.signal = Some(15);
        done.reason = Some("why".into());
        db.put_task(&done).unwrap();
        db.flush().unwrap();
        let tasks = db.tasks("r1").unwrap();
        let got: Vec<(&str, StageStatus)> = tasks
            .iter()
            .map(|t| (t.stage_id.as_str(), t.status))
            .collect();
        assert_eq!(
            got,
            [("a", StageStatus::Completed), ("b", StageStatus::Completed)],
            "{}",
            case.name
        );
        let b = &tasks[1];
        assert_eq!(
            (b.exit_code, b.signal, b.reason.as_deref(), b.duration_ms),
            (None, Some(15), Some("why"), 1.5)
        );
        assert_eq!(b.data, "{\"a\":1}");
        assert!(db.tasks("none").unwrap().is_empty());
    });
}

#[test]
fn attempts_keep_their_order_and_states_and_filter_by_run() {
    both("suite_attempts", |case, db| {
        for (r, s) in [("r1", "a"), ("r2", "b"), ("r1", "c")] {
            db.add_attempt(&attempt(r, s, StageStatus::Timeout))
                .unwrap();
        }
        db.flush().unwrap();
        let stages = |db: &mut dyn ExecStore, run: Option<&str>| -> Vec<String> {
            db.attempts(run)
                .unwrap()
                .into_iter()
                .map(|a| a.stage_id)
                .collect()
        };
        assert_eq!(stages(db, Some("r1")), ["a", "c"], "{}", case.name);
        assert_eq!(stages(db, Some("r2")), ["b"]);
        assert_eq!(stages(db, None), ["a", "b", "c"]);
        assert!(stages(db, Some("nope")).is_empty());
        let a = &db.attempts(Some("r2")).unwrap()[0];
        assert_eq!(
            (
                a.status,
                a.error_kind,
                a.signal,
                a.duration_ms,
                a.stderr_bytes
            ),
            (
                StageStatus::Timeout,
                Some(FailureKind::ValidationFailed),
                Some(9),
                2.25,
                20
            )
        );
        assert_eq!(a.error_message.as_deref(), Some("b failed"));
    });
}

#[test]
fn ledger_intents_are_pending_then_finished_dropped_or_interrupted() {
    both("suite_ledger", |case, db| {
        let mut p = PatchRow::new(PatchState::Pending, "r1", "s", "a.txt");
        p.before_blake3 = Some("abc".into());
        p.before_size = Some(3);
        p.backed_up = true;
        let a = db.add_patch(&p).unwrap();
        let b = db
            .add_patch(&PatchRow::new(PatchState::Pending, "r1", "s", "b.txt"))
            .unwrap();
        let c = db
            .add_patch(&PatchRow::new(PatchState::Pending, "r2", "t", "a.txt"))
            .unwrap();
        assert!(a < b && b < c, "ids grow: {a} {b} {c} ({})", case.name);
        db.flush().unwrap();
        let pending: Vec<i64> = db.pending_patches().unwrap().iter().map(|p| p.id).collect();
        assert_eq!(pending, [a, b, c]);
        db.finish_patch(a, Some(("def", 4)), PatchState::Completed, "t2")
            .unwrap();
        db.drop_patch(b).unwrap();
        db.flush().unwrap();
        let rows = db.patches(Some("a.txt"), None).unwrap();
        assert_eq!(rows.len(), 2);
        let first = &rows[0];
        assert_eq!(
            (
                first.state,
                first.after_blake3.as_deref(),
                first.after_size,
                first.time.as_str()
            ),
            (PatchState::Completed, Some("def"), Some(4), "t2")
        );
        assert_eq!(
            (
                first.before_blake3.as_deref(),
                first.before_size,
                first.backed_up
            ),
            (Some("abc"), Some(3), true)
        );
        assert!(db.patches(Some("b.txt"), None).unwrap().is_empty());
        assert_eq!(db.patches(None, Some("r2")).unwrap()[0].id, c);
        assert_eq!(db.patches(Some("a.txt"), Some("r1")).unwrap()[0].id, a);
        assert_eq!(db.patches(None, None).unwrap().len(), 2);
        // A file that is gone: no after-content.
        db.finish_patch(c, None, PatchState::Failed, "t3").unwrap();
        let d = db
            .add_patch(&PatchRow::new(PatchState::Pending, "r3", "u", "d.txt"))
            .unwrap();
        db.flush().unwrap();
        assert_eq!(db.mark_interrupted().unwrap(), 1, "{}", case.name);
        db.flush().unwrap();
        assert!(db.pending_patches().unwrap().is_empty());
        let all = db.patches(None, None).unwrap();
        let states: Vec<(i64, PatchState)> = all.iter().map(|p| (p.id, p.state)).collect();
        assert_eq!(
            states,
            [
                (a, PatchState::Completed),
                (c, PatchState::Failed),
                (d, PatchState::Interrupted)
            ]
        );
        assert_eq!(all[1].after_blake3, None);
    });
}

#[test]
fn events_cache_and_pruning() {
    both("suite_cache", |case, db| {
        for kind in ["run_started", "stage_finished"] {
            db.add_event(&EventRow {
                run_id: "r1".into(),
                stage_id: Some("a".into()),
                kind: kind.into(),
                status: None,
                timestamp: "t".into(),
                duration_ms: Some(1.0),
                message: None,
            })
            .unwrap();
        }
        assert!(db.cache_get("k1").unwrap().is_none());
        db.cache_put(&cache("k1", "a")).unwrap();
        db.cache_put(&cache("k2", "b")).unwrap();
        db.cache_put(&cache("k3", "c")).unwrap();
        let mut newer = cache("k1", "a");
        newer.data = "{\"v\":2}".into();
        db.cache_put(&newer).unwrap();
        db.flush().unwrap();
        assert_eq!(db.cache_get("k1").unwrap().unwrap().data, "{\"v\":2}");
        let removed = db.cache_prune(&|r: &CacheRow| r.stage_id == "b").unwrap();
        assert_eq!(removed, 2, "{}", case.name);
        assert!(db.cache_get("k1").unwrap().is_none());
        assert!(db.cache_get("k3").unwrap().is_none());
        assert_eq!(db.cache_get("k2").unwrap().unwrap().stage_id, "b");
        // Pruning is durable at once: a second store sees it.
        assert!(case.open().cache_get("k1").unwrap().is_none());
        assert_eq!(db.cache_prune(&|_| true).unwrap(), 0);
    });
}

#[test]
fn stamps_keep_every_bit_and_are_replaced() {
    both("suite_stamps", |case, db| {
        assert!(db.stamp("out/a.txt").unwrap().is_none());
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
        assert_eq!(db.stamp("out/a.txt").unwrap(), Some(row.clone()));
        let newer = StampRow {
            blake3: "e".into(),
            ..row
        };
        db.put_stamp(&newer).unwrap();
        db.flush().unwrap();
        assert_eq!(
            case.open().stamp("out/a.txt").unwrap(),
            Some(newer),
            "{}",
            case.name
        );
    });
}

#[test]
fn adapters_and_their_breakers() {
    both("suite_adapters", |case, db| {
        db.touch_adapter("tool:b", "tool", "t1").unwrap();
        db.touch_adapter("model:a", "model", "t1").unwrap();
        let mut open = db.adapter("model:a").unwrap().unwrap();
        assert_eq!(
            (open.breaker_state.as_str(), open.consecutive_failures),
            ("CLOSED", 0)
        );
        open.breaker_state = "OPEN".into();
        open.consecutive_failures = 5;
        open.opened_until = Some("t9".into());
        open.last_error = Some("429".into());
        db.put_adapter(&open).unwrap();
        // Touching keeps the breaker; it only says when it was last used.
        db.touch_adapter("model:a", "model", "t2").unwrap();
        db.flush().unwrap();
        let all = db.adapters().unwrap();
        let ids: Vec<&str> = all.iter().map(|a| a.adapter_id.as_str()).collect();
        assert_eq!(ids, ["model:a", "tool:b"], "{}", case.name);
        let a = &all[0];
        assert_eq!(
            (
                a.breaker_state.as_str(),
                a.consecutive_failures,
                a.opened_until.as_deref(),
                a.last_error.as_deref(),
                a.updated_at.as_str()
            ),
            ("OPEN", 5, Some("t9"), Some("429"), "t2")
        );
        assert!(db.adapter("none").unwrap().is_none());
    });
}

#[test]
fn a_write_not_flushed_is_seen_by_its_store_only_until_flushed() {
    both("suite_tx", |case, db| {
        db.begin_run(&run("r1", "t")).unwrap();
        db.put_task(&task("r1", "a", 1, StageStatus::Completed))
            .unwrap();
        assert!(db.run("r1").unwrap().is_some(), "{}", case.name);
        assert_eq!(db.tasks("r1").unwrap().len(), 1);
        let mut other = case.open();
        assert!(other.run("r1").unwrap().is_none(), "{}", case.name);
        assert!(other.tasks("r1").unwrap().is_empty());
        db.flush().unwrap();
        assert!(other.run("r1").unwrap().is_some(), "{}", case.name);
        assert_eq!(other.tasks("r1").unwrap().len(), 1);
    });
}

// PostgreSQL only.

fn pg_case(tag: &str) -> Option<(String, tempfile::TempDir)> {
    let url = pmpo_testkit::pg::fresh_db(tag)?;
    Some((url, tempfile::tempdir().unwrap()))
}

fn meta(url: &str, key: &str) -> Option<String> {
    let c = PgConn::connect(url, std::time::Duration::from_secs(5)).unwrap();
    let rows = c
        .query(
            "SELECT value FROM pmpo_meta WHERE key = $1",
            vec![key.into()],
        )
        .unwrap();
    rows.first().and_then(|r| r[0].text())
}

#[test]
fn a_database_of_a_newer_schema_is_refused_untouched() {
    let Some((url, root)) = pg_case("suite_newer") else {
        return;
    };
    let mut db = PgStore::open(&url, root.path()).unwrap();
    db.begin_run(&run("r1", "t")).unwrap();
    db.flush().unwrap();
    drop(db);
    assert_eq!(
        meta(&url, "schema_version").as_deref(),
        Some(schema::PG_SCHEMA_VERSION.to_string().as_str())
    );
    let c = PgConn::connect(&url, std::time::Duration::from_secs(5)).unwrap();
    c.once(
        "UPDATE pmpo_meta SET value = '99' WHERE key = 'schema_version'",
        vec![],
        true,
    )
    .unwrap();
    let err = PgStore::open(&url, root.path()).err().unwrap();
    assert!(matches!(err, DbError::TooNew { found: 99, .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1") && text.contains("99") && !text.contains("pmpo.db"),
        "{text}"
    );
    assert_eq!(meta(&url, "schema_version").as_deref(), Some("99"));
    let n = c.query("SELECT count(*) FROM runs", vec![]).unwrap();
    assert_eq!(n[0][0].int(), Some(1));
}

#[test]
fn a_workspace_whose_marker_changed_is_refused_naming_both() {
    let Some((url, root)) = pg_case("suite_marker") else {
        return;
    };
    drop(PgStore::open(&url, root.path()).unwrap());
    let marker = root.path().join(schema::MARKER_FILE);
    let first = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(first.trim().len(), 32);
    assert_eq!(meta(&url, "workspace_id").as_deref(), Some(first.trim()));
    // Opening again is fine; the marker is written once.
    drop(PgStore::open(&url, root.path()).unwrap());
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), first);
    std::fs::write(&marker, "0123456789abcdef0123456789abcdef\n").unwrap();
    let err = PgStore::open(&url, root.path()).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, DbError::OtherWorkspace { .. }), "{text}");
    assert!(
        text.contains(first.trim()) && text.contains("0123456789abcdef0123456789abcdef"),
        "{text}"
    );
    assert!(
        err.hint().contains("same shared directory"),
        "{}",
        err.hint()
    );
    // Garbage in the marker is an error naming the file, never replaced.
    std::fs::write(&marker, "not a marker").unwrap();
    let err = PgStore::open(&url, root.path()).err().unwrap().to_string();
    assert!(err.contains("workspace-id"), "{err}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "not a marker");
}

#[test]
fn two_workspaces_cannot_share_a_database() {
    let Some((url, a)) = pg_case("suite_two_ws") else {
        return;
    };
    let b = tempfile::tempdir().unwrap();
    let mut db = PgStore::open(&url, a.path()).unwrap();
    db.begin_run(&run("ra", "t")).unwrap();
    db.flush().unwrap();
    let err = PgStore::open(&url, b.path()).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, DbError::OtherWorkspace { .. }), "{text}");
    let name = |p: &Path| p.display().to_string();
    assert!(
        text.contains(&name(a.path())) && text.contains(&name(b.path())),
        "{text}"
    );
    // The first workspace is untouched and still works.
    assert_eq!(
        meta(&url, "workspace_path").as_deref(),
        Some(name(a.path()).as_str())
    );
    assert!(db.run("ra").unwrap().is_some());
}

#[test]
fn the_store_survives_a_server_restart_between_a_write_and_its_flush() {
    let Some(cluster) = pmpo_testkit::pg::Cluster::start("suite_restart") else {
        return;
    };
    let url = cluster.fresh_db("suite_restart");
    let root = tempfile::tempdir().unwrap();
    let mut db = PgStore::open(&url, root.path()).unwrap();
    db.begin_run(&run("r1", "t")).unwrap();
    let id = db
        .add_patch(&PatchRow::new(PatchState::Pending, "r1", "s", "a.txt"))
        .unwrap();
    db.add_attempt(&attempt("r1", "a", StageStatus::Failed))
        .unwrap();
    cluster.restart();
    db.put_task(&task("r1", "a", 1, StageStatus::Completed))
        .unwrap();
    db.flush().unwrap();
    assert_eq!(db.patches(None, None).unwrap().len(), 1);
    assert_eq!(db.patches(None, None).unwrap()[0].id, id);
    assert_eq!(db.attempts(None).unwrap().len(), 1);
    assert_eq!(db.tasks("r1").unwrap().len(), 1);
    drop(db);
    let mut again = PgStore::open(&url, root.path()).unwrap();
    assert_eq!(again.runs(10).unwrap().len(), 1);
    assert_eq!(again.attempts(None).unwrap().len(), 1);
}

#[test]
fn a_marker_that_is_a_link_is_refused_and_its_target_untouched() {
    let Some((url, root)) = pg_case("suite_marker_link") else {
        return;
    };
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("id");
    std::fs::write(&target, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::create_dir_all(root.path().join(".state")).unwrap();
    std::os::unix::fs::symlink(&target, root.path().join(schema::MARKER_FILE)).unwrap();
    let err = PgStore::open(&url, root.path()).err().unwrap().to_string();
    assert!(err.contains("workspace-id"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "0123456789abcdef0123456789abcdef\n"
    );
    // Nothing was recorded for a workspace that could not prove who it is.
    assert_eq!(meta(&url, "workspace_id"), None);
}
