//! `pmpo refine` (the PMPO loop) and `pmpo approve` (its approval gate).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pmpo_ai::host::{HostEndpoint, Sampler};
use pmpo_engine::{CheckedPlan, Engine, Event, EventSink, ExecuteOptions};
use pmpo_loop::{Approval, ApprovalRequest, Env, LoopError, Observer, Outcome, Report, Request};
use pmpo_store::states::ConstraintStatus;
use pmpo_tools::Registry;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::error::CliError;
use crate::report::{self, Mode, Reporter};
use crate::{EXIT_BUSY, EXIT_INVALID, EXIT_OK, EXIT_PAUSED, EXIT_STAGE_FAILED};

#[derive(clap::Args)]
pub struct RefineArgs {
    /// The artifact's name (letters, digits, `-`, `_`, `.`): new, running or finalized.
    pub name: String,
    /// logo | ui | a2ui | image | content | code | meta-prompt (needed for a new artifact
    /// unless the inputs make it plain).
    #[arg(long = "type", value_name = "TYPE")]
    pub artifact_type: Option<String>,
    /// direct:react, direct:html, direct:a2ui, direct:content, direct:image, direct:code,
    /// meta:image-prompt, meta:video-prompt, meta:agent-prompt, meta:workflow, meta:composite
    /// (default: detected from the inputs, the type and the intent).
    #[arg(long, value_name = "KIND")]
    pub content_type: Option<String>,
    /// An input file in the workspace (repeat for several).
    #[arg(long = "input", short = 'i', value_name = "FILE")]
    pub inputs: Vec<String>,
    /// What the artifact is for; becomes a constraint (judged by the model when one is configured).
    #[arg(long, value_name = "TEXT")]
    pub intent: Option<String>,
    /// Iterations before the loop is forced to stop (default 5).
    #[arg(long, value_name = "N")]
    pub max_iterations: Option<u64>,
    /// Pause after every Reflect for a person's `continue` or `terminate`.
    #[arg(long, overrides_with = "no_approval")]
    pub approval: bool,
    /// Run without the approval gate (the default).
    #[arg(long, overrides_with = "approval")]
    pub no_approval: bool,
    /// meta:* only: run the prompt through the model and evaluate its output too.
    #[arg(long, overrides_with = "no_test_generation")]
    pub test_generation: bool,
    /// Stop running the prompt through the model (undoes an earlier --test-generation).
    #[arg(long, overrides_with = "test_generation")]
    pub no_test_generation: bool,
    /// meta:* only: the system that will consume the prompt (dall-e-3, sora, claude, ...).
    #[arg(long, value_name = "NAME")]
    pub target_platform: Option<String>,
    /// meta:composite only: a component, as CONTENT_TYPE or CONTENT_TYPE=INPUT (repeat).
    #[arg(long = "component", value_name = "KIND[=FILE]")]
    pub components: Vec<String>,
    /// An adapter option (repeat), e.g. --set dark_background=#000 --set min_contrast=4.5.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Workflow triggers for this artifact: a JSON file ({"triggers": [...]}).
    #[arg(long, value_name = "FILE")]
    pub triggers: Option<PathBuf>,
    /// Never ask a model, even when one is configured: the adapters' defaults and plans.
    #[arg(long)]
    pub offline: bool,
    /// Start a new lineage where the artifact's state.json is gone but its
    /// checkpoints survive: they move under .refiner/history/NAME/ (never
    /// deleted). Without it such an artifact is refused; `pmpo doctor
    /// --repair` recovers it instead.
    #[arg(long)]
    pub new_lineage: bool,
    /// The workspace directory.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    pub workspace: PathBuf,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Print nothing on stderr except errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// How many stages may run at once in the Execute phase (default: the number of CPUs).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..1025))]
    pub jobs: Option<u32>,
    /// Time limit for stages that set no `timeout:` (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::parse_duration)]
    pub timeout: Duration,
    /// Do not confine the stages' processes (Landlock) nor watch them for writes outside
    /// their outputs (detection); the results record `sandbox: off`.
    #[arg(long)]
    pub no_sandbox: bool,
    #[command(flatten)]
    pub ai: crate::ai_cli::AiArgs,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("answer").required(true).args(["go_on", "terminate"])))]
pub struct ApproveArgs {
    /// The artifact waiting at the approval gate.
    pub name: String,
    /// Go on: Persist, then the usual loop/terminate decision.
    #[arg(long = "continue")]
    pub go_on: bool,
    /// Stop: Persist, then finalize the cycle as user_terminated.
    #[arg(long)]
    pub terminate: bool,
    /// A note kept with the answer in decisions.md.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// The workspace directory.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    pub workspace: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Renders the loop's progress on stderr.
struct Progress {
    mode: Mode,
    workspace: PathBuf,
    reporter: Option<Reporter>,
}

impl Observer for Progress {
    fn phase_start(&mut self, iteration: u64, max: u64, phase: &str) {
        if self.mode != Mode::Quiet {
            errln!("[iteration {iteration}/{max}] {phase}");
        }
    }
    fn phase_done(&mut self, iteration: u64, phase: &str, summary: &str, ms: f64) {
        if self.mode != Mode::Quiet {
            errln!("[iteration {iteration}] {phase} done in {ms:.0} ms: {summary}");
        }
    }
    fn note(&mut self, text: &str) {
        if self.mode != Mode::Quiet {
            errln!("pmpo: {text}");
        }
    }
    fn execute_start(&mut self, plan: &CheckedPlan) {
        self.reporter = Some(Reporter::start(self.mode, plan, &self.workspace));
    }
    fn on_event(&mut self, event: &Event) {
        if let Some(r) = &mut self.reporter {
            r.on_event(event);
        }
    }
    fn execute_done(&mut self) {
        if let Some(mut r) = self.reporter.take() {
            r.finish();
        }
    }
}

/// `--set key=value`: JSON values (numbers, booleans, lists) or text.
fn parse_options(raw: &[String]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for item in raw {
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!(
                "--set `{item}`: expected KEY=VALUE, e.g. --set min_contrast=4.5"
            ));
        };
        let k = k.trim();
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "--set `{item}`: the key may hold letters, digits, `_` and `-`"
            ));
        }
        let value = match serde_json::from_str::<Value>(v) {
            Ok(j @ (Value::Number(_) | Value::Bool(_) | Value::Array(_))) => j,
            _ => Value::String(v.to_string()),
        };
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

fn ask_approval(req: &ApprovalRequest) -> Option<Approval> {
    // stderr is locked only while writing: the loop waits on another thread
    // and must be able to print (a Ctrl-C note) while this one reads.
    let _ = writeln!(
        std::io::stderr(),
        "\napproval needed for `{}` after iteration {}:\n  {}",
        req.artifact,
        req.iteration,
        req.summary
    );
    loop {
        {
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "[c]ontinue, [t]erminate, or [l]ater (answer with `pmpo approve`)? "
            );
            let _ = err.flush();
        }
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "c" | "continue" => return Some(Approval::Continue),
            "t" | "terminate" => return Some(Approval::Terminate),
            "l" | "later" => return None,
            _ => {}
        }
    }
}

fn error_code(e: &LoopError) -> u8 {
    match e {
        LoopError::Busy(_) => EXIT_BUSY,
        LoopError::Engine(pmpo_engine::EngineError::Busy(_)) => EXIT_BUSY,
        LoopError::Usage(_) | LoopError::Plan { .. } => EXIT_INVALID,
        // A store setting at fault (a PostgreSQL server that cannot be
        // reached, another workspace's database): 2, as for every command.
        LoopError::Store(pmpo_store::StoreError::Ledger(d))
        | LoopError::Engine(pmpo_engine::EngineError::Db(d))
            if d.is_setting() =>
        {
            EXIT_INVALID
        }
        LoopError::Artifact(a) => match a {
            pmpo_store::artifacts::ArtifactError::Corrupt { .. }
            | pmpo_store::artifacts::ArtifactError::TooNew { .. }
            | pmpo_store::artifacts::ArtifactError::Store(_) => EXIT_STAGE_FAILED,
            _ => EXIT_INVALID,
        },
        _ => EXIT_STAGE_FAILED,
    }
}

/// The triggers file's JSON (`--triggers`), when one is given.
fn read_triggers(path: Option<&std::path::Path>) -> Result<Option<Value>, CliError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::invalid(format!(
            "cannot read the triggers file `{}`: {e}",
            path.display()
        ))
    })?;
    serde_json::from_slice::<Value>(&bytes).map(Some).map_err(|e| {
        CliError::invalid(format!("the triggers file `{}` is not JSON: {e}", path.display()))
            .hint(r#"write {"triggers": [{"event": "on_phase_complete", "action": {"type": "command", "target": "..."}}]}"#)
    })
}

/// The model client (when one is configured and --offline is not given).
/// A `sampler` answers the host's questions (MCP sampling) instead of
/// pending questions.
fn model_client(
    a: &RefineArgs,
    sampler: Option<Arc<dyn Sampler>>,
) -> Result<Option<Arc<pmpo_ai::Client>>, CliError> {
    if a.offline {
        return Ok(None);
    }
    match crate::ai_cli::load_config(&a.workspace, &a.ai) {
        Ok(config) if config.is_configured() || a.ai.record.is_some() => {
            let hosts: Vec<String> = config
                .endpoints
                .values()
                .filter(|e| e.kind == pmpo_ai::EndpointKind::Host)
                .map(|e| e.name.clone())
                .collect();
            match pmpo_ai::Client::new(config) {
                Ok(mut c) => {
                    if let Some(s) = sampler {
                        for name in hosts {
                            c = c.with_endpoint(Arc::new(HostEndpoint::with_sampler(
                                &name,
                                s.clone(),
                            )));
                        }
                    }
                    Ok(Some(Arc::new(c)))
                }
                Err(e) => Err(CliError::invalid(e.message)),
            }
        }
        Ok(_) => Ok(None),
        Err(e) => Err(CliError::invalid(e).hint("fix pmpo.toml, or pass --offline")),
    }
}

/// `--flag` / `--no-flag`: Some(true), Some(false), or None (the default).
fn either(yes: bool, no: bool) -> Option<bool> {
    if yes {
        Some(true)
    } else if no {
        Some(false)
    } else {
        None
    }
}

/// What the loop is asked to do.
fn loop_request(a: &RefineArgs, options: Map<String, Value>, triggers: Option<Value>) -> Request {
    Request {
        workspace: a.workspace.clone(),
        name: a.name.clone(),
        artifact_type: a.artifact_type.clone(),
        content_type: a.content_type.clone(),
        inputs: a.inputs.clone(),
        intent: a.intent.clone(),
        max_iterations: a.max_iterations,
        requires_approval: either(a.approval, a.no_approval),
        test_generation: either(a.test_generation, a.no_test_generation),
        target_platform: a.target_platform.clone(),
        components: a.components.clone(),
        options,
        triggers,
        offline: a.offline,
        new_lineage: a.new_lineage,
    }
}

/// What drives a refinement besides its arguments: the terminal's progress
/// and questions, or the MCP server's.
pub struct Driver<'o> {
    pub observer: &'o mut dyn Observer,
    /// Answers the host's questions through MCP sampling, when the client can.
    pub sampler: Option<Arc<dyn Sampler>>,
    /// Stops the run (Ctrl-C, a signal, a client that went away).
    pub cancel: CancellationToken,
    /// A person at a terminal can be asked (intervention, approval).
    pub interactive: bool,
}

/// Runs the PMPO loop: the report, or the error the command line prints.
pub async fn run_refine(a: &RefineArgs, driver: Driver<'_>) -> Result<Report, CliError> {
    pmpo_sandbox::set_disabled(a.no_sandbox);
    let options = parse_options(&a.options).map_err(CliError::invalid)?;
    if !a.workspace.is_dir() {
        return Err(crate::not_a_directory_error(&a.workspace));
    }
    let triggers = read_triggers(a.triggers.as_deref())?;
    let client = model_client(a, driver.sampler)?;
    let engine = match &client {
        Some(c) => Engine {
            registry: Registry::with_ai(c.clone()),
        },
        None => Engine::default(),
    };
    let mut exec = ExecuteOptions::new(a.workspace.clone());
    exec.cancel = driver.cancel;
    exec.default_timeout = a.timeout;
    exec.jobs = a.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |j| j as usize,
    );
    if driver.interactive {
        exec.ask = Some(Arc::new(report::ask_person));
    }
    let req = loop_request(a, options, triggers);
    let mut env = Env {
        engine,
        client,
        exec,
        ask_approval: driver
            .interactive
            .then(|| Arc::new(ask_approval) as pmpo_loop::AskApproval),
        observer: driver.observer,
    };
    pmpo_loop::refine(req, &mut env)
        .await
        .map_err(|e| CliError::with_code(&e, error_code(&e)).hint(e.hint()))
}

/// The exit code of a refinement that ended so (`docs/cli.md`, "Exit codes").
pub fn outcome_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Converged | Outcome::UserTerminated => EXIT_OK,
        Outcome::MaxIterationsExceeded => EXIT_STAGE_FAILED,
        Outcome::AwaitingApproval | Outcome::ExecutionPaused | Outcome::AwaitingAnswer => {
            EXIT_PAUSED
        }
        Outcome::Cancelled => crate::EXIT_CANCELLED,
    }
}

pub fn refine(a: RefineArgs) -> u8 {
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let mode = if a.quiet {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Live
    } else {
        Mode::Plain
    };
    let Some(runtime) = crate::runtime() else {
        return crate::EXIT_STAGE_FAILED;
    };
    let mut progress = Progress {
        mode,
        workspace: a.workspace.clone(),
        reporter: None,
    };
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    let stop = crate::signals::on_terminating_signals(move || on_signal.cancel());
    let result = runtime.block_on(run_refine(
        &a,
        Driver {
            observer: &mut progress,
            sampler: None,
            cancel,
            interactive,
        },
    ));
    match result {
        Err(e) => e.report(),
        Ok(report) => {
            let report_command = crate::report::report_command(&report.artifact_name, &a.workspace);
            if a.json {
                // The report's JSON, with the command that builds the HTML report.
                let mut value = serde_json::to_value(&report).unwrap_or(Value::Null);
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("report_command".into(), Value::from(report_command.clone()));
                }
                let mut out = std::io::stdout().lock();
                let _ = serde_json::to_writer_pretty(&mut out, &value);
                let _ = writeln!(out);
            }
            if !a.quiet {
                print_report(&report);
                errln!("  report: {report_command}");
            }
            match report.outcome {
                Outcome::Cancelled => stop.exit_code(),
                o => outcome_code(o),
            }
        }
    }
}

fn print_report(r: &Report) {
    let mut err = std::io::stderr().lock();
    let what = match r.outcome {
        Outcome::Converged => "converged".to_string(),
        Outcome::MaxIterationsExceeded => {
            "stopped: maximum iterations reached without converging".into()
        }
        Outcome::UserTerminated => "terminated by a person at the approval gate".into(),
        Outcome::AwaitingApproval => "paused: waiting for approval".into(),
        Outcome::ExecutionPaused => "paused: a stage awaits a decision".into(),
        Outcome::AwaitingAnswer => "paused: waiting for the host's answer".into(),
        Outcome::Cancelled => "cancelled".into(),
    };
    let _ = writeln!(
        err,
        "\n`{}` {what} (iteration {} of at most {})",
        r.artifact_name, r.iteration, r.max_iterations
    );
    for c in &r.constraints {
        let mark = match c.status {
            ConstraintStatus::Satisfied => "ok  ",
            ConstraintStatus::Violated => "FAIL",
            ConstraintStatus::Pending | ConstraintStatus::NotChecked => "--  ",
        };
        let _ = writeln!(
            err,
            "  {mark} {:<28} {:<8} {}{}",
            c.id,
            c.severity.to_string(),
            c.status,
            if c.basis == pmpo_loop::reflect::Basis::Judged {
                " (judged)"
            } else {
                ""
            }
        );
        // Why a measured constraint does not hold: the check's own words (the
        // rule an audit broke, the cycle, the schema path), cut to one line.
        if c.status != ConstraintStatus::Satisfied
            && c.basis == pmpo_loop::reflect::Basis::Measured
            && c.unproven.is_empty()
            && !c.evidence.trim().is_empty()
        {
            let _ = writeln!(err, "       why: {}", one_line(&c.evidence, 300));
        }
        // What the status rests on: this run's files (digests) or why not.
        if !c.unproven.is_empty() {
            let _ = writeln!(err, "       unproven: {}", c.unproven.join("; "));
        } else if !c.run_id.is_empty() && c.basis == pmpo_loop::reflect::Basis::Measured {
            let files = if c.files.is_empty() {
                String::new()
            } else {
                format!(
                    " on {}",
                    c.files
                        .iter()
                        .take(4)
                        .map(|f| format!(
                            "{} ({})",
                            f.path,
                            f.blake3.get(..12).unwrap_or(&f.blake3)
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ) + &if c.files.len() > 4 {
                    format!(" and {} more", c.files.len() - 4)
                } else {
                    String::new()
                }
            };
            let _ = writeln!(err, "       evidence: run {}{files}", c.run_id);
        }
    }
    if let Some(d) = &r.last_decision {
        let _ = writeln!(err, "  decision: {} — {}", d.decision, d.reason);
    }
    for n in &r.notes {
        let _ = writeln!(err, "  note: {n}");
    }
    if let Some(n) = &r.next_step {
        let _ = writeln!(err, "  next: {n}");
    }
    let _ = writeln!(
        err,
        "  time: {:.0} ms total: {:.0} ms in stages, {:.0} ms closing the browser, {:.0} ms waiting for the model, {:.0} ms pmpo",
        r.timings.total_ms,
        r.timings.stages_ms,
        r.timings.teardown_ms,
        r.timings.model_ms,
        r.timings.engine_ms
    );
}

/// `text` on one line, at most `max` characters (an ellipsis says it was cut).
fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max).collect();
    format!("{cut}…")
}

pub fn approve(a: ApproveArgs) -> u8 {
    let answer = if a.terminate {
        Approval::Terminate
    } else {
        Approval::Continue
    };
    match pmpo_loop::approve(&a.workspace, &a.name, answer, a.note.as_deref()) {
        Ok(done) => {
            if a.json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&done).unwrap_or_default()
                );
            } else {
                outln!(
                    "`{}` iteration {}: {} recorded in decisions.md; run `pmpo refine {}` to go on",
                    done.artifact_name,
                    done.iteration,
                    done.decision,
                    done.artifact_name
                );
            }
            EXIT_OK
        }
        Err(e) => CliError::with_code(&e, error_code(&e))
            .hint(e.hint())
            .report(),
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn evidence_is_shown_on_one_line_and_cut_with_an_ellipsis() {
        assert_eq!(one_line("a\n  b\tc ", 10), "a b c");
        assert_eq!(one_line("0123456789", 10), "0123456789");
        assert_eq!(one_line("0123456789x", 10), "0123456789…");
        // Cut by characters, never inside one.
        assert_eq!(one_line("ééééé", 3), "ééé…");
    }
}
