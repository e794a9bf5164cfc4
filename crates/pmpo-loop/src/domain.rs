//! Domain adapters: what each artifact type contributes to the loop.
//!
//! An adapter gives the Specify phase its default constraints (each with a
//! deterministic check where one exists), the Plan phase a deterministic plan
//! for the inputs, the files the artifact must have in `dist/`, its template
//! and its evaluation strategy. Plans are built from data only; nothing here
//! touches the disk except looking at the inputs and the tools on `PATH`.

use std::path::Path;

use pmpo_plan::{Constraint, Stage, ValidationItem};
use serde_json::{Map, Value, json};

use crate::content_type::{self, Strategy};

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
    stages: Vec<Value>,
}

impl Builder {
    /// A constraint, and its check when there is one.
    fn constraint(
        &mut self,
        scope: &Scope,
        id: &str,
        severity: &str,
        kind: &str,
        description: &str,
        check: Option<(&str, Value)>,
    ) {
        let id = scope.id(id);
        let mut c = json!({
            "id": id,
            "description": description,
            "severity": severity,
            "type": kind,
        });
        if let Some((method, with)) = check {
            c["validation"] = json!({"requires_code_execution": true, "validation_method": method});
            self.d.checks.push(
                serde_json::from_value(json!({
                    "constraint_id": id,
                    "validation_method": method,
                    "with": with,
                }))
                .expect("a validation item is well formed"),
            );
        }
        self.d
            .constraints
            .push(serde_json::from_value(c).expect("a constraint is well formed"));
    }

    fn stage(&mut self, scope: &Scope, mut stage: Value) {
        if let Some(id) = stage["id"].as_str() {
            stage["id"] = json!(scope.id(id));
        }
        if let Some(deps) = stage.get_mut("depends_on").and_then(Value::as_array_mut) {
            for d in deps {
                if let Some(s) = d.as_str() {
                    *d = json!(scope.id(s));
                }
            }
        }
        self.stages.push(stage);
    }
}

/// A file name safe for `dist/` paths: the input's stem with odd characters replaced.
fn stem(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split('.').next().unwrap_or(file);
    let s: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "artifact".into() } else { s }
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

/// A stage that copies a workspace file (no shell interpolation: the paths are arguments).
fn copy_stage(id: &str, from: &str, to: &str) -> Value {
    json!({
        "id": id,
        "description": format!("Copy `{from}` to `{to}`"),
        "tool": "run",
        "with": {"command": ["sh", "-c", "mkdir -p \"$(dirname \"$2\")\" && cp \"$1\" \"$2\"", "sh", from, to]},
        "inputs": [from],
        "outputs": [to],
    })
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
            "high",
            "semantic",
            &format!("The artifact meets the intent: {}", intent.trim()),
            None,
        );
    }
}

/// Default constraints, checks, required files and plan of an artifact.
pub fn build(input: &AdapterInput<'_>) -> Result<(Defaults, DomainPlan), AdapterError> {
    domain(input.artifact_type)?;
    let mut b = Builder::default();
    let top = Scope::top();
    if input.content_type == "meta:composite" {
        composite(&mut b, input)?;
    } else {
        adapter(&mut b, &top, input)?;
    }
    intent_constraint(&mut b, &top, input);
    // Every artifact's manifest must list what was generated, with digests.
    b.constraint(
        &top,
        "manifest-complete",
        "blocking",
        "structural",
        "artifact_manifest.json is valid and references every generated file with its digest",
        Some((
            "manifest",
            json!({"path": "artifact_manifest.json", "verify_digests": true, "owner": input.name}),
        )),
    );
    let mut plan = DomainPlan::default();
    for s in b.stages {
        let stage: Stage = serde_json::from_value(s)
            .map_err(|e| format!("internal: an adapter stage is malformed: {e}"))?;
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
        "logo" => logo(b, scope, input),
        "ui" => ui(b, scope, input),
        "a2ui" => a2ui(b, scope, input),
        "image" => image(b, scope, input),
        "content" => content(b, scope, input),
        "code" => code(b, scope, input),
        "meta-prompt" => meta_prompt(b, scope, input),
        other => Err(domain(other).err().unwrap_or_default()),
    }
}

const LOGO_SIZES: [u64; 8] = [16, 32, 48, 64, 128, 192, 256, 512];

fn logo(b: &mut Builder, s: &Scope, input: &AdapterInput<'_>) -> Result<(), AdapterError> {
    let svg_in = need_input(input, "an SVG logo", &["svg"])?;
    let svg = s.path("logo.svg");
    let dark = opt_str(input, "dark_background").unwrap_or("#111318");
    let light = opt_str(input, "light_background").unwrap_or("#ffffff");
    let min = opt_f64(input, "min_contrast").unwrap_or(3.0);
    let pattern = s.path("logo-{size}.png");
    let mut import = copy_stage("import", svg_in, &svg);
    import["description"] = json!("Take the SVG into dist/ and check that it is well-formed SVG");
    import["validate"] = json!([{"check": "xml", "with": {"path": svg, "root": "svg"}}]);
    b.stage(s, import);
    b.stage(
        s,
        json!({
            "id": "sizes", "depends_on": ["import"], "tool": "rasterize",
            "description": "Rasterize the SVG to the icon sizes",
            "with": {"input": svg, "sizes": LOGO_SIZES, "output": pattern},
            "outputs": [s.path("logo-*.png")],
        }),
    );
    b.stage(
        s,
        json!({
            "id": "showcase", "depends_on": ["sizes"], "tool": "template",
            "description": "Lay the logo out on dark and light backgrounds",
            "with": {"template": "builtin:logo-showcase", "output": s.path("index.html"),
                     "vars": {"NAME": input.name, "SVG": format!("${}.svg", s.id("sizes")), "IMAGES": format!("${}.images", s.id("sizes"))}},
            "outputs": [s.path("index.html")],
        }),
    );
    b.stage(
        s,
        json!({
            "id": "preview", "depends_on": ["showcase"], "tool": "preview",
            "description": "Render the showcase in a headless browser and keep the evidence",
            "with": {"input": s.path("index.html"), "id": s.id("showcase"), "out_dir": s.path("previews"), "viewport": {"width": 1100, "height": 560}},
            "outputs": [s.path(&format!("previews/{}", s.id("showcase")))],
        }),
    );
    b.constraint(
        s,
        "svg-valid",
        "blocking",
        "technical",
        "The logo is well-formed SVG (an <svg> root)",
        Some(("xml", json!({"path": svg, "root": "svg"}))),
    );
    b.constraint(
        s,
        "png-sizes",
        "blocking",
        "structural",
        "One PNG per icon size (16 to 512 px), each exactly size x size",
        Some((
            "image_dimensions",
            json!({"sizes": LOGO_SIZES, "pattern": pattern}),
        )),
    );
    b.constraint(s, "dark-contrast", "high", "accessibility",
        &format!("Every colour of the logo keeps a contrast of at least {min}:1 on the dark background {dark}"),
        Some(("contrast", json!({"file": svg, "background": dark, "min_ratio": min}))));
    b.constraint(s, "light-contrast", "medium", "accessibility",
        &format!("Every colour of the logo keeps a contrast of at least {min}:1 on the light background {light}"),
        Some(("contrast", json!({"file": svg, "background": light, "min_ratio": min}))));
    b.constraint(
        s,
        "svg-lightweight",
        "low",
        "performance",
        "The SVG stays under 50 KB",
        Some(("max_file_size", json!({"path": svg, "max_bytes": 50_000}))),
    );
    b.constraint(s, "showcase-renders", "high", "visual",
        "The showcase renders in a browser without console errors or failed requests",
        Some(("preview", json!({"report": s.path(&format!("previews/{}/preview-report.json", s.id("showcase")))}))));
    b.d.required_files.push(svg);
    b.d.required_files.push(s.path("index.html"));
    for size in LOGO_SIZES {
        b.d.required_files.push(s.path(&format!("logo-{size}.png")));
    }
    Ok(())
}

fn ui(b: &mut Builder, s: &Scope, input: &AdapterInput<'_>) -> Result<(), AdapterError> {
    let page = need_input(input, "a page or component", &["html", "htm", "tsx", "jsx"])?;
    let id = s.id(&stem(page));
    let copy = s.path(&file_name(page));
    b.stage(s, copy_stage("import", page, &copy));
    let tsx = matches!(ext(page).as_str(), "tsx" | "jsx");
    b.stage(
        s,
        json!({
            // After the copy: a failed render must not cut the copy short.
            "id": "preview", "tool": "preview", "depends_on": ["import"],
            "description": if tsx { "Compile the component and render it in a headless browser" } else { "Render the page in a headless browser (HTMX from the local copy)" },
            "with": {"input": page, "id": id, "required": true, "out_dir": s.path("previews"), "viewport": {"width": 1024, "height": 640}},
            "inputs": [page],
            "outputs": [s.path(&format!("previews/{id}/screenshot.png")), s.path(&format!("previews/{id}/preview-report.json"))],
        }),
    );
    let report = s.path(&format!("previews/{id}/preview-report.json"));
    b.constraint(
        s,
        "renders",
        "blocking",
        "visual",
        "The page renders in a browser without console errors, page errors or failed requests",
        Some(("preview", json!({"report": report}))),
    );
    if tsx {
        // The preview compiles the file as the page's entry: a module that
        // mounts itself into `#root` (as the example Badge.tsx does) is as
        // good as one that exports a component for a host to mount.
        b.constraint(s, "exports-component", "high", "structural",
            "The module exports a component or mounts one into the page's #root",
            Some(("regex", json!({"path": page, "pattern": "export\\s+(default|function|const|class)|getElementById\\(\\s*[\"']root[\"']\\s*\\)|\\bcreateRoot\\s*\\(", "min": 1}))));
    } else {
        b.constraint(
            s,
            "html-valid",
            "high",
            "technical",
            "The page is well-formed HTML",
            Some(("html", json!({"path": page}))),
        );
        b.constraint(
            s,
            "offline-runtime",
            "medium",
            "technical",
            "The page runs without the network (local runtime copies, no remote scripts)",
            // Any <script> whose src is an absolute or protocol-relative
            // URL, whatever the attribute order and quoting (the literal
            // `<script src="http` missed `type="module" src=...` and `//cdn`).
            Some((
                "regex",
                json!({"path": page, "pattern": "(?i)<script\\b[^>]*\\bsrc\\s*=\\s*[\"']?\\s*(https?:)?//", "max": 0}),
            )),
        );
    }
    b.constraint(
        s,
        "accessible-names",
        "medium",
        "accessibility",
        "Images have alternative text and controls have accessible names",
        None,
    );
    b.d.required_files.push(copy);
    b.d.required_files
        .push(s.path(&format!("previews/{id}/screenshot.png")));
    Ok(())
}

/// The A2UI schema this project ships.
pub const A2UI_SCHEMA: &str = include_str!("../../../schemas/a2ui.schema.json");

fn a2ui(b: &mut Builder, s: &Scope, input: &AdapterInput<'_>) -> Result<(), AdapterError> {
    let spec = need_input(input, "an A2UI specification", &["json"])?;
    let st = stem(spec);
    let normalized = s.path(&format!("{st}.a2ui.json"));
    let report = s.path(&format!("{st}.a2ui-report.json"));
    let page = s.path(&format!("{st}.html"));
    let id = s.id(&st);
    let schema: Value = serde_json::from_str(A2UI_SCHEMA)
        .map_err(|e| format!("internal: the shipped A2UI schema is not JSON: {e}"))?;
    b.stage(
        s,
        json!({
            "id": "normalize", "tool": "a2ui",
            "description": "Check ids and references, detect binding cycles, normalize field order",
            "with": {"input": spec, "output": normalized, "report": report},
            "inputs": [spec],
            "outputs": [normalized, report],
        }),
    );
    b.stage(
        s,
        json!({
            "id": "layout", "depends_on": ["normalize"], "tool": "template",
            "description": "Lay the specification out with the A2UI preview template",
            "with": {"template": "builtin:a2ui-preview", "output": page, "vars": {"TITLE": input.name}, "files": {"SPEC": normalized}},
            "outputs": [page],
        }),
    );
    b.stage(
        s,
        json!({
            "id": "preview", "depends_on": ["layout"], "tool": "preview",
            "description": "Render the A2UI layout in a headless browser",
            "with": {"input": page, "id": id, "out_dir": s.path("previews"), "viewport": {"width": 800, "height": 600}},
            "outputs": [s.path(&format!("previews/{id}"))],
        }),
    );
    b.constraint(
        s,
        "schema-valid",
        "blocking",
        "structural",
        "The specification is valid against the A2UI schema",
        Some(("json_schema", json!({"path": spec, "schema": schema}))),
    );
    b.constraint(s, "no-binding-cycles", "blocking", "structural",
        "No component refers to itself through children, references or bindings",
        Some(("json_schema", json!({"path": report, "schema": {"type": "object", "required": ["cycles"], "properties": {"cycles": {"maxItems": 0}, "duplicates": {"maxItems": 0}}}}))));
    b.constraint(s, "normalized", "low", "structural",
        "The specification's fields are in the normalized order (id, type, props, children)",
        Some(("json_schema", json!({"path": report, "schema": {"type": "object", "properties": {"normalized": {"const": true}}}}))));
    b.constraint(
        s,
        "renders",
        "high",
        "visual",
        "The layout renders in a browser without errors",
        Some((
            "preview",
            json!({"report": s.path(&format!("previews/{id}/preview-report.json"))}),
        )),
    );
    b.d.required_files.push(normalized);
    b.d.required_files.push(page);
    Ok(())
}

fn image(b: &mut Builder, s: &Scope, input: &AdapterInput<'_>) -> Result<(), AdapterError> {
    let img = need_input(
        input,
        "an image",
        &["png", "jpg", "jpeg", "webp", "gif", "svg"],
    )?;
    let copy = s.path(&file_name(img));
    b.stage(s, copy_stage("import", img, &copy));
    let raster = if ext(img) == "svg" {
        let size = opt_f64(input, "size").unwrap_or(1024.0) as u64;
        let png = s.path(&format!("{}-{size}.png", stem(img)));
        b.stage(
            s,
            json!({
                "id": "rasterize", "depends_on": ["import"], "tool": "rasterize",
                "description": "Rasterize the SVG",
                "with": {"input": copy, "sizes": [size], "square": false, "output": s.path(&format!("{}-{{size}}.png", stem(img)))},
                "outputs": [png],
            }),
        );
        b.d.required_files.push(png.clone());
        png
    } else {
        copy.clone()
    };
    b.constraint(
        s,
        "format",
        "blocking",
        "technical",
        "The image is a PNG, JPEG, WebP or GIF file whose content matches its name",
        Some((
            "image_format",
            json!({"path": raster, "format": ["png", "jpeg", "webp", "gif"]}),
        )),
    );
    let max = opt_f64(input, "max_bytes").unwrap_or(2_000_000.0) as u64;
    b.constraint(
        s,
        "size-budget",
        "medium",
        "performance",
        &format!("The image file stays under {max} bytes"),
        Some(("max_file_size", json!({"path": raster, "max_bytes": max}))),
    );
    if let (Some(w), Some(h)) = (opt_f64(input, "width"), opt_f64(input, "height")) {
        b.constraint(
            s,
            "dimensions",
            "high",
            "structural",
            &format!("The image is {w} x {h} pixels"),
            Some((
                "image_dimensions",
                json!({"path": raster, "width": w as u64, "height": h as u64}),
            )),
        );
    }
    if let Some(ratio) = opt_str(input, "aspect") {
        b.constraint(
            s,
            "aspect",
            "high",
            "visual",
            &format!("The image has the aspect ratio {ratio}"),
            Some(("aspect_ratio", json!({"path": raster, "ratio": ratio}))),
        );
    }
    b.d.required_files.push(copy);
    Ok(())
}

fn content(b: &mut Builder, s: &Scope, input: &AdapterInput<'_>) -> Result<(), AdapterError> {
    let md = need_input(input, "a Markdown document", &["md", "markdown"])?;
    let st = stem(md);
    let body = s.path(&format!("{st}-body.html"));
    let page = s.path(&format!("{st}.html"));
    let id = s.id(&st);
    b.stage(
        s,
        json!({
            "id": "render", "tool": "markdown",
            "description": "Markdown to an HTML fragment with heading ids",
            "with": {"input": md, "output": body},
            "inputs": [md],
            "outputs": [body],
        }),
    );
    b.stage(
        s,
        json!({
            "id": "page", "depends_on": ["render"], "tool": "template",
            "description": "Lay the document out as a report page with a table of contents",
            "with": {"template": "builtin:content-report", "output": page,
                     "vars": {"TITLE": format!("${}.title", s.id("render")), "BODY": format!("${}.html", s.id("render")), "TOC": format!("${}.headings", s.id("render"))}},
            "outputs": [page],
        }),
    );
    // The page lives in dist/, the document elsewhere: the files it links to
    // by relative path go next to the page, at the same relative paths, or
    // every relative link and image of a good document would be broken.
    let dir = md.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let assets: Vec<String> = local_links(input.root, dir, &head_of(input.root, md))
        .into_iter()
        .filter(|a| s.path(a) != page && s.path(a) != body)
        .collect();
    let mut preview_deps = vec![json!("page")];
    if !assets.is_empty() {
        let mut command = vec![
            json!("sh"),
            json!("-c"),
            json!(
                "while [ $# -gt 1 ]; do mkdir -p \"$(dirname \"$2\")\" && cp \"$1\" \"$2\" || exit 1; shift 2; done"
            ),
            json!("sh"),
        ];
        let mut from = Vec::new();
        let mut to = Vec::new();
        for a in &assets {
            let src = if dir.is_empty() {
                a.clone()
            } else {
                format!("{dir}/{a}")
            };
            let dst = s.path(a);
            command.push(json!(src));
            command.push(json!(dst));
            from.push(src);
            to.push(dst);
        }
        b.stage(
            s,
            json!({
                "id": "assets", "tool": "run",
                "description": "Copy the files the document links to next to the report page",
                "with": {"command": command},
                "inputs": from,
                "outputs": to,
            }),
        );
        preview_deps.push(json!("assets"));
    }
    b.stage(
        s,
        json!({
            "id": "preview", "depends_on": preview_deps, "tool": "preview",
            "description": "Render the report in a headless browser",
            "with": {"input": page, "id": id, "out_dir": s.path("previews"), "viewport": {"width": 1100, "height": 900}},
            "outputs": [s.path(&format!("previews/{id}"))],
        }),
    );
    b.constraint(
        s,
        "page-exists",
        "blocking",
        "structural",
        "The report page exists and is not empty",
        Some(("non_empty", json!({"path": page}))),
    );
    b.constraint(
        s,
        "heading-hierarchy",
        "high",
        "structural",
        "One level-1 heading and no skipped heading levels",
        Some(("markdown_headings", json!({"path": md, "single_h1": true}))),
    );
    b.constraint(
        s,
        "links-resolve",
        "medium",
        "structural",
        "Every relative link of the report resolves",
        Some(("links", json!({"path": page}))),
    );
    b.constraint(
        s,
        "renders",
        "high",
        "visual",
        "The report renders in a browser without errors",
        Some((
            "preview",
            json!({"report": s.path(&format!("previews/{id}/preview-report.json"))}),
        )),
    );
    b.d.required_files.push(page);
    Ok(())
}

/// The start of a workspace text file (empty when it cannot be read).
/// Inputs are named by their real path (`check_inputs`), so a link at the
/// file is not followed.
fn head_of(root: &Path, rel: &str) -> String {
    use std::io::Read;
    // Read only (no write): `open_own` refuses a link at the file.
    let Ok(file) = pmpo_store::open_own(&root.join(rel), std::fs::OpenOptions::new().read(true))
    else {
        return String::new();
    };
    let mut bytes = Vec::new();
    let _ = file.take(1 << 20).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The relative link and image targets of a Markdown text that name files
/// under `dir` (workspace-relative), as paths relative to `dir`: inline
/// `[..](target)`, reference definitions `[id]: target`, and `src`/`href`
/// attributes of inline HTML. Fragments and queries are dropped; URLs,
/// absolute paths, anchors and paths that climb out of `dir` are left out.
fn local_links(root: &Path, dir: &str, text: &str) -> Vec<String> {
    let take = |rest: &str, close: &[char]| -> String {
        let rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('<') {
            r.split('>').next().unwrap_or("").to_string()
        } else {
            rest.split(|c: char| c.is_whitespace() || close.contains(&c))
                .next()
                .unwrap_or("")
                .to_string()
        }
    };
    let mut found: Vec<String> = Vec::new();
    for (i, _) in text.match_indices("](") {
        found.push(take(&text[i + 2..], &[')']));
    }
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[')
            && let Some(j) = t.find("]:")
        {
            found.push(take(&t[j + 2..], &[]));
        }
    }
    for attr in ["src=\"", "href=\""] {
        for (i, _) in text.match_indices(attr) {
            found.push(take(&text[i + attr.len()..], &['"']));
        }
    }
    let mut out: Vec<String> = Vec::new();
    for target in &found {
        let target = target.split(['#', '?']).next().unwrap_or("");
        if target.is_empty() || target.starts_with('/') || target.contains(':') {
            continue;
        }
        let mut parts: Vec<&str> = Vec::new();
        let mut escapes = false;
        for seg in target.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        escapes = true;
                        break;
                    }
                }
                other => parts.push(other),
            }
        }
        if escapes || parts.is_empty() {
            continue;
        }
        let rel = parts.join("/");
        let on_disk = if dir.is_empty() {
            root.join(&rel)
        } else {
            root.join(dir).join(&rel)
        };
        if on_disk.is_file() && !out.contains(&rel) {
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// Whether a workspace directory and every directory above it (up to the
/// root) hold an `__init__.py`, so that it imports as a package from the root.
fn is_python_package(root: &Path, dir: &str) -> bool {
    if dir.is_empty() || dir == "." {
        return false;
    }
    let mut at = root.to_path_buf();
    dir.split('/').filter(|p| !p.is_empty()).all(|part| {
        at.push(part);
        at.join("__init__.py").is_file()
    })
}

/// Whether the workspace root has an eslint configuration (flat or legacy).
fn has_eslint_config(root: &Path) -> bool {
    let flat = ["js", "mjs", "cjs", "ts", "mts", "cts"]
        .iter()
        .any(|e| root.join(format!("eslint.config.{e}")).is_file());
    let legacy = ["", ".js", ".cjs", ".json", ".yml", ".yaml"]
        .iter()
        .any(|e| root.join(format!(".eslintrc{e}")).is_file());
    let in_package = std::fs::read_to_string(root.join("package.json"))
        .is_ok_and(|t| t.contains("\"eslintConfig\""));
    flat || legacy || in_package
}

/// Test files next to the inputs or in a `tests`/`test` directory.
fn find_tests(root: &Path, inputs: &[String], is_test: impl Fn(&str) -> bool) -> Vec<String> {
    let mut dirs: Vec<String> = vec!["tests".into(), "test".into()];
    for i in inputs {
        let parent = i
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        if !dirs.contains(&parent) {
            dirs.push(parent);
        }
    }
    let mut found = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(if d.is_empty() { "." } else { &d })) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| is_test(n))
            .collect();
        names.sort();
        for n in names {
            let rel = if d.is_empty() { n } else { format!("{d}/{n}") };
            if !found.contains(&rel) {
                found.push(rel);
            }
        }
    }
    found
}

fn code(b: &mut Builder, s: &Scope, input: &AdapterInput<'_>) -> Result<(), AdapterError> {
    let lang_exts = ["py", "js", "mjs", "cjs", "sh", "bash", "rs"];
    let first = need_input(input, "source files", &lang_exts)?;
    let language = match ext(first).as_str() {
        "py" => "python",
        "js" | "mjs" | "cjs" => "node",
        "sh" | "bash" => "shell",
        _ => "rust",
    };
    let sources: Vec<String> = input
        .inputs
        .iter()
        .filter(|p| lang_exts.contains(&ext(p).as_str()))
        .cloned()
        .collect();
    // The sources go to dist/code/ once their checks are known; the stage
    // copies each file (paths are arguments, never shell text).
    let outputs: Vec<String> = sources
        .iter()
        .map(|p| s.path(&format!("code/{p}")))
        .collect();
    let mut package = vec![
        json!("sh"),
        json!("-c"),
        json!(format!(
            "for f; do mkdir -p \"{}/code/$(dirname \"$f\")\" && cp \"$f\" \"{}/code/$f\"; done",
            s.dist, s.dist
        )),
        json!("sh"),
    ];
    package.extend(sources.iter().map(|p| json!(p)));
    b.stage(
        s,
        json!({"id": "package", "tool": "run", "description": "Copy the sources into dist/code/",
               "with": {"command": package}, "inputs": sources, "outputs": outputs}),
    );
    let files = json!(sources);
    let note = |b: &mut Builder, what: &str| b.d.notes.push(format!("{language}: {what}"));
    match language {
        "python" => {
            b.constraint(
                s,
                "syntax",
                "blocking",
                "technical",
                "Every source file compiles",
                Some(("syntax", json!({"path": files, "language": "python"}))),
            );
            let lint = if on_path("ruff") {
                Some(json!({"command": argv(&["ruff", "check"], &sources)}))
            } else if on_path("pyflakes") {
                Some(json!({"command": argv(&["pyflakes"], &sources)}))
            } else {
                note(
                    b,
                    "no linter (ruff, pyflakes) on PATH; the lint constraint is left to judgement",
                );
                None
            };
            b.constraint(
                s,
                "lint",
                "high",
                "technical",
                "The linter reports no error",
                lint.map(|w| ("lint", w)),
            );
            let fmt = if on_path("ruff") {
                Some(json!({"command": argv(&["ruff", "format", "--check"], &sources)}))
            } else if on_path("black") {
                Some(json!({"command": argv(&["black", "--check", "-q"], &sources)}))
            } else {
                note(
                    b,
                    "no formatter (ruff, black) on PATH; the format constraint is left to judgement",
                );
                None
            };
            b.constraint(
                s,
                "format",
                "medium",
                "technical",
                "The sources are formatted",
                fmt.map(|w| ("command", w)),
            );
            let tests = find_tests(input.root, &sources, |n| {
                n.ends_with(".py") && (n.starts_with("test_") || n.ends_with("_test.py"))
            });
            if tests.is_empty() {
                note(
                    b,
                    "no test files (test_*.py, *_test.py) found; the tests constraint is left to judgement",
                );
                b.constraint(s, "tests", "high", "technical", "The tests pass", None);
            } else {
                let dir = tests[0]
                    .rsplit_once('/')
                    .map(|(d, _)| d.to_string())
                    .unwrap_or_else(|| ".".into());
                let cmd = if on_path("pytest") {
                    json!(["pytest", "-q", "-p", "no:cacheprovider", dir])
                } else {
                    // `-t .` makes unittest import the start directory as a
                    // package from the workspace root, which fails ("Start
                    // directory is not importable") unless every directory on
                    // the way has an `__init__.py`; a plain `tests/` has none.
                    let mut cmd = vec![
                        json!("python3"),
                        json!("-B"),
                        json!("-m"),
                        json!("unittest"),
                        json!("discover"),
                        json!("-s"),
                        json!(dir),
                    ];
                    if is_python_package(input.root, &dir) {
                        cmd.push(json!("-t"));
                        cmd.push(json!("."));
                    }
                    cmd.push(json!("-p"));
                    cmd.push(json!("*test*.py"));
                    Value::Array(cmd)
                };
                b.constraint(
                    s,
                    "tests",
                    "blocking",
                    "technical",
                    &format!("The tests pass ({})", tests.join(", ")),
                    Some((
                        "tests",
                        json!({"command": cmd, "env": {"PYTHONDONTWRITEBYTECODE": "1"}}),
                    )),
                );
            }
        }
        "node" => {
            b.constraint(
                s,
                "syntax",
                "blocking",
                "technical",
                "Every source file parses (node --check)",
                Some(("syntax", json!({"path": files, "language": "node"}))),
            );
            // eslint refuses to run (exit 2) in a project without its
            // configuration, which would fail the lint constraint of any code.
            let eslint_config = has_eslint_config(input.root);
            if on_path("eslint") && eslint_config {
                b.constraint(
                    s,
                    "lint",
                    "high",
                    "technical",
                    "The linter reports no error",
                    Some(("lint", json!({"command": argv(&["eslint"], &sources)}))),
                );
            } else {
                note(
                    b,
                    if eslint_config {
                        "no linter (eslint) on PATH; the lint constraint is left to judgement"
                    } else {
                        "no eslint configuration in the workspace (eslint.config.*, .eslintrc*), so eslint is not run; the lint constraint is left to judgement"
                    },
                );
                b.constraint(
                    s,
                    "lint",
                    "high",
                    "technical",
                    "The linter reports no error",
                    None,
                );
            }
            if on_path("prettier") {
                b.constraint(
                    s,
                    "format",
                    "medium",
                    "technical",
                    "The sources are formatted",
                    Some((
                        "command",
                        json!({"command": argv(&["prettier", "--check"], &sources)}),
                    )),
                );
            } else {
                note(
                    b,
                    "no formatter (prettier) on PATH; the format constraint is left to judgement",
                );
                b.constraint(
                    s,
                    "format",
                    "medium",
                    "technical",
                    "The sources are formatted",
                    None,
                );
            }
            let tests = find_tests(input.root, &sources, |n| {
                (n.ends_with(".js") || n.ends_with(".mjs"))
                    && (n.contains(".test.") || n.starts_with("test"))
            });
            if tests.is_empty() {
                note(
                    b,
                    "no test files (*.test.js, test*.js) found; the tests constraint is left to judgement",
                );
                b.constraint(s, "tests", "high", "technical", "The tests pass", None);
            } else {
                let mut cmd = vec![json!("node"), json!("--test")];
                cmd.extend(tests.iter().map(|t| json!(t)));
                b.constraint(
                    s,
                    "tests",
                    "blocking",
                    "technical",
                    &format!("The tests pass ({})", tests.join(", ")),
                    Some(("tests", json!({"command": cmd}))),
                );
            }
        }
        "shell" => {
            let mut cmd = vec![
                json!("sh"),
                json!("-c"),
                json!("for f; do bash -n \"$f\" || exit 1; done"),
                json!("sh"),
            ];
            cmd.extend(sources.iter().map(|p| json!(p)));
            b.constraint(
                s,
                "syntax",
                "blocking",
                "technical",
                "Every script parses (bash -n)",
                Some(("command", json!({"command": cmd}))),
            );
            if on_path("shellcheck") {
                b.constraint(
                    s,
                    "lint",
                    "high",
                    "technical",
                    "shellcheck reports no problem",
                    Some(("lint", json!({"command": argv(&["shellcheck"], &sources)}))),
                );
            } else {
                note(
                    b,
                    "no linter (shellcheck) on PATH; the lint constraint is left to judgement",
                );
                b.constraint(
                    s,
                    "lint",
                    "high",
                    "technical",
                    "The linter reports no problem",
                    None,
                );
            }
        }
        _ => {
            if input.root.join("Cargo.toml").is_file() && on_path("cargo") {
                b.constraint(
                    s,
                    "build",
                    "blocking",
                    "technical",
                    "The crate builds (cargo check)",
                    Some((
                        "build",
                        json!({"command": ["cargo", "check", "--quiet"], "timeout": "10m"}),
                    )),
                );
                b.constraint(
                    s,
                    "format",
                    "medium",
                    "technical",
                    "The sources are formatted (cargo fmt --check)",
                    Some(("command", json!({"command": ["cargo", "fmt", "--check"]}))),
                );
                b.constraint(
                    s,
                    "tests",
                    "blocking",
                    "technical",
                    "The tests pass (cargo test)",
                    Some((
                        "tests",
                        json!({"command": ["cargo", "test", "--quiet"], "timeout": "20m"}),
                    )),
                );
            } else {
                note(
                    b,
                    "no Cargo.toml in the workspace (or no cargo); only the format is checked",
                );
                let mut cmd = vec![
                    json!("rustfmt"),
                    json!("--check"),
                    json!("--edition"),
                    json!("2021"),
                ];
                cmd.extend(sources.iter().map(|p| json!(p)));
                b.constraint(
                    s,
                    "format",
                    "medium",
                    "technical",
                    "The sources are formatted (rustfmt --check)",
                    on_path("rustfmt").then(|| ("command", json!({"command": cmd}))),
                );
            }
        }
    }
    b.d.required_files
        .extend(sources.iter().map(|p| s.path(&format!("code/{p}"))));
    Ok(())
}

/// Character limits of prompt targets (the `prompt` tool knows the same ones).
fn platform_of(input: &AdapterInput<'_>, content_type: &str) -> String {
    input
        .target_platform
        .map(str::to_string)
        .unwrap_or_else(|| {
            match content_type {
                "meta:image-prompt" => "dall-e-3",
                "meta:video-prompt" => "sora",
                _ => "generic",
            }
            .to_string()
        })
}

fn meta_prompt(b: &mut Builder, s: &Scope, input: &AdapterInput<'_>) -> Result<(), AdapterError> {
    let content_type =
        if input.content_type.starts_with("meta:") && input.content_type != "meta:composite" {
            input.content_type
        } else {
            "meta:agent-prompt"
        };
    let platform = platform_of(input, content_type);
    let prompt = s.path("prompt.md");
    let meta = s.path("prompt.meta.json");
    let source = input
        .inputs
        .iter()
        .find(|p| matches!(ext(p).as_str(), "md" | "txt" | "prompt"));
    let mut with = json!({"output": prompt, "meta": meta, "target_platform": platform, "content_type": content_type});
    match (source, input.intent) {
        (Some(p), _) => with["input"] = json!(p),
        (None, Some(intent)) if !intent.trim().is_empty() => {
            with["intent"] = json!(intent.trim());
            with["title"] = json!(input.name);
        }
        _ => {
            return Err(
                "a meta-prompt artifact needs a prompt: pass --input FILE (.md or .txt) or --intent \"what the prompt is for\"".into(),
            );
        }
    }
    let mut stage = json!({
        "id": "compose", "tool": "prompt",
        "description": "Write the prompt and its metadata (platform, characters, tokens, variables)",
        "with": with,
        "outputs": [prompt, meta],
    });
    if let Some(p) = source {
        stage["inputs"] = json!([p]);
    }
    b.stage(s, stage);
    b.constraint(
        s,
        "prompt-present",
        "blocking",
        "structural",
        "The prompt text exists and is not empty",
        Some(("non_empty", json!({"path": prompt}))),
    );
    b.constraint(s, "platform-limit", "blocking", "technical",
        &format!("The prompt fits the target platform's length limit ({platform})"),
        Some(("json_schema", json!({"path": meta, "schema": {"type": "object", "required": ["within_limit"], "properties": {"within_limit": {"const": true}}}}))));
    b.constraint(s, "no-unfilled-placeholders", "high", "structural",
        "No TODO, TBD or template hole is left in the prompt",
        Some(("json_schema", json!({"path": meta, "schema": {"type": "object", "properties": {"placeholders_unfilled": {"maxItems": 0}}}}))));
    b.constraint(s, "states-the-task", "medium", "semantic",
        "The prompt states its task (a goal or an instruction)",
        Some(("regex", json!({"path": prompt, "pattern": "(?im)^(#+\\s*(goal|task|role|objective)\\b|you are\\b|(create|write|generate|describe|draw|render|produce|design)\\b)", "min": 1}))));
    b.constraint(
        s,
        "specificity",
        "medium",
        "semantic",
        "The prompt is specific: subject, style, constraints and output format are stated",
        None,
    );
    b.constraint(s, "platform-fit", "medium", "semantic",
        &format!("The prompt suits {platform}: its vocabulary and parameters are ones the platform understands"), None);
    if input.test_generation {
        let out = s.path("test-output.md");
        b.stage(
            s,
            json!({
                "id": "test-generation", "depends_on": ["compose"], "tool": "ai",
                "requires_execution": false,
                "description": "Run the prompt through the model to see what it produces",
                "with": {"prompt_file": prompt, "verbatim": true, "output": out, "phase": "execute"},
                "outputs": [out],
            }),
        );
        b.constraint(
            s,
            "test-output",
            "blocking",
            "structural",
            "Running the prompt produced an output",
            Some(("non_empty", json!({"path": out}))),
        );
        b.constraint(
            s,
            "test-output-meets-intent",
            "high",
            "semantic",
            "What the prompt produced meets the intent",
            None,
        );
        b.d.required_files.push(out);
    }
    b.d.required_files.push(prompt);
    b.d.required_files.push(meta);
    Ok(())
}

fn composite(b: &mut Builder, input: &AdapterInput<'_>) -> Result<(), AdapterError> {
    if input.components.is_empty() {
        return Err("a meta:composite artifact needs components: pass --component CONTENT_TYPE[=INPUT] once per part (e.g. --component meta:image-prompt --component direct:content=docs/brief.md)".into());
    }
    for (i, spec) in input.components.iter().enumerate() {
        let (ct, file) = match spec.split_once('=') {
            Some((c, f)) => (c, Some(f.to_string())),
            None => (spec.as_str(), None),
        };
        content_type::check(ct)?;
        if ct == "meta:composite" {
            return Err("a composite's component cannot itself be meta:composite".into());
        }
        let t = content_type::artifact_type_of(ct).ok_or_else(|| {
            format!("component `{ct}`: no artifact type handles this content type")
        })?;
        let slug = format!(
            "c{}-{}",
            i + 1,
            ct.split_once(':').map(|(_, k)| k).unwrap_or(ct)
        );
        // Stage ids take letters, digits, `-` and `_` only, and a `.` would
        // end the stage name in `$stage.output` references.
        let scope = Scope {
            dist: format!("dist/{slug}"),
            prefix: format!("{slug}_"),
        };
        let inputs: Vec<String> = match file {
            Some(f) => vec![f],
            None => input.inputs.to_vec(),
        };
        let sub = AdapterInput {
            artifact_type: t,
            content_type: ct,
            inputs: &inputs,
            components: &[],
            ..input.clone()
        };
        adapter(b, &scope, &sub).map_err(|e| format!("component {} ({ct}): {e}", i + 1))?;
        // Each component keeps its own evaluation strategy.
        let strategy = content_type::strategy(ct, input.test_generation);
        b.d.goals
            .push(format!("{slug}: {ct}, evaluated by {}", strategy.as_str()));
    }
    Ok(())
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
