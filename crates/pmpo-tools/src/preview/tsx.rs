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

/// How the entry's JSX is compiled, and what the host page mounts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jsx {
    /// The file sets its own factory (`/** @jsx h */`): esbuild's defaults.
    Pragma,
    /// No React and no pragma: pmpo's small DOM factory (`__pmpoH`).
    Dom,
    /// The file imports React, found in the workspace's `node_modules`:
    /// bundled, JSX compiled for React, mounted with react-dom's `createRoot`.
    React,
}

/// What compiling an entry needs, read from its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub jsx: Jsx,
    /// The file imports React and react or react-dom is not installed: which.
    pub react_missing: Option<&'static str>,
}

/// Whether `source` imports React (`react`, `react/...`, `react-dom`).
pub fn imports_react(source: &str) -> bool {
    ["from", "import", "require("].iter().any(|kw| {
        source.match_indices(kw).any(|(i, _)| {
            let rest = source[i + kw.len()..].trim_start_matches([' ', '\t', '(']);
            let Some(q) = rest
                .chars()
                .next()
                .filter(|c| matches!(c, '"' | '\'' | '`'))
            else {
                return false;
            };
            let spec = rest[1..].split(q).next().unwrap_or_default();
            spec == "react" || spec.starts_with("react/") || spec.starts_with("react-dom")
        })
    })
}

/// Reads how to compile an entry: its source, its absolute path, the workspace root.
pub fn plan(source: &str, entry: &Path, workspace: &Path) -> Plan {
    if imports_react(source) {
        let installed = |pkg: &str| {
            entry
                .ancestors()
                .skip(1)
                .take_while(|d| d.starts_with(workspace))
                .any(|d| {
                    d.join("node_modules")
                        .join(pkg)
                        .join("package.json")
                        .is_file()
                })
        };
        let react_missing = if !installed("react") {
            Some("react")
        } else if !installed("react-dom") {
            Some("react-dom")
        } else {
            None
        };
        return Plan {
            jsx: Jsx::React,
            react_missing,
        };
    }
    let jsx = if source.contains("@jsx") {
        Jsx::Pragma
    } else {
        Jsx::Dom
    };
    Plan {
        jsx,
        react_missing: None,
    }
}

/// The hint of a page that imports React when it is not installed.
pub const REACT_HINT: &str = "install React where the page is: `npm install react react-dom` in the workspace (pmpo ships no React); or drop the React import and let pmpo mount the component with its own small JSX factory";

/// The global the bundle's exports are kept in (`M`: the entry's module; with React, `R` and `createRoot` too).
const BUNDLE_GLOBAL: &str = "__pmpoBundle";

/// Bundles `entry` (absolute) into one IIFE script, returned as text. The
/// entry's exports stay reachable (see [`host_page`]).
pub async fn compile(
    esbuild: &Path,
    entry: &Path,
    plan: &Plan,
    cwd: &Path,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<String, String> {
    let file = entry
        .file_name()
        .map(|f| format!("./{}", f.to_string_lossy()))
        .unwrap_or_default();
    let dir = entry.parent().unwrap_or(cwd);
    let mut wrapper = format!(
        "import * as M from {};\nexport {{ M }};\n",
        serde_json::to_string(&file).unwrap_or_default()
    );
    let mut argv = vec![
        esbuild.to_string_lossy().into_owned(),
        "--bundle".into(),
        "--format=iife".into(),
        format!("--global-name={BUNDLE_GLOBAL}"),
        "--platform=browser".into(),
        "--target=es2020".into(),
        "--log-level=warning".into(),
        "--color=false".into(),
        "--sourcefile=pmpo-preview-entry.js".into(),
    ];
    match plan.jsx {
        Jsx::Pragma => {}
        Jsx::Dom => {
            argv.push("--jsx-factory=__pmpoH".into());
            argv.push("--jsx-fragment=__pmpoFragment".into());
        }
        Jsx::React => {
            argv.push("--jsx=automatic".into());
            argv.push("--define:process.env.NODE_ENV=\"production\"".into());
            wrapper.push_str("import * as R from \"react\";\nimport { createRoot } from \"react-dom/client\";\nexport { R, createRoot };\n");
        }
    }
    // The wrapper comes on standard input: its import resolves from the
    // working directory, the entry's own.
    let spec = ProcessSpec {
        argv,
        cwd: dir.to_path_buf(),
        env: vec![],
        stdin: Some(wrapper.into_bytes()),
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

/// pmpo's JSX factory for files without React or a pragma: builds DOM
/// nodes; a function tag is called with its props (and `children`).
const DOM_JSX: &str = r#"window.__pmpoFragment = Symbol("fragment");
window.__pmpoH = function (tag, props, ...children) {
  const kids = children.flat(Infinity);
  if (typeof tag === "function") return tag(Object.assign({}, props, {children: kids}));
  const el = tag === window.__pmpoFragment ? document.createDocumentFragment() : document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "children" || v == null || v === false) continue;
    if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (/^on[A-Z]/.test(k) && typeof v === "function") el.addEventListener(k.slice(2).toLowerCase(), v);
    else el.setAttribute(k === "className" ? "class" : k === "htmlFor" ? "for" : k, v === true ? "" : v);
  }
  for (const c of kids) if (c != null && c !== false && c !== true) el.append(c instanceof Node ? c : String(c));
  return el;
};"#;

/// Runs after the bundle: when `#root` is still empty, mounts the entry's
/// default export (or its only exported function) with no props, and
/// leaves what it did in `window.__pmpoMount` for the report.
const MOUNT: &str = r#"(() => {
  const out = window.__pmpoMount = {mounted: false};
  const root = document.getElementById("root");
  const b = window.__pmpoBundle;
  if (!b) { out.why = "no-bundle"; return; }
  const m = b.M || {};
  out.exports = Object.keys(m);
  if (root.childNodes.length) { out.why = "self-mounted"; return; }
  let c = m.default, name = "default";
  if (c instanceof Node) { root.append(c); out.mounted = true; out.component = "default"; out.with = "dom"; return; }
  if (typeof c !== "function") {
    const fns = out.exports.filter(n => typeof m[n] === "function");
    if (fns.length > 1) { out.why = "several"; out.candidates = fns; return; }
    if (fns.length === 0) { out.why = "none"; return; }
    name = fns[0]; c = m[name];
  }
  out.component = name === "default" ? (c.name || "default") : name;
  out.why = "threw";
  if (b.createRoot) {
    b.createRoot(root).render(b.R.createElement(c));
    out.with = "react-dom";
  } else {
    const v = c({});
    if (v == null || v === false) { out.why = "returned-nothing"; return; }
    root.append(v instanceof Node ? v : String(v));
    out.with = "dom";
  }
  out.mounted = true; delete out.why;
})();"#;

/// The page that runs a compiled bundle, then mounts its component.
pub fn host_page(title: &str) -> String {
    let title = crate::template::escape_html(title);
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n</head>\n<body>\n<div id=\"root\"></div>\n<script>{DOM_JSX}</script>\n<script src=\"bundle.js\"></script>\n<script>{MOUNT}</script>\n</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn react_imports_are_seen() {
        assert!(imports_react("import React from \"react\";"));
        assert!(imports_react("import { useState } from 'react'"));
        assert!(imports_react(
            "import {createRoot} from \"react-dom/client\""
        ));
        assert!(imports_react("const R = require(\"react\")"));
        assert!(!imports_react(
            "import { h } from \"./react-like\"; // from react"
        ));
        assert!(!imports_react(
            "export default function Hello() { return <h1>Hello</h1>; }"
        ));
    }

    #[test]
    fn the_plan_follows_the_source() {
        let ws = Path::new("/nonexistent-ws");
        let entry = ws.join("ui/App.tsx");
        assert_eq!(
            plan("/** @jsx h */ function h() {}", &entry, ws).jsx,
            Jsx::Pragma
        );
        assert_eq!(plan("export default () => <b/>", &entry, ws).jsx, Jsx::Dom);
        let react = plan("import React from 'react'", &entry, ws);
        assert_eq!(
            (react.jsx, react.react_missing),
            (Jsx::React, Some("react"))
        );
    }
}
