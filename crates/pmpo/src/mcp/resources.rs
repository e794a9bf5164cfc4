//! What the host can read: each artifact's state and question, the
//! workspace's constraints and manifest, the latest plan and reflection, and
//! screenshots; and the tools that read artifacts (`artifact_status`,
//! `artifact_list`) or render a page (`preview`).
//!
//! Every read goes through the workspace's own confined read
//! ([`Workspace::read_own`] and [`Workspace::resolve`]): a URI never reaches
//! outside the workspace, by `..` or by a symbolic link.
//!
//! URIs: `pmpo://artifacts/NAME/state.json`, `.../pending.json`,
//! `.../plan.json` (the latest plan), `.../reflection.json` (the latest
//! reflection); `pmpo://workspace/constraints.json`,
//! `pmpo://workspace/artifact_manifest.json`; `pmpo://file/PATH` for a
//! screenshot (`dist/previews/ID/screenshot.png`, an `image/png` blob).

use std::path::Path;

use base64::Engine as _;
use pmpo_store::Workspace;
use pmpo_store::artifacts::{ArtifactError, Artifacts, artifact_dir};
use pmpo_store::provider::Provider;
use rmcp::ErrorData;
use rmcp::model::{CallToolResult, ContentBlock, ListResourcesResult, ReadResourceResult};
use serde_json::{Value, json};

use super::tools::{Args, Cli, fail, ok, rel_path};
use crate::error::CliError;

fn open(root: &Path) -> Result<(Workspace, Provider), String> {
    let ws = Workspace::open(root).map_err(|e| CliError::invalid(e).to_string())?;
    let provider = Provider::resolve(&ws);
    Ok((ws, provider))
}

fn artifact_error(e: &ArtifactError) -> String {
    CliError::invalid(e).hint(e.hint()).to_string()
}

/// `artifact_status`: the artifact's state, and its pending question.
pub(super) fn status(root: &Path, name: &str) -> Result<CallToolResult, String> {
    let (ws, provider) = open(root)?;
    let state = Artifacts {
        ws: &ws,
        provider: &provider,
    }
    .load(name)
    .map_err(|e| artifact_error(&e))?;
    let mut value = serde_json::to_value(&state).map_err(|e| format!("error: {e}"))?;
    let pending = pmpo_loop::pending::read(&ws, name).ok().flatten();
    let text = format!(
        "`{}` ({}, {}): {} at iteration {}{}",
        state.artifact_name,
        state.artifact_type,
        state.content_type,
        state.convergence_status,
        state.current_iteration,
        if pending.is_some() {
            "; a question waits for your answer (`pending`)"
        } else {
            ""
        }
    );
    if let (Some(p), Value::Object(o)) = (pending, &mut value) {
        o.insert("pending".into(), super::refine::pending_value(&p));
    }
    Ok(ok(value, text))
}

/// `artifact_list`: the registry of named artifacts.
pub(super) fn artifact_list(root: &Path) -> Result<CallToolResult, String> {
    let (ws, provider) = open(root)?;
    let reg = Artifacts {
        ws: &ws,
        provider: &provider,
    }
    .registry()
    .map_err(|e| artifact_error(&e))?;
    let value = serde_json::to_value(&reg).map_err(|e| format!("error: {e}"))?;
    let names: Vec<&String> = reg.artifacts.keys().collect();
    let text = if names.is_empty() {
        "no artifacts yet (call `refine` with a name to start one)".to_string()
    } else {
        format!(
            "{} artifact(s): {}",
            names.len(),
            names
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Ok(ok(value, text))
}

/// `preview`: renders the page in a child `pmpo preview`, then returns the
/// screenshot as image content with the report.
pub(super) async fn preview(root: &Path, a: &Args, cli: Cli) -> Result<CallToolResult, String> {
    let input = rel_path(root, &a.need("input")?, "the page")?;
    let mut argv = vec![
        "preview".into(),
        "--json".into(),
        format!("--workspace={}", root.display()),
    ];
    if let Some(id) = a.str("id")? {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            || id.starts_with('.')
        {
            return Err(format!(
                "error: `id` must be a name (letters, digits, -, _, .), not `{id}`"
            ));
        }
        argv.push(format!("--id={id}"));
    }
    if let Some(v) = a.str("viewport")? {
        argv.push(format!("--viewport={v}"));
    }
    argv.extend(["--".into(), input]);
    let said = Cli { argv, ..cli }.output(root).await?;
    let Some(out) = said.json.clone().filter(|_| !said.cancelled) else {
        return Ok(said.into_result("pmpo preview", None));
    };
    let report = &out["report"];
    let mut value = json!({
        "status": report["status"], "screenshot": report["screenshot"],
        "report_path": out["report_path"], "viewport": report["viewport"],
        "console": report["console"], "page_errors": report["page_errors"],
        "failed_requests": report["failed_requests"], "counts": report["counts"],
        "check": out["check"], "exit_code": said.code,
        "accessibility": report["accessibility"],
    });
    if let Some(findings) = report.get("findings") {
        value["findings"] = findings.clone();
    }
    let shot = report["screenshot"].as_str().map(str::to_string);
    let mut content = vec![ContentBlock::text(format!(
        "preview of `{}`: {} ({} console errors, {} page errors, {} failed requests)",
        report["source"].as_str().unwrap_or("?"),
        report["status"].as_str().unwrap_or("?"),
        report["counts"]["console_errors"],
        report["counts"]["page_errors"],
        report["counts"]["failed_requests"],
    ))];
    if let Some(s) = &shot {
        let (ws, _) = open(root)?;
        match ws.read_own(s) {
            Ok(Some(bytes)) => content.push(ContentBlock::image(
                base64::engine::general_purpose::STANDARD.encode(bytes),
                "image/png",
            )),
            _ => {
                value["screenshot_note"] = json!(format!("the screenshot `{s}` could not be read"))
            }
        }
    }
    let mut r = if said.code == 0 {
        ok(value.clone(), "")
    } else {
        fail("")
    };
    r.content = content;
    r.structured_content = Some(value);
    Ok(r)
}

/// Where a resource's bytes are, and their MIME type.
fn locate(ws: &Workspace, uri: &str) -> Option<(String, &'static str)> {
    if let Some(rest) = uri.strip_prefix("pmpo://artifacts/") {
        let (name, what) = rest.split_once('/')?;
        Artifacts::check_name(name).ok()?;
        let dir = artifact_dir(name);
        return match what {
            "state.json" | "pending.json" => Some((format!("{dir}/{what}"), "application/json")),
            "plan.json" => latest(ws, &format!("{dir}/plans")).map(|p| (p, "application/json")),
            "reflection.json" => {
                latest(ws, &format!("{dir}/reflections")).map(|p| (p, "application/json"))
            }
            _ => None,
        };
    }
    match uri {
        "pmpo://workspace/constraints.json" => {
            Some(("constraints.json".into(), "application/json"))
        }
        "pmpo://workspace/artifact_manifest.json" => {
            Some(("artifact_manifest.json".into(), "application/json"))
        }
        _ => {
            let path = uri.strip_prefix("pmpo://file/")?;
            let png = path.starts_with("dist/previews/") && path.ends_with(".png");
            png.then(|| (path.to_string(), "image/png"))
        }
    }
}

/// The newest `.json` file of a directory of the workspace (names sort by
/// iteration).
fn latest(ws: &Workspace, dir: &str) -> Option<String> {
    let full = ws.resolve(dir).ok()?;
    let mut names: Vec<String> = std::fs::read_dir(full)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort_by_key(|n| {
        (
            n.chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u64>()
                .unwrap_or(0),
            n.clone(),
        )
    });
    names.pop().map(|n| format!("{dir}/{n}"))
}

pub(super) fn list(root: &Path) -> Result<ListResourcesResult, ErrorData> {
    let (ws, provider) = open(root).map_err(|e| ErrorData::internal_error(e, None))?;
    let mut items: Vec<Value> = Vec::new();
    let mut add = |uri: String, name: String, mime: &str| {
        if let Some((path, _)) = locate(&ws, &uri)
            && ws.resolve(&path).is_ok_and(|p| p.is_file())
        {
            items.push(json!({"uri": uri, "name": name, "mimeType": mime}));
        }
    };
    if let Ok(reg) = (Artifacts {
        ws: &ws,
        provider: &provider,
    })
    .registry()
    {
        for name in reg.artifacts.keys() {
            for what in ["state.json", "pending.json", "plan.json", "reflection.json"] {
                add(
                    format!("pmpo://artifacts/{name}/{what}"),
                    format!("{name} {what}"),
                    "application/json",
                );
            }
        }
    }
    for what in ["constraints.json", "artifact_manifest.json"] {
        add(
            format!("pmpo://workspace/{what}"),
            what.to_string(),
            "application/json",
        );
    }
    if let Ok(dir) = ws.resolve("dist/previews")
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            add(
                format!("pmpo://file/dist/previews/{id}/screenshot.png"),
                format!("screenshot {id}"),
                "image/png",
            );
        }
    }
    serde_json::from_value(json!({ "resources": items }))
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))
}

pub(super) fn read(root: &Path, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let (ws, _) = open(root).map_err(|e| ErrorData::internal_error(e, None))?;
    let not_found = |why: String| ErrorData::resource_not_found(why, Some(json!({"uri": uri})));
    let Some((path, mime)) = locate(&ws, uri) else {
        return Err(not_found(format!(
            "no resource `{uri}`: resources/list names them (pmpo://artifacts/NAME/state.json, ...)"
        )));
    };
    let bytes = match ws.read_own(&path) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return Err(not_found(format!(
                "`{uri}` does not exist (yet): `{path}` is not there"
            )));
        }
        Err(e) => {
            return Err(ErrorData::invalid_params(
                format!("`{uri}` is refused: {e}"),
                None,
            ));
        }
    };
    let content = if mime == "image/png" {
        json!({"uri": uri, "mimeType": mime, "blob": base64::engine::general_purpose::STANDARD.encode(bytes)})
    } else {
        json!({"uri": uri, "mimeType": mime, "text": String::from_utf8_lossy(&bytes)})
    };
    serde_json::from_value(json!({ "contents": [content] }))
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))
}
