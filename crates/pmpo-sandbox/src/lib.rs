//! Confining the processes of stages and checks.
//!
//! Two modes, chosen once per run:
//! - **Landlock** (Linux, ABI 3 or later): a ruleset prepared in pmpo is
//!   entered by the child between `fork` and `exec` ([`enter`]); writes outside
//!   the granted paths fail in the process with `EACCES`.
//! - **Detection** (Landlock missing or too old, another OS): a metadata
//!   [`snapshot`] of the workspace before and after each stage; every change
//!   outside the declared outputs is reported.
//!
//! Reads are never restricted: only the write-side accesses are handled.

pub mod policy;
pub mod running;
pub mod snapshot;
pub mod watcher;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

pub use policy::{Grant, Policy};

/// Set (to anything but `0`/empty) only by pmpo's own tests: behave as if the
/// kernel had no Landlock, so the detection fallback is exercised anywhere.
pub const SIMULATE_NO_LANDLOCK: &str = "PMPO_SANDBOX_SIMULATE_NO_LANDLOCK";

/// The oldest ABI whose rules pmpo relies on for files: truncation (ABI 3)
/// and cross-directory renames (ABI 2) are controlled from there.
pub const MIN_FS_ABI: u32 = 3;
/// The oldest ABI that controls TCP bind and connect.
pub const MIN_NET_ABI: u32 = 4;

/// The Landlock ABI of the running kernel, 0 where there is none (another OS,
/// an old kernel, Landlock disabled at boot).
pub fn kernel_abi() -> u32 {
    static ABI: OnceLock<u32> = OnceLock::new();
    *ABI.get_or_init(probe_kernel)
}

#[cfg(target_os = "linux")]
fn probe_kernel() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call only
    // returns a number; no memory is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 { 0 } else { v as u32 }
}

#[cfg(not(target_os = "linux"))]
fn probe_kernel() -> u32 {
    0
}

/// The ABI pmpo may use: the kernel's, unless the test switch hides it.
pub fn usable_abi() -> u32 {
    match std::env::var(SIMULATE_NO_LANDLOCK) {
        Ok(v) if !v.is_empty() && v != "0" => 0,
        _ => kernel_abi(),
    }
}

static DISABLED: AtomicBool = AtomicBool::new(false);

/// `--no-sandbox`: nothing of this run is confined or watched.
pub fn set_disabled(off: bool) {
    DISABLED.store(off, Ordering::Relaxed);
}

/// Whether `--no-sandbox` was given for this run.
pub fn disabled() -> bool {
    DISABLED.load(Ordering::Relaxed)
}

/// How the processes of a run (or of one stage) are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The kernel refuses writes outside the policy.
    Landlock { abi: u32 },
    /// Changes outside the declared outputs are found afterwards.
    Detection,
    /// Not confined (`--no-sandbox`, `sandbox: false`).
    Off,
}

impl Mode {
    /// The mode of this run: `Off` with `--no-sandbox`, Landlock where the
    /// kernel has ABI 3 or later, detection otherwise.
    pub fn for_run() -> Mode {
        if disabled() {
            return Mode::Off;
        }
        let abi = usable_abi();
        if abi >= MIN_FS_ABI {
            Mode::Landlock { abi }
        } else {
            Mode::Detection
        }
    }

    /// As recorded in results: `landlock ABI 7`, `detection`, `off`.
    pub fn label(&self) -> String {
        match self {
            Mode::Landlock { abi } => format!("landlock ABI {abi}"),
            Mode::Detection => "detection".into(),
            Mode::Off => "off".into(),
        }
    }

    /// Why the run falls back to detection, said once per run; `None` when it does not.
    pub fn fallback_reason(&self) -> Option<String> {
        if *self != Mode::Detection {
            return None;
        }
        let simulated = usable_abi() == 0 && kernel_abi() != 0;
        Some(match (simulated, kernel_abi()) {
            (true, _) => format!("Landlock is hidden by {SIMULATE_NO_LANDLOCK} (a test switch)"),
            (false, 0) => {
                "this system has no Landlock (Linux 6.2 or later with Landlock enabled is needed)"
                    .into()
            }
            (false, abi) => format!(
                "the kernel's Landlock ABI {abi} is older than the ABI {MIN_FS_ABI} pmpo needs"
            ),
        })
    }
}

/// A Landlock ruleset built in pmpo, ready for a child to enter.
#[derive(Debug)]
pub struct Prepared {
    fd: OwnedFd,
}

/// Write-side filesystem accesses pmpo handles (reads stay as they were).
/// Fixed at the ABI 3 set so that newer kernels do not start refusing device
/// ioctls or Unix socket connections the stage could do before.
fn handled_fs() -> landlock::BitFlags<landlock::AccessFs> {
    landlock::AccessFs::from_write(landlock::ABI::V3)
}

fn file_fs() -> landlock::BitFlags<landlock::AccessFs> {
    landlock::AccessFs::WriteFile | landlock::AccessFs::Truncate
}

impl Prepared {
    /// Builds the ruleset of a policy. Fails (with the reason) where the
    /// kernel cannot enforce it: never a ruleset that enforces less.
    pub fn new(policy: &Policy, abi: u32) -> Result<Prepared, String> {
        use landlock::{
            Access, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
            RulesetCreatedAttr,
        };
        if policy.confine_fs && abi < MIN_FS_ABI {
            return Err(format!(
                "Landlock ABI {abi} cannot confine writes (ABI {MIN_FS_ABI} or later is needed)"
            ));
        }
        if policy.deny_network && abi < MIN_NET_ABI {
            return Err(if abi == 0 {
                "`network: false` needs Landlock (ABI 4 or later), and this system has none".into()
            } else {
                format!(
                    "`network: false` needs Landlock ABI {MIN_NET_ABI} or later; this kernel has ABI {abi}"
                )
            });
        }
        let err = |e: &dyn std::fmt::Display| format!("cannot build the Landlock ruleset: {e}");
        let mut ruleset = Ruleset::default().set_compatibility(CompatLevel::HardRequirement);
        if policy.confine_fs {
            ruleset = ruleset.handle_access(handled_fs()).map_err(|e| err(&e))?;
        }
        if policy.deny_network {
            ruleset = ruleset
                .handle_access(AccessNet::from_all(landlock::ABI::V4))
                .map_err(|e| err(&e))?;
        }
        let mut created = ruleset.create().map_err(|e| err(&e))?;
        if policy.confine_fs {
            for g in &policy.grants {
                let access = if g.is_dir { handled_fs() } else { file_fs() };
                let fd = match PathFd::new(&g.path) {
                    Ok(fd) => fd,
                    // A path that vanished since the policy was made grants nothing.
                    Err(_) => continue,
                };
                created = created
                    .add_rule(PathBeneath::new(fd, access))
                    .map_err(|e| format!("cannot grant `{}`: {e}", g.path.display()))?;
            }
        }
        let fd: Option<OwnedFd> = created.into();
        let fd = fd.ok_or_else(|| "the kernel gave no Landlock ruleset".to_string())?;
        Ok(Prepared { fd })
    }

    /// The ruleset's descriptor, for [`enter`] in the child.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Enters a prepared ruleset: sets `no_new_privs` (Landlock requires it; it
/// also makes `sudo` and other set-uid programs fail) and restricts the
/// calling process. Safe between `fork` and `exec`: two system calls, no
/// allocation, no lock.
pub fn enter(fd: RawFd) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl and landlock_restrict_self take integers only.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// What pmpo says when a confined stage failed on a refused write. The path
/// is the one the stage's error output names, when it names one.
pub fn undeclared_write_hint() -> &'static str {
    "declare it in `outputs:`, or set `sandbox: false` on the stage"
}

/// Reads a failed process's error output for a write the sandbox refused:
/// `Some(path)` (the path when the text names one) when it failed on one.
pub fn refused_write(stderr: &str) -> Option<Option<String>> {
    let mut found = None;
    for line in stderr.lines() {
        let l = line.trim();
        let denied = l.contains("Permission denied")
            || l.contains("Operation not permitted")
            || l.contains("EACCES");
        if !denied {
            continue;
        }
        let path = quoted(l).or_else(|| after_cannot(l));
        if path.is_some() {
            return Some(path);
        }
        found.get_or_insert(None);
    }
    found
}

/// The first quoted text of a line: `touch: cannot touch 'x': Permission denied`,
/// `PermissionError: [Errno 13] Permission denied: '/x'`.
fn quoted(line: &str) -> Option<String> {
    for q in ['\'', '"', '‘', '`'] {
        if let Some(start) = line.find(q) {
            let rest = &line[start + q.len_utf8()..];
            let close = match q {
                '‘' => '’',
                other => other,
            };
            if let Some(end) = rest.find(close) {
                let p = &rest[..end];
                if !p.is_empty() && !p.contains(' ') || p.contains('/') {
                    return Some(p.to_string());
                }
            }
        }
    }
    None
}

/// `sh: 1: cannot create /x/y: Permission denied`
fn after_cannot(line: &str) -> Option<String> {
    let at = line.find("cannot create ")? + "cannot create ".len();
    let rest = &line[at..];
    let end = rest.rfind(": ")?;
    Some(rest[..end].to_string())
}

/// Whether a failed process's error output shows `sudo` (or another
/// set-uid program) stopped by `no_new_privs`.
pub fn blocked_privileges(stderr: &str) -> bool {
    stderr.contains("no new privileges") || stderr.contains("no_new_privs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_paths_are_read_from_common_messages() {
        assert_eq!(
            refused_write("touch: cannot touch 'a/b': Permission denied"),
            Some(Some("a/b".into()))
        );
        assert_eq!(
            refused_write("sh: 1: cannot create /w/x.txt: Permission denied"),
            Some(Some("/w/x.txt".into()))
        );
        assert_eq!(
            refused_write("PermissionError: [Errno 13] Permission denied: '/w/y'"),
            Some(Some("/w/y".into()))
        );
        assert_eq!(refused_write("Permission denied"), Some(None));
        assert_eq!(refused_write("all fine"), None);
    }
}
