//! The heavy checks run in a child process of pmpo (issue 15, item 2), as
//! the artifact tools do (`pmpo_tools::isolate`): jsonschema, html5ever,
//! the YAML and XML parsers, pulldown-cmark and resvg have no cancel hook,
//! and a hostile schema pattern, a YAML alias bomb or a huge SVG could hold
//! a thread for as long as they like. The binary re-invokes itself as
//! `pmpo __check` through the one process runner, with [`CHECK_TIMEOUT`],
//! the run's cancel flag, SIGKILL at once and the memory limit of
//! `PMPO_TOOL_MEMORY_LIMIT`. A check only reads, so nothing is staged: the
//! child answers with its verdict on stdout.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use pmpo_process::limits;
use pmpo_store::Workspace;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{CheckDef, CheckError, Ctx, ValidationStatus, Verdict};

/// The hidden subcommand the binary answers with one check.
pub const SUBCOMMAND: &str = "__check";
/// The checks run in a child process: parsers and renderers without a
/// cancel hook. The cheap ones (file tests, text search with the linear-time
/// regex engine, JSON parsing, pmpo's own manifest schema) and the ones that
/// already run a process or wait on the network stay in process.
pub const ISOLATED: &[&str] = &[
    "yaml",
    "xml",
    "html",
    "markdown_headings",
    "json_schema",
    "image_dimensions",
    "image_format",
    "aspect_ratio",
    "contrast",
    "links",
];
/// How long a check in a child process may take before it is stopped (a
/// failed check saying so).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

static CHILD_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Makes the [`ISOLATED`] checks run in a child process started from `exe`
/// (the running pmpo binary), unless `PMPO_TOOL_ISOLATION` is `off`.
pub fn run_checks_in_child(exe: PathBuf) {
    if !limits::isolation_off() {
        let _ = CHILD_EXE.set(exe);
    }
}

#[derive(Serialize, Deserialize)]
struct Request {
    check: String,
    params: Map<String, Value>,
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    status: ValidationStatus,
    message: String,
    evidence: Value,
}

/// Runs the check: in a child process when it is one of [`ISOLATED`] and
/// the binary asked for it, else here.
pub(crate) fn run(
    def: &CheckDef,
    ctx: &Ctx<'_>,
    params: &Map<String, Value>,
) -> Result<Verdict, CheckError> {
    match CHILD_EXE.get() {
        Some(exe) if ISOLATED.contains(&def.name) => Ok(in_child(exe, def, ctx, params)),
        _ => (def.run)(ctx, params),
    }
}

fn failed(message: String) -> Verdict {
    Verdict {
        status: ValidationStatus::Failed,
        evidence: json!({ "error": message }),
        message,
    }
}

fn in_child(
    exe: &std::path::Path,
    def: &CheckDef,
    ctx: &Ctx<'_>,
    params: &Map<String, Value>,
) -> Verdict {
    let name = def.name;
    let limit = match limits::memory_limit() {
        Ok(l) => l,
        Err(e) => {
            return failed(format!(
                "{}: {e}; set it to a size such as 4G or 512M, or 0 for no limit",
                limits::MEMORY_VAR
            ));
        }
    };
    let request = Request {
        check: name.to_string(),
        params: params.clone(),
        root: ctx.ws.root().to_path_buf(),
    };
    let Ok(stdin) = serde_json::to_vec(&request) else {
        return failed(format!("cannot encode the `{name}` check's parameters"));
    };
    let spec = pmpo_process::ProcessSpec {
        cwd: Some(ctx.ws.root().to_path_buf()),
        env_remove: pmpo_store::secrets::hidden_variables(),
        stdin: Some(stdin),
        capture_limit: 256 << 20,
        capture_tail: 0,
        timeout: Some(CHECK_TIMEOUT),
        kill_grace: Duration::ZERO,
        // The child sets its memory limit itself (see `child_argv`).
        ..pmpo_process::ProcessSpec::new(limits::child_argv(exe, SUBCOMMAND, limit))
    };
    let r = match pmpo_process::run_blocking(&spec, Some(ctx.cancel)) {
        Ok(r) => r,
        Err(e) => {
            return failed(format!(
                "cannot start the child process for the `{name}` check ({}): {e}; the pmpo binary must stay in place while it runs, or set {}=off",
                exe.display(),
                limits::ISOLATION_VAR
            ));
        }
    };
    use pmpo_process::Termination;
    match r.termination {
        Termination::Exited(0) => match serde_json::from_slice::<Answer>(&r.stdout.kept()) {
            Ok(a) => Verdict {
                status: a.status,
                message: a.message,
                evidence: a.evidence,
            },
            Err(e) => failed(format!(
                "the child process of the `{name}` check gave no readable answer: {e}"
            )),
        },
        Termination::TimedOut => failed(format!(
            "the `{name}` check did not finish within {} s and was stopped (is the file or the schema pathological?)",
            CHECK_TIMEOUT.as_secs()
        )),
        Termination::Cancelled => failed("cancelled".into()),
        Termination::Exited(_) | Termination::Signaled(_) => {
            let err = r.stderr.text();
            if limits::died_of_memory(&err) {
                let limit = limit.map_or("no limit".into(), limits::human_size);
                failed(format!(
                    "the `{name}` check ran out of memory: it needed more than its limit of {limit} ({}); make the input smaller or raise the limit (e.g. {}=8G, 0 for none)",
                    limits::MEMORY_VAR,
                    limits::MEMORY_VAR
                ))
            } else {
                let last = r
                    .stderr
                    .last_line()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                let how = match r.termination {
                    Termination::Signaled(sig) => format!("was killed by signal {sig}"),
                    t => format!("ended ({t:?})"),
                };
                let under = limit.map_or(String::new(), |l| {
                    format!(
                        " (its memory limit is {}, {}: too low a limit can stop it this way)",
                        limits::human_size(l),
                        limits::MEMORY_VAR
                    )
                });
                failed(format!(
                    "the child process of the `{name}` check {how} without a verdict{last}{under}"
                ))
            }
        }
    }
}

/// The child's side: one check request on stdin, its verdict on stdout.
/// Returns the exit code (0 whenever a verdict was printed).
pub fn serve_child() -> i32 {
    use std::io::Write;
    let request: Request =
        match pmpo_tools::isolate::read_child_request(SUBCOMMAND, "check request", "one check") {
            Ok(r) => r,
            Err(code) => return code,
        };
    let answer = match Workspace::open(&request.root) {
        Ok(ws) => {
            static NEVER: AtomicBool = AtomicBool::new(false);
            let o = crate::run_check_cancellable(&ws, &request.check, &request.params, &NEVER);
            Answer {
                status: o.status,
                message: o.message,
                evidence: o.evidence,
            }
        }
        Err(e) => Answer {
            status: ValidationStatus::Failed,
            message: e.to_string(),
            evidence: json!({ "error": e.to_string() }),
        },
    };
    let mut out = std::io::stdout().lock();
    match serde_json::to_writer(&mut out, &answer) {
        Ok(()) => {
            let _ = out.flush();
            0
        }
        Err(e) => {
            eprintln!("pmpo {SUBCOMMAND}: cannot write the verdict: {e}");
            2
        }
    }
}
