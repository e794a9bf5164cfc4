//! A refinement paused on a question for the agent host (`via = "host"`):
//! `.refiner/artifacts/<name>/pending.json`, and the answer that lets it go on.
//!
//! The question itself is the host endpoint's ([`pmpo_ai::host`]); this file
//! names it for the artifact, with what to do. An answer is kept under the
//! question's id, so the next `pmpo refine` (or `pmpo answer`, which runs it)
//! asks the same question and finds it. The answer is read by the phase that
//! asked, exactly as a model's answer: the schema, one repair round, the
//! adapter's fallback; it never sets a stage's status or a measured constraint.

use pmpo_ai::host::{self, Question};
use pmpo_store::artifacts::{Artifacts, artifact_dir};
use pmpo_store::{Durability, Workspace};
use serde::{Deserialize, Serialize};

use crate::LoopError;

/// What `pending.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub artifact: String,
    pub iteration: u64,
    /// The command that answers it from a shell.
    pub answer_with: String,
    pub question: Question,
}

/// Where an artifact's pending question is.
pub fn pending_path(name: &str) -> String {
    format!("{}/pending.json", artifact_dir(name))
}

/// Writes the artifact's pending question (durably: the loop stops next).
pub(crate) fn write(ws: &Workspace, p: &Pending) -> Result<(), LoopError> {
    let mut bytes = serde_json::to_vec_pretty(p).unwrap_or_default();
    bytes.push(b'\n');
    ws.create_dir_all(&artifact_dir(&p.artifact))?;
    ws.write_atomic(&pending_path(&p.artifact), &bytes, Durability::Durable)?;
    Ok(())
}

/// Removes the artifact's pending question (it was answered, or the loop
/// went past it), if there is one.
pub(crate) fn clear(ws: &Workspace, name: &str) -> Result<(), LoopError> {
    match ws.remove_own_file(&pending_path(name)) {
        Ok(_) => Ok(()),
        Err(pmpo_store::StoreError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The artifact's pending question, if it waits for one.
pub fn read(ws: &Workspace, name: &str) -> Result<Option<Pending>, LoopError> {
    Artifacts::check_name(name)?;
    let Some(bytes) = ws.read_own(&pending_path(name))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| LoopError::Corrupt {
            path: pending_path(name),
            detail: e.to_string(),
        })
}

/// Keeps `text` as the answer to the artifact's pending question; returns
/// the question answered. The refinement goes on at the next `refine`.
pub fn answer(ws: &Workspace, name: &str, text: &str) -> Result<Pending, LoopError> {
    let Some(p) = read(ws, name)? else {
        return Err(LoopError::Usage(format!(
            "`{name}` has no pending question: nothing waits for an answer (`pmpo status {name}` says where it stands)"
        )));
    };
    if text.trim().is_empty() {
        return Err(LoopError::Usage(
            "the answer is empty; give the JSON the question's schema asks for".into(),
        ));
    }
    host::give_answer(ws, &p.question.id, text).map_err(LoopError::Usage)?;
    Ok(p)
}
