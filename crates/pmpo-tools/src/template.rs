//! The `template` tool: fills `{{VARIABLE}}` placeholders and writes the
//! result through the workspace (atomically).
//!
//! ```yaml
//! with:
//!   template: builtin:logo-showcase   # or a workspace path: assets/templates/page.html
//!   output: dist/index.html
//!   vars:
//!     NAME: Acme
//!     IMAGES: $sizes.images           # references are resolved before the tool runs
//!   files:                            # variables read from workspace files
//!     SPEC: specs/card.json           # .json is parsed; anything else is text
//! ```
//!
//! Templates are Jinja (minijinja) with strict undefined: a variable the
//! template uses but `vars` does not give fails the stage and is named. For
//! `.html`, `.htm`, `.xml` and `.svg` outputs values are HTML-escaped unless
//! marked `|safe`. Filters added for artifact pages: `rel` (a workspace path
//! made relative to the output file) and `basename`.

use std::collections::BTreeSet;
use std::time::Instant;

use async_trait::async_trait;
use minijinja::{Environment, UndefinedBehavior};
use pmpo_plan::{InputIssue, TemplateFile, TemplateReport};
use pmpo_store::Durability;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::inputs::{check_path, invalid, io_error, read_file};
use crate::typed::{self, Inputs, Wrong};
use crate::{Captured, Termination, Tool, ToolContext, ToolError, ToolOutcome, issue};

mod vars;

pub use vars::{VarUse, needed_variables};

/// The inputs of a `template` stage (`with:`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateInputs {
    template: String,
    output: String,
    vars: Option<Map<String, Value>>,
    files: Option<Map<String, Value>>,
    autoescape: Option<bool>,
}

impl Inputs for TemplateInputs {
    const TOOL: &'static str = "template";
    const WRITES: &'static [&'static str] = &["output"];

    fn wrong(key: &str) -> Wrong {
        match key {
            // Paths, `vars` and `files` are checked with their own words.
            "template" | "output" | "vars" | "files" => Wrong::Elsewhere,
            _ => Wrong::Reader,
        }
    }
}

/// The named outputs of a `template` stage (see `invoke`).
pub const OUTPUTS: &[&str] = &["output", "bytes"];

/// Templates compiled into the binary, by name (`builtin:NAME`).
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    (
        "logo-showcase",
        include_str!("../assets/templates/logo-showcase.html"),
    ),
    (
        "content-report",
        include_str!("../assets/templates/content-report.html"),
    ),
    (
        "a2ui-preview",
        include_str!("../assets/templates/a2ui-preview.html"),
    ),
];

const BUILTIN_PREFIX: &str = "builtin:";

pub struct TemplateTool;

fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN_TEMPLATES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
}

fn builtin_names() -> String {
    BUILTIN_TEMPLATES
        .iter()
        .map(|(n, _)| format!("{BUILTIN_PREFIX}{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders a template source with variables. `output` is the workspace path
/// the result is written to (for the `rel` filter and the escaping choice).
pub fn render(
    name: &str,
    source: &str,
    output: &str,
    vars: &Map<String, Value>,
    autoescape: Option<bool>,
) -> Result<String, ToolError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    let escape = autoescape.unwrap_or_else(|| {
        let lower = output.to_ascii_lowercase();
        [".html", ".htm", ".xml", ".svg"]
            .iter()
            .any(|e| lower.ends_with(e))
    });
    env.set_auto_escape_callback(move |_| {
        if escape {
            minijinja::AutoEscape::Html
        } else {
            minijinja::AutoEscape::None
        }
    });
    let out = output.to_string();
    // Paths are made safe here (minijinja's HTML escaping would also encode `/`).
    env.add_filter("rel", move |path: String| {
        minijinja::Value::from_safe_string(escape_html(&crate::inputs::relative_link(&out, &path)))
    });
    env.add_filter("basename", |path: String| {
        path.rsplit('/').next().unwrap_or_default().to_string()
    });
    let tmpl = env
        .template_from_named_str(name, source)
        .map_err(|e| template_error(name, &e))?;

    // Name every missing variable at once, before rendering (with the same
    // rule `pmpo check` applies, so the two agree).
    let missing: BTreeSet<String> = needed_variables(name, source)
        .map_err(|e| template_error(name, &e))?
        .into_iter()
        .map(|u| u.name)
        .filter(|v| !vars.contains_key(v))
        .collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
        return Err(invalid(format!(
            "template `{name}` uses {} {} that `vars` does not give",
            if missing.len() == 1 {
                "variable"
            } else {
                "variables"
            },
            list.join(", ")
        ))
        .hint(format!(
            "add {} under `with: vars:` (a value or a `$stage.field` reference)",
            list.join(", ")
        )));
    }
    tmpl.render(minijinja::Value::from_serialize(vars))
        .map_err(|e| template_error(name, &e))
}

/// Escapes the characters that matter inside HTML text and quoted attributes.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn template_error(name: &str, e: &minijinja::Error) -> ToolError {
    let mut msg = format!("template `{name}`");
    if let Some(line) = e.line() {
        msg.push_str(&format!(" line {line}"));
    }
    msg.push_str(&format!(": {}", e.kind()));
    if let Some(detail) = e.detail() {
        msg.push_str(&format!(": {detail}"));
    }
    let err = invalid(msg);
    if e.kind() == minijinja::ErrorKind::UndefinedError {
        err.hint("a value the template reads is missing: check the names under `vars` and the fields of the values passed in")
    } else {
        err
    }
}

#[async_trait]
impl Tool for TemplateTool {
    fn name(&self) -> &'static str {
        "template"
    }
    fn written_paths(&self, inputs: &Map<String, Value>) -> Vec<String> {
        typed::written::<TemplateInputs>(inputs)
    }

    fn check_inputs(&self, inputs: &Map<String, Value>) -> Vec<InputIssue> {
        let mut issues = typed::check::<TemplateInputs>(inputs);
        match inputs.get("template") {
            Some(Value::String(t)) if t.starts_with(BUILTIN_PREFIX) => {
                if builtin(&t[BUILTIN_PREFIX.len()..]).is_none() {
                    issues.push(issue(
                        "template",
                        format!("unknown built-in template `{t}`"),
                        Some(&format!("built-in templates: {}", builtin_names())),
                    ));
                }
            }
            _ => check_path(inputs, "template", true, &mut issues),
        }
        check_path(inputs, "output", true, &mut issues);
        match inputs.get("vars") {
            None | Some(Value::Object(_)) => {}
            Some(v) if crate::inputs::is_reference(v) => {}
            Some(_) => issues.push(issue(
                "vars",
                "`vars` must be a mapping of NAME: value",
                None,
            )),
        }
        match inputs.get("files") {
            None => {}
            Some(Value::Object(map)) => {
                for (name, path) in map {
                    if inputs
                        .get("vars")
                        .and_then(Value::as_object)
                        .is_some_and(|v| v.contains_key(name))
                    {
                        issues.push(issue(
                            "files",
                            format!("`{name}` is given both in `vars` and in `files`"),
                            None,
                        ));
                    }
                    let ok = crate::inputs::is_reference(path)
                        || path
                            .as_str()
                            .is_some_and(|p| pmpo_plan::validate_output_pattern(p).is_ok());
                    if !ok {
                        issues.push(issue(
                            "files",
                            format!("`files.{name}` must be a path relative to the workspace"),
                            None,
                        ));
                    }
                }
            }
            Some(_) => issues.push(issue(
                "files",
                "`files` must be a mapping of NAME: path",
                None,
            )),
        }
        issues
    }

    fn check_templates(
        &self,
        inputs: &Map<String, Value>,
        file: &mut dyn FnMut(&str) -> TemplateFile,
    ) -> TemplateReport {
        let mut report = TemplateReport::default();
        let Some(Value::String(template)) = inputs.get("template") else {
            return report;
        };
        // The names `vars` and `files` give; a `vars` that is a reference is
        // known only at run time, so nothing can be said before.
        let mut given: Vec<&str> = Vec::new();
        for key in ["vars", "files"] {
            match inputs.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Object(m)) => given.extend(m.keys().map(String::as_str)),
                Some(_) => return report,
            }
        }
        let source: String = if let Some(name) = template.strip_prefix(BUILTIN_PREFIX) {
            match builtin(name) {
                Some(text) => text.to_string(),
                None => return report, // check_inputs names it
            }
        } else {
            match crate::inputs::template_text("template", "template", template, file, &mut report)
            {
                Some(text) => text,
                None => return report,
            }
        };
        let needed = match needed_variables(template, &source) {
            Ok(n) => n,
            Err(e) => {
                let err = template_error(template, &e);
                report
                    .errors
                    .push(issue("template", err.message, err.hint.as_deref()));
                return report;
            }
        };
        given.sort_unstable();
        let gives = if given.is_empty() {
            "`vars` and `files` give nothing".to_string()
        } else {
            format!("`vars` and `files` give {}", given.join(", "))
        };
        for u in needed.iter().filter(|u| !given.contains(&u.name.as_str())) {
            let help = match pmpo_plan::diag::did_you_mean(&u.name, given.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? {gives}"),
                None => format!(
                    "add `{}` under `with: vars:` (a value or a `$stage.field` reference), or mark it optional in the template (`{{% if {0} is defined %}}` or `{0} | default(...)`); {gives}",
                    u.name
                ),
            };
            report.errors.push(issue(
                "template",
                format!(
                    "template `{template}` uses `{}` at {template}:{}:{}, which neither `vars` nor `files` gives",
                    u.name, u.line, u.column
                ),
                Some(&help),
            ));
        }
        report
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        let started = Instant::now();
        let input: TemplateInputs = typed::decode(inputs)?;
        let (template, output) = (input.template.as_str(), input.output.as_str());
        let mut vars = input.vars.unwrap_or_default();
        for (name, path) in input.files.unwrap_or_default() {
            let path = path
                .as_str()
                .ok_or_else(|| invalid(format!("`files.{name}` must be a path")))?;
            let bytes = read_file(ctx.workspace, path)?;
            let value = if path.to_ascii_lowercase().ends_with(".json") {
                serde_json::from_slice(&bytes).map_err(|e| {
                    invalid(format!("`{path}` (files.{name}) is not valid JSON: {e}"))
                })?
            } else {
                Value::String(String::from_utf8_lossy(&bytes).into_owned())
            };
            vars.insert(name, value);
        }
        let autoescape = input.autoescape;
        let source: String = match template.strip_prefix(BUILTIN_PREFIX) {
            Some(name) => builtin(name)
                .ok_or_else(|| {
                    invalid(format!("unknown built-in template `{template}`"))
                        .hint(format!("built-in templates: {}", builtin_names()))
                })?
                .to_string(),
            None => String::from_utf8(read_file(ctx.workspace, template)?)
                .map_err(|_| invalid(format!("template `{template}` is not UTF-8 text")))?,
        };
        let rendered = render(template, &source, output, &vars, autoescape)?;
        ctx.workspace
            .write_atomic(output, rendered.as_bytes(), Durability::Relaxed)
            .map_err(|e| io_error("write", output, e))?;
        let summary = format!(
            "rendered {template} -> {output} ({} bytes, {} variables)\n",
            rendered.len(),
            vars.len()
        );
        let mut outputs = Map::new();
        // The names are OUTPUTS (what `pmpo check` accepts in references).
        outputs.insert(OUTPUTS[0].into(), json!(output));
        outputs.insert(OUTPUTS[1].into(), json!(rendered.len()));
        Ok(ToolOutcome {
            termination: Termination::Exited(0),
            stdout: Captured::from_bytes(summary.as_bytes()),
            stderr: Captured::default(),
            duration: started.elapsed(),
            outputs,
            invocation: json!({"template": template, "output": output}),
            notes: Vec::new(),
            skipped: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn fills_placeholders_and_escapes_html() {
        let out = render(
            "t",
            "<h1>{{TITLE}}</h1>{{ BODY|safe }}",
            "dist/a.html",
            &vars(json!({"TITLE": "A & B", "BODY": "<p>x</p>"})),
            None,
        )
        .unwrap();
        assert_eq!(out, "<h1>A &amp; B</h1><p>x</p>");
        let txt = render(
            "t",
            "{{TITLE}}",
            "dist/a.txt",
            &vars(json!({"TITLE": "A & B"})),
            None,
        )
        .unwrap();
        assert_eq!(txt, "A & B");
    }

    #[test]
    fn missing_variables_are_named() {
        let err = render(
            "page",
            "{{ TITLE }} {{ AUTHOR }} {% for x in ITEMS %}{{ x }}{% endfor %}",
            "o.html",
            &vars(json!({"TITLE": "t"})),
            None,
        )
        .unwrap_err();
        assert!(err.message.contains("`AUTHOR`"), "{}", err.message);
        assert!(err.message.contains("`ITEMS`"), "{}", err.message);
        assert!(!err.message.contains("`TITLE`"));
        // A missing field of a given value fails at render time, with its line.
        let err = render(
            "page",
            "line1\n{{ LOGO.missing }}",
            "o.html",
            &vars(json!({"LOGO": {"path": "x"}})),
            None,
        )
        .unwrap_err();
        assert!(err.message.contains("line 2"), "{}", err.message);
    }

    #[test]
    fn needed_variables_skip_guarded_and_local_names() {
        let names = |src: &str| -> Vec<String> {
            needed_variables("t", src)
                .unwrap()
                .into_iter()
                .map(|u| u.name)
                .collect()
        };
        assert_eq!(
            names(
                "{% if A is defined %}{{ A.x }}{% else %}{{ B }}{% endif %}\
                 {{ C | default('c') }}{{ D|d }}{{ E if E is defined else '' }}\
                 {% if F is undefined %}-{% else %}{{ F }}{% endif %}\
                 {% if G is defined and G.ok %}{{ G }}{% endif %}\
                 {% for i in range(3) %}{{ loop.index }}{{ i }}{% endfor %}\
                 {% set H = 1 %}{{ H }}{% macro m(x) %}{{ x }}{{ caller }}{% endmacro %}\
                 {% with w = W %}{{ w }}{% endwith %}{{ loop }}{{ I.x }}{{ I }}"
            ),
            vec!["B", "W", "loop", "I"]
        );
        // A guard in one place does not make an unguarded read elsewhere fine.
        assert_eq!(names("{{ A|default(1) }} {{ A }}"), vec!["A"]);
        assert_eq!(
            names("{% if not (A is defined) %}{% else %}{{ A }}{% endif %}"),
            Vec::<String>::new()
        );
        let first = &needed_variables("t", "line1\n  {{ X }}").unwrap()[0];
        assert_eq!((first.line, first.column), (2, 6));
        assert!(needed_variables("t", "{% if %}").is_err());
        // The renderer agrees: guarded reads render, and only unguarded ones are missing.
        let out = render(
            "t",
            "{% if A is defined %}{{ A }}{% endif %}{{ B|default('b') }}{{ C }}",
            "o.txt",
            &vars(json!({"C": "c"})),
            None,
        )
        .unwrap();
        assert_eq!(out, "bc");
    }

    #[test]
    fn rel_filter_and_syntax_errors() {
        let out = render(
            "t",
            "{{ P|rel }} {{ P|basename }}",
            "dist/index.html",
            &vars(json!({"P": "dist/img/logo-16.png"})),
            None,
        )
        .unwrap();
        assert_eq!(out, "img/logo-16.png logo-16.png");
        let err = render("t", "{% if %}", "o.txt", &Map::new(), None).unwrap_err();
        assert!(err.message.contains("syntax"), "{}", err.message);
    }

    #[test]
    fn builtin_templates_compile_and_inputs_are_checked() {
        for (name, src) in BUILTIN_TEMPLATES {
            let env = Environment::new();
            assert!(env.template_from_str(src).is_ok(), "{name}");
        }
        let t = TemplateTool;
        let ok = vars(json!({"template": "builtin:logo-showcase", "output": "dist/i.html"}));
        assert!(t.check_inputs(&ok).is_empty());
        let bad = vars(json!({"template": "builtin:nope", "output": "/abs", "vars": 3}));
        let msgs: Vec<String> = t
            .check_inputs(&bad)
            .into_iter()
            .map(|i| i.message)
            .collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
    }
}
