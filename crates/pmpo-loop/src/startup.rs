//! Startup of `pmpo refine`: the request is checked whole before anything is
//! written, the named artifact is created, resumed or given a new cycle, and
//! the controller runs.

use std::path::PathBuf;
use std::time::Instant;

use pmpo_store::artifacts::{ArtifactError, Artifacts, RefinementState};
use pmpo_store::lock::{self, LockHolder};
use pmpo_store::provider::Provider;
use pmpo_store::{Workspace, now_rfc3339};
use serde_json::Value;

use crate::content_type;
use crate::controller::{
    Controller, Env, LoopError, LoopState, REFINER_LOCK, Report, Request, Started, Timings,
    loop_state, store_loop, workflow_log,
};
use crate::domain::{self, AdapterInput};
use crate::pending;
use crate::triggers::{self, Dispatcher};

fn check_inputs(ws: &Workspace, inputs: &[String]) -> Result<Vec<String>, LoopError> {
    let mut out = Vec::new();
    for raw in inputs {
        let rel = raw.strip_prefix("./").unwrap_or(raw);
        let abs = if std::path::Path::new(rel).is_absolute() {
            PathBuf::from(rel)
        } else {
            ws.root().join(rel)
        };
        let rel = match abs.canonicalize() {
            Ok(c) => match ws.relative(&c) {
                Some(r) => r,
                None => {
                    return Err(LoopError::Usage(format!(
                        "input `{raw}` is outside the workspace `{}`; copy it into the workspace (inputs are read from there, and nothing outside it is touched)",
                        ws.root().display()
                    )));
                }
            },
            Err(_) => {
                return Err(LoopError::Usage(format!(
                    "input `{raw}` does not exist (looked for `{}`)",
                    abs.display()
                )));
            }
        };
        let resolved = ws
            .resolve(&rel)
            .map_err(|e| LoopError::Usage(format!("input `{raw}`: {e}")))?;
        if !resolved.is_file() {
            return Err(LoopError::Usage(format!("input `{raw}` is not a file")));
        }
        out.push(rel);
    }
    Ok(out)
}

pub(crate) fn head_text(ws: &Workspace, rel: &str, max: usize) -> String {
    // Read as tools read: never through a link leading out of the workspace.
    let Ok(bytes) = ws.read(rel) else {
        return String::new();
    };
    let cut = &bytes[..bytes.len().min(max)];
    if cut.contains(&0) {
        return String::new();
    }
    String::from_utf8_lossy(cut).into_owned()
}

/// Runs (or resumes) the refinement of one named artifact.
pub async fn refine(req: Request, env: &mut Env<'_>) -> Result<Report, LoopError> {
    let started = Instant::now();
    let ws = Workspace::open(&req.workspace)?;
    let (req, inputs) = check_request(&ws, req)?;
    let provider = Provider::resolve(&ws);
    let input_texts: Vec<String> = inputs.iter().map(|p| head_text(&ws, p, 4096)).collect();
    // Everything that can be refused is refused before anything is written.
    prevalidate(&ws, &provider, &req, &inputs, &input_texts)?;
    let holder = LockHolder {
        pid: std::process::id(),
        run_id: req.name.clone(),
        since: now_rfc3339(),
        command: format!("pmpo refine {}", req.name),
        host: String::new(),
    };
    let _guard = match lock::acquire_at(&ws, REFINER_LOCK, &holder, false) {
        Ok(g) => g,
        Err(lock::LockError::Busy(h)) => return Err(LoopError::Busy(h)),
        Err(lock::LockError::Store(e)) => return Err(e.into()),
    };
    let mut notes: Vec<String> = provider.degraded.clone();
    let arts = Artifacts {
        ws: &ws,
        provider: &provider,
    };
    let (state, started_how) = open_artifact(&arts, &req, &inputs, &input_texts, &mut notes)?;
    let dispatcher_triggers = if state.workflow_triggers.is_empty() {
        Vec::new()
    } else {
        triggers::parse_triggers(&Value::Array(state.workflow_triggers.clone())).map_err(|e| {
            LoopError::Usage(format!("the artifact's stored workflow triggers: {e}"))
        })?
    };
    let dispatcher = Dispatcher::new(
        ws.clone(),
        workflow_log(&state.artifact_name),
        dispatcher_triggers,
    );
    let client = if req.offline {
        None
    } else {
        env.client.clone().filter(|c| c.is_configured())
    };
    let mut ls = loop_state(&state);
    if ls.test_generation && client.is_none() && state.content_type.starts_with("meta:") {
        // Running the prompt needs a model: without one the prompt itself is judged.
        notes.push(
            "test generation needs a model endpoint; without one only the prompt is evaluated (prompt_quality)".into(),
        );
        ls.evaluation_strategy = content_type::Strategy::PromptQuality.as_str().into();
    }
    let mut c = Controller {
        ws: &ws,
        arts: &arts,
        state,
        ls,
        env,
        client,
        dispatcher,
        notes,
        timings: Timings::default(),
        started_how,
        pending: None,
    };
    let outcome = c.run().await;
    if let Ok(o) = &outcome
        && !matches!(
            o,
            crate::controller::Outcome::AwaitingAnswer | crate::controller::Outcome::Cancelled
        )
    {
        // The question it waited on was answered (or is no longer asked).
        if let Err(e) = pending::clear(&ws, &c.state.artifact_name) {
            c.notes
                .push(format!("the answered question is still listed: {e}"));
        }
    }
    let report = outcome.map(|o| c.report(o));
    c.dispatcher.finish(std::time::Duration::from_secs(60));
    let mut report = report?;
    report.timings.total_ms = started.elapsed().as_secs_f64() * 1000.0;
    report.timings.engine_ms = (report.timings.total_ms
        - report.timings.stages_ms
        - report.timings.teardown_ms
        - report.timings.model_ms
        - report.timings.person_ms)
        .max(0.0);
    Ok(report)
}

/// The checks of a request that need nothing but the workspace: the name,
/// type, content type, iteration count, triggers and input files. Returns the
/// request with its components' files normalized, and the inputs.
fn check_request(ws: &Workspace, req: Request) -> Result<(Request, Vec<String>), LoopError> {
    Artifacts::check_name(&req.name)?;
    if let Some(t) = &req.artifact_type {
        domain::domain(t).map_err(LoopError::Usage)?;
    }
    if let Some(ct) = &req.content_type {
        content_type::check(ct).map_err(LoopError::Usage)?;
    }
    if let Some(0) = req.max_iterations {
        return Err(LoopError::Usage(
            "--max-iterations must be at least 1".into(),
        ));
    }
    // Triggers are checked whole before anything is written (they are stored
    // as given, and parsed again for the dispatcher).
    if let Some(v) = &req.triggers {
        triggers::parse_triggers(v)
            .map_err(|e| LoopError::Usage(format!("workflow triggers: {e}")))?;
    }
    let inputs = check_inputs(ws, &req.inputs)?;
    // A composite's `KIND=INPUT` files are inputs too.
    let mut components = Vec::new();
    for c in &req.components {
        match c.split_once('=') {
            Some((kind, file)) => {
                let file = check_inputs(ws, &[file.to_string()])?.remove(0);
                components.push(format!("{kind}={file}"));
            }
            None => components.push(c.clone()),
        }
    }
    Ok((Request { components, ..req }, inputs))
}

/// Startup: creates the named artifact, gives a finalized one a new cycle, or
/// resumes the running one (with this call's flags applied), and saves it.
fn open_artifact(
    arts: &Artifacts<'_>,
    req: &Request,
    inputs: &[String],
    input_texts: &[String],
    notes: &mut Vec<String>,
) -> Result<(RefinementState, Started), LoopError> {
    if req.new_lineage
        && let Some(to) = arts.set_aside_lineage(&req.name)?
    {
        notes.push(format!(
            "the earlier lineage of `{}` was moved to {to}; a new one starts",
            req.name
        ));
    }
    let existing = match arts.load(&req.name) {
        Ok(s) => Some(s),
        Err(ArtifactError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let (mut state, started_how) = match existing {
        Some(s) if s.finalized_at.is_none() => (s, Started::Resumed),
        prior => {
            let (artifact_type, detected) =
                type_and_content_type(req, prior.as_ref(), inputs, input_texts)?;
            let is_new_cycle = prior.is_some();
            let source = detected.source;
            let seed = |state: &mut RefinementState| {
                let mut ls = if is_new_cycle {
                    loop_state(state)
                } else {
                    LoopState::default()
                };
                // A new cycle keeps the settings, not the progress.
                ls.focus.clear();
                ls.run_id = None;
                ls.approval = None;
                ls.pending_decision = None;
                ls.last_decision = None;
                ls.content_type_source = source.to_string();
                store_loop(state, &ls);
                apply_request(state, req, inputs);
            };
            let (_, state) = arts.init_seeded(
                &req.name,
                Some(&artifact_type),
                Some(&detected.content_type),
                req.max_iterations,
                &seed,
            )?;
            let how = if is_new_cycle {
                Started::NewCycle
            } else {
                Started::Created
            };
            (state, how)
        }
    };
    // A new artifact or cycle had the flags applied before its first save.
    let changed = if started_how == Started::Resumed {
        apply_request(&mut state, req, inputs)
    } else {
        Vec::new()
    };
    if !changed.is_empty() {
        notes.push(format!(
            "changed for this cycle: {}; the specification is made again before the next plan",
            changed.join(", ")
        ));
        let mut ls = loop_state(&state);
        ls.respecify = true;
        store_loop(&mut state, &ls);
    }
    arts.save(&mut state)?;
    Ok((state, started_how))
}

/// Applies the flags of this call to the state: given flags replace the
/// stored settings. Returns the settings that changed.
fn apply_request(
    state: &mut RefinementState,
    req: &Request,
    inputs: &[String],
) -> Vec<&'static str> {
    let mut ls = loop_state(state);
    let mut changed = Vec::new();
    if !req.inputs.is_empty() && ls.inputs != inputs {
        ls.inputs = inputs.to_vec();
        changed.push("inputs");
    }
    if req.intent.is_some() && ls.intent != req.intent {
        ls.intent = req.intent.clone();
        changed.push("intent");
    }
    if let Some(a) = req.requires_approval {
        ls.requires_approval = a;
    }
    if let Some(t) = req.test_generation {
        ls.test_generation = t;
    }
    if req.target_platform.is_some() {
        ls.target_platform = req.target_platform.clone();
    }
    if !req.components.is_empty() {
        ls.components = req.components.clone();
    }
    for (k, v) in &req.options {
        ls.options.insert(k.clone(), v.clone());
    }
    if let Some(m) = req.max_iterations {
        state.max_iterations = m;
    }
    if let Some(ct) = &req.content_type {
        state.content_type = ct.clone();
    }
    ls.evaluation_strategy = content_type::strategy(&state.content_type, ls.test_generation)
        .as_str()
        .to_string();
    if let Some(t) = &req.triggers {
        state.workflow_triggers = match t {
            Value::Object(o) => o
                .get("triggers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            Value::Array(a) => a.clone(),
            _ => vec![],
        };
    }
    store_loop(state, &ls);
    changed
}

/// The artifact type of a new artifact or cycle (flag, prior cycle, or what
/// the inputs make plain) and its content type (flag, prior cycle when no new
/// inputs are given, or detected).
fn type_and_content_type(
    req: &Request,
    prior: Option<&RefinementState>,
    inputs: &[String],
    input_texts: &[String],
) -> Result<(String, content_type::Detected), LoopError> {
    let artifact_type = req
        .artifact_type
        .clone()
        .or_else(|| prior.map(|p| p.artifact_type.clone()))
        .or_else(|| {
            let d = content_type::detect(
                req.content_type.as_deref(),
                inputs,
                input_texts,
                None,
                req.intent.as_deref(),
            );
            (d.source != "default")
                .then(|| content_type::artifact_type_of(&d.content_type))
                .flatten()
                .map(str::to_string)
        })
        .ok_or_else(|| {
            LoopError::Usage(format!(
                "`{}` is a new artifact: say what it is with --type ({})",
                req.name,
                domain::DOMAINS
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    domain::domain(&artifact_type).map_err(LoopError::Usage)?;
    let detected = match (&req.content_type, prior) {
        (None, Some(p)) if req.inputs.is_empty() => content_type::Detected {
            content_type: p.content_type.clone(),
            source: "prior_cycle",
        },
        _ => content_type::detect(
            req.content_type.as_deref(),
            inputs,
            input_texts,
            Some(&artifact_type),
            req.intent.as_deref(),
        ),
    };
    Ok((artifact_type, detected))
}

/// The checks of a new artifact or cycle that need no write: its type, its
/// content type and whether its adapter can work with the inputs.
fn prevalidate(
    ws: &Workspace,
    provider: &Provider,
    req: &Request,
    inputs: &[String],
    input_texts: &[String],
) -> Result<(), LoopError> {
    let arts = Artifacts { ws, provider };
    let existing = match arts.load(&req.name) {
        Ok(s) => Some(s),
        Err(ArtifactError::NotFound(_)) => None,
        Err(ArtifactError::StateMissing { .. }) if req.new_lineage => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(state) = &existing {
        if let Some(t) = &req.artifact_type
            && t != &state.artifact_type
        {
            return Err(ArtifactError::TypeMismatch {
                name: req.name.clone(),
                actual: state.artifact_type.clone(),
                requested: t.clone(),
            }
            .into());
        }
        if state.finalized_at.is_none() {
            if let Some(ct) = &req.content_type
                && ct != &state.content_type
            {
                return Err(LoopError::Usage(format!(
                    "`{}` is a {} artifact in a running cycle; its content type cannot change now (finish the cycle, then pass --content-type)",
                    state.artifact_name, state.content_type
                )));
            }
            return Ok(());
        }
    }
    let (artifact_type, detected) =
        type_and_content_type(req, existing.as_ref(), inputs, input_texts)?;
    let content_type = detected.content_type;
    let prior = existing.as_ref().map(loop_state).unwrap_or_default();
    let inputs: Vec<String> = if req.inputs.is_empty() {
        prior.inputs.clone()
    } else {
        inputs.to_vec()
    };
    let mut options = prior.options.clone();
    options.extend(req.options.clone());
    let components = if req.components.is_empty() {
        prior.components.clone()
    } else {
        req.components.clone()
    };
    let input = AdapterInput {
        name: &req.name,
        artifact_type: &artifact_type,
        content_type: &content_type,
        inputs: &inputs,
        intent: req.intent.as_deref().or(prior.intent.as_deref()),
        options: &options,
        target_platform: req
            .target_platform
            .as_deref()
            .or(prior.target_platform.as_deref()),
        test_generation: req.test_generation.unwrap_or(prior.test_generation),
        components: &components,
        root: ws.root(),
    };
    domain::build(&input).map(|_| ()).map_err(LoopError::Usage)
}
