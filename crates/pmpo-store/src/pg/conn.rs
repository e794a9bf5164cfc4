//! One PostgreSQL connection, owned by a thread of its own.
//!
//! The client is synchronous, but it drives its socket with a runtime of its
//! own, which may not run inside the engine's: every call is handed to the
//! connection's thread and waited for, so a [`PgConn`] works from any thread
//! or task.
//!
//! Writes go into a transaction that [`PgConn::commit`] ends, and are kept (a
//! journal) until then. When the server goes away (a restart, a lost
//! network), the connection pauses: it reconnects with backoff for up to its
//! patience, then begins the transaction again and replays the journal, so
//! nothing written is lost. Every write is idempotent (upserts, inserts that
//! ignore a key already there, ids chosen by pmpo), so a commit whose answer
//! was lost may be replayed without writing anything twice.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};

/// A value sent to or read from PostgreSQL: pmpo's columns are BIGINT,
/// DOUBLE PRECISION, TEXT and BOOLEAN, each nullable.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Bool(Option<bool>),
}

impl Val {
    pub fn int(&self) -> Option<i64> {
        match self {
            Val::Int(v) => *v,
            Val::Real(v) => v.map(|f| f as i64),
            _ => None,
        }
    }
    pub fn real(&self) -> Option<f64> {
        match self {
            Val::Real(v) => *v,
            Val::Int(v) => v.map(|i| i as f64),
            _ => None,
        }
    }
    pub fn text(&self) -> Option<String> {
        match self {
            Val::Text(v) => v.clone(),
            _ => None,
        }
    }
    pub fn boolean(&self) -> Option<bool> {
        match self {
            Val::Bool(v) => *v,
            _ => None,
        }
    }
    fn to_sql(&self) -> Box<dyn ToSql + Sync + Send> {
        match self {
            Val::Int(v) => Box::new(*v),
            Val::Real(v) => Box::new(*v),
            Val::Text(v) => Box::new(v.clone()),
            Val::Bool(v) => Box::new(*v),
        }
    }
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(Some(v))
    }
}
impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        Val::Int(v)
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Self {
        Val::Real(Some(v))
    }
}
impl From<Option<f64>> for Val {
    fn from(v: Option<f64>) -> Self {
        Val::Real(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(Some(v.to_string()))
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(Some(v))
    }
}
impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Self {
        Val::Text(v.map(str::to_string))
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        Val::Text(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Bool(Some(v))
    }
}

/// One row read, its columns in the order the query named them.
pub type Row = Vec<Val>;

/// Errors from the PostgreSQL store. Each names the server (its address,
/// never its password).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to the PostgreSQL store at {server}: {detail}")]
    Connect { server: String, detail: String },
    #[error(
        "the PostgreSQL store at {server} went away and did not come back within {waited:.0?}: {detail}"
    )]
    Gone {
        server: String,
        waited: Duration,
        detail: String,
    },
    #[error("PostgreSQL store at {server}: {detail}")]
    Sql {
        server: String,
        /// The SQLSTATE code, when the server sent one (`40P01`, `23505`, ...).
        code: Option<String>,
        detail: String,
    },
}

impl PgError {
    pub fn hint(&self) -> &'static str {
        match self {
            PgError::Connect { .. } => {
                "check PMPO_STORE (or --store, or [store] in pmpo.toml): the server, port, user and database, and that the server is running"
            }
            PgError::Gone { .. } => {
                "nothing committed was lost: start the server again, then run the same command again (`pmpo resume` continues a run)"
            }
            PgError::Sql { .. } => "see the server's message; nothing was committed",
        }
    }
}

/// How long a connection waits for a server that went away before it gives
/// up (`PMPO_STORE_PATIENCE` seconds; default 300).
pub fn default_patience() -> Duration {
    std::env::var("PMPO_STORE_PATIENCE")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(300), Duration::from_secs_f64)
}

/// The server a URL names, without user or password (for messages).
pub fn server_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split('?').next().unwrap_or(host);
    format!("postgres://{host}")
}

type Job = Box<dyn FnOnce(&mut Inner) + Send>;

/// A connection to PostgreSQL on its own thread. Cheap to share by reference;
/// calls are serialised.
pub struct PgConn {
    jobs: std::sync::Mutex<mpsc::Sender<Job>>,
    server: String,
}

struct Inner {
    url: String,
    server: String,
    client: Option<Client>,
    journal: Vec<(String, Vec<Val>)>,
    listening: Vec<String>,
    patience: Duration,
    quiet: bool,
}

impl PgConn {
    /// Connects now (an unreachable server is an error at once); later losses
    /// are waited out for `patience`.
    pub fn connect(url: &str, patience: Duration) -> Result<PgConn, PgError> {
        let server = server_of(url);
        let mut inner = Inner {
            url: url.to_string(),
            server: server.clone(),
            client: None,
            journal: Vec::new(),
            listening: Vec::new(),
            patience,
            quiet: std::env::var_os("PMPO_STORE_QUIET").is_some(),
        };
        let (tx, rx) = mpsc::channel::<Job>();
        // The client connects on the connection's own thread: its blocking
        // calls may not run on a thread that drives an async runtime.
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), PgError>>();
        std::thread::Builder::new()
            .name("pmpo-postgres".into())
            .spawn(move || {
                match Client::connect(&inner.url, NoTls) {
                    Ok(c) => inner.client = Some(c),
                    Err(e) => {
                        let _ = ready_tx.send(Err(PgError::Connect {
                            server: inner.server.clone(),
                            detail: describe(&e),
                        }));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(()));
                while let Ok(job) = rx.recv() {
                    job(&mut inner);
                }
            })
            .map_err(|e| PgError::Connect {
                server: server.clone(),
                detail: format!("cannot start its thread: {e}"),
            })?;
        ready_rx.recv().map_err(|_| PgError::Connect {
            server: server.clone(),
            detail: "its connection thread ended".into(),
        })??;
        Ok(PgConn {
            jobs: std::sync::Mutex::new(tx),
            server,
        })
    }

    /// The server, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<R, PgError> + Send + 'static,
    ) -> Result<R, PgError> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |inner| {
            let _ = tx.send(f(inner));
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        let gone = || PgError::Gone {
            server: self.server.clone(),
            waited: Duration::ZERO,
            detail: "its connection thread ended".into(),
        };
        sent.map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }

    /// A write inside the current transaction (begun if none is open); kept
    /// until [`PgConn::commit`] and replayed after a reconnection. Returns the
    /// rows it changed.
    pub fn write(&self, sql: &str, params: Vec<Val>) -> Result<u64, PgError> {
        let sql = sql.to_string();
        self.call(move |i| {
            if i.journal.is_empty() {
                i.journal.push(("BEGIN".into(), Vec::new()));
                i.retrying(|c| c.batch_execute("BEGIN").map(|_| 0u64), false)?;
            }
            i.journal.push((sql.clone(), params.clone()));
            i.retrying(|c| execute(c, &sql, &params), false)
        })
    }

    /// A query: inside the current transaction if one is open (it sees its
    /// writes), else on its own.
    pub fn query(&self, sql: &str, params: Vec<Val>) -> Result<Vec<Row>, PgError> {
        let sql = sql.to_string();
        self.call(move |i| i.retrying(|c| query(c, &sql, &params), false))
    }

    /// A statement on its own (outside any transaction, never replayed): a
    /// claim, a lease renewal, DDL. Retried after a reconnection only if the
    /// caller says it is safe (`idempotent`).
    pub fn once(&self, sql: &str, params: Vec<Val>, idempotent: bool) -> Result<Vec<Row>, PgError> {
        let sql = sql.to_string();
        self.call(move |i| {
            if !i.journal.is_empty() {
                return Err(PgError::Sql {
                    server: i.server.clone(),
                    code: None,
                    detail: "a statement on its own was asked for inside a transaction".into(),
                });
            }
            i.retrying(|c| query(c, &sql, &params), !idempotent)
        })
    }

    /// Several statements as one script, outside any transaction (schema).
    pub fn batch(&self, sql: &str) -> Result<(), PgError> {
        let sql = sql.to_string();
        self.call(move |i| i.retrying(|c| c.batch_execute(&sql), false))
    }

    /// Makes every write since the last commit durable.
    pub fn commit(&self) -> Result<(), PgError> {
        self.call(|i| {
            if i.journal.is_empty() {
                return Ok(());
            }
            i.retrying(|c| c.batch_execute("COMMIT"), false)?;
            i.journal.clear();
            Ok(())
        })
    }

    /// Drops every write since the last commit.
    pub fn rollback(&self) -> Result<(), PgError> {
        self.call(|i| {
            if i.journal.is_empty() {
                return Ok(());
            }
            i.journal.clear();
            if let Some(c) = i.client.as_mut() {
                let _ = c.batch_execute("ROLLBACK");
            }
            Ok(())
        })
    }

    /// `LISTEN channel` (again after every reconnection).
    pub fn listen(&self, channel: &str) -> Result<(), PgError> {
        let channel = channel.to_string();
        self.call(move |i| {
            let sql = format!("LISTEN {channel}");
            i.retrying(|c| c.batch_execute(&sql), false)?;
            if !i.listening.contains(&channel) {
                i.listening.push(channel);
            }
            Ok(())
        })
    }

    /// Waits up to `timeout` for a notification on a channel listened to;
    /// returns the payloads that arrived (empty: none in time).
    pub fn wait_notifications(&self, timeout: Duration) -> Result<Vec<String>, PgError> {
        self.call(move |i| {
            i.retrying(
                |c| {
                    let mut got = Vec::new();
                    let mut n = c.notifications();
                    if let Some(first) = n.timeout_iter(timeout).next()? {
                        got.push(first.payload().to_string());
                    }
                    let mut more = n.iter();
                    while let Some(m) = more.next()? {
                        got.push(m.payload().to_string());
                    }
                    Ok(got)
                },
                false,
            )
        })
    }

    /// Whether the server answers now (no waiting).
    pub fn alive(&self) -> bool {
        self.call(|i| {
            Ok(i.client
                .as_mut()
                .is_some_and(|c| c.is_valid(Duration::from_secs(2)).is_ok()))
        })
        .unwrap_or(false)
    }
}

impl Inner {
    /// Runs `op`; when the connection is lost, reconnects (within the
    /// patience), replays the open transaction, and runs `op` again, unless
    /// `once` says it may have happened already.
    fn retrying<R>(
        &mut self,
        mut op: impl FnMut(&mut Client) -> Result<R, postgres::Error>,
        once: bool,
    ) -> Result<R, PgError> {
        let started = Instant::now();
        let mut warned = false;
        loop {
            let err = match self.client.as_mut() {
                Some(c) => match op(c) {
                    Ok(r) => {
                        if warned && !self.quiet {
                            eprintln!(
                                "pmpo: reconnected to the store at {} after {:.1?}; going on",
                                self.server,
                                started.elapsed()
                            );
                        }
                        return Ok(r);
                    }
                    Err(e) => e,
                },
                None => match self.reconnect() {
                    Ok(()) => continue,
                    Err(e) => e,
                },
            };
            if !lost(&err, self.client.as_ref()) {
                return Err(PgError::Sql {
                    server: self.server.clone(),
                    code: err.code().map(|c| c.code().to_string()),
                    detail: describe(&err),
                });
            }
            self.client = None;
            if once && !warned {
                // The statement may have run before the connection dropped.
                return Err(PgError::Gone {
                    server: self.server.clone(),
                    waited: started.elapsed(),
                    detail: describe(&err),
                });
            }
            if started.elapsed() >= self.patience {
                return Err(PgError::Gone {
                    server: self.server.clone(),
                    waited: started.elapsed(),
                    detail: describe(&err),
                });
            }
            if !warned && !self.quiet {
                eprintln!(
                    "pmpo: the store at {} is unreachable ({}); pausing, retrying for up to {:.0?}",
                    self.server,
                    describe(&err),
                    self.patience
                );
            }
            warned = true;
            let pause =
                (started.elapsed() / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
            std::thread::sleep(pause);
        }
    }

    /// A new connection, with the listens and the open transaction restored.
    fn reconnect(&mut self) -> Result<(), postgres::Error> {
        let mut c = Client::connect(&self.url, NoTls)?;
        for ch in &self.listening {
            c.batch_execute(&format!("LISTEN {ch}"))?;
        }
        for (sql, params) in &self.journal {
            if params.is_empty() && sql == "BEGIN" {
                c.batch_execute("BEGIN")?;
            } else {
                execute(&mut c, sql, params)?;
            }
        }
        self.client = Some(c);
        Ok(())
    }
}

/// Whether an error means the connection is gone (not a statement's error).
fn lost(e: &postgres::Error, client: Option<&Client>) -> bool {
    if client.is_some_and(|c| c.is_closed()) {
        return true;
    }
    if let Some(code) = e.code() {
        // admin_shutdown, crash_shutdown, cannot_connect_now, connection_failure...
        let c = code.code();
        return c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03";
    }
    e.as_db_error().is_none()
}

fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s = format!("{s}: {inner}");
                src = inner.source();
            }
            s
        }
    }
}

fn boxed(params: &[Val]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params.iter().map(Val::to_sql).collect()
}

fn execute(c: &mut Client, sql: &str, params: &[Val]) -> Result<u64, postgres::Error> {
    let b = boxed(params);
    let refs: Vec<&(dyn ToSql + Sync)> = b.iter().map(|x| &**x as &(dyn ToSql + Sync)).collect();
    c.execute(sql, &refs)
}

fn query(c: &mut Client, sql: &str, params: &[Val]) -> Result<Vec<Row>, postgres::Error> {
    let b = boxed(params);
    let refs: Vec<&(dyn ToSql + Sync)> = b.iter().map(|x| &**x as &(dyn ToSql + Sync)).collect();
    let rows = c.query(sql, &refs)?;
    Ok(rows.iter().map(row_vals).collect())
}

fn row_vals(r: &postgres::Row) -> Row {
    (0..r.len())
        .map(|k| {
            let ty = r.columns()[k].type_();
            if *ty == Type::INT8 {
                Val::Int(r.get(k))
            } else if *ty == Type::INT4 {
                Val::Int(r.get::<_, Option<i32>>(k).map(i64::from))
            } else if *ty == Type::INT2 {
                Val::Int(r.get::<_, Option<i16>>(k).map(i64::from))
            } else if *ty == Type::FLOAT8 {
                Val::Real(r.get(k))
            } else if *ty == Type::FLOAT4 {
                Val::Real(r.get::<_, Option<f32>>(k).map(f64::from))
            } else if *ty == Type::BOOL {
                Val::Bool(r.get(k))
            } else {
                // TEXT, VARCHAR, NAME; anything else is read as text or NULL.
                Val::Text(r.try_get(k).ok().flatten())
            }
        })
        .collect()
}
