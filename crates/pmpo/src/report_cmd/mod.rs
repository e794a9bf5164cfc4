//! `pmpo report [RUN_ID|NAME]`: one self-contained HTML file (styles inline,
//! pictures as `data:` URIs, nothing fetched) that shows a run or a named
//! artifact to a person. Built on demand only, never during a run.

mod artifact;
mod html;
mod images;
mod preview;
mod run;

use std::path::{Path, PathBuf};

use clap::Args;
use pmpo_store::Workspace;
use pmpo_store::db::ExecStore;
use serde_json::json;

use crate::error::CliError;
use crate::state_cmd::open_ws;

/// Where reports go by default, under the workspace.
pub const REPORT_DIR: &str = "reports";

#[derive(Args)]
pub struct ReportArgs {
    /// A run id (see `pmpo status`) or an artifact's name (see `pmpo list`);
    /// `run:ID` or `artifact:NAME` when one name could be both. Default: the
    /// workspace's last run.
    target: Option<String>,
    /// The workspace directory.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    /// Where to write the report (a path inside the workspace). Default:
    /// reports/run-RUN_ID.html or reports/artifact-NAME.html.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Open the report in a browser once written ($BROWSER, else xdg-open or
    /// open); failing to open it is a warning.
    #[arg(long)]
    open: bool,
    /// Print the path, the size and what the report counted as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// What the report is about.
enum Target {
    Run(String),
    Artifact(String),
}

pub fn report(args: ReportArgs) -> u8 {
    let ws = match open_ws(&args.workspace) {
        Ok(w) => w,
        Err(code) => return code,
    };
    match build(&ws, &args) {
        Ok(code) => code,
        Err(e) => e.report(),
    }
}

fn build(ws: &Workspace, args: &ArgsRef) -> Result<u8, CliError> {
    let mut db = open_store(ws, &args.workspace)?;
    let target = resolve(
        ws,
        db.as_mut().map(|d| d.as_mut() as &mut dyn ExecStore),
        &args.workspace,
        args.target.as_deref(),
    )?;
    let mut gallery = images::Gallery::default();
    let (page, kind, id, counts) = match &target {
        Target::Run(id) => {
            let db = db
                .as_mut()
                .map(|d| d.as_mut() as &mut dyn ExecStore)
                .ok_or_else(|| no_runs(&args.workspace))?;
            let row = db
                .run(id)
                .map_err(|e| CliError::failed(&e).hint(e.hint()))?
                .ok_or_else(|| not_found(ws, Some(db), &args.workspace, id))?;
            let data = run::RunData::load(ws, db, row).map_err(CliError::failed)?;
            let (page, counts) = run::render(ws, &data, &mut gallery);
            (page, "run", id.clone(), serde_json::to_value(counts))
        }
        Target::Artifact(name) => {
            let data = artifact::ArtifactData::load(ws, name).ok_or_else(|| {
                CliError::invalid(format!(
                    "the state of artifact `{name}` in `{}` cannot be read",
                    args.workspace.display()
                ))
                .hint("`pmpo doctor` explains damaged state files")
            })?;
            let (page, counts) = artifact::render(&data, &mut gallery);
            (page, "artifact", name.clone(), serde_json::to_value(counts))
        }
    };
    let rel = output_rel(ws, args, kind, &id)?;
    let stamp: String = pmpo_store::now_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let who = pmpo_store::Writer {
        run_id: &format!("report-{stamp}"),
        writer: "report",
    };
    ws.write_file(&rel, page.as_bytes(), who)
        .map_err(|e| CliError::failed(&e).hint(e.hint()))?;
    let shown = ws.root().join(&rel);
    if args.json {
        crate::state_cmd::print_json(&json!({
            "path": shown, "relative_path": rel, "kind": kind, "target": id,
            "size": page.len(), "images": gallery.count, "image_bytes": gallery.bytes,
            "counts": counts.unwrap_or_default(),
        }));
    } else {
        outln!("{}", shown.display());
    }
    if args.open {
        open(&shown);
    }
    Ok(crate::EXIT_OK)
}

type ArgsRef = ReportArgs;

/// The execution store when the workspace has one (an artifact's report
/// needs none).
fn open_store(ws: &Workspace, dir: &Path) -> Result<Option<Box<dyn ExecStore>>, CliError> {
    let failed = |e: pmpo_store::db::DbError| {
        CliError::failed(format!("{e} (in `{}`)", dir.display())).hint(e.hint())
    };
    if !pmpo_store::db::store_exists(ws.root()).map_err(failed)? {
        return Ok(None);
    }
    pmpo_store::db::open_store(ws.root())
        .map(Some)
        .map_err(failed)
}

fn no_runs(dir: &Path) -> CliError {
    CliError::invalid(format!("no pmpo runs in `{}`", dir.display()))
        .hint("run `pmpo execute PLAN` (or `pmpo refine NAME`) first, or pass -w DIR: the workspace where pmpo ran")
}

/// Which run or artifact `target` names.
fn resolve(
    ws: &Workspace,
    mut db: Option<&mut dyn ExecStore>,
    dir: &Path,
    target: Option<&str>,
) -> Result<Target, CliError> {
    let Some(t) = target else {
        let db = db.ok_or_else(|| no_runs(dir))?;
        let last = db
            .runs(1)
            .map_err(|e| CliError::failed(&e).hint(e.hint()))?;
        return last
            .into_iter()
            .next()
            .map(|r| Target::Run(r.run_id))
            .ok_or_else(|| no_runs(dir));
    };
    if let Some(id) = t.strip_prefix("run:") {
        return Ok(Target::Run(id.to_string()));
    }
    if let Some(name) = t.strip_prefix("artifact:") {
        if artifact::exists(ws, name) {
            return Ok(Target::Artifact(name.to_string()));
        }
        return Err(not_found(ws, db, dir, name));
    }
    let is_artifact = artifact::exists(ws, t);
    let is_run = match db {
        Some(ref mut db) => db.run(t).ok().flatten().is_some(),
        None => false,
    };
    match (is_run, is_artifact) {
        (true, true) => Err(CliError::invalid(format!(
            "`{t}` is both a run and an artifact in `{}`",
            dir.display()
        ))
        .hint(format!(
            "say which: `pmpo report run:{t}` or `pmpo report artifact:{t}`"
        ))),
        (true, false) => Ok(Target::Run(t.to_string())),
        (false, true) => Ok(Target::Artifact(t.to_string())),
        (false, false) => Err(not_found(ws, db, dir, t)),
    }
}

/// Nothing of that name: says what there is.
fn not_found(ws: &Workspace, db: Option<&mut dyn ExecStore>, dir: &Path, t: &str) -> CliError {
    let runs: Vec<String> = db
        .and_then(|db| db.runs(5).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    let artifacts: Vec<String> = ws
        .read_own(pmpo_store::artifacts::REGISTRY_FILE)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|r| {
            r["artifacts"]
                .as_object()
                .map(|a| a.keys().take(5).cloned().collect())
        })
        .unwrap_or_default();
    let mut hint = String::new();
    if !runs.is_empty() {
        hint.push_str(&format!("recent runs: {}; ", runs.join(", ")));
    }
    if !artifacts.is_empty() {
        hint.push_str(&format!("artifacts: {}; ", artifacts.join(", ")));
    }
    hint.push_str("`pmpo status` lists the runs and `pmpo list` the artifacts; pass -w DIR if it is in another workspace");
    CliError::invalid(format!(
        "no run or artifact named `{t}` in `{}`",
        dir.display()
    ))
    .hint(hint)
}

/// The report's path inside the workspace.
fn output_rel(ws: &Workspace, args: &ReportArgs, kind: &str, id: &str) -> Result<String, CliError> {
    let Some(out) = &args.output else {
        let safe: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        return Ok(format!("{REPORT_DIR}/{kind}-{safe}.html"));
    };
    let abs = std::path::absolute(out)
        .map_err(|e| CliError::invalid(format!("-o `{}`: {e}", out.display())))?;
    let parent = abs.parent().unwrap_or(&abs);
    let file = abs.file_name().ok_or_else(|| {
        CliError::invalid(format!("-o `{}` names no file", out.display()))
            .hint("give a file name, e.g. -o reports/run.html")
    })?;
    // The deepest existing directory, links resolved, must be in the workspace.
    let mut rest = vec![file.to_os_string()];
    let mut at = parent;
    let real = loop {
        if let Ok(real) = at.canonicalize() {
            break real;
        }
        rest.push(at.file_name().map(|n| n.to_os_string()).unwrap_or_default());
        match at.parent() {
            Some(p) => at = p,
            None => break PathBuf::new(),
        }
    };
    let mut full = real;
    full.extend(rest.iter().rev());
    ws.relative(&full)
        .filter(|r| !r.is_empty() && !pmpo_store::is_own_path(r))
        .ok_or_else(|| {
            CliError::invalid(format!(
                "-o `{}` is not a file of the workspace `{}` (or is in pmpo's own directories)",
                out.display(),
                ws.root().display()
            ))
            .hint("write it inside the workspace (default: reports/), then copy it where you like: the file is self-contained")
        })
}

/// Opens the report in a browser without waiting for it: the first entry
/// of `$BROWSER` (a command, maybe with arguments; entries are separated by
/// `:`), else `xdg-open` (`open` on macOS).
fn open(path: &Path) {
    let browser = std::env::var("BROWSER")
        .ok()
        .and_then(|b| b.split(':').next().map(str::trim).map(str::to_string))
        .filter(|b| !b.is_empty());
    let line = browser.unwrap_or_else(|| {
        if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        }
        .to_string()
    });
    let mut words = line.split_whitespace();
    let program = words.next().unwrap_or("xdg-open");
    let started = std::process::Command::new(program)
        .args(words)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = started {
        errln!(
            "warning: cannot open the report with `{line}`: {e}; open {} yourself (or set $BROWSER)",
            path.display()
        );
    }
}
