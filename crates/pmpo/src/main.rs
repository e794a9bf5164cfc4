//! The `pmpo` command line.

/// Standard output for what a command prints. A reader that went away (a
/// closed pipe: `pmpo status | head -1`) is not an error and never a panic:
/// the rest of the output is dropped and the command finishes its work and
/// exits with its usual code.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// As [`outln!`] without the newline.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// Standard error for progress, notes and errors; a closed or broken stderr
/// never stops a run.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// As [`errln!`] without the newline.
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($t)*);
    }};
}

mod ai_cli;
mod answer_cmd;
mod artifact_cmd;
mod doctor_cmd;
mod error;
mod mcp;
mod models;
mod ops_cmd;
mod preview_cmd;
mod refine_cmd;
mod report;
mod report_cmd;
mod restore_cmd;
mod signals;
mod state_cmd;
mod validate_cmd;
mod worker_cmd;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pmpo_engine::{CheckedPlan, Decision, Engine, EngineError, ExecuteOptions, Force};
use pmpo_plan::Diagnostic;
use pmpo_store::states::RunStatus;

use crate::error::CliError;

/// Exit codes.
const EXIT_OK: u8 = 0;
const EXIT_STAGE_FAILED: u8 = 1;
const EXIT_INVALID: u8 = 2;
const EXIT_PAUSED: u8 = 3;
const EXIT_BUSY: u8 = 4;
const EXIT_CANCELLED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "pmpo",
    version,
    about = "Run PMPO plans faithfully: stages in order, outputs verified on disk, everything recorded.",
    long_about = "pmpo is the Execute phase of the PMPO loop (Specify -> Plan -> Execute -> Reflect -> Persist).\n\
It runs a plan's stages in order, calls tools only where the plan says, verifies every declared \
output on disk, and writes structured results for the Reflect phase.",
    after_help = "Examples:\n  pmpo check examples/hello/plan.yaml\n  pmpo execute examples/hello/plan.yaml\n  pmpo execute plan.yaml --json > results.json\n  pmpo validate plan.yaml --junit junit.xml\n\n\
Exit codes: 0 success, 1 a stage failed, 2 invalid plan or usage, 3 paused (awaiting a decision, or safe mode), 4 workspace busy, 130 cancelled.\n\
Plan format: docs/plan-format.md. CLI reference: docs/cli.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The execution store: `sqlite` (.state/pmpo.db, the default) or a postgres:// URL shared by a team's machines. Overrides PMPO_STORE and [store] in pmpo.toml.
    #[arg(long, global = true, value_name = "URL")]
    store: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a plan without running anything (exit 0 valid, 2 invalid).
    #[command(
        after_help = "Checks: unknown fields, duplicate stage ids, unknown tools and tool inputs, \
depends_on naming missing stages, dependency cycles, `$stage.field` references to stages that \
are not upstream, outputs outside the workspace, tool_invocations and validation_plan entries \
naming missing stages or constraints, unknown checks and bad check parameters, references to \
named outputs the upstream stage does not give, and template variables nothing gives. What \
only the run can tell (a template a stage writes) is a note that does not fail the check."
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
        after_help = "The workspace (where stages run and outputs are looked for) is the plan's directory \
unless --workspace says otherwise. Written there: artifact_manifest.json, refinement_log.md, \
.state/execution_results.json, .state/patch_ledger.jsonl, logs/executor.jsonl (events) and \
logs/execution/<run>.jsonl (every attempt of the run's stages, a line each, with its output).\n\n\
Exit codes: 0 every stage completed and every blocking constraint of the validation_plan holds, \
1 a stage failed, timed out or was skipped, or a blocking constraint is violated or could not be \
checked (--allow-violations only reports those), 2 invalid plan, 3 paused (a stage awaits a decision, \
or every adapter of a stage is open), 4 workspace busy, 130 cancelled."
    )]
    Execute {
        /// The plan file (YAML or JSON).
        plan: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Show the model endpoints, the model of each phase, and their health.
    #[command(
        after_help = "Reads pmpo.toml in the workspace (default: the current directory) and the environment \
(OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, ...). See docs/configuration.md.\n\n\
Exit codes: 0 every endpoint healthy, 1 an endpoint failed its probe, 2 nothing configured or a bad config."
    )]
    Models {
        /// Read pmpo.toml from this directory.
        #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
        workspace: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Show the routes with this model.
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
    },
    /// Continue a run that was interrupted (or failed): finished stages are not run again.
    #[command(
        after_help = "The run's plan is read again from where it was; stages whose definition or inputs \
changed since are run again (and named). Same options and exit codes as `pmpo execute`."
    )]
    Resume {
        /// The run id (see `pmpo status`).
        run_id: String,
        /// For a stage awaiting a decision: run it again.
        #[arg(long, group = "decision")]
        retry: bool,
        /// For a stage awaiting a decision: skip it (its dependents are skipped too).
        #[arg(long, group = "decision")]
        skip: bool,
        /// For a stage awaiting a decision: stop the run there.
        #[arg(long, group = "decision")]
        abort: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Refine a named artifact with the PMPO loop until its constraints hold.
    #[command(after_help = REFINE_HELP)]
    Refine(Box<refine_cmd::RefineArgs>),
    /// Answer an artifact's approval gate: --continue or --terminate.
    #[command(
        after_help = "The answer is kept in state.json and decisions.md; `pmpo refine NAME` then goes on \
(Persist, then the usual decision) or, with --terminate, finalizes the cycle as user_terminated.

Exit codes: 0 recorded, 2 nothing is waiting for approval, 4 a refine of this workspace is running."
    )]
    Approve(refine_cmd::ApproveArgs),
    /// Answer a question pmpo asked the agent host (`--via host`), then go on.
    #[command(after_help = ANSWER_HELP)]
    Answer(answer_cmd::AnswerArgs),
    /// Adapters (tools, plugins, model endpoints), their health and circuit breakers.
    Adapters(ops_cmd::AdaptersArgs),
    /// Execution metrics in the Prometheus text format.
    Metrics(ops_cmd::MetricsArgs),
    /// Preview one page in headless Chromium: screenshot, console, errors, requests.
    #[command(
        after_help = "Writes dist/previews/<id>/preview.html, screenshot.png and preview-report.json in the \
workspace. Exit codes: 0 rendered, 1 not rendered (or, with --strict, the preview check failed), 2 usage."
    )]
    Preview(preview_cmd::PreviewArgs),
    /// Run the plan's validation_plan on the current files; write constraints.json
    /// (exit 1 when a blocking constraint is violated).
    #[command(
        after_help = "Runs every validation_plan entry (execution_required: true) on the workspace as it is, \
without running stages. Writes constraints.json (each constraint satisfied, violated or \
not_checked), .state/validation_results.json and an entry in refinement_log.md.\n\n\
Examples:\n  pmpo validate plan.yaml\n  pmpo validate plan.yaml --junit reports/validation.xml\n\n\
Exit codes: 0 no blocking constraint violated, 1 a blocking one is (any with --strict), 2 invalid plan or a store setting at fault, 4 workspace busy."
    )]
    Validate(validate_cmd::Args),
    /// Where the workspace's runs stand, or (with NAME) where an artifact stands.
    Status(state_cmd::StatusArgs),
    /// Create a named artifact, resume a running one, or start a new cycle of a finalized one.
    Init(artifact_cmd::InitArgs),
    /// The registry of named artifacts.
    List(artifact_cmd::WsArgs),
    /// Snapshot an artifact's state after a phase; prints the checkpoint id.
    Checkpoint(artifact_cmd::CheckpointArgs),
    /// Archive an artifact's cycle to .refiner/history/ and mark it finalized.
    Finalize(artifact_cmd::FinalizeArgs),
    /// Which state provider is used, and why.
    Provider(artifact_cmd::WsArgs),
    /// Find damaged or inconsistent state files and explain them; --repair fixes them.
    Doctor(doctor_cmd::DoctorArgs),
    /// Who wrote what, when: every file pmpo or a stage created or changed.
    Ledger(state_cmd::LedgerArgs),
    /// Bring back the content a run overwrote.
    Restore(restore_cmd::RestoreArgs),
    /// Prune pmpo's own backups and cache entries; prints what was freed.
    Gc(state_cmd::GcArgs),
    /// Write one self-contained HTML report of a run or a named artifact.
    #[command(after_help = REPORT_HELP)]
    Report(report_cmd::ReportArgs),
    /// Serve the workspace to an agent host over MCP (stdio): tools, resources, sampling.
    #[command(after_help = MCP_HELP)]
    Mcp(mcp::McpArgs),
    /// Run the stages that `pmpo execute --workers` queues in the PostgreSQL store.
    #[command(after_help = worker_cmd::WORKER_HELP)]
    Worker(worker_cmd::WorkerArgs),
}

/// Options shared by `execute` and `resume`.
#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// The workspace: where stages run and outputs are looked for (default: the plan's
    /// directory for `execute`, the current directory for `resume`).
    #[arg(long, short = 'w', value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Print execution_results as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
    /// After a failure, still run (and finish) the stages that do not depend on it.
    #[arg(long, overrides_with = "fail_fast")]
    keep_going: bool,
    /// The default: after a failure, start no stage that comes after it (each is
    /// SKIPPED); stages already running finish and are recorded.
    #[arg(long, overrides_with = "keep_going")]
    fail_fast: bool,
    /// How many stages may run at once; stages whose dependencies are done run in
    /// parallel (default: the number of CPUs). Results keep the plan's order.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..1025))]
    jobs: Option<u32>,
    /// Time limit for stages that set no `timeout:` (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
    /// Run stages even when an identical earlier result could be reused: all stages, or
    /// the ones named (`--force=build,test`).
    #[arg(long, value_name = "STAGE", num_args = 0..=1, value_delimiter = ',', require_equals = true, default_missing_value = "")]
    force: Option<Vec<String>>,
    /// If another pmpo is running in this workspace, wait for it instead of failing.
    #[arg(long)]
    wait: bool,
    /// Print nothing on stderr except errors.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Report blocking constraints of the validation_plan that are violated (or that
    /// their checks could not verify) without failing the run: exit 0 when every stage
    /// completed. For users who only want the files.
    #[arg(long)]
    allow_violations: bool,
    /// Do not confine the stages' processes (Landlock) nor watch them for writes outside
    /// their outputs (detection); the results record `sandbox: off`.
    #[arg(long)]
    no_sandbox: bool,
    #[command(flatten)]
    ai: ai_cli::AiArgs,
    /// Consecutive failures of an adapter that open its circuit breaker.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    breaker_threshold: u32,
    /// How long an open breaker waits before one trial call.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    breaker_cooldown: Duration,
    /// Queue the stages in the PostgreSQL store for `pmpo worker`s on any machine to run
    /// (everything else stays here); --jobs then counts stages queued at once (256 unless given).
    #[arg(long)]
    workers: bool,
}

const ANSWER_HELP: &str = concat!(
    "With `--via host` (or `via = \"host\"` in pmpo.toml) a phase that needs judgement, or an `ai` ",
    "stage, does not call a model: it writes a pending question (the prompt, the JSON schema the ",
    "answer must satisfy, the files it is about, and the constraints a check measures, which are not ",
    "the host's to judge) and pmpo exits 3. `pmpo answer` keeps the answer and goes on: the phase ",
    "reads it as a model's answer (schema check, one repair question, then the adapter's fallback).\n\n",
    "Examples:\n",
    "  pmpo refine acme-logo --type logo --input logo.svg --via host   # exits 3\n",
    "  cat .refiner/artifacts/acme-logo/pending.json                   # the question\n",
    "  pmpo answer acme-logo --file answer.json                        # answers; refine goes on\n",
    "  pmpo answer --run RUN_ID --stage summarize --file answer.json   # an `ai` stage of a run\n\n",
    "Exit codes: those of `pmpo refine` (or `pmpo resume`) that goes on: 0 converged, 3 the next ",
    "question waits; 2 nothing waits for an answer, or the answer is empty; 4 busy."
);

/// Goes on with a run whose `ai` stage the host has just answered: the
/// stage runs again and finds the answer.
pub(crate) fn resume_for_host(run_id: &str, workspace: &Path, json: bool, quiet: bool) -> u8 {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        run: RunArgs,
    }
    let mut argv = vec![
        "resume".to_string(),
        format!("--workspace={}", workspace.display()),
        "--via=host".into(),
    ];
    if json {
        argv.push("--json".into());
    }
    if quiet {
        argv.push("--quiet".into());
    }
    match Wrap::try_parse_from(argv) {
        Ok(w) => cmd_resume(run_id, w.run, Some(Decision::Retry)),
        Err(e) => CliError::failed(format!("internal: cannot resume `{run_id}`: {e}")).report(),
    }
}

const REPORT_HELP: &str = concat!(
    "The report is one HTML file with everything inline (styles, pictures as data: URIs; nothing ",
    "is fetched): for a run, its stages on a timeline, its constraints with each check's evidence, ",
    "every preview's screenshot with its console, errors, failed requests, findings and ",
    "accessibility, and the files it wrote (the ledger's before and after); for an artifact, its ",
    "iterations side by side (constraint status, decision and reason, each picture beside the ",
    "previous iteration's with the changed pixels). It is built only when asked, never by a run.\n\n",
    "Examples:\n",
    "  pmpo report                          # the workspace's last run\n",
    "  pmpo report 20261129T120000Z-1a2b3c -w examples/ui\n",
    "  pmpo report acme-logo --open         # an artifact, opened in a browser\n\n",
    "Exit codes: 0 written, 1 it could not be written, 2 no such run or artifact (or a bad -o)."
);

const MCP_HELP: &str = concat!(
    "A Model Context Protocol server on standard input and output, for one workspace. An agent host ",
    "starts it and calls its tools: check_plan, execute, validate, preview, artifact_status, ",
    "artifact_list, refine, answer, approve, ledger, restore. With `refine` the host is the model: ",
    "a phase that needs judgement comes back as a pending question (prompt, schema, files, measured ",
    "constraints) that `answer` answers, or, when the client declares sampling, is asked directly.\n",
    "Checks still decide every measured constraint. Resources: pmpo://artifacts/NAME/state.json, ",
    "pending.json, plan.json, reflection.json; pmpo://workspace/constraints.json and ",
    "artifact_manifest.json; pmpo://file/dist/previews/ID/screenshot.png.\n\n",
    "Examples:\n",
    "  claude mcp add pmpo -- pmpo mcp -w /path/to/workspace\n",
    "  pmpo mcp -w .                    # what a host's configuration runs\n\n",
    "Nothing but the protocol is written to standard output; notes go to standard error.\n",
    "Exit codes: 0 the client went away (or a signal stopped it), 2 the workspace is not a directory."
);

const REFINE_HELP: &str = concat!(
    "The loop: Specify -> Plan -> Execute -> Reflect -> Persist -> decide, repeated until every ",
    "blocking constraint is satisfied, every required file is in dist/, the manifest validates and no ",
    "high constraint is violated (and nothing regressed), or until --max-iterations. Without a model ",
    "endpoint (or with --offline) Specify uses the domain adapter's constraints and Plan its ",
    "deterministic plan.\n\n",
    "Examples:\n",
    "  pmpo refine acme-logo --type logo --input brand/logo.svg --intent \"works on dark backgrounds\"\n",
    "  pmpo refine acme-logo                 # resume where it stopped, or start a new cycle\n",
    "  pmpo refine report --input docs/report.md --approval\n",
    "  pmpo approve report --continue        # answer the approval gate from any shell\n",
    "  pmpo refine hero-prompt --type meta-prompt --intent \"an image prompt for a hero banner\"\n",
    "  pmpo status acme-logo                 # iteration, constraint table, last decision\n\n",
    "Files: constraints.json, artifact_manifest.json, refinement_log.md, decisions.md, dist/, and ",
    ".refiner/artifacts/NAME/ (state.json, specification.json, plans/, reflections/, checkpoints/, ",
    "workflow.log). A kill at any point leaves state that `pmpo refine NAME` resumes.\n",
    "Details: docs/refine.md.\n\n",
    "Exit codes: 0 converged (or terminated at the approval gate), 1 stopped at max iterations ",
    "without converging, 2 usage or bad input, 3 paused (approval, a stage awaits a decision, or a ",
    "question waits for the host: `pmpo answer`), ",
    "4 busy, 130 cancelled."
);

/// The single-threaded async runtime of one command (None: it could not
/// start, and the error was printed).
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            CliError::failed(format!("cannot start the async runtime: {e}")).report();
            None
        }
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    pmpo_plan::model::parse_duration(s)
}

fn main() -> ExitCode {
    // One tool call in a child process (pmpo's own, before any parsing: its
    // cost is paid on every call of an isolated tool).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == pmpo_tools::isolate::SUBCOMMAND)
    {
        return ExitCode::from(pmpo_tools::isolate::serve_child().clamp(0, 255) as u8);
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == pmpo_checks::isolate::SUBCOMMAND)
    {
        return ExitCode::from(pmpo_checks::isolate::serve_child().clamp(0, 255) as u8);
    }
    // Tools that can run long run in a child process started from this binary.
    // So do the heavy checks.
    if let Ok(exe) = std::env::current_exe() {
        pmpo_tools::isolate::run_tools_in_child(exe.clone());
        pmpo_checks::isolate::run_checks_in_child(exe);
    }
    let cli = Cli::parse();
    if let Some(store) = &cli.store {
        // SAFETY: no other thread runs yet; everything that opens the store
        // reads this variable (pmpo_store::db::store_spec).
        unsafe { std::env::set_var(pmpo_store::db::STORE_ENV, store) };
    }
    let code = match cli.command {
        Command::Check { plan, json } => cmd_check(&plan, json),
        Command::Execute { plan, run } => cmd_execute(&plan, run, None, None),
        Command::Resume {
            run_id,
            retry,
            skip,
            abort,
            run,
        } => {
            let decision = match (retry, skip, abort) {
                (true, _, _) => Some(Decision::Retry),
                (_, true, _) => Some(Decision::Skip),
                (_, _, true) => Some(Decision::Abort),
                _ => None,
            };
            cmd_resume(&run_id, run, decision)
        }
        Command::Refine(args) => refine_cmd::refine(*args),
        Command::Approve(args) => refine_cmd::approve(args),
        Command::Answer(args) => answer_cmd::answer(args),
        Command::Adapters(args) => ops_cmd::adapters(args),
        Command::Metrics(args) => ops_cmd::metrics(args),
        Command::Status(args) => state_cmd::status(args),
        Command::Init(args) => artifact_cmd::init(args),
        Command::List(args) => artifact_cmd::list(args),
        Command::Checkpoint(args) => artifact_cmd::checkpoint(args),
        Command::Finalize(args) => artifact_cmd::finalize(args),
        Command::Provider(args) => artifact_cmd::provider(args),
        Command::Doctor(args) => doctor_cmd::doctor(args),
        Command::Ledger(args) => state_cmd::ledger(args),
        Command::Restore(args) => restore_cmd::restore(args),
        Command::Gc(args) => state_cmd::gc(args),
        Command::Mcp(args) => mcp::run(args),
        Command::Report(args) => report_cmd::report(args),
        Command::Models {
            workspace,
            json,
            model,
        } => models::cmd_models(
            &workspace,
            &ai_cli::AiArgs {
                model,
                ..Default::default()
            },
            json,
        ),
        Command::Validate(args) => validate_cmd::run(args),
        Command::Preview(args) => preview_cmd::run(args),
        Command::Worker(args) => worker_cmd::worker(args),
    };
    ExitCode::from(code)
}

fn print_diagnostics(diags: &[Diagnostic], json: bool) {
    if json {
        let out = serde_json::json!({ "ok": false, "errors": diags });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    let color = report::use_color();
    let mut err = std::io::stderr().lock();
    for d in diags {
        let label = if color {
            "\x1b[1;31merror\x1b[0m"
        } else {
            "error"
        };
        let _ = writeln!(err, "{label}: {}", d.render(color));
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
    let loaded = pmpo_plan::load_plan(path);
    let report = match &loaded {
        Ok(plan) => engine.check_report(plan),
        Err(_) => pmpo_plan::CheckReport::default(),
    };
    // Notes (what only the run can tell) never fail the check.
    for n in &report.notes {
        errln!("note: {n}");
    }
    match loaded {
        Err(diags) => {
            print_diagnostics(&diags, json);
            EXIT_INVALID
        }
        Ok(_) if !report.errors.is_empty() => {
            print_diagnostics(&report.errors, json);
            EXIT_INVALID
        }
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
                    "notes": report.notes,
                });
                outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                outln!(
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

fn cmd_resume(run_id: &str, args: RunArgs, decision: Option<Decision>) -> u8 {
    let workspace = args.workspace.clone().unwrap_or_else(|| PathBuf::from("."));
    let run = match state_cmd::open_db(&workspace).and_then(|mut db| {
        db.run(run_id)
            .map_err(|e| CliError::failed(&e).hint(e.hint()).report())
    }) {
        Ok(Some(run)) => run,
        Ok(None) => {
            return CliError::invalid(format!(
                "there is no run `{run_id}` in workspace `{}`",
                workspace.display()
            ))
            .hint("list runs with `pmpo status`; pass --workspace if the run was elsewhere")
            .report();
        }
        Err(code) => return code,
    };
    let plan_path = if Path::new(&run.plan).is_absolute() {
        PathBuf::from(&run.plan)
    } else {
        workspace.join(&run.plan)
    };
    let mut args = args;
    args.workspace = Some(workspace);
    cmd_execute(&plan_path, args, Some(run_id.to_string()), decision)
}

/// A workspace given (or implied) that is not a directory.
fn not_a_directory(workspace: &Path) -> u8 {
    not_a_directory_error(workspace).report()
}

fn not_a_directory_error(workspace: &Path) -> CliError {
    CliError::invalid(format!(
        "workspace `{}` is not a directory",
        workspace.display()
    ))
    .hint("create it, or pass --workspace DIR")
}

/// The workspace of `execute`: the flag's, else the plan's directory.
fn workspace_of(path: &Path, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    })
}

/// `--force` as the engine takes it; a stage id the plan lacks is an error.
fn force_of(force: Option<Vec<String>>, plan: &CheckedPlan) -> Result<Force, CliError> {
    Ok(match force {
        None => Force::None,
        Some(ids) if ids.iter().all(|i| i.is_empty()) => Force::All,
        Some(ids) => {
            let known: Vec<&str> = plan.doc.plan.stages.iter().map(|s| s.id.as_str()).collect();
            if let Some(bad) = ids.iter().find(|i| !known.contains(&i.as_str())) {
                return Err(CliError::invalid(format!(
                    "--force names `{bad}`, which is not a stage of this plan"
                ))
                .hint(format!("stages: {}", known.join(", "))));
            }
            Force::Stages(ids)
        }
    })
}

/// The engine's options for `execute` and `resume`.
fn execute_options(
    workspace: PathBuf,
    args: &RunArgs,
    resume: Option<String>,
    decision: Option<Decision>,
) -> ExecuteOptions {
    let mut opts = ExecuteOptions::new(workspace);
    opts.keep_going = args.keep_going;
    opts.allow_violations = args.allow_violations;
    opts.default_timeout = args.timeout;
    opts.wait = args.wait;
    opts.resume = resume;
    opts.decision = decision;
    opts.jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |j| j as usize,
    );
    opts.breaker = pmpo_engine::recovery::BreakerPolicy {
        threshold: args.breaker_threshold,
        cooldown: args.breaker_cooldown,
    };
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        opts.ask = Some(std::sync::Arc::new(report::ask_person));
    }
    opts
}

fn cmd_execute(
    path: &Path,
    args: RunArgs,
    resume: Option<String>,
    decision: Option<Decision>,
) -> u8 {
    pmpo_sandbox::set_disabled(args.no_sandbox);
    let engine = Engine::default();
    let plan = match load_and_check(&engine, path, args.json) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let workspace = workspace_of(path, args.workspace.clone());
    if !workspace.is_dir() {
        return not_a_directory(&workspace);
    }
    let engine = match ai_cli::engine_for(&workspace, &args.ai, &plan) {
        Ok(e) => e,
        Err(e) => return e.report(),
    };
    let mut opts = execute_options(workspace.clone(), &args, resume, decision);
    if args.workers
        && let Err(e) = worker_cmd::prepare_submit(&mut opts, args.jobs.is_some(), &workspace)
    {
        return e.report();
    }
    opts.force = match force_of(args.force.clone(), &plan) {
        Ok(f) => f,
        Err(e) => return e.report(),
    };
    let Some(runtime) = crate::runtime() else {
        return crate::EXIT_STAGE_FAILED;
    };
    let mode = if args.quiet {
        report::Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        report::Mode::Live
    } else {
        report::Mode::Plain
    };
    let cancel = opts.cancel.clone();
    let stop = signals::on_terminating_signals(move || cancel.cancel());
    let outcome = runtime.block_on(async {
        let mut reporter = report::Reporter::start(mode, &plan, &workspace);
        let result = engine.execute(&plan, &opts, &mut reporter).await;
        reporter.finish();
        result
    });
    let results = match outcome {
        Ok(results) => results,
        Err(e) => {
            let code = match e {
                EngineError::Busy(_) => EXIT_BUSY,
                EngineError::Db(ref d) if d.is_setting() => EXIT_INVALID,
                EngineError::NoSuchRun(_)
                | EngineError::PlanMismatch { .. }
                | EngineError::AwaitingDecision { .. } => EXIT_INVALID,
                _ => EXIT_STAGE_FAILED,
            };
            return CliError::with_code(&e, code).hint(e.hint()).report();
        }
    };
    if args.json {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, &results);
        let _ = writeln!(out);
    }
    if !args.quiet {
        report::print_summary(&results, &workspace);
    }
    // The run's status is its exit code; a cancelled run answers the signal
    // that stopped it.
    match results.status {
        RunStatus::Cancelled => stop.exit_code(),
        status => status.exit_code(),
    }
}
