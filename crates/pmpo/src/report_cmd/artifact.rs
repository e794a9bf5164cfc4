//! The report of a named artifact: its iterations side by side — the status
//! of each constraint per iteration, the decision and its reason, and each
//! iteration's pictures beside the previous iteration's with the pixels that
//! changed.

use std::fmt::Write as _;

use pmpo_store::Workspace;
use pmpo_store::artifacts::artifact_dir;
use serde_json::Value;

use super::html::{self, badge, esc, esc_cut};
use super::images::{self, Gallery};

/// Everything on disk about an artifact's current cycle.
pub struct ArtifactData {
    pub name: String,
    pub state: Value,
    /// `reflections/iteration-N.json`, by iteration (None: not written).
    pub reflections: Vec<(u64, Option<Value>)>,
    /// The pictures Persist kept of each iteration.
    pub pictures: Vec<(u64, Vec<Picture>)>,
}

/// One picture of one iteration.
pub struct Picture {
    /// Its place in dist/.
    pub path: String,
    pub bytes: Option<Vec<u8>>,
    /// Why it is not there (an error Persist recorded), or where it came from.
    pub note: Option<String>,
}

fn own_json(ws: &Workspace, rel: &str) -> Option<Value> {
    let bytes = ws.read_own(rel).ok().flatten()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether `name` is an artifact of this workspace (a plain name with a state file).
pub fn exists(ws: &Workspace, name: &str) -> bool {
    plain_name(name) && own_json(ws, &format!("{}/state.json", artifact_dir(name))).is_some()
}

/// A name that stays one directory under `.refiner/artifacts/`.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

impl ArtifactData {
    pub fn load(ws: &Workspace, name: &str) -> Option<ArtifactData> {
        let dir = artifact_dir(name);
        let state = own_json(ws, &format!("{dir}/state.json"))?;
        let last = state["current_iteration"].as_u64().unwrap_or(0).min(1_000);
        let mut reflections = Vec::new();
        let mut pictures = Vec::new();
        for i in 1..=last {
            reflections.push((
                i,
                own_json(ws, &format!("{dir}/reflections/iteration-{i}.json")),
            ));
            let run = history(&state, i).and_then(|h| h["run_id"].as_str().map(str::to_string));
            pictures.push((i, kept_pictures(ws, &dir, i, run.as_deref())));
        }
        // The last iteration's pictures are still in dist/ when Persist kept none.
        if let Some((i, pics)) = pictures.last_mut()
            && pics.is_empty()
            && let Some(Some(r)) = reflections.last().map(|(_, r)| r)
        {
            for p in pngs(r) {
                pics.push(Picture {
                    bytes: ws.read(&p).ok(),
                    path: p,
                    note: Some(format!(
                        "as it is in dist/ now (no copy kept at iteration {i})"
                    )),
                });
            }
        }
        Some(ArtifactData {
            name: name.to_string(),
            state,
            reflections,
            pictures,
        })
    }
}

fn pngs(reflection: &Value) -> Vec<String> {
    reflection["dist_files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|p| p.to_ascii_lowercase().ends_with(".png"))
        .map(str::to_string)
        .collect()
}

/// The copies Persist kept of iteration `i` (only when they are of the
/// iteration's own run: an older cycle's copies are not this one's).
fn kept_pictures(ws: &Workspace, dir: &str, i: u64, run: Option<&str>) -> Vec<Picture> {
    let base = format!("{dir}/screenshots/iteration-{i}");
    let Some(index) = own_json(ws, &format!("{base}/index.json")) else {
        return Vec::new();
    };
    if run.is_some() && index["run_id"].as_str() != run {
        return Vec::new();
    }
    let prefix = format!("{base}/files/");
    index["files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let path = f["path"].as_str().unwrap_or("").to_string();
            let copy = f["copy"].as_str().filter(|c| c.starts_with(&prefix));
            Picture {
                bytes: copy.and_then(|c| ws.read_own(c).ok().flatten()),
                note: f["error"].as_str().map(|e| format!("not kept: {e}")),
                path,
            }
        })
        .collect()
}

fn history(state: &Value, i: u64) -> Option<&Value> {
    state["iteration_history"]
        .as_array()?
        .iter()
        .find(|h| h["iteration"].as_u64() == Some(i))
}

/// What the report counted, for `--json`.
#[derive(Default, serde::Serialize)]
pub struct ArtifactCounts {
    pub iterations: usize,
    pub constraints: usize,
    pub screenshots: usize,
    pub diffs: usize,
}

pub fn render(d: &ArtifactData, g: &mut Gallery) -> (String, ArtifactCounts) {
    let mut body = String::new();
    let mut counts = ArtifactCounts {
        iterations: d.reflections.len(),
        ..Default::default()
    };
    summary(&mut body, d);
    counts.constraints = constraint_table(&mut body, d);
    decisions(&mut body, d);
    let before = g.count;
    counts.diffs = pictures(&mut body, d, g);
    counts.screenshots = g.count - before - counts.diffs;
    let s = &d.state;
    (
        html::page(
            &format!("pmpo artifact {}", d.name),
            &format!(
                "{} · {} · iteration {} of at most {}",
                s["artifact_type"].as_str().unwrap_or("?"),
                s["convergence_status"].as_str().unwrap_or("?"),
                s["current_iteration"].as_u64().unwrap_or(0),
                s["max_iterations"].as_u64().unwrap_or(0)
            ),
            &body,
        ),
        counts,
    )
}

fn summary(out: &mut String, d: &ArtifactData) {
    let s = &d.state;
    let _ = write!(
        out,
        "<section id=\"summary\"><h2>Artifact</h2><div class=\"summary\"><div>status {}</div><div>type {}</div><div>content {}</div><div>started {}</div><div>finalized {}</div></div>",
        badge(s["convergence_status"].as_str().unwrap_or("?")),
        esc(s["artifact_type"].as_str().unwrap_or("?")),
        esc(s["content_type"].as_str().unwrap_or("?")),
        esc(s["started_at"].as_str().unwrap_or("?")),
        esc(s["finalized_at"].as_str().unwrap_or("(not finalized)"))
    );
    if let Some(i) = s["loop"]["intent"].as_str() {
        let _ = write!(out, "<p>intent: {}</p>", esc_cut(i, 1_000));
    }
    let goals: Vec<String> = s["goals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|g| esc_cut(g, 300))
        .collect();
    if !goals.is_empty() {
        let _ = write!(out, "<p>goals: {}</p>", goals.join("; "));
    }
    out.push_str("<nav class=\"toc\"><a href=\"#constraints\">Constraints</a><a href=\"#decisions\">Decisions</a><a href=\"#pictures\">Pictures</a></nav></section>");
}

/// Constraint ids in the state's order, then any only a reflection has.
fn constraint_ids(d: &ArtifactData) -> Vec<(String, String, String)> {
    let mut ids: Vec<(String, String, String)> = Vec::new();
    let all = d.state["constraints"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            d.reflections
                .iter()
                .filter_map(|(_, r)| r.as_ref())
                .flat_map(|r| r["constraints"].as_array().into_iter().flatten()),
        );
    for c in all {
        let id = c["id"].as_str().unwrap_or("").to_string();
        if !ids.iter().any(|(i, _, _)| *i == id) {
            ids.push((
                id,
                c["severity"].as_str().unwrap_or("").to_string(),
                c["description"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    ids
}

/// The status of each constraint per iteration (iterations as columns).
fn constraint_table(out: &mut String, d: &ArtifactData) -> usize {
    let ids = constraint_ids(d);
    out.push_str("<section id=\"constraints\"><h2>Constraints per iteration</h2><div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"constraints per iteration\"><table><thead><tr><th>constraint</th><th>severity</th>");
    for (i, _) in &d.reflections {
        let _ = write!(out, "<th>iteration {i}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for (id, severity, description) in &ids {
        let _ = write!(
            out,
            "<tr><td><code>{}</code><div class=\"dim\">{}</div></td><td>{}</td>",
            esc(id),
            esc_cut(description, 300),
            esc(severity)
        );
        for (_, r) in &d.reflections {
            let c = r.as_ref().and_then(|r| {
                r["constraints"]
                    .as_array()?
                    .iter()
                    .find(|c| c["id"].as_str() == Some(id))
            });
            match c {
                None => out.push_str("<td class=\"dim\">-</td>"),
                Some(c) => {
                    let basis = c["basis"].as_str().unwrap_or("");
                    let _ = write!(
                        out,
                        "<td>{}{}<div class=\"dim\">{}</div></td>",
                        badge(c["status"].as_str().unwrap_or("?")),
                        if basis.is_empty() {
                            String::new()
                        } else {
                            format!(" <span class=\"dim\">{}</span>", esc(basis))
                        },
                        match &c["evidence"] {
                            Value::String(s) => esc_cut(s, 300),
                            Value::Null => String::new(),
                            other => esc_cut(&other.to_string(), 300),
                        }
                    );
                }
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div></section>");
    ids.len()
}

/// The decision of each iteration and why.
fn decisions(out: &mut String, d: &ArtifactData) {
    out.push_str("<section id=\"decisions\"><h2>Decisions</h2><div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"decisions\"><table><thead><tr><th class=\"num\">iteration</th><th>decision</th><th>reason</th><th>constraints satisfied</th><th>run</th></tr></thead><tbody>");
    for (i, r) in &d.reflections {
        let h = history(&d.state, *i);
        let decision = h
            .and_then(|h| h["decision"].as_str())
            .unwrap_or("(not decided)");
        let _ = write!(
            out,
            "<tr><td class=\"num\">{i}</td><td>{}</td><td>{}",
            badge(decision),
            esc_cut(h.and_then(|h| h["reason"].as_str()).unwrap_or(""), 1_500)
        );
        if let Some(r) = r {
            for key in ["regressions", "required_missing", "unproven", "notes"] {
                for n in r[key].as_array().into_iter().flatten().take(10) {
                    let _ = write!(
                        out,
                        "<div class=\"dim\">{}: {}</div>",
                        key.replace('_', " "),
                        esc_cut(n.as_str().unwrap_or(""), 400)
                    );
                }
            }
        }
        let run = h
            .and_then(|h| h["run_id"].as_str())
            .or_else(|| r.as_ref().and_then(|r| r["execution"]["run_id"].as_str()));
        let _ = write!(
            out,
            "</td><td class=\"num\">{} of {}</td><td>{}</td></tr>",
            h.and_then(|h| h["constraints_satisfied"].as_u64())
                .map_or("-".into(), |n| n.to_string()),
            h.and_then(|h| h["constraints_total"].as_u64())
                .map_or("-".into(), |n| n.to_string()),
            run.map_or("-".into(), |r| format!(
                "<code>{}</code><div class=\"dim\">pmpo report {}</div>",
                esc(r),
                esc(r)
            ))
        );
    }
    out.push_str("</tbody></table></div></section>");
}

/// Each iteration's pictures beside the previous iteration's and their
/// difference; returns how many difference images were made.
fn pictures(out: &mut String, d: &ArtifactData, g: &mut Gallery) -> usize {
    out.push_str("<section id=\"pictures\"><h2>Pictures per iteration</h2>");
    let mut diffs = 0;
    if d.pictures.iter().all(|(_, p)| p.is_empty()) {
        out.push_str(
            "<p class=\"dim\">no iteration produced a PNG picture in dist/ (or none was kept)</p>",
        );
    }
    let mut prev: Option<&Vec<Picture>> = None;
    for (i, pics) in &d.pictures {
        if pics.is_empty() {
            prev = Some(pics);
            continue;
        }
        let _ = write!(out, "<h3>Iteration {i}</h3>");
        for p in pics {
            let before = prev.and_then(|ps| ps.iter().find(|q| q.path == p.path));
            diffs += usize::from(pair(out, g, *i, before, p));
        }
        prev = Some(pics);
    }
    out.push_str("</section>");
    diffs
}

/// One picture beside its previous version and their difference; true when
/// a difference image was made.
fn pair(out: &mut String, g: &mut Gallery, i: u64, before: Option<&Picture>, p: &Picture) -> bool {
    let _ = write!(out, "<h4><code>{}</code></h4>", esc(&p.path));
    if let Some(n) = &p.note {
        let _ = write!(out, "<p class=\"dim\">{}</p>", esc(n));
    }
    out.push_str("<div class=\"shots\">");
    let mut made = false;
    match before {
        Some(b) => html::figure(out, g, b.bytes.as_deref(), &format!("iteration {}", i - 1)),
        None if i > 1 => out.push_str("<figure><div class=\"noimg\">not in the previous iteration</div><figcaption>before</figcaption></figure>"),
        None => {}
    }
    html::figure(out, g, p.bytes.as_deref(), &format!("iteration {i}"));
    if let (Some(a), Some(b)) = (before.and_then(|b| b.bytes.as_deref()), p.bytes.as_deref()) {
        match (images::decode(a), images::decode(b)) {
            (Ok(a), Ok(b)) => {
                let d = images::diff(&a, &b);
                let caption = format!(
                    "changed pixels (magenta): {:.2}% ({} of {}){}",
                    d.percent(),
                    d.changed,
                    d.total,
                    if d.sizes_differ {
                        format!(
                            "; sizes differ: {}x{} then {}x{}",
                            a.width, a.height, b.width, b.height
                        )
                    } else {
                        String::new()
                    }
                );
                out.push_str("<figure>");
                html::embedded(out, g.embed_pixels(d.image), &caption);
                let _ = write!(out, "<figcaption>{}</figcaption></figure>", esc(&caption));
                made = true;
            }
            (Err(e), _) | (_, Err(e)) => {
                let _ = write!(out, "<div class=\"noimg\">no difference: {}</div>", esc(&e));
            }
        }
    }
    out.push_str("</div>");
    made
}
