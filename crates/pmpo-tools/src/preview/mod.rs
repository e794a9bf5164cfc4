//! The `preview` tool (the seeds' `render_preview`): renders a page in
//! headless Chromium and keeps the evidence.
//!
//! ```yaml
//! with:
//!   input: pages/card.html      # .html, or .tsx/.jsx (compiled with esbuild first)
//!   id: card                    # default: the file name without extension
//!   network: false              # default false: requests leaving the page's files are blocked
//!   required: false             # true: a preview that fails or is skipped fails the stage
//!   viewport: {width: 1024, height: 768}
//!   click: ["#show-details"]    # optional: clicked in order before the screenshot
//!   accessibility: true         # default true: axe-core audits the rendered page (WCAG A/AA)
//!   runtimes: auto              # or a list from htmx, alpine ([] adds none)
//! ```
//!
//! Writes `dist/previews/<id>/preview.html` (the page as rendered, with the
//! runtime policy applied: HTMX and Alpine.js, as `runtimes` allows; for a
//! `.tsx`/`.jsx` entry, the host page that runs `bundle.js` and mounts its
//! default export), `screenshot.png` and `preview-report.json`
//! ([`PreviewReport`]; its `findings` say what the page is missing and why a
//! blank screenshot is blank). With the DevTools driver, once the screenshot
//! is taken, axe-core (shipped with pmpo) audits the page in a world of its
//! own and the report's `accessibility` lists the violations ([`a11y`]); the
//! audit never fails the preview (the `accessibility` check judges it).
//!
//! Fallback order: the DevTools driver (full diagnostics) -> Chromium's own
//! `--screenshot` mode (a screenshot, no diagnostics, said so in the report)
//! -> a `skipped` report with the reason when the preview is optional -> a
//! failed stage when it is required.
//!
//! One browser serves every preview of a run; [`Tool::end_run`] closes it
//! (and kills its process group).

pub mod a11y;
pub mod browser;
pub mod cdp;
pub mod driver;
mod findings;
mod job;
mod manifest;
pub mod page;
pub mod report;
mod required;
pub mod runtimes;
pub mod tsx;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pmpo_plan::InputIssue;
use pmpo_store::{Durability, Workspace};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub use report::{
    CheckState, PreviewReport, PreviewVerdict, SourceAt, Viewport, evaluate_preview_dir,
    evaluate_preview_report, evaluate_report, inspect_png,
};

use crate::inputs::{invalid, io_error};
use crate::process::{ProcessSpec, run_process};
use crate::{Captured, Termination, Tool, ToolContext, ToolError, ToolOutcome};
use browser::{Browser, INSTALL_HINT, find_chromium};

pub use job::DEFAULT_OUT_DIR;
use job::{DriverChoice, Job, is_tsx};
use manifest::summary_line;
pub use manifest::{manifest_run, manifest_summary};

/// The `preview` tool, holding the run's browser.
#[derive(Default)]
pub struct PreviewTool {
    browser: Mutex<Option<Browser>>,
    /// Why the DevTools browser could not start in this run (not retried).
    launch_failure: Mutex<Option<String>>,
}

impl PreviewTool {
    pub fn new() -> Self {
        Self::default()
    }

    /// The running browser's process id and profile directory, if one runs.
    pub async fn browser_process(&self) -> Option<(i32, PathBuf)> {
        let guard = self.browser.lock().await;
        guard.as_ref().map(|b| {
            (
                b.pid(),
                b.profile_dir().map(PathBuf::from).unwrap_or_default(),
            )
        })
    }

    /// Closes the browser, if one runs.
    pub async fn shutdown(&self) {
        let browser = self.browser.lock().await.take();
        if let Some(b) = browser {
            b.close().await;
        }
        *self.launch_failure.lock().await = None;
    }
}

/// The preview did not happen: a required one failed, an optional one is skipped.
fn give_up(report: &mut PreviewReport, job: &Job, reason: String, hint: Option<&str>) {
    report.status = if job.required { "failed" } else { "skipped" }.into();
    report.reason = Some(reason);
    report.hint = hint.map(str::to_string);
}

/// The page to render: a copy of an HTML page with the HTMX runtime policy
/// applied, or the host page of a compiled `.tsx`/`.jsx` entry. `None` when
/// there is none (the report says why).
async fn page_html(
    ctx: &ToolContext<'_>,
    job: &Job,
    html_rel: &str,
    report: &mut PreviewReport,
) -> Result<Option<String>, ToolError> {
    let ws = ctx.workspace;
    let page_html = if is_tsx(&job.input) {
        match tsx_page(ctx, job, report).await? {
            Some(page) => page,
            None => return Ok(None),
        }
    } else {
        let bytes = crate::inputs::read_file(ws, &job.input)?;
        let text = String::from_utf8_lossy(&bytes);
        let input_dir = job.input.rsplit_once('/').map_or("", |(d, _)| d);
        // The copy under dist/previews/<id>/ loads the original's relative resources.
        let base = format!("{}/", crate::inputs::relative_link(html_rel, input_dir));
        let prepared = page::prepare_with(&text, job.network, Some(&base), job.runtimes);
        report.findings.extend(prepared.findings);
        report.runtime_source = prepared.runtime.source.into();
        report.runtime_detail = prepared.runtime.detail;
        prepared.html
    };
    Ok(Some(page_html))
}

/// Compiles a `.tsx`/`.jsx` entry (writing `bundle.js`) and returns its host
/// page, or `None` when it cannot be compiled (the report says why).
async fn tsx_page(
    ctx: &ToolContext<'_>,
    job: &Job,
    report: &mut PreviewReport,
) -> Result<Option<String>, ToolError> {
    let ws = ctx.workspace;
    let Some(esbuild) = tsx::find_esbuild(job.esbuild.as_deref(), ws.root()) else {
        report.runtime_detail = "not compiled".into();
        report.html = String::new();
        let reason = format!(
            "`{}` needs esbuild to compile, and esbuild was not found",
            job.input
        );
        give_up(report, job, reason, Some(tsx::ESBUILD_HINT));
        return Ok(None);
    };
    let entry = ws.resolve(&job.input).map_err(|e| invalid(e.to_string()))?;
    // The compiler reads the entry itself: refuse a link out first.
    let source = crate::inputs::read_file(ws, &job.input)?;
    let plan = tsx::plan(&String::from_utf8_lossy(&source), &entry, ws.root());
    if let Some(missing) = plan.react_missing {
        let message = format!(
            "`{}` imports React, but `{missing}` was not found in a node_modules of the workspace: the component cannot be compiled or mounted",
            job.input
        );
        report.findings.push(report::Finding::new(
            "missing-runtime",
            "error",
            message.clone(),
            Some(tsx::REACT_HINT.into()),
        ));
        report.runtime_detail = "not compiled".into();
        report.html = String::new();
        report.status = "failed".into();
        report.reason = Some(message);
        report.hint = Some(tsx::REACT_HINT.into());
        return Ok(None);
    }
    let t = Instant::now();
    let bundle = match tsx::compile(&esbuild, &entry, &plan, ws.root(), ctx.timeout, ctx.cancel)
        .await
    {
        Ok(b) => b,
        Err(e) => {
            report.html = String::new();
            report.reason = Some(format!("compiling `{}` failed: {e}", job.input));
            report.status = "failed".into();
            // A file the entry imports needs React, which is not installed.
            if e.contains("Could not resolve \"react") {
                report.hint = Some(tsx::REACT_HINT.into());
                report.findings.push(report::Finding::new(
                        "missing-runtime",
                        "error",
                        format!("a module `{}` imports needs React, and esbuild could not find it in a node_modules of the workspace", job.input),
                        Some(tsx::REACT_HINT.into()),
                    ));
            }
            return Ok(None);
        }
    };
    report.timings.compile_ms = Some(driver::ms(t.elapsed()));
    ws.write_atomic(
        &job.rel("bundle.js"),
        bundle.as_bytes(),
        Durability::Relaxed,
    )
    .map_err(|e| io_error("write", &job.rel("bundle.js"), e))?;
    report.runtime_detail = format!(
        "compiled with {} ({})",
        esbuild.display(),
        match plan.jsx {
            tsx::Jsx::Pragma => "the file's own JSX factory",
            tsx::Jsx::Dom => "pmpo's DOM JSX factory",
            tsx::Jsx::React => "React from the workspace's node_modules",
        }
    );
    Ok(Some(tsx::host_page(&job.id)))
}

fn now() -> String {
    pmpo_store::now_rfc3339()
}

/// What both ways of rendering a page are given: the stage, its job, the
/// browser, the written page and when to stop.
#[derive(Clone, Copy)]
struct Render<'r, 'c> {
    ctx: &'r ToolContext<'c>,
    job: &'r Job,
    chromium: &'r std::path::Path,
    html_rel: &'r str,
    deadline: Instant,
}

impl PreviewTool {
    /// Renders one preview and writes its files; the report says what happened.
    async fn preview(&self, ctx: &ToolContext<'_>, job: &Job) -> Result<PreviewReport, ToolError> {
        let started = Instant::now();
        let html_rel = job.rel("preview.html");
        let mut report = PreviewReport {
            version: report::REPORT_VERSION,
            artifact_id: job.id.clone(),
            status: "failed".into(),
            required: job.required,
            source: job.input.clone(),
            html: html_rel.clone(),
            driver: "none".into(),
            runtime_source: "none".into(),
            runtime_detail: String::new(),
            network_allowed: job.network,
            viewport: job.viewport,
            generated_at: now(),
            ..Default::default()
        };
        // 1. The page.
        let Some(page_html) = page_html(ctx, job, &html_rel, &mut report).await? else {
            return Ok(report);
        };
        ctx.workspace
            .write_atomic(&html_rel, page_html.as_bytes(), Durability::Relaxed)
            .map_err(|e| io_error("write", &html_rel, e))?;
        // 2. The browser.
        self.render(ctx, job, &html_rel, started, &mut report).await;
        Ok(report)
    }

    /// Renders the written page: with the DevTools driver, else with
    /// Chromium's `--screenshot` mode, as the job allows.
    async fn render(
        &self,
        ctx: &ToolContext<'_>,
        job: &Job,
        html_rel: &str,
        started: Instant,
        report: &mut PreviewReport,
    ) {
        let deadline = started + ctx.timeout;
        let chromium = match find_chromium(job.chromium.as_deref()) {
            Ok(p) => p,
            Err(e) => return give_up(report, job, e, Some(INSTALL_HINT)),
        };
        let r = Render {
            ctx,
            job,
            chromium: &chromium,
            html_rel,
            deadline,
        };
        let mut devtools_failure: Option<String> = None;
        if job.driver != DriverChoice::ScreenshotMode {
            match self.render_devtools(r, report).await {
                Ok(()) => {}
                Err(e) if ctx.cancel.is_cancelled() => {
                    report.reason = Some(e);
                    return;
                }
                // The page itself hung: another way of rendering it would hang too.
                Err(e) if e == driver::PAGE_BUSY => {
                    report.status = "failed".into();
                    report.reason = Some(e);
                    report.hint = Some("make the page's scripts finish; previews render what a browser shows once scripts yield".into());
                    report.timings.total_ms = driver::ms(started.elapsed());
                    return;
                }
                Err(e) => devtools_failure = Some(e),
            }
        }
        if report.driver != "devtools" {
            if job.driver == DriverChoice::DevTools {
                let reason =
                    devtools_failure.unwrap_or_else(|| "the DevTools driver did not run".into());
                return give_up(report, job, reason, Some(INSTALL_HINT));
            }
            if let Some(f) = &devtools_failure {
                report.notes.push(format!(
                    "DevTools driver failed ({f}); fell back to Chromium's --screenshot mode"
                ));
            }
            if let Err(e) = self.render_screenshot_mode(r, report).await {
                let reason = match devtools_failure {
                    Some(f) => format!("DevTools driver: {f}; --screenshot mode: {e}"),
                    None => e,
                };
                return give_up(report, job, reason, Some(INSTALL_HINT));
            }
        }
        report.timings.total_ms = driver::ms(started.elapsed());
    }

    async fn render_devtools(
        &self,
        r: Render<'_, '_>,
        report: &mut PreviewReport,
    ) -> Result<(), String> {
        let Render {
            ctx,
            job,
            chromium,
            html_rel,
            deadline,
        } = r;
        if let Some(f) = self.launch_failure.lock().await.clone() {
            return Err(f);
        }
        let mut guard = self.browser.lock().await;
        if guard.as_ref().is_some_and(|b| !b.is_alive()) {
            report
                .notes
                .push("the browser of this run had exited; started a new one".into());
            *guard = None;
        }
        if guard.is_none() {
            match Browser::launch(chromium).await {
                Ok(b) => {
                    report.timings.browser_start_ms = driver::ms(b.started_in);
                    *guard = Some(b);
                }
                Err(e) => {
                    *self.launch_failure.lock().await = Some(e.clone());
                    return Err(e);
                }
            }
        } else {
            report.timings.browser_reused = true;
        }
        let Some(browser) = guard.as_ref() else {
            return Err("no browser".into());
        };
        report.browser = Some(browser.version.clone());
        let req = driver::RenderRequest {
            ws: ctx.workspace,
            page: html_rel,
            network: job.network,
            viewport: job.viewport,
            settle_limit: job.settle,
            extra_wait: job.extra_wait,
            clicks: &job.clicks,
            accessibility: job.accessibility,
            deadline,
            cancel: ctx.cancel,
        };
        let observed = driver::render(&browser.conn, &req).await?;
        drop(guard);
        report.driver = "devtools".into();
        report.diagnostics_available = true;
        report.console = observed.console;
        report.page_errors = observed.page_errors;
        report.failed_requests = observed.failed_requests;
        report.notes.extend(observed.notes);
        report.accessibility = observed.accessibility;
        report.timings.load_ms = observed.load_ms;
        report.timings.settle_ms = observed.settle_ms;
        report.timings.quiet_waits_ms = observed.settle_waits;
        report.timings.screenshot_ms = observed.screenshot_ms;
        report.recount();
        if !job.clicks.is_empty() {
            report
                .notes
                .push(format!("clicked, in order: {}", job.clicks.join(", ")));
        }
        if let Some(err) = observed.click_error {
            report.status = "failed".into();
            report.reason = Some(err);
            return Ok(());
        }
        if let Some(err) = observed.navigation_error {
            report.status = "failed".into();
            report.reason = Some(err);
            return Ok(());
        }
        match observed.screenshot {
            Some(png) => {
                self.keep_screenshot(ctx.workspace, job, &png, report)?;
                findings::after_render(report, observed.dom_facts.as_ref());
                Ok(())
            }
            None => {
                report.status = "failed".into();
                report.reason = Some("no screenshot was taken".into());
                Ok(())
            }
        }
    }

    fn keep_screenshot(
        &self,
        ws: &Workspace,
        job: &Job,
        png: &[u8],
        report: &mut PreviewReport,
    ) -> Result<(), String> {
        let rel = job.rel("screenshot.png");
        ws.write_atomic(&rel, png, Durability::Relaxed)
            .map_err(|e| format!("cannot write `{rel}`: {e}"))?;
        report.image = inspect_png(png).ok();
        report.screenshot = Some(rel);
        report.status = "success".into();
        report.reason = None;
        Ok(())
    }

    /// Chromium's own `--screenshot`: a picture, nothing else.
    async fn render_screenshot_mode(
        &self,
        r: Render<'_, '_>,
        report: &mut PreviewReport,
    ) -> Result<(), String> {
        let Render {
            ctx,
            job,
            chromium,
            html_rel,
            deadline,
        } = r;
        let profile = browser::new_profile()?;
        let shot = profile.path().join("screenshot.png");
        let page = ctx.workspace.root().join(html_rel);
        let mut argv: Vec<String> = vec![chromium.to_string_lossy().into_owned()];
        argv.extend(browser::CHROMIUM_FLAGS.iter().map(|s| s.to_string()));
        argv.push(format!("--user-data-dir={}", profile.path().display()));
        argv.push(format!("--screenshot={}", shot.display()));
        argv.push(format!(
            "--window-size={},{}",
            job.viewport.width, job.viewport.height
        ));
        argv.push("--virtual-time-budget=2000".into());
        argv.push("--allow-file-access-from-files".into());
        if !job.network {
            argv.push("--host-resolver-rules=MAP * ~NOTFOUND".into());
        }
        argv.push(format!("file://{}", page.display()));
        let spec = ProcessSpec {
            argv,
            cwd: ctx.workspace.root().to_path_buf(),
            env: vec![],
            stdin: None,
            capture_limit: 64 * 1024,
            pre_exec: None,
        };
        let t = Instant::now();
        let limit = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(60));
        let result = run_process(&spec, limit, ctx.cancel)
            .await
            .map_err(|e| format!("cannot start `{}`: {e}", chromium.display()))?;
        let png = std::fs::read(&shot).map_err(|_| {
            format!(
                "Chromium's --screenshot mode wrote no screenshot ({:?}): {}",
                result.termination,
                result.stderr.last_line().unwrap_or_default()
            )
        })?;
        report.driver = "screenshot-mode".into();
        report.diagnostics_available = false;
        report.timings.screenshot_ms = driver::ms(t.elapsed());
        report.notes.push("rendered with Chromium's own --screenshot mode: console messages, page errors and failed requests were not observed".into());
        if !job.clicks.is_empty() {
            report.notes.push(
                "`click` needs the DevTools driver: nothing was clicked, the screenshot shows the page as loaded".into(),
            );
        }
        self.keep_screenshot(ctx.workspace, job, &png, report)?;
        findings::after_render(report, None);
        Ok(())
    }
}

#[async_trait]
impl Tool for PreviewTool {
    fn name(&self) -> &'static str {
        "preview"
    }
    fn written_paths(&self, inputs: &Map<String, Value>) -> Vec<String> {
        // Everything a preview writes is under its own folder.
        Job::from_inputs(inputs).map_or_else(|_| Vec::new(), |job| vec![format!("{}/", job.dir)])
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["render_preview"]
    }

    fn check_inputs(&self, inputs: &Map<String, Value>) -> Vec<InputIssue> {
        job::check_inputs(inputs)
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        let started = Instant::now();
        let mut job = Job::from_inputs(inputs)?;
        // Without an explicit `required:`, a blocking constraint whose check
        // reads this preview's report makes it required (seed 001: hard-fail).
        if !inputs.contains_key("required")
            && let Some(spec) = ctx.spec
        {
            job.required =
                required::required_by(spec, ctx.validation, &job.rel("preview-report.json"));
        }
        let mut report = self.preview(ctx, &job).await?;
        a11y::explain_missing(&mut report, job.accessibility);
        report.timings.total_ms = driver::ms(started.elapsed());
        report.generated_at = now();
        let report_rel = job.rel("preview-report.json");
        let bytes = serde_json::to_vec_pretty(&report)
            .map_err(|e| io_error("serialize", &report_rel, e))?;
        ctx.workspace
            .write_atomic(&report_rel, &bytes, Durability::Relaxed)
            .map_err(|e| io_error("write", &report_rel, e))?;

        let summary = summary_line(&report, &report_rel);
        let mut outputs = Map::new();
        outputs.insert("preview_run".into(), manifest_run(&report, &report_rel));
        outputs.insert("status".into(), json!(report.status));
        outputs.insert("report".into(), json!(report_rel));
        outputs.insert("screenshot".into(), json!(report.screenshot));
        outputs.insert(
            "html".into(),
            json!(Some(&report.html).filter(|h| !h.is_empty())),
        );
        outputs.insert("runtime_source".into(), json!(report.runtime_source));
        let failed = report.status != "success" && job.required;
        let mut stderr = String::new();
        if report.status != "success" {
            // The reason goes last: the engine quotes the last line of stderr.
            stderr = format!(
                "{}preview `{}` {}: {}\n",
                report
                    .hint
                    .as_ref()
                    .map(|h| format!("help: {h}\n"))
                    .unwrap_or_default(),
                job.id,
                report.status,
                report.reason.clone().unwrap_or_default(),
            );
        }
        let notes = if report.status == "skipped" {
            vec![format!(
                "preview `{}` skipped (optional): {}",
                job.id,
                report.reason.clone().unwrap_or_default()
            )]
        } else {
            Vec::new()
        };
        Ok(ToolOutcome {
            termination: if ctx.cancel.is_cancelled() {
                Termination::Cancelled
            } else if report.status != "success" && started.elapsed() >= ctx.timeout {
                Termination::TimedOut
            } else {
                Termination::Exited(if failed { 1 } else { 0 })
            },
            stdout: Captured::from_bytes(summary.as_bytes()),
            stderr: Captured::from_bytes(stderr.as_bytes()),
            duration: started.elapsed(),
            outputs,
            invocation: json!({"input": job.input, "id": job.id, "driver": report.driver, "network": job.network}),
            notes,
            skipped: (report.status == "skipped" && !failed).then(|| {
                format!(
                    "optional preview `{}` skipped: {}",
                    job.id,
                    report.reason.clone().unwrap_or_default()
                )
            }),
        })
    }

    async fn end_run(&self) {
        self.shutdown().await;
    }
}

/// Runs one preview outside a plan (the `pmpo preview` command): the same
/// tool, its browser closed afterwards.
pub async fn preview_once(
    ws: &Workspace,
    inputs: &Map<String, Value>,
    timeout: Duration,
) -> Result<(PreviewReport, String), ToolError> {
    let tool = PreviewTool::new();
    let cancel = CancellationToken::new();
    let ctx = ToolContext {
        workspace: ws,
        run_id: "preview",
        stage_id: "preview",
        tool: "preview",
        timeout,
        cancel: &cancel,
        spec: None,
        validation: &[],
        description: "",
        confine: None,
    };
    let outcome = tool.invoke(&ctx, inputs).await;
    tool.shutdown().await;
    let outcome = outcome?;
    let report_rel = outcome
        .outputs
        .get("report")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let text = crate::inputs::read_text(ws, &report_rel)?;
    let report: PreviewReport =
        serde_json::from_str(&text).map_err(|e| io_error("parse", &report_rel, e))?;
    Ok((report, report_rel))
}
