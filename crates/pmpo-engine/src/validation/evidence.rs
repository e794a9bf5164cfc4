//! The evidence rule: a file that a stage of this run failed, skipped or did
//! not run to produce is not evidence, whatever is on disk; and which stage
//! owns which output.

use super::*;

/// What this run proved about the workspace's files: the evidence rule.
///
/// A file under the declared `outputs:` of a stage that FAILED, TIMED OUT, was
/// SKIPPED or did not run in this run is unproven (a copy left by an earlier
/// run is not evidence), unless a stage that succeeded in this run produced or
/// verified it with the digest it has now. A check whose file parameters name
/// an unproven file is `not_checked`, with the file, the stage and its status.
/// One exception keeps failures visible: a file that a stage which FAILED in
/// this run wrote during its attempt (modified after the stage started) is
/// checked, and a failure found in it stands; a pass on it is still
/// `not_checked`, since the stage that made it failed.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Files produced or verified by stages that succeeded, with their digests.
    proven: HashMap<String, String>,
    /// Stages that did not succeed.
    unproven: Vec<Unproven>,
}

#[derive(Debug, Clone)]
pub(super) struct Unproven {
    stage: String,
    /// What happened to it ("FAILED in run R").
    what: String,
    outputs: Vec<OutputPattern>,
    /// For a stage that FAILED in this run: when it started.
    failed_since: Option<std::time::SystemTime>,
}

/// How a stage ended, as the evidence rule needs it.
pub struct Seen {
    pub status: Option<StageStatus>,
    /// Files under its declared outputs, with their digests (for a success).
    pub files: Vec<(String, String)>,
    /// When it started in this run (RFC 3339), if it did. A file modified
    /// since then was written by it; misjudging a file written just before
    /// can only keep a failure found in it, never make it pass.
    pub started_at: Option<String>,
}

/// File times come from the kernel's coarse clock, which can lag a fine
/// reading taken a moment earlier by up to one tick (10 ms at 100 Hz).
pub(super) const COARSE_CLOCK: std::time::Duration = std::time::Duration::from_millis(10);

/// Why a file is not evidence, and whether this run's failed stage wrote it.
pub(super) struct Doubt {
    pub(super) reason: String,
    pub(super) written_by_failed_stage: bool,
}

pub(super) fn parse_time(rfc3339: &str) -> Option<std::time::SystemTime> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(std::time::SystemTime::from)
}

pub(super) fn what_happened(status: Option<StageStatus>, run_id: &str) -> String {
    match status {
        None | Some(StageStatus::Pending) => format!("did not run in run {run_id}"),
        Some(StageStatus::AwaitingIntervention) => {
            format!("is awaiting a decision in run {run_id}")
        }
        Some(s) => format!("{} in run {run_id}", s.as_str()),
    }
}

impl Evidence {
    /// No run to judge by (`pmpo validate` on the workspace as it is).
    pub fn none() -> Evidence {
        Evidence::default()
    }

    /// At the end of a run, from every stage's result.
    pub fn of_run(run_id: &str, stages: &[pmpo_plan::Stage], results: &[StageResult]) -> Evidence {
        let by_id: HashMap<&str, &StageResult> =
            results.iter().map(|r| (r.id.as_str(), r)).collect();
        Evidence::build(run_id, stages, None, |id| {
            by_id.get(id).map(|r| Seen {
                status: Some(r.status),
                files: r
                    .files
                    .iter()
                    .map(|f| (f.path.clone(), f.blake3.clone()))
                    .collect(),
                started_at: r.started_at.clone(),
            })
        })
    }

    /// For `pmpo validate`, which runs no stage: the last run's results
    /// (`.state/execution_results.json`) say which files it proved. Stages
    /// the last run does not list are left out (no claim either way); no
    /// results file, no rule.
    pub fn of_last_run(ws: &Workspace, stages: &[pmpo_plan::Stage]) -> Evidence {
        let Some(last) = ws
            .read_own(crate::RESULTS_FILE)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            return Evidence::none();
        };
        let run_id = last["run_id"].as_str().unwrap_or("?").to_string();
        let listed: HashMap<&str, &Value> = last["stages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| Some((s["id"].as_str()?, s)))
                    .collect()
            })
            .unwrap_or_default();
        let known: Vec<pmpo_plan::Stage> = stages
            .iter()
            .filter(|s| listed.contains_key(s.id.as_str()))
            .cloned()
            .collect();
        Evidence::build(&run_id, &known, None, |id| {
            let s = listed.get(id)?;
            let status = s["status"].as_str().and_then(StageStatus::parse);
            let files = s["files"]
                .as_array()
                .map(|fs| {
                    fs.iter()
                        .filter_map(|f| {
                            Some((
                                f["path"].as_str()?.to_string(),
                                f["blake3"].as_str()?.to_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(Seen {
                status,
                files,
                started_at: s["started_at"].as_str().map(str::to_string),
            })
        })
    }

    /// For a stage's `validate:` checks, while the run goes on: stages that
    /// have not finished yet did not run; `own` are the files the validating
    /// stage itself just produced. Only the stages whose declared outputs
    /// cover a file the checks name are looked at, so the cost per stage does
    /// not grow with the plan.
    pub fn for_stage_checks(
        ws: &Workspace,
        run_id: &str,
        stages: &[pmpo_plan::Stage],
        index: &OutputIndex,
        current: &pmpo_plan::Stage,
        own: &[crate::outputs::GeneratedFile],
        done: impl Fn(&str) -> Option<Seen>,
    ) -> Evidence {
        let named: Vec<String> = current
            .validate
            .iter()
            .flat_map(|item| pmpo_checks::named_files(ws, &item.check, &item.inputs))
            .collect();
        if named.is_empty() {
            return Evidence::default();
        }
        let mut owners: Vec<usize> = named.iter().flat_map(|f| index.owners(f)).collect();
        owners.sort_unstable();
        owners.dedup();
        let relevant: Vec<pmpo_plan::Stage> = owners
            .into_iter()
            .filter_map(|i| stages.get(i))
            .filter(|s| s.id != current.id)
            .cloned()
            .collect();
        let mut e = Evidence::build(run_id, &relevant, None, done);
        e.proven.retain(|p, _| named.contains(p));
        e.proven.extend(
            own.iter()
                .filter(|f| named.contains(&f.path))
                .map(|f| (f.path.clone(), f.blake3.clone())),
        );
        e
    }

    fn build(
        run_id: &str,
        stages: &[pmpo_plan::Stage],
        skip: Option<&str>,
        status_of: impl Fn(&str) -> Option<Seen>,
    ) -> Evidence {
        let mut e = Evidence::default();
        for stage in stages.iter().filter(|s| Some(s.id.as_str()) != skip) {
            match status_of(&stage.id) {
                Some(seen) if seen.status.is_some_and(StageStatus::is_success) => {
                    e.proven.extend(seen.files)
                }
                other => {
                    if !stage.outputs.is_empty() {
                        let status = other.as_ref().and_then(|s| s.status);
                        let failed_since = other
                            .as_ref()
                            .filter(|s| s.status == Some(StageStatus::Failed))
                            .and_then(|s| s.started_at.as_deref())
                            .and_then(parse_time)
                            .map(|t| t - COARSE_CLOCK);
                        e.unproven.push(Unproven {
                            stage: stage.id.clone(),
                            what: what_happened(status, run_id),
                            outputs: stage
                                .outputs
                                .iter()
                                .map(|o| OutputPattern::new(o))
                                .collect(),
                            failed_since,
                        });
                    }
                }
            }
        }
        e
    }

    /// Why `file` (with its current digest and modification time, if it
    /// exists) is not evidence.
    pub(super) fn doubt(
        &self,
        file: &str,
        digest: Option<&str>,
        modified: Option<std::time::SystemTime>,
    ) -> Option<Doubt> {
        if digest.is_some() && self.proven.get(file).map(String::as_str) == digest {
            return None;
        }
        let u = self
            .unproven
            .iter()
            .find(|u| u.outputs.iter().any(|o| o.covers(file)))?;
        let written_by_failed_stage = matches!(
            (u.failed_since, modified),
            (Some(since), Some(m)) if m >= since
        );
        let note = match (digest.is_some(), written_by_failed_stage) {
            (false, _) => "",
            (true, true) => " (written by that failed stage)",
            (true, false) => " (the file on disk is not from this run's work)",
        };
        Some(Doubt {
            reason: format!("`{file}` is unproven: stage `{}` {}{note}", u.stage, u.what),
            written_by_failed_stage,
        })
    }
}

/// A declared output (a file, a directory or a glob), compiled once.
#[derive(Debug, Clone)]
pub(super) enum OutputPattern {
    /// A file, or a directory that covers everything under it.
    Path(String),
    Glob(globset::GlobMatcher),
    /// A glob that does not compile covers nothing (`pmpo check` reports it).
    Nothing,
}

impl OutputPattern {
    fn new(pattern: &str) -> OutputPattern {
        let p = pattern.replace('\\', "/");
        let p = p.trim_start_matches("./").trim_end_matches('/');
        if p.contains(['*', '?', '[', '{']) {
            globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_or(OutputPattern::Nothing, |g| {
                    OutputPattern::Glob(g.compile_matcher())
                })
        } else {
            OutputPattern::Path(p.to_string())
        }
    }

    /// Whether it covers `file`.
    fn covers(&self, file: &str) -> bool {
        match self {
            OutputPattern::Path(p) => {
                file == p
                    || file
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            OutputPattern::Glob(g) => g.is_match(file),
            OutputPattern::Nothing => false,
        }
    }
}

/// Whether a declared output (a file, a directory or a glob) covers `file`.
#[cfg(test)]
pub(super) fn owns(pattern: &str, file: &str) -> bool {
    OutputPattern::new(pattern).covers(file)
}

/// Which stages declare outputs that cover a file, for a whole plan: built
/// once per run, so the evidence rule's cost per check does not grow with
/// the number of stages (a path is looked up with each of its parent
/// directories; only glob outputs are matched one by one).
pub struct OutputIndex {
    paths: HashMap<String, Vec<usize>>,
    globs: Vec<(OutputPattern, usize)>,
}

impl OutputIndex {
    pub fn new(stages: &[pmpo_plan::Stage]) -> OutputIndex {
        let mut index = OutputIndex {
            paths: HashMap::new(),
            globs: Vec::new(),
        };
        for (i, stage) in stages.iter().enumerate() {
            for o in &stage.outputs {
                match OutputPattern::new(o) {
                    OutputPattern::Path(p) => index.paths.entry(p).or_default().push(i),
                    g @ OutputPattern::Glob(_) => index.globs.push((g, i)),
                    OutputPattern::Nothing => {}
                }
            }
        }
        index
    }

    /// The stages (by index in the plan) whose declared outputs cover `file`.
    pub fn owners(&self, file: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let mut prefix = file;
        loop {
            if let Some(ids) = self.paths.get(prefix) {
                out.extend(ids);
            }
            match prefix.rfind('/') {
                Some(cut) => prefix = &prefix[..cut],
                None => break,
            }
        }
        out.extend(
            self.globs
                .iter()
                .filter(|(g, _)| g.covers(file))
                .map(|(_, i)| *i),
        );
        out
    }
}
