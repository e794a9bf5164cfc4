//! The confined processes running now (stages, checks' commands), with the
//! paths each may write. Under detection a change made while several run is
//! judged against all of their declared paths; an undeclared one is
//! attributed to each of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::policy::Declared;
use crate::snapshot::Difference;

type Others = Arc<Mutex<Vec<Declared>>>;
static RUNNING: Mutex<Vec<(u64, Others, Declared)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

/// One running stage or command, registered until dropped.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    declared: Declared,
    /// What the others that ran at the same time declared.
    others: Others,
}

/// Registers a stage or command that may write `declared`.
pub fn register(declared: Declared) -> Registration {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let others: Others = Arc::new(Mutex::new(Vec::new()));
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    for (_, theirs, their_declared) in running.iter() {
        theirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(declared.clone());
        others
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(their_declared.clone());
    }
    running.push((id, others.clone(), declared.clone()));
    Registration {
        id,
        declared,
        others,
    }
}

impl Registration {
    /// The differences that neither this one nor any that ran at the same
    /// time declared.
    pub fn undeclared(&self, diffs: Vec<Difference>) -> Vec<Difference> {
        let others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        diffs
            .into_iter()
            .filter(|d| {
                !self.declared.covers(&d.path, d.is_dir)
                    && !others.iter().any(|o| o.covers(&d.path, d.is_dir))
            })
            .collect()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|(id, _, _)| *id != self.id);
    }
}
