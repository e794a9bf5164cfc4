//! `pmpo validate`: runs a plan's `validation_plan` on the workspace as it is,
//! writes `constraints.json`, and reports per constraint (text, JSON, JUnit XML).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pmpo_engine::Engine;
use pmpo_engine::results::ValidationOutput;
use pmpo_engine::validation::{self, ConstraintStatus, ValidationReport};
use pmpo_store::states::ValidationStatus;
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::error::CliError;
use crate::{EXIT_OK, EXIT_STAGE_FAILED, load_and_check, report};

#[derive(clap::Args)]
pub struct Args {
    /// The plan file (YAML or JSON).
    plan: PathBuf,
    /// Validate this directory instead of the plan's directory.
    #[arg(long, short = 'w', value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Also write a JUnit XML report here (one test case per check, a test suite per constraint).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Exit 1 when any constraint is violated, not only a blocking one.
    #[arg(long)]
    strict: bool,
}

pub fn run(args: Args) -> u8 {
    let engine = Engine::default();
    let plan = match load_and_check(&engine, &args.plan, args.json) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let dir = args
        .workspace
        .clone()
        .unwrap_or_else(|| match args.plan.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        });
    let ws = match pmpo_store::Workspace::open(&dir) {
        Ok(ws) => ws,
        Err(e) => {
            return CliError::invalid(e)
                .hint("create it, or pass --workspace DIR")
                .report();
        }
    };
    // Ctrl-C (or SIGTERM, SIGHUP) stops the running check (a command's whole
    // process group is killed).
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let stop = crate::signals::on_terminating_signals(move || flag.store(true, Ordering::Relaxed));
    let report = match validation::validate_workspace(&ws, &plan, &cancel) {
        Ok(r) => r,
        Err(e) => {
            // As for `execute`: a busy workspace is 4, a store setting at fault 2.
            let code = match e {
                pmpo_engine::EngineError::Busy(_) => 4,
                pmpo_engine::EngineError::Db(ref d) if d.is_setting() => 2,
                _ => EXIT_STAGE_FAILED,
            };
            return CliError::with_code(&e, code).hint(e.hint()).report();
        }
    };
    if let Some(path) = &args.junit
        && let Err(e) = junit_xml(&report).and_then(|xml| write_report(&ws, path, xml.as_bytes()))
    {
        return CliError::failed(format!(
            "cannot write the JUnit report `{}`: {e}",
            path.display()
        ))
        .report();
    }
    if args.json {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, &report);
        let _ = writeln!(out);
    } else {
        print_text(&report);
    }
    if cancel.load(Ordering::Relaxed) {
        errln!("validation cancelled; the checks not run are recorded as not_checked");
        return stop.exit_code();
    }
    // A blocking constraint that a check could not look at is not satisfied:
    // not a success (`report.ok` says both).
    let failed = !report.ok || (args.strict && report.summary.violated > 0);
    if failed { EXIT_STAGE_FAILED } else { EXIT_OK }
}

fn print_text(r: &ValidationReport) {
    let color = report::use_color();
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    for c in &r.reports {
        let status = match c.status {
            ConstraintStatus::Satisfied => paint("32", "satisfied"),
            ConstraintStatus::Violated => paint("1;31", "VIOLATED"),
            ConstraintStatus::NotChecked => paint("33", "not checked"),
            ConstraintStatus::Pending => paint("33", "pending"),
        };
        let _ = writeln!(out, "{} ({}): {status}", c.id, c.severity);
        for &i in &c.checks {
            let v = &r.validation_outputs[i];
            // Anything but a pass or a failure: the check did not (or could not) look.
            let mark = match v.status {
                ValidationStatus::Passed => paint("32", "PASS"),
                ValidationStatus::Failed => paint("31", "FAIL"),
                ValidationStatus::NotChecked => paint("33", "NOT CHECKED"),
            };
            let _ = writeln!(
                out,
                "  {mark} {} ({:.0} ms): {}",
                v.check,
                v.duration_ms,
                validation::message_of(v)
            );
        }
    }
    let s = &r.summary;
    let _ = writeln!(
        out,
        "{} constraint(s): {} satisfied, {} violated ({} blocking), {} not checked ({} blocking); constraints.json written",
        s.total,
        s.satisfied,
        s.violated,
        s.blocking_violated,
        s.not_checked,
        s.blocking_not_checked
    );
    out!("{out}");
}

/// The workspace-relative form of `path` when it is inside the workspace
/// (through its deepest existing ancestor, links resolved).
fn inside(ws: &pmpo_store::Workspace, path: &Path) -> Option<String> {
    let abs = std::path::absolute(path).ok()?;
    let mut rest = Vec::new();
    let mut at = abs.as_path();
    loop {
        if let Ok(real) = at.canonicalize() {
            let mut full = real;
            full.extend(rest.iter().rev());
            return ws.relative(&full).filter(|r| !r.is_empty());
        }
        rest.push(at.file_name()?.to_os_string());
        at = at.parent()?;
    }
}

/// Writes the JUnit report: inside the workspace through the store's
/// recorded write path (backed up, ledgered, writer `validate`), elsewhere
/// (a path the user names, outside any workspace) as a plain atomic write.
fn write_report(ws: &pmpo_store::Workspace, path: &Path, bytes: &[u8]) -> Result<(), String> {
    match inside(ws, path) {
        Some(rel) => {
            let run_id = format!("validate-{}", now_stamp());
            let who = pmpo_store::Writer {
                run_id: &run_id,
                writer: "validate",
            };
            ws.write_file(&rel, bytes, who)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        None => write_file(path, bytes).map_err(|e| e.to_string()),
    }
}

fn now_stamp() -> String {
    pmpo_store::now_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// Writes a file next to its final name, then renames it into place.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "junit.xml".into());
    let tmp = path.with_file_name(format!(".{name}.pmpo-tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn duration(ms: f64) -> Duration {
    Duration::from_secs_f64((ms / 1000.0).max(0.0))
}

/// JUnit XML: a test suite per constraint, a test case per check; a check that
/// was not run or could not look is a skipped test case whose message says
/// why (JUnit has no "not checked"); a constraint without an executed check
/// is one skipped test case. A blocking constraint that a check could not
/// look at is a failed test case of its suite: CI must not show it green.
pub fn junit_xml(r: &ValidationReport) -> Result<String, String> {
    let outputs: &[ValidationOutput] = &r.validation_outputs;
    let mut report = Report::new(format!("pmpo validate {}", r.plan));
    let checked_at = chrono::DateTime::parse_from_rfc3339(&r.checked_at).ok();
    let mut all_ms = 0.0;
    for c in &r.reports {
        let mut suite = TestSuite::new(c.id.as_str());
        let total_ms: f64 = c.checks.iter().map(|&i| outputs[i].duration_ms).sum();
        for (n, &i) in c.checks.iter().enumerate() {
            suite.add_test_case(check_case(&c.id, n, &outputs[i]));
        }
        let could_not_look = c.checks.iter().any(|&i| {
            outputs[i].status == ValidationStatus::NotChecked
                && outputs[i].evidence.get("not_run") != Some(&serde_json::Value::Bool(true))
        });
        if c.status == ConstraintStatus::NotChecked
            && c.severity == pmpo_plan::Severity::Blocking
            && could_not_look
        {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status
                .set_message(format!(
                    "blocking constraint `{}` is not satisfied: a check could not look at what it checks",
                    c.id
                ))
                .set_type("not_checked");
            let mut case = TestCase::new("blocking constraint checked", status);
            case.set_classname(format!("pmpo.{}", c.id))
                .set_time(Duration::ZERO);
            suite.add_test_case(case);
        }
        if c.checks.is_empty() {
            let mut status = TestCaseStatus::skipped();
            status.set_message("no check in the validation_plan names this constraint");
            let mut case = TestCase::new("not_checked", status);
            case.set_classname(format!("pmpo.{}", c.id))
                .set_time(Duration::ZERO);
            suite.add_test_case(case);
        }
        suite.set_time(duration(total_ms));
        if let Some(at) = checked_at {
            suite.set_timestamp(at);
        }
        suite.add_properties([
            Property::new("severity", c.severity.to_string()),
            Property::new("status", c.status.as_str()),
            Property::new("description", c.description.as_str()),
        ]);
        report.add_test_suite(suite);
        all_ms += total_ms;
    }
    report.set_time(duration(all_ms));
    report.to_string().map_err(|e| e.to_string())
}

/// The test case of one check: passed (its evidence as output), failed (the
/// evidence as the failure's text) or skipped (the reason as its message).
fn check_case(constraint: &str, n: usize, v: &ValidationOutput) -> TestCase {
    let name = match &v.stage {
        Some(s) => format!("{}: {} (stage {s})", n + 1, v.check),
        None => format!("{}: {}", n + 1, v.check),
    };
    let evidence = serde_json::to_string_pretty(&v.evidence).unwrap_or_default();
    let status = match v.status {
        ValidationStatus::Passed => TestCaseStatus::success(),
        ValidationStatus::Failed => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(validation::message_of(v))
                .set_type(v.check.as_str())
                .set_description(evidence.as_str());
            s
        }
        ValidationStatus::NotChecked => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(validation::message_of(v));
            s
        }
    };
    let passed = matches!(status, TestCaseStatus::Success { .. });
    let mut case = TestCase::new(name, status);
    case.set_classname(format!("pmpo.{constraint}"))
        .set_time(duration(v.duration_ms));
    if passed {
        case.set_system_out(evidence);
    }
    case
}
