//! The `pmpo` command line.

mod preview_cmd;
mod report;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pmpo_engine::{CheckedPlan, Engine, ExecuteOptions};
use pmpo_plan::Diagnostic;

/// Exit codes.
const EXIT_OK: u8 = 0;
const EXIT_STAGE_FAILED: u8 = 1;
const EXIT_INVALID: u8 = 2;
const EXIT_CANCELLED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "pmpo",
    version,
    about = "Run PMPO plans faithfully: stages in order, outputs verified on disk, everything recorded.",
    long_about = "pmpo is the Execute phase of the PMPO loop (Specify -> Plan -> Execute -> Reflect -> Persist).\n\
It runs a plan's stages in order, calls tools only where the plan says, verifies every declared\n\
output on disk, and writes structured results for the Reflect phase.",
    after_help = "Examples:\n  pmpo check examples/hello/plan.yaml\n  pmpo execute examples/hello/plan.yaml\n  pmpo execute plan.yaml --json > results.json\n\n\
Exit codes: 0 success, 1 a stage failed, 2 invalid plan or usage, 130 cancelled.\n\
Plan format: docs/plan-format.md. CLI reference: docs/cli.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a plan without running anything (exit 0 valid, 2 invalid).
    #[command(
        after_help = "Checks: unknown fields, duplicate stage ids, unknown tools and tool inputs,\n\
depends_on naming missing stages, dependency cycles, `$stage.field` references to stages that\n\
are not upstream, outputs outside the workspace, tool_invocations and validation_plan entries\n\
naming missing stages or constraints."
    )]
    Check {
        /// The plan file (YAML or JSON).
        plan: PathBuf,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check and run a plan; results go to .state/execution_results.json.
    #[command(
        after_help = "The workspace (where stages run and outputs are looked for) is the plan's directory\n\
unless --workspace says otherwise. Written there: artifact_manifest.json, refinement_log.md,\n\
.state/execution_results.json, .state/patch_ledger.jsonl, logs/executor.jsonl (events) and\n\
logs/execution/<stage>.jsonl (each stage's attempts with their output).\n\n\
Exit codes: 0 every stage completed, 1 a stage failed or timed out, 2 invalid plan, 130 cancelled."
    )]
    Execute {
        /// The plan file (YAML or JSON).
        plan: PathBuf,
        /// Run in this directory instead of the plan's directory.
        #[arg(long, short = 'w', value_name = "DIR")]
        workspace: Option<PathBuf>,
        /// Print execution_results as JSON on stdout (progress stays on stderr).
        #[arg(long)]
        json: bool,
        /// After a failure, still run the stages that do not depend on it.
        #[arg(long)]
        keep_going: bool,
        /// Time limit for stages that set no `timeout:` (e.g. 30s, 5m).
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
        /// Print nothing on stderr except errors.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Preview one page in headless Chromium: screenshot, console, errors, requests.
    #[command(
        after_help = "Writes dist/previews/<id>/preview.html, screenshot.png and preview-report.json in the\n\
workspace. Exit codes: 0 rendered, 1 not rendered (or, with --strict, the preview check failed), 2 usage."
    )]
    Preview(preview_cmd::PreviewArgs),
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    pmpo_plan::model::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check { plan, json } => cmd_check(&plan, json),
        Command::Execute {
            plan,
            workspace,
            json,
            keep_going,
            timeout,
            quiet,
        } => cmd_execute(&plan, workspace, json, keep_going, timeout, quiet),
        Command::Preview(args) => preview_cmd::run(args),
    };
    ExitCode::from(code)
}

fn print_diagnostics(diags: &[Diagnostic], json: bool) {
    if json {
        let out = serde_json::json!({ "ok": false, "errors": diags });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    let color = report::use_color();
    let mut err = std::io::stderr().lock();
    for d in diags {
        let label = if color {
            "\x1b[1;31merror\x1b[0m"
        } else {
            "error"
        };
        let _ = writeln!(err, "{label}: {d}");
    }
    let n = diags.len();
    let _ = writeln!(
        err,
        "{n} error{} found; nothing was run or written",
        if n == 1 { "" } else { "s" }
    );
}

fn load_and_check(engine: &Engine, path: &Path, json: bool) -> Result<CheckedPlan, u8> {
    pmpo_plan::load_plan(path)
        .and_then(|plan| engine.prepare(plan))
        .map_err(|diags| {
            print_diagnostics(&diags, json);
            EXIT_INVALID
        })
}

fn cmd_check(path: &Path, json: bool) -> u8 {
    let engine = Engine::default();
    match load_and_check(&engine, path, json) {
        Err(code) => code,
        Ok(plan) => {
            let p = &plan.doc.plan;
            let spec = &plan.doc.specification;
            if json {
                let out = serde_json::json!({
                    "ok": true,
                    "plan": plan.display,
                    "artifact_name": spec.artifact_name,
                    "stages": p.stages.len(),
                    "constraints": spec.constraints.len(),
                    "validation_plan": p.validation_plan.len(),
                    "tool_invocations": p.tool_invocations.len(),
                });
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                println!(
                    "{}: ok ({} stages, {} constraints, {} validations) for artifact `{}`",
                    plan.display,
                    p.stages.len(),
                    spec.constraints.len(),
                    p.validation_plan.len(),
                    spec.artifact_name
                );
            }
            EXIT_OK
        }
    }
}

fn cmd_execute(
    path: &Path,
    workspace: Option<PathBuf>,
    json: bool,
    keep_going: bool,
    timeout: Duration,
    quiet: bool,
) -> u8 {
    let engine = Engine::default();
    let plan = match load_and_check(&engine, path, json) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let workspace = workspace.unwrap_or_else(|| match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    });
    if !workspace.is_dir() {
        eprintln!(
            "error: workspace `{}` is not a directory\n  help: create it, or pass --workspace DIR",
            workspace.display()
        );
        return EXIT_INVALID;
    }
    let mut opts = ExecuteOptions::new(workspace.clone());
    opts.keep_going = keep_going;
    opts.default_timeout = timeout;

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_STAGE_FAILED;
        }
    };
    let mode = if quiet {
        report::Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        report::Mode::Live
    } else {
        report::Mode::Plain
    };
    let outcome = runtime.block_on(async {
        let cancel = opts.cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        });
        let mut reporter = report::Reporter::start(mode, &plan, &workspace);
        let result = engine.execute(&plan, &opts, &mut reporter).await;
        reporter.finish();
        result
    });
    match outcome {
        Err(e) => {
            eprintln!(
                "error: {e}\n  help: check that the workspace is writable and has free space"
            );
            EXIT_STAGE_FAILED
        }
        Ok(results) => {
            if json {
                let mut out = std::io::stdout().lock();
                let _ = serde_json::to_writer_pretty(&mut out, &results);
                let _ = writeln!(out);
            }
            if !quiet {
                report::print_summary(&results, &workspace);
            }
            match results.status.as_str() {
                "completed" => EXIT_OK,
                "cancelled" => EXIT_CANCELLED,
                _ => EXIT_STAGE_FAILED,
            }
        }
    }
}
