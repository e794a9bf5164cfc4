//! Prompt templates: `{{ name }}` and `{{ name.field.0 }}` are replaced by
//! values from a context object. Text between braces that is not a name
//! (`{{"a": 1}}` in a JSON example) stays as written; an unknown name is an
//! error that names it.

use serde_json::Value;

fn is_path(s: &str) -> bool {
    let mut parts = s.split('.');
    let first_ok = parts.next().is_some_and(|p| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    first_ok
        && parts.all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// Each `{{ name }}` in the template, in order: (the whole path, its first part).
pub fn variables(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    scan(template, |path| {
        out.push(path.to_string());
        Ok(String::new())
    })
    .ok();
    out
}

fn scan(
    template: &str,
    mut f: impl FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) if is_path(after[..end].trim()) => {
                out.push_str(&f(after[..end].trim())?);
                rest = &after[end + 2..];
            }
            _ => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The text form of a value in a prompt.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            items.iter().map(to_text).collect::<Vec<_>>().join("\n")
        }
        _ => serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

/// Renders a template against `context` (a JSON object).
pub fn render(template: &str, context: &Value) -> Result<String, String> {
    scan(template, |path| {
        let mut parts = path.split('.');
        let first = parts.next().unwrap_or("");
        let mut cur = context.get(first).ok_or_else(|| {
            let known: Vec<&str> = context
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            format!(
                "the prompt uses `{{{{ {path} }}}}`, but there is no `{first}` (known: {})",
                known.join(", ")
            )
        })?;
        for key in parts {
            cur = match cur {
                Value::Object(m) => m.get(key),
                Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            }
            .ok_or_else(|| {
                format!("the prompt uses `{{{{ {path} }}}}`, but `{key}` is not there")
            })?;
        }
        Ok(to_text(cur))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_paths_and_leaves_other_braces() {
        let ctx = json!({"name": "fox", "spec": {"colors": ["red", "blue"], "n": 3}});
        assert_eq!(
            render(
                "A {{ name }} in {{spec.colors.1}} x{{ spec.n }} {{\"a\": 1}} {{ }}",
                &ctx
            )
            .unwrap(),
            "A fox in blue x3 {{\"a\": 1}} {{ }}"
        );
        assert_eq!(render("{{spec.colors}}", &ctx).unwrap(), "red\nblue");
        let err = render("{{ nope }}", &ctx).unwrap_err();
        assert!(err.contains("`nope`") && err.contains("name"), "{err}");
        assert!(render("{{ spec.x }}", &ctx).is_err());
        assert_eq!(variables("{{a}} {{ b.c }} {{1}}"), vec!["a", "b.c"]);
    }
}
