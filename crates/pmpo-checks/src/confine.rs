//! The sandbox of a check's command (`command`, `build`, `tests`, `lint`):
//! it may write only the paths of its `writes:` list (and its scratch
//! directory, temp, devices, cache). Under Landlock other writes fail in the
//! command; under detection they are found afterwards and fail the check.

use std::path::PathBuf;
use std::sync::Arc;

use pmpo_sandbox::policy::{self, Declared};
use pmpo_sandbox::running::{Registration, register};
use pmpo_sandbox::snapshot::{Difference, Snapshot};
use pmpo_sandbox::{Mode, Prepared};
use pmpo_tools::process::PreExec;

use crate::Ctx;

pub(crate) struct CheckWatch {
    pub mode: Mode,
    pub pre_exec: Option<PreExec>,
    pub env: Vec<(String, String)>,
    _scratch: Option<tempfile::TempDir>,
    before: Option<Snapshot>,
    dirs: Vec<PathBuf>,
    root: PathBuf,
    registration: Option<Registration>,
    made_dirs: Vec<PathBuf>,
}

/// Prepares the sandbox of a check's command; `Err` says why it cannot run.
pub(crate) fn begin(ctx: &Ctx<'_>, writes: &[String]) -> Result<CheckWatch, String> {
    let root = ctx.ws.root().to_path_buf();
    let mode = Mode::for_run();
    let mut w = CheckWatch {
        mode,
        pre_exec: None,
        env: Vec::new(),
        _scratch: None,
        before: None,
        dirs: Vec::new(),
        root: root.clone(),
        registration: None,
        made_dirs: Vec::new(),
    };
    if mode == Mode::Off {
        return Ok(w);
    }
    let scratch = tempfile::Builder::new()
        .prefix("pmpo-check-")
        .tempdir()
        .map_err(|e| format!("cannot make the command's scratch directory: {e}"))?;
    let mut policy = policy::for_writes(&root, writes, Some(scratch.path()))?;
    w.made_dirs = std::mem::take(&mut policy.made_dirs);
    w.env.push((
        "TMPDIR".into(),
        scratch.path().to_string_lossy().into_owned(),
    ));
    match mode {
        Mode::Landlock { abi } => {
            let prepared = Arc::new(Prepared::new(&policy, abi)?);
            w.pre_exec = Some(PreExec(Arc::new(move || {
                pmpo_sandbox::enter(prepared.raw_fd())
            })));
            if !policy.watched.is_empty() {
                w.before = Some(Snapshot::take(&root, &policy.watched));
                w.dirs = policy.watched;
            }
        }
        _ => w.before = Some(Snapshot::take(&root, &[])),
    }
    w.registration = Some(register(Declared::new(writes)));
    w._scratch = Some(scratch);
    Ok(w)
}

impl CheckWatch {
    /// The command ended: what it (or what ran beside it) changed outside
    /// every declared path.
    pub(crate) fn finish(&self) -> Vec<Difference> {
        let found = match (&self.before, &self.registration) {
            (Some(before), Some(reg)) => {
                reg.undeclared(before.diff(&Snapshot::take(&self.root, &self.dirs)))
            }
            _ => Vec::new(),
        };
        pmpo_sandbox::Policy::remove_made_dirs(&self.made_dirs);
        found
    }
}
