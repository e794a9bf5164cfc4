//! What stages refer to across the plan: the dependency graph's cycles,
//! `$stage.field` references, `tool_invocations` and `validation_plan`; and
//! the files templates name.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::graph::is_upstream;
use super::{
    BUILTIN_FIELDS, Checker, NamedOutputs, TemplateFile, ToolCatalog, stage_path,
    validate_output_pattern,
};
use crate::LoadedPlan;
use crate::diag::did_you_mean;
use crate::node::PathSeg;
use crate::reference::{Seg, visit_references};

impl Checker<'_> {
    /// Each stage's resolved dependencies (unknown ones and itself left out).
    pub(super) fn dependencies(&self) -> Vec<Vec<usize>> {
        self.stages
            .iter()
            .map(|s| {
                s.depends_on
                    .iter()
                    .filter_map(|d| self.index.get(d.as_str()).copied())
                    .filter(|&d| self.stages[d].id != s.id)
                    .collect()
            })
            .collect()
    }

    pub(super) fn cycle(&mut self, cycle: &[usize]) {
        let names: Vec<&str> = cycle.iter().map(|&i| self.stages[i].id.as_str()).collect();
        let at = [
            PathSeg::Key("plan"),
            PathSeg::Key("stages"),
            PathSeg::Index(cycle[0]),
            PathSeg::Key("depends_on"),
        ];
        let message = format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]);
        self.error(
            &at,
            message,
            "stages cannot wait on each other; remove one `depends_on` entry of the cycle",
        );
    }

    /// References: the named stage must be upstream (a transitive dependency)
    /// and give the named field, when its tool declares what it gives.
    pub(super) fn references(&mut self, deps: &[Vec<usize>]) {
        let mut declared: HashMap<usize, NamedOutputs> = HashMap::new();
        let stages = self.stages;
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
                let refers = format!("stage `{}` refers to `${target}.{field}`", stage.id);
                match self.index.get(target.as_str()) {
                    None => {
                        let help = match did_you_mean(&target, self.known_ids()) {
                            Some(s) => format!(
                                "did you mean `${s}.{field}`? (write `$$` for a literal `$`)"
                            ),
                            None => {
                                "name an upstream stage, or write `$$` for a literal `$`".into()
                            }
                        };
                        self.error(
                            &p,
                            format!("{refers}, but there is no stage `{target}`"),
                            help,
                        );
                    }
                    Some(&t) if !is_upstream(deps, i, t) => self.error(
                        &p,
                        format!("{refers}, but `{target}` is not upstream of `{}`", stage.id),
                        format!("add `{target}` to the `depends_on` of `{}`", stage.id),
                    ),
                    Some(&t) => {
                        let outputs = declared
                            .entry(t)
                            .or_insert_with(|| declared_outputs(&stages[t], self.tools));
                        let fields: Vec<&str> = field.split('.').collect();
                        if let Some((message, help)) = field_problem(&stages[t], outputs, &fields) {
                            self.error(&p, format!("{refers}, but {message}"), help);
                        }
                    }
                }
            }
        }
    }

    /// `tool_invocations` must name real stages, real tools, and agree with the stage.
    pub(super) fn tool_invocations(&mut self) {
        for (i, inv) in self.plan.doc.plan.tool_invocations.iter().enumerate() {
            let at = [
                PathSeg::Key("plan"),
                PathSeg::Key("tool_invocations"),
                PathSeg::Index(i),
            ];
            let Some(&s) = self.index.get(inv.stage.as_str()) else {
                let help = match did_you_mean(&inv.stage, self.known_ids()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "each tool invocation names the stage that makes it".into(),
                };
                self.error(
                    &[at[0], at[1], at[2], PathSeg::Key("stage")],
                    format!(
                        "tool_invocations[{i}] names stage `{}`, which does not exist",
                        inv.stage
                    ),
                    help,
                );
                continue;
            };
            let stage = &self.stages[s];
            let tool_at = [at[0], at[1], at[2], PathSeg::Key("tool")];
            match (self.tools.resolve(&inv.tool), self.tools.resolve(stage.tool_name())) {
                (None, _) => self.error(
                    &tool_at,
                    format!("tool_invocations[{i}] names unknown tool `{}`", inv.tool),
                    format!("known tools: {}", self.tools.names().join(", ")),
                ),
                (Some(a), Some(b)) if a != b => self.error(
                    &tool_at,
                    format!("tool_invocations[{i}] says stage `{}` calls `{}`, but the stage uses `{}`", inv.stage, inv.tool, stage.tool_name()),
                    "make the invocation and the stage's `tool:` agree; the executor calls only the tools the plan names",
                ),
                _ => {}
            }
        }
    }

    /// `validation_plan` entries must name constraints of the specification.
    pub(super) fn validation_plan(&mut self) {
        for (i, item) in self.plan.doc.plan.validation_plan.iter().enumerate() {
            if self
                .constraint_ids
                .contains_key(item.constraint_id.as_str())
            {
                continue;
            }
            let at = [
                PathSeg::Key("plan"),
                PathSeg::Key("validation_plan"),
                PathSeg::Index(i),
                PathSeg::Key("constraint_id"),
            ];
            let help = match did_you_mean(&item.constraint_id, self.constraint_ids.keys().copied())
            {
                Some(s) => format!("did you mean `{s}`?"),
                None => "add the constraint to `specification.constraints`, or fix the id".into(),
            };
            self.error(&at, format!("validation_plan[{i}] names constraint `{}`, which the specification does not define", item.constraint_id), help);
        }
    }
}

/// Which stages declare an output that covers a path: built once per check,
/// on the first template file a stage names (most plans name none).
pub(super) struct Writers {
    /// Exact paths and directories, normalized (no `./`, no trailing `/`).
    exact: HashMap<String, Vec<usize>>,
    globs: globset::GlobSet,
    /// The stage of each glob in `globs`.
    glob_stage: Vec<usize>,
}

impl Writers {
    pub(super) fn new(stages: &[crate::Stage]) -> Writers {
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
    pub(super) fn writer(&self, path: &str, me: usize) -> Option<usize> {
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
pub(super) fn template_file(
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
