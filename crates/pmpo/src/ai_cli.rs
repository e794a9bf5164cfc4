//! The model options of `pmpo execute` (`--model`, `--record`, `--replay`)
//! and the engine they configure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use pmpo_ai::{AiConfig, Client, Overrides};
use pmpo_engine::{CheckedPlan, Engine};
use pmpo_tools::Registry;

use crate::error::CliError;

/// Model options shared by the commands that call models.
#[derive(Args, Debug, Clone, Default)]
pub struct AiArgs {
    /// The model for every AI call of this run (beats pmpo.toml and OPENAI_MODEL).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Keep every model exchange in this cassette (JSON lines; no keys).
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Answer every AI call from this cassette: no network, the same result.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// `--via host`: the agent host that drives pmpo answers every phase and `ai`
    /// stage (MCP sampling, or a pending question answered with `pmpo answer`).
    #[arg(long, value_name = "WHO", value_parser = ["host"])]
    pub via: Option<String>,
}

impl AiArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            model: self.model.clone(),
            record: self.record.clone(),
            replay: self.replay.clone(),
            via: self.via.clone(),
        }
    }
}

/// The configuration for a workspace: its pmpo.toml, the process
/// environment and the flags.
pub fn load_config(workspace: &Path, args: &AiArgs) -> Result<AiConfig, String> {
    AiConfig::load(workspace, &|k| std::env::var(k).ok(), &args.overrides())
        .map_err(|e| e.to_string())
}

fn has_ai_stages(engine: &Engine, plan: &CheckedPlan) -> bool {
    plan.doc
        .plan
        .stages
        .iter()
        .any(|s| engine.registry.resolve_name(s.tool_name()) == "ai")
}

/// The engine for `pmpo execute`: with a model client when one is
/// configured. A broken model configuration stops only a plan that has AI
/// stages; other plans run as before.
pub fn engine_for(workspace: &Path, args: &AiArgs, plan: &CheckedPlan) -> Result<Engine, CliError> {
    let base = Engine::default();
    let config = match load_config(workspace, args) {
        Ok(c) => c,
        Err(e) if !has_ai_stages(&base, plan) && args.replay.is_none() && args.record.is_none() => {
            errln!("warning: model configuration ignored (the plan has no AI stage): {e}");
            return Ok(base);
        }
        Err(e) => return Err(CliError::invalid(e)),
    };
    if !config.is_configured() && args.record.is_none() {
        return Ok(base);
    }
    let client = Client::new(config)
        .map_err(|e| CliError::invalid(e.message).hint(e.hint.unwrap_or_default()))?;
    Ok(Engine {
        registry: Registry::with_ai(Arc::new(client)),
    })
}
