//! Static checks of the validation checks a plan names: a stage's `validate:`
//! items and the `validation_plan` entries. The checks themselves live in
//! another crate; this one knows them only through [`CheckCatalog`].

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::LoadedPlan;
use crate::check::InputIssue;
use crate::diag::{Diagnostic, did_you_mean};
use crate::node::PathSeg;
use crate::reference::Seg;

/// What the plan checker needs to know about the validation checks of this build.
pub trait CheckCatalog {
    /// The canonical name of a check, given its name or an alias (`file-exists`).
    fn resolve(&self, name: &str) -> Option<&'static str>;
    /// Every canonical check name, for "known checks are ..." messages.
    fn names(&self) -> Vec<&'static str>;
    /// Checks a check's `with:` parameters.
    fn check_params(&self, canonical: &str, params: &Map<String, Value>) -> Vec<InputIssue>;
}

/// Checks every `validate:` item and every executed `validation_plan` entry.
pub fn check_validations(plan: &LoadedPlan, catalog: &dyn CheckCatalog) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let constraint_ids: HashSet<&str> = plan
        .doc
        .specification
        .constraints
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    let mut names = catalog.names();
    names.sort_unstable();

    for (i, stage) in plan.doc.plan.stages.iter().enumerate() {
        for (j, item) in stage.validate.iter().enumerate() {
            let at = [
                PathSeg::Key("plan"),
                PathSeg::Key("stages"),
                PathSeg::Index(i),
                PathSeg::Key("validate"),
                PathSeg::Index(j),
            ];
            let what = format!("stage `{}`: validate[{j}]", stage.id);
            check_one(
                plan,
                catalog,
                &names,
                &at,
                "check",
                &item.check,
                &item.inputs,
                &what,
                &mut diags,
            );
            if let Some(cid) = &item.constraint_id
                && !constraint_ids.contains(cid.as_str())
            {
                let mut p = at.to_vec();
                p.push(PathSeg::Key("constraint_id"));
                let help = match did_you_mean(cid, constraint_ids.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "name a constraint of `specification.constraints`, or remove `constraint_id`".into(),
                };
                diags.push(
                    plan.diag_at(
                        &p,
                        format!(
                            "{what} names constraint `{cid}`, which the specification does not define"
                        ),
                    )
                    .with_help(help),
                );
            }
        }
    }

    for (i, item) in plan.doc.plan.validation_plan.iter().enumerate() {
        // An entry that is not executed is judged by the Reflect phase; its method is free text.
        if !item.execution_required {
            continue;
        }
        let at = [
            PathSeg::Key("plan"),
            PathSeg::Key("validation_plan"),
            PathSeg::Index(i),
        ];
        let what = format!("validation_plan[{i}] (`{}`)", item.constraint_id);
        check_one(
            plan,
            catalog,
            &names,
            &at,
            "validation_method",
            &item.validation_method,
            &item.inputs,
            &what,
            &mut diags,
        );
    }
    diags
}

#[allow(clippy::too_many_arguments)]
fn check_one(
    plan: &LoadedPlan,
    catalog: &dyn CheckCatalog,
    names: &[&'static str],
    at: &[PathSeg<'_>],
    name_key: &'static str,
    name: &str,
    params: &Map<String, Value>,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let mut name_at = at.to_vec();
    name_at.push(PathSeg::Key(name_key));
    match catalog.resolve(name) {
        None => {
            let mut help = format!("known checks: {}", names.join(", "));
            if let Some(s) = did_you_mean(name, names.iter().copied()) {
                help = format!("did you mean `{s}`? {help}");
            }
            diags.push(
                plan.diag_at(&name_at, format!("{what} uses unknown check `{name}`"))
                    .with_help(help),
            );
        }
        Some(canonical) => {
            for issue in catalog.check_params(canonical, params) {
                let mut p = at.to_vec();
                p.push(PathSeg::Key("with"));
                p.extend(issue.key.iter().map(Seg::as_path_seg));
                let mut d = plan.diag_at(
                    &p,
                    format!("{what}: check `{canonical}`: {}", issue.message),
                );
                if let Some(h) = issue.help {
                    d = d.with_help(h);
                }
                diags.push(d);
            }
        }
    }
}
