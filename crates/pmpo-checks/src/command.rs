//! `command` and its ready-made forms: `build`, `tests`, `lint`, `syntax`
//! (`python3 -m py_compile FILE`, `node --check FILE`), `import`
//! (`python3 -c 'import M'`, `node -e 'require("M")'`).
//!
//! The process runs in the workspace, in its own process group, with stdin
//! closed; at the time limit the whole group is stopped (SIGTERM, then
//! SIGKILL after a short grace). Output is kept (bounded: the first and the
//! last 64 KiB of each stream) as evidence.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::formats::{FileVerdict, per_file};
use crate::params::{self, Kind, get_duration, get_str, opt, req};
use crate::{CheckDef, CheckError, Ctx, Verdict};
use pmpo_tools::process::PreExec;

/// Output bytes kept per stream from its start, and as many from its end (the rest is counted).
const KEEP: usize = 64 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

const COMMAND_PARAMS: &[crate::Param] = &[
    req(
        "command",
        Kind::Argv,
        "the argv list, e.g. [cargo, build] (no shell; use [sh, -c, \"...\"] for one)",
    ),
    opt(
        "expect_exit",
        Kind::Int,
        "the exit code that passes (default 0)",
    ),
    opt(
        "timeout",
        Kind::Duration,
        "time limit (default 120s); the process group is killed after it",
    ),
    opt(
        "cwd",
        Kind::Str,
        "working directory relative to the workspace (default: the workspace)",
    ),
    opt("env", Kind::StrMap, "extra environment variables"),
    opt(
        "stdout_contains",
        Kind::Str,
        "text that stdout must contain",
    ),
    opt(
        "writes",
        Kind::StrOrList,
        "workspace files, directories or globs the command may write (the sandbox refuses or reports other writes)",
    ),
];

fn cwd_rules(p: &Map<String, Value>) -> Vec<pmpo_plan::InputIssue> {
    let mut issues = match p.get("cwd").and_then(Value::as_str) {
        Some(c) if c != "." => match pmpo_plan::validate_output_pattern(c) {
            Err(m) => vec![params::issue("cwd", format!("cwd `{c}` {m}"), None)],
            Ok(()) => Vec::new(),
        },
        _ => Vec::new(),
    };
    for w in params::get_strs(p, "writes") {
        if let Err(m) = pmpo_plan::validate_output_pattern(&w) {
            issues.push(params::issue(
                "writes",
                format!("`writes:` entry `{w}` {m}"),
                None,
            ));
        }
    }
    issues
}

/// A check of the `command` family: same parameters, rules and runner, its
/// own name for what the command is.
const fn command_like(
    name: &'static str,
    aliases: &'static [&'static str],
    summary: &'static str,
) -> CheckDef {
    CheckDef {
        name,
        aliases,
        summary,
        params: COMMAND_PARAMS,
        rules: cwd_rules,
        run: run_command_check,
    }
}

pub(crate) const COMMAND: CheckDef = command_like(
    "command",
    &["run", "exec"],
    "a command exits with the expected code within its time limit",
);

pub(crate) const BUILD: CheckDef = command_like(
    "build",
    &["build_success", "build-success"],
    "a build command succeeds (same parameters as `command`)",
);

pub(crate) const TESTS: CheckDef = command_like(
    "tests",
    &["test", "test_suite", "unit_tests", "test-suite"],
    "a test suite passes (same parameters as `command`)",
);

pub(crate) const LINT: CheckDef = command_like(
    "lint",
    &["linting"],
    "a linter reports no error (same parameters as `command`)",
);

pub(crate) const SYNTAX: CheckDef = CheckDef {
    name: "syntax",
    aliases: &["syntax_check", "compile"],
    summary: "source files compile: python3 (as py_compile, writing no .pyc), node --check FILE",
    params: &[
        req(
            "path",
            Kind::Paths,
            "the source file(s): a path or glob, or a list",
        ),
        opt(
            "language",
            Kind::OneOf(&["python", "node"]),
            "python or node (default: by extension, .py / .js .mjs .cjs)",
        ),
        opt(
            "timeout",
            Kind::Duration,
            "time limit per file (default 120s)",
        ),
    ],
    rules: crate::no_rules,
    run: syntax,
};

pub(crate) const IMPORT: CheckDef = CheckDef {
    name: "import",
    aliases: &["import_check", "importable"],
    summary: "a module imports: python3 -c 'import M' or node -e 'require(\"M\")'",
    params: &[
        req(
            "module",
            Kind::Str,
            "the module name, e.g. main or my_pkg.api",
        ),
        opt(
            "language",
            Kind::OneOf(&["python", "node"]),
            "python (default) or node",
        ),
        opt(
            "cwd",
            Kind::Str,
            "directory to import from, relative to the workspace",
        ),
        opt("timeout", Kind::Duration, "time limit (default 120s)"),
    ],
    rules: cwd_rules,
    run: import,
};

/// How a process ended.
pub(crate) struct Finished {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    /// The kept text: the head, a marker where bytes were dropped, the tail.
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Bytes of stdout kept (head and tail), and whether some were dropped.
    pub stdout_kept: u64,
    pub stdout_truncated: bool,
    pub duration: Duration,
    /// What the runner could not do as usual (pipes held open by an escaped process).
    pub note: Option<String>,
}

/// Runs argv in `dir` with a time limit, through pmpo's one process runner:
/// its own process group, stdin closed, pmpo's secrets kept from it; at the
/// time limit or a cancel the whole group is stopped.
pub(crate) fn run_argv(
    argv: &[String],
    dir: &std::path::Path,
    env: &[(String, String)],
    timeout: Duration,
    cancel: &AtomicBool,
    pre_exec: Option<&PreExec>,
) -> Result<Finished, String> {
    let prog = argv.first().ok_or("the command is empty")?;
    let spec = pmpo_process::ProcessSpec {
        cwd: Some(dir.to_path_buf()),
        env_remove: pmpo_store::secrets::hidden_variables(),
        env: env.to_vec(),
        capture_limit: KEEP,
        capture_tail: KEEP,
        timeout: Some(timeout),
        // The sandbox's hook confines the thread that starts the command.
        confine_thread: pre_exec.cloned(),
        ..pmpo_process::ProcessSpec::new(argv.iter().cloned())
    };
    let r = pmpo_process::run_blocking(&spec, Some(cancel)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{prog}` was not found: install it or fix the command name")
        } else {
            format!("cannot start `{prog}`: {e}")
        }
    })?;
    use pmpo_process::Termination as T;
    // How the process itself ended, also when the time limit or a cancel stopped it.
    let (exit_code, signal) = match r.exit {
        Some(T::Exited(c)) => (Some(c), None),
        Some(T::Signaled(s)) => (None, Some(s)),
        _ => (None, None),
    };
    Ok(Finished {
        exit_code,
        signal,
        timed_out: r.termination == T::TimedOut,
        cancelled: r.termination == T::Cancelled,
        // A key the command printed is not kept in the evidence.
        stdout: pmpo_store::secrets::redact(&r.stdout.text()).into_owned(),
        stderr: pmpo_store::secrets::redact(&r.stderr.text()).into_owned(),
        stdout_bytes: r.stdout.total,
        stderr_bytes: r.stderr.total,
        stdout_kept: (r.stdout.head.len() + r.stdout.tail.len()) as u64,
        stdout_truncated: r.stdout.truncated(),
        duration: r.duration,
        note: r.note,
    })
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn workdir(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<std::path::PathBuf, CheckError> {
    match get_str(p, "cwd") {
        None | Some(".") | Some("") => Ok(ctx.ws.root().to_path_buf()),
        Some(c) => {
            let d = ctx.ws.resolve(c)?;
            if !d.is_dir() {
                return Err(CheckError::File {
                    path: c.to_string(),
                    why: "is not a directory".into(),
                });
            }
            // The directory itself may be a symbolic link leading out.
            match std::fs::canonicalize(&d) {
                Ok(real) if real.starts_with(ctx.ws.root()) => Ok(real),
                Ok(real) => Err(CheckError::File {
                    path: c.to_string(),
                    why: format!(
                        "is a symbolic link to `{}`, outside the workspace; refused, not followed",
                        real.display()
                    ),
                }),
                Err(e) => Err(CheckError::File {
                    path: c.to_string(),
                    why: format!("cannot be resolved: {e}"),
                }),
            }
        }
    }
}

/// Judges a finished process against an expected exit code.
fn judge(
    argv: &[String],
    f: &Finished,
    expect: i32,
    timeout: Duration,
    must_contain: Option<&str>,
) -> Verdict {
    let shown = argv.join(" ");
    let mut evidence = json!({
        "command": argv,
        "expected_exit": expect,
        "exit_code": f.exit_code,
        "signal": f.signal,
        "timed_out": f.timed_out,
        "timeout_ms": timeout.as_millis() as u64,
        "duration_ms": f.duration.as_millis() as u64,
        "stdout": f.stdout,
        "stderr": f.stderr,
        "stdout_bytes": f.stdout_bytes,
        "stderr_bytes": f.stderr_bytes,
    });
    let (passed, message) = if f.cancelled {
        (
            false,
            format!("`{shown}` was cancelled; its process group was killed"),
        )
    } else if f.timed_out {
        (
            false,
            format!("`{shown}` timed out after {timeout:?}; its process group was killed"),
        )
    } else if let Some(sig) = f.signal {
        (false, format!("`{shown}` was killed by signal {sig}"))
    } else if f.exit_code != Some(expect) {
        let t = tail(&f.stderr, 3);
        let t = if t.is_empty() { tail(&f.stdout, 3) } else { t };
        (
            false,
            format!(
                "`{shown}` exited with {}, expected {expect}{}",
                f.exit_code.map_or("no code".into(), |c| c.to_string()),
                if t.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.replace('\n', " | "))
                }
            ),
        )
    } else if let Some(text) = must_contain
        && !f.stdout.contains(text)
    {
        (
            false,
            format!("`{shown}` exited with {expect}, but stdout does not contain {text:?}"),
        )
    } else {
        (
            true,
            format!(
                "`{shown}` exited with {expect} in {} ms",
                f.duration.as_millis()
            ),
        )
    };
    if let (Some(t), Some(o)) = (must_contain, evidence.as_object_mut()) {
        o.insert("stdout_contains".into(), json!(t));
    }
    if let (Some(n), Some(o)) = (&f.note, evidence.as_object_mut()) {
        o.insert("note".into(), json!(n));
    }
    // A cancelled command said nothing about what it checks; output cut at the
    // capture limit may hold the awaited text in the part that was dropped.
    let truncated = f.stdout_truncated;
    if f.cancelled {
        return Verdict::not_checked(message, evidence);
    }
    if !passed
        && truncated
        && f.exit_code == Some(expect)
        && let Some(text) = must_contain
    {
        return Verdict::not_checked(
            format!(
                "`{shown}` exited with {expect}; {text:?} is not in the {} bytes of stdout kept out of {}, so it was not checked",
                f.stdout_kept, f.stdout_bytes
            ),
            evidence,
        );
    }
    Verdict::new(passed, message, evidence)
}

fn run_command_check(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let argv = params::get_strs(p, "command");
    let expect = p.get("expect_exit").and_then(Value::as_i64).unwrap_or(0) as i32;
    let timeout = get_duration(p, "timeout", DEFAULT_TIMEOUT)?;
    let env: Vec<(String, String)> = p
        .get("env")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut env = env;
    env.push((
        "PMPO_WORKSPACE".to_string(),
        ctx.ws.root().to_string_lossy().into_owned(),
    ));
    let dir = workdir(ctx, p)?;
    let writes = params::get_strs(p, "writes");
    let watch = match crate::confine::begin(ctx, &writes) {
        Ok(w) => w,
        Err(e) => {
            return Ok(Verdict::new(
                false,
                format!("the command was not run: {e}"),
                json!({"command": argv, "writes": writes}),
            ));
        }
    };
    env.extend(watch.env.iter().cloned());
    let ran = run_argv(
        &argv,
        &dir,
        &env,
        timeout,
        ctx.cancel,
        watch.pre_exec.as_ref(),
    );
    let undeclared = watch.finish();
    let mut v = match ran {
        Ok(f) => {
            let mut v = judge(&argv, &f, expect, timeout, get_str(p, "stdout_contains"));
            let refused = matches!(watch.mode, pmpo_sandbox::Mode::Landlock { .. })
                && !v.passed()
                && f.exit_code.is_some();
            if refused && let Some(path) = pmpo_sandbox::refused_write(&f.stderr) {
                v.message = format!(
                    "{} (undeclared_write: the sandbox refused a write{}; declare it in the check's `writes:`)",
                    v.message,
                    path.map(|p| format!(" to `{p}`")).unwrap_or_default()
                );
            }
            v
        }
        Err(e) => Verdict::new(false, e, json!({"command": argv})),
    };
    if let Some(o) = v.evidence.as_object_mut() {
        o.insert("sandbox".into(), json!(watch.mode.label()));
    }
    if !undeclared.is_empty() {
        let shown: Vec<String> = undeclared
            .iter()
            .take(10)
            .map(|d| format!("{} `{}`", d.kind.as_str(), d.path))
            .collect();
        v = Verdict::new(
            false,
            format!(
                "undeclared_write: `{}` changed files outside its `writes:`: {}",
                argv.join(" "),
                shown.join(", ")
            ),
            v.evidence,
        );
        if let Some(o) = v.evidence.as_object_mut() {
            o.insert(
                "undeclared".into(),
                json!(
                    undeclared
                        .iter()
                        .map(|d| json!({"path": d.path, "change": d.kind.as_str()}))
                        .collect::<Vec<_>>()
                ),
            );
        }
    }
    Ok(v)
}

fn language_of(path: &str, given: Option<&str>) -> Option<&'static str> {
    match given {
        Some(l) if l.eq_ignore_ascii_case("python") => Some("python"),
        Some(l) if l.eq_ignore_ascii_case("node") => Some("node"),
        _ => match crate::fsx::ext(path).as_str() {
            "py" => Some("python"),
            "js" | "mjs" | "cjs" => Some("node"),
            _ => None,
        },
    }
}

fn syntax(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let timeout = get_duration(p, "timeout", DEFAULT_TIMEOUT)?;
    let lang = get_str(p, "language");
    let root = ctx.ws.root().to_path_buf();
    per_file(ctx, p, &|f| {
        let Some(l) = language_of(&f.rel, lang) else {
            return Ok(FileVerdict::bad(
                "cannot tell the language from the extension; set `language: python` or `node`",
                json!({}),
            ));
        };
        // The file is passed after `--`-free fixed arguments, as a path relative to the
        // workspace: no shell, no splicing into code.
        let argv: Vec<String> = match l {
            // What `python -m py_compile FILE` checks, without writing a .pyc into the tree.
            "python" => vec![
                "python3".into(),
                "-c".into(),
                "import sys; compile(open(sys.argv[1], 'rb').read(), sys.argv[1], 'exec')".into(),
                f.rel.clone(),
            ],
            _ => vec!["node".into(), "--check".into(), f.rel.clone()],
        };
        let env = vec![("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string())];
        Ok(
            match run_argv(&argv, &root, &env, timeout, ctx.cancel, None) {
                Err(e) => FileVerdict::bad(e, json!({"command": argv})),
                Ok(fin) => {
                    let v = judge(&argv, &fin, 0, timeout, None);
                    let detail = json!({"command": argv, "exit_code": fin.exit_code, "stderr": tail(&fin.stderr, 20)});
                    if v.passed() {
                        FileVerdict::ok(format!("{l} syntax ok"), detail)
                    } else {
                        let why = tail(&fin.stderr, 4).replace('\n', " | ");
                        FileVerdict::bad(
                            if why.is_empty() {
                                v.message
                            } else {
                                format!("{l} syntax error: {why}")
                            },
                            detail,
                        )
                    }
                }
            },
        )
    })
}

fn valid_module(m: &str) -> bool {
    !m.is_empty()
        && m.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | '@'))
}

fn import(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let module = get_str(p, "module").unwrap_or_default();
    if !valid_module(module) {
        return Err(CheckError::Param(format!(
            "`{module}` is not a module name (letters, digits, _ . - / @)"
        )));
    }
    let timeout = get_duration(p, "timeout", DEFAULT_TIMEOUT)?;
    let dir = workdir(ctx, p)?;
    let node = get_str(p, "language").is_some_and(|l| l.eq_ignore_ascii_case("node"));
    // The module name reaches the interpreter through the environment, never as code text.
    let argv: Vec<String> = if node {
        vec![
            "node".into(),
            "-e".into(),
            "const m = process.env.PMPO_MODULE; require(m.startsWith('.') ? require('path').resolve(m) : m)".into(),
        ]
    } else {
        vec![
            "python3".into(),
            "-c".into(),
            "import importlib, os, sys; sys.path.insert(0, os.getcwd()); importlib.import_module(os.environ['PMPO_MODULE'])".into(),
        ]
    };
    let env = vec![
        ("PMPO_MODULE".to_string(), module.to_string()),
        ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
    ];
    match run_argv(&argv, &dir, &env, timeout, ctx.cancel, None) {
        Err(e) => Ok(Verdict::new(false, e, json!({"module": module}))),
        Ok(f) => {
            let mut v = judge(&argv, &f, 0, timeout, None);
            let lang = if node { "node" } else { "python" };
            v.message = if v.passed() {
                format!("{lang} module `{module}` imports")
            } else {
                let why = tail(&f.stderr, 2).replace('\n', " | ");
                format!("{lang} module `{module}` does not import: {why}")
            };
            if let Some(o) = v.evidence.as_object_mut() {
                o.insert("module".into(), json!(module));
                o.insert("language".into(), json!(lang));
            }
            Ok(v)
        }
    }
}
