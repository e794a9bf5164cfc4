//! The PostgreSQL connection layer against a real server: writes are kept in
//! a transaction until committed, and a server restart in the middle of one
//! is waited out and the transaction replayed, with nothing lost or doubled.

use std::time::Duration;

use pmpo_store::pg::{PgConn, PgError, Val};

fn conn(tag: &str) -> Option<PgConn> {
    let url = pmpo_testkit::pg::fresh_db(tag)?;
    Some(PgConn::connect(&url, Duration::from_secs(60)).unwrap())
}

#[test]
fn writes_are_seen_inside_their_transaction_and_durable_only_once_committed() {
    let Some(c) = conn("conn_tx") else { return };
    c.batch("CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT, r DOUBLE PRECISION, b BOOLEAN)")
        .unwrap();
    c.write(
        "INSERT INTO t VALUES ($1, $2, $3, $4)",
        vec!["a".into(), Val::Int(None), 1.5.into(), true.into()],
    )
    .unwrap();
    let rows = c.query("SELECT k, n, r, b FROM t", vec![]).unwrap();
    assert_eq!(
        rows,
        vec![vec![
            Val::Text(Some("a".into())),
            Val::Int(None),
            Val::Real(Some(1.5)),
            Val::Bool(Some(true))
        ]]
    );
    c.rollback().unwrap();
    assert!(c.query("SELECT k FROM t", vec![]).unwrap().is_empty());
    // A statement's own error names the server and its SQLSTATE; nothing is retried.
    let err = c.once("SELECT * FROM missing", vec![], true).unwrap_err();
    assert!(
        matches!(&err, PgError::Sql { code: Some(code), .. } if code == "42P01"),
        "{err}"
    );
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

#[test]
fn an_unreachable_server_is_a_clear_error_without_the_password() {
    let err = PgConn::connect(
        "postgres://pmpo:secret@127.0.0.1:1/none",
        Duration::from_secs(1),
    )
    .err()
    .unwrap();
    let text = err.to_string();
    assert!(matches!(err, PgError::Connect { .. }), "{text}");
    assert!(
        text.contains("127.0.0.1:1") && !text.contains("secret"),
        "{text}"
    );
    assert!(err.hint().contains("PMPO_STORE"));
}

#[test]
fn a_server_restart_mid_transaction_is_waited_out_and_the_transaction_replayed() {
    let Some(cluster) = pmpo_testkit::pg::Cluster::start("conn_restart") else {
        return;
    };
    let c = PgConn::connect(&cluster.url, Duration::from_secs(60)).unwrap();
    c.batch("CREATE TABLE t (k BIGINT PRIMARY KEY)").unwrap();
    for k in 0..5 {
        c.write(
            "INSERT INTO t VALUES ($1) ON CONFLICT DO NOTHING",
            vec![k.into()],
        )
        .unwrap();
    }
    cluster.restart();
    for k in 5..10 {
        c.write(
            "INSERT INTO t VALUES ($1) ON CONFLICT DO NOTHING",
            vec![k.into()],
        )
        .unwrap();
    }
    c.commit().unwrap();
    let n = c.query("SELECT count(*) FROM t", vec![]).unwrap();
    assert_eq!(n[0][0].int(), Some(10));
}
