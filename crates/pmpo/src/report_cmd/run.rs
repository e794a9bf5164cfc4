//! The report of one run: its timeline of stages, its constraints with the
//! evidence of each check, its previews and the files it wrote (the ledger's
//! before and after).

use std::fmt::Write as _;

use pmpo_store::Workspace;
use pmpo_store::db::{ExecStore, PatchRow, RunRow, TaskRow};
use serde_json::{Value, json};

use super::html::{self, badge, esc, esc_cut};
use super::images::Gallery;
use super::preview::{self, PreviewRef};

/// How many ledger entries the files table shows (a note says how many more).
const MAX_FILES: usize = 3_000;

/// Everything on disk about one run.
pub struct RunData {
    pub run: RunRow,
    pub tasks: Vec<TaskRow>,
    /// `.state/execution_results.json` when it is this run's.
    pub results: Option<Value>,
    /// `constraints.json` when it is this run's.
    pub constraints: Option<Value>,
    pub patches: Vec<PatchRow>,
    /// The last error of each stage's attempts, from the store.
    pub attempt_errors: Vec<(String, String)>,
    pub notes: Vec<String>,
}

fn read_json(ws: &Workspace, rel: &str) -> Option<Value> {
    let bytes = ws
        .read_own(rel)
        .ok()
        .flatten()
        .or_else(|| ws.read(rel).ok())?;
    serde_json::from_slice(&bytes).ok()
}

/// A run's own copy of a file: only when the file says it is of `run_id`.
fn of_run(v: Option<Value>, run_id: &str) -> Option<Value> {
    v.filter(|v| v["run_id"].as_str() == Some(run_id))
}

impl RunData {
    pub fn load(ws: &Workspace, db: &mut dyn ExecStore, run: RunRow) -> Result<RunData, String> {
        let id = run.run_id.clone();
        let tasks = db.tasks(&id).map_err(|e| e.to_string())?;
        let patches = db.patches(None, Some(&id)).map_err(|e| e.to_string())?;
        let attempt_errors = db
            .attempts(Some(&id))
            .map(|all| {
                all.into_iter()
                    .filter_map(|a| a.error_message.map(|m| (a.stage_id, m)))
                    .collect()
            })
            .unwrap_or_default();
        let results = of_run(read_json(ws, pmpo_engine::RESULTS_FILE), &id);
        let any_constraints = read_json(ws, "constraints.json");
        let had_constraints = any_constraints.is_some();
        let constraints = of_run(any_constraints, &id);
        let mut notes = Vec::new();
        if results.is_none() {
            notes.push(format!(
                "{} is of another run: the stages below come from the execution store (no error hints, no checks of the outputs)",
                pmpo_engine::RESULTS_FILE
            ));
        }
        if constraints.is_none() && had_constraints {
            notes.push("constraints.json is not this run's (a later run or validate wrote it): the constraint table is left out".into());
        }
        Ok(RunData {
            run,
            tasks,
            results,
            constraints,
            patches,
            attempt_errors,
            notes,
        })
    }

    /// The stages as the results file has them, or from the store's rows.
    fn stages(&self) -> Vec<Value> {
        if let Some(s) = self.results.as_ref().and_then(|r| r["stages"].as_array()) {
            return s.clone();
        }
        self.tasks
            .iter()
            .map(|t| {
                let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
                v["id"] = json!(t.stage_id);
                v["status"] = json!(t.status.as_str());
                v["outputs"] = serde_json::from_str(&t.outputs).unwrap_or(Value::Null);
                v["files"] = serde_json::from_str(&t.files).unwrap_or(Value::Null);
                v
            })
            .collect()
    }

    /// The error of a stage: the results' entry (with its hint), else the
    /// last attempt's message.
    fn error_of(&self, stage: &str) -> Option<String> {
        if let Some(errs) = self.results.as_ref().and_then(|r| r["errors"].as_array()) {
            let found: Vec<String> = errs
                .iter()
                .filter(|e| e["stage"].as_str() == Some(stage))
                .map(|e| {
                    let mut s = format!(
                        "{}: {}",
                        e["kind"].as_str().unwrap_or("error"),
                        e["message"].as_str().unwrap_or("")
                    );
                    if let Some(h) = e["hint"].as_str() {
                        s.push_str(&format!(" (hint: {h})"));
                    }
                    if let Some(t) = e["stderr_tail"].as_str() {
                        s.push_str(&format!("\nstderr: {t}"));
                    }
                    s
                })
                .collect();
            if !found.is_empty() {
                return Some(found.join("\n"));
            }
        }
        self.attempt_errors
            .iter()
            .rev()
            .find(|(s, _)| s == stage)
            .map(|(_, m)| m.clone())
    }
}

/// What the report counted, for `--json`.
#[derive(Default, serde::Serialize)]
pub struct RunCounts {
    pub stages: usize,
    pub failed: usize,
    pub constraints: usize,
    pub constraints_violated: usize,
    pub previews: usize,
    pub screenshots: usize,
    pub files: usize,
}

pub fn render(ws: &Workspace, d: &RunData, g: &mut Gallery) -> (String, RunCounts) {
    let mut body = String::new();
    let mut counts = RunCounts::default();
    let stages = d.stages();
    counts.stages = stages.len();
    counts.failed = stages
        .iter()
        .filter(|s| matches!(s["status"].as_str(), Some("FAILED" | "TIMEOUT")))
        .count();
    summary(&mut body, d);
    body.push_str("<nav class=\"toc\"><a href=\"#timeline\">Stages</a><a href=\"#constraints\">Constraints</a><a href=\"#previews\">Previews</a><a href=\"#files\">Files written</a></nav>");
    timeline(&mut body, d, &stages);
    let (n, violated) = constraints(&mut body, d);
    counts.constraints = n;
    counts.constraints_violated = violated;
    let refs = preview::refs_of(&stages);
    counts.previews = refs.len();
    counts.screenshots = previews(&mut body, ws, &refs, g);
    counts.files = files(&mut body, d);
    (
        html::page(
            &format!("pmpo run {}", d.run.run_id),
            &format!(
                "plan {} · {} · started {}",
                d.run.plan,
                d.run.status.as_str(),
                d.run.started_at
            ),
            &body,
        ),
        counts,
    )
}

fn summary(out: &mut String, d: &RunData) {
    out.push_str("<section id=\"summary\"><h2>Run</h2><div class=\"summary\">");
    let r = d.results.as_ref();
    let text = r
        .and_then(|r| r["logs"].as_str())
        .and_then(|l| l.lines().find(|l| l.starts_with("- Result:")))
        .map(|l| l.trim_start_matches("- Result:").replace("**", ""));
    let _ = write!(
        out,
        "<div>status {}</div><div>stages: {}</div><div>started {}</div><div>finished {}</div>",
        badge(d.run.status.as_str()),
        d.run.stages,
        esc(&d.run.started_at),
        esc(d.run.finished_at.as_deref().unwrap_or("(not finished)"))
    );
    if let Some(ms) = r.and_then(|r| r["duration_ms"].as_f64()) {
        let _ = write!(out, "<div>took {}</div>", esc(&ms_text(ms)));
    }
    if let Some(s) = r.and_then(|r| r["sandbox"].as_str()) {
        let _ = write!(out, "<div>sandbox: {}</div>", esc(s));
    }
    out.push_str("</div>");
    if let Some(t) = text {
        let _ = write!(out, "<p>{}</p>", esc(t.trim()));
    }
    if let Some(a) = r.and_then(|r| r["artifact_name"].as_str()) {
        let _ = write!(out, "<p>artifact <code>{}</code></p>", esc(a));
    }
    for n in &d.notes {
        let _ = write!(out, "<p class=\"dim\">note: {}</p>", esc(n));
    }
    out.push_str("</section>");
}

pub fn ms_text(ms: f64) -> String {
    if ms >= 60_000.0 {
        format!("{:.1} min", ms / 60_000.0)
    } else if ms >= 1_000.0 {
        format!("{:.2} s", ms / 1_000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

fn millis(t: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.timestamp_millis())
}

fn timeline(out: &mut String, d: &RunData, stages: &[Value]) {
    let t0 = millis(&d.run.started_at).unwrap_or(0);
    let end = stages
        .iter()
        .filter_map(|s| {
            let st = millis(s["started_at"].as_str()?)?;
            Some(st + s["duration_ms"].as_f64().unwrap_or(0.0) as i64)
        })
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let span = (end - t0) as f64;
    out.push_str("<section id=\"timeline\"><h2>Stages</h2><div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"stages\"><table><thead><tr><th class=\"num\">#</th><th>stage</th><th>tool</th><th>status</th><th class=\"num\">start</th><th class=\"num\">duration</th><th>timeline</th><th class=\"num\">retries</th><th>detail</th></tr></thead><tbody>");
    for (i, s) in stages.iter().enumerate() {
        let id = s["id"].as_str().unwrap_or("");
        let status = s["status"].as_str().unwrap_or("?");
        let start = s["started_at"].as_str().and_then(millis);
        let dur = s["duration_ms"].as_f64().unwrap_or(0.0);
        let attempts = s["attempts"].as_i64().unwrap_or(1).max(1);
        let kind = match status {
            "FAILED" | "TIMEOUT" | "CANCELLED" => "bad",
            "SKIPPED" | "AWAITING_DECISION" => "warn",
            "CACHED" => "ok",
            _ => "",
        };
        let bar = match start {
            Some(st) => {
                let left = ((st - t0) as f64 / span * 100.0).clamp(0.0, 100.0);
                let width = (dur / span * 100.0).clamp(0.0, 100.0 - left);
                format!(
                    "<div class=\"bar\"><span class=\"{kind}\" style=\"left:{left:.2}%;width:{width:.2}%\"></span></div>"
                )
            }
            None => String::new(),
        };
        let _ = write!(
            out,
            "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{bar}</td><td class=\"num\">{}</td><td>",
            i + 1,
            esc(id),
            esc(s["tool"].as_str().unwrap_or("")),
            badge(status),
            start.map_or("-".into(), |st| format!("+{}", ms_text((st - t0) as f64))),
            if start.is_some() {
                ms_text(dur)
            } else {
                "-".into()
            },
            attempts - 1
        );
        stage_detail(out, d, s, id, status);
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table></div></section>");
}

fn stage_detail(out: &mut String, d: &RunData, s: &Value, id: &str, status: &str) {
    let mut parts: Vec<String> = Vec::new();
    if let Some(from) = s["reused_from"].as_str() {
        parts.push(format!("reused from run <code>{}</code>", esc(from)));
    } else if status == "CACHED" {
        parts.push("reused (cached)".into());
    }
    if let Some(r) = s["reason"].as_str() {
        parts.push(format!(
            "{}: {}",
            if status == "SKIPPED" {
                "skipped"
            } else {
                "reason"
            },
            esc_cut(r, 600)
        ));
    }
    if let Some(f) = s["fallback_used"].as_str() {
        parts.push(format!("fallback: {}", esc(f)));
    }
    if matches!(
        status,
        "FAILED" | "TIMEOUT" | "CANCELLED" | "AWAITING_DECISION"
    ) && let Some(e) = d.error_of(id)
    {
        parts.push(format!(
            "<div class=\"cut\" style=\"white-space:pre-wrap\">{}</div>",
            esc_cut(&e, 1_500)
        ));
    }
    if let Some(c) = s["exit_code"].as_i64().filter(|c| *c != 0) {
        parts.push(format!("exit code {c}"));
    }
    if let Some(n) = s["files"].as_array().map(Vec::len).filter(|n| *n > 0) {
        parts.push(format!("{n} file(s)"));
    }
    for p in parts {
        let _ = write!(out, "<div>{p}</div>");
    }
}

/// The constraint table; returns (constraints, violated).
fn constraints(out: &mut String, d: &RunData) -> (usize, usize) {
    out.push_str("<section id=\"constraints\"><h2>Constraints</h2>");
    let list = d
        .constraints
        .as_ref()
        .and_then(|c| c["constraints"].as_array())
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        out.push_str("<p class=\"dim\">no constraint results of this run: its plan has no validation_plan, or constraints.json is another run's</p>");
    }
    let mut violated = 0;
    if !list.is_empty() {
        out.push_str("<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"constraints\"><table><thead><tr><th>constraint</th><th>severity</th><th>status</th><th>checks and evidence</th></tr></thead><tbody>");
    }
    for c in &list {
        let status = c["status"].as_str().unwrap_or("?");
        violated += usize::from(status == "violated");
        let _ = write!(
            out,
            "<tr><td><code>{}</code><div class=\"dim\">{}</div></td><td>{}</td><td>{}</td><td>",
            esc(c["id"].as_str().unwrap_or("")),
            esc_cut(c["description"].as_str().unwrap_or(""), 400),
            esc(c["severity"].as_str().unwrap_or("")),
            badge(status)
        );
        for ch in c["checks"].as_array().into_iter().flatten() {
            check(out, ch);
        }
        out.push_str("</td></tr>");
    }
    if !list.is_empty() {
        out.push_str("</tbody></table></div>");
    }
    output_checks(out, d);
    out.push_str("</section>");
    (list.len(), violated)
}

/// One check of a constraint: its status, message, evidence and files.
pub fn check(out: &mut String, ch: &Value) {
    let _ = write!(
        out,
        "<div>{} <b>{}</b> {}</div>",
        badge(ch["status"].as_str().unwrap_or("?")),
        esc(ch["check"].as_str().unwrap_or("")),
        esc_cut(ch["message"].as_str().unwrap_or(""), html::MAX_TEXT)
    );
    if let Some(ev) = ch.get("evidence").filter(|v| !v.is_null()) {
        html::value(out, ev, 0);
    }
    let files: Vec<String> = ch["files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "<code>{}</code> ({})",
                esc(f["path"].as_str().unwrap_or("")),
                esc(f["blake3"].as_str().unwrap_or("").get(..12).unwrap_or(""))
            )
        })
        .collect();
    if !files.is_empty() {
        let _ = write!(out, "<div class=\"dim\">on {}</div>", files.join(", "));
    }
}

/// The checks of the stages' outputs (`validation_outputs`), folded.
fn output_checks(out: &mut String, d: &RunData) {
    let Some(list) = d
        .results
        .as_ref()
        .and_then(|r| r["validation_outputs"].as_array())
    else {
        return;
    };
    let failed = list.iter().filter(|c| c["status"] != "passed").count();
    let _ = write!(
        out,
        "<details><summary>checks of the stages' outputs: {} ({} not passed)</summary><div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"checks of the stages' outputs\"><table><tbody>",
        list.len(),
        failed
    );
    for c in list.iter().take(html::MAX_ITEMS * 20) {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>",
            esc(c["stage"].as_str().unwrap_or(""))
        );
        check(out, c);
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table></div>");
    if list.len() > html::MAX_ITEMS * 20 {
        let _ = write!(
            out,
            "<p class=\"cut\">… and {} more not shown</p>",
            list.len() - html::MAX_ITEMS * 20
        );
    }
    out.push_str("</details>");
}

fn previews(out: &mut String, ws: &Workspace, refs: &[PreviewRef], g: &mut Gallery) -> usize {
    out.push_str("<section id=\"previews\"><h2>Previews</h2>");
    if refs.is_empty() {
        out.push_str("<p class=\"dim\">this run made no preview</p>");
    }
    let before = g.count;
    for r in refs {
        preview::section(out, ws, r, g);
    }
    out.push_str("</section>");
    g.count - before
}

/// The ledger's entries of the run; returns how many.
fn files(out: &mut String, d: &RunData) -> usize {
    out.push_str("<section id=\"files\"><h2>Files written</h2>");
    if d.patches.is_empty() {
        out.push_str("<p class=\"dim\">the ledger has no change of this run</p></section>");
        return 0;
    }
    out.push_str("<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"files written\"><table><thead><tr><th>file</th><th>change</th><th>by</th><th class=\"num\">size before</th><th class=\"num\">size after</th><th>digest before → after</th><th>state</th></tr></thead><tbody>");
    for p in d.patches.iter().take(MAX_FILES) {
        let change = match (&p.before_blake3, &p.after_blake3) {
            (None, Some(_)) => "created",
            (Some(_), None) => "deleted",
            (Some(a), Some(b)) if a == b => "unchanged",
            (Some(_), Some(_)) => "modified",
            (None, None) => "none",
        };
        let size = |s: Option<i64>| s.map_or("-".to_string(), |s| s.to_string());
        let short = |h: &Option<String>| {
            h.as_deref().map_or("(none)".to_string(), |h| {
                h.get(..12).unwrap_or(h).to_string()
            })
        };
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><code>{} → {}</code>{}</td><td>{}</td></tr>",
            esc(&p.path),
            badge(change),
            esc(&p.writer),
            size(p.before_size),
            size(p.after_size),
            short(&p.before_blake3),
            short(&p.after_blake3),
            if p.backed_up {
                " <span class=\"dim\">(restorable)</span>"
            } else {
                ""
            },
            esc(p.state.as_str())
        );
    }
    out.push_str("</tbody></table></div>");
    if d.patches.len() > MAX_FILES {
        let _ = write!(
            out,
            "<p class=\"cut\">… and {} more entries not shown: <code>pmpo ledger --run {}</code> lists them all</p>",
            d.patches.len() - MAX_FILES,
            esc(&d.run.run_id)
        );
    }
    out.push_str("</section>");
    d.patches.len()
}
