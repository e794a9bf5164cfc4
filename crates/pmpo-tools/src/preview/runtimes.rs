//! Which script runtimes a preview may add to a page (the `runtimes:` input),
//! and the Alpine.js side of the policy (HTMX's is in `page.rs`).
//!
//! A page "uses Alpine" when an element carries `x-data` or `x-init` (what
//! Alpine starts from); its other directives (`x-text`, `x-show`, `@click`,
//! `:class`, ...) are only counted on elements inside such a scope, so an
//! `@` or `:` attribute elsewhere, an `@media` rule or a colon in text never
//! counts. The page "loads Alpine" when a `<script src>` names alpine, or an
//! inline script holds the runtime or imports `alpinejs`.

use super::report::Finding;

/// The vendored Alpine.js runtime (MIT; see assets/vendor/).
pub const ALPINE_JS: &str = include_str!("../../assets/vendor/alpinejs.min.js");
pub const ALPINE_VERSION: &str = "3.17.5";

/// The runtimes pmpo may add to a page that uses them and loads none itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtimes {
    pub htmx: bool,
    pub alpine: bool,
}

impl Default for Runtimes {
    /// `auto`: each runtime the page uses.
    fn default() -> Self {
        Runtimes {
            htmx: true,
            alpine: true,
        }
    }
}

/// Reads `runtimes:`: `auto` (or absent), or a list from `htmx`, `alpine`.
pub fn parse_runtimes(v: Option<&serde_json::Value>) -> Result<Runtimes, String> {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) => Ok(Runtimes::default()),
        Some(Value::String(s)) if s == "auto" => Ok(Runtimes::default()),
        Some(Value::Array(items)) => {
            let mut r = Runtimes {
                htmx: false,
                alpine: false,
            };
            for item in items {
                match item.as_str() {
                    Some("htmx") => r.htmx = true,
                    Some("alpine") => r.alpine = true,
                    _ => {
                        return Err(format!(
                            "unknown runtime {item} in `runtimes`: use `htmx`, `alpine`, a list of them (`[]` for none), or `auto`"
                        ));
                    }
                }
            }
            Ok(r)
        }
        Some(other) => Err(format!(
            "`runtimes` must be `auto` or a list from `htmx`, `alpine` (e.g. `runtimes: [alpine]`), not {other}"
        )),
    }
}

/// One start or end tag of a page.
#[derive(Debug)]
pub struct Tag<'a> {
    /// Lower-case element name.
    pub name: String,
    pub closing: bool,
    pub self_closing: bool,
    /// Byte offsets of the tag, `<` to `>` inclusive.
    pub start: usize,
    pub end: usize,
    /// Lower-case attribute names, with their values.
    pub attrs: Vec<(String, Option<&'a str>)>,
    /// The text of a `<script>`/`<style>`/`<textarea>`/`<title>`, and where its element ends.
    pub raw: Option<(&'a str, usize)>,
}

impl Tag<'_> {
    pub fn attr(&self, name: &str) -> Option<Option<&str>> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

const RAW_TEXT: &[&str] = &["script", "style", "textarea", "title"];
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];

/// The tags of `html`, in order, skipping comments, doctypes and the text
/// inside raw-text elements (a forgiving scan, not a full HTML parser).
pub fn tags(html: &str) -> Vec<Tag<'_>> {
    let b = html.as_bytes();
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        let start = i + off;
        i = start + 1;
        if html[start..].starts_with("<!--") {
            i = html[start..].find("-->").map_or(b.len(), |e| start + e + 3);
            continue;
        }
        let closing = b.get(i) == Some(&b'/');
        let name_at = if closing { i + 1 } else { i };
        if matches!(b.get(i), Some(b'!' | b'?')) {
            i = html[i..].find('>').map_or(b.len(), |e| i + e + 1);
            continue;
        }
        if !b.get(name_at).is_some_and(u8::is_ascii_alphabetic) {
            continue;
        }
        let mut j = name_at;
        while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' && b[j] != b'/' {
            j += 1;
        }
        let name = lower[name_at..j].to_string();
        let (attrs, self_closing, end) = attributes(html, j);
        i = end;
        let mut tag = Tag {
            name,
            closing,
            self_closing,
            start,
            end,
            attrs,
            raw: None,
        };
        if !closing && RAW_TEXT.contains(&tag.name.as_str()) {
            let close = format!("</{}", tag.name);
            let text_end = lower[end..].find(&close).map_or(b.len(), |e| end + e);
            let elem_end = html[text_end..]
                .find('>')
                .map_or(b.len(), |e| text_end + e + 1);
            tag.raw = Some((&html[end..text_end], elem_end));
            i = elem_end;
        }
        out.push(tag);
    }
    out
}

type Attrs<'a> = Vec<(String, Option<&'a str>)>;

/// The attributes from `at` to the end of the tag: (attributes, `/>`, the offset after `>`).
fn attributes(html: &str, mut at: usize) -> (Attrs<'_>, bool, usize) {
    let b = html.as_bytes();
    let mut attrs = Vec::new();
    loop {
        while at < b.len() && (b[at].is_ascii_whitespace() || b[at] == b'/') {
            if b[at] == b'/' && b.get(at + 1) == Some(&b'>') {
                return (attrs, true, at + 2);
            }
            at += 1;
        }
        if at >= b.len() {
            return (attrs, false, b.len());
        }
        if b[at] == b'>' {
            return (attrs, false, at + 1);
        }
        let name_start = at;
        while at < b.len() && !b[at].is_ascii_whitespace() && !matches!(b[at], b'=' | b'>') {
            if b[at] == b'/' && b.get(at + 1) == Some(&b'>') {
                break;
            }
            at += 1;
        }
        let name = html[name_start..at].to_ascii_lowercase();
        let mut k = at;
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        let mut value = None;
        if b.get(k) == Some(&b'=') {
            k += 1;
            while k < b.len() && b[k].is_ascii_whitespace() {
                k += 1;
            }
            match b.get(k) {
                Some(q @ (b'"' | b'\'')) => {
                    let v_end = html[k + 1..]
                        .find(*q as char)
                        .map_or(b.len(), |e| k + 1 + e);
                    value = Some(&html[k + 1..v_end]);
                    at = (v_end + 1).min(b.len());
                }
                _ => {
                    let v_end = html[k..]
                        .find(|c: char| c.is_ascii_whitespace() || c == '>')
                        .map_or(b.len(), |e| k + e);
                    value = Some(&html[k..v_end]);
                    at = v_end;
                }
            }
        }
        attrs.push((name, value));
    }
}

const ALPINE_DIRECTIVES: &[&str] = &[
    "x-data",
    "x-init",
    "x-show",
    "x-bind",
    "x-on",
    "x-text",
    "x-html",
    "x-model",
    "x-modelable",
    "x-for",
    "x-transition",
    "x-effect",
    "x-ignore",
    "x-ref",
    "x-cloak",
    "x-teleport",
    "x-if",
    "x-id",
];

/// The Alpine directives of a page (distinct names, modifiers cut off, in
/// order of first use), or an empty list when it has no `x-data`/`x-init`.
pub fn alpine_directives(tags: &[Tag<'_>]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut roots = false;
    // Open elements: (name, inside an Alpine scope).
    let mut open: Vec<(&str, bool)> = Vec::new();
    for tag in tags {
        if tag.closing {
            if let Some(pos) = open.iter().rposition(|(n, _)| *n == tag.name) {
                open.truncate(pos);
            }
            continue;
        }
        let root = tag.attr("x-data").is_some() || tag.attr("x-init").is_some();
        roots |= root;
        let scope = root || open.last().is_some_and(|(_, s)| *s);
        if scope {
            for (name, _) in &tag.attrs {
                let base = name.split('.').next().unwrap_or(name);
                let directive = base.split(':').next().unwrap_or(base);
                let counts = (name.len() > 1 && (name.starts_with('@') || name.starts_with(':')))
                    || ALPINE_DIRECTIVES.contains(&directive);
                if counts && !found.iter().any(|f| f == base) {
                    found.push(base.to_string());
                }
            }
        }
        if !tag.self_closing && !VOID.contains(&tag.name.as_str()) && tag.raw.is_none() {
            open.push((tag.name.as_str(), scope));
        }
    }
    if !roots {
        found.clear();
    }
    found
}

/// How the page loads Alpine itself, if it does: the `<script>` tag
/// (start, end of its element, its `src` if any).
fn own_alpine(tags: &[Tag<'_>]) -> Option<(usize, usize, Option<String>)> {
    tags.iter()
        .filter(|t| t.name == "script" && !t.closing)
        .find_map(|t| {
            let elem_end = t.raw.map_or(t.end, |(_, e)| e);
            if let Some(Some(src)) = t.attr("src") {
                return src
                    .to_ascii_lowercase()
                    .contains("alpine")
                    .then(|| (t.start, elem_end, Some(src.to_string())));
            }
            let text = t.raw.map_or("", |(text, _)| text);
            let inlined = ["window.Alpine=", "window.Alpine =", "Alpine.start("]
                .iter()
                .any(|m| text.contains(m))
                || ["\"alpinejs\"", "'alpinejs'", "/alpinejs"]
                    .iter()
                    .any(|m| text.contains(m) && text.contains("import"));
            inlined.then_some((t.start, elem_end, None))
        })
}

/// What the Alpine policy did to a page.
pub struct AlpineOutcome {
    /// Whether the page then has Alpine, and from where: `local`, `network`, or `none`.
    pub source: &'static str,
    pub detail: Option<String>,
    pub finding: Option<Finding>,
    /// A script to add at the end of `<body>`.
    pub tail: Option<String>,
}

/// Applies the Alpine runtime policy to `html` (it may replace the page's
/// own network copy when the network is off).
pub fn alpine_policy(html: &mut String, network: bool, allowed: Runtimes) -> AlpineOutcome {
    let all = tags(html);
    let directives = alpine_directives(&all);
    let mut outcome = AlpineOutcome {
        source: "none",
        detail: None,
        finding: None,
        tail: None,
    };
    if directives.is_empty() {
        return outcome;
    }
    let listed = directives
        .iter()
        .take(6)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let own = own_alpine(&all);
    match own {
        Some((_, _, None)) => {
            outcome.source = "local";
            outcome.detail = Some("Alpine.js: the page's own inline copy".into());
        }
        Some((_, _, Some(src))) if !super::page::is_remote(&src) => {
            outcome.source = "local";
            outcome.detail = Some(format!("Alpine.js: the page's own copy, {src}"));
        }
        Some((_, _, Some(src))) if network => {
            outcome.source = "network";
            outcome.detail = Some(format!(
                "Alpine.js: the page's own network copy, {src} (network allowed)"
            ));
        }
        Some((start, end, Some(src))) if allowed.alpine => {
            html.replace_range(
                start..end,
                &format!(
                    "<!-- pmpo preview: network Alpine.js `{src}` replaced by the local copy -->"
                ),
            );
            outcome.source = "local";
            outcome.tail = Some(alpine_script());
            outcome.detail = Some(format!(
                "Alpine.js {ALPINE_VERSION} shipped with pmpo, inlined; the page's network copy ({src}) was replaced because network access is off"
            ));
        }
        Some((_, _, Some(src))) => {
            outcome.detail = Some(format!(
                "Alpine.js: the page's network copy ({src}) is blocked with network access off"
            ));
            outcome.finding = Some(missing_alpine(format!(
                "the page uses Alpine.js directives ({listed}) and loads Alpine from {src}, which is blocked because network access is off; `runtimes` leaves Alpine out, so they do nothing"
            )));
        }
        None if allowed.alpine => {
            outcome.source = "local";
            outcome.tail = Some(alpine_script());
            outcome.detail = Some(format!(
                "Alpine.js {ALPINE_VERSION} shipped with pmpo, inlined at the end of <body>"
            ));
            outcome.finding = Some(Finding::new(
                "runtime-added",
                "info",
                format!("the page uses Alpine.js directives ({listed}) but loads no Alpine runtime; pmpo added Alpine.js {ALPINE_VERSION} for this preview"),
                Some("opened on its own, the page's directives do nothing: load Alpine in the page (e.g. `<script defer src=\".../alpinejs/dist/cdn.min.js\">`); `runtimes: []` previews the page exactly as written".into()),
            ));
        }
        None => {
            outcome.detail = Some("Alpine.js: none loaded".into());
            outcome.finding = Some(missing_alpine(format!(
                "the page uses Alpine.js directives ({listed}) but loads no Alpine runtime: they do nothing"
            )));
        }
    }
    outcome
}

fn missing_alpine(message: String) -> Finding {
    Finding::new(
        "missing-runtime",
        "warning",
        message,
        Some(format!(
            "add `alpine` to the preview's `runtimes:` (pmpo ships Alpine.js {ALPINE_VERSION}), or load Alpine in the page yourself"
        )),
    )
}

/// pmpo's Alpine, started once the page's own scripts (deferred and module
/// ones included) have run, and only when none of them started Alpine: a
/// page that bundles Alpine into a script pmpo cannot recognise by name is
/// not given a second copy. `window.__pmpoAlpine` says which one ran.
fn alpine_script() -> String {
    format!(
        "<script data-pmpo-runtime=\"alpine {ALPINE_VERSION} (local)\">document.addEventListener(\"DOMContentLoaded\", function () {{\nvar root = document.querySelector(\"[x-data],[x-init]\");\nif (window.Alpine || (root && root._x_dataStack)) {{ window.__pmpoAlpine = \"page\"; return; }}\nwindow.__pmpoAlpine = \"pmpo\";\n{ALPINE_JS}\n}});</script>"
    )
}

/// Where to add scripts that must run after the page's content: before the
/// last `</body>`, else at the end.
pub fn tail_insert_point(html: &str) -> usize {
    html.to_ascii_lowercase()
        .rfind("</body")
        .unwrap_or(html.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directives(html: &str) -> Vec<String> {
        alpine_directives(&tags(html))
    }

    #[test]
    fn alpine_directives_count_only_inside_a_scope() {
        let page = r#"<div x-data="{count: 0}"><button @click="count++">+</button>
            <p>Click count: <span x-text="count"></span></p><i :class="{a: count}"></i></div>"#;
        assert_eq!(directives(page), ["x-data", "@click", "x-text", ":class"]);
        // `@`/`:` attributes, CSS and text outside any x-data scope are not Alpine.
        let plain = r#"<style>@media (max-width: 600px) { a:hover { x-data: 1 } }</style>
            <p>Time: 10:30 @home x-data="no"</p><div @click="x" :title="y" x-text="z"></div>
            <script>if (a) { el.setAttribute("x-data", "{}") }</script><!-- <div x-data> -->"#;
        assert!(directives(plain).is_empty(), "{:?}", directives(plain));
        // The scope ends with its element.
        let after = r#"<section x-data><b x-show="a"></b></section><i @click="b"></i>"#;
        assert_eq!(directives(after), ["x-data", "x-show"]);
        assert_eq!(
            directives("<DIV X-Data='{}' x-on:click.prevent=\"a\" @keyup.enter=b>"),
            ["x-data", "x-on:click", "@keyup"]
        );
    }

    #[test]
    fn broken_markup_is_scanned_without_panic() {
        let nasty = [
            "<",
            "<é",
            "<a é=é>",
            "<script",
            "<script>x",
            "<a b='",
            "<!--",
            "</",
            "<a/",
            "<a /",
            "<a =x>",
            "<a b=>",
            "<p x-data='{' @click=\"a>\"b\">ü</p>",
            "<<x-data>>",
            "<a\tx-data\n/>",
            "<!doctype",
            "<?xml",
            "</div x-data>",
        ];
        for html in nasty {
            let _ = alpine_directives(&tags(html));
            let mut page = html.to_string();
            let _ = alpine_policy(&mut page, false, Runtimes::default());
        }
        assert_eq!(
            directives("<p x-data='{' @click=\"a>b\">ü</p>"),
            ["x-data", "@click"]
        );
    }

    #[test]
    fn the_policy_adds_replaces_or_reports() {
        let page = "<html><head></head><body><div x-data=\"{n: 1}\"><span x-text=\"n\"></span></div></body></html>";
        let mut html = page.to_string();
        let auto = alpine_policy(&mut html, false, Runtimes::default());
        assert_eq!(auto.source, "local");
        assert!(auto.tail.unwrap().contains("window.Alpine="));
        assert_eq!(auto.finding.unwrap().code, "runtime-added");
        let none = Runtimes {
            htmx: true,
            alpine: false,
        };
        let mut html = page.to_string();
        let off = alpine_policy(&mut html, false, none);
        assert!(off.tail.is_none());
        let f = off.finding.unwrap();
        assert_eq!(
            (f.code.as_str(), f.severity.as_str()),
            ("missing-runtime", "warning")
        );
        assert!(f.message.contains("(x-data, x-text)"), "{}", f.message);
        let remote = "<script defer src=\"https://cdn.example/alpinejs@3/dist/cdn.min.js\"></script><p x-data></p>";
        let mut html = remote.to_string();
        let replaced = alpine_policy(&mut html, false, Runtimes::default());
        assert!(replaced.tail.is_some() && replaced.finding.is_none());
        assert!(!html.contains("<script defer src"), "{html}");
        let mut html = remote.to_string();
        let net = alpine_policy(&mut html, true, Runtimes::default());
        assert_eq!((net.source, html.as_str()), ("network", remote));
        let mut html = "<script src=\"js/alpine.js\"></script><p x-data></p>".to_string();
        assert!(alpine_policy(&mut html, false, none).finding.is_none());
    }

    #[test]
    fn runtimes_input() {
        use serde_json::json;
        assert_eq!(parse_runtimes(None).unwrap(), Runtimes::default());
        assert_eq!(
            parse_runtimes(Some(&json!("auto"))).unwrap(),
            Runtimes::default()
        );
        let none = parse_runtimes(Some(&json!([]))).unwrap();
        assert!(!none.htmx && !none.alpine);
        let alpine = parse_runtimes(Some(&json!(["alpine"]))).unwrap();
        assert!(alpine.alpine && !alpine.htmx);
        assert!(
            parse_runtimes(Some(&json!(["react"])))
                .unwrap_err()
                .contains("\"react\"")
        );
        assert!(parse_runtimes(Some(&json!("htmx"))).is_err());
    }
}
