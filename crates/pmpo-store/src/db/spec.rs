//! Which execution store a workspace uses: SQLite in `.state/pmpo.db` (the
//! default) or a PostgreSQL database shared by a team's machines.
//!
//! The first of these that is set wins: `--store URL` (the CLI puts it in
//! `PMPO_STORE` before anything opens the store), the `PMPO_STORE`
//! environment variable, `url` in the `[store]` table of the workspace's
//! `pmpo.toml`. Each is `sqlite` or a `postgres://` (`postgresql://`) URL.

use std::path::Path;

use super::DbError;

/// The environment variable that selects the store (and that `--store` sets).
pub const STORE_ENV: &str = "PMPO_STORE";

/// Where a workspace's execution store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `.state/pmpo.db` in the workspace.
    Sqlite,
    /// A PostgreSQL database (its URL, which may hold a password: never print it).
    Postgres(String),
}

impl StoreSpec {
    /// The store for messages: `sqlite` or the server without user or password.
    pub fn describe(&self) -> String {
        match self {
            StoreSpec::Sqlite => "sqlite (.state/pmpo.db)".into(),
            StoreSpec::Postgres(url) => crate::pg::conn::server_of(url),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, StoreSpec::Postgres(_))
    }
}

/// Reads one store value; `origin` says where it came from, for the error.
pub fn parse_spec(value: &str, origin: &str) -> Result<StoreSpec, DbError> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("sqlite") {
        return Ok(StoreSpec::Sqlite);
    }
    if crate::pg::is_pg_url(v) {
        return Ok(StoreSpec::Postgres(v.to_string()));
    }
    Err(DbError::Config {
        origin: origin.to_string(),
        detail: format!(
            "`{}` is not a store: use `sqlite` or a postgres:// URL",
            without_credentials(v)
        ),
    })
}

/// A value as it may be printed: a URL's user and password left out, its
/// scheme kept (so the message shows what was given).
fn without_credentials(v: &str) -> String {
    match v.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{host}")
        }
        None => v.rsplit_once('@').map_or(v, |(_, h)| h).to_string(),
    }
}

/// The store of the workspace at `root` (see the module's documentation).
pub fn store_spec(root: &Path) -> Result<StoreSpec, DbError> {
    if let Ok(v) = std::env::var(STORE_ENV)
        && !v.trim().is_empty()
    {
        return parse_spec(&v, STORE_ENV);
    }
    let file = root.join("pmpo.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(_) => return Ok(StoreSpec::Sqlite),
    };
    let origin = format!("{} [store]", file.display());
    let doc: toml::Table = toml::from_str(&text).map_err(|e| DbError::Config {
        origin: file.display().to_string(),
        detail: e.to_string(),
    })?;
    let Some(store) = doc.get("store") else {
        return Ok(StoreSpec::Sqlite);
    };
    let Some(table) = store.as_table() else {
        return Err(DbError::Config {
            origin,
            detail: "`store` must be a table: [store] url = \"postgres://...\"".into(),
        });
    };
    if let Some(k) = table.keys().find(|k| k.as_str() != "url") {
        return Err(DbError::Config {
            origin,
            detail: format!("unknown key `{k}`; the only key is `url`"),
        });
    }
    match table.get("url") {
        None => Ok(StoreSpec::Sqlite),
        Some(toml::Value::String(s)) => parse_spec(s, &origin),
        Some(_) => Err(DbError::Config {
            origin,
            detail: "`url` must be a string".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_sqlite_or_a_postgres_url_and_anything_else_is_an_error_naming_its_origin() {
        assert_eq!(parse_spec("sqlite", "x").unwrap(), StoreSpec::Sqlite);
        assert_eq!(parse_spec(" ", "x").unwrap(), StoreSpec::Sqlite);
        assert!(parse_spec("postgresql://h/db", "x").unwrap().is_postgres());
        let err = parse_spec("mysql://u:secret@h/db", "PMPO_STORE").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("PMPO_STORE")
                && text.contains("mysql://h/db")
                && !text.contains("secret"),
            "{text}"
        );
    }

    #[test]
    fn pmpo_toml_names_the_store_and_its_mistakes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let at = |text: &str| {
            std::fs::write(dir.path().join("pmpo.toml"), text).unwrap();
            store_spec(dir.path())
        };
        // (PMPO_STORE is not set by the unit tests.)
        if std::env::var_os(STORE_ENV).is_some() {
            return;
        }
        assert_eq!(at("").unwrap(), StoreSpec::Sqlite);
        assert_eq!(
            at("[store]\nurl = \"postgres://h/db\"\n").unwrap(),
            StoreSpec::Postgres("postgres://h/db".into())
        );
        assert!(
            at("[store]\nuri = \"x\"\n")
                .unwrap_err()
                .to_string()
                .contains("uri")
        );
        assert!(at("store = 3\n").is_err());
    }
}
