//! Static checks: everything that can be known wrong before a single process runs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use serde_json::{Map, Value};

use crate::LoadedPlan;
use crate::diag::{Diagnostic, did_you_mean};
use crate::node::PathSeg;
use crate::reference::{Seg, is_id_char, visit_references};

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
    let mut diags = Vec::new();
    let mut notes = Vec::new();
    let spec = &plan.doc.specification;
    let stages = &plan.doc.plan.stages;

    if let Err(msg) = validate_artifact_name(&spec.artifact_name) {
        diags.push(
            plan.diag_at(
                &[PathSeg::Key("specification"), PathSeg::Key("artifact_name")],
                msg,
            )
            .with_help("use letters, digits, `-`, `_` and `.`, starting with a letter or digit"),
        );
    }

    // Constraints: unique ids.
    let mut constraint_ids: HashMap<&str, usize> = HashMap::new();
    for (i, c) in spec.constraints.iter().enumerate() {
        let at = [
            PathSeg::Key("specification"),
            PathSeg::Key("constraints"),
            PathSeg::Index(i),
            PathSeg::Key("id"),
        ];
        if c.id.trim().is_empty() {
            diags.push(
                plan.diag_at(&at, "constraint id is empty")
                    .with_help("give every constraint a short unique id"),
            );
        } else if let Some(first) = constraint_ids.insert(&c.id, i) {
            diags.push(
                plan.diag_at(
                    &at,
                    format!(
                        "duplicate constraint id `{}` (also constraints[{first}])",
                        c.id
                    ),
                )
                .with_help("constraint ids must be unique; rename one"),
            );
        }
    }

    if stages.is_empty() {
        diags.push(
            plan.diag_at(
                &[PathSeg::Key("plan"), PathSeg::Key("stages")],
                "the plan has no stages",
            )
            .with_help("add at least one stage under `plan.stages`"),
        );
    }

    // Stage ids: well-formed and unique.
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(stages.len());
    for (i, stage) in stages.iter().enumerate() {
        let at = stage_path(i);
        let id_at = [at[0], at[1], at[2], PathSeg::Key("id")];
        if let Err(msg) = validate_stage_id(&stage.id) {
            diags.push(
                plan.diag_at(&id_at, msg).with_help(
                    "stage ids use letters, digits, `-` and `_`, at most 100 characters",
                ),
            );
            continue;
        }
        if let Some(first) = index.insert(&stage.id, i) {
            let first_line = plan
                .root
                .get_path(&stage_path(first))
                .and_then(|n| n.pos)
                .map(|p| p.line);
            let also = match first_line {
                Some(line) => format!("first defined at line {line}"),
                None => format!("first defined as stages[{first}]"),
            };
            diags.push(
                plan.diag_at(
                    &id_at,
                    format!("duplicate stage id `{}` ({also})", stage.id),
                )
                .with_help("stage ids must be unique; rename one of them"),
            );
            // Keep the first definition for the remaining checks.
            index.insert(&stage.id, first);
        }
    }

    // Tools, inputs, dependencies, outputs, timeouts.
    let mut writers: Option<Writers> = None;
    let known_ids = || index.keys().copied();
    for (i, stage) in stages.iter().enumerate() {
        let at = stage_path(i);
        let tool_at = [at[0], at[1], at[2], PathSeg::Key("tool")];
        match tools.resolve(stage.tool_name()) {
            None => {
                let mut names = tools.names();
                names.sort_unstable();
                let mut help = format!("known tools: {}", names.join(", "));
                if let Some(s) = did_you_mean(stage.tool_name(), names.iter().copied()) {
                    help = format!("did you mean `{s}`? {help}");
                }
                diags.push(
                    plan.diag_at(
                        &tool_at,
                        format!(
                            "stage `{}` uses unknown tool `{}`",
                            stage.id,
                            stage.tool_name()
                        ),
                    )
                    .with_help(help),
                );
            }
            Some(canonical) => {
                let ai = tools.is_ai(canonical);
                if stage.requires_execution == Some(false) && !ai {
                    diags.push(
                        plan.diag_at(
                            &tool_at,
                            format!("stage `{}` says `requires_execution: false` (AI-only) but uses tool `{canonical}`, which executes", stage.id),
                        )
                        .with_help("set `requires_execution: true`, or use the `ai` tool for an AI-only stage"),
                    );
                } else if stage.requires_execution == Some(true) && ai && stage.tool.is_some() {
                    diags.push(
                        plan.diag_at(&tool_at, format!("stage `{}` says `requires_execution: true` but uses the AI-only tool `{canonical}`", stage.id))
                            .with_help("set `requires_execution: false` for AI-only stages"),
                    );
                }
                for issue in tools.check_inputs(canonical, &stage.inputs) {
                    let mut path: Vec<PathSeg<'_>> =
                        vec![at[0], at[1], at[2], PathSeg::Key("with")];
                    path.extend(issue.key.iter().map(Seg::as_path_seg));
                    let mut d =
                        plan.diag_at(&path, format!("stage `{}`: {}", stage.id, issue.message));
                    if let Some(h) = issue.help {
                        d = d.with_help(h);
                    }
                    diags.push(d);
                }
                let report = tools.check_templates(canonical, &stage.inputs, &mut |p| {
                    let w = writers.get_or_insert_with(|| Writers::new(stages));
                    template_file(plan, stages, w, i, p)
                });
                for (issue, note) in report
                    .errors
                    .into_iter()
                    .map(|e| (e, false))
                    .chain(report.notes.into_iter().map(|n| (n, true)))
                {
                    let mut path: Vec<PathSeg<'_>> =
                        vec![at[0], at[1], at[2], PathSeg::Key("with")];
                    path.extend(issue.key.iter().map(Seg::as_path_seg));
                    let mut d =
                        plan.diag_at(&path, format!("stage `{}`: {}", stage.id, issue.message));
                    if let Some(h) = issue.help {
                        d = d.with_help(h);
                    }
                    if note { notes.push(d) } else { diags.push(d) }
                }
            }
        }

        // Recovery settings.
        if let Some(retry) = &stage.retry
            && !(1..=100).contains(&retry.attempts)
        {
            diags.push(
                plan.diag_at(
                    &[
                        at[0],
                        at[1],
                        at[2],
                        PathSeg::Key("retry"),
                        PathSeg::Key("attempts"),
                    ],
                    format!(
                        "stage `{}`: retry.attempts is {}; it must be 1 to 100",
                        stage.id, retry.attempts
                    ),
                )
                .with_help("attempts counts the first try: `attempts: 3` tries up to three times"),
            );
        }
        if let Some(fb) = &stage.fallback {
            let fb_at = [
                at[0],
                at[1],
                at[2],
                PathSeg::Key("fallback"),
                PathSeg::Key("tool"),
            ];
            match tools.resolve(&fb.tool) {
                None => diags.push(
                    plan.diag_at(
                        &fb_at,
                        format!(
                            "stage `{}`: fallback uses unknown tool `{}`",
                            stage.id, fb.tool
                        ),
                    )
                    .with_help(format!("known tools: {}", tools.names().join(", "))),
                ),
                Some(canonical) => {
                    let report = tools.check_templates(canonical, &fb.inputs, &mut |p| {
                        let w = writers.get_or_insert_with(|| Writers::new(stages));
                        template_file(plan, stages, w, i, p)
                    });
                    let issues = tools
                        .check_inputs(canonical, &fb.inputs)
                        .into_iter()
                        .chain(report.errors)
                        .map(|e| (e, false))
                        .chain(report.notes.into_iter().map(|n| (n, true)));
                    for (issue, note) in issues {
                        let mut path: Vec<PathSeg<'_>> = vec![
                            at[0],
                            at[1],
                            at[2],
                            PathSeg::Key("fallback"),
                            PathSeg::Key("with"),
                        ];
                        path.extend(issue.key.iter().map(Seg::as_path_seg));
                        let mut d = plan.diag_at(
                            &path,
                            format!("stage `{}` fallback: {}", stage.id, issue.message),
                        );
                        if let Some(h) = issue.help {
                            d = d.with_help(h);
                        }
                        if note { notes.push(d) } else { diags.push(d) }
                    }
                }
            }
        }
        if stage.correct
            && !(tools.resolve(stage.tool_name()) == Some("run")
                && stage.inputs.contains_key("code"))
        {
            diags.push(
                plan.diag_at(&[at[0], at[1], at[2], PathSeg::Key("correct")], format!("stage `{}`: `correct: true` needs a `run` stage with `language` + `code` (the code is what gets corrected)", stage.id))
                    .with_help("remove `correct`, or give the stage `code`"),
            );
        }

        for (j, dep) in stage.depends_on.iter().enumerate() {
            let dep_at = [
                at[0],
                at[1],
                at[2],
                PathSeg::Key("depends_on"),
                PathSeg::Index(j),
            ];
            if dep == &stage.id {
                diags.push(
                    plan.diag_at(&dep_at, format!("stage `{}` depends on itself", stage.id))
                        .with_help("remove it from `depends_on`"),
                );
            } else if !index.contains_key(dep.as_str()) {
                let help = match did_you_mean(dep, known_ids()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "name a stage defined in `plan.stages`".to_string(),
                };
                diags.push(
                    plan.diag_at(
                        &dep_at,
                        format!(
                            "stage `{}` depends on `{dep}`, which is not a stage of this plan",
                            stage.id
                        ),
                    )
                    .with_help(help),
                );
            }
        }

        for (j, input) in stage.input_files.iter().enumerate() {
            if let Err(msg) = validate_output_pattern(input) {
                let in_at = [
                    at[0],
                    at[1],
                    at[2],
                    PathSeg::Key("inputs"),
                    PathSeg::Index(j),
                ];
                diags.push(
                    plan.diag_at(
                        &in_at,
                        format!("stage `{}`: input `{input}` {msg}", stage.id),
                    )
                    .with_help("inputs are paths or globs relative to the workspace"),
                );
            }
        }

        for (j, out) in stage.outputs.iter().enumerate() {
            if let Err(msg) = validate_output_pattern(out) {
                let out_at = [
                    at[0],
                    at[1],
                    at[2],
                    PathSeg::Key("outputs"),
                    PathSeg::Index(j),
                ];
                diags.push(
                    plan.diag_at(&out_at, format!("stage `{}`: output `{out}` {msg}", stage.id))
                        .with_help("outputs are paths or globs relative to the workspace, such as `dist/logo.svg` or `dist/*.png`"),
                );
            }
        }
    }

    // Cycles (only when every dependency resolved, so the graph is well defined).
    let deps: Vec<Vec<usize>> = stages
        .iter()
        .map(|s| {
            s.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .filter(|&d| stages[d].id != s.id)
                .collect()
        })
        .collect();
    if let Some(cycle) = find_cycle(&deps) {
        let names: Vec<&str> = cycle.iter().map(|&i| stages[i].id.as_str()).collect();
        let first = cycle[0];
        diags.push(
            plan.diag_at(
                &[
                    PathSeg::Key("plan"),
                    PathSeg::Key("stages"),
                    PathSeg::Index(first),
                    PathSeg::Key("depends_on"),
                ],
                format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
            )
            .with_help(
                "stages cannot wait on each other; remove one `depends_on` entry of the cycle",
            ),
        );
    } else {
        // References: the named stage must be upstream (a transitive dependency)
        // and give the named field, when its tool declares what it gives.
        let mut declared: HashMap<usize, NamedOutputs> = HashMap::new();
        for (i, stage) in stages.iter().enumerate() {
            let mut found = Vec::new();
            let fallback = stage.fallback.as_ref().map(|f| &f.inputs);
            for (block, inputs) in [("with", Some(&stage.inputs)), ("fallback", fallback)] {
                for (key, value) in inputs.into_iter().flatten() {
                    visit_references(value, &mut vec![Seg::Key(key.clone())], &mut |path, r| {
                        found.push((block, path.to_vec(), r.stage.to_string(), r.field.join(".")));
                    });
                }
            }
            for (block, path, target, field) in found {
                let at = stage_path(i);
                let mut p: Vec<PathSeg<'_>> = vec![at[0], at[1], at[2], PathSeg::Key(block)];
                if block == "fallback" {
                    p.push(PathSeg::Key("with"));
                }
                p.extend(path.iter().map(Seg::as_path_seg));
                match index.get(target.as_str()) {
                    None => {
                        let help = match did_you_mean(&target, known_ids()) {
                            Some(s) => format!(
                                "did you mean `${s}.{field}`? (write `$$` for a literal `$`)"
                            ),
                            None => {
                                "name an upstream stage, or write `$$` for a literal `$`".into()
                            }
                        };
                        diags.push(plan.diag_at(&p, format!("stage `{}` refers to `${target}.{field}`, but there is no stage `{target}`", stage.id)).with_help(help));
                    }
                    Some(&t) if !is_upstream(&deps, i, t) => {
                        diags.push(
                            plan.diag_at(&p, format!("stage `{}` refers to `${target}.{field}`, but `{target}` is not upstream of `{}`", stage.id, stage.id))
                                .with_help(format!("add `{target}` to the `depends_on` of `{}`", stage.id)),
                        );
                    }
                    Some(&t) => {
                        let outputs = declared
                            .entry(t)
                            .or_insert_with(|| declared_outputs(&stages[t], tools));
                        let fields: Vec<&str> = field.split('.').collect();
                        if let Some((message, help)) = field_problem(&stages[t], outputs, &fields) {
                            diags.push(
                                plan.diag_at(
                                    &p,
                                    format!(
                                        "stage `{}` refers to `${target}.{field}`, but {message}",
                                        stage.id
                                    ),
                                )
                                .with_help(help),
                            );
                        }
                    }
                }
            }
        }
    }

    // tool_invocations must name real stages, real tools, and agree with the stage.
    for (i, inv) in plan.doc.plan.tool_invocations.iter().enumerate() {
        let at = [
            PathSeg::Key("plan"),
            PathSeg::Key("tool_invocations"),
            PathSeg::Index(i),
        ];
        match index.get(inv.stage.as_str()) {
            None => {
                let help = match did_you_mean(&inv.stage, known_ids()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "each tool invocation names the stage that makes it".into(),
                };
                diags.push(
                    plan.diag_at(
                        &[at[0], at[1], at[2], PathSeg::Key("stage")],
                        format!(
                            "tool_invocations[{i}] names stage `{}`, which does not exist",
                            inv.stage
                        ),
                    )
                    .with_help(help),
                );
            }
            Some(&s) => {
                let stage = &stages[s];
                match (tools.resolve(&inv.tool), tools.resolve(stage.tool_name())) {
                    (None, _) => diags.push(
                        plan.diag_at(&[at[0], at[1], at[2], PathSeg::Key("tool")], format!("tool_invocations[{i}] names unknown tool `{}`", inv.tool))
                            .with_help(format!("known tools: {}", tools.names().join(", "))),
                    ),
                    (Some(a), Some(b)) if a != b => diags.push(
                        plan.diag_at(&[at[0], at[1], at[2], PathSeg::Key("tool")],
                            format!("tool_invocations[{i}] says stage `{}` calls `{}`, but the stage uses `{}`", inv.stage, inv.tool, stage.tool_name()))
                            .with_help("make the invocation and the stage's `tool:` agree; the executor calls only the tools the plan names"),
                    ),
                    _ => {}
                }
            }
        }
    }

    // validation_plan entries must name constraints of the specification.
    for (i, item) in plan.doc.plan.validation_plan.iter().enumerate() {
        if !constraint_ids.contains_key(item.constraint_id.as_str()) {
            let at = [
                PathSeg::Key("plan"),
                PathSeg::Key("validation_plan"),
                PathSeg::Index(i),
                PathSeg::Key("constraint_id"),
            ];
            let help = match did_you_mean(&item.constraint_id, constraint_ids.keys().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "add the constraint to `specification.constraints`, or fix the id".into(),
            };
            diags.push(plan.diag_at(&at, format!("validation_plan[{i}] names constraint `{}`, which the specification does not define", item.constraint_id)).with_help(help));
        }
    }

    diags.sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(0)));
    notes.sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(0)));
    CheckReport {
        errors: diags,
        notes,
    }
}

/// Which stages declare an output that covers a path: built once per check,
/// on the first template file a stage names (most plans name none).
struct Writers {
    /// Exact paths and directories, normalized (no `./`, no trailing `/`).
    exact: HashMap<String, Vec<usize>>,
    globs: globset::GlobSet,
    /// The stage of each glob in `globs`.
    glob_stage: Vec<usize>,
}

impl Writers {
    fn new(stages: &[crate::Stage]) -> Writers {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut globs = globset::GlobSetBuilder::new();
        let mut glob_stage = Vec::new();
        for (j, stage) in stages.iter().enumerate() {
            for out in &stage.outputs {
                let out = normalize(out);
                if out.contains(['*', '?', '[', '{']) {
                    if let Ok(g) = globset::Glob::new(out) {
                        globs.add(g);
                        glob_stage.push(j);
                    }
                } else {
                    exact.entry(out.to_string()).or_default().push(j);
                }
            }
        }
        Writers {
            exact,
            // A set that cannot be built (it never happens for valid globs)
            // matches nothing: the template is then read, not skipped.
            globs: globs.build().unwrap_or_else(|_| globset::GlobSet::empty()),
            glob_stage,
        }
    }

    /// A stage other than `me` that declares `path` (or a directory above it).
    fn writer(&self, path: &str, me: usize) -> Option<usize> {
        let path = normalize(path);
        let mut prefix = path;
        loop {
            if let Some(&j) = self
                .exact
                .get(prefix)
                .and_then(|v| v.iter().find(|&&j| j != me))
            {
                return Some(j);
            }
            match prefix.rsplit_once('/') {
                Some((parent, _)) => prefix = parent,
                None => break,
            }
        }
        self.globs
            .matches(path)
            .into_iter()
            .map(|g| self.glob_stage[g])
            .find(|&j| j != me)
    }
}

fn normalize(path: &str) -> &str {
    path.trim_start_matches("./").trim_end_matches('/')
}

/// Finds a template file a stage names: written by a stage of the plan
/// (its content is known only at run time), or read from the plan's directory.
fn template_file(
    plan: &LoadedPlan,
    stages: &[crate::Stage],
    writers: &Writers,
    me: usize,
    path: &str,
) -> TemplateFile {
    if let Some(j) = writers.writer(path, me) {
        return TemplateFile::Written(stages[j].id.clone());
    }
    if validate_output_pattern(path).is_err() {
        return TemplateFile::Unavailable("it is not a path inside the workspace".into());
    }
    let dir = match plan.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let full = dir.join(path);
    // As the run reads it: never through a link leading out of the workspace.
    if let (Ok(real), Ok(root)) = (full.canonicalize(), dir.canonicalize())
        && !real.starts_with(&root)
    {
        return TemplateFile::Unavailable(format!(
            "`{}` leads to `{}`, outside the workspace, through a symbolic link: not read (the run refuses it)",
            full.display(),
            real.display()
        ));
    }
    match std::fs::metadata(&full) {
        Err(e) => return TemplateFile::Unavailable(format!("`{}`: {e}", full.display())),
        Ok(m) if m.len() > MAX_TEMPLATE_BYTES => {
            return TemplateFile::Unavailable(format!(
                "`{}` is {} bytes (templates over {MAX_TEMPLATE_BYTES} are not read by the check)",
                full.display(),
                m.len()
            ));
        }
        Ok(_) => {}
    }
    match std::fs::read(&full) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => TemplateFile::Text(text),
            Err(_) => TemplateFile::Unavailable(format!("`{}` is not UTF-8 text", full.display())),
        },
        Err(e) => TemplateFile::Unavailable(format!("`{}`: {e}", full.display())),
    }
}

/// Template files larger than this are left to the run.
const MAX_TEMPLATE_BYTES: u64 = 16 * 1024 * 1024;

/// What a stage gives as named outputs: its tool's declaration, widened by
/// its fallback's (either may produce the result).
fn declared_outputs(stage: &crate::Stage, tools: &dyn ToolCatalog) -> NamedOutputs {
    let of = |tool: &str, inputs: &Map<String, Value>| match tools.resolve(tool) {
        Some(canonical) => tools.named_outputs(canonical, inputs),
        None => NamedOutputs::Open,
    };
    let main = of(stage.tool_name(), &stage.inputs);
    match &stage.fallback {
        None => main,
        Some(fb) => match (main, of(&fb.tool, &fb.inputs)) {
            (NamedOutputs::Fixed(mut a), NamedOutputs::Fixed(b)) => {
                for name in b {
                    if !a.contains(&name) {
                        a.push(name);
                    }
                }
                NamedOutputs::Fixed(a)
            }
            (a, b) if a == b => a,
            _ => NamedOutputs::Open,
        },
    }
}

/// Why `$stage.FIELD...` cannot resolve, as (message, help), if the stage's
/// declaration says so.
fn field_problem(
    target: &crate::Stage,
    outputs: &NamedOutputs,
    field: &[&str],
) -> Option<(String, String)> {
    let first = *field.first()?;
    if BUILTIN_FIELDS.contains(&first) {
        return None;
    }
    let every = format!("every stage has {}", BUILTIN_FIELDS.join(", "));
    let suggest = |names: &[&str]| {
        let all = names.iter().copied().chain(BUILTIN_FIELDS.iter().copied());
        match did_you_mean(first, all) {
            Some(s) => format!("did you mean `${}.{s}`? ", target.id),
            None => String::new(),
        }
    };
    match outputs {
        NamedOutputs::Open => None,
        NamedOutputs::Fixed(names) if names.contains(&first) => None,
        NamedOutputs::Fixed(names) if names.is_empty() => Some((
            format!(
                "stage `{}` (tool `{}`) gives no named outputs",
                target.id,
                target.tool_name()
            ),
            format!(
                "{}{every}; a `run` or `ai` stage gives named outputs with `outputs_json: true`",
                suggest(&[])
            ),
        )),
        NamedOutputs::Fixed(names) => Some((
            format!(
                "stage `{}` (tool `{}`) gives no output `{first}`",
                target.id,
                target.tool_name()
            ),
            format!(
                "{}its outputs are {}; {every}",
                suggest(names),
                names.join(", ")
            ),
        )),
        NamedOutputs::Schema(schema) => {
            let mut node = schema;
            for (depth, key) in field.iter().enumerate() {
                let Some(props) = node.get("properties").and_then(Value::as_object) else {
                    // Items of a declared list, or nothing declared here.
                    match node.get("items") {
                        Some(items) if key.parse::<usize>().is_ok() => {
                            node = items;
                            continue;
                        }
                        _ => return None,
                    }
                };
                if let Some(next) = props.get(*key) {
                    node = next;
                    continue;
                }
                let open = ["allOf", "anyOf", "oneOf", "$ref"]
                    .iter()
                    .any(|k| node.get(*k).is_some())
                    || matches!(
                        node.get("additionalProperties"),
                        Some(Value::Bool(true)) | Some(Value::Object(_))
                    );
                if open {
                    return None;
                }
                let names: Vec<&str> = props.keys().map(String::as_str).collect();
                let at = if depth == 0 {
                    String::new()
                } else {
                    format!(" under `{}`", field[..depth].join("."))
                };
                let did = match did_you_mean(key, names.iter().copied()) {
                    Some(s) if depth > 0 => {
                        format!(
                            "did you mean `${}.{}.{s}`? ",
                            target.id,
                            field[..depth].join(".")
                        )
                    }
                    Some(_) => suggest(&names),
                    None if depth == 0 => suggest(&names),
                    None => String::new(),
                };
                return Some((
                    format!(
                        "the `schema` of stage `{}` declares no `{key}`{at}",
                        target.id
                    ),
                    format!(
                        "{did}it declares {}{}; add `{key}` to the schema's `properties`, or set `additionalProperties: true` there",
                        names.join(", "),
                        if depth == 0 {
                            format!("; {every}")
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
            None
        }
    }
}

fn validate_stage_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("stage id is empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "stage id is {} characters long (at most {MAX_ID_LEN})",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|&c| !is_id_char(c)) {
        return Err(format!("stage id `{}` contains {:?}", id.escape_debug(), c));
    }
    Ok(())
}

/// Artifact names become directory names, so they are held to a safe alphabet.
pub fn validate_artifact_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("artifact name is empty".into());
    }
    if name.len() > MAX_ID_LEN {
        return Err(format!(
            "artifact name is {} bytes long (at most {MAX_ID_LEN})",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "artifact name contains the control character {c:?}"
        ));
    }
    if name.contains(['/', '\\']) {
        return Err(format!("artifact name `{name}` contains a path separator"));
    }
    if name.contains("..") {
        return Err(format!("artifact name `{name}` contains `..`"));
    }
    if !name.chars().next().is_some_and(char::is_alphanumeric) {
        return Err(format!(
            "artifact name `{name}` must start with a letter or digit"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("artifact name `{name}` contains {c:?}"));
    }
    Ok(())
}

/// An output pattern must stay inside the workspace and be a valid glob.
pub fn validate_output_pattern(pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() {
        return Err("is empty".into());
    }
    if pattern.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if pattern.starts_with('/')
        || pattern.starts_with('\\')
        || pattern.as_bytes().get(1) == Some(&b':')
    {
        return Err("is an absolute path; outputs must be inside the workspace".into());
    }
    if pattern.starts_with('~') {
        return Err(
            "starts with `~`; outputs must be inside the workspace, not the home directory".into(),
        );
    }
    if pattern.split(['/', '\\']).any(|c| c == "..") {
        return Err("contains `..`; outputs must stay inside the workspace".into());
    }
    if pattern.split(['/', '\\']).all(|c| c.is_empty() || c == ".") {
        return Err("names the workspace itself; name the files or a directory inside it".into());
    }
    globset::Glob::new(pattern).map_err(|e| format!("is not a valid glob: {}", e.kind()))?;
    // pmpo's own state: a stage granted it could overwrite the ledger.
    let norm = pattern.replace('\\', "/");
    let norm = norm.trim_start_matches("./");
    let matcher = globset::GlobBuilder::new(norm)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .ok();
    // The first component as a pattern of its own (`.s*` in `.s*/db`).
    let first = norm.split('/').next().unwrap_or("");
    let first_glob = globset::Glob::new(first).map(|g| g.compile_matcher()).ok();
    for own in [".state", ".refiner", "logs"] {
        let hit = first == own
            || first_glob.as_ref().is_some_and(|m| m.is_match(own))
            || matcher
                .as_ref()
                .is_some_and(|m| m.is_match(own) || m.is_match(format!("{own}/x")));
        if hit {
            return Err(format!(
                "names or matches pmpo's own `{own}/`; outputs are files of the artifact, such as `dist/*`"
            ));
        }
    }
    Ok(())
}

/// Finds one dependency cycle, as stage indexes in dependency order.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let mut color = vec![Color::White; deps.len()];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..deps.len() {
        if color[start] != Color::White {
            continue;
        }
        stack.push((start, 0));
        color[start] = Color::Grey;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                match color[dep] {
                    Color::White => {
                        color[dep] = Color::Grey;
                        stack.push((dep, 0));
                    }
                    Color::Grey => {
                        let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        // The stack runs dependent -> dependency; show it in execution order.
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|&(n, _)| n).collect();
                        cycle.reverse();
                        return Some(cycle);
                    }
                    Color::Black => {}
                }
            } else {
                color[node] = Color::Black;
                stack.pop();
            }
        }
    }
    None
}

fn is_upstream(deps: &[Vec<usize>], from: usize, target: usize) -> bool {
    if deps[from].contains(&target) {
        return true;
    }
    let mut seen = HashSet::new();
    let mut todo: Vec<usize> = deps[from].clone();
    while let Some(n) = todo.pop() {
        if n == target {
            return true;
        }
        if seen.insert(n) {
            todo.extend(deps[n].iter().copied());
        }
    }
    false
}

/// The order stages run in: the declared order, except that a stage never
/// runs before the stages it depends on. Requires an acyclic plan.
pub fn execution_order(stages: &[crate::Stage]) -> Vec<usize> {
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut pending = vec![0usize; stages.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
    for (i, s) in stages.iter().enumerate() {
        for d in &s.depends_on {
            if let Some(&j) = index.get(d.as_str()) {
                pending[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..stages.len())
        .filter(|&i| pending[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(stages.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_patterns() {
        for ok in [
            "dist/logo.svg",
            "out/*.png",
            "./a.txt",
            "dist/**/*.html",
            "a b.txt",
        ] {
            assert!(validate_output_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "~/x",
            "C:\\x",
            ".",
            "./",
            "a[",
            "x\0y",
        ] {
            assert!(validate_output_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn artifact_names() {
        for ok in ["acme-logo", "v1.2", "logo_2", "café"] {
            assert!(validate_artifact_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "-flag",
            "a\nb",
            "a b",
            "a'b",
            "x..y",
            &"a".repeat(101),
        ] {
            assert!(validate_artifact_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writers_of_a_path_are_found_by_file_directory_and_glob() {
        let stage = |id: &str, outputs: &[&str]| -> crate::Stage {
            serde_json::from_value(serde_json::json!({"id": id, "outputs": outputs})).unwrap()
        };
        let stages = vec![
            stage("me", &["t/page.html"]),
            stage("file", &["./a/b.html"]),
            stage("dir", &["gen/"]),
            stage("glob", &["out/**/*.txt"]),
        ];
        let w = Writers::new(&stages);
        assert_eq!(w.writer("a/b.html", 0), Some(1));
        assert_eq!(w.writer("gen/x/y.j2", 0), Some(2));
        assert_eq!(w.writer("out/deep/p.txt", 0), Some(3));
        // A stage's own outputs do not make its template unknown.
        assert_eq!(w.writer("t/page.html", 0), None);
        assert_eq!(w.writer("t/page.html", 1), Some(0));
        assert_eq!(w.writer("generated.html", 0), None);
    }

    #[test]
    fn cycles_are_found_in_order() {
        // 0 depends on 2, 1 on 0, 2 on 1.
        let deps = vec![vec![2], vec![0], vec![1]];
        let cycle = find_cycle(&deps).unwrap();
        assert_eq!(cycle.len(), 3);
        assert!(find_cycle(&[vec![], vec![0], vec![0, 1]]).is_none());
    }
}
