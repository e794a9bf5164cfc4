//! Pages: `preview` (the evidence a browser preview left) and `links`
//! (every relative link or source of an HTML file resolves in the workspace).

use serde_json::{Value, json};

use crate::formats::{FileVerdict, per_file};
use crate::fsx;
use crate::params::{Kind, Param, get_str, opt, req};
use crate::{CheckDef, CheckError, Verdict};

/// The `report` parameter of the checks that read a preview's report.
pub(crate) const PREVIEW_REPORT: Param = req(
    "report",
    Kind::Str,
    "the preview-report.json a `preview` stage wrote (e.g. dist/previews/card/preview-report.json)",
);

pub(crate) const PREVIEW: CheckDef = CheckDef {
    name: "preview",
    aliases: &["render_preview", "browser_render"],
    summary: "a preview report shows a rendered page: no console errors, no page errors, no failed requests, a screenshot that is not blank",
    params: &[
        PREVIEW_REPORT,
        opt(
            "expect",
            Kind::OneOf(&["pass", "fail"]),
            "`pass` (default), or `fail` for a page that is meant to show problems (the check passes when the preview found some)",
        ),
    ],
    rules: crate::no_rules,
    run: |ctx, p| {
        let report = get_str(p, "report").unwrap_or_default();
        let expect_fail = get_str(p, "expect") == Some("fail");
        // The report must be a real file of the workspace (no symlink out).
        fsx::file(ctx.ws, report)?;
        let verdict =
            pmpo_tools::preview::evaluate_preview_report(ctx.ws, report).map_err(|why| {
                CheckError::File {
                    path: report.to_string(),
                    why,
                }
            })?;
        let criteria: Vec<Value> = verdict
            .criteria
            .iter()
            .map(|c| json!({"criterion": c.name, "state": c.state, "detail": c.detail}))
            .collect();
        let failed: Vec<String> = verdict
            .criteria
            .iter()
            .filter(|c| matches!(c.state, pmpo_tools::preview::CheckState::Failed))
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        // What the driver could not observe (console, page errors and requests in
        // Chromium's --screenshot mode) is not evidence of a clean page.
        let unseen: Vec<String> = verdict
            .criteria
            .iter()
            .filter(|c| matches!(c.state, pmpo_tools::preview::CheckState::NotChecked))
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        let evidence = json!({"report": report, "expect": if expect_fail { "fail" } else { "pass" }, "criteria": criteria});
        if failed.is_empty() && !unseen.is_empty() {
            return Ok(Verdict::not_checked(
                format!(
                    "not checked: the preview could not observe {} criteria ({})",
                    unseen.len(),
                    unseen.join("; ")
                ),
                evidence,
            ));
        }
        let passed = verdict.passed != expect_fail;
        let message = match (verdict.passed, expect_fail) {
            (true, false) => "the page rendered cleanly".to_string(),
            (false, false) => format!("the preview shows problems: {}", failed.join("; ")),
            (false, true) => format!(
                "the preview shows the expected problems: {}",
                failed.join("; ")
            ),
            (true, true) => {
                "the page was expected to show problems, but it rendered cleanly".to_string()
            }
        };
        Ok(Verdict::new(passed, message, evidence))
    },
};

pub(crate) const LINKS: CheckDef = CheckDef {
    name: "links",
    aliases: &["relative_links", "links_resolve"],
    summary: "every relative href/src of the HTML file(s) names a file that exists in the workspace",
    params: &[req(
        "path",
        Kind::Paths,
        "the HTML file(s): a path or glob relative to the workspace, or a list",
    )],
    rules: crate::no_rules,
    run: |ctx, p| per_file(ctx, p, &|f| links(ctx, f)),
};

/// The `href`/`src` values of a page, with their lines, read by the preview
/// tool's attribute reader (a bare value ends at ASCII whitespace or `>`, as
/// in HTML).
fn references(html: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = ["href", "src"]
        .into_iter()
        .flat_map(|attr| pmpo_tools::preview::page::attribute_values(html, attr))
        .map(|(at, value)| (fsx::line_col(html, at).0, value.to_string()))
        .collect();
    out.sort();
    out
}

fn is_external(link: &str) -> bool {
    let l = link.trim();
    l.is_empty()
        || l.starts_with('#')
        || l.starts_with("//")
        || l.starts_with("data:")
        || l.starts_with("javascript:")
        || l.split_once(':').is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        })
}

fn links(ctx: &crate::Ctx<'_>, f: &fsx::FileRef) -> Result<FileVerdict, CheckError> {
    let html = fsx::read_text(f)?;
    let dir = f.rel.rsplit_once('/').map_or("", |(d, _)| d);
    let mut checked = 0;
    let mut broken = Vec::new();
    for (line, link) in references(&html) {
        if is_external(&link) {
            continue;
        }
        checked += 1;
        let path = link.split(['#', '?']).next().unwrap_or_default();
        if path.is_empty() {
            continue;
        }
        let target = if let Some(abs) = path.strip_prefix('/') {
            abs.to_string()
        } else if dir.is_empty() {
            path.to_string()
        } else {
            format!("{dir}/{path}")
        };
        // Resolve `..` lexically; a link may not leave the workspace.
        let mut parts: Vec<&str> = Vec::new();
        let mut escapes = false;
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => escapes |= parts.pop().is_none(),
                other => parts.push(other),
            }
        }
        let rel = parts.join("/");
        let ok = !escapes && !rel.is_empty() && fsx::lookup(ctx.ws, &rel).ok().flatten().is_some()
            || (!escapes && ctx.ws.resolve(&rel).is_ok_and(|p| p.is_dir()));
        if !ok {
            broken.push(json!({"line": line, "link": link, "resolved": rel}));
        }
    }
    let detail = json!({"links_checked": checked, "broken": broken});
    Ok(if broken.is_empty() {
        FileVerdict::ok(format!("{checked} relative link(s) resolve"), detail)
    } else {
        let first = &broken[0];
        FileVerdict::bad(
            format!(
                "{} of {checked} relative link(s) do not resolve (first: `{}` on line {})",
                broken.len(),
                first["link"].as_str().unwrap_or_default(),
                first["line"]
            ),
            detail,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_links_and_tells_external_ones() {
        let html = "<a href=\"a.html\">x</a>\n<img src='img/b.png'><a HREF=c.css>\n<a data-href=\"no\"><a href=\"https://x.org\"><a href=\"#top\">";
        let refs: Vec<String> = references(html).into_iter().map(|(_, l)| l).collect();
        assert!(
            refs.contains(&"a.html".to_string())
                && refs.contains(&"img/b.png".to_string())
                && refs.contains(&"c.css".to_string())
        );
        assert!(!refs.contains(&"no".to_string()));
        assert!(
            is_external("https://x.org")
                && is_external("#top")
                && is_external("mailto:a@b")
                && !is_external("a.html")
        );
    }
}
