//! Well-formedness: `json`, `yaml`, `xml` (SVG too), `html`, `markdown_headings`.

use serde_json::{Map, Value, json};

use crate::files::each_file;
use crate::fsx::{self, FileRef};
use crate::params::{Kind, get_bool, get_u64, opt, req};
use crate::{CheckDef, CheckError, Ctx, ValidationStatus, Verdict, no_rules};

const PATH: crate::Param = req(
    "path",
    Kind::Paths,
    "the file(s) to check: a path or glob relative to the workspace, or a list",
);

/// One file's result.
pub(crate) struct FileVerdict {
    pub status: ValidationStatus,
    pub message: String,
    pub detail: Value,
}

impl FileVerdict {
    pub fn ok(message: impl Into<String>, detail: Value) -> Self {
        FileVerdict {
            status: ValidationStatus::Passed,
            message: message.into(),
            detail,
        }
    }
    pub fn bad(message: impl Into<String>, detail: Value) -> Self {
        FileVerdict {
            status: ValidationStatus::Failed,
            message: message.into(),
            detail,
        }
    }
    /// The file could not be looked at whole (too large to read).
    pub fn unseen(message: impl Into<String>, detail: Value) -> Self {
        FileVerdict {
            status: ValidationStatus::NotChecked,
            message: message.into(),
            detail,
        }
    }
}

/// Runs `one` on every file named by `path`; the check passes when every file
/// does, fails when one fails, and is not checked when none fails but one
/// could not be read whole.
pub(crate) fn per_file(
    ctx: &Ctx<'_>,
    p: &Map<String, Value>,
    one: &dyn Fn(&FileRef) -> Result<FileVerdict, CheckError>,
) -> Result<Verdict, CheckError> {
    let files = each_file(ctx, p)?;
    let mut rows = Vec::with_capacity(files.len());
    let mut failures = Vec::new();
    let mut unseen = Vec::new();
    for f in &files {
        let (path, v) = match f {
            Err(rel) => (
                rel.clone(),
                FileVerdict::bad(format!("`{rel}` does not exist"), Value::Null),
            ),
            Ok(f) => (
                f.rel.clone(),
                match one(f) {
                    Ok(v) => v,
                    Err(e @ CheckError::TooLarge { .. }) => {
                        FileVerdict::unseen(format!("not checked: {e}"), Value::Null)
                    }
                    Err(e) => FileVerdict::bad(e.to_string(), Value::Null),
                },
            ),
        };
        let line = if v.message.contains(&path) {
            v.message.clone()
        } else {
            format!("{path}: {}", v.message)
        };
        match v.status {
            ValidationStatus::Failed => failures.push(line),
            ValidationStatus::NotChecked => unseen.push(line),
            ValidationStatus::Passed => {}
        }
        let mut row = json!({ "path": path, "passed": v.status == ValidationStatus::Passed, "status": v.status, "message": v.message });
        if let (Value::Object(extra), Some(obj)) = (v.detail, row.as_object_mut()) {
            obj.extend(extra);
        }
        rows.push(row);
    }
    let n = rows.len();
    let message = match (failures.len(), n) {
        (0, _) if !unseen.is_empty() => format!(
            "{} of {n} files not checked: {}",
            unseen.len(),
            unseen
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ),
        (0, 1) => rows[0]["message"].as_str().unwrap_or("ok").to_string(),
        (0, n) => format!("all {n} files pass"),
        (1, _) => failures[0].clone(),
        (k, n) => format!(
            "{k} of {n} files fail: {}",
            failures
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    // Keep the evidence bounded for thousands of files: every failure, a sample of passes.
    let shown: Vec<Value> = rows
        .into_iter()
        .enumerate()
        .filter(|(i, r)| *i < 100 || r["passed"] == false)
        .map(|(_, r)| r)
        .take(1000)
        .collect();
    let evidence = json!({ "checked": n, "failed": failures.len(), "not_checked": unseen.len(), "files": shown });
    Ok(if failures.is_empty() && !unseen.is_empty() {
        Verdict::not_checked(message, evidence)
    } else {
        Verdict::new(failures.is_empty(), message, evidence)
    })
}

pub(crate) const JSON: CheckDef = CheckDef {
    name: "json",
    aliases: &["json_valid", "valid_json"],
    summary: "the file parses as JSON",
    params: &[PATH],
    rules: no_rules,
    run: |ctx, p| {
        per_file(ctx, p, &|f| {
            let text = fsx::read_text(f)?;
            Ok(match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
                Ok(_) => FileVerdict::ok("valid JSON", json!({})),
                Err(e) => FileVerdict::bad(
                    format!(
                        "invalid JSON at line {} column {}: {e}",
                        e.line(),
                        e.column()
                    ),
                    json!({"line": e.line(), "column": e.column()}),
                ),
            })
        })
    },
};

pub(crate) const YAML: CheckDef = CheckDef {
    name: "yaml",
    aliases: &["yaml_valid", "valid_yaml"],
    summary: "the file parses as YAML",
    params: &[PATH],
    rules: no_rules,
    run: |ctx, p| {
        per_file(ctx, p, &|f| {
            let text = fsx::read_text(f)?;
            Ok(match yaml_syntax(&text) {
                Ok(docs) => FileVerdict::ok(
                    format!("valid YAML ({docs} document(s))"),
                    json!({"documents": docs}),
                ),
                Err((line, col, info)) => FileVerdict::bad(
                    format!("invalid YAML at line {line} column {col}: {info}"),
                    json!({"line": line, "column": col}),
                ),
            })
        })
    },
};

pub(crate) const XML: CheckDef = CheckDef {
    name: "xml",
    aliases: &["xml_valid", "svg", "svg_valid"],
    summary: "the file is well-formed XML (an .svg file's root must be <svg>)",
    params: &[
        PATH,
        opt(
            "root",
            Kind::Str,
            "the root element's expected name, e.g. svg (default: svg for .svg files)",
        ),
    ],
    rules: no_rules,
    run: |ctx, p| {
        let root = p.get("root").and_then(Value::as_str).map(str::to_string);
        per_file(ctx, p, &|f| xml_file(f, root.as_deref()))
    },
};

fn xml_file(f: &FileRef, root: Option<&str>) -> Result<FileVerdict, CheckError> {
    let text = fsx::read_text(f)?;
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = match roxmltree::Document::parse_with_options(&text, opts) {
        Ok(d) => d,
        Err(e) => {
            let pos = e.pos();
            return Ok(FileVerdict::bad(
                format!("not well-formed XML: {e}"),
                json!({"line": pos.row, "column": pos.col}),
            ));
        }
    };
    let el = doc.root_element();
    let name = el.tag_name().name();
    let want = root
        .map(str::to_string)
        .or_else(|| (fsx::ext(&f.rel) == "svg").then(|| "svg".to_string()));
    if let Some(want) = want
        && name != want
    {
        return Ok(FileVerdict::bad(
            format!("well-formed XML, but the root element is <{name}>, not <{want}>"),
            json!({"root": name}),
        ));
    }
    Ok(FileVerdict::ok(
        format!("well-formed XML, root <{name}>"),
        json!({"root": name, "namespace": el.tag_name().namespace()}),
    ))
}

pub(crate) const HTML: CheckDef = CheckDef {
    name: "html",
    aliases: &["html_valid", "valid_html"],
    summary: "the file parses as HTML with no more than max_errors structural errors",
    params: &[
        PATH,
        opt(
            "max_errors",
            Kind::UInt,
            "structural errors tolerated (default 0)",
        ),
    ],
    rules: no_rules,
    run: |ctx, p| {
        let max = get_u64(p, "max_errors").unwrap_or(0);
        per_file(ctx, p, &|f| {
            let text = fsx::read_text(f)?;
            let report = crate::html::parse(&text);
            let n = report.error_count as u64;
            let errors: Vec<Value> = report
                .errors
                .iter()
                .map(|(line, msg)| json!({"line": line, "message": msg}))
                .collect();
            let detail = json!({
                "errors": errors, "error_count": n, "max_errors": max,
                "quirks_mode": report.quirks_mode,
            });
            Ok(if n > max {
                let first = report
                    .errors
                    .first()
                    .map(|(l, m)| format!("line {l}: {m}"))
                    .unwrap_or_default();
                FileVerdict::bad(
                    format!(
                        "{n} HTML structural error(s) (at most {max} allowed), first at {first}"
                    ),
                    detail,
                )
            } else {
                FileVerdict::ok(format!("parses as HTML ({n} structural errors)"), detail)
            })
        })
    },
};

pub(crate) const MARKDOWN_HEADINGS: CheckDef = CheckDef {
    name: "markdown_headings",
    aliases: &["markdown-headings", "headings"],
    summary: "Markdown headings skip no level and there is exactly one H1",
    params: &[
        PATH,
        opt(
            "single_h1",
            Kind::Bool,
            "require exactly one level-1 heading (default true)",
        ),
    ],
    rules: no_rules,
    run: |ctx, p| {
        let single_h1 = get_bool(p, "single_h1", true);
        per_file(ctx, p, &|f| markdown_file(f, single_h1))
    },
};

fn markdown_file(f: &FileRef, single_h1: bool) -> Result<FileVerdict, CheckError> {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let text = fsx::read_text(f)?;
    let mut headings: Vec<(u8, usize, String)> = Vec::new();
    let mut current: Option<(u8, usize, String)> = None;
    for (ev, range) in Parser::new(&text).into_offset_iter() {
        match ev {
            Event::Start(Tag::Heading { level, .. }) => {
                current = Some((
                    level as u8,
                    fsx::line_col(&text, range.start).0,
                    String::new(),
                ));
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(c) = current.as_mut() {
                    c.2.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(c) = current.take() {
                    headings.push(c);
                }
            }
            _ => {}
        }
    }
    let mut problems = Vec::new();
    let h1: Vec<usize> = headings.iter().filter(|h| h.0 == 1).map(|h| h.1).collect();
    if single_h1 {
        match h1.len() {
            0 => problems.push("there is no level-1 heading (# Title)".to_string()),
            1 => {}
            n => problems.push(format!(
                "{n} level-1 headings (lines {}); there must be exactly one",
                h1.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    let mut prev: u8 = 0;
    for (level, line, title) in &headings {
        if *level > prev + 1 {
            let from = if prev == 0 {
                "the start of the document".to_string()
            } else {
                format!("an H{prev}")
            };
            problems.push(format!(
                "line {line}: H{level} \"{}\" follows {from}, skipping level {}",
                title.trim(),
                prev + 1
            ));
        }
        prev = *level;
    }
    let list: Vec<Value> = headings
        .iter()
        .take(500)
        .map(|(l, line, t)| json!({"level": l, "line": line, "text": t.trim()}))
        .collect();
    let detail = json!({"headings": list, "problems": problems});
    Ok(if problems.is_empty() {
        FileVerdict::ok(
            format!("{} heading(s), no skipped levels", headings.len()),
            detail,
        )
    } else {
        FileVerdict::bad(problems.join("; "), detail)
    })
}

/// Counts documents, checking the syntax only: aliases are never expanded, so
/// an alias bomb costs nothing.
fn yaml_syntax(text: &str) -> Result<usize, (usize, usize, String)> {
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    struct Docs(usize);
    impl MarkedEventReceiver for Docs {
        fn on_event(&mut self, ev: Event, _: yaml_rust2::scanner::Marker) {
            if matches!(ev, Event::DocumentStart) {
                self.0 += 1;
            }
        }
    }
    let mut docs = Docs(0);
    Parser::new_from_str(text)
        .load(&mut docs, true)
        .map_err(|e| {
            (
                e.marker().line(),
                e.marker().col() + 1,
                e.info().to_string(),
            )
        })?;
    Ok(docs.0)
}
