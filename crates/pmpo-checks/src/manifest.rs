//! `manifest`: `artifact_manifest.json` is valid against pmpo's manifest schema
//! (`schemas/artifact-manifest.schema.json`) and every file it names exists
//! inside the workspace (optionally with the recorded size and blake3 digest).

use serde_json::{Map, Value, json};

use crate::fsx;
use crate::params::{Kind, get_bool, get_str, opt};
use crate::{CheckDef, CheckError, Ctx, Verdict, no_rules};

/// pmpo's manifest schema (Draft 7), shipped in `schemas/`.
/// The manifest the check reads when `path` is not given.
pub(crate) const DEFAULT_PATH: &str = "artifact_manifest.json";

pub const MANIFEST_SCHEMA: &str = include_str!("../../../schemas/artifact-manifest.schema.json");

pub(crate) const MANIFEST: CheckDef = CheckDef {
    name: "manifest",
    aliases: &["manifest_valid", "artifact_manifest"],
    summary: "artifact_manifest.json matches the manifest schema and every file it names exists",
    params: &[
        opt(
            "path",
            Kind::Str,
            "the manifest (default artifact_manifest.json)",
        ),
        opt(
            "verify_digests",
            Kind::Bool,
            "also compare each file's size and blake3 with the manifest (default false)",
        ),
    ],
    rules: no_rules,
    run,
};

fn run(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let rel = get_str(p, "path").unwrap_or(DEFAULT_PATH);
    let verify = get_bool(p, "verify_digests", false);
    let Some(f) = fsx::lookup(ctx.ws, rel)? else {
        return Ok(Verdict::new(
            false,
            format!("`{rel}` does not exist"),
            json!({"manifest": rel}),
        ));
    };
    let text = fsx::read_text(&f)?;
    let doc: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Verdict::new(
                false,
                format!(
                    "`{rel}` is not valid JSON (line {} column {}): {e}",
                    e.line(),
                    e.column()
                ),
                json!({"manifest": rel}),
            ));
        }
    };
    let schema: Value = serde_json::from_str(MANIFEST_SCHEMA)
        .map_err(|e| CheckError::Param(format!("the built-in manifest schema is broken: {e}")))?;
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .map_err(|e| CheckError::Param(format!("the built-in manifest schema is broken: {e}")))?;
    let violations: Vec<Value> = validator
        .iter_errors(&doc)
        .take(200)
        .map(|e| {
            let ptr = e.instance_path().as_str().to_string();
            json!({"pointer": if ptr.is_empty() { "/".into() } else { ptr }, "message": e.to_string()})
        })
        .collect();

    // Every path the manifest names, with the digest it records (if any).
    let mut named: Vec<(String, Option<u64>, Option<String>)> = Vec::new();
    let s = |v: &Value| v.as_str().map(str::to_string);
    for f in doc
        .get("files")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(path) = f.get("path").and_then(s) {
            named.push((
                path,
                f.get("size").and_then(Value::as_u64),
                f.get("blake3").and_then(s),
            ));
        }
    }
    if let Some(vars) = doc.get("variants").and_then(Value::as_array) {
        for v in vars {
            if let Some(f) = v.get("file").and_then(s) {
                named.push((f, None, None));
            }
            for f in v
                .get("files")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(f) = s(f) {
                    named.push((f, None, None));
                }
            }
        }
    }
    let runs = doc.pointer("/preview/runs").and_then(Value::as_array);
    for r in runs.into_iter().flatten() {
        for key in ["html", "screenshot", "report"] {
            if let Some(path) = r.get(key).and_then(s) {
                named.push((path, None, None));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut problems = Vec::new();
    let mut checked = 0usize;
    for (path, size, digest) in named {
        if !seen.insert(path.clone()) {
            continue;
        }
        checked += 1;
        match fsx::lookup(ctx.ws, &path) {
            Err(e) => problems.push(e.to_string()),
            Ok(None) => problems.push(format!(
                "`{path}` is named in the manifest but does not exist"
            )),
            Ok(Some(file)) if verify => {
                if let Some(sz) = size
                    && sz != file.size
                {
                    problems.push(format!(
                        "`{path}` is {} bytes, the manifest says {sz}",
                        file.size
                    ));
                } else if let Some(d) = digest {
                    match pmpo_store::hash_file(&file.abs) {
                        Ok(h) if h.blake3 == d => {}
                        Ok(_) => problems.push(format!(
                            "`{path}` changed since the manifest was written (blake3 differs)"
                        )),
                        Err(e) => problems.push(format!("`{path}` cannot be read: {e}")),
                    }
                }
            }
            Ok(Some(_)) => {}
        }
    }
    let passed = violations.is_empty() && problems.is_empty();
    let message = if passed {
        format!("`{rel}` matches the manifest schema; {checked} referenced file(s) exist")
    } else if !violations.is_empty() {
        format!(
            "`{rel}` violates the manifest schema ({} violation(s); first at {}: {}){}",
            violations.len(),
            violations[0]["pointer"].as_str().unwrap_or("/"),
            violations[0]["message"].as_str().unwrap_or_default(),
            if problems.is_empty() {
                String::new()
            } else {
                format!("; {}", problems[0])
            }
        )
    } else {
        format!(
            "{} problem(s): {}",
            problems.len(),
            problems
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    Ok(Verdict::new(
        passed,
        message,
        json!({
            "manifest": rel, "schema": "schemas/artifact-manifest.schema.json",
            "violations": violations, "files_checked": checked, "problems": problems,
            "verify_digests": verify,
        }),
    ))
}
