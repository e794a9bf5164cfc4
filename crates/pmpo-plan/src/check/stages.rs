//! Each stage on its own: its tool and that tool's inputs and templates, its
//! recovery settings, its dependencies, input files and outputs.

use serde_json::{Map, Value};

use super::refs::{Writers, template_file};
use super::{Checker, InputIssue, TemplateReport, stage_path, validate_output_pattern};
use crate::diag::did_you_mean;
use crate::node::PathSeg;
use crate::reference::Seg;

impl Checker<'_> {
    /// The stage's tool exists, agrees with `requires_execution`, and accepts
    /// the stage's inputs and templates.
    pub(super) fn stage_tool(&mut self, i: usize) {
        let stage = &self.stages[i];
        let at = stage_path(i);
        let tool_at = [at[0], at[1], at[2], PathSeg::Key("tool")];
        let Some(canonical) = self.tools.resolve(stage.tool_name()) else {
            let mut names = self.tools.names();
            names.sort_unstable();
            let mut help = format!("known tools: {}", names.join(", "));
            if let Some(s) = did_you_mean(stage.tool_name(), names.iter().copied()) {
                help = format!("did you mean `{s}`? {help}");
            }
            let message = format!(
                "stage `{}` uses unknown tool `{}`",
                stage.id,
                stage.tool_name()
            );
            self.error(&tool_at, message, help);
            return;
        };
        let ai = self.tools.is_ai(canonical);
        if stage.requires_execution == Some(false) && !ai {
            self.error(
                &tool_at,
                format!("stage `{}` says `requires_execution: false` (AI-only) but uses tool `{canonical}`, which executes", stage.id),
                "set `requires_execution: true`, or use the `ai` tool for an AI-only stage",
            );
        } else if stage.requires_execution == Some(true) && ai && stage.tool.is_some() {
            self.error(
                &tool_at,
                format!("stage `{}` says `requires_execution: true` but uses the AI-only tool `{canonical}`", stage.id),
                "set `requires_execution: false` for AI-only stages",
            );
        }
        let with = [at[0], at[1], at[2], PathSeg::Key("with")];
        let prefix = format!("stage `{}`", stage.id);
        let inputs = self.tools.check_inputs(canonical, &stage.inputs);
        self.input_issues(&with, &prefix, inputs.into_iter().map(|e| (e, false)));
        let report = self.templates(i, canonical, &stage.inputs);
        self.template_issues(&with, &prefix, report);
    }

    /// `retry`, `fallback` (its tool, inputs and templates) and `correct`.
    pub(super) fn stage_recovery(&mut self, i: usize) {
        let stage = &self.stages[i];
        let at = stage_path(i);
        if let Some(retry) = &stage.retry
            && !(1..=100).contains(&retry.attempts)
        {
            let attempts_at = [
                at[0],
                at[1],
                at[2],
                PathSeg::Key("retry"),
                PathSeg::Key("attempts"),
            ];
            self.error(
                &attempts_at,
                format!(
                    "stage `{}`: retry.attempts is {}; it must be 1 to 100",
                    stage.id, retry.attempts
                ),
                "attempts counts the first try: `attempts: 3` tries up to three times",
            );
        }
        if let Some(fb) = &stage.fallback {
            let fb_at = [at[0], at[1], at[2], PathSeg::Key("fallback")];
            match self.tools.resolve(&fb.tool) {
                None => self.error(
                    &[fb_at[0], fb_at[1], fb_at[2], fb_at[3], PathSeg::Key("tool")],
                    format!(
                        "stage `{}`: fallback uses unknown tool `{}`",
                        stage.id, fb.tool
                    ),
                    format!("known tools: {}", self.tools.names().join(", ")),
                ),
                Some(canonical) => {
                    let with = [fb_at[0], fb_at[1], fb_at[2], fb_at[3], PathSeg::Key("with")];
                    let prefix = format!("stage `{}` fallback", stage.id);
                    let inputs = self.tools.check_inputs(canonical, &fb.inputs);
                    self.input_issues(&with, &prefix, inputs.into_iter().map(|e| (e, false)));
                    let report = self.templates(i, canonical, &fb.inputs);
                    self.template_issues(&with, &prefix, report);
                }
            }
        }
        if stage.correct
            && !(self.tools.resolve(stage.tool_name()) == Some("run")
                && stage.inputs.contains_key("code"))
        {
            self.error(
                &[at[0], at[1], at[2], PathSeg::Key("correct")],
                format!("stage `{}`: `correct: true` needs a `run` stage with `language` + `code` (the code is what gets corrected)", stage.id),
                "remove `correct`, or give the stage `code`",
            );
        }
    }

    /// `depends_on` names other stages of the plan; `inputs` and `outputs`
    /// are patterns inside the workspace.
    pub(super) fn stage_paths(&mut self, i: usize) {
        let stage = &self.stages[i];
        let at = stage_path(i);
        for (j, dep) in stage.depends_on.iter().enumerate() {
            let dep_at = [
                at[0],
                at[1],
                at[2],
                PathSeg::Key("depends_on"),
                PathSeg::Index(j),
            ];
            if dep == &stage.id {
                self.error(
                    &dep_at,
                    format!("stage `{}` depends on itself", stage.id),
                    "remove it from `depends_on`",
                );
            } else if !self.index.contains_key(dep.as_str()) {
                let help = match did_you_mean(dep, self.known_ids()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "name a stage defined in `plan.stages`".to_string(),
                };
                self.error(
                    &dep_at,
                    format!(
                        "stage `{}` depends on `{dep}`, which is not a stage of this plan",
                        stage.id
                    ),
                    help,
                );
            }
        }
        for (j, input) in stage.input_files.iter().enumerate() {
            if let Err(msg) = validate_output_pattern(input) {
                self.error(
                    &[
                        at[0],
                        at[1],
                        at[2],
                        PathSeg::Key("inputs"),
                        PathSeg::Index(j),
                    ],
                    format!("stage `{}`: input `{input}` {msg}", stage.id),
                    "inputs are paths or globs relative to the workspace",
                );
            }
        }
        for (j, out) in stage.outputs.iter().enumerate() {
            if let Err(msg) = validate_output_pattern(out) {
                self.error(
                    &[at[0], at[1], at[2], PathSeg::Key("outputs"), PathSeg::Index(j)],
                    format!("stage `{}`: output `{out}` {msg}", stage.id),
                    "outputs are paths or globs relative to the workspace, such as `dist/logo.svg` or `dist/*.png`",
                );
            }
        }
    }

    /// The template report of stage `i`'s tool over `inputs`: files the
    /// templates name are found through the plan's writers or read.
    fn templates(
        &mut self,
        i: usize,
        canonical: &str,
        inputs: &Map<String, Value>,
    ) -> TemplateReport {
        let (plan, stages) = (self.plan, self.stages);
        let writers = &mut self.writers;
        self.tools.check_templates(canonical, inputs, &mut |p| {
            let w = writers.get_or_insert_with(|| Writers::new(stages));
            template_file(plan, stages, w, i, p)
        })
    }

    fn template_issues(&mut self, with: &[PathSeg<'_>], prefix: &str, report: TemplateReport) {
        let issues = report
            .errors
            .into_iter()
            .map(|e| (e, false))
            .chain(report.notes.into_iter().map(|n| (n, true)));
        self.input_issues(with, prefix, issues);
    }

    /// Input issues (and notes, when the flag is set) under a `with:` block,
    /// each at its key.
    fn input_issues(
        &mut self,
        with: &[PathSeg<'_>],
        prefix: &str,
        issues: impl Iterator<Item = (InputIssue, bool)>,
    ) {
        for (issue, note) in issues {
            let mut path: Vec<PathSeg<'_>> = with.to_vec();
            path.extend(issue.key.iter().map(Seg::as_path_seg));
            let mut d = self
                .plan
                .diag_at(&path, format!("{prefix}: {}", issue.message));
            if let Some(h) = issue.help {
                d = d.with_help(h);
            }
            if note {
                self.notes.push(d)
            } else {
                self.diags.push(d)
            }
        }
    }
}
