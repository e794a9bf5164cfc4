//! Text content: `contains`, `not_contains`, `regex`.

use serde_json::{Value, json};

use crate::formats::{FileVerdict, per_file};
use crate::fsx;
use crate::params::{self, Kind, get_bool, get_strs, get_u64, opt, req};
use crate::{CheckDef, CheckError};

const PATH: crate::Param = req(
    "path",
    Kind::Paths,
    "the file(s): a path or glob relative to the workspace, or a list",
);

pub(crate) const CONTAINS: CheckDef = CheckDef {
    name: "contains",
    aliases: &["text_contains"],
    summary: "every file contains every given text",
    params: &[
        PATH,
        req(
            "text",
            Kind::StrOrList,
            "the text (or texts) that must appear",
        ),
        opt(
            "ignore_case",
            Kind::Bool,
            "compare without case (default false)",
        ),
    ],
    rules: crate::no_rules,
    run: |ctx, p| contains(ctx, p, true),
};

pub(crate) const NOT_CONTAINS: CheckDef = CheckDef {
    name: "not_contains",
    aliases: &["not-contains", "absent"],
    summary: "no file contains any given text (e.g. a leftover {{PLACEHOLDER}})",
    params: &[
        PATH,
        req(
            "text",
            Kind::StrOrList,
            "the text (or texts) that must not appear",
        ),
        opt(
            "ignore_case",
            Kind::Bool,
            "compare without case (default false)",
        ),
    ],
    rules: crate::no_rules,
    run: |ctx, p| contains(ctx, p, false),
};

fn contains(
    ctx: &crate::Ctx<'_>,
    p: &serde_json::Map<String, Value>,
    want: bool,
) -> Result<crate::Verdict, CheckError> {
    let texts = get_strs(p, "text");
    let fold = get_bool(p, "ignore_case", false);
    per_file(ctx, p, &|f| {
        let body = fsx::read_text(f)?;
        let hay = if fold {
            body.to_lowercase()
        } else {
            body.clone()
        };
        let mut bad = Vec::new();
        let mut found = Vec::new();
        for t in &texts {
            let needle = if fold { t.to_lowercase() } else { t.clone() };
            match hay.find(&needle) {
                Some(at) => {
                    let (line, col) = fsx::line_col(&hay, at);
                    found.push(json!({"text": t, "line": line, "column": col}));
                    if !want {
                        bad.push(format!("contains {t:?} at line {line}"));
                    }
                }
                None if want => bad.push(format!("does not contain {t:?}")),
                None => {}
            }
        }
        let detail = json!({"texts": texts, "found": found});
        Ok(if bad.is_empty() {
            FileVerdict::ok(
                if want {
                    "contains every text"
                } else {
                    "contains none of the texts"
                },
                detail,
            )
        } else {
            FileVerdict::bad(bad.join("; "), detail)
        })
    })
}

pub(crate) const REGEX: CheckDef = CheckDef {
    name: "regex",
    aliases: &["matches", "pattern"],
    summary: "a regular expression matches every file (min..max times)",
    params: &[
        PATH,
        req(
            "pattern",
            Kind::Str,
            "the regular expression (Rust regex syntax; (?m) for line anchors)",
        ),
        opt("min", Kind::UInt, "fewest matches per file (default 1)"),
        opt(
            "max",
            Kind::UInt,
            "most matches per file (0 = the pattern must not match)",
        ),
    ],
    rules: |p| {
        let mut v = params::must_be_able_to_fail(p, "min", &["max"]);
        if let Some(Err(e)) = p
            .get("pattern")
            .and_then(Value::as_str)
            .map(regex::Regex::new)
        {
            v.push(params::issue(
                "pattern",
                format!("invalid regular expression: {e}"),
                None,
            ));
        }
        v
    },
    run: |ctx, p| {
        let pat = params::get_str(p, "pattern").unwrap_or_default();
        let re = regex::RegexBuilder::new(pat)
            .size_limit(10 * 1024 * 1024)
            .build()
            .map_err(|e| CheckError::Param(format!("invalid regular expression: {e}")))?;
        let max = get_u64(p, "max");
        let min = get_u64(p, "min").unwrap_or(if max == Some(0) { 0 } else { 1 });
        per_file(ctx, p, &|f| {
            let body = fsx::read_text(f)?;
            let mut n = 0u64;
            let mut first = Vec::new();
            for m in re.find_iter(&body) {
                n += 1;
                if first.len() < 20 {
                    let (line, _) = fsx::line_col(&body, m.start());
                    first.push(json!({"line": line, "text": m.as_str().chars().take(200).collect::<String>()}));
                }
            }
            let detail = json!({"pattern": pat, "matches": n, "min": min, "max": max, "first_matches": first});
            let too_few = n < min;
            let too_many = max.is_some_and(|m| n > m);
            Ok(if too_few {
                FileVerdict::bad(
                    format!("/{pat}/ matches {n} time(s), expected at least {min}"),
                    detail,
                )
            } else if too_many {
                FileVerdict::bad(
                    format!(
                        "/{pat}/ matches {n} time(s), expected at most {}",
                        max.unwrap_or(0)
                    ),
                    detail,
                )
            } else {
                FileVerdict::ok(format!("/{pat}/ matches {n} time(s)"), detail)
            })
        })
    },
};
