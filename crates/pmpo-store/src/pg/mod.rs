//! The PostgreSQL back end: the execution store of a team's shared workspace
//! (selected by `PMPO_STORE`, `--store` or `[store]` in `pmpo.toml`), the job
//! queue of `pmpo worker`, and the advisory locks that replace the lock files.
//! See docs/scale-out.md.

pub mod conn;
pub mod locks;
pub mod queue;
mod rows;
pub mod schema;
pub mod store;

pub use conn::{PgConn, PgError, Row, Val};
pub use store::PgStore;

/// Whether a store URL names PostgreSQL.
pub fn is_pg_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
