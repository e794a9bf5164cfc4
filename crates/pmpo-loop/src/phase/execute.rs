//! Execute: the iteration's plan runs on the engine (or a run this loop left
//! paused and `pmpo resume` finished is taken as it is).

use std::time::Instant;

use pmpo_ai::host::{self, Question};
use pmpo_engine::{Decision, Event, EventSink, ExecutionResults, FailureKind};
use pmpo_store::Workspace;
use pmpo_store::states::RunStatus;
use serde_json::Value;

use crate::controller::{
    Controller, LoopError, LoopPhase, Observer, Outcome, plan_path, read_json,
};
use crate::journal::REFINEMENT_LOG;

/// Forwards the Execute phase's events to the observer.
struct Forward<'o>(&'o mut dyn Observer);
impl EventSink for Forward<'_> {
    fn on_event(&mut self, event: &Event) {
        self.0.on_event(event);
    }
}

impl Controller<'_, '_> {
    pub(crate) async fn execute(&mut self) -> Result<Option<Outcome>, LoopError> {
        let t = Instant::now();
        self.begin(LoopPhase::Execute);
        let iteration = self.state.current_iteration;
        let rel = plan_path(&self.name(), iteration);
        let path = self.ws.resolve(&rel)?;
        let checked = pmpo_plan::load_plan(&path)
            .and_then(|p| self.env.engine.prepare(p))
            .map_err(|diags| LoopError::Plan {
                iteration,
                diagnostics: diags
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            })?;
        // A run this loop left paused, then finished by `pmpo resume`, is
        // this iteration's execution: its results are taken as they are.
        if let Some(id) = self.ls.run_id.clone()
            && let Ok(Some(done)) = read_json::<Value>(self.ws, pmpo_engine::RESULTS_FILE)
            && done["run_id"].as_str() == Some(id.as_str())
            && done["plan"].as_str() == Some(rel.as_str())
            && done["plan_blake3"].as_str() == Some(checked.blake3.as_str())
            && matches!(
                done["status"].as_str().and_then(RunStatus::parse),
                Some(RunStatus::Completed | RunStatus::Failed | RunStatus::Incomplete)
            )
        {
            let summary = format!(
                "run {id} (finished by `pmpo resume`): {}",
                done["status"].as_str().unwrap_or("")
            );
            self.log(
                REFINEMENT_LOG,
                &format!("execute:{iteration}:{id}"),
                &format!("## Iteration {iteration} — Execute\n\n- {summary}\n"),
            )?;
            self.end(LoopPhase::Execute, &summary, t)?;
            return Ok(None);
        }
        let mut opts = self.env.exec.clone();
        opts.workspace = self.ws.root().to_path_buf();
        // A run this loop left waiting for the host goes on: the stage that
        // asked runs again and finds the answer (or asks again).
        if let Some(id) = self.waiting_run(&rel, &checked.blake3) {
            opts.resume = Some(id);
            opts.decision = Some(Decision::Retry);
        }
        // Constraints are Reflect's to judge: the run's status says what the stages did.
        opts.allow_violations = true;
        // The manifest entries of this run are this artifact's.
        opts.owner = Some(self.name());
        self.env.observer.execute_start(&checked);
        let engine = self.env.engine.clone();
        let result = {
            let mut sink = Forward(&mut *self.env.observer);
            engine.execute(&checked, &opts, &mut sink).await
        };
        self.env.observer.execute_done();
        let results = result?;
        self.timings.stages_ms += results.stages.iter().map(|s| s.duration_ms).sum::<f64>();
        self.timings.teardown_ms += results.teardown_ms;
        self.ls.run_id = Some(results.run_id.clone());
        match results.status {
            RunStatus::Cancelled => {
                self.save()?;
                return Ok(Some(Outcome::Cancelled));
            }
            s if s.is_paused() => {
                self.save()?;
                // An `ai` stage waits for the host: the refinement waits for
                // the same answer, asked the same way as a phase's question.
                if let Some(q) = host_question(self.ws, &results) {
                    return self.awaiting_host(LoopPhase::Execute, q).map(Some);
                }
                self.notes.push(format!(
                    "run {} is paused: answer with `pmpo resume {} --retry|--skip|--abort`, then `pmpo refine {}` goes on",
                    results.run_id, results.run_id, self.state.artifact_name
                ));
                return Ok(Some(Outcome::ExecutionPaused));
            }
            _ => {}
        }
        let summary = format!(
            "run {}: {}: {}",
            results.run_id,
            results.status,
            results.summary.describe()
        );
        self.log(
            REFINEMENT_LOG,
            &format!("execute:{iteration}:{}", results.run_id),
            &format!(
                "## Iteration {iteration} — Execute\n\n- {summary}\n- Results: `{}`\n",
                pmpo_engine::RESULTS_FILE
            ),
        )?;
        self.end(LoopPhase::Execute, &summary, t)?;
        Ok(None)
    }
}

impl Controller<'_, '_> {
    /// The run this loop left paused only because `ai` stages wait for the
    /// host (this iteration's plan, unchanged), if there is one.
    fn waiting_run(&self, rel: &str, blake3: &str) -> Option<String> {
        let id = self.ls.run_id.clone()?;
        let done: Value = read_json(self.ws, pmpo_engine::RESULTS_FILE).ok()??;
        let kinds: Vec<&str> = done["errors"]
            .as_array()?
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        let waits_for_host = !kinds.is_empty()
            && kinds
                .iter()
                .all(|k| *k == FailureKind::AwaitingAnswer.as_str());
        (done["run_id"].as_str() == Some(id.as_str())
            && done["plan"].as_str() == Some(rel)
            && done["plan_blake3"].as_str() == Some(blake3)
            && done["status"].as_str().and_then(RunStatus::parse)
                == Some(RunStatus::AwaitingIntervention)
            && waits_for_host)
            .then_some(id)
    }
}

/// The question an `ai` stage of a paused run waits on: the newest one its
/// stage asked in that run that has no answer yet.
fn host_question(ws: &Workspace, results: &ExecutionResults) -> Option<Question> {
    let stage = &results
        .errors
        .iter()
        .find(|e| e.kind == FailureKind::AwaitingAnswer)?
        .stage;
    host::waiting_question(ws, &results.run_id, stage)
}
