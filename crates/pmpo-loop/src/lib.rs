//! The PMPO loop (Specify -> Plan -> Execute -> Reflect -> Persist -> decide)
//! around the Execute phase of `pmpo-engine`.

pub mod condition;
pub mod triggers;
