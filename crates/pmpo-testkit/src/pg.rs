//! The tests' PostgreSQL server: `scripts/test.sh` starts a throwaway
//! cluster (`scripts/pg-cluster.sh`) and sets `PMPO_TEST_PG` to its URL and
//! Each test takes a database of its own
//! ([`fresh_db`]), so tests run in parallel without seeing each other's rows.
//! Without `PMPO_TEST_PG` the PostgreSQL tests skip, with a line saying so,
//! unless `PMPO_REQUIRE_PG` is set (CI), where that is a failure.

use std::sync::atomic::{AtomicU32, Ordering};

/// The URL of a new, empty database, or `None` (the test skips) when no
/// server is configured. Panics when one is required but missing.
pub fn fresh_db(tag: &str) -> Option<String> {
    let Some(base) = std::env::var("PMPO_TEST_PG").ok().filter(|s| !s.is_empty()) else {
        assert!(
            std::env::var_os("PMPO_REQUIRE_PG").is_none(),
            "PMPO_REQUIRE_PG is set but PMPO_TEST_PG is not: start a cluster with scripts/pg-cluster.sh"
        );
        eprintln!("skipping `{tag}`: PMPO_TEST_PG is not set (scripts/test.sh sets it)");
        return None;
    };
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let clean: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "t_{clean}_{}_{}_{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    );
    let mut c = postgres::Client::connect(&base, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot reach the test server {base}: {e}"));
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    Some(with_database(&base, &name))
}

/// `base` with its database replaced by `name`.
pub fn with_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let cut = head
        .rfind('/')
        .filter(|&i| i > head.find("//").map_or(0, |j| j + 1));
    let root = cut.map_or(head, |i| &head[..i]);
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// A PostgreSQL cluster of one test's own (for tests that restart or stop
/// the server, which would cut every other test's connections on the shared
/// one): started in a temporary directory, stopped when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    /// The URL of its `postgres` database, as the superuser `pmpo`.
    pub url: String,
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-cluster.sh");

impl Cluster {
    /// A new cluster, or `None` (skip) where the tests have no PostgreSQL
    /// (as [`fresh_db`]).
    pub fn start(tag: &str) -> Option<Cluster> {
        fresh_db(tag)?;
        let dir = tempfile::Builder::new()
            .prefix("pmpo-pg-")
            .tempdir_in(scratch())
            .unwrap();
        let out = std::process::Command::new("bash")
            .args([SCRIPT, "start"])
            .arg(dir.path())
            .output()
            .expect("run pg-cluster.sh");
        assert!(
            out.status.success(),
            "pg-cluster.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(Cluster { dir, url })
    }

    fn ctl(&self, what: &str) {
        let st = std::process::Command::new("bash")
            .args([SCRIPT, what])
            .arg(self.dir.path())
            .status()
            .expect("run pg-cluster.sh");
        assert!(st.success(), "pg-cluster.sh {what} failed");
    }

    /// Restarts the server at once (`pg_ctl restart -m immediate`): every
    /// connection is cut, as when a database host reboots.
    pub fn restart(&self) {
        self.ctl("restart");
    }

    /// Stops the server (immediate); [`Cluster::resume`] starts it again.
    pub fn stop(&self) {
        self.ctl("stop");
    }

    /// Starts a stopped server again on the same port.
    pub fn resume(&self) {
        self.ctl("resume");
    }

    /// A new database on this cluster.
    pub fn fresh_db(&self, name: &str) -> String {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        with_database(&self.url, name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .args([SCRIPT, "stop"])
            .arg(self.dir.path())
            .status();
    }
}

/// Where private clusters live: a directory the cluster's unprivileged user
/// can reach (the system's temporary directory).
fn scratch() -> std::path::PathBuf {
    std::env::temp_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_swapped_in_the_url() {
        assert_eq!(
            with_database("postgres://pmpo@127.0.0.1:5/postgres", "t1"),
            "postgres://pmpo@127.0.0.1:5/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
    }
}
