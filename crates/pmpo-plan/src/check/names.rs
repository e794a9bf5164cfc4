//! Names and paths a plan gives: stage ids, the artifact name, output and
//! input patterns.

use super::MAX_ID_LEN;
use crate::reference::is_id_char;

pub(super) fn validate_stage_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("stage id is empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "stage id is {} characters long (at most {MAX_ID_LEN})",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|&c| !is_id_char(c)) {
        return Err(format!("stage id `{}` contains {:?}", id.escape_debug(), c));
    }
    Ok(())
}

/// Artifact names become directory names, so they are held to a safe alphabet.
pub fn validate_artifact_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("artifact name is empty".into());
    }
    if name.len() > MAX_ID_LEN {
        return Err(format!(
            "artifact name is {} bytes long (at most {MAX_ID_LEN})",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "artifact name contains the control character {c:?}"
        ));
    }
    if name.contains(['/', '\\']) {
        return Err(format!("artifact name `{name}` contains a path separator"));
    }
    if name.contains("..") {
        return Err(format!("artifact name `{name}` contains `..`"));
    }
    if !name.chars().next().is_some_and(char::is_alphanumeric) {
        return Err(format!(
            "artifact name `{name}` must start with a letter or digit"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("artifact name `{name}` contains {c:?}"));
    }
    Ok(())
}

/// An output pattern must stay inside the workspace and be a valid glob.
pub fn validate_output_pattern(pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() {
        return Err("is empty".into());
    }
    if pattern.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if pattern.starts_with('/')
        || pattern.starts_with('\\')
        || pattern.as_bytes().get(1) == Some(&b':')
    {
        return Err("is an absolute path; outputs must be inside the workspace".into());
    }
    if pattern.starts_with('~') {
        return Err(
            "starts with `~`; outputs must be inside the workspace, not the home directory".into(),
        );
    }
    if pattern.split(['/', '\\']).any(|c| c == "..") {
        return Err("contains `..`; outputs must stay inside the workspace".into());
    }
    if pattern.split(['/', '\\']).all(|c| c.is_empty() || c == ".") {
        return Err("names the workspace itself; name the files or a directory inside it".into());
    }
    // pmpo's own state: a stage granted it could overwrite the ledger.
    let own_dirs = [".state", ".refiner", "logs"];
    let own_words = |own: &str| {
        format!(
            "names or matches pmpo's own `{own}/`; outputs are files of the artifact, such as `dist/*`"
        )
    };
    // A plain path (most outputs) is a valid glob that matches only itself:
    // no glob is compiled for it (a plan of 10,000 stages spent most of its
    // check compiling them).
    if !pattern.contains(['*', '?', '[', ']', '{', '}', '\\']) {
        let first = pattern
            .trim_start_matches("./")
            .split('/')
            .next()
            .unwrap_or("");
        return match own_dirs.iter().find(|own| **own == first) {
            Some(own) => Err(own_words(own)),
            None => Ok(()),
        };
    }
    globset::Glob::new(pattern).map_err(|e| format!("is not a valid glob: {}", e.kind()))?;
    let norm = pattern.replace('\\', "/");
    let norm = norm.trim_start_matches("./");
    let matcher = globset::GlobBuilder::new(norm)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .ok();
    // The first component as a pattern of its own (`.s*` in `.s*/db`).
    let first = norm.split('/').next().unwrap_or("");
    let first_glob = globset::Glob::new(first).map(|g| g.compile_matcher()).ok();
    for own in own_dirs {
        let hit = first == own
            || first_glob.as_ref().is_some_and(|m| m.is_match(own))
            || matcher
                .as_ref()
                .is_some_and(|m| m.is_match(own) || m.is_match(format!("{own}/x")));
        if hit {
            return Err(own_words(own));
        }
    }
    Ok(())
}
