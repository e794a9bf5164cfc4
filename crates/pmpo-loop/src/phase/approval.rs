//! The approval gate between Reflect and Persist: a person answers at the
//! terminal, or later with `pmpo approve`.

use std::time::Instant;

use pmpo_store::artifacts::{Artifacts, RefinementState};
use pmpo_store::lock::{self, LockHolder};
use pmpo_store::provider::Provider;
use pmpo_store::states::ConstraintStatus;
use pmpo_store::{Workspace, now_rfc3339};
use serde::Serialize;
use serde_json::json;

use crate::controller::{
    Approval, ApprovalRecord, ApprovalRequest, Controller, GateStatus, LoopError, LoopPhase,
    LoopState, Outcome, REFINER_LOCK, loop_state, store_loop,
};
use crate::journal::{self, DECISIONS};

impl Controller<'_, '_> {
    pub(crate) async fn approval_gate(&mut self) -> Result<Option<Outcome>, LoopError> {
        if !self.ls.requires_approval {
            return Ok(None);
        }
        let iteration = self.state.current_iteration;
        if let Some(a) = &self.ls.approval
            && a.iteration == iteration
            && a.status != GateStatus::Pending
        {
            return Ok(None);
        }
        let r = self.load_reflection()?;
        let summary = format!(
            "Iteration {iteration}: {} satisfied, {} violated, {} not checked of {} constraint(s).{}{}",
            r.count(ConstraintStatus::Satisfied),
            r.count(ConstraintStatus::Violated),
            r.count(ConstraintStatus::NotChecked),
            r.constraints.len(),
            if r.unsatisfied().is_empty() {
                String::new()
            } else {
                format!(" Unsatisfied: {}.", r.unsatisfied().join(", "))
            },
            if r.regressions.is_empty() {
                String::new()
            } else {
                format!(" Regressions: {}.", r.regressions.join("; "))
            },
        );
        let first_request = !matches!(&self.ls.approval, Some(a) if a.iteration == iteration);
        if first_request {
            self.ls.approval = Some(ApprovalRecord::pending(iteration));
            self.save()?;
            self.log(
                DECISIONS,
                &format!("approval-requested:{iteration}"),
                &format!("## Iteration {iteration} — Approval requested\n\n{summary}\n"),
            )?;
            self.fire(
                "on_approval_required",
                Some(LoopPhase::Reflect.as_str()),
                json!({"summary": summary}),
            );
        }
        let t_person = Instant::now();
        let asked = match self.env.ask_approval.clone() {
            None => None,
            Some(ask) => {
                let request = ApprovalRequest {
                    artifact: self.state.artifact_name.clone(),
                    iteration,
                    summary: summary.clone(),
                };
                // The person is asked on a thread of its own so that Ctrl-C
                // ends the wait at once (a terminal read would hold it until
                // Enter); the gate then stays pending, unanswered.
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::spawn(move || {
                    let _ = tx.send(ask(&request));
                });
                let cancel = self.env.exec.cancel.clone();
                tokio::select! {
                    answer = rx => answer.ok().flatten(),
                    _ = cancel.cancelled() => {
                        self.timings.person_ms += t_person.elapsed().as_secs_f64() * 1000.0;
                        return Ok(Some(self.cancelled_at_the_gate()));
                    }
                }
            }
        };
        self.timings.person_ms += t_person.elapsed().as_secs_f64() * 1000.0;
        if self.env.exec.cancel.is_cancelled() {
            return Ok(Some(self.cancelled_at_the_gate()));
        }
        match asked {
            Some(answer) => {
                record_answer(
                    self.ws,
                    &mut self.state,
                    &mut self.ls,
                    answer,
                    "terminal",
                    None,
                )?;
                self.save()?;
                Ok(None)
            }
            None => {
                self.notes.push(format!(
                    "waiting for approval: `pmpo approve {0} --continue` or `pmpo approve {0} --terminate`, then `pmpo refine {0}`",
                    self.state.artifact_name
                ));
                Ok(Some(Outcome::AwaitingApproval))
            }
        }
    }
}

/// Records an approval answer in the state and in `decisions.md`.
fn record_answer(
    ws: &Workspace,
    state: &mut RefinementState,
    ls: &mut LoopState,
    answer: Approval,
    by: &str,
    note: Option<&str>,
) -> Result<(), LoopError> {
    let iteration = state.current_iteration;
    let word = GateStatus::from(answer);
    let rec = ls
        .approval
        .get_or_insert_with(|| ApprovalRecord::pending(iteration));
    rec.iteration = iteration;
    rec.status = word;
    rec.answered_at = Some(now_rfc3339());
    rec.answered_by = Some(by.into());
    rec.note = note.map(str::to_string);
    journal::append_once(
        ws,
        DECISIONS,
        &format!("{}:approval:{iteration}", state.refinement_id),
        &format!(
            "## Iteration {iteration} — Approval: {word}\n\n- Answered by: {by}\n{}",
            note.map(|n| format!("- Note: {n}\n")).unwrap_or_default()
        ),
        &state.refinement_id,
    )?;
    Ok(())
}

/// What `pmpo approve` did.
#[derive(Debug, Clone, Serialize)]
pub struct Approved {
    pub artifact_name: String,
    pub iteration: u64,
    pub decision: String,
}

/// Answers an artifact's pending approval gate (from any process).
pub fn approve(
    workspace: &std::path::Path,
    name: &str,
    answer: Approval,
    note: Option<&str>,
) -> Result<Approved, LoopError> {
    let ws = Workspace::open(workspace)?;
    Artifacts::check_name(name)?;
    let provider = Provider::resolve(&ws);
    let holder = LockHolder {
        pid: std::process::id(),
        run_id: name.into(),
        since: now_rfc3339(),
        command: format!("pmpo approve {name}"),
        host: String::new(),
    };
    let _guard = match lock::acquire_at(&ws, REFINER_LOCK, &holder, false) {
        Ok(g) => g,
        Err(lock::LockError::Busy(h)) => return Err(LoopError::Busy(h)),
        Err(lock::LockError::Store(e)) => return Err(e.into()),
    };
    let arts = Artifacts {
        ws: &ws,
        provider: &provider,
    };
    let mut state = arts.load(name)?;
    if let Some(at) = &state.finalized_at {
        return Err(LoopError::Usage(format!(
            "`{name}` was finalized at {at}; there is no approval to answer (`pmpo refine {name}` starts a new cycle)"
        )));
    }
    let mut ls = loop_state(&state);
    let pending = matches!(&ls.approval, Some(a) if a.iteration == state.current_iteration && a.status == GateStatus::Pending);
    if !pending {
        return Err(LoopError::Usage(format!(
            "`{name}` is not waiting for approval (iteration {}, last completed phase: {})",
            state.current_iteration,
            state
                .phases_completed
                .last()
                .map(String::as_str)
                .unwrap_or("none")
        )));
    }
    record_answer(&ws, &mut state, &mut ls, answer, "pmpo approve", note)?;
    store_loop(&mut state, &ls);
    arts.save(&mut state)?;
    Ok(Approved {
        artifact_name: name.into(),
        iteration: state.current_iteration,
        decision: ls
            .approval
            .map(|a| a.status.as_str().to_string())
            .unwrap_or_default(),
    })
}
