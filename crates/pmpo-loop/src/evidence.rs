//! The evidence rule of the loop: a constraint is satisfied only by a check
//! that ran in this iteration on files this iteration's run produced or
//! verified (their digest is in the run's results). A stage that failed, was
//! skipped or never ran leaves the files it declared unproven, whatever an
//! earlier run left on disk; a check that rests on them proves nothing.
//!
//! It also says which files belong to one named artifact: the ones its plan
//! declares. Several artifacts share `dist/`; each is judged on its own files.

use std::collections::BTreeMap;

use pmpo_store::states::{RunStatus, StageStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A file a constraint's evidence rests on, as this run recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvidenceFile {
    pub path: String,
    pub blake3: String,
}

/// What one Execute run proved: the files its completed (or verified
/// cached) stages recorded, and the declared outputs of the stages that did
/// not complete, with why.
#[derive(Debug, Clone, Default)]
pub struct RunEvidence {
    pub run_id: String,
    /// The run's status; `None` when this iteration has no results of its own.
    pub status: Option<RunStatus>,
    /// Path -> blake3, as recorded in this run's results.
    pub proven: BTreeMap<String, String>,
    /// (declared output, why it is unproven).
    pub unproven: Vec<(String, String)>,
    /// Every output the plan declares (the artifact's own files).
    pub declared: Vec<String>,
    unproven_patterns: PatternIndex,
    declared_patterns: PatternIndex,
}

/// Patterns found by their literal prefix: two patterns can name the same
/// file only when one's prefix starts with the other's, so a look-up visits
/// the few candidates instead of every declared output (plans of thousands
/// of stages stay linear).
#[derive(Debug, Clone, Default)]
struct PatternIndex {
    patterns: Vec<PathPattern>,
    by_prefix: BTreeMap<String, Vec<usize>>,
}

impl PatternIndex {
    fn new<'a>(raw: impl Iterator<Item = &'a str>) -> PatternIndex {
        let mut ix = PatternIndex::default();
        for (i, r) in raw.enumerate() {
            let p = PathPattern::new(r);
            ix.by_prefix.entry(p.prefix.clone()).or_default().push(i);
            ix.patterns.push(p);
        }
        ix
    }

    /// The index of the first pattern (in declared order) that overlaps `other`.
    fn first_overlap(&self, other: &PathPattern) -> Option<usize> {
        let key = other.prefix.as_str();
        let shorter = key
            .char_indices()
            .map(|(i, _)| &key[..i])
            .chain(std::iter::once(key))
            .filter_map(|p| self.by_prefix.get(p));
        let longer = self
            .by_prefix
            .range(key.to_string()..)
            .take_while(|(p, _)| p.starts_with(key))
            .map(|(_, v)| v);
        shorter
            .chain(longer)
            .flatten()
            .copied()
            .filter(|&i| self.patterns[i].overlaps(other))
            .min()
    }
}

/// `{size}`-style placeholders of check parameters match like `*`.
fn as_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut in_brace = false;
    for c in pattern.chars() {
        match c {
            '{' if !in_brace => in_brace = true,
            '}' if in_brace => {
                in_brace = false;
                out.push('*');
            }
            _ if in_brace => {}
            c => out.push(c),
        }
    }
    if in_brace {
        // An unclosed brace is literal text after all.
        return pattern.to_string();
    }
    out
}

/// A path, directory or glob of a plan, compiled once.
#[derive(Debug, Clone)]
pub struct PathPattern {
    raw: String,
    /// The literal part before the first wildcard (all of `raw` without one):
    /// every path the pattern covers starts with it.
    prefix: String,
    glob: Option<globset::GlobMatcher>,
}

impl PathPattern {
    pub fn new(pattern: &str) -> PathPattern {
        let raw = pattern.trim_end_matches('/').to_string();
        let glob = as_glob(&raw);
        let glob = if glob.contains(['*', '?', '[']) {
            globset::GlobBuilder::new(&glob)
                .literal_separator(true)
                .build()
                .ok()
                .map(|g| g.compile_matcher())
        } else {
            None
        };
        let prefix = match &glob {
            Some(_) => raw[..raw.find(['*', '?', '[', '{']).unwrap_or(raw.len())].to_string(),
            None => raw.clone(),
        };
        PathPattern { raw, prefix, glob }
    }

    /// Whether this (a file, a directory or a glob) covers `path`.
    pub fn covers(&self, path: &str) -> bool {
        if self.raw == path
            || (path.len() > self.raw.len()
                && path.starts_with(self.raw.as_str())
                && path.as_bytes()[self.raw.len()] == b'/')
        {
            return true;
        }
        match &self.glob {
            // A directory glob covers what is under the directories it matches.
            Some(m) => std::path::Path::new(path)
                .ancestors()
                .any(|a| m.is_match(a)),
            None => false,
        }
    }

    /// Whether this and `other` can name the same file.
    pub fn overlaps(&self, other: &PathPattern) -> bool {
        self.covers(&other.raw) || other.covers(&self.raw)
    }
}

/// Whether a declared output (a file, a directory or a glob) covers `path`.
pub fn covers(pattern: &str, path: &str) -> bool {
    PathPattern::new(pattern).covers(path)
}

fn stage_outputs(stage: &Value) -> Vec<String> {
    stage["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| match o {
            Value::String(s) => Some(s.clone()),
            // `{path: ...}` entries, if a plan writes outputs that way.
            Value::Object(m) => m.get("path").and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
        .collect()
}

impl RunEvidence {
    /// The evidence of `run_id` from the plan it ran and its results file;
    /// `results` of another run (or none) prove nothing.
    pub fn of_run(plan: &Value, results: &Value, run_id: &str) -> RunEvidence {
        let stages = plan["plan"]["stages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let declared: Vec<String> = stages.iter().flat_map(stage_outputs).collect();
        let same_run = !run_id.is_empty() && results["run_id"].as_str() == Some(run_id);
        let mut ev = RunEvidence {
            run_id: run_id.to_string(),
            status: if same_run {
                results["status"].as_str().and_then(RunStatus::parse)
            } else {
                None
            },
            declared,
            ..Default::default()
        };
        let ran: std::collections::HashMap<&str, &Value> = if same_run {
            results["stages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["id"].as_str().map(|id| (id, r)))
                .collect()
        } else {
            Default::default()
        };
        for stage in &stages {
            let id = stage["id"].as_str().unwrap_or("?");
            let result = ran.get(id);
            let status = result
                .and_then(|r| r["status"].as_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            let succeeded = StageStatus::parse(&status.to_ascii_uppercase())
                .is_some_and(StageStatus::is_success);
            if succeeded {
                for f in result
                    .and_then(|r| r["files"].as_array())
                    .into_iter()
                    .flatten()
                {
                    if let (Some(p), Some(d)) = (f["path"].as_str(), f["blake3"].as_str()) {
                        ev.proven.insert(p.to_string(), d.to_string());
                    }
                }
                continue;
            }
            let why = match (status.as_str(), result.and_then(|r| r["reason"].as_str())) {
                ("", _) if !same_run => {
                    format!("stage `{id}`: this iteration's run `{run_id}` left no results")
                }
                ("", _) => format!("stage `{id}` did not run in run `{run_id}`"),
                (s, Some(r)) => format!("stage `{id}` {s} in run `{run_id}`: {r}"),
                (s, None) => format!("stage `{id}` {s} in run `{run_id}`"),
            };
            for o in stage_outputs(stage) {
                ev.unproven.push((o, why.clone()));
            }
        }
        ev.unproven_patterns = PatternIndex::new(ev.unproven.iter().map(|(o, _)| o.as_str()));
        ev.declared_patterns = PatternIndex::new(ev.declared.iter().map(String::as_str));
        ev
    }

    /// Whether the run completed: every stage's files are this run's.
    pub fn complete(&self) -> bool {
        self.status == Some(RunStatus::Completed)
    }

    /// Files this run recorded under `reference` (a path, directory or pattern).
    pub fn proven_under(&self, reference: &str) -> Vec<EvidenceFile> {
        self.proven_under_pattern(&PathPattern::new(reference))
    }

    fn proven_under_pattern(&self, reference: &PathPattern) -> Vec<EvidenceFile> {
        let file = |(p, d): (&String, &String)| EvidenceFile {
            path: p.clone(),
            blake3: d.clone(),
        };
        if reference.glob.is_some() {
            return self
                .proven
                .range(reference.prefix.clone()..)
                .take_while(|(p, _)| p.starts_with(&reference.prefix))
                .filter(|(p, _)| reference.covers(p))
                .map(file)
                .collect();
        }
        // A plain path: itself and what is under it, found in the sorted map.
        let under = format!("{}/", reference.raw);
        self.proven
            .get_key_value(&reference.raw)
            .into_iter()
            .chain(
                self.proven
                    .range(under.clone()..)
                    .take_while(|(p, _)| p.starts_with(&under)),
            )
            .map(file)
            .collect()
    }

    /// Why `reference` is not proven by this run (`None`: it is, or it is not
    /// one of the artifact's outputs, e.g. an input or the manifest).
    pub fn unproven_reason(&self, reference: &str) -> Option<String> {
        self.unproven_pattern(&PathPattern::new(reference))
    }

    fn unproven_pattern(&self, r: &PathPattern) -> Option<String> {
        if let Some(i) = self.unproven_patterns.first_overlap(r) {
            return Some(format!("`{}`: {}", r.raw, self.unproven[i].1));
        }
        let output =
            r.raw.starts_with("dist/") || self.declared_patterns.first_overlap(r).is_some();
        if output && self.proven_under_pattern(r).is_empty() {
            return Some(format!(
                "`{}`: no file of it was produced or verified by run `{}`",
                r.raw, self.run_id
            ));
        }
        None
    }

    /// What one check's parameters rest on: the proven files under the
    /// paths it reads, or (when any is unproven) why not.
    pub fn assess(&self, params: &Value) -> (Vec<EvidenceFile>, Vec<String>) {
        let refs: Vec<PathPattern> = self
            .references(params)
            .iter()
            .map(|r| PathPattern::new(r))
            .collect();
        let unproven: Vec<String> = refs
            .iter()
            .filter_map(|r| self.unproven_pattern(r))
            .collect();
        if !unproven.is_empty() {
            return (Vec::new(), unproven);
        }
        let mut files: Vec<EvidenceFile> = refs
            .iter()
            .flat_map(|r| self.proven_under_pattern(r))
            .collect();
        files.dedup();
        (files, Vec::new())
    }

    /// The paths a check's parameters name that are the artifact's outputs
    /// (under `dist/`, or covered by a declared output).
    pub fn references(&self, params: &Value) -> Vec<String> {
        let mut out = Vec::new();
        collect_strings(params, &mut out, 0);
        out.retain(|s| {
            !s.is_empty()
                && !s.contains(char::is_whitespace)
                && (s.starts_with("dist/") || {
                    let p = PathPattern::new(s);
                    self.declared_patterns.first_overlap(&p).is_some()
                })
        });
        out.sort();
        out.dedup();
        out
    }
}

fn collect_strings(v: &Value, out: &mut Vec<String>, depth: usize) {
    if depth > 16 {
        return;
    }
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out, depth + 1)),
        Value::Object(m) => m.values().for_each(|x| collect_strings(x, out, depth + 1)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn overlaps(a: &str, b: &str) -> bool {
        PathPattern::new(a).overlaps(&PathPattern::new(b))
    }

    #[test]
    fn outputs_cover_files_directories_globs_and_placeholders() {
        assert!(covers("dist/logo.svg", "dist/logo.svg"));
        assert!(!covers("dist/logo.svg", "dist/logo.svg.bak"));
        assert!(covers(
            "dist/previews/x",
            "dist/previews/x/preview-report.json"
        ));
        assert!(covers("dist/logo-*.png", "dist/logo-16.png"));
        assert!(!covers("dist/logo-*.png", "dist/sub/logo-16.png"));
        assert!(covers("dist/logo-{size}.png", "dist/logo-512.png"));
        assert!(overlaps("dist/logo-*.png", "dist/logo-{size}.png"));
        assert!(!covers("dist/a-*.html", "dist/b-body.html"));
    }

    #[test]
    fn a_failed_stage_leaves_its_outputs_unproven_and_old_files_prove_nothing() {
        let plan = json!({"plan": {"stages": [
            {"id": "import", "outputs": ["dist/logo.svg"]},
            {"id": "sizes", "outputs": ["dist/logo-*.png"]},
        ]}});
        let results = json!({"run_id": "r2", "status": "failed", "stages": [
            {"id": "import", "status": "FAILED", "reason": "declared input missing: logo.svg", "files": []},
            {"id": "sizes", "status": "SKIPPED", "files": []},
        ]});
        let ev = RunEvidence::of_run(&plan, &results, "r2");
        assert!(!ev.complete());
        let why = ev.unproven_reason("dist/logo.svg").unwrap();
        assert!(
            why.contains("stage `import` failed in run `r2`: declared input missing"),
            "{why}"
        );
        assert!(ev.unproven_reason("dist/logo-{size}.png").is_some());
        // The results of another run prove nothing for this one.
        let other = RunEvidence::of_run(&plan, &results, "r3");
        assert!(
            other
                .unproven_reason("dist/logo.svg")
                .unwrap()
                .contains("left no results")
        );
        // Inputs and the manifest are not the run's outputs.
        assert!(ev.unproven_reason("logo.svg").is_none());
        assert_eq!(
            ev.references(&json!({"path": "dist/logo.svg", "min": 3, "bg": "#fff x"})),
            vec!["dist/logo.svg".to_string()]
        );

        let ok = json!({"run_id": "r4", "status": "completed", "stages": [
            {"id": "import", "status": "COMPLETED", "files": [{"path": "dist/logo.svg", "blake3": "ab"}]},
            {"id": "sizes", "status": "CACHED", "files": [{"path": "dist/logo-16.png", "blake3": "cd"}]},
        ]});
        let ev = RunEvidence::of_run(&plan, &ok, "r4");
        assert!(ev.complete());
        assert!(ev.unproven_reason("dist/logo.svg").is_none());
        assert_eq!(ev.proven_under("dist/logo-{size}.png").len(), 1);
        // A dist/ path no stage of this run recorded is not evidence either.
        assert!(ev.unproven_reason("dist/other.html").is_some());
    }
}
