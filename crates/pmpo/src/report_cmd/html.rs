//! The report's HTML: escaping, the page around the sections, and JSON
//! evidence shown as key/value lists. Every string that comes from a file
//! goes through [`esc`]; nothing is fetched (no external stylesheet, font,
//! script or image).

use std::fmt::Write as _;

use serde_json::Value;

use super::images::{Embedded, Gallery};

/// The longest text shown whole (a console line, a log excerpt, a message);
/// longer ones are cut with a note of how much was left out.
pub const MAX_TEXT: usize = 2_000;
/// How many items of a list (evidence arrays, console messages) are shown.
pub const MAX_ITEMS: usize = 50;

/// Escapes text for HTML content and attribute values; control characters
/// (other than newline and tab), which would not show, become U+FFFD.
pub fn esc(s: &str) -> String {
    let shown: String = s
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    pmpo_tools::template::escape_html(&shown)
}

/// Escaped text cut at `max` characters, with a note of what was cut.
pub fn esc_cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => esc(s),
        Some((at, _)) => format!(
            "{}<span class=\"cut\">… ({} more characters not shown)</span>",
            esc(&s[..at]),
            s.len() - at
        ),
    }
}

/// A status word as a coloured badge (the word is what it says; the colour
/// only helps).
pub fn badge(status: &str) -> String {
    let kind = match status.to_ascii_lowercase().as_str() {
        "completed" | "cached" | "satisfied" | "passed" | "success" | "ok" | "converged"
        | "terminate" | "checked" | "created" => "ok",
        "failed" | "timeout" | "violated" | "error" | "critical" | "serious" | "cancelled"
        | "deleted" | "interrupted" => "bad",
        "skipped"
        | "not_checked"
        | "warning"
        | "moderate"
        | "continue"
        | "pending"
        | "awaiting_decision"
        | "modified"
        | "max_iterations_exceeded" => "warn",
        _ => "info",
    };
    format!("<span class=\"b {kind}\">{}</span>", esc(status))
}

/// A JSON value as readable HTML: objects as key/value lists, arrays as
/// lists (long ones cut), scalars as text.
pub fn value(out: &mut String, v: &Value, depth: usize) {
    match v {
        Value::Null => out.push_str("<span class=\"dim\">none</span>"),
        Value::String(s) => out.push_str(&esc_cut(s, MAX_TEXT)),
        Value::Bool(_) | Value::Number(_) => out.push_str(&esc(&v.to_string())),
        _ if depth >= 6 => out.push_str(&esc_cut(&v.to_string(), MAX_TEXT)),
        Value::Array(items) if items.is_empty() => {
            out.push_str("<span class=\"dim\">(none)</span>")
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let shown: Vec<String> = items
                .iter()
                .take(MAX_ITEMS)
                .map(|i| match i {
                    Value::String(s) => format!("<code>{}</code>", esc_cut(s, 300)),
                    other => esc(&other.to_string()),
                })
                .collect();
            out.push_str(&shown.join(", "));
            more(out, items.len());
        }
        Value::Array(items) => {
            out.push_str("<ol class=\"kv-list\">");
            for i in items.iter().take(MAX_ITEMS) {
                out.push_str("<li>");
                value(out, i, depth + 1);
                out.push_str("</li>");
            }
            out.push_str("</ol>");
            more(out, items.len());
        }
        Value::Object(map) if map.is_empty() => out.push_str("<span class=\"dim\">(empty)</span>"),
        Value::Object(map) => {
            out.push_str("<dl class=\"kv\">");
            for (k, v) in map.iter().take(MAX_ITEMS) {
                let _ = write!(out, "<dt>{}</dt><dd>", esc(k));
                value(out, v, depth + 1);
                out.push_str("</dd>");
            }
            out.push_str("</dl>");
            more(out, map.len());
        }
    }
}

fn more(out: &mut String, len: usize) {
    if len > MAX_ITEMS {
        let _ = write!(
            out,
            "<div class=\"cut\">… and {} more not shown</div>",
            len - MAX_ITEMS
        );
    }
}

/// A figure for a screenshot file: the picture (embedded once), its caption
/// and a note when it was scaled or could not be read.
pub fn figure(out: &mut String, g: &mut Gallery, bytes: Option<&[u8]>, caption: &str) {
    let _ = write!(out, "<figure>");
    picture(out, g, bytes, caption);
    let _ = write!(out, "<figcaption>{}</figcaption></figure>", esc(caption));
}

/// The picture alone (see [`figure`]).
pub fn picture(out: &mut String, g: &mut Gallery, bytes: Option<&[u8]>, alt: &str) {
    match bytes.map(|b| g.embed(b)) {
        None => out.push_str("<div class=\"noimg\">no screenshot on disk</div>"),
        Some(e) => embedded(out, e, alt),
    }
}

/// Writes what [`Gallery`] gave for a picture. A picture is an SVG
/// `<image>` the first time and a `<use>` of it after: shown as often as
/// needed (an iteration beside the next) with its bytes in the file once.
pub fn embedded(out: &mut String, e: Embedded, alt: &str) {
    match e {
        Embedded::New {
            uri,
            id,
            width,
            height,
            note,
        } => {
            let _ = write!(
                out,
                "<svg class=\"pic\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" role=\"img\" aria-label=\"{}\"><image id=\"{id}\" width=\"{width}\" height=\"{height}\" href=\"{uri}\"/></svg>",
                esc(alt)
            );
            if let Some(n) = note {
                let _ = write!(out, "<div class=\"dim\">{}</div>", esc(&n));
            }
        }
        Embedded::Again { id, width, height } => {
            let _ = write!(
                out,
                "<svg class=\"pic\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" role=\"img\" aria-label=\"{}\"><use href=\"#{id}\"/></svg>",
                esc(alt)
            );
        }
        Embedded::Unreadable(why) => {
            let _ = write!(
                out,
                "<div class=\"noimg\">the picture could not be shown: {}</div>",
                esc(&why)
            );
        }
    }
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1c2430;background:#f6f7f9}
header.top{background:#1c2430;color:#fff;padding:16px 20px}
header.top h1{margin:0 0 4px;font-size:22px;word-break:break-word}
header.top p{margin:0;color:#c9d1dc}
main{max-width:1240px;margin:0 auto;padding:12px 16px 40px}
section{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:12px 16px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px}
h3{font-size:16px;margin:14px 0 6px;word-break:break-word}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{border-bottom:1px solid #e5e8ec;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;position:sticky;top:0}
td.num,th.num{text-align:right;white-space:nowrap}
code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:break-word}
.b{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;white-space:nowrap}
.ok{background:#dcf5e3;color:#14532d}.bad{background:#fde0e0;color:#8a1010}
.warn{background:#fff1cc;color:#6b4a00}.info{background:#e3ecfa;color:#1e3a6e}
.dim{color:#5b6675;font-size:13px}.cut{color:#8a5a00;font-size:13px}
.summary{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}
.summary div{background:#f0f2f5;border-radius:6px;padding:6px 10px}
.bar{position:relative;height:10px;min-width:120px;background:#eef0f3;border-radius:3px}
.bar span{position:absolute;top:0;height:10px;border-radius:3px;background:#5b8def;min-width:2px}
.bar span.bad{background:#d64545}.bar span.warn{background:#d9a400}.bar span.ok{background:#3a9a5b}
figure{margin:8px 0;display:inline-block;vertical-align:top;max-width:100%}
svg.pic{display:block;max-width:100%;height:auto;border:1px solid #dde2e8;background:#fff}
figcaption{font-size:13px;color:#5b6675;word-break:break-word}
.noimg{padding:14px;border:1px dashed #b8c0cc;color:#5b6675;font-size:13px;background:#fafbfc}
.shots{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:12px;align-items:start}
dl.kv{margin:0;display:grid;grid-template-columns:minmax(90px,max-content) 1fr;gap:2px 10px}
dl.kv dt{font-weight:600;color:#3b4654;word-break:break-word}dl.kv dd{margin:0;word-break:break-word}
ol.kv-list{margin:0;padding-left:20px}
ul.msgs{margin:4px 0;padding-left:20px}ul.msgs li{word-break:break-word}
details>summary{cursor:pointer;color:#1e3a6e}
nav.toc a{margin-right:12px}
@media (max-width:640px){body{font-size:14px}main{padding:8px}section{padding:10px;border-radius:6px}
header.top h1{font-size:18px}dl.kv{grid-template-columns:1fr}th,td{padding:5px 6px}}
"#;

/// The whole page around the sections.
pub fn page(title: &str, subtitle: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n\
<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
<header class=\"top\"><h1>{}</h1><p>{}</p></header>\n<main>\n{body}</main>\n</body>\n</html>\n",
        esc(title),
        esc(title),
        esc(subtitle)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_strings_is_escaped_and_long_text_cut() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        let long = "a".repeat(MAX_TEXT + 10);
        assert!(esc_cut(&long, MAX_TEXT).contains("10 more characters not shown"));
        let mut out = String::new();
        value(
            &mut out,
            &serde_json::json!({"<k>": ["<b>", 1], "n": {"x": null}}),
            0,
        );
        assert!(out.contains("&lt;k&gt;") && out.contains("&lt;b&gt;"));
        assert!(!out.contains("<b>"));
    }
}
