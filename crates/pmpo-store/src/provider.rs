//! State provider resolution: where named-artifact state is kept.
//!
//! Resolution order (the first that exists wins): the file named by
//! `PMPO_PROVIDER_CONFIG`, `.refiner/provider.json`, the user's
//! `~/.config/pmpo/provider.json` (`$XDG_CONFIG_HOME` honoured), then the
//! `postgres` provider when the workspace's execution store is PostgreSQL,
//! then the built-in filesystem provider. A provider that cannot be used (bad
//! config, a type pmpo does not support here, a failing command, a database
//! that cannot be reached) degrades to the filesystem provider; each
//! degradation is logged to `.refiner/provider.log` and reported.
//!
//! The filesystem copy under `.refiner/` is always written; a `custom`
//! provider additionally receives every save (`save_command`, the state JSON
//! on stdin) and is asked first on load (`load_command`, state JSON on
//! stdout); so is a `postgres` provider (the table `pmpo_artifact_state`,
//! see [`pg`]).

pub mod pg;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::artifacts::RefinementState;
use crate::db::{StoreSpec, store_spec};
use crate::{Workspace, now_rfc3339};

pub const PROVIDER_FILE: &str = ".refiner/provider.json";
pub const PROVIDER_LOG: &str = ".refiner/provider.log";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a provider command's stdout may hold (a state is far smaller).
const MAX_OUTPUT: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
struct ProviderConfig {
    provider_type: String,
    #[serde(default)]
    config: serde_json::Map<String, Value>,
}

/// The resolved provider.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "provider_type", rename_all = "lowercase")]
pub enum Kind {
    Filesystem,
    Custom {
        init_command: String,
        save_command: String,
        load_command: String,
    },
    /// pmpo's own extension of the reference schema: states in the table
    /// `pmpo_artifact_state` of a PostgreSQL database (the store's, or
    /// `config.url`).
    Postgres {
        /// The server and database, without user or password.
        server: String,
    },
}

/// A resolved provider with how it was found.
#[derive(Debug, Serialize)]
pub struct Provider {
    pub kind: Kind,
    /// Where the configuration came from (`default` for none).
    pub source: String,
    /// Each place looked at, in order, and what was found there.
    pub looked_at: Vec<String>,
    /// Problems that made pmpo fall back to the filesystem provider.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<String>,
    #[serde(skip)]
    runtime_notes: Mutex<Vec<String>>,
    /// The database of a `postgres` provider.
    #[serde(skip)]
    pg: Option<pg::PgStates>,
}

fn user_config() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("pmpo").join("provider.json"))
}

impl Provider {
    fn new(kind: Kind, source: String, looked_at: Vec<String>, url: Option<String>) -> Provider {
        Provider {
            kind,
            source,
            looked_at,
            degraded: vec![],
            runtime_notes: Mutex::new(vec![]),
            pg: url.as_deref().map(pg::PgStates::new),
        }
    }

    /// Resolves the provider for a workspace.
    pub fn resolve(ws: &Workspace) -> Provider {
        let mut looked_at = Vec::new();
        let candidates: Vec<(String, Option<PathBuf>)> = vec![
            (
                "PMPO_PROVIDER_CONFIG".into(),
                std::env::var_os("PMPO_PROVIDER_CONFIG").map(PathBuf::from),
            ),
            (PROVIDER_FILE.into(), Some(ws.root().join(PROVIDER_FILE))),
            ("user config".into(), user_config()),
        ];
        for (label, path) in candidates {
            let Some(path) = path else {
                looked_at.push(format!("{label}: not set"));
                continue;
            };
            if !path.is_file() {
                looked_at.push(format!("{label}: {} (absent)", path.display()));
                continue;
            }
            looked_at.push(format!("{label}: {} (used)", path.display()));
            let source = format!("{label} ({})", path.display());
            return match Self::parse(&path, ws) {
                Ok((kind, url)) => Provider::new(kind, source, looked_at, url),
                Err(why) => {
                    let mut p = Provider::new(Kind::Filesystem, source, looked_at, None);
                    p.degraded.push(why.clone());
                    p.log(ws, "resolve", &why);
                    p
                }
            };
        }
        match store_spec(ws.root()) {
            Ok(StoreSpec::Postgres(url)) => {
                let server = crate::pg::conn::server_of(&url);
                looked_at.push(format!("execution store: PostgreSQL at {server} (used)"));
                let source = format!("the execution store ({server})");
                return Provider::new(Kind::Postgres { server }, source, looked_at, Some(url));
            }
            Ok(StoreSpec::Sqlite) => {
                looked_at.push("execution store: sqlite (not a database for states)".into())
            }
            Err(e) => looked_at.push(format!("execution store: {e}")),
        }
        Provider::new(Kind::Filesystem, "default".into(), looked_at, None)
    }

    fn parse(path: &Path, ws: &Workspace) -> Result<(Kind, Option<String>), String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read {}: {e}; using the filesystem provider",
                path.display()
            )
        })?;
        let cfg: ProviderConfig = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a valid provider config ({e}); using the filesystem provider",
                path.display()
            )
        })?;
        let get = |k: &str| {
            cfg.config
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        match cfg.provider_type.as_str() {
            "filesystem" => {
                let dir = get("state_directory").unwrap_or_else(|| ".refiner".into());
                let scope = get("scope").unwrap_or_else(|| "project".into());
                if dir.trim_end_matches('/') != ".refiner" || scope != "project" {
                    return Err(format!(
                        "{}: pmpo keeps state in the project's .refiner/ (state_directory `{dir}`, scope `{scope}` are not supported); using .refiner/",
                        path.display()
                    ));
                }
                Ok((Kind::Filesystem, None))
            }
            "custom" => match (
                get("init_command"),
                get("save_command"),
                get("load_command"),
            ) {
                (Some(init_command), Some(save_command), Some(load_command)) => Ok((
                    Kind::Custom {
                        init_command,
                        save_command,
                        load_command,
                    },
                    None,
                )),
                _ => Err(format!(
                    "{}: a custom provider needs config.init_command, save_command and load_command; using the filesystem provider",
                    path.display()
                )),
            },
            "postgres" => {
                let url = match get("url") {
                    Some(u) if crate::pg::is_pg_url(&u) => u,
                    Some(u) => {
                        return Err(format!(
                            "{}: config.url `{}` is not a postgres:// URL; using the filesystem provider",
                            path.display(),
                            crate::pg::conn::server_of(&u)
                        ));
                    }
                    None => match store_spec(ws.root()) {
                        Ok(StoreSpec::Postgres(u)) => u,
                        _ => {
                            return Err(format!(
                                "{}: a postgres provider needs config.url, or a PostgreSQL execution store (PMPO_STORE, --store or [store] in pmpo.toml); using the filesystem provider",
                                path.display()
                            ));
                        }
                    },
                };
                let server = crate::pg::conn::server_of(&url);
                Ok((Kind::Postgres { server }, Some(url)))
            }
            other => Err(format!(
                "{}: provider type `{other}` is not available to pmpo (it needs an agent host); using the filesystem provider",
                path.display()
            )),
        }
    }

    /// The `state_provider` object recorded in state.json.
    pub fn describe(&self) -> Value {
        match &self.kind {
            Kind::Filesystem => {
                serde_json::json!({"provider_type": "filesystem", "config": {"state_directory": ".refiner", "scope": "project"}})
            }
            Kind::Custom { .. } => {
                serde_json::json!({"provider_type": "custom", "config": {"source": self.source}})
            }
            Kind::Postgres { server } => {
                serde_json::json!({"provider_type": "postgres", "config": {"server": server, "table": pg::TABLE}})
            }
        }
    }

    /// The states a `postgres` provider keeps (`None` for another provider).
    pub fn stored_states(&self) -> Option<Result<Vec<pg::StoredState>, String>> {
        self.pg.as_ref().map(pg::PgStates::list)
    }

    /// Degradations that happened while commands ran (for the caller to show).
    pub fn notes(&self) -> Vec<String> {
        self.runtime_notes
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    /// A state a provider returned for `name`, when it is one and is `name`'s.
    fn accept(
        &self,
        ws: &Workspace,
        who: &str,
        name: &str,
        bytes: &[u8],
    ) -> Option<RefinementState> {
        match serde_json::from_slice::<RefinementState>(bytes) {
            Ok(s) if s.artifact_name == name => Some(s),
            Ok(s) => {
                self.log(
                    ws,
                    "load",
                    &format!(
                        "{who} returned the state of `{}` for `{name}`; using .refiner/",
                        s.artifact_name
                    ),
                );
                None
            }
            Err(e) => {
                self.log(
                    ws,
                    "load",
                    &format!("{who} returned invalid state ({e}); using .refiner/"),
                );
                None
            }
        }
    }

    /// The database's state, unless the `.refiner/` copy is newer (a save
    /// the database missed).
    fn load_pg(&self, ws: &Workspace, db: &pg::PgStates, name: &str) -> Option<RefinementState> {
        let (state, updated_at) = match db.load(name) {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => {
                self.log(
                    ws,
                    "load",
                    &format!("postgres provider load failed: {e}; using .refiner/"),
                );
                return None;
            }
        };
        let rel = crate::artifacts::state_path(name);
        let file_updated = ws
            .read_own(&rel)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| {
                v.get("updated_at")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        if file_updated
            .as_deref()
            .is_some_and(|f| f > updated_at.as_str())
        {
            self.log(
                ws,
                "load",
                &format!(
                    "postgres provider: the database's state of `{name}` (updated {updated_at}) is older than {rel}; using .refiner/ (the next save brings the database up to date)"
                ),
            );
            return None;
        }
        self.accept(ws, "postgres provider", name, state.as_bytes())
    }

    fn log(&self, ws: &Workspace, op: &str, message: &str) {
        let line = serde_json::json!({"time": now_rfc3339(), "op": op, "degraded_to": "filesystem", "message": message});
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        let _ = ws.append(PROVIDER_LOG, &bytes);
        if let Ok(mut n) = self.runtime_notes.lock() {
            n.push(message.to_string());
        }
    }

    /// Runs a provider command with `sh -c` through pmpo's one process
    /// runner: its own process group, stopped at the time limit; stdin fed
    /// from its own thread; stdout bounded by [`MAX_OUTPUT`].
    fn run(
        &self,
        ws: &Workspace,
        command: &str,
        name: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>, String> {
        use pmpo_process::Termination;
        let spec = pmpo_process::ProcessSpec {
            cwd: Some(ws.root().to_path_buf()),
            env: vec![
                ("PMPO_ARTIFACT_NAME".to_string(), name.to_string()),
                (
                    "PMPO_WORKSPACE".to_string(),
                    ws.root().to_string_lossy().into_owned(),
                ),
            ],
            stdin: stdin.map(<[u8]>::to_vec),
            capture_limit: MAX_OUTPUT,
            timeout: Some(COMMAND_TIMEOUT),
            ..pmpo_process::ProcessSpec::new(["sh", "-c", command])
        };
        let r = pmpo_process::run_blocking(&spec, None)
            .map_err(|e| format!("cannot start `{command}`: {e}"))?;
        let status = match r.termination {
            Termination::Exited(0) if r.stdout.truncated() => {
                return Err(format!(
                    "`{command}` printed more than {MAX_OUTPUT} bytes; state that large is not read from a provider"
                ));
            }
            Termination::Exited(0) => return Ok(r.stdout.head),
            Termination::TimedOut | Termination::Cancelled => {
                return Err(format!("`{command}` took longer than {COMMAND_TIMEOUT:?}"));
            }
            Termination::Exited(code) => format!("exit status: {code}"),
            Termination::Signaled(sig) => format!("signal: {sig}"),
        };
        Err(format!(
            "`{command}` failed ({status}): {}",
            r.stderr.text().trim()
        ))
    }

    pub fn init(&self, ws: &Workspace, name: &str) {
        if let Some(db) = &self.pg
            && let Err(e) = db.init()
        {
            self.log(
                ws,
                "init",
                &format!("postgres provider: {e}; state stays in .refiner/"),
            );
        }
        if let Kind::Custom { init_command, .. } = &self.kind
            && let Err(e) = self.run(ws, init_command, name, None)
        {
            self.log(
                ws,
                "init",
                &format!("custom provider init failed: {e}; state stays in .refiner/"),
            );
        }
    }

    pub fn save(&self, ws: &Workspace, name: &str, state: &RefinementState) {
        if let Some(db) = &self.pg
            && let Err(e) = db.save(name, state)
        {
            self.log(
                ws,
                "save",
                &format!("postgres provider save failed: {e}; state stays in .refiner/"),
            );
        }
        if let Kind::Custom { save_command, .. } = &self.kind {
            let bytes = serde_json::to_vec(state).unwrap_or_default();
            if let Err(e) = self.run(ws, save_command, name, Some(&bytes)) {
                self.log(
                    ws,
                    "save",
                    &format!("custom provider save failed: {e}; state stays in .refiner/"),
                );
            }
        }
    }

    /// The state from a custom or postgres provider, when it has one; `None`
    /// means "use the filesystem copy".
    pub fn load(&self, ws: &Workspace, name: &str) -> Option<RefinementState> {
        if let Some(db) = &self.pg {
            return self.load_pg(ws, db, name);
        }
        let Kind::Custom { load_command, .. } = &self.kind else {
            return None;
        };
        match self.run(ws, load_command, name, None) {
            Ok(out) if out.iter().all(u8::is_ascii_whitespace) => None,
            Ok(out) => self.accept(ws, "custom provider", name, &out),
            Err(e) => {
                self.log(
                    ws,
                    "load",
                    &format!("custom provider load failed: {e}; using .refiner/"),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Provider {
        Provider {
            kind: Kind::Filesystem,
            source: "test".into(),
            looked_at: Vec::new(),
            degraded: Vec::new(),
            runtime_notes: Mutex::new(Vec::new()),
            pg: None,
        }
    }

    #[test]
    fn a_command_leaving_a_process_behind_does_not_hang_the_provider() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let started = std::time::Instant::now();
        // The background sleep holds stdout open; its group is stopped.
        let out = provider()
            .run(&ws, "sleep 100 & echo $! > bg.pid; echo '{}'", "a", None)
            .unwrap();
        assert_eq!(out, b"{}\n");
        assert!(started.elapsed() < Duration::from_secs(5));
        let bg: u32 = std::fs::read_to_string(dir.path().join("bg.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            !pmpo_process::process_alive(bg),
            "the background sleep survived"
        );
    }

    #[test]
    fn a_large_state_on_stdin_does_not_deadlock_a_chatty_command() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let state = vec![b'x'; 1_000_000];
        // It writes more than a pipe holds to stderr before reading stdin.
        let out = provider()
            .run(
                &ws,
                "head -c 1000000 /dev/zero >&2; wc -c",
                "a",
                Some(&state),
            )
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out).trim(), "1000000");
    }

    #[test]
    fn a_failing_command_says_how_it_failed() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let e = provider()
            .run(&ws, "echo boom >&2; exit 3", "a", None)
            .unwrap_err();
        assert_eq!(e, "`echo boom >&2; exit 3` failed (exit status: 3): boom");
    }
}
