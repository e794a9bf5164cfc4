//! Named artifacts: init, list, status NAME, checkpoint, finalize, provider.

use std::io::Write;
use std::path::{Path, PathBuf};

use pmpo_store::artifacts::{ArtifactError, Artifacts, InitOutcome, RefinementState};
use pmpo_store::lock::{self, LockHolder};
use pmpo_store::provider::Provider;
use pmpo_store::{Workspace, now_rfc3339};

use crate::error::CliError;
use crate::{EXIT_INVALID, EXIT_OK, EXIT_STAGE_FAILED};

#[derive(clap::Args)]
pub struct WsArgs {
    /// The workspace directory.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    pub workspace: PathBuf,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// The artifact's name (letters, digits, `-`, `_`, `.`).
    name: String,
    /// logo | ui | a2ui | image | content | code | meta-prompt (needed for a new artifact).
    #[arg(long = "type", value_name = "TYPE")]
    artifact_type: Option<String>,
    /// e.g. direct:svg or meta:image-prompt (default: from the type).
    #[arg(long)]
    content_type: Option<String>,
    /// Iterations before the loop is forced to stop (default 5).
    #[arg(long)]
    max_iterations: Option<u64>,
    /// Start a new lineage where the artifact's state.json is gone but its
    /// checkpoints survive: they move under .refiner/history/NAME/ (never
    /// deleted). Without it such an artifact is refused; `pmpo doctor
    /// --repair` recovers it instead.
    #[arg(long)]
    new_lineage: bool,
    #[command(flatten)]
    ws: WsArgs,
}

#[derive(clap::Args)]
pub struct CheckpointArgs {
    /// The artifact's name.
    name: String,
    /// specify | plan | execute | reflect | persist
    phase: String,
    #[command(flatten)]
    ws: WsArgs,
}

#[derive(clap::Args)]
pub struct FinalizeArgs {
    /// The artifact's name.
    name: String,
    /// How the cycle ended: converged (default), max_iterations_exceeded or user_terminated.
    #[arg(long, value_parser = ["converged", "max_iterations_exceeded", "user_terminated"])]
    status: Option<String>,
    #[command(flatten)]
    ws: WsArgs,
}

fn open(dir: &Path) -> Result<(Workspace, Provider), u8> {
    let ws = Workspace::open(dir)
        .map_err(|e| CliError::invalid(e).hint("pass --workspace DIR").report())?;
    let provider = Provider::resolve(&ws);
    for d in &provider.degraded {
        errln!("warning: {d}");
    }
    Ok((ws, provider))
}

fn report_error(e: &ArtifactError) -> u8 {
    let code = match e {
        ArtifactError::Corrupt { .. } | ArtifactError::TooNew { .. } | ArtifactError::Store(_) => {
            EXIT_STAGE_FAILED
        }
        _ => EXIT_INVALID,
    };
    CliError::with_code(e, code).hint(e.hint()).report()
}

fn print_json(value: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

/// Runs `f` holding the artifact-state lock (`.refiner/lock`; waits for a holder).
fn with_lock<T>(ws: &Workspace, what: &str, f: impl FnOnce() -> T) -> Result<T, u8> {
    let holder = LockHolder {
        pid: std::process::id(),
        run_id: String::new(),
        since: now_rfc3339(),
        command: what.into(),
        host: String::new(),
    };
    let _guard = lock::acquire_at(ws, ".refiner/lock", &holder, true)
        .map_err(|e| CliError::failed(e).report())?;
    Ok(f())
}

fn notes(p: &Provider) {
    for n in p.notes() {
        errln!("warning: {n}");
    }
}

pub fn init(a: InitArgs) -> u8 {
    let (ws, provider) = match open(&a.ws.workspace) {
        Ok(x) => x,
        Err(c) => return c,
    };
    if let Err(e) = Artifacts::check_init(
        &a.name,
        a.artifact_type.as_deref(),
        a.content_type.as_deref(),
    ) {
        return report_error(&e);
    }
    let arts = Artifacts {
        ws: &ws,
        provider: &provider,
    };
    let result = match with_lock(&ws, "pmpo init", || {
        if a.new_lineage {
            match arts.set_aside_lineage(&a.name) {
                Ok(Some(to)) => errln!(
                    "note: the earlier lineage of `{}` was moved to {to}",
                    a.name
                ),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        arts.init(
            &a.name,
            a.artifact_type.as_deref(),
            a.content_type.as_deref(),
            a.max_iterations,
        )
    }) {
        Ok(r) => r,
        Err(c) => return c,
    };
    notes(&provider);
    match result {
        Err(ArtifactError::NotFound(_)) => {
            CliError::invalid(format!("`{}` is a new artifact and needs a type", a.name))
                .hint(format!(
                    "pmpo init {} --type logo|ui|a2ui|image|content|code|meta-prompt",
                    a.name
                ))
                .report()
        }
        Err(e) => report_error(&e),
        Ok((outcome, state)) => {
            if a.ws.json {
                print_json(&serde_json::json!({"outcome": outcome, "state": state}));
            } else {
                let what = match outcome {
                    InitOutcome::Created => "created".to_string(),
                    InitOutcome::Resumed => format!(
                        "resumed (iteration {}, {})",
                        state.current_iteration, state.convergence_status
                    ),
                    InitOutcome::NewCycle => format!(
                        "new cycle seeded from {}",
                        state.prior_cycle_id.as_deref().unwrap_or("?")
                    ),
                };
                outln!(
                    "{}: {what}; refinement {} ({}, {})",
                    state.artifact_name,
                    state.refinement_id,
                    state.artifact_type,
                    state.content_type
                );
            }
            EXIT_OK
        }
    }
}

pub fn list(a: WsArgs) -> u8 {
    let (ws, provider) = match open(&a.workspace) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let reg = match (Artifacts {
        ws: &ws,
        provider: &provider,
    })
    .registry()
    {
        Ok(r) => r,
        Err(e) => return report_error(&e),
    };
    if a.json {
        print_json(&reg);
        return EXIT_OK;
    }
    if reg.artifacts.is_empty() {
        outln!("no artifacts yet (pmpo init NAME --type TYPE)");
    }
    for (name, e) in &reg.artifacts {
        outln!(
            "{name:<24} {:<11} {:<10} {:<18} cycles {}  updated {}",
            e.artifact_type,
            e.status,
            e.content_type,
            e.cycles,
            e.updated_at
        );
    }
    EXIT_OK
}

/// What an artifact waits for, if anything: a person at the approval gate,
/// or the host's answer to a question.
fn print_waits(ws: &Workspace, state: &RefinementState, ls: &pmpo_loop::controller::LoopState) {
    if let Some(a) = ls
        .approval
        .as_ref()
        .filter(|a| a.status == pmpo_loop::controller::GateStatus::Pending)
    {
        outln!(
            "  approval    pending since {} (iteration {}): `pmpo approve {} --continue|--terminate`",
            a.requested_at,
            a.iteration,
            state.artifact_name
        );
    }
    if let Ok(Some(p)) = pmpo_loop::pending::read(ws, &state.artifact_name) {
        outln!(
            "  waiting     the host's answer to the {} question of iteration {} ({}): `{}`",
            p.question.phase,
            p.iteration,
            pmpo_loop::pending::pending_path(&state.artifact_name),
            p.answer_with
        );
    }
}

/// `pmpo status NAME`.
pub fn status(name: &str, a: &WsArgs) -> u8 {
    let (ws, provider) = match open(&a.workspace) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let state: RefinementState = match (Artifacts {
        ws: &ws,
        provider: &provider,
    })
    .load(name)
    {
        Ok(s) => s,
        Err(e) => return report_error(&e),
    };
    notes(&provider);
    if a.json {
        print_json(&state);
        return EXIT_OK;
    }
    outln!(
        "{} ({}, {})",
        state.artifact_name,
        state.artifact_type,
        state.content_type
    );
    outln!(
        "  refinement  {}{}",
        state.refinement_id,
        state
            .prior_cycle_id
            .as_deref()
            .map(|p| format!(" (seeded from {p})"))
            .unwrap_or_default()
    );
    outln!(
        "  status      {}{}",
        state.convergence_status,
        state
            .finalized_at
            .as_deref()
            .map(|f| format!(", finalized {f}"))
            .unwrap_or_default()
    );
    outln!(
        "  iteration   {} of at most {}",
        state.current_iteration,
        state.max_iterations
    );
    outln!(
        "  phases done {}",
        if state.phases_completed.is_empty() {
            "-".into()
        } else {
            state.phases_completed.join(", ")
        }
    );
    if let Some(cp) = state.checkpoints.last() {
        outln!(
            "  checkpoint  {} ({} checkpoints; last at {})",
            cp.checkpoint_id,
            state.checkpoints.len(),
            cp.timestamp
        );
    }
    outln!("  constraints {}", state.constraints.len());
    let ls = pmpo_loop::controller::loop_state(&state);
    if !ls.evaluation_strategy.is_empty() {
        outln!("  evaluated   {}", ls.evaluation_strategy);
    }
    print_waits(&ws, &state, &ls);
    if let Some(d) = &ls.last_decision {
        outln!(
            "  decision    {}{} at iteration {}: {}",
            d.decision,
            d.status.map(|s| format!(" ({s})")).unwrap_or_default(),
            d.iteration,
            d.reason
        );
    }
    // The constraint table of the latest reflection.
    let latest = (1..=state.current_iteration).rev().find_map(|i| {
        let rel = pmpo_loop::controller::reflection_path(&state.artifact_name, i);
        let bytes = ws.read_own(&rel).ok()??;
        serde_json::from_slice::<pmpo_loop::reflect::Reflection>(&bytes).ok()
    });
    if let Some(r) = latest {
        outln!("  constraints of iteration {}:", r.iteration);
        for c in &r.constraints {
            outln!(
                "    {:<11} {:<28} {:<8} {}",
                c.status.as_str(),
                c.id,
                c.severity.to_string(),
                if c.basis == pmpo_loop::reflect::Basis::Judged {
                    "(judged)"
                } else {
                    ""
                }
            );
        }
    }
    EXIT_OK
}

/// Runs `change` on the artifact `name` under the workspace lock (`what`
/// names the command to whoever else holds it); a refused name, a busy lock
/// or the change's error is reported, and its exit code returned.
fn change_artifact<T>(
    ws: &WsArgs,
    name: &str,
    what: &str,
    change: impl FnOnce(&Artifacts) -> Result<T, ArtifactError>,
) -> Result<T, u8> {
    let (ws, provider) = open(&ws.workspace)?;
    Artifacts::check_name(name).map_err(|e| report_error(&e))?;
    let arts = Artifacts {
        ws: &ws,
        provider: &provider,
    };
    let result = with_lock(&ws, what, || change(&arts))?;
    notes(&provider);
    result.map_err(|e| report_error(&e))
}

pub fn checkpoint(a: CheckpointArgs) -> u8 {
    match change_artifact(&a.ws, &a.name, "pmpo checkpoint", |arts| {
        arts.checkpoint(&a.name, &a.phase)
    }) {
        Err(code) => code,
        Ok(cp) => {
            if a.ws.json {
                print_json(&cp);
            } else {
                outln!("{}", cp.checkpoint_id);
            }
            EXIT_OK
        }
    }
}

pub fn finalize(a: FinalizeArgs) -> u8 {
    match change_artifact(&a.ws, &a.name, "pmpo finalize", |arts| {
        arts.finalize(&a.name, a.status.as_deref())
    }) {
        Err(code) => code,
        Ok((state, history)) => {
            if a.ws.json {
                print_json(&serde_json::json!({"state": state, "history": history}));
            } else {
                outln!(
                    "{}: finalized ({}); archived to {history}",
                    state.artifact_name,
                    state.convergence_status
                );
            }
            EXIT_OK
        }
    }
}

pub fn provider(a: WsArgs) -> u8 {
    let (ws, provider) = match open(&a.workspace) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let _ = ws;
    if a.json {
        print_json(&provider);
        return EXIT_OK;
    }
    let kind = match &provider.kind {
        pmpo_store::provider::Kind::Filesystem => "filesystem (.refiner/)".to_string(),
        pmpo_store::provider::Kind::Custom { load_command, .. } => {
            format!("custom (load: {load_command}; a copy is kept in .refiner/)")
        }
        pmpo_store::provider::Kind::Postgres { server } => {
            format!("postgres ({server}, table pmpo_artifact_state; a copy is kept in .refiner/)")
        }
    };
    outln!("provider: {kind}");
    outln!("from:     {}", provider.source);
    outln!("looked at, in order:");
    for l in &provider.looked_at {
        outln!("  {l}");
    }
    for d in &provider.degraded {
        outln!("degraded: {d}");
    }
    EXIT_OK
}
