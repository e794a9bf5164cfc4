//! State provider resolution: where named-artifact state is kept.
//!
//! Resolution order (the first that exists wins): the file named by
//! `PMPO_PROVIDER_CONFIG`, `.refiner/provider.json`, the user's
//! `~/.config/pmpo/provider.json` (`$XDG_CONFIG_HOME` honoured), then the
//! built-in filesystem provider. A provider that cannot be used (bad config,
//! a type pmpo does not support here, a failing command) degrades to the
//! filesystem provider; each degradation is logged to `.refiner/provider.log`
//! and reported.
//!
//! The filesystem copy under `.refiner/` is always written; a `custom`
//! provider additionally receives every save (`save_command`, the state JSON
//! on stdin) and is asked first on load (`load_command`, state JSON on stdout).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::artifacts::RefinementState;
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
}

fn user_config() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("pmpo").join("provider.json"))
}

impl Provider {
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
            return match Self::parse(&path) {
                Ok(kind) => Provider {
                    kind,
                    source,
                    looked_at,
                    degraded: vec![],
                    runtime_notes: Mutex::new(vec![]),
                },
                Err(why) => {
                    let p = Provider {
                        kind: Kind::Filesystem,
                        source,
                        looked_at,
                        degraded: vec![why.clone()],
                        runtime_notes: Mutex::new(vec![]),
                    };
                    p.log(ws, "resolve", &why);
                    p
                }
            };
        }
        Provider {
            kind: Kind::Filesystem,
            source: "default".into(),
            looked_at,
            degraded: vec![],
            runtime_notes: Mutex::new(vec![]),
        }
    }

    fn parse(path: &Path) -> Result<Kind, String> {
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
        match cfg.provider_type.as_str() {
            "filesystem" => {
                let dir = cfg
                    .config
                    .get("state_directory")
                    .and_then(Value::as_str)
                    .unwrap_or(".refiner");
                let scope = cfg
                    .config
                    .get("scope")
                    .and_then(Value::as_str)
                    .unwrap_or("project");
                if dir.trim_end_matches('/') != ".refiner" || scope != "project" {
                    return Err(format!(
                        "{}: pmpo keeps state in the project's .refiner/ (state_directory `{dir}`, scope `{scope}` are not supported); using .refiner/",
                        path.display()
                    ));
                }
                Ok(Kind::Filesystem)
            }
            "custom" => {
                let get = |k: &str| {
                    cfg.config
                        .get(k)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                match (
                    get("init_command"),
                    get("save_command"),
                    get("load_command"),
                ) {
                    (Some(init_command), Some(save_command), Some(load_command)) => {
                        Ok(Kind::Custom {
                            init_command,
                            save_command,
                            load_command,
                        })
                    }
                    _ => Err(format!(
                        "{}: a custom provider needs config.init_command, save_command and load_command; using the filesystem provider",
                        path.display()
                    )),
                }
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
        }
    }

    /// Degradations that happened while commands ran (for the caller to show).
    pub fn notes(&self) -> Vec<String> {
        self.runtime_notes
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
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

    /// The state from a custom provider, when it has one; `None` means "use the filesystem copy".
    pub fn load(&self, ws: &Workspace, name: &str) -> Option<RefinementState> {
        let Kind::Custom { load_command, .. } = &self.kind else {
            return None;
        };
        match self.run(ws, load_command, name, None) {
            Ok(out) if out.iter().all(u8::is_ascii_whitespace) => None,
            Ok(out) => match serde_json::from_slice::<RefinementState>(&out) {
                Ok(s) if s.artifact_name == name => Some(s),
                Ok(s) => {
                    self.log(ws, "load", &format!("custom provider returned the state of `{}` for `{name}`; using .refiner/", s.artifact_name));
                    None
                }
                Err(e) => {
                    self.log(
                        ws,
                        "load",
                        &format!("custom provider returned invalid state ({e}); using .refiner/"),
                    );
                    None
                }
            },
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
