//! `pmpo validate`: runs a plan's `validation_plan` on the workspace as it is,
//! writes `constraints.json`, and reports per constraint (text, JSON, JUnit XML).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pmpo_engine::Engine;
use pmpo_engine::results::ValidationOutput;
use pmpo_engine::validation::{self, ConstraintStatus, ValidationReport};

use crate::{EXIT_INVALID, EXIT_OK, EXIT_STAGE_FAILED, load_and_check, report};

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
            errln!("error: {e}\n  help: create it, or pass --workspace DIR");
            return EXIT_INVALID;
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
            errln!("error: {e}\n  help: check that the workspace is writable and has free space");
            return EXIT_STAGE_FAILED;
        }
    };
    if let Some(path) = &args.junit
        && let Err(e) = write_report(&ws, path, junit_xml(&report).as_bytes())
    {
        errln!(
            "error: cannot write the JUnit report `{}`: {e}",
            path.display()
        );
        return EXIT_STAGE_FAILED;
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
            let mark = match v.status.as_str() {
                "passed" => paint("32", "PASS"),
                "failed" => paint("31", "FAIL"),
                _ => paint("33", "NOT CHECKED"),
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

/// Escapes text for XML attributes and content; drops characters XML 1.0 cannot hold.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: f64) -> String {
    format!("{:.3}", ms / 1000.0)
}

/// JUnit XML: a test suite per constraint, a test case per check; a check that
/// was not run or could not look is a skipped test case whose message says
/// why (JUnit has no "not checked"); a constraint without an executed check
/// is one skipped test case. A blocking constraint that a check could not
/// look at is a failed test case of its suite: CI must not show it green.
pub fn junit_xml(r: &ValidationReport) -> String {
    let outputs: &[ValidationOutput] = &r.validation_outputs;
    let mut suites = String::new();
    let (mut all_tests, mut all_fail, mut all_skip, mut all_ms) = (0, 0, 0, 0.0);
    for c in &r.reports {
        let mut cases = String::new();
        let (mut tests, mut fail, mut skip, mut total_ms) = (0, 0, 0, 0.0);
        for (n, &i) in c.checks.iter().enumerate() {
            let v = &outputs[i];
            tests += 1;
            total_ms += v.duration_ms;
            let name = match &v.stage {
                Some(s) => format!("{}: {} (stage {s})", n + 1, v.check),
                None => format!("{}: {}", n + 1, v.check),
            };
            let _ = write!(
                cases,
                "    <testcase classname=\"pmpo.{}\" name=\"{}\" time=\"{}\">",
                xml_escape(&c.id),
                xml_escape(&name),
                secs(v.duration_ms)
            );
            let evidence = serde_json::to_string_pretty(&v.evidence).unwrap_or_default();
            match v.status.as_str() {
                "passed" => {
                    let _ = write!(
                        cases,
                        "\n      <system-out>{}</system-out>\n    ",
                        xml_escape(&evidence)
                    );
                }
                "failed" => {
                    fail += 1;
                    let _ = write!(
                        cases,
                        "\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    ",
                        xml_escape(validation::message_of(v)),
                        xml_escape(&v.check),
                        xml_escape(&evidence)
                    );
                }
                _ => {
                    skip += 1;
                    let _ = write!(
                        cases,
                        "\n      <skipped message=\"{}\"/>\n    ",
                        xml_escape(validation::message_of(v))
                    );
                }
            }
            cases.push_str("</testcase>\n");
        }
        let could_not_look = c.checks.iter().any(|&i| {
            outputs[i].status.as_str() == "not_checked"
                && outputs[i].evidence.get("not_run") != Some(&serde_json::Value::Bool(true))
        });
        if c.status == ConstraintStatus::NotChecked
            && c.severity == pmpo_plan::Severity::Blocking
            && could_not_look
        {
            tests += 1;
            fail += 1;
            let _ = writeln!(
                cases,
                "    <testcase classname=\"pmpo.{}\" name=\"blocking constraint checked\" time=\"0.000\">\n      <failure message=\"blocking constraint `{}` is not satisfied: a check could not look at what it checks\" type=\"not_checked\"/>\n    </testcase>",
                xml_escape(&c.id),
                xml_escape(&c.id)
            );
        }
        if c.checks.is_empty() {
            tests += 1;
            skip += 1;
            let _ = writeln!(
                cases,
                "    <testcase classname=\"pmpo.{}\" name=\"not_checked\" time=\"0.000\">\n      <skipped message=\"no check in the validation_plan names this constraint\"/>\n    </testcase>",
                xml_escape(&c.id)
            );
        }
        let _ = write!(
            suites,
            "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{fail}\" errors=\"0\" skipped=\"{skip}\" time=\"{}\" timestamp=\"{}\">\n    <properties>\n      <property name=\"severity\" value=\"{}\"/>\n      <property name=\"status\" value=\"{}\"/>\n      <property name=\"description\" value=\"{}\"/>\n    </properties>\n{cases}  </testsuite>\n",
            xml_escape(&c.id),
            secs(total_ms),
            xml_escape(r.checked_at.trim_end_matches('Z')),
            c.severity,
            c.status.as_str(),
            xml_escape(&c.description),
        );
        all_tests += tests;
        all_fail += fail;
        all_skip += skip;
        all_ms += total_ms;
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"pmpo validate {}\" tests=\"{all_tests}\" failures=\"{all_fail}\" errors=\"0\" skipped=\"{all_skip}\" time=\"{}\">\n{suites}</testsuites>\n",
        xml_escape(&r.plan),
        secs(all_ms)
    )
}
