//! A plan run through MCP (`execute`, `validate`) is the host's plan, not a
//! person's: it may not loosen confinement. `sandbox: false`, `network`,
//! `env_passthrough` and a check's `allow_network` are refused before
//! anything runs; only a person's plan file run with `pmpo execute` may set
//! them.
//!
//! The rules are those the loop applies to a plan a model or a host proposes
//! (the Plan phase's refusals, `pmpo_loop::plan_refusals`).

use std::path::Path;

/// The tool error for a workspace plan file the host may not run, if it is
/// one. A plan that does not parse is left to the command, which names its
/// errors.
pub(super) fn refuse(root: &Path, rel: &str) -> Result<(), String> {
    let Ok(loaded) = pmpo_plan::load_plan(&root.join(rel)) else {
        return Ok(());
    };
    // The document as written: a setting spelled out counts even where it
    // is the default.
    let why = pmpo_loop::plan_refusals(&loaded.root.to_json());
    if why.is_empty() {
        return Ok(());
    }
    Err(format!(
        "error: the plan `{rel}` is refused: nothing was run\n{}\n  help: remove these settings; a person who wants them runs the plan with `pmpo execute`",
        why.iter()
            .map(|w| format!("  - {w}"))
            .collect::<Vec<_>>()
            .join("\n")
    ))
}
