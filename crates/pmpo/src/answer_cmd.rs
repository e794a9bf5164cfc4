//! `pmpo answer`: the host (or a person) answers a question pmpo asked with
//! `via = "host"`, and the refinement (or the run) goes on.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Parser;
use pmpo_ai::host::{self, Question};
use pmpo_store::Workspace;

use crate::error::CliError;
use crate::refine_cmd::RefineArgs;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["name", "run"])))]
pub struct AnswerArgs {
    /// The artifact whose pending question this answers
    /// (`.refiner/artifacts/NAME/pending.json`).
    pub name: Option<String>,
    /// The run whose `ai` stage waits for an answer (with --stage), for a plain
    /// `pmpo execute --via host`.
    #[arg(
        long,
        value_name = "RUN_ID",
        requires = "stage",
        conflicts_with = "name"
    )]
    pub run: Option<String>,
    /// The `ai` stage of --run that waits.
    #[arg(long, value_name = "STAGE", requires = "run")]
    pub stage: Option<String>,
    /// The answer: a file holding the JSON the question's schema asks for
    /// (`-`, or no --file, reads standard input).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Keep the answer only; the next `pmpo refine NAME` (or `pmpo resume RUN --retry`) goes on.
    #[arg(long)]
    pub no_continue: bool,
    /// The workspace directory.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    pub workspace: PathBuf,
    /// Print the report (or the run's results) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print nothing on stderr except errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// The answer's text, from the file or standard input.
fn read_answer(file: Option<&Path>) -> Result<String, CliError> {
    let limit = host::MAX_ANSWER_BYTES as u64;
    let (what, reader): (String, Box<dyn Read>) = match file {
        Some(p) if p != Path::new("-") => {
            let f = std::fs::File::open(p).map_err(|e| {
                CliError::invalid(format!(
                    "cannot read the answer file `{}`: {e}",
                    p.display()
                ))
            })?;
            (format!("the answer file `{}`", p.display()), Box::new(f))
        }
        _ => (
            "the answer on standard input".to_string(),
            Box::new(std::io::stdin()),
        ),
    };
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::invalid(format!("cannot read {what}: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(CliError::invalid(format!(
            "{what} is larger than {} MiB, more than any phase asks for",
            limit >> 20
        ))
        .hint("give the one JSON object the question's schema asks for"));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        CliError::invalid(format!("{what} is not UTF-8 text"))
            .hint("give the JSON the question's schema asks for")
    })?;
    if text.trim().is_empty() {
        return Err(CliError::invalid("the answer is empty").hint(
            "give the JSON the question's schema asks for, with --file FILE or on standard input",
        ));
    }
    Ok(text)
}

/// The question an `ai` stage of a run waits on: the latest one asked by
/// that stage that has no answer yet.
pub fn stage_question(ws: &Workspace, run_id: &str, stage: &str) -> Result<Question, CliError> {
    host::waiting_question(ws, run_id, stage).ok_or_else(|| {
        CliError::invalid(format!(
            "stage `{stage}` of run `{run_id}` has no question waiting for an answer"
        ))
        .hint(format!(
            "`pmpo status` shows what each run waits for; questions are in {}/",
            host::QUESTIONS_DIR
        ))
    })
}

/// Whether the workspace's configuration already routes something to the host.
fn configured_for_host(workspace: &Path) -> bool {
    crate::ai_cli::load_config(workspace, &Default::default()).is_ok_and(|c| {
        c.endpoints
            .values()
            .any(|e| e.kind == pmpo_ai::EndpointKind::Host)
    })
}

#[derive(Parser)]
struct Refine {
    #[command(flatten)]
    args: RefineArgs,
}

/// The arguments of the `pmpo refine NAME` that goes on after an answer: the
/// host answers again (unless pmpo.toml already routes phases to it).
pub fn continue_args(
    name: &str,
    workspace: &Path,
    json: bool,
    quiet: bool,
) -> Result<RefineArgs, CliError> {
    let mut argv: Vec<String> = vec![
        "refine".into(),
        format!("--workspace={}", workspace.display()),
    ];
    if !configured_for_host(workspace) {
        argv.extend(["--via".into(), "host".into()]);
    }
    if json {
        argv.push("--json".into());
    }
    if quiet {
        argv.push("--quiet".into());
    }
    argv.extend(["--".into(), name.into()]);
    Refine::try_parse_from(argv).map(|r| r.args).map_err(|e| {
        CliError::failed(format!(
            "internal: cannot go on with `pmpo refine {name}`: {e}"
        ))
    })
}

/// Whether `stage` can be a stage id (as `pmpo check` allows them).
fn stage_id_ok(stage: &str) -> bool {
    !stage.is_empty()
        && stage.len() <= 100
        && stage
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `pmpo answer --run RUN --stage S`: keeps the answer to the question the
/// stage waits on, then resumes the run with a retry of it: the stage runs
/// again, finds the answer, and the engine verifies what it writes.
fn answer_run(
    a: &AnswerArgs,
    ws: &Workspace,
    run: &str,
    stage: &str,
    text: &str,
) -> Result<u8, CliError> {
    if !stage_id_ok(stage) {
        return Err(
            CliError::invalid(format!("`--stage {stage}` is not a stage id")).hint(
                "stage ids use letters, digits, `-` and `_`: give the id of the run's `ai` stage that waits",
            ),
        );
    }
    let found = match crate::state_cmd::open_db(&a.workspace) {
        Ok(mut db) => db
            .run(run)
            .map_err(|e| CliError::failed(&e).hint(e.hint()))?,
        Err(code) => return Ok(code),
    };
    if found.is_none() {
        return Err(CliError::invalid(format!(
            "there is no run `{run}` in workspace `{}`",
            a.workspace.display()
        ))
        .hint("list runs with `pmpo status`; pass --workspace if the run was elsewhere"));
    }
    {
        // No answer is kept while another pmpo holds the workspace: the
        // question stays open, and the same command works once it is done.
        let _lock = match crate::state_cmd::take_lock(ws, "answer") {
            Ok(lock) => lock,
            Err(code) => return Ok(code),
        };
        let q = stage_question(ws, run, stage)?;
        host::give_answer(ws, &q.id, text).map_err(CliError::failed)?;
        if !a.quiet {
            errln!(
                "answer kept for stage `{stage}` of run `{run}` (question {})",
                q.id
            );
        }
    }
    if a.no_continue {
        return Ok(crate::EXIT_OK);
    }
    Ok(crate::resume_for_host(run, &a.workspace, a.json, a.quiet))
}

pub fn answer(a: AnswerArgs) -> u8 {
    match answer_inner(&a) {
        Ok(code) => code,
        Err(e) => e.report(),
    }
}

fn answer_inner(a: &AnswerArgs) -> Result<u8, CliError> {
    if !a.workspace.is_dir() {
        return Err(crate::not_a_directory_error(&a.workspace));
    }
    let text = read_answer(a.file.as_deref())?;
    let ws = Workspace::open(&a.workspace).map_err(|e| CliError::invalid(&e))?;
    if let (Some(run), Some(stage)) = (&a.run, &a.stage) {
        return answer_run(a, &ws, run, stage, &text);
    }
    let name = a.name.as_deref().unwrap_or_default();
    let p = pmpo_loop::pending::answer(&ws, name, &text)
        .map_err(|e| CliError::invalid(&e).hint(e.hint()))?;
    if !a.quiet {
        errln!(
            "answer kept for `{name}`: the {} question of iteration {} ({})",
            p.question.phase,
            p.iteration,
            p.question.id
        );
    }
    if a.no_continue {
        return Ok(crate::EXIT_OK);
    }
    let args = continue_args(name, &a.workspace, a.json, a.quiet)?;
    Ok(crate::refine_cmd::refine(args))
}
