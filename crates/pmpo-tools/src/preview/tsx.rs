//! Compiling a `.tsx`/`.jsx` entry to one browser script with esbuild.
//!
//! esbuild is a development dependency of the project (`tools/package.json`,
//! installed by `npm ci --prefix tools`); pmpo never downloads it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Termination;
use crate::process::{ProcessSpec, run_process};

/// What to tell a user without esbuild.
pub const ESBUILD_HINT: &str = "install esbuild: `npm ci --prefix tools` in the pmpo checkout (or `npm install --save-dev esbuild` in your project), or set PMPO_ESBUILD (or the stage's `esbuild:` input) to its path";

/// Finds esbuild: the configured path, `PMPO_ESBUILD`, `tools/node_modules`
/// or `node_modules` in the workspace or a directory above it (or above the
/// pmpo binary), then `PATH`.
pub fn find_esbuild(configured: Option<&str>, workspace: &Path) -> Option<PathBuf> {
    if let Some(p) = configured {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    if let Some(p) = std::env::var_os("PMPO_ESBUILD").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let starts = std::iter::once(workspace.to_path_buf()).chain(exe_dir);
    for start in starts {
        for dir in start.ancestors() {
            for rel in [
                "tools/node_modules/.bin/esbuild",
                "node_modules/.bin/esbuild",
            ] {
                let p = dir.join(rel);
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("esbuild"))
            .find(|p| p.is_file())
    })
}

/// Bundles `entry` (absolute) into one IIFE script, returned as text.
pub async fn compile(
    esbuild: &Path,
    entry: &Path,
    cwd: &Path,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<String, String> {
    let spec = ProcessSpec {
        argv: vec![
            esbuild.to_string_lossy().into_owned(),
            entry.to_string_lossy().into_owned(),
            "--bundle".into(),
            "--format=iife".into(),
            "--platform=browser".into(),
            "--target=es2020".into(),
            "--log-level=warning".into(),
            "--color=false".into(),
        ],
        cwd: cwd.to_path_buf(),
        env: vec![],
        stdin: None,
        capture_limit: 64 * 1024 * 1024,
        pre_exec: None,
    };
    let result = run_process(&spec, timeout, cancel)
        .await
        .map_err(|e| format!("cannot start esbuild `{}`: {e}", esbuild.display()))?;
    match result.termination {
        Termination::Exited(0) => {
            if result.stdout.truncated() {
                return Err("the bundle is larger than 64 MiB".into());
            }
            String::from_utf8(result.stdout.head)
                .map_err(|_| "esbuild's output is not UTF-8".to_string())
        }
        Termination::Exited(code) => Err(format!(
            "esbuild failed (exit {code}): {}",
            result.stderr.text().trim()
        )),
        Termination::TimedOut => Err("esbuild timed out".into()),
        Termination::Cancelled => Err("cancelled".into()),
        Termination::Signaled(sig) => Err(format!("esbuild was killed by signal {sig}")),
    }
}

/// The page that runs a compiled bundle.
pub fn host_page(title: &str) -> String {
    let title = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n</head>\n<body>\n<div id=\"root\"></div>\n<script src=\"bundle.js\"></script>\n</body>\n</html>\n"
    )
}
