//! The inputs of one preview: the `with:` of a `preview` stage as a typed
//! struct ([`PreviewInputs`]), read into a [`Job`].

use std::time::Duration;

use pmpo_plan::InputIssue;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::report::Viewport;
use super::runtimes::{Runtimes, parse_runtimes};
use crate::ToolError;
use crate::typed::{self, Text};

/// Where previews go unless `out_dir` says otherwise.
pub const DEFAULT_OUT_DIR: &str = "dist/previews";
const DEFAULT_SETTLE: Duration = Duration::from_millis(3000);

/// The `with:` of a `preview` stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewInputs {
    /// The page: `.html`, or `.tsx`/`.jsx` (compiled with esbuild first).
    input: Text,
    /// The preview's folder name (default: the file name without extension).
    #[serde(default, deserialize_with = "id")]
    id: Option<String>,
    /// Where the preview folders go ([`DEFAULT_OUT_DIR`]).
    out_dir: Option<String>,
    /// Whether requests may leave the page's files.
    network: Option<bool>,
    /// Whether a preview that fails or is skipped fails the stage.
    required: Option<bool>,
    #[serde(default, deserialize_with = "viewport")]
    viewport: Viewport,
    /// Selectors clicked in order before the screenshot.
    #[serde(default, deserialize_with = "clicks")]
    click: Vec<String>,
    /// A wait after the page settles.
    #[serde(default, deserialize_with = "ms")]
    wait_ms: Option<Duration>,
    /// How long the page may take to settle.
    #[serde(default, deserialize_with = "ms")]
    settle_ms: Option<Duration>,
    #[serde(default = "auto", deserialize_with = "driver")]
    driver: DriverChoice,
    /// The browser to use instead of the one found on the `PATH`.
    chromium: Option<String>,
    /// The esbuild to use for `.tsx`/`.jsx` pages.
    esbuild: Option<String>,
    /// Whether axe-core audits the rendered page (default true).
    accessibility: Option<bool>,
    /// The runtimes pmpo may add: `auto`, or a list from `htmx`, `alpine`.
    #[serde(default, deserialize_with = "runtimes")]
    runtimes: Runtimes,
}

impl typed::Inputs for PreviewInputs {
    const TOOL: &'static str = "preview";
    const PATHS: &'static [&'static str] = &["input", "out_dir"];
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let id = Option::<String>::deserialize(d)?;
    match id {
        Some(id) if !valid_id(&id) => Err(serde::de::Error::custom(format!(
            "`id` `{id}` must be letters, digits, `-`, `_` or `.` (it names a directory)"
        ))),
        id => Ok(id),
    }
}

fn viewport<'de, D: Deserializer<'de>>(d: D) -> Result<Viewport, D::Error> {
    typed::parsed(d, parse_viewport)
}

fn clicks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    typed::parsed(d, parse_clicks)
}

fn ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    typed::parsed(d, |v| parse_ms(v, Duration::ZERO).map(Some))
}

fn runtimes<'de, D: Deserializer<'de>>(d: D) -> Result<Runtimes, D::Error> {
    typed::parsed(d, parse_runtimes)
}

fn auto() -> DriverChoice {
    DriverChoice::Auto
}

fn driver<'de, D: Deserializer<'de>>(d: D) -> Result<DriverChoice, D::Error> {
    typed::parsed(d, parse_driver)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DriverChoice {
    Auto,
    DevTools,
    ScreenshotMode,
}

/// The resolved inputs of one preview.
pub(super) struct Job {
    pub(super) input: String,
    pub(super) id: String,
    pub(super) dir: String,
    pub(super) network: bool,
    pub(super) required: bool,
    pub(super) viewport: Viewport,
    pub(super) extra_wait: Duration,
    pub(super) settle: Duration,
    pub(super) clicks: Vec<String>,
    pub(super) driver: DriverChoice,
    pub(super) chromium: Option<String>,
    pub(super) esbuild: Option<String>,
    pub(super) accessibility: bool,
    pub(super) runtimes: Runtimes,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !id.starts_with('.')
}

pub(super) fn default_id(input: &str) -> String {
    let file = input.rsplit('/').next().unwrap_or(input);
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    pmpo_store::safe_name(stem, "page")
}

fn parse_viewport(v: Option<&Value>) -> Result<Viewport, String> {
    let mut vp = Viewport::default();
    let Some(v) = v else { return Ok(vp) };
    let map = v
        .as_object()
        .ok_or("`viewport` must be a mapping: {width: 1024, height: 768}")?;
    for (k, val) in map {
        match k.as_str() {
            "width" | "height" => {
                let n = val
                    .as_u64()
                    .filter(|n| (16..=8192).contains(n))
                    .ok_or(format!(
                        "`viewport.{k}` must be a whole number from 16 to 8192"
                    ))?;
                if k == "width" {
                    vp.width = n as u32;
                } else {
                    vp.height = n as u32;
                }
            }
            "device_scale_factor" => {
                vp.device_scale_factor = val
                    .as_f64()
                    .filter(|f| *f > 0.0 && *f <= 4.0)
                    .ok_or("`viewport.device_scale_factor` must be a number above 0, at most 4")?;
            }
            other => {
                return Err(format!(
                    "unknown `viewport` field `{other}` (width, height, device_scale_factor)"
                ));
            }
        }
    }
    Ok(vp)
}

fn parse_ms(v: Option<&Value>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= 600_000)
            .map(Duration::from_millis)
            .ok_or("must be a number of milliseconds (at most 600000)".into()),
    }
}

fn parse_clicks(v: Option<&Value>) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| "`click` holds something that is not a CSS selector".to_string())
            })
            .collect(),
        Some(_) => Err("`click` must be a CSS selector or a list of them".into()),
    }
}

fn parse_driver(v: Option<&Value>) -> Result<DriverChoice, String> {
    // `driver: null` is the default, as it was when the run read it as text.
    match v
        .filter(|v| !v.is_null())
        .map(|v| v.as_str().unwrap_or("?"))
    {
        None | Some("auto") => Ok(DriverChoice::Auto),
        Some("devtools") => Ok(DriverChoice::DevTools),
        Some("screenshot") => Ok(DriverChoice::ScreenshotMode),
        Some(other) => Err(format!(
            "unknown `driver` `{other}`: auto, devtools or screenshot"
        )),
    }
}

pub(super) fn is_tsx(path: &str) -> bool {
    let l = path.to_ascii_lowercase();
    l.ends_with(".tsx") || l.ends_with(".jsx")
}

impl Job {
    pub(super) fn from_inputs(inputs: &Map<String, Value>) -> Result<Job, ToolError> {
        let with: PreviewInputs = typed::decode(inputs)?;
        let input = with.input.0;
        let id = with.id.unwrap_or_else(|| default_id(&input));
        let out_dir = with.out_dir.as_deref().unwrap_or(DEFAULT_OUT_DIR);
        Ok(Job {
            dir: format!("{}/{id}", out_dir.trim_end_matches('/')),
            input,
            id,
            network: with.network.unwrap_or(false),
            required: with.required.unwrap_or(false),
            viewport: with.viewport,
            extra_wait: with.wait_ms.unwrap_or(Duration::ZERO),
            settle: with.settle_ms.unwrap_or(DEFAULT_SETTLE),
            driver: with.driver,
            clicks: with.click,
            chromium: with.chromium,
            esbuild: with.esbuild,
            accessibility: with.accessibility.unwrap_or(true),
            runtimes: with.runtimes,
        })
    }

    pub(super) fn rel(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }
}

/// The static check of a preview stage's `with:`.
pub(super) fn check_inputs(inputs: &Map<String, Value>) -> Vec<InputIssue> {
    let mut issues = typed::check::<PreviewInputs>(inputs);
    if let Some(issue) = issues.iter_mut().find(|i| i.message.starts_with("`click`")) {
        issue.help = Some("e.g. `click: [\"#show-details\"]`".into());
    }
    issues
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn msgs(v: Value) -> Vec<String> {
        check_inputs(v.as_object().unwrap())
            .into_iter()
            .map(|i| i.message)
            .collect()
    }

    #[test]
    fn input_checks() {
        assert!(
            msgs(
                json!({"input": "p.html", "id": "card", "network": false, "required": true,
                "viewport": {"width": 800, "height": 600}, "click": ["#a", ".b"], "wait_ms": 100,
                "settle_ms": 500, "driver": "devtools", "accessibility": false})
            )
            .is_empty()
        );
        assert_eq!(msgs(json!({})), ["the `input` input is required"]);
        let bad = msgs(json!({"input": "/abs.html", "id": "a/b", "network": "yes",
            "viewport": {"width": 1}, "click": [1], "driver": "selenium", "colour": 1,
            "wait_ms": -1, "runtimes": ["vue"]}));
        assert_eq!(
            bad,
            [
                "unknown input `colour` for tool `preview`",
                "`id` `a/b` must be letters, digits, `-`, `_` or `.` (it names a directory)",
                "`network` must be true or false",
                "`viewport.width` must be a whole number from 16 to 8192",
                "`click` holds something that is not a CSS selector",
                "unknown `driver` `selenium`: auto, devtools or screenshot",
                "`wait_ms` must be a number of milliseconds (at most 600000)",
                "unknown runtime \"vue\" in `runtimes`: use `htmx`, `alpine`, a list of them (`[]` for none), or `auto`",
                "`input` is an absolute path; outputs must be inside the workspace",
            ],
            "{bad:?}"
        );
        assert_eq!(default_id("pages/my card.html"), "my-card");
    }

    #[test]
    fn a_job_reads_its_defaults() {
        let job =
            Job::from_inputs(json!({"input": "pages/card.html"}).as_object().unwrap()).unwrap();
        assert_eq!(job.dir, "dist/previews/card");
        assert_eq!(job.settle, DEFAULT_SETTLE);
        assert_eq!(job.driver, DriverChoice::Auto);
        assert!(job.accessibility, "the audit is on unless turned off");
        let with_nulls = json!({"input": "p.html", "id": null, "driver": null, "click": null});
        let job = Job::from_inputs(with_nulls.as_object().unwrap()).unwrap();
        assert_eq!((job.id.as_str(), job.driver), ("p", DriverChoice::Auto));
        assert!(job.clicks.is_empty());
        let err = Job::from_inputs(
            json!({"input": "p.html", "netwrk": true})
                .as_object()
                .unwrap(),
        );
        let err = err.err().unwrap();
        assert_eq!(err.message, "unknown input `netwrk` for tool `preview`");
        assert!(err.hint.unwrap().starts_with("did you mean `network`?"));
    }
}
