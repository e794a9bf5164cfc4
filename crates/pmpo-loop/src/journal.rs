//! Entries of `refinement_log.md` and `decisions.md`.
//!
//! Every entry carries a marker (`<!-- pmpo:ID -->`); an entry whose marker
//! is already in the file is not written again, so a phase that is re-run
//! after a crash does not duplicate its entry.

use pmpo_store::Workspace;

pub const REFINEMENT_LOG: &str = "refinement_log.md";
pub const DECISIONS: &str = "decisions.md";

/// Appends `body` under `marker` unless the file already has that marker.
pub fn append_once(
    ws: &Workspace,
    file: &str,
    marker: &str,
    body: &str,
    run_id: &str,
) -> Result<(), pmpo_store::StoreError> {
    let tag = format!("<!-- pmpo:{marker} -->");
    // Never through a link at the journal (the append refuses one too).
    let existing = ws.read_own(file)?.unwrap_or_default();
    if contains(&existing, tag.as_bytes()) {
        return Ok(());
    }
    let mut text = String::new();
    if existing.is_empty() && file == DECISIONS {
        text.push_str(
            "# Decisions\n\nWhat the PMPO loop decided, iteration by iteration, and why.\n",
        );
    }
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&tag);
    text.push('\n');
    text.push_str(body.trim_end());
    text.push('\n');
    // The whole file is replaced through the recorded write path, so the
    // entry is in the ledger and the log as it was can be brought back.
    let mut all = existing;
    all.extend_from_slice(text.as_bytes());
    let who = pmpo_store::Writer {
        run_id,
        writer: "loop",
    };
    ws.write_file(file, &all, who).map(|_| ())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A Markdown table cell: one line, pipes escaped, bounded.
pub fn cell(text: &str) -> String {
    let one: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .take(240)
        .collect();
    one.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        append_once(&ws, DECISIONS, "a:1", "## one", "r").unwrap();
        append_once(&ws, DECISIONS, "a:1", "## one", "r").unwrap();
        append_once(&ws, DECISIONS, "a:2", "## two", "r").unwrap();
        let text = std::fs::read_to_string(dir.path().join(DECISIONS)).unwrap();
        assert_eq!(text.matches("## one").count(), 1);
        assert!(text.starts_with("# Decisions"));
        assert!(text.contains("## two"));
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
