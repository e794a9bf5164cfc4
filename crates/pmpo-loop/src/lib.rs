//! The PMPO loop (Specify -> Plan -> Execute -> Reflect -> Persist -> decide)
//! around the Execute phase of `pmpo-engine`: startup (state provider, named
//! artifact, content type), domain adapters, the approval gate and workflow
//! triggers.

pub mod condition;
pub mod content_type;
pub mod controller;
pub mod domain;
pub mod evidence;
mod files;
pub mod journal;
pub mod model;
pub mod pending;
mod phase;
pub mod reflect;
mod startup;
pub mod triggers;

pub use controller::{
    Approval, ApprovalRequest, AskApproval, Env, LoopError, Observer, Outcome, Report, Request,
    approve, refine,
};
