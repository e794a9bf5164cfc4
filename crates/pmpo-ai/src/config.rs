//! Model configuration: the `[ai]` section of the workspace's `pmpo.toml`,
//! the ecosystem's environment variables, and command-line overrides.
//!
//! ```toml
//! [ai]
//! default_endpoint = "local"
//!
//! [ai.endpoints.local]
//! kind = "openai"                    # openai | anthropic | command | replay
//! base_url = "http://127.0.0.1:11434/v1"
//! model = "qwen2.5-coder:7b"
//!
//! [ai.phases.execute]
//! endpoint = "local"
//! fallback = "claude"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::host::HOST;
use crate::{Phase, Secret};

/// The config file pmpo reads in the workspace.
pub const CONFIG_FILE: &str = "pmpo.toml";
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// The configuration could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {message}")]
    Read { path: PathBuf, message: String },
    #[error("`{path}`: {message}")]
    Invalid { path: String, message: String },
}

/// `via = "host"` in a route means `endpoint = "host"`; says whether the
/// route goes to the host.
fn host_route(route: &mut Route) -> Result<bool, String> {
    if let Some(via) = route.via.take() {
        check_via(&via)?;
        if route.endpoint.as_deref().is_some_and(|e| e != HOST) {
            return Err(format!(
                "`via = \"host\"` and `endpoint = \"{}\"` disagree; keep one",
                route.endpoint.as_deref().unwrap_or_default()
            ));
        }
        route.endpoint = Some(HOST.to_string());
    }
    Ok(route.endpoint.as_deref() == Some(HOST))
}

/// How an endpoint is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, llama.cpp, LM Studio, ...).
    Openai,
    Anthropic,
    /// A local program: the prompt on its stdin, the answer on its stdout.
    Command,
    /// Answers from a recorded cassette.
    Replay,
    /// The agent host that drives pmpo (`via = "host"`): MCP sampling or a
    /// pending question (see [`crate::host`]).
    Host,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Openai => "openai",
            EndpointKind::Anthropic => "anthropic",
            EndpointKind::Command => "command",
            EndpointKind::Replay => "replay",
            EndpointKind::Host => "host",
        }
    }
}

/// One endpoint, resolved (environment applied).
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub name: String,
    pub kind: EndpointKind,
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// Where the key came from (an environment variable's name), for `pmpo models`.
    pub api_key_source: Option<String>,
    pub api_key: Option<Secret>,
    pub health_probe: Option<String>,
    pub command: Vec<String>,
    pub cassette: Option<PathBuf>,
    pub max_tokens: Option<u32>,
}

/// Where a phase's (or a stage's) calls go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default, alias = "prefer_endpoint")]
    pub endpoint: Option<String>,
    #[serde(default, alias = "prefer_model")]
    pub model: Option<String>,
    /// Used when the preferred endpoint fails its health probe (or is down).
    #[serde(default)]
    pub fallback: Option<String>,
    /// The reference layout's capability class; informational.
    #[serde(default, skip_serializing)]
    pub tier: Option<String>,
    /// `via = "host"`: the agent host answers (the same as `endpoint = "host"`).
    #[serde(default, skip_serializing)]
    pub via: Option<String>,
}

/// The resolved model configuration.
#[derive(Debug, Clone)]
pub struct AiConfig {
    pub endpoints: BTreeMap<String, EndpointConfig>,
    pub default_endpoint: Option<String>,
    pub phases: BTreeMap<Phase, Route>,
    pub stages: BTreeMap<String, Route>,
    /// Limit for one HTTP exchange (the stage's own limit applies too).
    pub request_timeout: Duration,
    /// Retries after a 429 or 5xx answer.
    pub max_retries: u32,
    /// How long a health probe's result is trusted.
    pub probe_ttl: Duration,
    /// `--model`: the model for every call of this run.
    pub model_override: Option<String>,
    /// `--record FILE`: keep every exchange in this cassette.
    pub record: Option<PathBuf>,
    /// Where the configuration came from, for `pmpo models`.
    pub sources: Vec<String>,
}

impl Default for AiConfig {
    fn default() -> Self {
        AiConfig {
            endpoints: BTreeMap::new(),
            default_endpoint: None,
            phases: BTreeMap::new(),
            stages: BTreeMap::new(),
            request_timeout: Duration::from_secs(300),
            max_retries: 3,
            probe_ttl: Duration::from_secs(30),
            model_override: None,
            record: None,
            sources: Vec::new(),
        }
    }
}

/// What the command line adds.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub model: Option<String>,
    pub record: Option<PathBuf>,
    /// Answer every call from this cassette; no network.
    pub replay: Option<PathBuf>,
    /// `--via host`: the agent host answers every phase and `ai` stage.
    pub via: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEndpoint {
    #[serde(default)]
    kind: Option<EndpointKind>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    model: Option<String>,
    /// The name of the environment variable holding the key.
    #[serde(default)]
    api_key_env: Option<String>,
    /// The reference layout's auth mode: `openai_api_key` reads OPENAI_API_KEY.
    #[serde(default)]
    auth_mode: Option<String>,
    #[serde(default)]
    fallback_auth: Option<String>,
    #[serde(default)]
    health_probe: Option<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    cassette: Option<String>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    via: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileAi {
    #[serde(default)]
    default_endpoint: Option<String>,
    #[serde(default)]
    endpoints: BTreeMap<String, FileEndpoint>,
    #[serde(default)]
    phases: BTreeMap<String, Route>,
    #[serde(default)]
    stages: BTreeMap<String, Route>,
    #[serde(default)]
    timeout: Option<toml::Value>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    probe_ttl: Option<toml::Value>,
    /// `via = "host"`: the agent host answers every phase and `ai` stage.
    #[serde(default)]
    via: Option<String>,
}

fn duration(value: &toml::Value, key: &str) -> Result<Duration, String> {
    match value {
        toml::Value::Integer(n) if *n > 0 => Ok(Duration::from_secs(*n as u64)),
        toml::Value::Float(f) if *f > 0.0 && f.is_finite() => Ok(Duration::from_secs_f64(*f)),
        toml::Value::String(s) => pmpo_plan::model::parse_duration(s),
        _ => Err(format!(
            "`{key}` must be a duration such as \"30s\" or a number of seconds"
        )),
    }
}

/// `via` names who answers; only the agent host can.
fn check_via(via: &str) -> Result<(), String> {
    if via == HOST {
        Ok(())
    } else {
        Err(format!(
            "`via = \"{via}\"` is not known; `via = \"host\"` routes to the agent host that drives pmpo (MCP or `pmpo answer`), and any other model is an endpoint"
        ))
    }
}

impl EndpointConfig {
    /// The agent host as an endpoint.
    pub fn host(name: &str) -> EndpointConfig {
        EndpointConfig::bare(name, EndpointKind::Host)
    }

    /// An endpoint of this kind with nothing else set.
    pub fn bare(name: &str, kind: EndpointKind) -> EndpointConfig {
        EndpointConfig {
            name: name.to_string(),
            kind,
            base_url: None,
            model: None,
            api_key_source: None,
            api_key: None,
            health_probe: None,
            command: Vec::new(),
            cassette: None,
            max_tokens: None,
        }
    }
}

/// One `[ai.endpoints.NAME]` table made into an endpoint; `nonempty` reads
/// an environment variable that is set and not blank. The error says what
/// is wrong in the table.
fn endpoint_from_file(
    name: &str,
    ep: FileEndpoint,
    nonempty: &dyn Fn(&str) -> Option<String>,
) -> Result<EndpointConfig, String> {
    if let Some(via) = &ep.via {
        check_via(via)?;
        return Ok(EndpointConfig::host(name));
    }
    if name == HOST && ep.kind != Some(EndpointKind::Host) {
        return Err(format!(
            "the name `{HOST}` is reserved for the agent host (via = \"host\"); give this endpoint another name"
        ));
    }
    let kind = match ep.kind {
        Some(EndpointKind::Host) => return Ok(EndpointConfig::host(name)),
        Some(k) => k,
        None if ep.command.is_some() => EndpointKind::Command,
        None if ep.cassette.is_some() => EndpointKind::Replay,
        None if ep.base_url.is_some() => EndpointKind::Openai,
        None => {
            return Err(
                "`kind` is missing: write kind = \"openai\", \"anthropic\", \"command\" or \"replay\"".into(),
            );
        }
    };
    let key_var = match (&ep.api_key_env, &ep.auth_mode, kind) {
        (Some(v), _, _) => Some(v.clone()),
        (None, Some(mode), _) if mode == "openai_api_key" => Some("OPENAI_API_KEY".to_string()),
        (None, Some(mode), _) if mode == "chatgpt_oauth" => {
            if ep.fallback_auth.as_deref() == Some("openai_api_key") {
                Some("OPENAI_API_KEY".to_string())
            } else {
                None
            }
        }
        (None, Some(mode), _) => {
            return Err(format!(
                "unknown auth_mode `{mode}`; use api_key_env = \"VARIABLE\""
            ));
        }
        (None, None, EndpointKind::Openai) => Some("OPENAI_API_KEY".to_string()),
        (None, None, EndpointKind::Anthropic) => Some("ANTHROPIC_API_KEY".to_string()),
        (None, None, _) => None,
    };
    let base_url = match kind {
        EndpointKind::Openai => Some(
            ep.base_url
                .or_else(|| nonempty("OPENAI_BASE_URL"))
                .unwrap_or_else(|| DEFAULT_OPENAI_BASE_URL.to_string()),
        ),
        EndpointKind::Anthropic => Some(
            ep.base_url
                .or_else(|| nonempty("ANTHROPIC_BASE_URL"))
                .unwrap_or_else(|| DEFAULT_ANTHROPIC_BASE_URL.to_string()),
        ),
        _ => ep.base_url,
    };
    if let Some(url) = &base_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(format!(
            "base_url `{url}` must start with http:// or https://"
        ));
    }
    let command = ep.command.unwrap_or_default();
    if kind == EndpointKind::Command && command.is_empty() {
        return Err("a command endpoint needs `command = [\"program\", \"arg\", ...]`".into());
    }
    if kind == EndpointKind::Replay && ep.cassette.is_none() {
        return Err("a replay endpoint needs `cassette = \"file.jsonl\"`".into());
    }
    let api_key = key_var.as_deref().and_then(nonempty).map(Secret::new);
    if let Some(var) = &key_var {
        // Kept from every process pmpo starts, and redacted from its logs.
        pmpo_store::secrets::register_key(var, api_key.as_ref().map(Secret::expose));
    }
    Ok(EndpointConfig {
        name: name.to_string(),
        kind,
        base_url: base_url.map(|u| u.trim_end_matches('/').to_string()),
        model: ep.model,
        api_key_source: key_var,
        api_key,
        health_probe: ep.health_probe,
        command,
        cassette: ep.cassette.map(PathBuf::from),
        max_tokens: ep.max_tokens,
    })
}

/// The endpoint the ecosystem's variables define for `kind` (`openai` from
/// OPENAI_API_KEY / OPENAI_BASE_URL / OPENAI_MODEL, `anthropic` from the
/// ANTHROPIC_ ones), with the source it is listed under; none when neither
/// the key nor the base URL is set.
fn endpoint_from_env(
    kind: EndpointKind,
    nonempty: &dyn Fn(&str) -> Option<String>,
) -> Option<(EndpointConfig, String)> {
    let (name, prefix, default_url) = match kind {
        EndpointKind::Openai => ("openai", "OPENAI", DEFAULT_OPENAI_BASE_URL),
        EndpointKind::Anthropic => ("anthropic", "ANTHROPIC", DEFAULT_ANTHROPIC_BASE_URL),
        _ => return None,
    };
    let (key_var, url_var) = (format!("{prefix}_API_KEY"), format!("{prefix}_BASE_URL"));
    let api_key = nonempty(&key_var);
    let url = nonempty(&url_var);
    if api_key.is_none() && url.is_none() {
        return None;
    }
    let endpoint = EndpointConfig {
        name: name.into(),
        kind,
        base_url: Some(
            url.as_deref()
                .unwrap_or(default_url)
                .trim_end_matches('/')
                .to_string(),
        ),
        model: nonempty(&format!("{prefix}_MODEL")),
        api_key_source: Some(key_var.clone()),
        api_key: api_key.map(Secret::new),
        health_probe: None,
        command: Vec::new(),
        cassette: None,
        max_tokens: None,
    };
    Some((endpoint, format!("environment ({key_var} / {url_var})")))
}

impl AiConfig {
    /// Reads `pmpo.toml` in `dir` (if any), applies the environment (read
    /// through `env`) and the overrides.
    pub fn load(
        dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<AiConfig, ConfigError> {
        let path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ConfigError::Read {
                    path,
                    message: e.to_string(),
                });
            }
        };
        let mut cfg = AiConfig::from_toml(text.as_deref().unwrap_or(""), CONFIG_FILE, env)?;
        if text.is_some() {
            cfg.sources.insert(0, path.display().to_string());
        }
        cfg.apply(overrides);
        Ok(cfg)
    }

    /// Parses the `[ai]` section of a config text (other sections are left to
    /// their owners) and fills in what the environment provides.
    pub fn from_toml(
        text: &str,
        display: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AiConfig, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: display.to_string(),
            message,
        };
        let doc: toml::Table = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let file: FileAi = match doc.get("ai") {
            None => FileAi::default(),
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| invalid(format!("[ai]: {e}")))?,
        };
        let mut cfg = AiConfig {
            default_endpoint: file.default_endpoint.clone(),
            ..Default::default()
        };
        if let Some(t) = &file.timeout {
            cfg.request_timeout = duration(t, "ai.timeout").map_err(invalid)?;
        }
        if let Some(t) = &file.probe_ttl {
            cfg.probe_ttl = duration(t, "ai.probe_ttl").map_err(invalid)?;
        }
        if let Some(n) = file.max_retries {
            cfg.max_retries = n.min(10);
        }
        let nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());

        for (name, ep) in file.endpoints {
            let endpoint = endpoint_from_file(&name, ep, &nonempty)
                .map_err(|m| invalid(format!("[ai.endpoints.{name}]: {m}")))?;
            cfg.endpoints.insert(name, endpoint);
        }
        if !cfg.endpoints.is_empty() {
            cfg.sources.push(format!("{display} [ai]"));
        }

        // No endpoint in the file: the ecosystem's variables define one each.
        if cfg.endpoints.is_empty() {
            for kind in [EndpointKind::Openai, EndpointKind::Anthropic] {
                if let Some((endpoint, source)) = endpoint_from_env(kind, &nonempty) {
                    cfg.endpoints.insert(endpoint.name.clone(), endpoint);
                    cfg.sources.push(source);
                }
            }
            // Kept from every process pmpo starts, and redacted from what it writes.
            for ep in cfg.endpoints.values() {
                if let Some(var) = &ep.api_key_source {
                    pmpo_store::secrets::register_key(var, ep.api_key.as_ref().map(Secret::expose));
                }
            }
        }

        let mut wants_host = false;
        for (name, mut route) in file.phases {
            let phase = Phase::parse(&name).ok_or_else(|| {
                invalid(format!(
                    "[ai.phases.{name}]: unknown phase; phases are specify, plan, execute, reflect, persist"
                ))
            })?;
            wants_host |=
                host_route(&mut route).map_err(|m| invalid(format!("[ai.phases.{name}]: {m}")))?;
            cfg.phases.insert(phase, route);
        }
        cfg.stages = file.stages;
        for (name, route) in cfg.stages.iter_mut() {
            wants_host |=
                host_route(route).map_err(|m| invalid(format!("[ai.stages.{name}]: {m}")))?;
        }

        if let Some(via) = &file.via {
            check_via(via).map_err(|m| invalid(format!("[ai]: {m}")))?;
            cfg.default_endpoint = Some(HOST.to_string());
            wants_host = true;
        }
        if cfg.default_endpoint.is_none() && cfg.endpoints.len() == 1 {
            cfg.default_endpoint = cfg.endpoints.keys().next().cloned();
        }
        if cfg.default_endpoint.is_none() {
            // From the environment: OpenAI first, as documented.
            for name in ["openai", "anthropic"] {
                if cfg.endpoints.contains_key(name) {
                    cfg.default_endpoint = Some(name.into());
                    break;
                }
            }
        }
        // Added last: a phase routed to the host does not make the host
        // every other phase's default.
        if wants_host || cfg.default_endpoint.as_deref() == Some(HOST) {
            cfg.endpoints
                .entry(HOST.to_string())
                .or_insert_with(|| EndpointConfig::host(HOST));
        }
        cfg.validate_names().map_err(invalid)?;
        Ok(cfg)
    }

    fn validate_names(&self) -> Result<(), String> {
        let known: Vec<&str> = self.endpoints.keys().map(String::as_str).collect();
        let check = |what: String, name: &Option<String>| match name {
            Some(n) if !self.endpoints.contains_key(n) => Err(format!(
                "{what} names endpoint `{n}`, which is not defined (defined: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )),
            _ => Ok(()),
        };
        check("default_endpoint".into(), &self.default_endpoint)?;
        for (p, r) in &self.phases {
            check(format!("[ai.phases.{p}] endpoint"), &r.endpoint)?;
            check(format!("[ai.phases.{p}] fallback"), &r.fallback)?;
        }
        for (s, r) in &self.stages {
            check(format!("[ai.stages.{s}] endpoint"), &r.endpoint)?;
            check(format!("[ai.stages.{s}] fallback"), &r.fallback)?;
        }
        Ok(())
    }

    /// Applies command-line overrides. `--replay` replaces every endpoint with
    /// the cassette, so a replayed run contacts no network.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(m) = &o.model {
            self.model_override = Some(m.clone());
        }
        if let Some(r) = &o.record {
            self.record = Some(r.clone());
        }
        if o.via.as_deref() == Some(HOST) {
            self.endpoints
                .entry(HOST.to_string())
                .or_insert_with(|| EndpointConfig::host(HOST));
            self.default_endpoint = Some(HOST.into());
            self.phases.clear();
            self.stages.clear();
            self.sources.push("--via host".into());
        }
        if let Some(c) = &o.replay {
            self.endpoints.clear();
            self.endpoints.insert(
                "replay".into(),
                EndpointConfig {
                    cassette: Some(c.clone()),
                    ..EndpointConfig::bare("replay", EndpointKind::Replay)
                },
            );
            self.default_endpoint = Some("replay".into());
            self.phases.clear();
            self.stages.clear();
            self.sources.push(format!("--replay {}", c.display()));
        }
    }

    /// Whether any endpoint can be called.
    pub fn is_configured(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// The route for a call: the stage's own (from the plan or `[ai.stages]`),
    /// then the phase's, then the default endpoint. `--model` beats every model.
    pub fn route(&self, phase: Phase, stage: &str, from_plan: &Route) -> Route {
        let mut r = Route::default();
        for layer in [
            self.phases.get(&phase),
            self.stages.get(stage),
            Some(from_plan),
        ]
        .into_iter()
        .flatten()
        {
            if layer.endpoint.is_some() {
                r.endpoint = layer.endpoint.clone();
                // A model named with another endpoint does not carry over.
                r.model = None;
                r.fallback = None;
            }
            if layer.model.is_some() {
                r.model = layer.model.clone();
            }
            if layer.fallback.is_some() {
                r.fallback = layer.fallback.clone();
            }
        }
        if r.endpoint.is_none() {
            r.endpoint = self.default_endpoint.clone();
        }
        if self.model_override.is_some() {
            r.model = self.model_override.clone();
        }
        r
    }

    /// How to configure an endpoint (for errors when there is none).
    pub fn how_to_configure() -> &'static str {
        "set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL (a local OpenAI-compatible server such as Ollama: http://127.0.0.1:11434/v1) and choose a model with --model or OPENAI_MODEL; or ANTHROPIC_API_KEY; or add [ai.endpoints.NAME] to pmpo.toml in the workspace; or replay a recording with --replay FILE (see docs/configuration.md)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn environment_defines_endpoints_when_the_file_has_none() {
        let env = env_of(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/"),
            ("OPENAI_API_KEY", "sk-test"),
        ]);
        let cfg = AiConfig::from_toml("", "pmpo.toml", &env).unwrap();
        let ep = &cfg.endpoints["openai"];
        assert_eq!(ep.base_url.as_deref(), Some("http://127.0.0.1:9/v1"));
        assert_eq!(ep.api_key.as_ref().map(Secret::expose), Some("sk-test"));
        assert_eq!(
            format!("{:?}", ep),
            format!("{:?}", ep).replace("sk-test", "")
        );
        assert_eq!(cfg.default_endpoint.as_deref(), Some("openai"));
        assert!(
            !AiConfig::from_toml("", "x", &env_of(&[]))
                .unwrap()
                .is_configured()
        );
    }

    #[test]
    fn phases_stages_and_overrides_route() {
        let text = r#"
[other]
x = 1
[ai]
default_endpoint = "a"
[ai.endpoints.a]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
model = "m-a"
[ai.endpoints.b]
kind = "anthropic"
model = "m-b"
[ai.phases.refiner-reflect]
prefer_endpoint = "b"
prefer_model = "big"
tier = "frontier"
fallback = "a"
[ai.stages.draw]
model = "drawer"
"#;
        let mut cfg = AiConfig::from_toml(text, "pmpo.toml", &env_of(&[])).unwrap();
        let r = cfg.route(Phase::Reflect, "x", &Route::default());
        assert_eq!(
            (
                r.endpoint.as_deref(),
                r.model.as_deref(),
                r.fallback.as_deref()
            ),
            (Some("b"), Some("big"), Some("a"))
        );
        let r = cfg.route(Phase::Execute, "draw", &Route::default());
        assert_eq!(
            (r.endpoint.as_deref(), r.model.as_deref()),
            (Some("a"), Some("drawer"))
        );
        cfg.apply(&Overrides {
            model: Some("cli".into()),
            ..Default::default()
        });
        assert_eq!(
            cfg.route(Phase::Execute, "draw", &Route::default())
                .model
                .as_deref(),
            Some("cli")
        );
        let bad = "[ai.phases.execute]\nendpoint = \"nope\"\n";
        let err = AiConfig::from_toml(bad, "pmpo.toml", &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
    }

    #[test]
    fn via_host_routes_a_phase_or_everything_to_the_host() {
        let env = env_of(&[("OPENAI_API_KEY", "sk-test")]);
        // One phase: the others keep the environment's endpoint.
        let cfg = AiConfig::from_toml("[ai.phases.reflect]\nvia = \"host\"\n", "pmpo.toml", &env)
            .unwrap();
        assert_eq!(cfg.endpoints[HOST].kind, EndpointKind::Host);
        let r = cfg.route(Phase::Reflect, "reflect-1", &Route::default());
        assert_eq!(r.endpoint.as_deref(), Some(HOST));
        let r = cfg.route(Phase::Plan, "plan-1", &Route::default());
        assert_eq!(r.endpoint.as_deref(), Some("openai"));
        // A phase routed to the host alone does not make it the default.
        let cfg = AiConfig::from_toml(
            "[ai.phases.plan]\nvia = \"host\"\n",
            "pmpo.toml",
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(cfg.default_endpoint, None);
        // [ai] via = "host": every phase.
        let cfg = AiConfig::from_toml("[ai]\nvia = \"host\"\n", "pmpo.toml", &env).unwrap();
        assert_eq!(cfg.default_endpoint.as_deref(), Some(HOST));
        // The reference layout's endpoint with via = "host" is the host.
        let cfg = AiConfig::from_toml(
            "[ai.endpoints.claude]\nvia = \"host\"\n[ai.phases.plan]\nendpoint = \"claude\"\n",
            "pmpo.toml",
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(cfg.endpoints["claude"].kind, EndpointKind::Host);
        // --via host beats the file's routes.
        let mut cfg = AiConfig::from_toml(
            "[ai.phases.plan]\nendpoint = \"openai\"\n",
            "pmpo.toml",
            &env,
        )
        .unwrap();
        cfg.apply(&Overrides {
            via: Some(HOST.into()),
            ..Default::default()
        });
        let r = cfg.route(Phase::Plan, "plan-1", &Route::default());
        assert_eq!(r.endpoint.as_deref(), Some(HOST));
    }

    #[test]
    fn via_and_the_reserved_name_are_checked() {
        let bad = |text: &str| {
            AiConfig::from_toml(text, "pmpo.toml", &env_of(&[]))
                .unwrap_err()
                .to_string()
        };
        let e = bad("[ai]\nvia = \"cursor\"\n");
        assert!(e.contains("`via = \"cursor\"` is not known"), "{e}");
        let e = bad("[ai.phases.plan]\nvia = \"hostt\"\n");
        assert!(e.contains("[ai.phases.plan]"), "{e}");
        let e =
            bad("[ai.endpoints.host]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n");
        assert!(e.contains("reserved"), "{e}");
        let e = bad(
            "[ai.endpoints.a]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n[ai.phases.plan]\nvia = \"host\"\nendpoint = \"a\"\n",
        );
        assert!(e.contains("disagree"), "{e}");
    }
}
