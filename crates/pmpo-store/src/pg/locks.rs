//! The one-writer locks of a workspace whose store is PostgreSQL: session
//! advisory locks instead of `.state/lock` and `.refiner/lock`.
//!
//! A lock is `pg_try_advisory_lock(key)` on a connection of its own, where
//! `key` is a 64-bit hash of the workspace's identity and the lock's name
//! (see [`lock_key`]). PostgreSQL releases it when that session ends: a clean
//! release, the process dying (even by SIGKILL: its socket closes), or a
//! machine lost from the network (the session's TCP keepalives, set short
//! here, end it within about half a minute). Who holds it is written, as the
//! lock file's JSON, in `pmpo_holders`; a row still there when the lock is
//! free was left by a holder that did not release cleanly.
//!
//! The connection does not wait out a lost server (its patience is zero): a
//! new session does not hold the old one's lock, so a lock whose connection
//! was lost may be held by someone else now. [`PgLock::is_held`] asks the
//! server whether this session still holds it, and [`PgLock::watch`] keeps
//! asking: a lock found lost is taken back at once (no one can have taken
//! it while the server was unreachable); when another pmpo took it first,
//! the watcher's `on_lost` runs (the CLI stops the command, as SIGTERM does).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{PgConn, PgError, Val};

/// The table of lock holders, and the machine each run was last held on
/// (for `pmpo status --all`). Created by the first lock taken, and by the
/// store's schema migration; idempotent.
pub const DDL: &str = "CREATE TABLE IF NOT EXISTS pmpo_holders (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    holder TEXT NOT NULL,
    backend BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pmpo_run_hosts (
    run_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    command TEXT NOT NULL,
    held_at TIMESTAMPTZ NOT NULL DEFAULT now()
);";

/// Serialises the creation of `pmpo_holders` between processes that take
/// their first lock at the same moment, and with the store's migration (the
/// same transaction-scoped advisory lock).
const DDL_LOCK: i64 = super::schema::MIGRATE_LOCK;

/// How often a waiting acquirer asks again.
const POLL: Duration = Duration::from_millis(200);

/// How often a watched lock is checked, and how often while its server does
/// not answer (to take it back as soon as the server is back).
const WATCH_TICK: Duration = Duration::from_secs(2);
const WATCH_DOWN_TICK: Duration = Duration::from_millis(200);

/// Session settings of a lock's connection. Keepalives act on TCP
/// connections only (a local socket ignores them).
const SESSION: &str =
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3";

/// The advisory lock key of lock `name` (`.state/lock`, `.refiner/lock`) of
/// the workspace identified by `scope`: the first 8 bytes of a blake3 hash.
pub fn lock_key(scope: &str, name: &str) -> i64 {
    let h = blake3::hash(format!("pmpo-lock\0{scope}\0{name}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    i64::from_le_bytes(b)
}

/// How `pg_locks` shows a 64-bit advisory key: its high and low 32 bits.
fn halves(key: i64) -> (i64, i64) {
    let u = key as u64;
    ((u >> 32) as i64, (u & 0xffff_ffff) as i64)
}

/// Whether a session (this one: `mine`; any: not) holds the key now.
const HELD_SQL: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 1
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid::bigint = $1 AND objid::bigint = $2
      AND (NOT $3 OR pid = pg_backend_pid()))";

/// A connection for locks: it never reconnects silently (patience zero), and
/// the server drops it within about half a minute of its machine going silent.
fn connect(url: &str) -> Result<PgConn, PgError> {
    let conn = PgConn::connect(url, Duration::ZERO)?;
    conn.batch(SESSION)?;
    ensure_table(&conn, "pmpo_run_hosts", DDL)?;
    Ok(conn)
}

/// Creates `table` with `ddl` (`CREATE TABLE IF NOT EXISTS ...`) unless it
/// exists; processes doing it at the same moment take turns.
pub(crate) fn ensure_table(conn: &PgConn, table: &str, ddl: &str) -> Result<(), PgError> {
    let present = conn.query("SELECT to_regclass($1) IS NOT NULL", vec![table.into()])?;
    if present.first().and_then(|r| r[0].boolean()) == Some(true) {
        return Ok(());
    }
    // One implicit transaction: the advisory lock is held until the table exists.
    conn.batch(&format!("SELECT pg_advisory_xact_lock({DDL_LOCK}); {ddl}"))
}

fn held(conn: &PgConn, key: i64, mine: bool) -> Result<bool, PgError> {
    let (hi, lo) = halves(key);
    let rows = conn.query(HELD_SQL, vec![hi.into(), lo.into(), mine.into()])?;
    Ok(rows.first().and_then(|r| r[0].boolean()) == Some(true))
}

fn key_text(key: i64) -> String {
    format!("{:016x}", key as u64)
}

/// The holder row of a key; with `live`, only when the session that wrote it
/// (its `backend`) holds the lock now (not a row a dead holder left while
/// the new one has not written its own yet).
fn holder_row(conn: &PgConn, key: i64, live: bool) -> Result<Option<String>, PgError> {
    let (hi, lo) = halves(key);
    let rows = conn.query(
        "SELECT holder FROM pmpo_holders h WHERE key = $1 AND (NOT $2 OR EXISTS (
            SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND classid::bigint = $3 AND objid::bigint = $4 AND pid = h.backend))",
        vec![key_text(key).into(), live.into(), hi.into(), lo.into()],
    )?;
    Ok(rows.first().and_then(|r| r[0].text()))
}

/// A held advisory lock; released (and its holder row removed) when dropped.
pub struct PgLock {
    conn: Arc<PgConn>,
    key: i64,
    name: String,
    /// The holder JSON last written (written again when the lock is taken back).
    holder: Arc<Mutex<String>>,
    watcher: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl std::fmt::Debug for PgLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLock")
            .field("server", &self.conn.server())
            .field("key", &key_text(self.key))
            .finish()
    }
}

/// The outcome of [`acquire`].
#[derive(Debug)]
pub enum Taken {
    /// Held; with the holder row a previous holder left (it did not release cleanly).
    Held(PgLock, Option<String>),
    /// Held by another session; with its holder row, when it has written one.
    Busy(Option<String>),
}

/// Takes lock `name` of workspace `scope` (`wait`: until its holder is
/// done), and records `holder` (JSON) as its holder.
pub fn acquire(
    url: &str,
    scope: &str,
    name: &str,
    holder: &str,
    wait: bool,
) -> Result<Taken, PgError> {
    let conn = connect(url)?;
    let key = lock_key(scope, name);
    loop {
        let rows = conn.once("SELECT pg_try_advisory_lock($1)", vec![key.into()], true)?;
        if rows.first().and_then(|r| r[0].boolean()) == Some(true) {
            break;
        }
        if !wait {
            return Ok(Taken::Busy(holder_row(&conn, key, true)?));
        }
        std::thread::sleep(POLL);
    }
    let previous = holder_row(&conn, key, false)?;
    write_holder(&conn, key, name, holder)?;
    let lock = PgLock {
        conn: Arc::new(conn),
        key,
        name: name.to_string(),
        holder: Arc::new(Mutex::new(holder.to_string())),
        watcher: None,
    };
    Ok(Taken::Held(lock, previous))
}

fn write_holder(conn: &PgConn, key: i64, name: &str, holder: &str) -> Result<(), PgError> {
    conn.once(
        "INSERT INTO pmpo_holders (key, name, holder, backend, updated_at)
         VALUES ($1, $2, $3, pg_backend_pid(), now())
         ON CONFLICT (key) DO UPDATE SET name = excluded.name, holder = excluded.holder,
         backend = excluded.backend, updated_at = now()",
        vec![key_text(key).into(), name.into(), holder.into()],
        true,
    )?;
    Ok(())
}

/// Takes a lost lock back on a new session: `Ok(false)` when another
/// session holds it now.
fn take_back(conn: &PgConn, key: i64, name: &str, holder: &Mutex<String>) -> Result<bool, PgError> {
    conn.batch(SESSION)?;
    let rows = conn.once("SELECT pg_try_advisory_lock($1)", vec![key.into()], true)?;
    if rows.first().and_then(|r| r[0].boolean()) != Some(true) {
        return Ok(false);
    }
    let json = holder.lock().map(|h| h.clone()).unwrap_or_default();
    write_holder(conn, key, name, &json)?;
    Ok(true)
}

/// The machine each run was last held on, by run id (empty before the first
/// lock was taken on this database).
pub fn run_hosts(conn: &PgConn) -> Result<std::collections::HashMap<String, String>, PgError> {
    let present = conn.query("SELECT to_regclass('pmpo_run_hosts') IS NOT NULL", vec![])?;
    if present.first().and_then(|r| r[0].boolean()) != Some(true) {
        return Ok(Default::default());
    }
    let rows = conn.query("SELECT run_id, host FROM pmpo_run_hosts", vec![])?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r[0].text()?, r[1].text()?)))
        .collect())
}

/// The holder row of lock `name` of workspace `scope`, when a session holds
/// it now (`None`: free, or held by a session that has not written its row).
pub fn current(url: &str, scope: &str, name: &str) -> Result<Option<String>, PgError> {
    // A reading command: nothing is created (no table: no holder).
    let conn = PgConn::connect(url, Duration::ZERO)?;
    let key = lock_key(scope, name);
    if !held(&conn, key, false)? {
        return Ok(None);
    }
    let present = conn.query("SELECT to_regclass('pmpo_holders') IS NOT NULL", vec![])?;
    if present.first().and_then(|r| r[0].boolean()) != Some(true) {
        return Ok(None);
    }
    holder_row(&conn, key, true)
}

impl PgLock {
    /// Whether this session still holds the lock. `false` when its connection
    /// was lost (a new session does not hold the old one's locks) or the
    /// server cannot be asked: then another pmpo may hold it.
    pub fn is_held(&self) -> bool {
        held(&self.conn, self.key, true).unwrap_or(false)
    }

    /// Rewrites the holder row; `Ok(false)` when the lock is no longer held
    /// (nothing is written then).
    pub fn update(&self, holder: &str) -> Result<bool, PgError> {
        if !self.is_held() {
            return Ok(false);
        }
        if let Ok(mut h) = self.holder.lock() {
            *h = holder.to_string();
        }
        let rows = self.conn.once(
            "UPDATE pmpo_holders SET holder = $2, updated_at = now() WHERE key = $1 RETURNING 1",
            vec![key_text(self.key).into(), holder.into()],
            true,
        )?;
        Ok(!rows.is_empty())
    }

    /// Checks, on a thread of its own until the lock is dropped, that this
    /// session still holds the lock. A lock found lost (its connection was
    /// cut: a server restart, a network loss) is taken back on a new
    /// connection as soon as the server answers; when another session holds
    /// it by then, `on_lost` runs once and the watch ends. Says so on stderr
    /// (unless `PMPO_STORE_QUIET` is set).
    pub fn watch(&mut self, on_lost: Box<dyn FnOnce() + Send>) {
        let (tx, rx) = mpsc::channel::<()>();
        let (conn, key, name, holder) = (
            self.conn.clone(),
            self.key,
            self.name.clone(),
            self.holder.clone(),
        );
        let quiet = std::env::var_os("PMPO_STORE_QUIET").is_some();
        let spawned = std::thread::Builder::new()
            .name("pmpo-lock-watch".into())
            .spawn(move || {
                let mut down = false;
                loop {
                    let tick = if down { WATCH_DOWN_TICK } else { WATCH_TICK };
                    match rx.recv_timeout(tick) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    if matches!(held(&conn, key, true), Ok(true)) {
                        continue;
                    }
                    match take_back(&conn, key, &name, &holder) {
                        Ok(true) => {
                            if !quiet {
                                eprintln!(
                                    "pmpo: the connection holding {name} at {} was lost; the lock was taken back before anyone else took it; going on",
                                    conn.server()
                                );
                            }
                            down = false;
                        }
                        Ok(false) => {
                            on_lost();
                            return;
                        }
                        Err(e) => {
                            if !down && !quiet {
                                eprintln!(
                                    "pmpo: lost the connection holding {name} ({e}); taking the lock back as soon as the server answers"
                                );
                            }
                            down = true;
                        }
                    }
                }
            });
        if let Ok(thread) = spawned {
            self.watcher = Some((tx, thread));
        }
    }

    /// Records that run `run_id` is held from `host` (the last machine that
    /// held a run is the one `pmpo status --all` names).
    pub fn record_run(
        &self,
        run_id: &str,
        host: &str,
        pid: u32,
        command: &str,
    ) -> Result<(), PgError> {
        self.conn.once(
            "INSERT INTO pmpo_run_hosts (run_id, host, pid, command, held_at) VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (run_id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
             command = excluded.command, held_at = now()",
            vec![run_id.into(), host.into(), i64::from(pid).into(), command.into()],
            true,
        )?;
        Ok(())
    }

    /// The server, for messages.
    pub fn server(&self) -> &str {
        self.conn.server()
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.watcher.take() {
            drop(stop);
            let _ = thread.join();
        }
        // A clean release removes the row, so the next holder knows nobody
        // died holding it; never the row of a session that took over.
        if self.is_held() {
            let _ = self.conn.once(
                "DELETE FROM pmpo_holders WHERE key = $1",
                vec![Val::from(key_text(self.key))],
                true,
            );
            let _ = self.conn.once(
                "SELECT pg_advisory_unlock($1)",
                vec![Val::from(self.key)],
                true,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_differ_by_workspace_and_name() {
        let a = lock_key("w1", ".state/lock");
        assert_eq!(a, lock_key("w1", ".state/lock"));
        assert_ne!(a, lock_key("w2", ".state/lock"));
        assert_ne!(a, lock_key("w1", ".refiner/lock"));
        // The halves pg_locks shows put the key back together.
        let (hi, lo) = halves(a);
        assert_eq!(((hi as u64) << 32 | lo as u64) as i64, a);
    }

    fn url(tag: &str) -> Option<String> {
        pmpo_testkit::pg::fresh_db(tag)
    }

    #[test]
    fn a_second_session_is_refused_and_sees_the_holder_then_takes_over() {
        let Some(url) = url("locks_busy") else { return };
        let Taken::Held(first, prev) = acquire(&url, "w", ".state/lock", "one", false).unwrap()
        else {
            panic!("the first lock was refused")
        };
        assert_eq!(prev, None);
        assert!(first.is_held());
        assert_eq!(
            current(&url, "w", ".state/lock").unwrap().as_deref(),
            Some("one")
        );
        match acquire(&url, "w", ".state/lock", "two", false).unwrap() {
            Taken::Busy(h) => assert_eq!(h.as_deref(), Some("one")),
            Taken::Held(..) => panic!("two sessions held one lock"),
        }
        // Another lock of the same workspace, and the same lock of another
        // workspace, are independent.
        assert!(matches!(
            acquire(&url, "w", ".refiner/lock", "r", false).unwrap(),
            Taken::Held(..)
        ));
        assert!(matches!(
            acquire(&url, "other", ".state/lock", "o", false).unwrap(),
            Taken::Held(..)
        ));
        assert!(first.update("one, updated").unwrap());
        drop(first);
        assert_eq!(current(&url, "w", ".state/lock").unwrap(), None);
        match acquire(&url, "w", ".state/lock", "two", false).unwrap() {
            Taken::Held(_, prev) => assert_eq!(prev, None, "a clean release leaves no row"),
            Taken::Busy(h) => panic!("still busy after the release: {h:?}"),
        }
    }

    #[test]
    fn a_holder_whose_session_ended_is_reported_as_previous() {
        let Some(url) = url("locks_prev") else { return };
        let Taken::Held(first, _) = acquire(&url, "w", ".state/lock", "dead", false).unwrap()
        else {
            panic!("refused")
        };
        // End its session from outside, as a process dying does: no clean
        // release. (The call waits until the session has ended.)
        terminate_holder(&url, lock_key("w", ".state/lock"));
        // The holder can tell it lost the lock, and its drop removes nothing.
        assert!(!first.is_held());
        assert!(!first.update("x").unwrap());
        drop(first);
        assert_eq!(current(&url, "w", ".state/lock").unwrap(), None);
        match acquire(&url, "w", ".state/lock", "next", false).unwrap() {
            Taken::Held(_, prev) => assert_eq!(prev.as_deref(), Some("dead")),
            Taken::Busy(h) => panic!("busy: {h:?}"),
        }
    }

    #[test]
    fn a_waiting_acquirer_gets_the_lock_when_it_is_released() {
        let Some(url) = url("locks_wait") else { return };
        let Taken::Held(first, _) = acquire(&url, "w", ".state/lock", "one", false).unwrap() else {
            panic!("refused")
        };
        let u = url.clone();
        let waiter = std::thread::spawn(move || acquire(&u, "w", ".state/lock", "two", true));
        std::thread::sleep(Duration::from_millis(500));
        assert!(!waiter.is_finished(), "the waiter did not wait");
        drop(first);
        match waiter.join().unwrap().unwrap() {
            Taken::Held(l, prev) => {
                assert!(l.is_held());
                assert_eq!(prev, None);
            }
            Taken::Busy(_) => panic!("a waiting acquirer was refused"),
        }
    }

    fn terminate_holder(url: &str, key: i64) {
        let admin = PgConn::connect(url, Duration::ZERO).unwrap();
        let (hi, lo) = halves(key);
        admin
            .query(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks WHERE locktype = 'advisory'
                 AND classid::bigint = $1 AND objid::bigint = $2
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                vec![hi.into(), lo.into()],
            )
            .unwrap();
    }

    fn lost_flag() -> (Arc<std::sync::atomic::AtomicBool>, Box<dyn FnOnce() + Send>) {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = flag.clone();
        (
            flag,
            Box::new(move || f.store(true, std::sync::atomic::Ordering::SeqCst)),
        )
    }

    /// Polls `cond` for up to a minute (a safety net, not a measure).
    fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn a_watched_lock_whose_session_was_cut_is_taken_back() {
        let Some(url) = url("locks_takeback") else {
            return;
        };
        let Taken::Held(mut lock, _) = acquire(&url, "w", ".state/lock", "one", false).unwrap()
        else {
            panic!("refused")
        };
        let (lost, on_lost) = lost_flag();
        lock.watch(on_lost);
        terminate_holder(&url, lock_key("w", ".state/lock"));
        assert!(eventually(|| lock.is_held()), "the lock was not taken back");
        assert!(!lost.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            current(&url, "w", ".state/lock").unwrap().as_deref(),
            Some("one")
        );
        match acquire(&url, "w", ".state/lock", "two", false).unwrap() {
            Taken::Busy(h) => assert_eq!(h.as_deref(), Some("one")),
            Taken::Held(..) => panic!("two sessions held one lock"),
        }
    }

    #[test]
    fn a_watched_lock_another_session_took_first_runs_on_lost() {
        let Some(url) = url("locks_lost") else { return };
        let key = lock_key("w", ".state/lock");
        // The watcher checks every 2 s: the thief, right after the cut, wins
        // all but (rarely) a race it then retries.
        for _ in 0..3 {
            let Taken::Held(mut lock, _) = acquire(&url, "w", ".state/lock", "one", false).unwrap()
            else {
                panic!("refused")
            };
            let (lost, on_lost) = lost_flag();
            lock.watch(on_lost);
            terminate_holder(&url, key);
            let thief = PgConn::connect(&url, Duration::ZERO).unwrap();
            let got = thief
                .once("SELECT pg_try_advisory_lock($1)", vec![key.into()], true)
                .unwrap();
            if got[0][0].boolean() != Some(true) {
                continue;
            }
            assert!(
                eventually(|| lost.load(std::sync::atomic::Ordering::SeqCst)),
                "on_lost never ran"
            );
            assert!(!lock.is_held());
            return;
        }
        panic!("the watcher won the race three times");
    }

    #[test]
    fn a_row_left_by_a_dead_holder_is_not_named_as_the_live_one() {
        let Some(url) = url("locks_stale_row") else {
            return;
        };
        let key = lock_key("w", ".state/lock");
        let Taken::Held(dead, _) = acquire(&url, "w", ".state/lock", "dead", false).unwrap() else {
            panic!("refused")
        };
        terminate_holder(&url, key);
        // Another session has just taken the lock and not written its row yet.
        let next = PgConn::connect(&url, Duration::ZERO).unwrap();
        let got = next
            .once("SELECT pg_try_advisory_lock($1)", vec![key.into()], true)
            .unwrap();
        assert_eq!(got[0][0].boolean(), Some(true));
        match acquire(&url, "w", ".state/lock", "third", false).unwrap() {
            Taken::Busy(h) => assert_eq!(h, None, "the dead holder was named"),
            Taken::Held(..) => panic!("two sessions held one lock"),
        }
        assert_eq!(current(&url, "w", ".state/lock").unwrap(), None);
        drop(dead);
    }
}
