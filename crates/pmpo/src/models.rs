//! `pmpo models`: the configured endpoints, the route of each phase, and
//! whether each endpoint answers its health probe.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use pmpo_ai::{AiConfig, Client, EndpointHealth, Phase, Route};
use serde_json::json;

use crate::ai_cli::{AiArgs, load_config};
use crate::error::CliError;

/// Exit codes: 0 every endpoint healthy, 1 one is not, 2 nothing configured or a bad config.
pub fn cmd_models(workspace: &Path, args: &AiArgs, json_out: bool) -> u8 {
    let config = match load_config(workspace, args) {
        Ok(c) => c,
        Err(e) => return CliError::invalid(e).report(),
    };
    if !config.is_configured() {
        if json_out {
            let out = json!({"configured": false, "endpoints": [], "phases": {}, "help": AiConfig::how_to_configure()});
            outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        return CliError::invalid("no model endpoint is configured")
            .hint(AiConfig::how_to_configure())
            .report();
    }
    let routes: Vec<(Phase, Route)> = Phase::ALL
        .iter()
        .map(|p| (*p, config.route(*p, "", &Route::default())))
        .collect();
    let model_of = |r: &Route| {
        r.model.clone().or_else(|| {
            r.endpoint
                .as_ref()
                .and_then(|e| config.endpoints.get(e))
                .and_then(|e| e.model.clone())
        })
    };
    let sources = config.sources.clone();
    let client = match Client::new(config.clone()) {
        Ok(c) => c,
        Err(e) => return CliError::invalid(e.message).report(),
    };
    let Some(runtime) = crate::runtime() else {
        return crate::EXIT_STAGE_FAILED;
    };
    let health = runtime.block_on(client.health());
    let all_ok = health.iter().all(|h| h.healthy);
    let breakers = breakers(workspace);
    if json_out {
        let phases: serde_json::Map<String, serde_json::Value> = routes
            .iter()
            .map(|(p, r)| {
                (
                    p.as_str().to_string(),
                    json!({"endpoint": r.endpoint, "model": model_of(r), "fallback": r.fallback}),
                )
            })
            .collect();
        let mut endpoints = serde_json::to_value(&health).unwrap_or_default();
        if let Some(list) = endpoints.as_array_mut() {
            for e in list {
                let name = e["name"].as_str().unwrap_or_default().to_string();
                if let Some(b) = breaker_of(&breakers, &name) {
                    e["breaker"] = json!({
                        "state": b.breaker_state,
                        "consecutive_failures": b.consecutive_failures,
                        "open_until": b.opened_until,
                        "last_error": b.last_error,
                    });
                }
            }
        }
        let out = json!({
            "configured": true,
            "sources": sources,
            "default_endpoint": config.default_endpoint,
            "endpoints": endpoints,
            "phases": phases,
        });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return if all_ok { 0 } else { 1 };
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "configuration: {}", sources.join(", "));
    let _ = writeln!(out, "\nendpoints:");
    print_endpoints(&mut out, &health, &breakers);
    let _ = writeln!(out, "\nphases:");
    for (p, r) in &routes {
        let _ = writeln!(
            out,
            "  {:<8} -> {} / {}{}",
            p.as_str(),
            r.endpoint.as_deref().unwrap_or("-"),
            model_of(r)
                .as_deref()
                .unwrap_or("(no model set: the only one the endpoint lists, or --model)"),
            r.fallback
                .as_deref()
                .map(|f| format!("  (fallback {f})"))
                .unwrap_or_default()
        );
    }
    if all_ok { 0 } else { 1 }
}

/// This workspace's breaker of a model endpoint.
fn breaker_of<'a>(
    breakers: &'a [pmpo_store::db::AdapterRow],
    name: &str,
) -> Option<&'a pmpo_store::db::AdapterRow> {
    breakers
        .iter()
        .find(|r| r.adapter_id == format!("model:{name}"))
}

/// One line per endpoint: kind, place, model, key, health and breaker.
fn print_endpoints(
    out: &mut impl Write,
    health: &[EndpointHealth],
    breakers: &[pmpo_store::db::AdapterRow],
) {
    for h in health {
        let key = match (&h.api_key_env, h.api_key_set) {
            (Some(v), true) => format!("key ${v} (set)"),
            (Some(v), false) => format!("key ${v} (not set)"),
            (None, _) => "no key".into(),
        };
        let mut state = if h.healthy {
            format!("healthy ({:.0} ms)", h.probe_ms)
        } else {
            format!("UNHEALTHY: {}", h.error.as_deref().unwrap_or("?"))
        };
        // What runs in this workspace will do, which a probe alone does not say.
        match breaker_of(breakers, &h.name) {
            Some(b) if b.breaker_state != "CLOSED" => {
                let _ = write!(
                    state,
                    "; breaker {}{} after {} outage(s){}",
                    b.breaker_state,
                    b.opened_until
                        .as_deref()
                        .map(|u| format!(" until {u}"))
                        .unwrap_or_default(),
                    b.consecutive_failures,
                    b.last_error
                        .as_deref()
                        .map(|e| format!(", last: {e}"))
                        .unwrap_or_default()
                );
            }
            Some(b) if b.consecutive_failures > 0 => {
                let _ = write!(
                    state,
                    "; {} recent outage(s), breaker closed",
                    b.consecutive_failures
                );
            }
            _ => {}
        }
        let _ = writeln!(
            out,
            "  {:<12} {:<9} {}  model {}  {key}  {state}",
            h.name,
            h.kind,
            h.location,
            h.model.as_deref().unwrap_or("-"),
        );
        if !h.offers.is_empty() {
            let shown: Vec<&str> = h.offers.iter().take(12).map(String::as_str).collect();
            let more = if h.offers.len() > 12 { ", ..." } else { "" };
            let _ = writeln!(out, "               offers: {}{more}", shown.join(", "));
        }
    }
}

/// The breakers of this workspace's adapters, when it has an execution store
/// (read only; a workspace without runs has none).
fn breakers(workspace: &Path) -> Vec<pmpo_store::db::AdapterRow> {
    if !pmpo_store::db::store_exists(workspace).unwrap_or(false) {
        return Vec::new();
    }
    match pmpo_store::db::open_store(workspace) {
        Ok(mut db) => db.adapters().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}
