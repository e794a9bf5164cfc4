//! Preparing a page for preview: the runtime policy (HTMX here, Alpine.js in
//! `runtimes.rs`) and a `<base>` so that the copy under
//! `dist/previews/<id>/` loads the original's relative resources.
//!
//! Policy: a page that uses HTMX attributes gets the HTMX runtime that ships
//! inside pmpo (inlined, so the preview works offline and stands alone); a
//! copy from the network is loaded only when the stage sets `network: true`.
//! A `<script src>` naming a remote HTMX is replaced by the local copy unless
//! the network is allowed. Both apply only when the stage's `runtimes:`
//! allows HTMX (it does by default); otherwise a page that needs HTMX and
//! loads none gets a `missing-runtime` finding.

use super::report::Finding;
use super::runtimes::{Runtimes, alpine_policy, tail_insert_point};

/// The vendored HTMX runtime (Zero-Clause BSD; see assets/vendor/).
pub const HTMX_JS: &str = include_str!("../../assets/vendor/htmx.min.js");
pub const HTMX_VERSION: &str = "2.0.11";
/// Where `network: true` loads HTMX from when the page names no copy itself.
pub const HTMX_NETWORK_URL: &str = "https://cdn.jsdelivr.net/npm/htmx.org@2.0.11/dist/htmx.min.js";

/// `local`, `network` or `none`, with a sentence saying what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub source: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Prepared {
    pub html: String,
    pub runtime: Runtime,
    pub uses_htmx: bool,
    /// Runtimes the page needs and does not load, or that pmpo added.
    pub findings: Vec<Finding>,
}

const HTMX_ATTRS: &[&str] = &[
    "hx-get",
    "hx-post",
    "hx-put",
    "hx-patch",
    "hx-delete",
    "hx-trigger",
    "hx-swap",
    "hx-target",
    "hx-boost",
    "hx-on",
    "hx-select",
    "hx-vals",
    "hx-include",
    "hx-push-url",
    "hx-ext",
];

/// Whether the page uses HTMX attributes (`hx-get`, `data-hx-post`, ...).
pub fn uses_htmx(html: &str) -> bool {
    let lower = html.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    HTMX_ATTRS.iter().any(|attr| {
        lower.match_indices(attr).any(|(i, _)| {
            let before = if i >= 5 && &bytes[i - 5..i] == b"data-" {
                i - 5
            } else {
                i
            };
            // Inside a tag: the last `<` before it comes after the last `>`.
            let in_tag = lower[..before]
                .rfind('<')
                .map(|lt| Some(lt) > lower[..before].rfind('>'))
                == Some(true);
            before > 0
                && in_tag
                && bytes[before - 1].is_ascii_whitespace()
                && matches!(
                    bytes.get(i + attr.len()),
                    Some(b'=' | b':' | b' ' | b'>' | b'-')
                )
        })
    })
}

/// A `<script ...>` tag whose `src` names HTMX: (start, end of the whole element, src).
fn htmx_script(html: &str) -> Option<(usize, usize, String)> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(off) = lower[from..].find("<script") {
        let start = from + off;
        let tag_end = start + lower[start..].find('>')? + 1;
        let tag = &html[start..tag_end];
        from = tag_end;
        let Some(src) = attr_value(tag, "src") else {
            continue;
        };
        if !src.to_ascii_lowercase().contains("htmx") {
            continue;
        }
        let end = match lower[tag_end..].find("</script>") {
            Some(e) => tag_end + e + "</script>".len(),
            None => tag_end,
        };
        return Some((start, end, src));
    }
    None
}

fn attr_value(tag: &str, name: &str) -> Option<String> {
    attribute_values(tag, name)
        .first()
        .map(|(_, value)| value.to_string())
}

/// Every value of the attribute `name` (lower-case) in `html`, with the byte
/// offset of the attribute's name. A whole attribute name only (after
/// whitespace, before `=`), in any case; the value quoted or bare.
pub fn attribute_values<'a>(html: &'a str, name: &str) -> Vec<(usize, &'a str)> {
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(off) = lower[from..].find(name) {
        let at = from + off;
        from = at + name.len();
        if at == 0 || !lower.as_bytes()[at - 1].is_ascii_whitespace() {
            continue;
        }
        let rest = html[from..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or_default(),
            _ => rest
                .split(|c: char| c.is_ascii_whitespace() || c == '>')
                .next()
                .unwrap_or_default(),
        };
        out.push((at, value));
    }
    out
}

pub(super) fn is_remote(src: &str) -> bool {
    let l = src.to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://") || l.starts_with("//")
}

/// Where to insert tags that must come first: right after `<head ...>`,
/// else after `<html ...>`, else at the start.
fn head_insert_point(html: &str) -> usize {
    let lower = html.to_ascii_lowercase();
    for open in ["<head", "<html"] {
        let mut from = 0;
        while let Some(off) = lower[from..].find(open) {
            let i = from + off;
            from = i + open.len();
            // `<header` is not `<head`.
            if matches!(
                lower.as_bytes().get(i + open.len()),
                Some(b'>' | b' ' | b'\t' | b'\n' | b'\r')
            ) && let Some(end) = lower[i..].find('>')
            {
                return i + end + 1;
            }
        }
    }
    // After a doctype, if any.
    if lower.trim_start().starts_with("<!doctype")
        && let Some(end) = lower.find('>')
    {
        return end + 1;
    }
    0
}

/// Applies the runtime policy (every runtime allowed) and adds `<base
/// href>` (when `base` is given and the page has none).
pub fn prepare(html: &str, network: bool, base: Option<&str>) -> Prepared {
    prepare_with(html, network, base, Runtimes::default())
}

/// [`prepare`] with the runtimes pmpo may add.
pub fn prepare_with(html: &str, network: bool, base: Option<&str>, allowed: Runtimes) -> Prepared {
    let uses = uses_htmx(html);
    let mut out = html.to_string();
    let mut findings = Vec::new();
    let mut inject = String::new();
    if let Some(base) = base
        && !out.to_ascii_lowercase().contains("<base")
    {
        inject.push_str(&format!("<base href=\"{}\">", base.replace('"', "%22")));
    }
    let mut runtime = if uses {
        htmx_policy(&mut out, &mut inject, network, allowed, &mut findings)
    } else {
        Runtime {
            source: "none",
            detail: "the page uses no HTMX attributes".into(),
        }
    };
    let alpine = alpine_policy(&mut out, network, allowed);
    if let Some(detail) = alpine.detail {
        runtime.detail = format!("{}; {detail}", runtime.detail);
        // `local` when pmpo or the page supplies a runtime locally, else `network`.
        if runtime.source != "local" && alpine.source != "none" {
            runtime.source = alpine.source;
        }
    }
    findings.extend(alpine.finding);
    if let Some(tail) = alpine.tail {
        let at = tail_insert_point(&out);
        out.insert_str(at, &tail);
    }
    if !inject.is_empty() {
        let at = head_insert_point(&out);
        out.insert_str(at, &inject);
    }
    Prepared {
        html: out,
        runtime,
        uses_htmx: uses,
        findings,
    }
}

/// The HTMX policy for a page that uses HTMX attributes.
fn htmx_policy(
    out: &mut String,
    inject: &mut String,
    network: bool,
    allowed: Runtimes,
    findings: &mut Vec<Finding>,
) -> Runtime {
    match htmx_script(out) {
        Some((_, _, src)) if !is_remote(&src) => Runtime {
            source: "local",
            detail: format!("the page's own copy of HTMX: {src}"),
        },
        Some((_, _, src)) if network => Runtime {
            source: "network",
            detail: format!("the page's own network copy of HTMX: {src} (network allowed)"),
        },
        Some((_, _, src)) if !allowed.htmx => {
            findings.push(missing_htmx(format!("the page uses HTMX attributes and loads HTMX from {src}, which is blocked because network access is off; `runtimes` leaves HTMX out, so they do nothing")));
            Runtime {
                source: "none",
                detail: format!(
                    "the page's network copy of HTMX ({src}) is blocked with network access off"
                ),
            }
        }
        Some((start, end, src)) => {
            out.replace_range(
                start..end,
                &format!("<!-- pmpo preview: network HTMX `{src}` replaced by the local copy -->"),
            );
            inject.push_str(&local_script());
            Runtime {
                source: "local",
                detail: format!(
                    "HTMX {HTMX_VERSION} shipped with pmpo, inlined; the page's network copy ({src}) was replaced because network access is off"
                ),
            }
        }
        None if !allowed.htmx => {
            findings.push(missing_htmx(
                "the page uses HTMX attributes (hx-*) but loads no HTMX runtime: they do nothing"
                    .into(),
            ));
            Runtime {
                source: "none",
                detail: "the page uses HTMX attributes and loads no HTMX; `runtimes` leaves it out"
                    .into(),
            }
        }
        None if network => {
            inject.push_str(&format!("<script src=\"{HTMX_NETWORK_URL}\"></script>"));
            findings.push(htmx_added(&format!(
                "HTMX from {HTMX_NETWORK_URL} (network: true)"
            )));
            Runtime {
                source: "network",
                detail: format!("HTMX loaded from {HTMX_NETWORK_URL} (network: true)"),
            }
        }
        None => {
            inject.push_str(&local_script());
            findings.push(htmx_added(&format!("HTMX {HTMX_VERSION}")));
            Runtime {
                source: "local",
                detail: format!("HTMX {HTMX_VERSION} shipped with pmpo, inlined into the page"),
            }
        }
    }
}

fn htmx_added(what: &str) -> Finding {
    Finding::new(
        "runtime-added",
        "info",
        format!("the page uses HTMX attributes (hx-*) but loads no HTMX runtime; pmpo added {what} for this preview"),
        Some("opened on its own, the page's hx- attributes do nothing: load HTMX in the page; `runtimes: []` previews the page exactly as written".into()),
    )
}

fn missing_htmx(message: String) -> Finding {
    Finding::new(
        "missing-runtime",
        "warning",
        message,
        Some(format!(
            "add `htmx` to the preview's `runtimes:` (pmpo ships HTMX {HTMX_VERSION}), or load HTMX in the page yourself"
        )),
    )
}

fn local_script() -> String {
    format!("<script data-pmpo-runtime=\"htmx {HTMX_VERSION} (local)\">{HTMX_JS}</script>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_are_whole_names_quoted_or_bare() {
        let html = r#"<a data-src="x" SRC='a b.js' src=c.png>srcset</a><img src = "d">"#;
        let found = attribute_values(html, "src");
        let values: Vec<&str> = found.iter().map(|(_, v)| *v).collect();
        assert_eq!(values, ["a b.js", "c.png", "d"]);
        assert_eq!(&html[found[0].0..found[0].0 + 3], "SRC");
        assert_eq!(
            attr_value("<script src=x.js>", "src").as_deref(),
            Some("x.js")
        );
        assert_eq!(attr_value("<script async>", "src"), None);
    }

    #[test]
    fn detects_htmx_attributes() {
        assert!(uses_htmx(r#"<button hx-get="/x">a</button>"#));
        assert!(uses_htmx(r#"<div data-hx-post='/y' >"#));
        assert!(uses_htmx("<div\n  hx-on:click=\"x\">"));
        assert!(!uses_htmx("<p>I wrote about hx-get in prose</p>x"));
        assert!(!uses_htmx("<div class=\"hx-getter\">"));
        // Multi-byte text right before an attribute does not upset the scan.
        assert!(uses_htmx("<p title=\"ééé\" hx-get=\"x\">"));
        assert!(!uses_htmx("ééééé hx-get"));
    }

    #[test]
    fn injects_local_runtime_after_head() {
        let p = prepare(
            "<!doctype html><html><head><title>t</title></head><body><button hx-get=\"a.html\">x</button></body></html>",
            false,
            Some("../../../pages/"),
        );
        assert_eq!(p.runtime.source, "local");
        let head = p.html.find("<head>").unwrap() + 6;
        assert!(
            p.html[head..].starts_with("<base href=\"../../../pages/\"><script data-pmpo-runtime")
        );
        assert!(p.html.contains("htmx"));
    }

    #[test]
    fn remote_runtime_is_replaced_unless_network() {
        let page = "<html><head><script src=\"https://example.invalid/htmx.min.js\"></script></head><body hx-boost=\"true\"></body></html>";
        let off = prepare(page, false, None);
        assert_eq!(off.runtime.source, "local");
        assert!(!off.html.contains("<script src=\"https://example.invalid"));
        let on = prepare(page, true, None);
        assert_eq!(on.runtime.source, "network");
        assert_eq!(on.html, page);
        let plain = prepare("<p>hi</p>", false, None);
        assert_eq!(plain.runtime.source, "none");
        assert_eq!(plain.html, "<p>hi</p>");
        let net = prepare("<div hx-get=\"x\"></div>", true, None);
        assert!(
            net.html
                .starts_with(&format!("<script src=\"{HTMX_NETWORK_URL}\">"))
        );
    }

    #[test]
    fn runtimes_without_htmx_add_nothing_and_say_so() {
        let no_htmx = Runtimes {
            htmx: false,
            alpine: true,
        };
        let page = "<html><head></head><body><button hx-get=\"a.html\">x</button></body></html>";
        for network in [false, true] {
            let p = prepare_with(page, network, None, no_htmx);
            assert_eq!((p.runtime.source, p.html.as_str()), ("none", page));
            let f = &p.findings[0];
            assert_eq!(
                (f.code.as_str(), f.severity.as_str()),
                ("missing-runtime", "warning")
            );
            assert!(f.message.contains("loads no HTMX runtime"), "{}", f.message);
        }
        let auto = prepare(page, false, None);
        assert_eq!(auto.findings[0].code, "runtime-added");
        // The page's own local copy: nothing to say.
        let own = "<script src=\"js/htmx.min.js\"></script><div hx-get=\"x\"></div>";
        assert!(prepare_with(own, false, None, no_htmx).findings.is_empty());
    }

    #[test]
    fn header_is_not_head() {
        assert_eq!(head_insert_point("<header>x</header>"), 0);
        assert_eq!(head_insert_point("<!DOCTYPE html><p>"), 15);
    }
}
