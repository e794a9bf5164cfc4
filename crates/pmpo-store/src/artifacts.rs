//! Named artifacts: `.refiner/registry.json` and, per artifact,
//! `.refiner/artifacts/<name>/state.json` (compatible with the reference
//! refinement-state schema), `checkpoints/`, and `history/<name>/<time>/` for
//! finalized cycles.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::provider::Provider;
use crate::{Durability, StoreError, Workspace, now_rfc3339};

pub const REFINER_DIR: &str = ".refiner";
pub const REGISTRY_FILE: &str = ".refiner/registry.json";
/// Version of pmpo's own fields in state.json and registry.json.
pub const STATE_SCHEMA_VERSION: u32 = 1;

/// The artifact types pmpo has domain adapters for.
pub const ARTIFACT_TYPES: &[&str] = &[
    "logo",
    "ui",
    "a2ui",
    "image",
    "content",
    "code",
    "meta-prompt",
];
/// The phases of the loop (checkpoints name one).
pub const PHASES: &[&str] = &["specify", "plan", "execute", "reflect", "persist"];

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}")]
    InvalidName(String),
    #[error("Unknown artifact_type: {0} (known: {known})", known = ARTIFACT_TYPES.join(", "))]
    UnknownType(String),
    #[error(
        "content type `{0}` must start with `direct:` or `meta:` (e.g. direct:svg, meta:image-prompt)"
    )]
    BadContentType(String),
    #[error("there is no artifact `{0}` in this workspace")]
    NotFound(String),
    #[error("artifact `{name}` is a {actual}, not a {requested}")]
    TypeMismatch {
        name: String,
        actual: String,
        requested: String,
    },
    #[error("unknown phase `{0}` (phases: {phases})", phases = PHASES.join(", "))]
    UnknownPhase(String),
    #[error("artifact `{0}` is already finalized (at {1}); `pmpo init {0}` starts a new cycle")]
    AlreadyFinalized(String, String),
    #[error("`{path}` is damaged: {detail}")]
    Corrupt { path: String, detail: String },
    #[error(
        "`{path}` is the state of artifact `{found}`, but it sits in the folder of `{expected}`"
    )]
    NameMismatch {
        path: String,
        found: String,
        expected: String,
    },
    #[error(
        "the state of artifact `{name}` is missing, but {what} survive: starting over would replace its lineage"
    )]
    StateMissing { name: String, what: String },
    #[error(
        "`{path}` was written by a newer pmpo (schema {found}; this build reads up to {STATE_SCHEMA_VERSION})"
    )]
    TooNew { path: String, found: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ArtifactError {
    pub fn hint(&self) -> String {
        match self {
            ArtifactError::InvalidName(_) => "use letters, digits, `-`, `_` and `.`, starting with a letter or digit (at most 100 bytes)".into(),
            ArtifactError::UnknownType(_) => "pass --type with one of the known types".into(),
            ArtifactError::BadContentType(_) => "pass e.g. --content-type direct:svg".into(),
            ArtifactError::NotFound(_) => "it may be in another workspace: name it with `-w DIR` (`pmpo list -w DIR` shows its registry); or create it here with `pmpo init NAME --type TYPE`".into(),
            ArtifactError::TypeMismatch { .. } => "use another name for an artifact of another type".into(),
            ArtifactError::UnknownPhase(_) => "name one of the phases".into(),
            ArtifactError::AlreadyFinalized(..) => "finalized cycles are kept under .refiner/history/".into(),
            ArtifactError::Corrupt { .. } => "run `pmpo doctor` to see the problem and repair it; nothing was changed".into(),
            ArtifactError::NameMismatch { expected, .. } => format!(
                "set its `artifact_name` to `{expected}` if it is that artifact's state, or `pmpo doctor --repair` restores the state from the newest checkpoint; nothing was changed"
            ),
            ArtifactError::StateMissing { name, .. } => format!(
                "`pmpo doctor --repair` recovers the state from the newest checkpoint; to start `{name}` anew on purpose, pass --new-lineage (its checkpoints are moved under .refiner/history/{name}/, not deleted); nothing was changed"
            ),
            ArtifactError::TooNew { .. } => "upgrade pmpo; the file was left untouched".into(),
            ArtifactError::Store(_) => "check that the workspace is writable".into(),
        }
    }
}

/// One checkpoint as listed in state.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointRef {
    pub checkpoint_id: String,
    pub phase: String,
    pub iteration: u64,
    pub timestamp: String,
}

/// The convergence status of a cycle that has not ended.
pub const CONVERGENCE_RUNNING: &str = "running";

/// A named artifact's refinement state (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefinementState {
    pub refinement_id: String,
    pub artifact_name: String,
    pub artifact_type: String,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_provider: Option<Value>,
    pub started_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub finalized_at: Option<String>,
    pub current_iteration: u64,
    pub max_iterations: u64,
    /// [`CONVERGENCE_RUNNING`] until the cycle ends, then why it ended
    /// (`converged`, `max_iterations_exceeded`, `user_terminated`, or the
    /// words a person gave `pmpo finalize --status`: free text, so a string).
    pub convergence_status: String,
    #[serde(default)]
    pub goals: Vec<String>,
    #[serde(default)]
    pub constraints: Vec<Value>,
    #[serde(default)]
    pub phases_completed: Vec<String>,
    #[serde(default)]
    pub iteration_history: Vec<Value>,
    #[serde(default)]
    pub checkpoints: Vec<CheckpointRef>,
    #[serde(default)]
    pub workflow_triggers: Vec<Value>,
    #[serde(default)]
    pub prior_cycle_id: Option<String>,
    #[serde(default = "schema_version")]
    pub pmpo_schema_version: u32,
    /// Anything else a tool wrote; kept as it is.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn schema_version() -> u32 {
    STATE_SCHEMA_VERSION
}

/// An entry of `.refiner/registry.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistryEntry {
    pub refinement_id: String,
    pub artifact_type: String,
    pub content_type: String,
    /// `running` or `finalized`.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub cycles: u64,
    pub state: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    #[serde(default = "schema_version")]
    pub pmpo_schema_version: u32,
    #[serde(default)]
    pub artifacts: BTreeMap<String, RegistryEntry>,
}

/// What `init` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InitOutcome {
    Created,
    Resumed,
    NewCycle,
}

/// The default content type of an artifact type.
pub fn default_content_type(artifact_type: &str) -> &'static str {
    match artifact_type {
        "logo" => "direct:image",
        "ui" => "direct:html",
        "a2ui" => "direct:a2ui",
        "image" => "direct:image",
        "content" => "direct:content",
        "code" => "direct:code",
        _ => "meta:agent-prompt",
    }
}

fn new_id() -> String {
    // A random-looking UUID-shaped id from time, pid and a counter (no RNG dependency).
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = format!(
        "{:?}-{}-{}",
        std::time::SystemTime::now(),
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let h = blake3::hash(seed.as_bytes()).to_hex();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub fn artifact_dir(name: &str) -> String {
    format!("{REFINER_DIR}/artifacts/{name}")
}

pub fn state_path(name: &str) -> String {
    format!("{}/state.json", artifact_dir(name))
}

/// Reads a JSON file of pmpo's, with errors that name it.
fn read_json<T: for<'de> Deserialize<'de>>(
    ws: &Workspace,
    rel: &str,
) -> Result<Option<T>, ArtifactError> {
    // pmpo's own file: never read through a link at it.
    let Some(text) = ws.read_own(rel)? else {
        return Ok(None);
    };
    let value: Value = serde_json::from_slice(&text).map_err(|e| ArtifactError::Corrupt {
        path: rel.into(),
        detail: format!("not valid JSON ({e})"),
    })?;
    if let Some(v) = value.get("pmpo_schema_version").and_then(Value::as_u64)
        && v > STATE_SCHEMA_VERSION as u64
    {
        return Err(ArtifactError::TooNew {
            path: rel.into(),
            found: v,
        });
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| ArtifactError::Corrupt {
            path: rel.into(),
            detail: e.to_string(),
        })
}

fn write_json(ws: &Workspace, rel: &str, value: &impl Serialize) -> Result<(), ArtifactError> {
    let bytes = serde_json::to_vec_pretty(value).expect("state serializes");
    ws.write_atomic(rel, &bytes, Durability::Durable)?;
    Ok(())
}

/// The artifacts of one workspace, saved through a state provider.
pub struct Artifacts<'a> {
    pub ws: &'a Workspace,
    pub provider: &'a Provider,
}

impl<'a> Artifacts<'a> {
    pub fn registry(&self) -> Result<Registry, ArtifactError> {
        Ok(read_json(self.ws, REGISTRY_FILE)?.unwrap_or_default())
    }

    fn save_registry(&self, reg: &Registry) -> Result<(), ArtifactError> {
        write_json(self.ws, REGISTRY_FILE, reg)
    }

    pub fn check_name(name: &str) -> Result<(), ArtifactError> {
        pmpo_plan::validate_artifact_name(name).map_err(ArtifactError::InvalidName)
    }

    /// The state of artifact `name`. A state that names another artifact is
    /// refused (acting on it would write over that artifact), and so is a
    /// missing state whose checkpoints or registry entry survive (it is to be
    /// recovered, not silently replaced by a new lineage).
    pub fn load(&self, name: &str) -> Result<RefinementState, ArtifactError> {
        Self::check_name(name)?;
        let state = match self.provider.load(self.ws, name) {
            Some(state) => Some(state),
            None => read_json::<RefinementState>(self.ws, &state_path(name))?,
        };
        match state {
            Some(s) if s.artifact_name != name => Err(ArtifactError::NameMismatch {
                path: state_path(name),
                found: s.artifact_name,
                expected: name.into(),
            }),
            Some(s) => Ok(s),
            None => match self.lineage_traces(name) {
                Some(what) => Err(ArtifactError::StateMissing {
                    name: name.into(),
                    what,
                }),
                None => Err(ArtifactError::NotFound(name.into())),
            },
        }
    }

    /// Starts a new lineage on purpose (`--new-lineage`) where the state of
    /// `name` is gone but its checkpoints or registry entry survive: the
    /// artifact's folder moves, whole, to
    /// `.refiner/history/<name>/set-aside-<time>/` (nothing is deleted) and
    /// its registry entry is dropped. Returns where the folder went; `None`
    /// when there was nothing to set aside (the state is intact or the
    /// artifact is new). Call it under the workspace lock.
    pub fn set_aside_lineage(&self, name: &str) -> Result<Option<String>, ArtifactError> {
        match self.load(name) {
            Err(ArtifactError::StateMissing { .. }) => {}
            Ok(_) | Err(ArtifactError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        let from_rel = artifact_dir(name);
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let history = format!("{REFINER_DIR}/history/{name}");
        let to_rel = format!("{history}/set-aside-{stamp}");
        // pmpo's own folders: no link is followed on the way (a link at the
        // artifact's folder itself is moved as a link).
        if std::fs::symlink_metadata(self.ws.resolve_own(&history)?).is_err() {
            self.ws.create_dir_all(&history)?;
        }
        if std::fs::symlink_metadata(self.ws.root().join(&from_rel)).is_ok() {
            self.ws.rename_own(&from_rel, &to_rel)?;
        }
        let mut reg = self.registry()?;
        if reg.artifacts.remove(name).is_some() {
            self.save_registry(&reg)?;
        }
        Ok(Some(to_rel))
    }

    /// What is left of an artifact whose state is gone: its checkpoints, or
    /// its registry entry.
    fn lineage_traces(&self, name: &str) -> Option<String> {
        let checkpoints = self
            .ws
            .root()
            .join(artifact_dir(name))
            .join("checkpoints")
            .read_dir()
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        if checkpoints > 0 {
            return Some(format!("{checkpoints} checkpoint(s)"));
        }
        self.registry()
            .ok()
            .filter(|r| r.artifacts.contains_key(name))
            .map(|_| "its registry entry".to_string())
    }

    pub fn save(&self, state: &mut RefinementState) -> Result<(), ArtifactError> {
        state.updated_at = now_rfc3339();
        write_json(self.ws, &state_path(&state.artifact_name), state)?;
        self.provider.save(self.ws, &state.artifact_name, state);
        let mut reg = self.registry()?;
        let finalized = state.finalized_at.is_some();
        let entry = reg
            .artifacts
            .entry(state.artifact_name.clone())
            .or_insert_with(|| RegistryEntry {
                refinement_id: state.refinement_id.clone(),
                artifact_type: state.artifact_type.clone(),
                content_type: state.content_type.clone(),
                status: "running".into(),
                created_at: state.started_at.clone(),
                updated_at: state.updated_at.clone(),
                cycles: 0,
                state: state_path(&state.artifact_name),
            });
        if entry.refinement_id != state.refinement_id || entry.cycles == 0 {
            entry.cycles += 1;
        }
        entry.refinement_id = state.refinement_id.clone();
        entry.content_type = state.content_type.clone();
        entry.status = if finalized {
            "finalized".into()
        } else {
            "running".into()
        };
        entry.updated_at = state.updated_at.clone();
        self.save_registry(&reg)
    }

    /// Validates `init`'s arguments without touching anything.
    pub fn check_init(
        name: &str,
        artifact_type: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<(), ArtifactError> {
        Self::check_name(name)?;
        if let Some(t) = artifact_type
            && !ARTIFACT_TYPES.contains(&t)
        {
            return Err(ArtifactError::UnknownType(t.into()));
        }
        if let Some(c) = content_type
            && !(c.starts_with("direct:") || c.starts_with("meta:"))
        {
            return Err(ArtifactError::BadContentType(c.into()));
        }
        Ok(())
    }

    /// New artifact, resume a running one, or a new cycle seeded from a finalized one.
    pub fn init(
        &self,
        name: &str,
        artifact_type: Option<&str>,
        content_type: Option<&str>,
        max_iterations: Option<u64>,
    ) -> Result<(InitOutcome, RefinementState), ArtifactError> {
        self.init_seeded(name, artifact_type, content_type, max_iterations, &|_| {})
    }

    /// [`Artifacts::init`] where `seed` completes a new state before its first
    /// save (so a crash never leaves a state without the caller's settings).
    pub fn init_seeded(
        &self,
        name: &str,
        artifact_type: Option<&str>,
        content_type: Option<&str>,
        max_iterations: Option<u64>,
        seed: &dyn Fn(&mut RefinementState),
    ) -> Result<(InitOutcome, RefinementState), ArtifactError> {
        Self::check_init(name, artifact_type, content_type)?;
        let existing = match self.load(name) {
            Ok(s) => Some(s),
            Err(ArtifactError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let now = now_rfc3339();
        match existing {
            Some(state) if artifact_type.is_some_and(|t| t != state.artifact_type) => {
                Err(ArtifactError::TypeMismatch {
                    name: name.into(),
                    actual: state.artifact_type,
                    requested: artifact_type.unwrap_or_default().into(),
                })
            }
            Some(state) if state.finalized_at.is_none() => Ok((InitOutcome::Resumed, state)),
            Some(prior) => {
                let mut state = RefinementState {
                    refinement_id: new_id(),
                    started_at: now.clone(),
                    updated_at: now,
                    finalized_at: None,
                    current_iteration: 0,
                    convergence_status: CONVERGENCE_RUNNING.into(),
                    phases_completed: vec![],
                    iteration_history: vec![],
                    checkpoints: vec![],
                    prior_cycle_id: Some(prior.refinement_id.clone()),
                    content_type: content_type.map_or(prior.content_type.clone(), str::to_string),
                    max_iterations: max_iterations.unwrap_or(prior.max_iterations),
                    state_provider: Some(self.provider.describe()),
                    ..prior
                };
                seed(&mut state);
                self.save(&mut state)?;
                Ok((InitOutcome::NewCycle, state))
            }
            None => {
                let t = artifact_type.ok_or_else(|| ArtifactError::NotFound(name.into()))?;
                let mut state = RefinementState {
                    refinement_id: new_id(),
                    artifact_name: name.into(),
                    artifact_type: t.into(),
                    content_type: content_type.unwrap_or(default_content_type(t)).into(),
                    state_provider: Some(self.provider.describe()),
                    started_at: now.clone(),
                    updated_at: now,
                    finalized_at: None,
                    current_iteration: 0,
                    max_iterations: max_iterations.unwrap_or(5),
                    convergence_status: CONVERGENCE_RUNNING.into(),
                    goals: vec![],
                    constraints: vec![],
                    phases_completed: vec![],
                    iteration_history: vec![],
                    checkpoints: vec![],
                    workflow_triggers: vec![],
                    prior_cycle_id: None,
                    pmpo_schema_version: STATE_SCHEMA_VERSION,
                    extra: Map::new(),
                };
                self.provider.init(self.ws, name);
                seed(&mut state);
                self.save(&mut state)?;
                Ok((InitOutcome::Created, state))
            }
        }
    }

    /// Snapshots the state after a phase; returns the checkpoint id.
    pub fn checkpoint(&self, name: &str, phase: &str) -> Result<CheckpointRef, ArtifactError> {
        let mut state = self.load(name)?;
        self.checkpoint_state(&mut state, phase)
    }

    /// [`Artifacts::checkpoint`] on a state already in memory (which is updated and saved).
    pub fn checkpoint_state(
        &self,
        state: &mut RefinementState,
        phase: &str,
    ) -> Result<CheckpointRef, ArtifactError> {
        if !PHASES.contains(&phase) {
            return Err(ArtifactError::UnknownPhase(phase.into()));
        }
        let name = state.artifact_name.clone();
        if let Some(at) = &state.finalized_at {
            return Err(ArtifactError::AlreadyFinalized(name, at.clone()));
        }
        let timestamp = now_rfc3339();
        let n = state.checkpoints.len() + 1;
        let cp = CheckpointRef {
            // Unique across cycles: the files of earlier cycles stay where they are.
            checkpoint_id: format!(
                "cp-{}-{n:04}-{phase}-i{}",
                state.refinement_id.chars().take(8).collect::<String>(),
                state.current_iteration
            ),
            phase: phase.into(),
            iteration: state.current_iteration,
            timestamp,
        };
        if !state.phases_completed.iter().any(|p| p == phase) {
            state.phases_completed.push(phase.into());
        }
        state.checkpoints.push(cp.clone());
        let snapshot = serde_json::json!({ "checkpoint": cp, "state": state });
        // The snapshot is a copy for inspection; state.json (saved durably
        // below) is the truth, so the snapshot needs no flush of its own.
        let bytes = serde_json::to_vec_pretty(&snapshot).expect("state serializes");
        self.ws.write_atomic(
            &format!(
                "{}/checkpoints/{}.json",
                artifact_dir(&name),
                cp.checkpoint_id
            ),
            &bytes,
            Durability::Relaxed,
        )?;
        self.save(state)?;
        Ok(cp)
    }

    /// Archives the cycle to history and marks it finalized.
    pub fn finalize(
        &self,
        name: &str,
        status: Option<&str>,
    ) -> Result<(RefinementState, String), ArtifactError> {
        let mut state = self.load(name)?;
        let history = self.finalize_state(&mut state, status, &[])?;
        Ok((state, history))
    }

    /// [`Artifacts::finalize`] on a state in memory; `files` (workspace paths
    /// such as `constraints.json`) are archived with it when they exist.
    pub fn finalize_state(
        &self,
        state: &mut RefinementState,
        status: Option<&str>,
        files: &[&str],
    ) -> Result<String, ArtifactError> {
        let name = state.artifact_name.clone();
        let name = name.as_str();
        if let Some(at) = &state.finalized_at {
            return Err(ArtifactError::AlreadyFinalized(name.into(), at.clone()));
        }
        let now = now_rfc3339();
        state.finalized_at = Some(now.clone());
        if state.convergence_status == CONVERGENCE_RUNNING {
            state.convergence_status = status.unwrap_or("converged").into();
        }
        let stamp = now.replace([':', '.'], "-");
        let history = format!("{REFINER_DIR}/history/{name}/{stamp}");
        write_json(self.ws, &format!("{history}/state.json"), &state)?;
        let cp_dir = self
            .ws
            .resolve(&format!("{}/checkpoints", artifact_dir(name)))?;
        if let Ok(entries) = std::fs::read_dir(&cp_dir) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if let Ok(bytes) = std::fs::read(e.path()) {
                    self.ws.write_atomic(
                        &format!("{history}/checkpoints/{file}"),
                        &bytes,
                        Durability::Relaxed,
                    )?;
                }
            }
        }
        for file in files {
            if let Ok(path) = self.ws.resolve(file)
                && let Ok(bytes) = std::fs::read(path)
            {
                self.ws.write_atomic(
                    &format!("{history}/files/{file}"),
                    &bytes,
                    Durability::Relaxed,
                )?;
            }
        }
        self.save(state)?;
        Ok(history)
    }

    /// Every state file under `.refiner/artifacts/`, for `doctor`.
    pub fn state_files(&self) -> Vec<(String, PathBuf)> {
        let dir = self.ws.root().join(REFINER_DIR).join("artifacts");
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                out.push((name.clone(), e.path().join("state.json")));
            }
        }
        out.sort();
        out
    }
}
