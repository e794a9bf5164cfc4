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
    placeholders(template).into_iter().map(|(p, _)| p).collect()
}

/// Each `{{ name }}` in the template with the byte offset of its `{{`, in order.
pub fn placeholders(template: &str) -> Vec<(String, usize)> {
    spans(template, is_path)
}

/// Each `{{ text }}` whose trimmed inner text `accept` takes, with the byte
/// offset of its `{{`, in order: the one `{{ }}` scanner, for other binding
/// grammars than prompt names (A2UI's `{{details.items[0]}}`). A `{{` whose
/// text up to the next `}}` holds another `{{` is passed over (the inner one
/// is the candidate), in linear time.
pub fn spans(template: &str, accept: impl Fn(&str) -> bool) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    scan_with(template, &accept, |path, at| {
        out.push((path.to_string(), at));
        Ok(String::new())
    })
    .ok();
    out
}

/// Replaces each placeholder by what `f` returns for it. Linear in the
/// template's length whatever it holds: the next `}}` is found once and
/// reused by every `{{` before it, and a `{{` whose text up to that `}}`
/// holds another `{{` is passed over without looking at that text again.
fn scan(
    template: &str,
    f: impl FnMut(&str, usize) -> Result<String, String>,
) -> Result<String, String> {
    scan_with(template, &is_path, f)
}

fn scan_with(
    template: &str,
    accept: &dyn Fn(&str) -> bool,
    mut f: impl FnMut(&str, usize) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    // Everything before `done` is in `out`.
    let mut done = 0;
    let mut next_open = template.find("{{");
    let mut close: Option<usize> = None;
    while let Some(start) = next_open {
        let inner = start + 2;
        if close.is_none_or(|c| c < inner) {
            close = template[inner..].find("}}").map(|e| inner + e);
        }
        // No `}}` after this point: nothing left can be a placeholder.
        let Some(end) = close else { break };
        let following = template[inner..].find("{{").map(|n| inner + n);
        let is_placeholder =
            following.is_none_or(|n| n >= end) && accept(template[inner..end].trim());
        if is_placeholder {
            out.push_str(&template[done..start]);
            out.push_str(&f(template[inner..end].trim(), start)?);
            done = end + 2;
        }
        // After a placeholder, the next `{{` starts after its `}}` (at `end + 2` at the earliest).
        next_open = following;
    }
    out.push_str(&template[done..]);
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
    scan(template, |path, _| {
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
    fn one_scanner_serves_other_binding_grammars() {
        let a2ui = |inner: &str| !inner.is_empty() && !inner.contains(['{', '}']);
        let found = spans("{{ details.items[0] }} and {{ {{inner}} {{ }} {{x", a2ui);
        assert_eq!(
            found,
            [
                ("details.items[0]".to_string(), 0),
                ("inner".to_string(), 30)
            ]
        );
        // Prompt names do not take A2UI's indexes.
        assert!(placeholders("{{ details.items[0] }}").is_empty());
    }

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

    #[test]
    fn braces_that_are_not_placeholders_stay_as_written() {
        let ctx = json!({"a": "A", "b": "B"});
        for (t, want) in [
            ("{{{{a}}", "{{A"),
            ("{{{a}}", "{{{a}}"),
            ("{{ {{ a }}", "{{ A"),
            ("{{a}}{{b}}", "AB"),
            ("{{ x y }} {{a}}", "{{ x y }} A"),
            ("}} {{a", "}} {{a"),
            ("{{", "{{"),
            ("", ""),
            ("é{{a}}ü", "éAü"),
        ] {
            assert_eq!(render(t, &ctx).unwrap(), want, "template {t:?}");
        }
        assert_eq!(
            placeholders("x {{a}} {{ b }}"),
            vec![("a".into(), 2), ("b".into(), 8)]
        );
    }

    /// Large texts of braces that are not placeholders come back as
    /// written, and the placeholders among them are all found (at 480 KB
    /// this once took tens of seconds; `bench/prompt_scan.sh` measures it).
    #[test]
    fn large_texts_of_stray_braces_render_as_written() {
        let ctx = json!({"a": "A"});
        for unit in ["x {{ ", "{{ b ", "{{", "}} {{ ", "{{ {{ {{ "] {
            let text = unit.repeat(400_000 / unit.len());
            assert_eq!(render(&text, &ctx).unwrap(), text, "{unit:?}");
        }
        let text = "{{ {{ a }}".repeat(40_000);
        assert_eq!(placeholders(&text).len(), 40_000);
        assert_eq!(render(&text, &ctx).unwrap(), "{{ A".repeat(40_000));
    }
}
