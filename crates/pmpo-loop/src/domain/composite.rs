//! `meta:composite`: each component built by its own adapter, under its own
//! `dist/` folder and id prefix.

use crate::content_type;

use super::{AdapterError, AdapterInput, Builder, Scope, adapter};

pub(super) fn composite(b: &mut Builder, input: &AdapterInput<'_>) -> Result<(), AdapterError> {
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
