//! `preview-report.json` and its evaluation (the `preview` check).

use serde::{Deserialize, Serialize};

use super::a11y::Accessibility;

/// Layout version of `preview-report.json`.
pub const REPORT_VERSION: u32 = 1;

/// Everything one preview observed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PreviewReport {
    pub version: u32,
    pub artifact_id: String,
    /// `success` (rendered and screenshotted), `failed`, or `skipped`.
    pub status: String,
    /// Why the preview failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Whether a failed preview fails the stage.
    pub required: bool,
    /// The page or `.tsx` entry that was previewed (workspace-relative).
    pub source: String,
    /// `dist/previews/<id>/preview.html` (empty when no page was written:
    /// a `.tsx` entry that could not be compiled).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub html: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screenshot: Option<String>,
    /// `devtools` (full diagnostics), `screenshot-mode` (Chromium's own
    /// `--screenshot`, no diagnostics) or `none`.
    pub driver: String,
    /// False when console, page errors and requests could not be observed.
    pub diagnostics_available: bool,
    /// `local`, `network` or `none`.
    pub runtime_source: String,
    pub runtime_detail: String,
    pub network_allowed: bool,
    pub viewport: Viewport,
    pub console: Vec<ConsoleMessage>,
    pub page_errors: Vec<PageError>,
    pub failed_requests: Vec<FailedRequest>,
    pub counts: Counts,
    pub timings: Timings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What axe-core found on the rendered page (see [`super::a11y`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accessibility: Option<Accessibility>,
    /// What the preview found missing or wrong beyond the console and the
    /// network: a runtime the page needs and does not load, a component
    /// with nothing to mount, a blank screenshot and its likely causes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    pub generated_at: String,
}

/// One thing a preview found (see [`PreviewReport::findings`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    /// `missing-runtime`, `runtime-added`, `nothing-to-mount`, `blank-screenshot`, ...
    pub code: String,
    /// `error`, `warning` or `info`.
    pub severity: String,
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Finding {
    pub fn new(code: &str, severity: &str, message: String, hint: Option<String>) -> Self {
        Finding {
            code: code.into(),
            severity: severity.into(),
            message,
            hint,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    pub device_scale_factor: f64,
}

impl Default for Viewport {
    fn default() -> Self {
        Viewport {
            width: 1024,
            height: 768,
            device_scale_factor: 1.0,
        }
    }
}

/// A console message: `console.*` calls (`source: console-api`) and the
/// browser's own messages (`network`, `javascript`, `security`, ...), as the
/// DevTools console shows them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConsoleMessage {
    /// `error`, `warning`, `info`, `log`, `debug`.
    pub level: String,
    pub text: String,
    pub source: String,
    #[serde(flatten)]
    pub at: SourceAt,
}

/// Where in the page's sources a message or an error came from (`url`,
/// 1-based `line` and `column`, each left out of the JSON when unknown).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceAt {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
}

/// An uncaught exception or unhandled rejection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PageError {
    pub message: String,
    #[serde(flatten)]
    pub at: SourceAt,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// A request that did not succeed: a network error, a blocked request, or
/// an HTTP status of 400 or more.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailedRequest {
    pub url: String,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// What went wrong, in words (`net::ERR_NAME_NOT_RESOLVED`, `HTTP 404 Not Found`, ...).
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Blocked by pmpo because network access is off.
    pub blocked: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub console_errors: usize,
    pub console_warnings: usize,
    pub page_errors: usize,
    pub failed_requests: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Starting the browser (0 when an already running one was reused).
    pub browser_start_ms: f64,
    pub browser_reused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_ms: Option<f64>,
    /// From navigation start to the load event.
    pub load_ms: f64,
    /// After load, until the page was quiet and painted (HTMX requests, late
    /// scripts, timers), clicks included.
    pub settle_ms: f64,
    /// Each wait for quiet: after the load, then after each click.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiet_waits_ms: Vec<f64>,
    pub screenshot_ms: f64,
    pub total_ms: f64,
}

/// What the screenshot holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageInfo {
    pub width: u32,
    pub height: u32,
    /// Every pixel has (nearly) the same colour.
    pub blank: bool,
    /// Distinct colours seen in a sample of pixels (capped at 256).
    pub distinct_colors: u32,
    /// The colour of the most pixels in the sample (`#rrggbb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_color: Option<String>,
    /// The share of the sampled pixels in that colour (within the blank
    /// tolerance), in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_color_percent: Option<f64>,
}

impl PreviewReport {
    pub fn recount(&mut self) {
        self.counts = Counts {
            console_errors: self.console.iter().filter(|m| m.level == "error").count(),
            console_warnings: self.console.iter().filter(|m| m.level == "warning").count(),
            page_errors: self.page_errors.len(),
            failed_requests: self.failed_requests.len(),
        };
    }
}

/// Decodes a PNG and says whether it is blank (one colour, within a small
/// tolerance) and how many colours it has.
pub fn inspect_png(bytes: &[u8]) -> Result<ImageInfo, String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().map_err(|e| format!("not a PNG: {e}"))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("cannot decode the PNG: {e}"))?;
    let channels = info.color_type.samples();
    if info.bit_depth != png::BitDepth::Eight || channels == 0 {
        return Err("unsupported PNG layout (expected 8-bit samples)".into());
    }
    let data = &buf[..info.buffer_size()];
    let pixels = data.len() / channels;
    if pixels == 0 {
        return Err("the PNG has no pixels".into());
    }
    let step = (pixels / 20_000).max(1);
    let first = &data[..channels];
    let mut blank = true;
    let mut colors: std::collections::HashMap<Vec<u8>, u32> = std::collections::HashMap::new();
    let mut sampled = 0u32;
    for p in (0..pixels).step_by(step) {
        let px = &data[p * channels..(p + 1) * channels];
        sampled += 1;
        if px.iter().zip(first).any(|(a, b)| a.abs_diff(*b) > 6) {
            blank = false;
        }
        if colors.len() < 256 || colors.contains_key(px) {
            *colors.entry(px.to_vec()).or_default() += 1;
        }
    }
    // The most frequent colour, and every sampled pixel near it.
    let main = colors
        .iter()
        .max_by_key(|(c, n)| (**n, std::cmp::Reverse((*c).clone())))
        .map(|(c, _)| c.clone())
        .unwrap_or_else(|| first.to_vec());
    let near = (0..pixels)
        .step_by(step)
        .filter(|p| {
            let px = &data[p * channels..(p + 1) * channels];
            px.iter().zip(&main).all(|(a, b)| a.abs_diff(*b) <= 6)
        })
        .count();
    Ok(ImageInfo {
        width: info.width,
        height: info.height,
        blank,
        distinct_colors: colors.len() as u32,
        main_color: Some(hex_color(&main, info.color_type)),
        main_color_percent: Some((near as f64 * 1000.0 / f64::from(sampled.max(1))).round() / 10.0),
    })
}

/// `#rrggbb` of a pixel in the PNG's layout (grey or colour, alpha ignored).
fn hex_color(px: &[u8], color: png::ColorType) -> String {
    let [r, g, b] = match color {
        png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => [px[0]; 3],
        _ if px.len() >= 3 => [px[0], px[1], px[2]],
        _ => [px[0]; 3],
    };
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The outcome of one criterion of the `preview` check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Passed,
    Failed,
    /// Could not be observed (no diagnostics in `--screenshot` mode).
    NotChecked,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CriterionResult {
    pub name: String,
    pub state: CheckState,
    pub detail: String,
}

/// The verdict of the `preview` check on one report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviewVerdict {
    /// No criterion failed (criteria that were not observed do not count).
    pub passed: bool,
    pub criteria: Vec<CriterionResult>,
}

impl PreviewVerdict {
    /// Every criterion was observed (none is `not_checked`).
    pub fn observed(&self) -> bool {
        self.criteria
            .iter()
            .all(|c| c.state != CheckState::NotChecked)
    }
}

/// The `preview` check: render success, no console errors, no uncaught page
/// errors, no failed requests, and a screenshot that exists and is not blank.
/// `screenshot` is the PNG's bytes when it could be read (`None`: missing).
/// Criteria that could not be observed are `not_checked`: they do not fail the
/// verdict, and [`PreviewVerdict::observed`] is false, so no caller may take
/// the page as clean. A skipped preview observed nothing at all.
pub fn evaluate_report(report: &PreviewReport, screenshot: Option<&[u8]>) -> PreviewVerdict {
    if report.status == "skipped" {
        return skipped_verdict(report);
    }
    let mut criteria = vec![criterion(
        "render_success",
        passed_if(report.status == "success"),
        match &report.reason {
            Some(r) => format!("status {}: {r}", report.status),
            None => format!("status {}", report.status),
        },
    )];
    criteria.extend(diagnostic_criteria(report));
    criteria.extend(screenshot_criteria(report, screenshot));
    let passed = criteria.iter().all(|c| c.state != CheckState::Failed);
    PreviewVerdict { passed, criteria }
}

fn criterion(name: &str, state: CheckState, detail: String) -> CriterionResult {
    CriterionResult {
        name: name.to_string(),
        state,
        detail,
    }
}

fn passed_if(b: bool) -> CheckState {
    if b {
        CheckState::Passed
    } else {
        CheckState::Failed
    }
}

/// A skipped preview observed nothing: every criterion is `not_checked`.
fn skipped_verdict(report: &PreviewReport) -> PreviewVerdict {
    let why = report.reason.clone().unwrap_or_default();
    let criteria = [
        "render_success",
        "no_console_errors",
        "no_page_errors",
        "no_request_failures",
        "screenshot_exists",
    ]
    .into_iter()
    .map(|name| {
        criterion(
            name,
            CheckState::NotChecked,
            format!("the preview was skipped: {why}"),
        )
    })
    .collect();
    PreviewVerdict {
        passed: true,
        criteria,
    }
}

/// Console errors, uncaught page errors and failed requests: each
/// `not_checked` when the driver could not observe them.
fn diagnostic_criteria(report: &PreviewReport) -> Vec<CriterionResult> {
    let diag = report.diagnostics_available;
    let state = |clean: bool| {
        if diag {
            passed_if(clean)
        } else {
            CheckState::NotChecked
        }
    };
    let errors: Vec<&ConsoleMessage> = report
        .console
        .iter()
        .filter(|m| m.level == "error")
        .collect();
    vec![
        criterion(
            "no_console_errors",
            state(errors.is_empty()),
            if !diag {
                "console not observed (no DevTools driver)".into()
            } else if errors.is_empty() {
                "no console errors".into()
            } else {
                format!(
                    "{} console error(s), first: {}",
                    errors.len(),
                    errors[0].text
                )
            },
        ),
        criterion(
            "no_page_errors",
            state(report.page_errors.is_empty()),
            match report.page_errors.first() {
                _ if !diag => "page errors not observed (no DevTools driver)".into(),
                None => "no uncaught errors".into(),
                Some(e) => format!(
                    "{} uncaught error(s), first: {}",
                    report.page_errors.len(),
                    e.message
                ),
            },
        ),
        criterion(
            "no_request_failures",
            state(report.failed_requests.is_empty()),
            match report.failed_requests.first() {
                _ if !diag => "requests not observed (no DevTools driver)".into(),
                None => "every request succeeded".into(),
                Some(r) => format!(
                    "{} failed request(s), first: {} ({})",
                    report.failed_requests.len(),
                    r.url,
                    r.reason
                ),
            },
        ),
    ]
}

/// The screenshot exists (and is a PNG), and is not blank. A blank one says
/// which colour covers it and why the preview thinks so (the report's
/// `blank-screenshot` finding, when the preview made one).
fn screenshot_criteria(report: &PreviewReport, screenshot: Option<&[u8]>) -> Vec<CriterionResult> {
    match screenshot.map(inspect_png) {
        None => vec![criterion(
            "screenshot_exists",
            CheckState::Failed,
            "no screenshot".into(),
        )],
        Some(Err(e)) => vec![criterion("screenshot_exists", CheckState::Failed, e)],
        Some(Ok(info)) => vec![
            criterion(
                "screenshot_exists",
                CheckState::Passed,
                format!("{}x{} PNG", info.width, info.height),
            ),
            criterion(
                "screenshot_not_blank",
                passed_if(!info.blank),
                if info.blank {
                    blank_detail(report, &info)
                } else {
                    format!("{}+ distinct colours", info.distinct_colors)
                },
            ),
        ],
    }
}

fn blank_detail(report: &PreviewReport, info: &ImageInfo) -> String {
    match report
        .findings
        .iter()
        .find(|f| f.code == "blank-screenshot")
    {
        Some(f) => f.message.clone(),
        None => format!(
            "the screenshot is blank: every pixel is {} ({}x{})",
            info.main_color.as_deref().unwrap_or("the same colour"),
            info.width,
            info.height
        ),
    }
}

/// [`evaluate_report`] on a preview directory of a workspace
/// (`dist/previews/<id>/`): reads `preview-report.json` and the screenshot it names.
pub fn evaluate_preview_dir(
    ws: &pmpo_store::Workspace,
    dir: &str,
) -> Result<PreviewVerdict, String> {
    evaluate_preview_report(
        ws,
        &format!("{}/preview-report.json", dir.trim_end_matches('/')),
    )
}

/// [`evaluate_report`] on a `preview-report.json` of a workspace (the
/// `with: {report: ...}` of a `preview` validation) and the screenshot it names.
pub fn evaluate_preview_report(
    ws: &pmpo_store::Workspace,
    report_path: &str,
) -> Result<PreviewVerdict, String> {
    let bytes = ws.read(report_path).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    let report: PreviewReport = serde_json::from_str(&text)
        .map_err(|e| format!("`{report_path}` is not a preview report: {e}"))?;
    let shot = match &report.screenshot {
        Some(p) => ws.read(p).ok(),
        None => None,
    };
    Ok(evaluate_report(&report, shot.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_places_stay_flat_in_the_report() {
        let m = ConsoleMessage {
            level: "error".into(),
            text: "boom".into(),
            source: "console-api".into(),
            at: SourceAt {
                url: Some("http://x/a.js".into()),
                line: Some(3),
                column: None,
            },
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"level":"error","text":"boom","source":"console-api","url":"http://x/a.js","line":3}"#
        );
        assert_eq!(serde_json::from_str::<ConsoleMessage>(&text).unwrap(), m);
        let e: PageError = serde_json::from_str(r#"{"message":"Uncaught x","column":7}"#).unwrap();
        assert_eq!(e.at.column, Some(7));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"message":"Uncaught x","column":7}"#
        );
    }

    fn png_of(w: u32, h: u32, pixel: impl Fn(u32, u32) -> [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().unwrap();
        let pixel = &pixel;
        let data: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| pixel(x, y)))
            .collect();
        writer.write_image_data(&data).unwrap();
        drop(writer);
        out
    }

    #[test]
    fn blank_detection() {
        let white = png_of(50, 40, |_, _| [255, 255, 255, 255]);
        let info = inspect_png(&white).unwrap();
        assert!(info.blank);
        assert_eq!((info.width, info.height), (50, 40));
        let drawn = png_of(
            50,
            40,
            |x, _| if x > 25 { [0, 0, 0, 255] } else { [255; 4] },
        );
        assert!(!inspect_png(&drawn).unwrap().blank);
        assert!(inspect_png(b"nope").is_err());
    }

    #[test]
    fn verdict() {
        let mut r = PreviewReport {
            status: "success".into(),
            diagnostics_available: true,
            ..Default::default()
        };
        let drawn = png_of(8, 8, |x, _| if x > 3 { [0, 0, 0, 255] } else { [255; 4] });
        assert!(evaluate_report(&r, Some(&drawn)).passed);
        r.console.push(ConsoleMessage {
            level: "error".into(),
            text: "boom".into(),
            source: "console-api".into(),
            at: SourceAt::default(),
        });
        let v = evaluate_report(&r, Some(&drawn));
        assert!(!v.passed);
        assert!(
            v.criteria
                .iter()
                .any(|c| c.name == "no_console_errors" && c.detail.contains("boom"))
        );
        r.diagnostics_available = false;
        let unseen = evaluate_report(&r, Some(&drawn));
        assert!(unseen.passed && !unseen.observed());
        assert!(!evaluate_report(&r, None).passed);
        r.status = "skipped".into();
        let skipped = evaluate_report(&r, None);
        assert!(skipped.passed && !skipped.observed());
    }
}
