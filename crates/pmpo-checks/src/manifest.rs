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
        opt(
            "owner",
            Kind::Str,
            "check only the entries of this owner (a named artifact in a shared manifest; default: every entry)",
        ),
    ],
    rules: no_rules,
    run,
};

fn run(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let rel = get_str(p, "path").unwrap_or(DEFAULT_PATH);
    let verify = get_bool(p, "verify_digests", false);
    // Several named artifacts share one manifest; each vouches only for its
    // own entries, so another artifact's changed file fails only that one.
    let owner = get_str(p, "owner");
    let mine = |e: &Value| owner.is_none_or(|o| e.get("owner").and_then(Value::as_str) == Some(o));
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
        .filter(|f| mine(f))
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
        for v in vars.iter().filter(|v| mine(v)) {
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
            "verify_digests": verify, "owner": owner,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    /// Several artifacts share one manifest: with `owner`, only that owner's
    /// entries are verified, so another artifact's changed file fails only it.
    #[test]
    fn owner_limits_the_check_to_its_entries() {
        // Fixtures in a temporary directory of the test's own (not through
        // the store: the check under test only reads them).
        let dir = tempfile::tempdir().unwrap();
        let ws = pmpo_store::Workspace::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("dist")).unwrap();
        std::fs::write(dir.path().join("dist/a.html"), "a").unwrap();
        std::fs::write(dir.path().join("dist/b.html"), "b").unwrap();
        let entry = |path: &str, text: &str, owner: &str| json!({"path": path, "size": text.len(), "blake3": blake3::hash(text.as_bytes()).to_hex().to_string(), "owner": owner});
        let manifest = json!({
            "artifact_type": "content", "generated_at": "2026-01-01T00:00:00Z",
            "variants": [{"name": "page", "files": ["dist/a.html"], "owner": "a"},
                         {"name": "page", "files": ["dist/b.html"], "owner": "b"}],
            "files": [entry("dist/a.html", "a", "a"), entry("dist/b.html", "b", "b")],
        });
        std::fs::write(
            dir.path().join("artifact_manifest.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        let check = |owner: Option<&str>| {
            let mut p = Map::new();
            p.insert("verify_digests".into(), Value::Bool(true));
            if let Some(o) = owner {
                p.insert("owner".into(), json!(o));
            }
            crate::run_check(&ws, "manifest", &p)
        };
        assert!(check(None).passed(), "{}", check(None).message);
        // `b`'s page is edited by hand: `b` fails, `a` does not, and the
        // whole manifest does.
        std::fs::write(dir.path().join("dist/b.html"), "edited").unwrap();
        let a = check(Some("a"));
        assert!(a.passed(), "{}", a.message);
        assert!(a.message.contains("1 referenced file(s)"), "{}", a.message);
        let b = check(Some("b"));
        assert!(!b.passed());
        assert!(b.message.contains("dist/b.html"), "{}", b.message);
        assert!(!check(None).passed());
    }
}
