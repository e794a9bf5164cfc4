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

/// A file the manifest names, with the size and digest it records (if any).
type Named = (String, Option<u64>, Option<String>);

fn run(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let rel = get_str(p, "path").unwrap_or(DEFAULT_PATH);
    let verify = get_bool(p, "verify_digests", false);
    // Several named artifacts share one manifest; each vouches only for its
    // own entries, so another artifact's changed file fails only that one.
    let owner = get_str(p, "owner");
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
    let violations = schema_violations(&doc)?;
    let mut seen = std::collections::HashSet::new();
    let mut problems = Vec::new();
    let mut checked = 0usize;
    for (path, size, digest) in named_files(&doc, owner) {
        if seen.insert(path.clone()) {
            checked += 1;
            problems.extend(file_problem(ctx, &path, verify, size, digest));
        }
    }
    let passed = violations.is_empty() && problems.is_empty();
    let message = summary(rel, checked, &violations, &problems);
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

/// Where the manifest departs from pmpo's schema (at most 200), each as
/// `{pointer, message}`.
fn schema_violations(doc: &Value) -> Result<Vec<Value>, CheckError> {
    let broken = |e: &dyn std::fmt::Display| {
        CheckError::Param(format!("the built-in manifest schema is broken: {e}"))
    };
    let schema: Value = serde_json::from_str(MANIFEST_SCHEMA).map_err(|e| broken(&e))?;
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .map_err(|e| broken(&e))?;
    Ok(validator
        .iter_errors(doc)
        .take(200)
        .map(|e| {
            let ptr = e.instance_path().as_str().to_string();
            json!({"pointer": if ptr.is_empty() { "/".into() } else { ptr }, "message": e.to_string()})
        })
        .collect())
}

/// Every path the manifest names (files, variants, preview runs), with the
/// digest it records; with `owner`, only that owner's files and variants.
fn named_files(doc: &Value, owner: Option<&str>) -> Vec<Named> {
    let mine = |e: &Value| owner.is_none_or(|o| e.get("owner").and_then(Value::as_str) == Some(o));
    let s = |v: &Value| v.as_str().map(str::to_string);
    let mut named: Vec<Named> = Vec::new();
    for f in list(doc.get("files")).filter(|f| mine(f)) {
        if let Some(path) = f.get("path").and_then(s) {
            let size = f.get("size").and_then(Value::as_u64);
            named.push((path, size, f.get("blake3").and_then(s)));
        }
    }
    for v in list(doc.get("variants")).filter(|v| mine(v)) {
        if let Some(f) = v.get("file").and_then(s) {
            named.push((f, None, None));
        }
        named.extend(list(v.get("files")).filter_map(s).map(|f| (f, None, None)));
    }
    for r in list(doc.pointer("/preview/runs")) {
        for key in ["html", "screenshot", "report"] {
            if let Some(path) = r.get(key).and_then(s) {
                named.push((path, None, None));
            }
        }
    }
    named
}

/// The items of an array, none when it is absent or not an array.
fn list(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// What is wrong with one named file: missing, refused, or (with `verify`)
/// not the size or content the manifest records.
fn file_problem(
    ctx: &Ctx<'_>,
    path: &str,
    verify: bool,
    size: Option<u64>,
    digest: Option<String>,
) -> Option<String> {
    let file = match fsx::lookup(ctx.ws, path) {
        Err(e) => return Some(e.to_string()),
        Ok(None) => {
            return Some(format!(
                "`{path}` is named in the manifest but does not exist"
            ));
        }
        Ok(Some(file)) => file,
    };
    if !verify {
        return None;
    }
    if let Some(sz) = size
        && sz != file.size
    {
        return Some(format!(
            "`{path}` is {} bytes, the manifest says {sz}",
            file.size
        ));
    }
    let digest = digest?;
    match pmpo_store::hash_file(&file.abs) {
        Ok(h) if h.blake3 == digest => None,
        Ok(_) => Some(format!(
            "`{path}` changed since the manifest was written (blake3 differs)"
        )),
        Err(e) => Some(format!("`{path}` cannot be read: {e}")),
    }
}

fn summary(rel: &str, checked: usize, violations: &[Value], problems: &[String]) -> String {
    if violations.is_empty() && problems.is_empty() {
        return format!("`{rel}` matches the manifest schema; {checked} referenced file(s) exist");
    }
    if let Some(first) = violations.first() {
        return format!(
            "`{rel}` violates the manifest schema ({} violation(s); first at {}: {}){}",
            violations.len(),
            first["pointer"].as_str().unwrap_or("/"),
            first["message"].as_str().unwrap_or_default(),
            problems
                .first()
                .map(|p| format!("; {p}"))
                .unwrap_or_default()
        );
    }
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
        // A fixture in the test's own temporary directory, outside any workspace.
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
