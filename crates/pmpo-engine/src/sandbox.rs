//! Confining a stage's processes (see `pmpo-sandbox`): what the executor
//! does around a tool invocation.
//!
//! Under Landlock the stage's processes enter a ruleset that lets them write
//! only their declared outputs (and scratch, temp, devices, cache). Where a
//! declared output does not exist yet, or is a glob, the kernel rule is on
//! its directory and that directory's other files are watched by detection.
//! Without Landlock every stage is watched by detection: a metadata snapshot
//! of the workspace before and after it.

use pmpo_store::states::FailureKind;
use std::path::PathBuf;
use std::sync::Arc;

use pmpo_plan::Stage;
use pmpo_sandbox::policy::{self, Declared};
use pmpo_sandbox::snapshot::{Difference, Snapshot};
use pmpo_sandbox::{Mode, Prepared};
use pmpo_store::Workspace;
use pmpo_tools::Confinement;
use pmpo_tools::process::PreExec;

/// Whether a tool's processes are confined: `run` and plugins (tools that
/// write through pmpo itself are not).
pub(crate) fn confines(canonical_tool: &str) -> bool {
    matches!(canonical_tool, "run" | "plugin")
}

/// One stage's confinement, from before its tool starts until it ended.
pub(crate) struct Watch {
    registration: Option<pmpo_sandbox::running::Registration>,
    /// The mode this stage ran under (`None`: its tool is not confined).
    pub mode: Option<Mode>,
    pub confinement: Option<Confinement>,
    _scratch: Option<Scratch>,
    before: Option<Snapshot>,
    dirs: Vec<PathBuf>,
    /// The kernel's file events for the directories granted whole (used
    /// instead of `before` where inotify is available).
    events: Option<pmpo_sandbox::watcher::Watcher>,
    /// Directories pmpo made for new outputs (removed after if still empty).
    made_dirs: Vec<PathBuf>,
    /// What the kernel lets the stage write (Landlock).
    grants: Vec<pmpo_sandbox::Grant>,
}

/// Why a stage was not started: (kind, message, hint).
pub(crate) type Refusal = (FailureKind, String, Option<String>);

/// Prepares the confinement of a stage, registers it among the running
/// stages and, where detection applies, takes the snapshot before it.
pub(crate) fn begin(ws: &Workspace, stage: &Stage, canonical_tool: &str) -> Result<Watch, Refusal> {
    let mut watch = Watch {
        registration: None,
        mode: None,
        confinement: None,
        _scratch: None,
        before: None,
        dirs: Vec::new(),
        events: None,
        made_dirs: Vec::new(),
        grants: Vec::new(),
    };
    if confines(canonical_tool)
        && let Err(refusal) = prepare(ws, stage, &mut watch)
    {
        pmpo_sandbox::Policy::remove_made_dirs(&watch.made_dirs);
        return Err(refusal);
    }
    watch.registration = Some(pmpo_sandbox::running::register(Declared::new(
        &stage.outputs,
    )));
    Ok(watch)
}

fn prepare(ws: &Workspace, stage: &Stage, watch: &mut Watch) -> Result<(), Refusal> {
    let run_mode = Mode::for_run();
    let fs_off = run_mode == Mode::Off || !stage.sandbox;
    let abi = pmpo_sandbox::usable_abi();
    let refuse_net = |why: String| -> Refusal {
        (
            FailureKind::NetworkUnenforceable,
            format!(
                "stage `{}` declares `network: false`, which cannot be enforced here: {why}; it was not run",
                stage.id
            ),
            Some(
                "run it on Linux 6.7 or later (Landlock ABI 4), or remove `network: false`".into(),
            ),
        )
    };
    if fs_off {
        watch.mode = Some(Mode::Off);
        if !stage.network {
            let policy = pmpo_sandbox::Policy {
                confine_fs: false,
                deny_network: true,
                ..Default::default()
            };
            let prepared = Prepared::new(&policy, abi).map_err(refuse_net)?;
            watch.confinement = Some(Confinement {
                pre_exec: Some(hook(prepared)),
                env: Vec::new(),
            });
        }
        return Ok(());
    }
    let scratch = Scratch::take().map_err(|e| {
        (
            FailureKind::Io,
            format!("cannot make the stage's scratch directory in the system temp directory: {e}"),
            Some("check free space and permissions of the temp directory (TMPDIR)".into()),
        )
    })?;
    let root = ws.root().to_path_buf();
    let mut policy =
        policy::for_outputs(&root, &stage.outputs, Some(scratch.path())).map_err(|e| {
            (
                FailureKind::InvalidInput,
                format!("stage `{}`: {e}", stage.id),
                Some("fix the stage's `outputs:`".to_string()),
            )
        })?;
    watch.made_dirs = std::mem::take(&mut policy.made_dirs);
    let env = vec![
        (
            "TMPDIR".to_string(),
            scratch.path().to_string_lossy().into_owned(),
        ),
        // Python would write `__pycache__/` next to the modules it imports:
        // undeclared files, refused or reported.
        ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
    ];
    match run_mode {
        Mode::Landlock { abi } => {
            policy.deny_network = !stage.network;
            let prepared = Prepared::new(&policy, abi).map_err(|e| {
                if policy.deny_network && abi < pmpo_sandbox::MIN_NET_ABI {
                    refuse_net(e)
                } else {
                    (
                        FailureKind::Sandbox,
                        format!("stage `{}`: {e}", stage.id),
                        Some("set `sandbox: false` on the stage, or run with --no-sandbox".into()),
                    )
                }
            })?;
            watch.mode = Some(run_mode);
            watch.grants = policy.grants.clone();
            watch.confinement = Some(Confinement {
                pre_exec: Some(hook(prepared)),
                env,
            });
            if !policy.watched.is_empty() {
                // Events cost what the stage changes; a snapshot costs a
                // `stat` per file in those directories, twice per stage.
                match pmpo_sandbox::watcher::Watcher::start(&root, &policy.watched) {
                    Ok(w) => watch.events = Some(w),
                    Err(_) => watch.before = Some(Snapshot::take(&root, &policy.watched)),
                }
                watch.dirs = policy.watched;
            }
        }
        _ => {
            if !stage.network {
                return Err(refuse_net(
                    run_mode
                        .fallback_reason()
                        .unwrap_or_else(|| "no Landlock".into()),
                ));
            }
            watch.mode = Some(Mode::Detection);
            watch.confinement = Some(Confinement {
                pre_exec: None,
                env,
            });
            watch.before = Some(Snapshot::take(&root, &[]));
        }
    }
    watch._scratch = Some(scratch);
    Ok(())
}

/// A stage's scratch directory (its `TMPDIR`), from the run's pool: a
/// directory is made once and lent to one stage at a time, emptied between
/// stages, instead of made and removed for each (making a directory costs as
/// much as a small stage's own work). It is lent again only when it is still
/// the directory pmpo made (same device and inode, not a link: a stage that
/// replaced it with a link to somewhere else would otherwise have the next
/// stage granted that place) and empty.
pub(crate) struct Scratch {
    dir: Option<tempfile::TempDir>,
    id: (u64, u64),
}

static SCRATCH_POOL: std::sync::Mutex<Vec<Scratch>> = std::sync::Mutex::new(Vec::new());
/// At most this many idle scratch directories are kept (one per stage that
/// can run at once is enough).
const SCRATCH_IDLE: usize = 8;

impl Scratch {
    fn take() -> std::io::Result<Scratch> {
        loop {
            let idle = SCRATCH_POOL.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match idle {
                Some(s) if s.is_as_made() => return Ok(s),
                // Not as pmpo left it: dropped (removed, never followed).
                Some(_) => continue,
                None => break,
            }
        }
        let dir = tempfile::Builder::new().prefix("pmpo-stage-").tempdir()?;
        let id = dev_ino(dir.path())?;
        Ok(Scratch { dir: Some(dir), id })
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        self.dir
            .as_ref()
            .map_or(std::path::Path::new(""), |d| d.path())
    }

    fn is_as_made(&self) -> bool {
        let path = self.path();
        dev_ino(path).is_ok_and(|id| id == self.id)
            && std::fs::read_dir(path).is_ok_and(|mut rd| rd.next().is_none())
    }
}

/// Empties a scratch directory of what the stage left; false when something
/// could not be removed.
fn empty(dir: &std::path::Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.into_iter().all(|e| {
        e.is_ok_and(|e| match e.file_type() {
            // The entry's own type: a link is removed, never followed.
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(e.path()).is_ok(),
            Ok(_) => std::fs::remove_file(e.path()).is_ok(),
            Err(_) => false,
        })
    })
}

impl Drop for Scratch {
    /// Back to the pool, emptied. Removed instead when it is no longer the
    /// directory pmpo made or cannot be emptied (a link in its place is
    /// removed, never followed), or when the pool is full.
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if !(dev_ino(dir.path()).is_ok_and(|id| id == self.id) && empty(dir.path())) {
            return;
        }
        let mut pool = SCRATCH_POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < SCRATCH_IDLE {
            pool.push(Scratch {
                dir: Some(dir),
                id: self.id,
            });
        }
    }
}

/// Held for a run: when it ends (or fails), the idle scratch directories
/// are removed, so none is left in the temp directory once pmpo is done.
pub(crate) struct ScratchForRun;

impl Drop for ScratchForRun {
    fn drop(&mut self) {
        release_scratch();
    }
}

fn release_scratch() {
    let idle = std::mem::take(&mut *SCRATCH_POOL.lock().unwrap_or_else(|p| p.into_inner()));
    for mut s in idle {
        if let Some(d) = s.dir.take() {
            let _ = d.close();
        }
    }
}

fn dev_ino(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    if !m.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    Ok((m.dev(), m.ino()))
}

fn hook(prepared: Prepared) -> PreExec {
    let prepared = Arc::new(prepared);
    PreExec(Arc::new(move || pmpo_sandbox::enter(prepared.raw_fd())))
}

impl Watch {
    /// Whether a path the stage's error output names is one the sandbox
    /// refuses (`false` when it is granted: the failure has another cause).
    pub(crate) fn refuses(&self, ws: &Workspace, path: &str) -> bool {
        let p = std::path::Path::new(path);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            ws.root().join(p)
        };
        // The deepest existing ancestor, resolved: what the kernel judges.
        let mut probe = abs.clone();
        let real = loop {
            if let Ok(r) = std::fs::canonicalize(&probe) {
                break r.join(abs.strip_prefix(&probe).unwrap_or(std::path::Path::new("")));
            }
            if !probe.pop() {
                break abs.clone();
            }
        };
        !self.grants.iter().any(|g| {
            if g.is_dir {
                // Removing or renaming the granted directory itself needs
                // rights on its parent, which it does not have.
                real.starts_with(&g.path) && real != g.path
            } else {
                real == g.path
            }
        })
    }

    /// The stage ended: the changes outside the declared outputs of this
    /// stage and of the stages that ran at the same time.
    pub(crate) fn finish(self, ws: &Workspace) -> Vec<Difference> {
        let found = match (self.events, &self.before, &self.registration) {
            (Some(events), _, Some(reg)) => reg.undeclared(events.finish()),
            (None, Some(before), Some(reg)) => {
                reg.undeclared(before.diff(&Snapshot::take(ws.root(), &self.dirs)))
            }
            _ => Vec::new(),
        };
        pmpo_sandbox::Policy::remove_made_dirs(&self.made_dirs);
        found
    }
}

/// The message naming undeclared changes.
pub(crate) fn describe(diffs: &[Difference]) -> String {
    let shown: Vec<String> = diffs
        .iter()
        .take(10)
        .map(|d| format!("{} `{}`", d.kind.as_str(), d.path))
        .collect();
    let more = diffs.len().saturating_sub(shown.len());
    format!(
        "changed files outside its declared outputs: {}{}",
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}
