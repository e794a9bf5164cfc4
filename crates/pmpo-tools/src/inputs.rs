//! Small shared helpers for reading and checking the `with:` inputs of the
//! artifact tools (`template`, `rasterize`, `markdown`, `preview`).

use pmpo_plan::{InputIssue, Reference, TemplateFile, TemplateReport};
use serde_json::{Map, Value};

use crate::{ErrorClass, ToolError, issue};

/// Whether a value is a `$stage.field` reference (resolved only at run time).
pub(crate) fn is_reference(v: &Value) -> bool {
    matches!(v, Value::String(s) if Reference::parse(s).is_some())
}

/// Static check of a workspace-relative path input.
pub(crate) fn check_path(
    inputs: &Map<String, Value>,
    key: &str,
    required: bool,
    issues: &mut Vec<InputIssue>,
) {
    match inputs.get(key) {
        None if required => issues.push(issue(
            "",
            format!("the `{key}` input is required"),
            Some("give a path relative to the workspace"),
        )),
        None => {}
        Some(v) if is_reference(v) => {}
        Some(Value::String(s)) => {
            if let Err(msg) = pmpo_plan::validate_output_pattern(s) {
                issues.push(issue(
                    key,
                    format!("`{key}` {msg}"),
                    Some("give a path relative to the workspace"),
                ));
            }
        }
        Some(_) => issues.push(issue(
            key,
            format!("`{key}` must be a path relative to the workspace"),
            None,
        )),
    }
}

/// The text of the template a stage names at `key` (`what` is "template",
/// "prompt file"), for the plan check of its `{{ name }}`s. `None`, with a
/// note in `report`, when it is known only at run time: a reference, a file
/// an earlier stage writes, or a file that cannot be read now.
pub(crate) fn template_text(
    key: &str,
    what: &str,
    path: &str,
    file: &mut dyn FnMut(&str) -> TemplateFile,
    report: &mut TemplateReport,
) -> Option<String> {
    let why = if is_reference(&Value::String(path.to_string())) {
        format!("the {what} is `{path}`, known only at run time")
    } else {
        match file(path) {
            TemplateFile::Text(text) => return Some(text),
            TemplateFile::Written(stage) => {
                format!("{what} `{path}` is written by stage `{stage}`")
            }
            TemplateFile::Unavailable(why) => {
                format!("{what} `{path}` cannot be read now ({why})")
            }
        }
    };
    report.notes.push(issue(
        key,
        format!("{why}: its variables are checked when the stage runs"),
        None,
    ));
    None
}

pub(crate) fn invalid(message: impl Into<String>) -> ToolError {
    ToolError::new(ErrorClass::InvalidInput, message)
}

/// An I/O error on a workspace file, as a tool error.
pub(crate) fn io_error(action: &str, path: &str, e: impl std::fmt::Display) -> ToolError {
    ToolError::new(ErrorClass::Io, format!("cannot {action} `{path}`: {e}"))
}

/// Reads a workspace file as a tool's input: confined to the workspace, and
/// never through a symbolic link leading out of it (see
/// `Workspace::open_read`).
pub(crate) fn read_file(ws: &pmpo_store::Workspace, rel: &str) -> Result<Vec<u8>, ToolError> {
    ws.read(rel).map_err(|e| read_error(rel, e))
}

/// [`read_file`] as UTF-8 text (invalid bytes are an error naming the file).
pub(crate) fn read_text(ws: &pmpo_store::Workspace, rel: &str) -> Result<String, ToolError> {
    String::from_utf8(read_file(ws, rel)?)
        .map_err(|_| invalid(format!("`{rel}` is not UTF-8 text")))
}

/// A refused or failed read of a workspace file, as a tool error with what to do.
pub(crate) fn read_error(rel: &str, e: pmpo_store::StoreError) -> ToolError {
    use pmpo_store::StoreError;
    match &e {
        StoreError::Link { .. } | StoreError::Escape { .. } => {
            let hint = e.hint();
            invalid(e.to_string()).hint(hint)
        }
        StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => io_error(
            "read", rel, source,
        )
        .hint("check the path (relative to the workspace) and that an earlier stage created it"),
        StoreError::Io { source, .. } => io_error("read", rel, source),
        StoreError::Open { .. } | StoreError::Pattern { .. } | StoreError::Ledger(_) => {
            io_error("read", rel, &e)
        }
    }
}

/// The path of `target` relative to the directory of `from` (both
/// workspace-relative, `/`-separated), for links inside generated pages.
pub fn relative_link(from_file: &str, target: &str) -> String {
    let from_dir: Vec<&str> = {
        let mut parts: Vec<&str> = from_file
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        parts.pop();
        parts
    };
    let to: Vec<&str> = target
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let common = from_dir
        .iter()
        .zip(to.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out: Vec<&str> = vec![".."; from_dir.len() - common];
    out.extend(&to[common..]);
    if out.is_empty() {
        ".".into()
    } else {
        out.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links() {
        assert_eq!(
            relative_link("dist/index.html", "dist/logo-16.png"),
            "logo-16.png"
        );
        assert_eq!(relative_link("dist/index.html", "dist/a/b.png"), "a/b.png");
        assert_eq!(
            relative_link("dist/previews/x/preview.html", "pages/card.html"),
            "../../../pages/card.html"
        );
        assert_eq!(relative_link("index.html", "dist/x.png"), "dist/x.png");
    }
}
