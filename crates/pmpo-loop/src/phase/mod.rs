//! The phases of one iteration, each a part of `Controller`: Specify, Plan,
//! Execute, Reflect, the approval gate, Persist. The controller
//! (`crate::controller`) chooses which one runs next and decides after Persist.

pub mod approval;
mod execute;
mod judge;
mod persist;
mod plan;
mod reflect;
mod specify;
