//! The pmpo plan: its data model, a position-aware YAML/JSON loader, and the
//! static checks `pmpo check` runs before anything executes.
//!
//! ```text
//! load_plan(path) -> LoadedPlan { doc: PlanDocument, root: Node }
//! check(&loaded, &catalog) -> Vec<Diagnostic>
//! ```

pub mod check;
pub mod checks;
pub mod de;
pub mod diag;
pub mod model;
pub mod node;
pub mod reference;

use std::path::{Path, PathBuf};

pub use check::{
    BUILTIN_FIELDS, CheckReport, InputIssue, NamedOutputs, TemplateFile, TemplateReport,
    ToolCatalog, check, check_report, execution_order, validate_artifact_name,
    validate_output_pattern,
};
pub use checks::{CheckCatalog, check_validations};
pub use diag::Diagnostic;
pub use model::*;
pub use node::{Node, PathSeg, Pos};
pub use reference::{Reference, Seg};

/// Plans larger than this are refused before parsing.
pub const MAX_PLAN_BYTES: u64 = 64 * 1024 * 1024;

/// A parsed plan with the document tree it came from (for positions).
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    pub path: PathBuf,
    /// How to name the file in messages.
    pub display: String,
    pub text: String,
    pub doc: PlanDocument,
    pub root: Node,
}

impl LoadedPlan {
    /// A diagnostic positioned at `path` in the document (or at its parent when absent).
    pub fn diag_at(&self, path: &[PathSeg<'_>], message: impl Into<String>) -> Diagnostic {
        let mut p = path;
        let pos = loop {
            if let Some(node) = self.root.get_path(p) {
                break node.pos;
            }
            if p.is_empty() {
                break None;
            }
            p = &p[..p.len() - 1];
        };
        Diagnostic::new(&self.display, pos, message)
            .with_path(render_path(path))
            .with_source(&self.text)
    }
}

/// `plan.stages[3].with` from path segments.
pub fn render_path(path: &[PathSeg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSeg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Reads and parses a plan file (YAML, or JSON by extension or content).
pub fn load_plan(path: &Path) -> Result<LoadedPlan, Vec<Diagnostic>> {
    let display = path.display().to_string();
    let fail = |msg: String, help: &str| vec![Diagnostic::new(&display, None, msg).with_help(help)];
    let meta = std::fs::metadata(path).map_err(|e| {
        fail(
            format!("cannot read the plan: {e}"),
            "check the path; a plan is a YAML or JSON file",
        )
    })?;
    if meta.is_dir() {
        return Err(fail(
            "this is a directory, not a plan file".into(),
            "name the plan file itself, e.g. plan.yaml",
        ));
    }
    if meta.len() > MAX_PLAN_BYTES {
        return Err(fail(
            format!(
                "the plan is {} bytes; plans larger than {MAX_PLAN_BYTES} bytes are refused",
                meta.len()
            ),
            "split the plan, or keep large data in files that stages read",
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        fail(
            format!("cannot read the plan: {e}"),
            "check the file's permissions",
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(
            format!(
                "the plan is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            "a plan is a YAML or JSON text file; is this a binary file?",
        )
    })?;
    parse_plan_text(text, path.to_path_buf(), display)
}

/// Parses plan text already in memory; `display` names it in messages.
pub fn parse_plan_text(
    text: String,
    path: PathBuf,
    display: String,
) -> Result<LoadedPlan, Vec<Diagnostic>> {
    let text = text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text);
    parse_document(&text, &path, &display)
        .map_err(|diags| diags.into_iter().map(|d| d.with_source(&text)).collect())
        .map(|(doc, root)| LoadedPlan {
            path,
            display,
            text,
            doc,
            root,
        })
}

/// The document tree and the plan read from it, or what stops reading it.
fn parse_document(
    text: &str,
    path: &Path,
    display: &str,
) -> Result<(PlanDocument, Node), Vec<Diagnostic>> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let root = match node::parse_yaml(text) {
        Ok(root) => root,
        Err(_) if is_json => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => Node::from_json(&value),
            Err(e) => {
                let pos = Pos {
                    line: e.line(),
                    column: e.column(),
                };
                return Err(vec![
                    Diagnostic::new(display, Some(pos), format!("JSON syntax error: {e}"))
                        .with_help("fix the JSON syntax at that position"),
                ]);
            }
        },
        Err(e) => {
            return Err(vec![
                Diagnostic::new(display, e.pos, e.message.clone())
                    .with_help(yaml_err_hint(&e.message)),
            ]);
        }
    };
    if !matches!(root.kind, node::NodeKind::Map(_)) {
        return Err(vec![
            Diagnostic::new(
                display,
                root.pos,
                format!("a plan must be a mapping, found {}", root.type_name()),
            )
            .with_help(
                "start the file with `specification:` and `plan:` (see docs/plan-format.md)",
            ),
        ]);
    }
    let doc: PlanDocument =
        de::from_node(&root).map_err(|e| vec![deserialize_diag(display, &root, e)])?;
    Ok((doc, root))
}

fn yaml_err_hint(message: &str) -> String {
    if message.contains("tab") {
        "YAML indentation must use spaces, not tabs".into()
    } else if message.contains("duplicate key") {
        "each key may appear once per mapping; remove or rename one".into()
    } else if message.contains("PMPO_YAML_MAX_DEPTH") {
        "a plan needs a few levels; this looks generated wrongly. If it is meant, raise the limit: PMPO_YAML_MAX_DEPTH=N".into()
    } else if message.contains("PMPO_YAML_MAX_ALIAS_NODES") {
        "write the repeated parts out, or raise the limit: PMPO_YAML_MAX_ALIAS_NODES=N".into()
    } else {
        "fix the YAML syntax at that position (check indentation and quoting)".into()
    }
}

fn deserialize_diag(display: &str, root: &Node, err: de::DeError) -> Diagnostic {
    let path = err.pos.and_then(|p| root.path_to(p));
    let mut diag = Diagnostic::new(display, err.pos, err.message.clone());
    if let Some(path) = path {
        diag = diag.with_path(path);
    }
    // serde says: unknown field `dependson`, expected one of `id`, `description`, ...
    if let Some(rest) = err.message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let expected: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
        let help = match diag::did_you_mean(field, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("remove `{field}`; the fields allowed here are listed above"),
        };
        diag = diag.with_help(help);
    } else if let Some(rest) = err.message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        diag = diag.with_help(format!("add `{field}:` here (see docs/plan-format.md)"));
    } else if err.message.starts_with("unknown variant") {
        diag = diag.with_help("use one of the values listed");
    } else {
        diag = diag.with_help("see docs/plan-format.md for the expected shape");
    }
    diag
}
