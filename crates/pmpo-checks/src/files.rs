//! Files: `file_exists`, `non_empty`, `file_size`, `max_file_size`, `glob_count`.

use serde_json::{Map, Value, json};

use crate::fsx::{self, FileRef};
use crate::params::{self, Kind, get_bytes, get_strs, get_u64, need_one, opt, req};
use crate::{CheckDef, CheckError, Ctx, Verdict, no_rules};

const PATH: crate::Param = req(
    "path",
    Kind::Paths,
    "the file(s) to check: a path or glob relative to the workspace, or a list",
);

pub(crate) const FILE_EXISTS: CheckDef = CheckDef {
    name: "file_exists",
    aliases: &["file-exists", "file_existence", "exists"],
    summary: "every path exists (a glob must match at least one file)",
    params: &[PATH],
    rules: no_rules,
    run: file_exists,
};

pub(crate) const NON_EMPTY: CheckDef = CheckDef {
    name: "non_empty",
    aliases: &["non-empty", "not_empty"],
    summary: "every file exists and is not empty",
    params: &[PATH],
    rules: no_rules,
    run: non_empty,
};

pub(crate) const FILE_SIZE: CheckDef = CheckDef {
    name: "file_size",
    aliases: &["file-size"],
    summary: "every file's size is within min_bytes..max_bytes",
    params: &[
        PATH,
        opt(
            "min_bytes",
            Kind::Bytes,
            "smallest size allowed, e.g. 1 or \"1KB\"",
        ),
        opt(
            "max_bytes",
            Kind::Bytes,
            "largest size allowed, e.g. \"200KB\"",
        ),
    ],
    rules: |p| {
        let mut v = need_one(p, &["min_bytes", "max_bytes"]);
        v.extend(params::must_be_able_to_fail(p, "min_bytes", &["max_bytes"]));
        v
    },
    run: file_size,
};

pub(crate) const MAX_FILE_SIZE: CheckDef = CheckDef {
    name: "max_file_size",
    aliases: &["max-file-size"],
    summary: "no file is larger than max_bytes",
    params: &[
        PATH,
        req(
            "max_bytes",
            Kind::Bytes,
            "largest size allowed, e.g. \"200KB\"",
        ),
    ],
    rules: no_rules,
    run: file_size,
};

pub(crate) const GLOB_COUNT: CheckDef = CheckDef {
    name: "glob_count",
    aliases: &["glob-count", "file_count"],
    summary: "the number of files matching a glob is within min..max (or equals `equals`)",
    params: &[
        req(
            "pattern",
            Kind::Str,
            "a glob relative to the workspace, e.g. \"dist/*.png\"",
        ),
        opt("min", Kind::UInt, "fewest matches allowed"),
        opt("max", Kind::UInt, "most matches allowed"),
        opt("equals", Kind::UInt, "the exact number of matches"),
    ],
    rules: |p| {
        let mut v = need_one(p, &["min", "max", "equals"]);
        v.extend(params::must_be_able_to_fail(p, "min", &["max", "equals"]));
        if let Some(pat) = p.get("pattern").and_then(Value::as_str)
            && let Err(m) = pmpo_plan::validate_output_pattern(pat)
        {
            v.push(params::issue(
                "pattern",
                format!("pattern `{pat}` {m}"),
                None,
            ));
        }
        v
    },
    run: glob_count,
};

/// Every file named by `path` (globs expanded); missing literal paths are `Err` entries.
pub(crate) fn each_file(
    ctx: &Ctx<'_>,
    p: &Map<String, Value>,
) -> Result<Vec<Result<FileRef, String>>, CheckError> {
    let paths = fsx::expand(ctx.ws, &get_strs(p, "path"))?;
    let mut out = Vec::with_capacity(paths.len());
    for rel in paths {
        out.push(match fsx::lookup(ctx.ws, &rel)? {
            Some(f) => Ok(f),
            None => Err(rel),
        });
    }
    Ok(out)
}

fn file_exists(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let files = each_file(ctx, p)?;
    let found: Vec<&str> = files
        .iter()
        .filter_map(|f| f.as_ref().ok().map(|f| f.rel.as_str()))
        .collect();
    let missing: Vec<&str> = files
        .iter()
        .filter_map(|f| f.as_ref().err().map(String::as_str))
        .collect();
    let message = if missing.is_empty() {
        format!("{} file(s) exist", found.len())
    } else {
        format!("missing: {}", missing.join(", "))
    };
    Ok(Verdict::new(
        missing.is_empty(),
        message,
        json!({ "expected": get_strs(p, "path"), "found": found, "missing": missing }),
    ))
}

/// Each named file's `{path, size}`, and the problems `judge` finds with
/// them (a missing file is one).
fn sizes(
    files: &[Result<FileRef, String>],
    judge: impl Fn(&FileRef) -> Vec<String>,
) -> (Vec<Value>, Vec<String>) {
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for f in files {
        match f {
            Ok(f) => {
                rows.push(json!({"path": f.rel, "size": f.size}));
                bad.extend(judge(f));
            }
            Err(rel) => bad.push(format!("{rel} does not exist")),
        }
    }
    (rows, bad)
}

fn non_empty(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let files = each_file(ctx, p)?;
    let (rows, bad) = sizes(&files, |f| {
        (f.size == 0)
            .then(|| format!("{} is empty", f.rel))
            .into_iter()
            .collect()
    });
    let message = if bad.is_empty() {
        format!("{} file(s), none empty", rows.len())
    } else {
        bad.join("; ")
    };
    Ok(Verdict::new(
        bad.is_empty(),
        message,
        json!({ "files": rows, "problems": bad }),
    ))
}

fn file_size(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let min = get_bytes(p, "min_bytes")?;
    let max = get_bytes(p, "max_bytes")?;
    let files = each_file(ctx, p)?;
    let (rows, bad) = sizes(&files, |f| {
        let below = min
            .filter(|&min| f.size < min)
            .map(|min| format!("{} is {} bytes, below the minimum {min}", f.rel, f.size));
        let above = max
            .filter(|&max| f.size > max)
            .map(|max| format!("{} is {} bytes, above the maximum {max}", f.rel, f.size));
        below.into_iter().chain(above).collect()
    });
    let message = if bad.is_empty() {
        format!("{} file(s) within the size limits", rows.len())
    } else {
        bad.join("; ")
    };
    Ok(Verdict::new(
        bad.is_empty(),
        message,
        json!({ "min_bytes": min, "max_bytes": max, "files": rows, "problems": bad }),
    ))
}

fn glob_count(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let pattern = params::get_str(p, "pattern").unwrap_or_default();
    let matched = fsx::glob(ctx.ws, pattern.trim_start_matches("./"))?;
    let n = matched.len() as u64;
    let (min, max, equals) = (get_u64(p, "min"), get_u64(p, "max"), get_u64(p, "equals"));
    let mut bad = Vec::new();
    if let Some(e) = equals
        && n != e
    {
        bad.push(format!("expected exactly {e}"));
    }
    if let Some(m) = min
        && n < m
    {
        bad.push(format!("expected at least {m}"));
    }
    if let Some(m) = max
        && n > m
    {
        bad.push(format!("expected at most {m}"));
    }
    let message = if bad.is_empty() {
        format!("`{pattern}` matches {n} file(s)")
    } else {
        format!("`{pattern}` matches {n} file(s); {}", bad.join(", "))
    };
    let shown: Vec<&String> = matched.iter().take(200).collect();
    Ok(Verdict::new(
        bad.is_empty(),
        message,
        json!({ "pattern": pattern, "count": n, "min": min, "max": max, "equals": equals, "matched": shown }),
    ))
}
