//! The UI adapter: a page or component (HTML, HTMX, TSX/JSX) rendered in a
//! browser.

use serde_json::json;

use pmpo_plan::{ConstraintKind, Severity};

use super::values::{StageValue, copy_stage, stage};
use super::{
    AdapterError, AdapterInput, Builder, Scope, accessibility, ext, file_name, need_input, stem,
};

pub(super) fn ui(b: &mut Builder, s: &Scope, input: &AdapterInput<'_>) -> Result<(), AdapterError> {
    let page = need_input(input, "a page or component", &["html", "htm", "tsx", "jsx"])?;
    let id = s.id(&stem(page));
    let copy = s.path(&file_name(page));
    b.stage(s, copy_stage("import", page, &copy));
    let tsx = matches!(ext(page).as_str(), "tsx" | "jsx");
    let description = if tsx {
        "Compile the component and render it in a headless browser"
    } else {
        "Render the page in a headless browser (HTMX from the local copy)"
    };
    b.stage(
        s,
        stage("preview", "preview", description)
            // After the copy: a failed render must not cut the copy short.
            .after(["import"])
            .with(json!({"input": page, "id": id, "required": true, "out_dir": s.path("previews"), "viewport": {"width": 1024, "height": 640}}))
            .reads([page])
            .writes([s.path(&format!("previews/{id}/screenshot.png")), s.path(&format!("previews/{id}/preview-report.json"))]),
    );
    let report = s.path(&format!("previews/{id}/preview-report.json"));
    b.constraint(
        s,
        "renders",
        Severity::Blocking,
        ConstraintKind::Visual,
        "The page renders in a browser without console errors, page errors or failed requests",
        Some(("preview", json!({"report": report}))),
    );
    if tsx {
        // The preview compiles the file as the page's entry: a module that
        // mounts itself into `#root` (as the example Badge.tsx does) is as
        // good as one that exports a component for a host to mount.
        b.constraint(s, "exports-component", Severity::High, ConstraintKind::Structural,
            "The module exports a component or mounts one into the page's #root",
            Some(("regex", json!({"path": page, "pattern": "export\\s+(default|function|const|class)|getElementById\\(\\s*[\"']root[\"']\\s*\\)|\\bcreateRoot\\s*\\(", "min": 1}))));
    } else {
        b.constraint(
            s,
            "html-valid",
            Severity::High,
            ConstraintKind::Technical,
            "The page is well-formed HTML",
            Some(("html", json!({"path": page}))),
        );
        b.constraint(
            s,
            "offline-runtime",
            Severity::Medium,
            ConstraintKind::Technical,
            "The page runs without the network (local runtime copies, no remote scripts)",
            // Any <script> whose src is an absolute or protocol-relative
            // URL, whatever the attribute order and quoting (the literal
            // `<script src="http` missed `type="module" src=...` and `//cdn`).
            Some((
                "regex",
                json!({"path": page, "pattern": "(?i)<script\\b[^>]*\\bsrc\\s*=\\s*[\"']?\\s*(https?:)?//", "max": 0}),
            )),
        );
    }
    // The rendered page's audit covers names and alternative text; without
    // a browser, they are left for a person to judge.
    if !accessibility(b, s, &report) {
        b.constraint(
            s,
            "accessible-names",
            Severity::Medium,
            ConstraintKind::Accessibility,
            "Images have alternative text and controls have accessible names",
            None,
        );
    }
    b.d.required_files.push(copy);
    b.d.required_files
        .push(s.path(&format!("previews/{id}/screenshot.png")));
    Ok(())
}
