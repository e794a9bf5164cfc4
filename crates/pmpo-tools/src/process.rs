//! Spawning a tool process, through pmpo's one runner (`pmpo-process`): its
//! own process group (so a timeout or a cancel stops grandchildren too),
//! bounded output capture, a time limit. What this adds for tools: pmpo's
//! secret variables are kept from the process.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::capture::Spill;

pub use pmpo_process::{ProcessResult, Termination, kill_live_groups};

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    pub capture_limit: usize,
    /// Entering the stage's sandbox: applied to the thread that starts the
    /// process, which inherits it (see `pmpo_process::ProcessSpec::confine_thread`).
    pub pre_exec: Option<PreExec>,
}

/// A function the child runs between `fork` and `exec` (entering a
/// sandbox): the one runner's hook. It must be safe there: no allocation,
/// no lock (only system calls on prepared data).
pub use pmpo_process::PreExec;

impl ProcessSpec {
    /// The runner's spec for this tool process.
    fn to_runner(
        &self,
        timeout: Duration,
        spill: [Option<Spill>; 2],
    ) -> std::io::Result<pmpo_process::ProcessSpec> {
        if self.argv.is_empty() {
            return Err(std::io::Error::other("empty command"));
        }
        let [out, err] = spill;
        Ok(pmpo_process::ProcessSpec {
            cwd: Some(self.cwd.clone()),
            // Keys stay with pmpo: inherited secret variables are removed; a
            // value the stage sets itself (`env:`, `env_passthrough:`) is set again.
            env_remove: pmpo_store::secrets::hidden_variables(),
            env: self.env.clone(),
            stdin: self.stdin.clone(),
            capture_limit: self.capture_limit,
            spill_stdout: out.map(Spill::into_runner),
            spill_stderr: err.map(Spill::into_runner),
            timeout: Some(timeout),
            // The sandbox's hook confines the thread that starts the process.
            confine_thread: self.pre_exec.clone(),
            ..pmpo_process::ProcessSpec::new(self.argv.clone())
        })
    }
}

/// Runs a process to completion, its time limit, or cancellation. Every
/// process of its group is stopped before this returns: a stage's processes
/// never outlive the stage.
pub async fn run_process(
    spec: &ProcessSpec,
    timeout: Duration,
    cancel: &CancellationToken,
) -> std::io::Result<ProcessResult> {
    run_process_spilling(spec, timeout, cancel, [None, None]).await
}

/// As [`run_process`]; stdout and stderr that outgrow the capture limit are
/// kept whole in the given files (`[stdout, stderr]`).
pub async fn run_process_spilling(
    spec: &ProcessSpec,
    timeout: Duration,
    cancel: &CancellationToken,
    spill: [Option<Spill>; 2],
) -> std::io::Result<ProcessResult> {
    pmpo_process::run(&spec.to_runner(timeout, spill)?, cancel).await
}
