//! The content adapter: a Markdown document rendered to an HTML report, its
//! structure and links checked.

use std::path::Path;

use serde_json::json;

use pmpo_plan::{ConstraintKind, Severity};

use super::values::{StageValue, stage};
use super::{AdapterError, AdapterInput, Builder, Scope, accessibility, need_input, stem};

pub(super) fn content(
    b: &mut Builder,
    s: &Scope,
    input: &AdapterInput<'_>,
) -> Result<(), AdapterError> {
    let md = need_input(input, "a Markdown document", &["md", "markdown"])?;
    let st = stem(md);
    let body = s.path(&format!("{st}-body.html"));
    let page = s.path(&format!("{st}.html"));
    let id = s.id(&st);
    b.stage(
        s,
        stage(
            "render",
            "markdown",
            "Markdown to an HTML fragment with heading ids",
        )
        .with(json!({"input": md, "output": body}))
        .reads([md])
        .writes([body.as_str()]),
    );
    b.stage(
        s,
        stage("page", "template", "Lay the document out as a report page with a table of contents")
            .after(["render"])
            .with(json!({"template": "builtin:content-report", "output": page,
                     "vars": {"TITLE": format!("${}.title", s.id("render")), "BODY": format!("${}.html", s.id("render")), "TOC": format!("${}.headings", s.id("render"))}}))
            .writes([page.as_str()]),
    );
    // The page lives in dist/, the document elsewhere: the files it links to
    // by relative path go next to the page, at the same relative paths, or
    // every relative link and image of a good document would be broken.
    let dir = md.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let assets: Vec<String> = local_links(input.root, dir, &head_of(input.root, md))
        .into_iter()
        .filter(|a| s.path(a) != page && s.path(a) != body)
        .collect();
    let mut preview_deps = vec!["page"];
    if !assets.is_empty() {
        let mut command = vec![
            json!("sh"),
            json!("-c"),
            json!(
                "while [ $# -gt 1 ]; do mkdir -p \"$(dirname \"$2\")\" && cp \"$1\" \"$2\" || exit 1; shift 2; done"
            ),
            json!("sh"),
        ];
        let mut from = Vec::new();
        let mut to = Vec::new();
        for a in &assets {
            let src = if dir.is_empty() {
                a.clone()
            } else {
                format!("{dir}/{a}")
            };
            let dst = s.path(a);
            command.push(json!(src));
            command.push(json!(dst));
            from.push(src);
            to.push(dst);
        }
        b.stage(
            s,
            stage(
                "assets",
                "run",
                "Copy the files the document links to next to the report page",
            )
            .with(json!({"command": command}))
            .reads(from)
            .writes(to),
        );
        preview_deps.push("assets");
    }
    b.stage(
        s,
        stage("preview", "preview", "Render the report in a headless browser")
            .after(preview_deps)
            .with(json!({"input": page, "id": id, "out_dir": s.path("previews"), "viewport": {"width": 1100, "height": 900}}))
            .writes([s.path(&format!("previews/{id}"))]),
    );
    b.constraint(
        s,
        "page-exists",
        Severity::Blocking,
        ConstraintKind::Structural,
        "The report page exists and is not empty",
        Some(("non_empty", json!({"path": page}))),
    );
    b.constraint(
        s,
        "heading-hierarchy",
        Severity::High,
        ConstraintKind::Structural,
        "One level-1 heading and no skipped heading levels",
        Some(("markdown_headings", json!({"path": md, "single_h1": true}))),
    );
    b.constraint(
        s,
        "links-resolve",
        Severity::Medium,
        ConstraintKind::Structural,
        "Every relative link of the report resolves",
        Some(("links", json!({"path": page}))),
    );
    let report = s.path(&format!("previews/{id}/preview-report.json"));
    b.constraint(
        s,
        "renders",
        Severity::High,
        ConstraintKind::Visual,
        "The report renders in a browser without errors",
        Some(("preview", json!({"report": report}))),
    );
    accessibility(b, s, &report);
    b.d.required_files.push(page);
    Ok(())
}

/// The start of a workspace text file (empty when it cannot be read).
/// Inputs are named by their real path (`check_inputs`), so a link at the
/// file is not followed.
fn head_of(root: &Path, rel: &str) -> String {
    use std::io::Read;
    // Read only (no write): `open_own` refuses a link at the file.
    let Ok(file) = pmpo_store::open_own(&root.join(rel), std::fs::OpenOptions::new().read(true))
    else {
        return String::new();
    };
    let mut bytes = Vec::new();
    let _ = file.take(1 << 20).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The relative link and image targets of a Markdown text that name files
/// under `dir` (workspace-relative), as paths relative to `dir`: inline
/// `[..](target)`, reference definitions `[id]: target`, and `src`/`href`
/// attributes of inline HTML. Fragments and queries are dropped; URLs,
/// absolute paths, anchors and paths that climb out of `dir` are left out.
fn local_links(root: &Path, dir: &str, text: &str) -> Vec<String> {
    let take = |rest: &str, close: &[char]| -> String {
        let rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('<') {
            r.split('>').next().unwrap_or("").to_string()
        } else {
            rest.split(|c: char| c.is_whitespace() || close.contains(&c))
                .next()
                .unwrap_or("")
                .to_string()
        }
    };
    let mut found: Vec<String> = Vec::new();
    for (i, _) in text.match_indices("](") {
        found.push(take(&text[i + 2..], &[')']));
    }
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[')
            && let Some(j) = t.find("]:")
        {
            found.push(take(&t[j + 2..], &[]));
        }
    }
    for attr in ["src=\"", "href=\""] {
        for (i, _) in text.match_indices(attr) {
            found.push(take(&text[i + attr.len()..], &['"']));
        }
    }
    let mut out: Vec<String> = Vec::new();
    for target in &found {
        let target = target.split(['#', '?']).next().unwrap_or("");
        if target.is_empty() || target.starts_with('/') || target.contains(':') {
            continue;
        }
        let mut parts: Vec<&str> = Vec::new();
        let mut escapes = false;
        for seg in target.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        escapes = true;
                        break;
                    }
                }
                other => parts.push(other),
            }
        }
        if escapes || parts.is_empty() {
            continue;
        }
        let rel = parts.join("/");
        let on_disk = if dir.is_empty() {
            root.join(&rel)
        } else {
            root.join(dir).join(&rel)
        };
        if on_disk.is_file() && !out.contains(&rel) {
            out.push(rel);
        }
    }
    out.sort();
    out
}
