//! Process groups: the one group kill (SIGTERM, a grace, SIGKILL), the
//! registry of the groups alive now, and the check for live members.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default time a group gets between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_millis(500);
/// How long to wait, after SIGKILL, for the group's processes to be gone.
const AFTER_KILL: Duration = Duration::from_millis(1000);
const TICK: Duration = Duration::from_millis(10);

/// Process groups started by the runner (and registered by other owners,
/// like the browser) that run now, so that a process that must exit at once
/// (a second terminating signal) can still kill them all.
static LIVE_GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn registry() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    LIVE_GROUPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Told of every group that enters (`true`) or leaves (`false`) the registry.
type Observer = Box<dyn Fn(u32, bool) + Send + Sync>;
static OBSERVER: std::sync::OnceLock<Observer> = std::sync::OnceLock::new();

/// Asks to be told of every process group that starts or ends from now on
/// (`pmpo worker` tells a guard process, which kills the groups left when
/// the worker dies). Only the first observer is kept; false if one was set.
pub fn observe_groups(f: impl Fn(u32, bool) + Send + Sync + 'static) -> bool {
    OBSERVER.set(Box::new(f)).is_ok()
}

fn tell(pgid: u32, live: bool) {
    if let Some(f) = OBSERVER.get() {
        f(pgid, live);
    }
}

/// Keeps a group in the registry while it lives, and SIGKILLs the group when
/// dropped (also when the future running it is dropped midway: a drop cannot
/// wait for a grace). The owner must drop it before reaping the group's
/// leader, so that the group id cannot have been reused.
#[derive(Debug)]
pub struct LiveGroup(u32);

impl LiveGroup {
    /// Registers the group `pgid` (0 is ignored).
    pub fn register(pgid: u32) -> LiveGroup {
        if pgid != 0 {
            registry().insert(pgid);
            tell(pgid, true);
        }
        LiveGroup(pgid)
    }

    pub fn pgid(&self) -> u32 {
        self.0
    }

    /// Leaves the registry without a signal: for a group known to be empty
    /// (its id may already be someone else's).
    pub fn forget(mut self) {
        if self.0 != 0 {
            registry().remove(&self.0);
            tell(self.0, false);
            self.0 = 0;
        }
    }
}

impl Drop for LiveGroup {
    fn drop(&mut self) {
        if self.0 != 0 {
            signal_group(self.0, libc::SIGKILL);
            registry().remove(&self.0);
            tell(self.0, false);
        }
    }
}

/// SIGKILLs every registered group. For a process about to exit without unwinding.
pub fn kill_live_groups() {
    let groups = registry().clone();
    for g in groups {
        signal_group(g, libc::SIGKILL);
    }
}

/// Whether the group is registered now (for tests and diagnostics).
pub fn live_groups_contain(pgid: u32) -> bool {
    registry().contains(&pgid)
}

/// Sends `sig` to every process of the group; false when the group is gone.
pub fn signal_group(pgid: u32, sig: i32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    // 0 and 1 would address our own group or every process.
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is shared.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// Whether a process of the group still runs (zombies do not count: a
/// leader kept unreaped holds the group id but runs nothing). Reads `/proc`;
/// without it, any member (zombies too) counts.
pub fn group_has_live_members(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return signal_group(pgid, 0);
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((state, pgrp)) = state_and_group(pid)
            && pgrp == pgid
            && state != 'Z'
            && state != 'X'
        {
            return true;
        }
    }
    false
}

/// A process's state letter and process group, from `/proc/PID/stat`.
pub fn state_and_group(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces and parentheses): state, ppid, pgrp.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether the process `pid` still runs (exists and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(p, 0) } != 0 {
        return false;
    }
    !matches!(state_and_group(pid), Some(('Z' | 'X', _)))
}

/// The one group kill: SIGTERM (and SIGCONT, so a stopped member can act on
/// it) to the group, up to `grace` for its processes to end, then SIGKILL to
/// whatever is left, and a bounded wait for that to take effect. A zero
/// grace is SIGKILL at once. Blocks the calling thread for at most
/// `grace` + about a second.
pub fn stop_group(pgid: u32, grace: Duration) {
    if !terminate(pgid, grace) {
        return;
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if !group_has_live_members(pgid) {
            return;
        }
        std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
    }
    kill_and_settle(pgid);
}

/// As [`stop_group`], waiting without blocking the async threads.
pub async fn stop_group_async(pgid: u32, grace: Duration) {
    if grace.is_zero() {
        if !signal_group(pgid, libc::SIGKILL) {
            return;
        }
    } else {
        if !terminate(pgid, grace) {
            return;
        }
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if !group_has_live_members(pgid) {
                return;
            }
            tokio::time::sleep(TICK.min(until.saturating_duration_since(Instant::now()))).await;
        }
        signal_group(pgid, libc::SIGKILL);
    }
    let until = Instant::now() + AFTER_KILL;
    while group_has_live_members(pgid) && Instant::now() < until {
        tokio::time::sleep(TICK).await;
    }
}

/// The first step: SIGTERM + SIGCONT, or SIGKILL at once for a zero grace.
/// Returns whether there is more to do (the grace to wait out).
fn terminate(pgid: u32, grace: Duration) -> bool {
    if grace.is_zero() {
        kill_and_settle(pgid);
        return false;
    }
    if !signal_group(pgid, libc::SIGTERM) {
        return false;
    }
    signal_group(pgid, libc::SIGCONT);
    true
}

fn kill_and_settle(pgid: u32) {
    if !signal_group(pgid, libc::SIGKILL) {
        return;
    }
    let until = Instant::now() + AFTER_KILL;
    while group_has_live_members(pgid) && Instant::now() < until {
        std::thread::sleep(TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observer_hears_of_each_group_that_starts_and_ends() {
        static HEARD: Mutex<Vec<(u32, bool)>> = Mutex::new(Vec::new());
        assert!(observe_groups(|pgid, live| {
            HEARD.lock().unwrap().push((pgid, live));
        }));
        assert!(
            !observe_groups(|_, _| {}),
            "only the first observer is kept"
        );
        // A group id no process has: registered, then forgotten (no signal sent).
        let g = LiveGroup::register(u32::MAX - 7);
        LiveGroup::register(0).forget();
        g.forget();
        let heard: Vec<_> = HEARD
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|(p, _)| *p == u32::MAX - 7 || *p == 0)
            .collect();
        assert_eq!(heard, vec![(u32::MAX - 7, true), (u32::MAX - 7, false)]);
    }
}
