//! `contrast`: the WCAG 2.x contrast ratio between colours.
//!
//! Relative luminance L = 0.2126 R + 0.7152 G + 0.0722 B of the linearized
//! sRGB channels (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ^ 2.4);
//! ratio = (L_lighter + 0.05) / (L_darker + 0.05), compared unrounded with
//! 4.5 (AA normal), 3 (AA large), 7 (AAA normal) or 4.5 (AAA large).
//! A translucent foreground is blended over the background first; a
//! translucent background over white.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value, json};

use crate::fsx;
use crate::params::{self, Kind, get_str, opt};
use crate::{CheckDef, CheckError, Ctx, Verdict};

/// A colour with channels in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rgba {
    pub r: f64,
    pub g: f64,
    pub b: f64,
    pub a: f64,
}

impl Rgba {
    fn over(self, bg: Rgba) -> Rgba {
        let a = self.a.clamp(0.0, 1.0);
        Rgba {
            r: self.r * a + bg.r * (1.0 - a),
            g: self.g * a + bg.g * (1.0 - a),
            b: self.b * a + bg.b * (1.0 - a),
            a: 1.0,
        }
    }

    fn hex(self) -> String {
        let c = |x: f64| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
        format!("#{:02x}{:02x}{:02x}", c(self.r), c(self.g), c(self.b))
    }
}

const WHITE: Rgba = Rgba {
    r: 1.0,
    g: 1.0,
    b: 1.0,
    a: 1.0,
};

/// Parses any CSS colour: `#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`, `rgb()`, `rgba()`,
/// `hsl()`, `hsla()`, `hwb()`, named colours.
pub fn parse_color(text: &str) -> Result<Rgba, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty colour".into());
    }
    // A bare hex string without `#` is not CSS; refuse it rather than guess.
    if !t.starts_with('#') && t.chars().all(|c| c.is_ascii_hexdigit()) && t.len() >= 3 {
        return Err(format!("`{t}` is not a CSS colour (did you mean `#{t}`?)"));
    }
    let c = csscolorparser::parse(t).map_err(|e| format!("`{t}` is not a CSS colour: {e}"))?;
    Ok(Rgba {
        r: c.r as f64,
        g: c.g as f64,
        b: c.b as f64,
        a: c.a as f64,
    })
}

fn linear(c: f64) -> f64 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// WCAG 2.x relative luminance of an opaque colour.
pub fn relative_luminance(c: Rgba) -> f64 {
    0.2126 * linear(c.r) + 0.7152 * linear(c.g) + 0.0722 * linear(c.b)
}

/// WCAG 2.x contrast ratio (1..=21) of a foreground over a background.
pub fn contrast_ratio(fg: Rgba, bg: Rgba) -> f64 {
    let bg = if bg.a < 1.0 { bg.over(WHITE) } else { bg };
    let fg = if fg.a < 1.0 { fg.over(bg) } else { fg };
    let (a, b) = (relative_luminance(fg), relative_luminance(bg));
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    (hi + 0.05) / (lo + 0.05)
}

fn required_ratio(level: &str, text: &str) -> f64 {
    match (
        level.eq_ignore_ascii_case("AAA"),
        text.eq_ignore_ascii_case("large"),
    ) {
        (false, false) => 4.5,
        (false, true) => 3.0,
        (true, false) => 7.0,
        (true, true) => 4.5,
    }
}

pub(crate) const CONTRAST: CheckDef = CheckDef {
    name: "contrast",
    aliases: &[
        "contrast_ratio",
        "contrast-check",
        "contrast_check",
        "wcag_contrast",
    ],
    summary: "WCAG 2.x contrast between colours (explicit, from an SVG, or from CSS custom properties)",
    params: &[
        opt(
            "foreground",
            Kind::Str,
            "the text colour, any CSS syntax (#333, rgb(0 0 0), hsl(...), navy)",
        ),
        opt(
            "background",
            Kind::Str,
            "the background colour; with a CSS `file` also `var(--name)`",
        ),
        opt(
            "file",
            Kind::Str,
            "an SVG (its fill/stroke colours are checked) or a CSS file (its colour custom properties)",
        ),
        opt(
            "pairs",
            Kind::PairList,
            "with a CSS file: [[\"--text\", \"--bg\"], ...] pairs to check",
        ),
        opt("level", Kind::OneOf(&["AA", "AAA"]), "AA (default) or AAA"),
        opt(
            "text",
            Kind::OneOf(&["normal", "large"]),
            "normal (default) or large text",
        ),
        opt(
            "min_ratio",
            Kind::Num,
            "a ratio to require instead of the level's",
        ),
    ],
    rules: |p| {
        let mut v = Vec::new();
        if p.contains_key("file") {
            v.extend(params::exclusive(p, "file", "foreground"));
            if !p.contains_key("background") && !p.contains_key("pairs") {
                v.push(params::issue(
                    "",
                    "with `file`, `background` (or `pairs` for CSS) is required",
                    Some("e.g. file: dist/logo.svg, background: \"#ffffff\"".into()),
                ));
            }
        } else {
            for k in ["foreground", "background"] {
                if !p.contains_key(k) {
                    v.push(params::issue(
                        "",
                        format!("missing parameter `{k}` (or give `file` with `background`)"),
                        Some("e.g. foreground: \"#333\", background: white".into()),
                    ));
                }
            }
            for k in ["foreground", "background"] {
                if let Some(s) = p.get(k).and_then(Value::as_str)
                    && let Err(e) = parse_color(s)
                {
                    v.push(params::issue(
                        k,
                        e,
                        Some("use #rgb, #rrggbb, rgb(), hsl() or a named colour".into()),
                    ));
                }
            }
        }
        if let Some(r) = p.get("min_ratio").and_then(Value::as_f64)
            && !(1.0..=21.0).contains(&r)
        {
            v.push(params::issue(
                "min_ratio",
                format!("a contrast ratio is between 1 and 21, got {r}"),
                None,
            ));
        }
        v
    },
    run,
};

/// One pair to measure.
struct Pair {
    fg_label: String,
    fg: Rgba,
    bg_label: String,
    bg: Rgba,
    source: Option<String>,
}

fn run(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let level = get_str(p, "level").unwrap_or("AA").to_ascii_uppercase();
    let text = get_str(p, "text").unwrap_or("normal").to_ascii_lowercase();
    let required = p
        .get("min_ratio")
        .and_then(Value::as_f64)
        .unwrap_or_else(|| required_ratio(&level, &text));
    let color = |s: &str| parse_color(s).map_err(CheckError::Param);

    let mut source = None;
    let pairs: Vec<Pair> = match get_str(p, "file") {
        None => {
            let fg = get_str(p, "foreground").unwrap_or_default();
            let bg = get_str(p, "background").unwrap_or_default();
            vec![Pair {
                fg_label: fg.to_string(),
                fg: color(fg)?,
                bg_label: bg.to_string(),
                bg: color(bg)?,
                source: None,
            }]
        }
        Some(file) => {
            let f = fsx::file(ctx.ws, file)?;
            source = Some(f.rel.clone());
            let content = fsx::read_text(&f)?;
            let is_svg = fsx::ext(&f.rel) == "svg" || content.trim_start().starts_with("<");
            if is_svg {
                let bg_text = get_str(p, "background").unwrap_or("white");
                let bg = color(bg_text)?;
                let found = svg_colors(&f.rel, &content)?;
                if found.is_empty() {
                    return Ok(Verdict::new(
                        false,
                        format!("`{}` has no fill or stroke colour to check", f.rel),
                        json!({"file": f.rel, "pairs": []}),
                    ));
                }
                found
                    .into_iter()
                    .map(|(label, c, whence)| Pair {
                        fg_label: label,
                        fg: c,
                        bg_label: bg_text.to_string(),
                        bg,
                        source: Some(whence),
                    })
                    .collect()
            } else {
                css_pairs(&f.rel, &content, p)?
            }
        }
    };

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for pair in &pairs {
        let ratio = contrast_ratio(pair.fg, pair.bg);
        let ok = ratio >= required;
        let shown = (ratio * 100.0).floor() / 100.0;
        if !ok {
            failures.push(format!(
                "{} on {}: {shown:.2}:1",
                pair.fg_label, pair.bg_label
            ));
        }
        rows.push(json!({
            "foreground": pair.fg_label,
            "foreground_rgb": pair.fg.hex(),
            "background": pair.bg_label,
            "background_rgb": pair.bg.hex(),
            "ratio": (ratio * 1000.0).round() / 1000.0,
            "passed": ok,
            "source": pair.source,
        }));
    }
    let target = format!("{required}:1 ({level} {text} text)");
    let message = if failures.is_empty() {
        if rows.len() == 1 {
            format!("contrast {}:1 meets {target}", rows[0]["ratio"])
        } else {
            format!("all {} colour pairs meet {target}", rows.len())
        }
    } else {
        format!(
            "{} of {} pair(s) below {target}: {}",
            failures.len(),
            rows.len(),
            failures
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    Ok(Verdict::new(
        failures.is_empty(),
        message,
        json!({
            "level": level, "text": text, "required_ratio": required,
            "file": source, "pairs": rows,
        }),
    ))
}

/// Paint values that are not colours to compare.
fn is_non_color(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    v.is_empty()
        || matches!(
            v.as_str(),
            "none"
                | "transparent"
                | "currentcolor"
                | "inherit"
                | "initial"
                | "unset"
                | "context-fill"
                | "context-stroke"
        )
        || v.starts_with("url(")
        || v.starts_with("var(")
}

/// The distinct fill/stroke/stop colours of an SVG, with where each was first seen.
fn svg_colors(rel: &str, text: &str) -> Result<Vec<(String, Rgba, String)>, CheckError> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc =
        roxmltree::Document::parse_with_options(text, opts).map_err(|e| CheckError::File {
            path: rel.to_string(),
            why: format!("is not well-formed XML: {e}"),
        })?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut add = |value: &str,
                   whence: String,
                   out: &mut Vec<(String, Rgba, String)>|
     -> Result<(), CheckError> {
        let v = value.trim();
        if is_non_color(v) {
            return Ok(());
        }
        let c = parse_color(v).map_err(|e| CheckError::File {
            path: rel.to_string(),
            why: format!("{whence}: {e}"),
        })?;
        if seen.insert(v.to_ascii_lowercase()) {
            out.push((v.to_string(), c, whence));
        }
        Ok(())
    };
    const PROPS: &[&str] = &["fill", "stroke", "stop-color", "color"];
    for node in doc.descendants().filter(|n| n.is_element()) {
        let tag = node.tag_name().name();
        let line = doc.text_pos_at(node.range().start).row;
        for prop in PROPS {
            if let Some(v) = node.attribute(*prop) {
                add(v, format!("<{tag}> {prop} (line {line})"), &mut out)?;
            }
        }
        if let Some(style) = node.attribute("style") {
            for (prop, v) in declarations(style) {
                if PROPS.contains(&prop.as_str()) {
                    add(&v, format!("<{tag}> style {prop} (line {line})"), &mut out)?;
                }
            }
        }
        if tag == "style" {
            let css: String = node.children().filter_map(|c| c.text()).collect();
            for (prop, v) in declarations(&css) {
                if PROPS.contains(&prop.as_str()) {
                    add(&v, format!("<style> {prop} (line {line})"), &mut out)?;
                }
            }
        }
    }
    Ok(out)
}

/// `prop: value` declarations of CSS text (blocks and selectors are ignored).
fn declarations(css: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let no_comments = strip_comments(css);
    for part in no_comments.split([';', '{', '}']) {
        if let Some((k, v)) = part.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().trim_end_matches("!important").trim();
            if !k.is_empty() && !k.contains(char::is_whitespace) {
                out.push((k, v.to_string()));
            }
        }
    }
    out
}

fn strip_comments(css: &str) -> String {
    let mut out = String::with_capacity(css.len());
    let mut rest = css;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = match rest[i + 2..].find("*/") {
            Some(j) => &rest[i + 2 + j + 2..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Colour custom properties of a CSS file (`--name: colour`), `var()` resolved.
fn css_pairs(rel: &str, css: &str, p: &Map<String, Value>) -> Result<Vec<Pair>, CheckError> {
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (k, v) in declarations(css) {
        if k.starts_with("--") {
            if !props.contains_key(&k) {
                order.push(k.clone());
            }
            props.insert(k, v);
        }
    }
    let resolve = |v: &str| -> Option<String> {
        let mut v = v.trim().to_string();
        for _ in 0..8 {
            let Some(inner) = v.strip_prefix("var(").and_then(|s| s.strip_suffix(')')) else {
                break;
            };
            let (name, fallback) = match inner.split_once(',') {
                Some((n, f)) => (n.trim().to_string(), Some(f.trim().to_string())),
                None => (inner.trim().to_string(), None),
            };
            v = props.get(&name).cloned().or(fallback)?;
        }
        Some(v)
    };
    let lookup = |text: &str| -> Result<(String, Rgba), CheckError> {
        let t = text.trim();
        let name = if t.starts_with("--") {
            format!("var({t})")
        } else {
            t.to_string()
        };
        let value = resolve(&name).ok_or_else(|| CheckError::File {
            path: rel.to_string(),
            why: format!("defines no custom property for `{t}`"),
        })?;
        let c = parse_color(&value).map_err(|e| CheckError::File {
            path: rel.to_string(),
            why: format!("`{t}`: {e}"),
        })?;
        Ok((t.to_string(), c))
    };
    let mut pairs = Vec::new();
    if let Some(Value::Array(list)) = p.get("pairs") {
        for item in list {
            let two: Vec<&str> = item
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let [fg, bg] = two[..] else {
                return Err(CheckError::Param(
                    "each of `pairs` is [foreground, background]".into(),
                ));
            };
            let (fl, fc) = lookup(fg)?;
            let (bl, bc) = lookup(bg)?;
            pairs.push(Pair {
                fg_label: fl,
                fg: fc,
                bg_label: bl,
                bg: bc,
                source: Some(rel.to_string()),
            });
        }
        return Ok(pairs);
    }
    let bg_text = get_str(p, "background").unwrap_or("white");
    let (bg_label, bg) = lookup(bg_text)?;
    let bg_name = bg_text
        .trim()
        .trim_start_matches("var(")
        .trim_end_matches(')')
        .to_string();
    for name in &order {
        if *name == bg_name {
            continue;
        }
        let Some(value) = resolve(&props[name]) else {
            continue;
        };
        if let Ok(c) = parse_color(&value) {
            pairs.push(Pair {
                fg_label: name.clone(),
                fg: c,
                bg_label: bg_label.clone(),
                bg,
                source: Some(format!("{rel}: {name}: {value}")),
            });
        }
    }
    if pairs.is_empty() {
        return Err(CheckError::File {
            path: rel.to_string(),
            why: "defines no colour custom property (--name: colour) to check".into(),
        });
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntaxes() {
        let black = parse_color("#000").unwrap();
        assert_eq!(black, parse_color("rgb(0, 0, 0)").unwrap());
        assert_eq!(black, parse_color("black").unwrap());
        assert_eq!(
            parse_color("#ff000080").unwrap().a.to_string()[..4],
            *"0.50"
        );
        assert!(parse_color("hsl(120, 100%, 25%)").is_ok());
        assert!(parse_color("#f00a").is_ok());
        for bad in ["", "blurple", "#12", "rgb(1,2)", "ffffff"] {
            assert!(parse_color(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extremes() {
        let r = contrast_ratio(parse_color("#000").unwrap(), parse_color("#fff").unwrap());
        assert!((r - 21.0).abs() < 1e-9);
        let same = contrast_ratio(
            parse_color("navy").unwrap(),
            parse_color("#000080").unwrap(),
        );
        assert!((same - 1.0).abs() < 1e-9);
    }
}
