//! `pmpo preview PAGE`: one preview outside a plan (screenshot + report).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use pmpo_store::Workspace;
use pmpo_tools::preview::{CheckState, PreviewReport, evaluate_report, preview_once};
use serde_json::{Map, json};

use crate::error::CliError;

#[derive(Args)]
pub struct PreviewArgs {
    /// The page (.html) or component entry (.tsx/.jsx) to preview.
    page: PathBuf,
    /// Name of the preview (its directory under dist/previews/); default: the file name.
    #[arg(long)]
    id: Option<String>,
    /// The workspace (the page must be inside it; outputs go to its dist/previews/). Default: the current directory.
    #[arg(long, short = 'w', value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Allow the page to load from the network (a network copy of HTMX included).
    #[arg(long)]
    network: bool,
    /// Runtimes pmpo may add to a page that uses them and loads none itself: auto, none, or a comma-separated list from htmx, alpine.
    #[arg(long, value_name = "LIST", default_value = "auto", value_parser = parse_runtimes)]
    runtimes: serde_json::Value,
    /// Do not audit the rendered page's accessibility (axe-core); the report says it was not checked.
    #[arg(long)]
    no_accessibility: bool,
    /// Viewport as WIDTHxHEIGHT.
    #[arg(long, value_name = "WxH", default_value = "1024x768", value_parser = parse_viewport)]
    viewport: (u32, u32),
    /// Exit 1 also when the page logs console errors, throws, has failed requests or renders blank.
    #[arg(long)]
    strict: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Time limit for the whole preview (e.g. 30s).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::parse_duration)]
    timeout: Duration,
}

fn parse_viewport(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or("expected WIDTHxHEIGHT, e.g. 1024x768")?;
    let n = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (16..=8192).contains(n))
            .ok_or(format!("`{v}` is not a size from 16 to 8192"))
    };
    Ok((n(w)?, n(h)?))
}

fn parse_runtimes(s: &str) -> Result<serde_json::Value, String> {
    match s.trim() {
        "auto" => Ok(json!("auto")),
        "none" | "" => Ok(json!([])),
        list => {
            let names: Vec<&str> = list.split(',').map(str::trim).collect();
            match names.iter().find(|n| !matches!(**n, "htmx" | "alpine")) {
                Some(bad) => Err(format!(
                    "unknown runtime `{bad}`: use auto, none, or a list from htmx, alpine (e.g. htmx,alpine)"
                )),
                None => Ok(json!(names)),
            }
        }
    }
}

fn relative_to(root: &Path, page: &Path) -> Result<String, String> {
    let abs = std::fs::canonicalize(page)
        .map_err(|e| format!("cannot open `{}`: {e}", page.display()))?;
    abs.strip_prefix(root)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .map_err(|_| {
            format!(
                "`{}` is outside the workspace `{}`; pass --workspace DIR (a directory that contains it)",
                page.display(),
                root.display()
            )
        })
}

pub fn run(args: PreviewArgs) -> u8 {
    let root = args.workspace.clone().unwrap_or_else(|| PathBuf::from("."));
    let ws = match Workspace::open(&root) {
        Ok(ws) => ws,
        Err(e) => return CliError::invalid(e).report(),
    };
    let rel = match relative_to(ws.root(), &args.page) {
        Ok(r) => r,
        Err(e) => return CliError::invalid(e).report(),
    };
    let mut inputs = Map::new();
    inputs.insert("input".into(), json!(rel));
    if let Some(id) = &args.id {
        inputs.insert("id".into(), json!(id));
    }
    inputs.insert("network".into(), json!(args.network));
    inputs.insert("runtimes".into(), args.runtimes.clone());
    inputs.insert("accessibility".into(), json!(!args.no_accessibility));
    inputs.insert("required".into(), json!(true));
    inputs.insert(
        "viewport".into(),
        json!({"width": args.viewport.0, "height": args.viewport.1}),
    );
    let Some(runtime) = crate::runtime() else {
        return crate::EXIT_STAGE_FAILED;
    };
    let result = runtime.block_on(preview_once(&ws, &inputs, args.timeout));
    let (report, report_rel) = match result {
        Ok(r) => r,
        Err(e) => {
            return CliError::invalid(e.message)
                .hint(e.hint.unwrap_or_default())
                .report();
        }
    };
    let shot = report
        .screenshot
        .as_ref()
        .and_then(|p| ws.resolve(p).ok())
        .and_then(|p| std::fs::read(p).ok());
    let verdict = evaluate_report(&report, shot.as_deref());
    if args.json {
        let out = json!({"report": report, "report_path": report_rel, "check": verdict});
        let text = serde_json::to_string_pretty(&out).unwrap_or_default() + "\n";
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    } else {
        print_human(&report, &report_rel, &verdict.criteria);
    }
    if report.status != "success" || (args.strict && !verdict.passed) {
        crate::EXIT_STAGE_FAILED
    } else {
        crate::EXIT_OK
    }
}

fn print_human(
    r: &PreviewReport,
    report_rel: &str,
    criteria: &[pmpo_tools::preview::report::CriterionResult],
) {
    let mut text = String::new();
    macro_rules! out {
        ($($arg:tt)*) => {{
            text.push_str(&format!($($arg)*));
            text.push('\n');
        }};
    }
    out!(
        "preview {}: {} ({} driver, runtime: {}, {:.0} ms)",
        r.artifact_id,
        r.status,
        r.driver,
        r.runtime_source,
        r.timings.total_ms
    );
    if let Some(reason) = &r.reason {
        out!("  reason: {reason}");
    }
    if let Some(hint) = &r.hint {
        out!("  help: {hint}");
    }
    if let Some(s) = &r.screenshot {
        out!("  screenshot: {s}");
    }
    if !r.html.is_empty() {
        out!("  page:       {}", r.html);
    }
    out!("  report:     {report_rel}");
    for m in r
        .console
        .iter()
        .filter(|m| m.level == "error" || m.level == "warning")
    {
        let at = match (&m.at.url, m.at.line) {
            (Some(u), Some(l)) => format!(" ({u}:{l})"),
            _ => String::new(),
        };
        out!("  console {}: {}{at}", m.level, m.text);
    }
    for e in &r.page_errors {
        out!("  page error: {}", e.message);
    }
    for f in &r.failed_requests {
        out!("  failed request: {} {} ({})", f.method, f.url, f.reason);
    }
    for n in &r.notes {
        out!("  note: {n}");
    }
    if let Some(a) = &r.accessibility {
        out!("  {}", a.summary());
        for v in &a.violations {
            let at: Vec<&str> = v.nodes.iter().map(|n| n.selector.as_str()).collect();
            out!(
                "    {} ({}): {} at {}",
                v.rule,
                v.impact,
                v.help,
                at.join(", ")
            );
        }
    }
    for f in &r.findings {
        out!("  finding ({}) {}: {}", f.severity, f.code, f.message);
        if let Some(hint) = &f.hint {
            out!("    help: {hint}");
        }
    }
    let failed: Vec<&str> = criteria
        .iter()
        .filter(|c| c.state == CheckState::Failed)
        .map(|c| c.name.as_str())
        .collect();
    if failed.is_empty() {
        out!("  check: passed");
    } else {
        out!("  check: failed ({})", failed.join(", "));
    }
    // A closed stdout (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
}
