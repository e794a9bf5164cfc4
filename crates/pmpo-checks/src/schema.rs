//! `json_schema`: a JSON (or YAML) file against a JSON Schema (Draft 4, 6, 7,
//! 2019-09, 2020-12), inline or from a file; every violation with its JSON
//! pointer and message.

use jsonschema::Draft;
use serde_json::{Map, Value, json};

use crate::formats::{FileVerdict, per_file};
use crate::fsx;
use crate::params::{self, Kind, need_one, opt, req};
use crate::{CheckDef, CheckError, Ctx, Verdict};

/// Violations listed in the evidence (all are counted).
const MAX_LISTED: usize = 200;

pub(crate) const JSON_SCHEMA: CheckDef = CheckDef {
    name: "json_schema",
    aliases: &[
        "json-schema",
        "schema",
        "schema_validate",
        "schema-validate",
    ],
    summary: "the file is valid against a JSON Schema (inline `schema` or `schema_file`)",
    params: &[
        req(
            "path",
            Kind::Paths,
            "the JSON file(s) to validate (.yaml/.yml files are read as YAML)",
        ),
        opt("schema", Kind::Object, "the schema, inline"),
        opt(
            "schema_file",
            Kind::Str,
            "the schema, from a file in the workspace",
        ),
        opt(
            "draft",
            Kind::NumOrStr,
            "7, 2020-12, 2019-09, 6 or 4 (default: the schema's $schema, else 2020-12)",
        ),
    ],
    rules: |p| {
        let mut v = need_one(p, &["schema", "schema_file"]);
        v.extend(params::exclusive(p, "schema", "schema_file"));
        if let Some(d) = p.get("draft")
            && let Err(e) = draft_of(d)
        {
            v.push(params::issue(
                "draft",
                e,
                Some("write 7 or \"2020-12\"".into()),
            ));
        }
        v
    },
    run,
};

fn draft_of(v: &Value) -> Result<Draft, String> {
    let s = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.to_ascii_lowercase(),
        _ => String::new(),
    };
    let s = s
        .trim_start_matches("draft")
        .trim_start_matches(['-', '_', ' ']);
    Ok(match s {
        "4" | "04" => Draft::Draft4,
        "6" | "06" => Draft::Draft6,
        "7" | "07" => Draft::Draft7,
        "2019-09" | "201909" => Draft::Draft201909,
        "2020-12" | "202012" => Draft::Draft202012,
        _ => {
            return Err(format!(
                "unknown JSON Schema draft {v}; use 7 or \"2020-12\" (also 4, 6, \"2019-09\")"
            ));
        }
    })
}

fn run(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let (schema, schema_src) = match (p.get("schema"), params::get_str(p, "schema_file")) {
        (Some(s), _) => (s.clone(), "inline".to_string()),
        (None, Some(file)) => {
            let f = fsx::file(ctx.ws, file)?;
            let value = load_value(&f)?;
            (value, f.rel)
        }
        (None, None) => return Err(CheckError::Param("needs `schema` or `schema_file`".into())),
    };
    let mut opts = jsonschema::options();
    if let Some(d) = p.get("draft") {
        opts = opts.with_draft(draft_of(d).map_err(CheckError::Param)?);
    }
    let validator = opts.build(&schema).map_err(|e| {
        CheckError::Param(format!(
            "the schema ({schema_src}) cannot be used (invalid, or it refers to a document that is not fetched): {e}"
        ))
    })?;
    let mut verdict = per_file(ctx, p, &|f| {
        let instance = match load_value(f) {
            Ok(v) => v,
            Err(CheckError::Param(m)) => return Ok(FileVerdict::bad(m, json!({}))),
            Err(e) => return Err(e),
        };
        let mut total = 0usize;
        let mut listed = Vec::new();
        for err in validator.iter_errors(&instance) {
            total += 1;
            if listed.len() < MAX_LISTED {
                let pointer = err.instance_path().as_str().to_string();
                listed.push(json!({
                    "pointer": if pointer.is_empty() { "/".to_string() } else { pointer },
                    "message": err.to_string(),
                    "schema_path": err.schema_path().as_str(),
                }));
            }
        }
        let detail = json!({ "violation_count": total, "violations": listed });
        Ok(if total == 0 {
            FileVerdict::ok("valid against the schema", detail)
        } else {
            let first = &listed[0];
            FileVerdict::bad(
                format!(
                    "{total} schema violation(s); first at {}: {}",
                    first["pointer"].as_str().unwrap_or("/"),
                    first["message"].as_str().unwrap_or_default()
                ),
                detail,
            )
        })
    })?;
    if let Some(obj) = verdict.evidence.as_object_mut() {
        obj.insert("schema".into(), Value::String(schema_src));
    }
    Ok(verdict)
}

/// Reads a JSON document (or YAML, by extension). A syntax error is a `Param` error
/// so that it counts against the file, not the check.
fn load_value(f: &fsx::FileRef) -> Result<Value, CheckError> {
    let bytes = fsx::read_bytes(f, fsx::MAX_TEXT_BYTES)?;
    let ext = fsx::ext(&f.rel);
    if ext == "yaml" || ext == "yml" {
        let text = fsx::bytes_to_text(&f.rel, bytes)?;
        let node = pmpo_plan::node::parse_yaml(&text).map_err(|e| {
            CheckError::Param(format!("`{}` is not valid YAML: {}", f.rel, e.message))
        })?;
        return pmpo_plan::de::from_node::<Value>(&node).map_err(|e| {
            CheckError::Param(format!("`{}` cannot be read as data: {}", f.rel, e.message))
        });
    }
    if let Some(at) = bytes.iter().take(8192).position(|&b| b == 0) {
        return Err(CheckError::NotText {
            path: f.rel.clone(),
            why: format!("it contains a NUL byte at offset {at} (a binary file?)"),
        });
    }
    let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    serde_json::from_slice(body).map_err(|e| {
        CheckError::Param(format!(
            "`{}` is not valid JSON (line {} column {}): {e}",
            f.rel,
            e.line(),
            e.column()
        ))
    })
}
