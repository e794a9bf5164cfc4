//! Persist: the iteration's decision, its log entries, its line in the
//! iteration history and the manifest's `refinement` record.

use std::time::Instant;

use pmpo_store::now_rfc3339;
use pmpo_store::states::ConstraintStatus;
use serde_json::{Value, json};

use crate::controller::{Controller, LoopError, LoopPhase, read_json, write_json};
use crate::journal::{DECISIONS, REFINEMENT_LOG};
use crate::reflect::{self, Decision, Termination};

impl Controller<'_, '_> {
    pub(crate) fn persist(&mut self) -> Result<(), LoopError> {
        let t = Instant::now();
        self.begin(LoopPhase::Persist);
        let iteration = self.state.current_iteration;
        let r = self.load_reflection()?;
        let d = reflect::decide(&r, self.state.max_iterations, self.user_terminated());
        self.keep_screenshots(iteration, &r);
        if d.status == Some(Termination::MaxIterationsExceeded) {
            self.log(
                REFINEMENT_LOG,
                &format!("max-iterations:{iteration}"),
                "> **Warning:** Maximum iterations reached — forcing termination\n",
            )?;
        }
        let mut body = format!(
            "## Iteration {iteration} — Persist\n\n- Constraints: {} satisfied, {} violated, {} not checked of {}\n- Files of the artifact in dist/: {}; the manifest lists {} of them ({})\n- Decision: {}{}\n- Reason: {}\n",
            r.count(ConstraintStatus::Satisfied),
            r.count(ConstraintStatus::Violated),
            r.count(ConstraintStatus::NotChecked),
            r.constraints.len(),
            r.dist_files.len(),
            r.manifest_files,
            if r.manifest_valid { "valid" } else { "invalid" },
            d.decision,
            d.status.map(|s| format!(" ({s})")).unwrap_or_default(),
            d.reason
        );
        if d.decision == Decision::Continue {
            body.push_str(&format!("- Next focus: {}\n", d.unsatisfied.join(", ")));
        }
        self.log(REFINEMENT_LOG, &format!("persist:{iteration}"), &body)?;
        let mut dec = format!("## Iteration {iteration} — Decision: {}\n\n", d.decision);
        if d.decision == Decision::Continue {
            dec.push_str(&format!(
                "- Unsatisfied constraints: {}\n",
                if d.unsatisfied.is_empty() {
                    "(none; see the reason)".to_string()
                } else {
                    d.unsatisfied.join(", ")
                }
            ));
            dec.push_str(&format!("- Reason: {}\n", d.reason));
        } else {
            dec.push_str(&format!(
                "- Convergence: {}\n- Rationale: {}\n",
                d.status.map(Termination::as_str).unwrap_or(""),
                d.reason
            ));
        }
        self.log(DECISIONS, &format!("decision:{iteration}"), &dec)?;
        if !self
            .state
            .iteration_history
            .iter()
            .any(|h| h["iteration"] == json!(iteration))
        {
            let mut phases = self.state.phases_completed.clone();
            phases.push(LoopPhase::Persist.as_str().into());
            self.state.iteration_history.push(json!({
                "iteration": iteration,
                "phases_completed": phases,
                "constraints_satisfied": r.count(ConstraintStatus::Satisfied),
                "constraints_total": r.constraints.len(),
                "decision": d.decision,
                "reason": d.reason,
                "run_id": r.execution.run_id,
                "timestamp": now_rfc3339(),
            }));
        }
        // The manifest records where the refinement stands (the Execute phase
        // wrote its files; Persist adds the loop's view of them).
        let manifest_rel = pmpo_engine::MANIFEST_FILE;
        if let Ok(Some(mut manifest)) = read_json::<Value>(self.ws, manifest_rel)
            && let Some(obj) = manifest.as_object_mut()
        {
            obj.insert(
                "refinement".into(),
                json!({
                    "refinement_id": self.state.refinement_id,
                    "iteration": iteration,
                    "evaluation_strategy": r.strategy,
                    "constraints": {
                        "total": r.constraints.len(),
                        "satisfied": r.count(ConstraintStatus::Satisfied),
                        "violated": r.count(ConstraintStatus::Violated),
                        "not_checked": r.count(ConstraintStatus::NotChecked),
                    },
                    "decision": d.decision,
                    "convergence_status": d.status,
                    "decided_at": d.decided_at,
                }),
            );
            write_json(self.ws, manifest_rel, &manifest, &self.state.refinement_id)?;
        }
        let summary = format!(
            "decision: {}{}",
            d.decision,
            d.status.map(|s| format!(" ({s})")).unwrap_or_default()
        );
        self.ls.pending_decision = Some(d);
        self.end(LoopPhase::Persist, &summary, t)
    }

    /// Keeps a copy of the iteration's pictures (the PNG files among the
    /// artifact's files in dist/: preview screenshots, rasterized images)
    /// under `.refiner/artifacts/NAME/screenshots/iteration-N/`, with an
    /// `index.json` that names each one's place in dist/ and its digest, so
    /// `pmpo report NAME` can set each iteration beside the one before after
    /// the next iteration has overwritten them. A copy that cannot be made
    /// is listed with its error; it never stops the loop.
    fn keep_screenshots(&self, iteration: u64, r: &reflect::Reflection) {
        const MAX_PICTURES: usize = 24;
        const MAX_BYTES: u64 = 16 << 20;
        let dir = screenshots_dir(&self.state.artifact_name, iteration);
        let who = pmpo_store::Writer {
            run_id: &self.state.refinement_id,
            writer: "loop",
        };
        let mut files = Vec::new();
        for path in r
            .dist_files
            .iter()
            .filter(|p| p.to_ascii_lowercase().ends_with(".png"))
            .take(MAX_PICTURES)
        {
            let copy = format!("{dir}/files/{path}");
            let kept = match self.ws.read(path) {
                Ok(b) if b.len() as u64 > MAX_BYTES => {
                    Err(format!("{} bytes: too large to keep", b.len()))
                }
                Ok(b) => self
                    .ws
                    .write_file(&copy, &b, who)
                    .map(|_| (blake3::hash(&b).to_hex().to_string(), b.len()))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            files.push(match kept {
                Ok((digest, size)) => {
                    json!({"path": path, "copy": copy, "blake3": digest, "size": size})
                }
                Err(e) => json!({"path": path, "error": e}),
            });
        }
        let index = json!({
            "iteration": iteration,
            "run_id": r.execution.run_id,
            "files": files,
        });
        let _ = write_json(
            self.ws,
            &format!("{dir}/index.json"),
            &index,
            &self.state.refinement_id,
        );
    }
}

/// Where Persist keeps the copies of an iteration's pictures.
fn screenshots_dir(name: &str, iteration: u64) -> String {
    format!(
        "{}/screenshots/iteration-{iteration}",
        pmpo_store::artifacts::artifact_dir(name)
    )
}
