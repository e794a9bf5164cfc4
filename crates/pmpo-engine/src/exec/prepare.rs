//! Preparing a stage: skip it (an upstream failure, fail-fast, a cancel or
//! an abort), reuse an earlier identical result, or work out its inputs and
//! cache key so it can run.

use super::*;
use pmpo_store::db::stamp;
use serde::Serialize;

/// What a stage is, as its definition hash reads it: the same bytes as the
/// JSON object of these fields in this order, written without first copying
/// the stage into a JSON value.
#[derive(Serialize)]
struct Definition<'a> {
    id: &'a str,
    tool: &'a str,
    requires_execution: Option<bool>,
    with: &'a Map<String, Value>,
    outputs: &'a [String],
    inputs: &'a [String],
    depends_on: &'a [String],
}

/// The hash of what a stage is, independent of any run.
pub(crate) fn definition_hash(stage: &Stage, tool: &str) -> String {
    // The id is part of it: a stage reuses its own earlier results, not those of
    // another stage that happens to be written the same way.
    let def = Definition {
        id: &stage.id,
        tool,
        requires_execution: stage.requires_execution,
        with: &stage.inputs,
        outputs: &stage.outputs,
        inputs: &stage.input_files,
        depends_on: &stage.depends_on,
    };
    blake3::hash(&serde_json::to_vec(&def).expect("json"))
        .to_hex()
        .to_string()
}

/// What a stage's cache key is the hash of (the JSON object of these fields
/// in this order).
#[derive(Serialize)]
struct KeyOf<'a> {
    v: u32,
    definition: &'a str,
    resolved: Option<&'a Map<String, Value>>,
    input_files: Vec<(&'a String, &'a String)>,
    upstream: Vec<(&'a str, &'a Vec<(String, String)>)>,
}

/// Strings in the inputs that name an existing workspace file (a script a
/// command runs, a file it reads) are part of the cache key even when the
/// stage does not declare them. Digests come from stamps when they vouch.
pub(super) fn mentioned_files(
    ws: &Workspace,
    db: &mut dyn ExecStore,
    value: &Value,
    out: &mut BTreeMap<String, FileDigest>,
) {
    match value {
        Value::String(s) => {
            if s.is_empty()
                || s.len() > 1024
                || s.contains(['\n', '\0'])
                || s.starts_with('-')
                || s.starts_with('/')
            {
                return;
            }
            // Most such strings name nothing: one stat says so before the
            // path is resolved (and checked for links) at all.
            if std::fs::metadata(ws.root().join(s)).is_ok_and(|m| m.is_file())
                && let Ok(path) = ws.resolve(s)
                && let Ok(m) = std::fs::metadata(&path)
                && m.is_file()
                && m.len() <= 64 * 1024 * 1024
                && let Ok(d) = stamp::digest(db, s, &path)
            {
                out.insert(s.clone(), d);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| mentioned_files(ws, db, v, out)),
        Value::Object(map) => map.values().for_each(|v| mentioned_files(ws, db, v, out)),
        _ => {}
    }
}

/// Which earlier result a stage can reuse.
pub(super) enum Reuse {
    /// Completed in the interrupted run this run continues.
    Carried(TaskRow),
    Cached(CacheRow),
}

/// A file as a stage's row or cache row lists it.
#[derive(serde::Deserialize)]
struct Listed {
    path: String,
    size: u64,
    blake3: String,
}

/// The files an earlier result recorded, when they are all still there with
/// the same content. A file's digest comes from its stamp when the stamp
/// vouches for it (see [`pmpo_store::db::stamp`]), else from reading it.
pub(super) fn files_intact(
    ws: &Workspace,
    db: &mut dyn ExecStore,
    stage: &Stage,
    files_json: &str,
) -> Option<Vec<GeneratedFile>> {
    let recorded: Vec<GeneratedFile> = serde_json::from_str::<Vec<Listed>>(files_json)
        .ok()?
        .into_iter()
        .map(|v| GeneratedFile {
            path: v.path,
            size: v.size,
            blake3: v.blake3,
            stage: stage.id.clone(),
            change: Change::Unchanged,
            before: None,
        })
        .collect();
    let mut digest = |rel: &str, abs: &std::path::Path| stamp::digest(db, rel, abs);
    // The declared outputs must expand to recorded files only, and every
    // recorded file (the tool's own outputs too) must be there, unchanged.
    let now = outputs::expand_with(ws, &stage.outputs, &mut digest);
    if !now.missing.is_empty() || !now.problems.is_empty() {
        return None;
    }
    if now
        .files
        .keys()
        .any(|p| !recorded.iter().any(|f| &f.path == p))
    {
        return None;
    }
    for f in &recorded {
        let d = match now.files.get(&f.path) {
            Some(d) => Some(d.clone()),
            None => ws
                .resolve(&f.path)
                .ok()
                .and_then(|p| digest(&f.path, &p).ok()),
        };
        match d {
            Some(d) if d.blake3 == f.blake3 && d.size == f.size => {}
            _ => return None,
        }
    }
    Some(recorded)
}

/// A stage that must run, with what `prepare` worked out for it.
pub(super) struct Prepared {
    pub(super) result: StageResult,
    pub(super) def_hash: String,
    pub(super) cache_key: String,
    pub(super) resolved: Result<Map<String, Value>, String>,
    pub(super) input_problem: Option<String>,
}

/// Skips a stage, reuses an earlier result, or says it must run.
pub(super) fn prepare(
    cx: &Cx<'_>,
    shared: &RefCell<Shared<'_>>,
    idx: usize,
    pos: usize,
) -> Result<Option<Prepared>, EngineError> {
    let stage = &cx.plan.doc.plan.stages[idx];
    let at = Some((stage.id.as_str(), pos + 1));
    let tool_name = cx.engine.registry.resolve_name(stage.tool_name());
    let result = StageResult::new(stage, tool_name);
    let mut guard = shared.borrow_mut();
    let sh = &mut *guard;
    // `pmpo resume --abort` answers this stage: nothing after it may start, even
    // before its own future first runs.
    if cx.opts.decision == Some(Decision::Abort)
        && cx.prior.get(&stage.id).is_some_and(awaits)
        && sh.aborted_at.is_none_or(|p| pos < p)
    {
        sh.aborted_at = Some(pos);
    }
    if let Some(reason) = skip_reason(cx, sh, stage, pos) {
        let skip = Skip {
            idx,
            pos,
            at,
            def_hash: "",
            cache_key: None,
            attempts: 0,
            duration: None,
        };
        sh.record_skip(cx.run_id, result, skip, reason)?;
        return Ok(None);
    }
    let prepared = inputs_and_key(cx, sh, stage, tool_name, result);
    let reuse = reusable(cx, sh, stage, &prepared)?;
    let reused = reuse.and_then(|r| {
        let files_json = match &r {
            Reuse::Carried(t) => &t.files,
            Reuse::Cached(c) => &c.files,
        };
        files_intact(cx.ws, &mut *sh.rec.db, stage, files_json).map(|files| (r, files))
    });
    match reused {
        None => Ok(Some(prepared)),
        Some((r, files)) => {
            reuse_result(cx, sh, (idx, pos, at), prepared, r, files)?;
            Ok(None)
        }
    }
}

/// Why a stage does not run: an upstream failure, an earlier failure
/// (fail-fast), an abort or a cancel.
fn skip_reason(cx: &Cx<'_>, sh: &mut Shared<'_>, stage: &Stage, pos: usize) -> Option<String> {
    let status_of = |d: &HashMap<String, Done>, id: &str| d.get(id).and_then(|x| x.status);
    if sh.cancelled || cx.opts.cancel.is_cancelled() {
        sh.cancelled = true;
        Some("not run: the run was cancelled".to_string())
    } else if sh.aborted_at.is_some_and(|p| pos > p) {
        Some("not run: the run was aborted".to_string())
    } else if let Some(dep) = stage
        .depends_on
        .iter()
        .find(|d| status_of(&sh.done, d).is_some_and(|s| s.is_failure()))
    {
        Some(format!(
            "upstream stage `{dep}` {}",
            status_of(&sh.done, dep).map_or("FAILED", StageStatus::as_str)
        ))
    } else if let (Some((at_pos, f)), false) = (&sh.first_failure, cx.opts.keep_going)
        && pos > *at_pos
    {
        Some(format!(
            "not run: stage `{f}` failed and the run stops at the first failure (use --keep-going to run independent stages)"
        ))
    } else {
        None
    }
}

/// The stage's inputs and its cache key: its definition, its resolved
/// inputs, the files it reads and what its dependencies produced.
fn inputs_and_key(
    cx: &Cx<'_>,
    sh: &mut Shared<'_>,
    stage: &Stage,
    tool_name: &str,
    result: StageResult,
) -> Prepared {
    let def_hash = definition_hash(stage, tool_name);
    let resolved = resolve_inputs(&stage.inputs, &sh.data);
    let mut input_files = BTreeMap::new();
    let mut input_problem = None;
    if !stage.input_files.is_empty() {
        let db = &mut *sh.rec.db;
        let exp = outputs::expand_with(cx.ws, &stage.input_files, &mut |rel, abs| {
            stamp::digest(db, rel, abs)
        });
        if let Some(m) = exp.missing.first() {
            input_problem = Some(format!("declared input missing: {m}"));
        } else if let Some(p) = exp.problems.first() {
            input_problem = Some(p.clone());
        }
        input_files.extend(exp.files);
    }
    if let Ok(r) = &resolved {
        mentioned_files(
            cx.ws,
            &mut *sh.rec.db,
            &Value::Object(r.clone()),
            &mut input_files,
        );
    }
    let upstream: Vec<(&str, &Vec<(String, String)>)> = stage
        .depends_on
        .iter()
        .filter_map(|d| sh.done.get(d.as_str()).map(|x| (d.as_str(), &x.files)))
        .collect();
    let key = KeyOf {
        v: 1,
        definition: &def_hash,
        resolved: resolved.as_ref().ok(),
        input_files: input_files.iter().map(|(p, d)| (p, &d.blake3)).collect(),
        upstream,
    };
    let cache_key = blake3::hash(&serde_json::to_vec(&key).expect("json"))
        .to_hex()
        .to_string();
    Prepared {
        result,
        def_hash,
        cache_key,
        resolved,
        input_problem,
    }
}

/// An earlier result with the same cache key: carried over from the
/// interrupted run, or from the cache (unless `--force`).
fn reusable(
    cx: &Cx<'_>,
    sh: &mut Shared<'_>,
    stage: &Stage,
    p: &Prepared,
) -> Result<Option<Reuse>, EngineError> {
    let forced = match &cx.opts.force {
        Force::None => false,
        Force::All => true,
        Force::Stages(ids) => ids.iter().any(|i| i == &stage.id),
    };
    // The fields later stages read of this one (most stages: none, and then
    // the recorded data need not be read at all).
    let fields: Vec<&String> = cx
        .wanted
        .iter()
        .filter(|(s, _)| s == &stage.id)
        .map(|(_, f)| f)
        .collect();
    let needs = |json: &str| {
        fields.is_empty() || {
            let d: Map<String, Value> = serde_json::from_str(json).unwrap_or_default();
            fields.iter().all(|f| d.contains_key(*f))
        }
    };
    let key = &p.cache_key;
    Ok(
        if forced || p.resolved.is_err() || p.input_problem.is_some() {
            None
        } else if let Some(t) = cx.prior.get(&stage.id).filter(|t| {
            succeeded(t) && t.cache_key.as_deref() == Some(key.as_str()) && needs(&t.data)
        }) {
            Some(Reuse::Carried(t.clone()))
        } else if stage.cache {
            sh.rec
                .db
                .cache_get(key)?
                .filter(|c| needs(&c.data))
                .map(Reuse::Cached)
        } else {
            None
        },
    )
}

/// Records a reused result as the stage's own (COMPLETED when carried over, CACHED otherwise).
fn reuse_result(
    cx: &Cx<'_>,
    sh: &mut Shared<'_>,
    (idx, pos, at): (usize, usize, Option<(&str, usize)>),
    p: Prepared,
    r: Reuse,
    files: Vec<GeneratedFile>,
) -> Result<(), EngineError> {
    let stage = &cx.plan.doc.plan.stages[idx];
    let mut result = p.result;
    let (status, outputs_json, data_json, from, reused) = match &r {
        Reuse::Carried(t) => (
            StageStatus::Completed,
            t.outputs.clone(),
            t.data.clone(),
            t.run_id.clone(),
            Reused::BeforeInterruption,
        ),
        Reuse::Cached(c) => (
            StageStatus::Cached,
            c.outputs.clone(),
            c.data.clone(),
            c.run_id.clone(),
            Reused::Cached {
                run_id: c.run_id.clone(),
            },
        ),
    };
    result.status = status;
    result.reason = None;
    result.outputs = serde_json::from_str(&outputs_json).unwrap_or_default();
    result.files = files;
    result.reused_from = Some(from);
    if let Reuse::Carried(t) = &r {
        result.started_at = t.started_at.clone();
        result.finished_at = t.finished_at.clone();
        result.duration_ms = t.duration_ms;
        result.exit_code = t.exit_code.map(|c| c as i32);
        result.attempts = t.attempts as u32;
    }
    if cx.wanted.iter().any(|(s, _)| s == &stage.id) {
        sh.data.insert(
            stage.id.clone(),
            serde_json::from_str(&data_json).unwrap_or_default(),
        );
    }
    // A stage carried over from the interrupted run already has its row; a
    // reused stage makes no attempt, so its stage log is left as it is.
    if status == StageStatus::Cached {
        sh.rec.db.put_task(&task_row(
            cx.run_id,
            pos,
            &result,
            &p.def_hash,
            Some(&p.cache_key),
            &data_json,
            0,
        ))?;
    }
    let what = What::TaskCompleted {
        reused: Some(reused),
        fallback: None,
    };
    sh.rec.emit(what, at, Some(status), Some(Duration::ZERO))?;
    sh.record_done(idx, result);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashes are those of the JSON objects they always were: a cache
    /// written by an earlier pmpo is still found.
    #[test]
    fn the_definition_and_key_bytes_are_the_json_objects_of_before() {
        let stage: Stage = serde_json::from_value(json!({
            "id": "s", "with": {"command": ["sh", "-c", "echo 1 > out/1.txt"], "n": 1.5},
            "outputs": ["out/1.txt"], "inputs": ["in.txt"], "depends_on": ["r"],
            "requires_execution": true
        }))
        .unwrap();
        let before = json!({
            "id": stage.id, "tool": "run", "requires_execution": stage.requires_execution,
            "with": stage.inputs, "outputs": stage.outputs, "inputs": stage.input_files,
            "depends_on": stage.depends_on,
        });
        assert_eq!(
            definition_hash(&stage, "run"),
            blake3::hash(&serde_json::to_vec(&before).unwrap())
                .to_hex()
                .to_string()
        );
        let files = vec![("a".to_string(), "b".to_string())];
        let upstream = vec![("r", &files)];
        let (p, d) = ("in.txt".to_string(), "c".to_string());
        let key = KeyOf {
            v: 1,
            definition: "d",
            resolved: Some(&stage.inputs),
            input_files: vec![(&p, &d)],
            upstream: upstream.clone(),
        };
        let before = json!({
            "v": 1, "definition": "d", "resolved": Some(&stage.inputs),
            "input_files": vec![(&p, &d)], "upstream": upstream,
        });
        assert_eq!(
            serde_json::to_vec(&key).unwrap(),
            serde_json::to_vec(&before).unwrap()
        );
    }
}
