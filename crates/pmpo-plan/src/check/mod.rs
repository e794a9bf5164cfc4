//! Static checks: everything that can be known wrong before a single process runs.
//!
//! One pass per concern, each a method of [`Checker`] that adds diagnostics:
//! the specification and the stage ids (here), each stage's tool, inputs,
//! recovery and paths ([`stages`]), what stages refer to across the plan
//! ([`refs`]); names and patterns ([`names`]) and the dependency graph
//! ([`graph`]) are plain functions.

mod graph;
mod names;
mod refs;
mod stages;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::LoadedPlan;
use crate::diag::Diagnostic;
use crate::node::PathSeg;
use crate::reference::Seg;

pub use graph::execution_order;
use graph::find_cycle;
use names::validate_stage_id;
pub use names::{validate_artifact_name, validate_output_pattern};
use refs::Writers;

/// Longest stage id, constraint id or artifact name accepted.
pub const MAX_ID_LEN: usize = 100;

/// What the checker needs to know about the tools of this build.
pub trait ToolCatalog {
    /// The canonical name of a tool, given its name or an alias.
    fn resolve(&self, name: &str) -> Option<&'static str>;
    /// Every canonical tool name, for "known tools are ..." messages.
    fn names(&self) -> Vec<&'static str>;
    /// Whether the tool is an AI-only transformation (`requires_execution: false`).
    fn is_ai(&self, canonical: &str) -> bool;
    /// Checks a stage's `with:` inputs for this tool.
    fn check_inputs(&self, canonical: &str, inputs: &Map<String, Value>) -> Vec<InputIssue>;
    /// The named outputs (`$stage.NAME`) a stage of this tool with these
    /// inputs gives, as far as they can be known before it runs.
    fn named_outputs(&self, _canonical: &str, _inputs: &Map<String, Value>) -> NamedOutputs {
        NamedOutputs::Open
    }
    /// Checks the templates a stage renders (`{{ name }}` variables that
    /// nothing gives). `file` finds a workspace file the template names.
    fn check_templates(
        &self,
        _canonical: &str,
        _inputs: &Map<String, Value>,
        _file: &mut dyn FnMut(&str) -> TemplateFile,
    ) -> TemplateReport {
        TemplateReport::default()
    }
}

/// What a stage may give as named outputs (`$stage.NAME`), besides the
/// fields every stage has ([`BUILTIN_FIELDS`]).
#[derive(Debug, Clone, PartialEq)]
pub enum NamedOutputs {
    /// Not declared: any name may come (`outputs_json` without a schema, a plugin).
    Open,
    /// These names and no others; what is under them is not declared.
    Fixed(Vec<&'static str>),
    /// The JSON object this schema describes: its `properties` are the names
    /// (unless `additionalProperties` allows more), checked at every level.
    Schema(Value),
}

impl NamedOutputs {
    /// For tools whose named outputs come from `outputs_json: true` (the last
    /// stdout line, or the answer, as a JSON object), described by an inline
    /// `schema` when there is one; a schema kept in a file is read at run
    /// time, so any name may come.
    pub fn of_outputs_json(inputs: &Map<String, Value>) -> NamedOutputs {
        if inputs.get("outputs_json").and_then(Value::as_bool) != Some(true) {
            return NamedOutputs::Fixed(Vec::new());
        }
        match inputs.get("schema") {
            Some(schema @ Value::Object(_)) => NamedOutputs::Schema(schema.clone()),
            _ => NamedOutputs::Open,
        }
    }
}

/// The fields every stage has, whatever its tool (see the engine's resolver).
pub const BUILTIN_FIELDS: &[&str] = &[
    "stdout",
    "stderr",
    "stdout_file",
    "stderr_file",
    "exit_code",
    "files",
    "duration_ms",
];

/// A workspace file a template names, as the checker finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateFile {
    /// Its text, read from the plan's directory (the default workspace).
    Text(String),
    /// A stage of the plan writes it (the stage id): its variables are known
    /// only once that stage ran.
    Written(String),
    /// Not readable now (the reason): checked when the stage runs.
    Unavailable(String),
}

/// The template problems of one stage: errors, and notes on what could not
/// be checked before the run.
#[derive(Debug, Clone, Default)]
pub struct TemplateReport {
    pub errors: Vec<InputIssue>,
    pub notes: Vec<InputIssue>,
}

/// Everything the static checks found: errors stop a run, notes do not.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub errors: Vec<Diagnostic>,
    pub notes: Vec<Diagnostic>,
}

/// A problem with one tool input.
#[derive(Debug, Clone)]
pub struct InputIssue {
    /// The input's key path under `with:` (empty for the `with:` block itself).
    pub key: Vec<Seg>,
    pub message: String,
    pub help: Option<String>,
}

fn stage_path(i: usize) -> [PathSeg<'static>; 3] {
    [
        PathSeg::Key("plan"),
        PathSeg::Key("stages"),
        PathSeg::Index(i),
    ]
}

/// Runs every static check; an empty result means the plan may run.
pub fn check(plan: &LoadedPlan, tools: &dyn ToolCatalog) -> Vec<Diagnostic> {
    check_report(plan, tools).errors
}

/// Runs every static check, keeping the notes too (what could not be known
/// before the run, such as the variables of a template a stage writes).
pub fn check_report(plan: &LoadedPlan, tools: &dyn ToolCatalog) -> CheckReport {
    let mut c = Checker::new(plan, tools);
    c.specification();
    c.stage_ids();
    for i in 0..c.stages.len() {
        c.stage_tool(i);
        c.stage_recovery(i);
        c.stage_paths(i);
    }
    let deps = c.dependencies();
    match find_cycle(&deps) {
        Some(cycle) => c.cycle(&cycle),
        // References only when the graph is well defined.
        None => c.references(&deps),
    }
    c.tool_invocations();
    c.validation_plan();
    c.finish()
}

/// The state of one check of a plan: what it found so far, and the indexes
/// later passes use.
struct Checker<'a> {
    plan: &'a LoadedPlan,
    tools: &'a dyn ToolCatalog,
    stages: &'a [crate::Stage],
    diags: Vec<Diagnostic>,
    notes: Vec<Diagnostic>,
    /// Each stage id and the index of its first definition.
    index: HashMap<&'a str, usize>,
    /// Each constraint id and its index.
    constraint_ids: HashMap<&'a str, usize>,
    /// Built on the first template file a stage names.
    writers: Option<Writers>,
}

impl<'a> Checker<'a> {
    fn new(plan: &'a LoadedPlan, tools: &'a dyn ToolCatalog) -> Self {
        Checker {
            plan,
            tools,
            stages: &plan.doc.plan.stages,
            diags: Vec::new(),
            notes: Vec::new(),
            index: HashMap::with_capacity(plan.doc.plan.stages.len()),
            constraint_ids: HashMap::new(),
            writers: None,
        }
    }

    fn finish(mut self) -> CheckReport {
        let at = |d: &Diagnostic| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(0));
        self.diags.sort_by_key(at);
        self.notes.sort_by_key(at);
        CheckReport {
            errors: self.diags,
            notes: self.notes,
        }
    }

    /// Adds a diagnostic at `path` with what to do.
    fn error(&mut self, path: &[PathSeg<'_>], message: impl Into<String>, help: impl Into<String>) {
        let d = self.plan.diag_at(path, message).with_help(help);
        self.diags.push(d);
    }

    /// The stage ids, for "did you mean".
    fn known_ids(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.index.keys().copied()
    }

    /// The artifact name and the constraints' ids.
    fn specification(&mut self) {
        let spec = &self.plan.doc.specification;
        if let Err(msg) = validate_artifact_name(&spec.artifact_name) {
            self.error(
                &[PathSeg::Key("specification"), PathSeg::Key("artifact_name")],
                msg,
                "use letters, digits, `-`, `_` and `.`, starting with a letter or digit",
            );
        }
        for (i, c) in spec.constraints.iter().enumerate() {
            let at = [
                PathSeg::Key("specification"),
                PathSeg::Key("constraints"),
                PathSeg::Index(i),
                PathSeg::Key("id"),
            ];
            if c.id.trim().is_empty() {
                self.error(
                    &at,
                    "constraint id is empty",
                    "give every constraint a short unique id",
                );
            } else if let Some(first) = self.constraint_ids.insert(&c.id, i) {
                self.error(
                    &at,
                    format!(
                        "duplicate constraint id `{}` (also constraints[{first}])",
                        c.id
                    ),
                    "constraint ids must be unique; rename one",
                );
            }
        }
    }

    /// Stage ids: at least one stage, each id well-formed and unique.
    fn stage_ids(&mut self) {
        if self.stages.is_empty() {
            self.error(
                &[PathSeg::Key("plan"), PathSeg::Key("stages")],
                "the plan has no stages",
                "add at least one stage under `plan.stages`",
            );
        }
        let stages = self.stages;
        for (i, stage) in stages.iter().enumerate() {
            let at = stage_path(i);
            let id_at = [at[0], at[1], at[2], PathSeg::Key("id")];
            if let Err(msg) = validate_stage_id(&stage.id) {
                self.error(
                    &id_at,
                    msg,
                    "stage ids use letters, digits, `-` and `_`, at most 100 characters",
                );
                continue;
            }
            if let Some(first) = self.index.insert(&stage.id, i) {
                let first_line = self
                    .plan
                    .root
                    .get_path(&stage_path(first))
                    .and_then(|n| n.pos)
                    .map(|p| p.line);
                let also = match first_line {
                    Some(line) => format!("first defined at line {line}"),
                    None => format!("first defined as stages[{first}]"),
                };
                self.error(
                    &id_at,
                    format!("duplicate stage id `{}` ({also})", stage.id),
                    "stage ids must be unique; rename one of them",
                );
                // Keep the first definition for the remaining checks.
                self.index.insert(&stage.id, first);
            }
        }
    }
}
