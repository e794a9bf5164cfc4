//! What the preview tests share: whether Chromium is there, a workspace of
//! pages, and one invocation of the preview tool with its report.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use pmpo_store::Workspace;
use pmpo_tools::preview::{PreviewReport, PreviewTool};
use pmpo_tools::{Tool, ToolContext, ToolOutcome};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// Whether the browser is required (scripts/test.sh sets it): then a missing
/// one fails the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("PMPO_REQUIRE_BROWSER").ok().as_deref() == Some("1")
}

/// Whether Chromium is there (else the test says so and passes).
pub fn have_chromium() -> bool {
    let found = pmpo_tools::preview::browser::find_chromium(None).is_ok();
    if !found {
        assert!(
            !required(),
            "Chromium is required (PMPO_REQUIRE_BROWSER=1) but was not found"
        );
        eprintln!("skipping: Chromium not found");
    }
    found
}

/// Writes `text` at `rel` under `root`, making its directories.
pub fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A workspace holding `pages` (path, text), or `None` (the test passes)
/// without Chromium.
pub fn pages(pages: &[(&str, &str)]) -> Option<(tempfile::TempDir, Workspace)> {
    if !have_chromium() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in pages {
        write(dir.path(), rel, text);
    }
    let ws = Workspace::open(dir.path()).unwrap();
    Some((dir, ws))
}

/// Runs the preview tool once outside a plan; its outcome and the report it wrote.
pub async fn run(
    tool: &PreviewTool,
    ws: &Workspace,
    inputs: Value,
    timeout: Duration,
) -> (ToolOutcome, PreviewReport) {
    let cancel = CancellationToken::new();
    let ctx = ToolContext {
        workspace: ws,
        run_id: "test",
        stage_id: "preview",
        timeout,
        cancel: &cancel,
        tool: "test",
        spec: None,
        validation: &[],
        description: "",
        confine: None,
    };
    let inputs: Map<String, Value> = inputs.as_object().unwrap().clone();
    let outcome = tool.invoke(&ctx, &inputs).await.unwrap();
    let report_path = outcome.outputs["report"].as_str().unwrap();
    let report: PreviewReport =
        serde_json::from_slice(&std::fs::read(ws.root().join(report_path)).unwrap()).unwrap();
    (outcome, report)
}
