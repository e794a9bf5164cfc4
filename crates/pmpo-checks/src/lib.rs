//! pmpo's validation checks. Each check measures something on disk (or runs a
//! command, or asks a local service) and returns a [`CheckOutcome`]: passed,
//! failed, or not checked (it could not look: no diagnostics, a file or an
//! output too large to read whole, a cancelled command), the evidence (what
//! was measured, against what) and how long it took.
//!
//! Checks are used two ways, with the same names and parameters:
//! a stage's `validate:` item (`{check: NAME, with: {...}}`), run in the
//! VALIDATING state, and a `validation_plan` entry
//! (`{constraint_id, validation_method: NAME, with: {...}}`).
//!
//! Every path is relative to the workspace and confined to it: `..`, absolute
//! paths and symbolic links leading outside are refused, never followed.
//! Text is read only up to [`MAX_TEXT_BYTES`]. A check never panics on bad
//! input: a file it cannot read is a failed check with a clear message.

mod a11y;
mod command;
mod confine;
mod contrast;
mod files;
mod formats;
mod fsx;
mod html;
mod http;
mod image;
pub mod isolate;
mod manifest;
mod page;
mod params;
mod schema;
mod text;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use pmpo_plan::{CheckCatalog, InputIssue};
use pmpo_store::Workspace;
use serde_json::{Map, Value, json};

pub use contrast::{Rgba, contrast_ratio, parse_color, relative_luminance};
pub use fsx::MAX_TEXT_BYTES;
pub use manifest::MANIFEST_SCHEMA;
pub use params::{Kind, Param};

/// A check's verdict is the store's [`ValidationStatus`] (`passed`, `failed`,
/// `not_checked`, spelt the same in JSON and in the database). `NotChecked`
/// is for a check that could not observe what it checks; it is never counted
/// as a pass. `CheckStatus` is the name the engine knows it by.
pub use pmpo_store::states::ValidationStatus;
pub use pmpo_store::states::ValidationStatus as CheckStatus;

fn status_of(passed: bool) -> ValidationStatus {
    if passed {
        ValidationStatus::Passed
    } else {
        ValidationStatus::Failed
    }
}

/// What one check found.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// The canonical check name.
    pub check: String,
    pub status: ValidationStatus,
    /// One line: what was found.
    pub message: String,
    /// What was measured, against what (a JSON object).
    pub evidence: Value,
    pub duration: Duration,
}

impl CheckOutcome {
    /// Only a check that ran and saw what it checks passes.
    pub fn passed(&self) -> bool {
        self.status == ValidationStatus::Passed
    }
}

/// Why a check could not measure what it was asked to: a failed check, except
/// [`CheckError::TooLarge`] (the file exists but was not read whole), which is
/// not checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Param(String),
    #[error("`{path}`: {why}")]
    File { path: String, why: String },
    #[error(
        "`{path}` is {size} bytes; this check reads at most {limit} bytes (is it the right file?)"
    )]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("`{path}` is not text: {why}")]
    NotText { path: String, why: String },
    #[error(transparent)]
    Store(#[from] pmpo_store::StoreError),
}

/// A check's verdict before timing is attached.
pub(crate) struct Verdict {
    pub status: ValidationStatus,
    pub message: String,
    pub evidence: Value,
}

impl Verdict {
    pub fn new(passed: bool, message: impl Into<String>, evidence: Value) -> Self {
        Verdict {
            status: status_of(passed),
            message: message.into(),
            evidence,
        }
    }

    /// The check could not observe what it checks; `message` says why.
    pub fn not_checked(message: impl Into<String>, evidence: Value) -> Self {
        Verdict {
            status: ValidationStatus::NotChecked,
            message: message.into(),
            evidence,
        }
    }

    pub fn passed(&self) -> bool {
        self.status == ValidationStatus::Passed
    }
}

/// Everything a check may use.
pub struct Ctx<'a> {
    pub ws: &'a Workspace,
    /// Set from another thread to stop a running check (a command's process group is killed).
    pub cancel: &'a AtomicBool,
}

type RunFn = fn(&Ctx<'_>, &Map<String, Value>) -> Result<Verdict, CheckError>;
type RulesFn = fn(&Map<String, Value>) -> Vec<InputIssue>;

/// One check of this build.
pub struct CheckDef {
    pub name: &'static str,
    /// Other names plans may use (the seeds' `file-exists`, `contrast-check`...).
    pub aliases: &'static [&'static str],
    /// One line for help texts.
    pub summary: &'static str,
    pub params: &'static [Param],
    /// Rules across parameters ("`min` or `max`"), beyond each parameter's type.
    rules: RulesFn,
    run: RunFn,
}

fn no_rules(_: &Map<String, Value>) -> Vec<InputIssue> {
    Vec::new()
}

/// Every check of this build.
pub fn all() -> &'static [CheckDef] {
    CHECKS
}

static CHECKS: &[CheckDef] = &[
    files::FILE_EXISTS,
    files::NON_EMPTY,
    files::FILE_SIZE,
    files::MAX_FILE_SIZE,
    files::GLOB_COUNT,
    formats::JSON,
    formats::YAML,
    formats::XML,
    formats::HTML,
    formats::MARKDOWN_HEADINGS,
    schema::JSON_SCHEMA,
    image::IMAGE_DIMENSIONS,
    image::IMAGE_FORMAT,
    image::ASPECT_RATIO,
    contrast::CONTRAST,
    command::COMMAND,
    command::BUILD,
    command::TESTS,
    command::LINT,
    command::SYNTAX,
    command::IMPORT,
    http::HTTP,
    text::CONTAINS,
    text::NOT_CONTAINS,
    text::REGEX,
    manifest::MANIFEST,
    page::PREVIEW,
    page::LINKS,
    a11y::ACCESSIBILITY,
];

fn normalize(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['-', ' '], "_")
}

/// Finds a check by name or alias (case, `-` and `_` do not matter).
pub fn find(name: &str) -> Option<&'static CheckDef> {
    let n = normalize(name);
    CHECKS
        .iter()
        .find(|c| c.name == n || c.aliases.iter().any(|a| normalize(a) == n))
}

/// The catalog `pmpo check` uses to check `validate:` and `validation_plan`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks;

impl CheckCatalog for Checks {
    fn resolve(&self, name: &str) -> Option<&'static str> {
        find(name).map(|c| c.name)
    }

    fn names(&self) -> Vec<&'static str> {
        CHECKS.iter().map(|c| c.name).collect()
    }

    fn check_params(&self, canonical: &str, params: &Map<String, Value>) -> Vec<InputIssue> {
        match find(canonical) {
            Some(def) => check_params(def, params),
            None => Vec::new(),
        }
    }
}

/// Static check of one check's parameters.
pub fn check_params(def: &CheckDef, params: &Map<String, Value>) -> Vec<InputIssue> {
    let mut issues = params::check(def.name, def.params, params);
    if issues.is_empty() {
        issues.extend((def.rules)(params));
    }
    issues
}

/// Text parameters that name a file, beyond the `Kind::Paths` ones.
const FILE_PARAMS: &[(&str, &str)] = &[
    ("contrast", "file"),
    ("glob_count", "pattern"),
    ("image_dimensions", "pattern"),
    ("manifest", "path"),
    ("preview", "report"),
    ("accessibility", "report"),
    ("json_schema", "schema_file"),
];

/// The workspace files a check's parameters name (globs expanded; literal
/// paths kept even when missing), sorted and without duplicates. The engine
/// uses them for the evidence rule (a file no stage of this run proved is
/// not evidence) and to record what a check read. Paths that are not valid
/// are left out: the check itself reports them.
pub fn named_files(ws: &Workspace, name: &str, params: &Map<String, Value>) -> Vec<String> {
    let Some(def) = find(name) else {
        return Vec::new();
    };
    let mut patterns: Vec<String> = Vec::new();
    for p in def.params {
        let extra = FILE_PARAMS.contains(&(def.name, p.name));
        if !(matches!(p.kind, Kind::Paths) || extra) {
            continue;
        }
        match params.get(p.name) {
            Some(Value::String(s)) => patterns.push(s.clone()),
            Some(Value::Array(items)) => {
                patterns.extend(items.iter().filter_map(Value::as_str).map(str::to_string))
            }
            _ => {}
        }
    }
    if def.name == "manifest" && !params.contains_key("path") {
        patterns.push(manifest::DEFAULT_PATH.to_string());
    }
    let mut out = Vec::new();
    for raw in patterns {
        // `dist/logo-{size}.png`: a placeholder stands for any text.
        let pat = ["{size}", "{width}", "{height}"]
            .iter()
            .fold(raw, |p, ph| p.replace(ph, "*"));
        match fsx::expand(ws, std::slice::from_ref(&pat)) {
            Ok(files) => out.extend(files),
            Err(_) => continue,
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Runs a check by name with its parameters. Never panics and never returns
/// an error: a check that cannot run is a failed check whose message says why.
pub fn run_check(ws: &Workspace, name: &str, params: &Map<String, Value>) -> CheckOutcome {
    static NEVER: AtomicBool = AtomicBool::new(false);
    run_check_cancellable(ws, name, params, &NEVER)
}

/// [`run_check`] that stops early (failed, "cancelled") once `cancel` is set.
pub fn run_check_cancellable(
    ws: &Workspace,
    name: &str,
    params: &Map<String, Value>,
    cancel: &AtomicBool,
) -> CheckOutcome {
    let start = Instant::now();
    let Some(def) = find(name) else {
        let known: Vec<&str> = CHECKS.iter().map(|c| c.name).collect();
        return CheckOutcome {
            check: name.to_string(),
            status: ValidationStatus::Failed,
            message: format!("unknown check `{name}`; known checks: {}", known.join(", ")),
            evidence: json!({ "error": "unknown check" }),
            duration: start.elapsed(),
        };
    };
    let issues = check_params(def, params);
    let verdict = if !issues.is_empty() {
        let text: Vec<String> = issues.iter().map(|i| i.message.clone()).collect();
        Err(CheckError::Param(format!(
            "bad parameters: {}",
            text.join("; ")
        )))
    } else {
        isolate::run(def, &Ctx { ws, cancel }, params)
    };
    let (status, message, evidence) = match verdict {
        Ok(v) => (v.status, v.message, v.evidence),
        // The file is there but was not read whole: what it holds was not looked at.
        Err(e @ CheckError::TooLarge { .. }) => {
            let msg = format!("not checked: {e}");
            (
                ValidationStatus::NotChecked,
                msg.clone(),
                json!({ "error": msg }),
            )
        }
        Err(e) => {
            let msg = e.to_string();
            (
                ValidationStatus::Failed,
                msg.clone(),
                json!({ "error": msg }),
            )
        }
    };
    CheckOutcome {
        check: def.name.to_string(),
        status,
        message,
        evidence,
        duration: start.elapsed(),
    }
}
