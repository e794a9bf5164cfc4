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
pub(crate) mod phase;

/// What a plan a model or a host proposes may not do (the MCP `execute` tool
/// applies it to the plans a host gives it).
pub use phase::plan::refusals as plan_refusals;
pub mod reflect;
mod startup;
pub mod triggers;

pub use controller::{
    Approval, ApprovalRequest, AskApproval, Env, LoopError, Observer, Outcome, Report, Request,
    approve, refine,
};
