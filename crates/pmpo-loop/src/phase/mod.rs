//! The phases of one iteration, each a part of `Controller`: Specify, Plan,
//! Execute, Reflect, the approval gate, Persist. The controller
//! (`crate::controller`) chooses which one runs next and decides after Persist.

pub mod approval;
mod execute;
mod judge;
mod persist;
pub(crate) mod plan;
mod reflect;
mod specify;

/// A specification written by an adapter, for the phases' tests: the
/// artifact `demo` of `artifact_type`, with these constraints, checks and
/// required files (JSON lists).
#[cfg(test)]
pub(crate) fn test_spec(
    artifact_type: &str,
    constraints: serde_json::Value,
    checks: serde_json::Value,
    required_files: serde_json::Value,
) -> crate::controller::SpecFile {
    serde_json::from_value(serde_json::json!({
        "specification": {
            "artifact_name": "demo",
            "artifact_type": artifact_type,
            "constraints": constraints,
        },
        "goals": [],
        "checks": checks,
        "required_files": required_files,
        "content_type": {},
        "specified_by": "adapter",
    }))
    .unwrap()
}
