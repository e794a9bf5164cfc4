//! Domain adapters: what each artifact type contributes to the loop.
//!
//! An adapter gives the Specify phase its default constraints (each with a
//! deterministic check where one exists), the Plan phase a deterministic plan
//! for the inputs, the files the artifact must have in `dist/`, its template
//! and its evaluation strategy. Plans are built from data only; nothing here
//! touches the disk except looking at the inputs and the tools on `PATH`.

use std::path::Path;

use pmpo_plan::{Constraint, ConstraintKind, Severity, Stage, ValidationItem};
use serde_json::{Map, Value, json};

use crate::content_type::{self, Strategy};

mod a2ui;
mod code;
mod composite;
mod content;
mod image;
mod logo;
mod prompt;
mod ui;
mod values;

pub use a2ui::A2UI_SCHEMA;

/// The artifact types with an adapter, their reference and template.
pub const DOMAINS: &[Domain] = &[
    Domain {
        name: "logo",
        summary: "an SVG logo: validated, rasterized to icon sizes, shown on dark and light backgrounds",
        template: Some("builtin:logo-showcase"),
    },
    Domain {
        name: "ui",
        summary: "a UI component or page (HTML, HTMX, TSX/JSX): rendered in a browser",
        template: Some("the preview harness (TSX compiled with esbuild, HTMX from the local copy)"),
    },
    Domain {
        name: "a2ui",
        summary: "an A2UI component specification: schema-checked, cycle-checked, normalized, previewed",
        template: Some("builtin:a2ui-preview"),
    },
    Domain {
        name: "image",
        summary: "a raster or SVG image: format, dimensions, size budget",
        template: None,
    },
    Domain {
        name: "content",
        summary: "a Markdown document: rendered to an HTML report, structure and links checked",
        template: Some("builtin:content-report"),
    },
    Domain {
        name: "code",
        summary: "source code: the language's syntax check, linter, format check and tests",
        template: None,
    },
    Domain {
        name: "meta-prompt",
        summary: "a prompt for another model (image, video, agent, workflow): the prompt is the artifact",
        template: None,
    },
];

/// One domain adapter.
#[derive(Debug, Clone, Copy)]
pub struct Domain {
    pub name: &'static str,
    pub summary: &'static str,
    pub template: Option<&'static str>,
}

/// The adapter of an artifact type, or the seed's error.
pub fn domain(artifact_type: &str) -> Result<&'static Domain, String> {
    DOMAINS
        .iter()
        .find(|d| d.name == artifact_type)
        .ok_or_else(|| {
            format!(
                "Unknown artifact_type: {artifact_type} (known: {})",
                DOMAINS
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// What an adapter is given.
#[derive(Debug, Clone)]
pub struct AdapterInput<'a> {
    pub name: &'a str,
    pub artifact_type: &'a str,
    pub content_type: &'a str,
    /// Workspace-relative input files.
    pub inputs: &'a [String],
    pub intent: Option<&'a str>,
    /// `--set key=value` options.
    pub options: &'a Map<String, Value>,
    pub target_platform: Option<&'a str>,
    pub test_generation: bool,
    /// Content types of a `meta:composite` artifact's components.
    pub components: &'a [String],
    /// The workspace root (for looking at inputs and project files).
    pub root: &'a Path,
}

/// What the Specify phase takes from an adapter.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub goals: Vec<String>,
    pub constraints: Vec<Constraint>,
    /// The deterministic checks of those constraints (validation_plan entries).
    pub checks: Vec<ValidationItem>,
    /// Files the artifact must have (workspace paths under `dist/`).
    pub required_files: Vec<String>,
    /// Things the user should know (a tool that was not found, ...).
    pub notes: Vec<String>,
}

/// An adapter's deterministic plan.
#[derive(Debug, Clone, Default)]
pub struct DomainPlan {
    pub stages: Vec<Stage>,
    pub purposes: Vec<(String, String, String)>,
}

/// Something about the inputs that stops an adapter.
pub type AdapterError = String;

/// Where a sub-artifact's files go and how its ids are prefixed (`meta:composite`).
#[derive(Debug, Clone)]
struct Scope {
    dist: String,
    prefix: String,
}

impl Scope {
    fn top() -> Scope {
        Scope {
            dist: "dist".into(),
            prefix: String::new(),
        }
    }
    fn id(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }
    fn path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.dist)
    }
}

/// Collects constraints, checks and stages as an adapter builds them.
#[derive(Default)]
struct Builder {
    d: Defaults,
    stages: Vec<Stage>,
}

impl Builder {
    /// A constraint, and its check when there is one.
    fn constraint(
        &mut self,
        scope: &Scope,
        id: &str,
        severity: Severity,
        kind: ConstraintKind,
        description: &str,
        check: Option<(&str, Value)>,
    ) {
        let id = scope.id(id);
        let method = check.as_ref().map(|(m, _)| *m);
        self.d
            .constraints
            .push(values::constraint(&id, description, severity, kind, method));
        if let Some((method, params)) = check {
            self.d.checks.push(values::validation(&id, method, params));
        }
    }

    /// A stage, its id and dependencies prefixed by the scope.
    fn stage(&mut self, scope: &Scope, mut stage: Stage) {
        stage.id = scope.id(&stage.id);
        for d in &mut stage.depends_on {
            *d = scope.id(d);
        }
        self.stages.push(stage);
    }
}

/// A file name safe for `dist/` paths: the input's stem with odd characters replaced.
fn stem(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split('.').next().unwrap_or(file);
    pmpo_store::safe_name(stem, "artifact")
}

fn file_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let ext = file.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if ext.is_empty() {
        stem(path)
    } else {
        format!("{}.{}", stem(path), ext.to_ascii_lowercase())
    }
}

fn ext(path: &str) -> String {
    path.rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

fn opt_str<'a>(input: &'a AdapterInput<'_>, key: &str) -> Option<&'a str> {
    input.options.get(key).and_then(Value::as_str)
}

fn opt_f64(input: &AdapterInput<'_>, key: &str) -> Option<f64> {
    match input.options.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A command's argv: the program and its fixed arguments, then the files.
fn argv(head: &[&str], files: &[String]) -> Value {
    Value::Array(
        head.iter()
            .map(|h| json!(h))
            .chain(files.iter().map(|f| json!(f)))
            .collect(),
    )
}

/// Is a program on `PATH`?
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(program);
            p.is_file()
                && std::fs::metadata(&p)
                    .map(|m| {
                        use std::os::unix::fs::PermissionsExt;
                        m.permissions().mode() & 0o111 != 0
                    })
                    .unwrap_or(false)
        })
    })
}

fn need_input<'a>(
    input: &'a AdapterInput<'_>,
    what: &str,
    exts: &[&str],
) -> Result<&'a str, AdapterError> {
    let found = input
        .inputs
        .iter()
        .find(|p| exts.contains(&ext(p).as_str()));
    match found {
        Some(p) => Ok(p),
        None if input.inputs.is_empty() => Err(format!(
            "a {} artifact needs {what}: pass --input FILE (a workspace file ending in .{})",
            input.artifact_type,
            exts.join(", .")
        )),
        None => Err(format!(
            "a {} artifact needs {what}; none of the inputs ({}) ends in .{}",
            input.artifact_type,
            input.inputs.join(", "),
            exts.join(", .")
        )),
    }
}

fn intent_constraint(b: &mut Builder, scope: &Scope, input: &AdapterInput<'_>) {
    if let Some(intent) = input.intent.filter(|i| !i.trim().is_empty()) {
        b.d.goals.push(intent.trim().to_string());
        b.constraint(
            scope,
            "intent",
            Severity::High,
            ConstraintKind::Semantic,
            &format!("The artifact meets the intent: {}", intent.trim()),
            None,
        );
    }
}

/// The accessibility constraints of a page a preview renders, checked by
/// `accessibility` on its report: `accessible` (blocking: no critical or
/// serious axe-core violation) and `accessible-moderate` (medium: no
/// moderate one). Where no browser can run, nobody could check them and the
/// artifact could never converge: they are left out and a note says so.
/// `false` when they were left out.
fn accessibility(b: &mut Builder, s: &Scope, report: &str) -> bool {
    // The preview tool's own search: where it finds no browser, none renders.
    let browser = pmpo_tools::preview::browser::find_chromium(None).is_ok();
    accessibility_if(b, s, report, browser)
}

fn accessibility_if(b: &mut Builder, s: &Scope, report: &str, browser: bool) -> bool {
    if !browser {
        let note = "no Chromium was found, so the rendered page's accessibility (axe-core) cannot be checked: the `accessible` and `accessible-moderate` constraints are left out (install Chromium or set PMPO_CHROMIUM to have them)".to_string();
        if !b.d.notes.contains(&note) {
            b.d.notes.push(note);
        }
        return false;
    }
    b.constraint(
        s,
        "accessible",
        Severity::Blocking,
        ConstraintKind::Accessibility,
        "The rendered page has no critical or serious accessibility violation (axe-core, WCAG A/AA: contrast, alternative text, labels, ...)",
        Some((
            "accessibility",
            json!({"report": report, "impacts": ["critical", "serious"]}),
        )),
    );
    b.constraint(
        s,
        "accessible-moderate",
        Severity::Medium,
        ConstraintKind::Accessibility,
        "The rendered page has no moderate accessibility violation (axe-core, WCAG A/AA)",
        Some((
            "accessibility",
            json!({"report": report, "impacts": ["moderate"]}),
        )),
    );
    true
}

/// Default constraints, checks, required files and plan of an artifact.
pub fn build(input: &AdapterInput<'_>) -> Result<(Defaults, DomainPlan), AdapterError> {
    domain(input.artifact_type)?;
    let mut b = Builder::default();
    let top = Scope::top();
    if input.content_type == "meta:composite" {
        composite::composite(&mut b, input)?;
    } else {
        adapter(&mut b, &top, input)?;
    }
    intent_constraint(&mut b, &top, input);
    // Every artifact's manifest must list what was generated, with digests.
    b.constraint(
        &top,
        "manifest-complete",
        Severity::Blocking,
        ConstraintKind::Structural,
        "artifact_manifest.json is valid and references every generated file with its digest",
        Some((
            "manifest",
            json!({"path": "artifact_manifest.json", "verify_digests": true, "owner": input.name}),
        )),
    );
    let mut plan = DomainPlan::default();
    for stage in b.stages {
        plan.purposes.push((
            stage.id.clone(),
            stage.tool_name().to_string(),
            stage.description.clone(),
        ));
        plan.stages.push(stage);
    }
    Ok((b.d, plan))
}

fn adapter(b: &mut Builder, scope: &Scope, input: &AdapterInput<'_>) -> Result<(), AdapterError> {
    match input.artifact_type {
        "logo" => logo::logo(b, scope, input),
        "ui" => ui::ui(b, scope, input),
        "a2ui" => a2ui::a2ui(b, scope, input),
        "image" => image::image(b, scope, input),
        "content" => content::content(b, scope, input),
        "code" => code::code(b, scope, input),
        "meta-prompt" => prompt::meta_prompt(b, scope, input),
        other => Err(domain(other).err().unwrap_or_default()),
    }
}

/// The evaluation strategy of each component of a composite (prefix -> strategy).
pub fn component_strategies(input: &AdapterInput<'_>) -> Vec<(String, String, Strategy)> {
    input
        .components
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let ct = spec.split_once('=').map(|(c, _)| c).unwrap_or(spec);
            let slug = format!(
                "c{}-{}",
                i + 1,
                ct.split_once(':').map(|(_, k)| k).unwrap_or(ct)
            );
            (
                slug,
                ct.to_string(),
                content_type::strategy(ct, input.test_generation),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessibility_constraints_need_a_browser() {
        let mut b = Builder::default();
        let s = Scope::top();
        assert!(accessibility_if(
            &mut b,
            &s,
            "dist/previews/p/preview-report.json",
            true
        ));
        let ids: Vec<&str> = b.d.constraints.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["accessible", "accessible-moderate"]);
        assert_eq!(b.d.constraints[0].severity, Severity::Blocking);
        assert_eq!(b.d.constraints[1].severity, Severity::Medium);
        assert_eq!(b.d.checks[0].validation_method, "accessibility");
        assert_eq!(b.d.checks[1].inputs["impacts"], json!(["moderate"]));
        assert!(b.d.notes.is_empty());
        let mut b = Builder::default();
        assert!(!accessibility_if(&mut b, &s, "r.json", false));
        assert!(!accessibility_if(&mut b, &s, "r.json", false));
        assert!(b.d.constraints.is_empty() && b.d.checks.is_empty());
        assert_eq!(b.d.notes.len(), 1, "one note, however many pages");
        assert!(b.d.notes[0].contains("no Chromium was found"));
    }
}
