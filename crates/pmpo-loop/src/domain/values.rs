//! The plan values an adapter builds: stages, constraints and their checks,
//! made as `pmpo_plan` types (never written as JSON and parsed back).

use pmpo_plan::model::{
    Constraint, ConstraintKind, ConstraintValidation, OnFailure, Severity, Stage, ValidationItem,
};
use serde_json::{Map, Value};

/// A stage calling `tool`, with every other field at the plan format's default.
pub(super) fn stage(id: &str, tool: &str, description: impl Into<String>) -> Stage {
    Stage {
        id: id.to_string(),
        description: description.into(),
        requires_execution: None,
        tool: Some(tool.to_string()),
        depends_on: Vec::new(),
        inputs: Map::new(),
        outputs: Vec::new(),
        timeout: None,
        input_files: Vec::new(),
        cache: true,
        retry: None,
        fallback: None,
        on_failure: OnFailure::default(),
        correct: false,
        metadata: Map::new(),
        validate: Vec::new(),
        sandbox: true,
        network: true,
    }
}

/// A stage that copies a workspace file (no shell interpolation: the paths are arguments).
pub(super) fn copy_stage(id: &str, from: &str, to: &str) -> Stage {
    stage(id, "run", format!("Copy `{from}` to `{to}`"))
        .with(serde_json::json!({"command": [
            "sh", "-c", "mkdir -p \"$(dirname \"$2\")\" && cp \"$1\" \"$2\"", "sh", from, to
        ]}))
        .reads([from])
        .writes([to])
}

/// The fields of a JSON object (tool inputs, check parameters are objects).
pub(super) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => {
            debug_assert!(false, "tool inputs must be an object, not {other}");
            Map::new()
        }
    }
}

/// Chained setters of an adapter's stage.
pub(super) trait StageValue: Sized {
    /// Runs after these stages (ids before the scope's prefix).
    fn after<S: Into<String>>(self, deps: impl IntoIterator<Item = S>) -> Self;
    /// The tool's inputs (`with:`), a JSON object.
    fn with(self, inputs: Value) -> Self;
    /// Files the stage reads (`inputs:`).
    fn reads<S: Into<String>>(self, files: impl IntoIterator<Item = S>) -> Self;
    /// Files the stage must produce (`outputs:`).
    fn writes<S: Into<String>>(self, files: impl IntoIterator<Item = S>) -> Self;
    /// A check run on the stage's outputs (`validate:`).
    fn checked_by(self, check: &str, params: Value) -> Self;
    /// An AI-only transformation (`requires_execution: false`).
    fn ai_only(self) -> Self;
}

impl StageValue for Stage {
    fn after<S: Into<String>>(mut self, deps: impl IntoIterator<Item = S>) -> Self {
        self.depends_on.extend(deps.into_iter().map(Into::into));
        self
    }
    fn with(mut self, inputs: Value) -> Self {
        self.inputs = object(inputs);
        self
    }
    fn reads<S: Into<String>>(mut self, files: impl IntoIterator<Item = S>) -> Self {
        self.input_files.extend(files.into_iter().map(Into::into));
        self
    }
    fn writes<S: Into<String>>(mut self, files: impl IntoIterator<Item = S>) -> Self {
        self.outputs.extend(files.into_iter().map(Into::into));
        self
    }
    fn checked_by(mut self, check: &str, params: Value) -> Self {
        self.validate.push(pmpo_plan::model::CheckSpec {
            check: check.to_string(),
            inputs: object(params),
            constraint_id: None,
            description: None,
        });
        self
    }
    fn ai_only(mut self) -> Self {
        self.requires_execution = Some(false);
        self
    }
}

/// A constraint; `method` names its deterministic check when it has one.
pub(super) fn constraint(
    id: &str,
    description: &str,
    severity: Severity,
    kind: ConstraintKind,
    method: Option<&str>,
) -> Constraint {
    Constraint {
        id: id.to_string(),
        description: description.to_string(),
        severity,
        kind: Some(kind),
        validation: method.map(|m| ConstraintValidation {
            requires_code_execution: Some(true),
            validation_method: Some(m.to_string()),
        }),
        target_metric: None,
    }
}

/// The check of a constraint (a `validation_plan` entry).
pub(super) fn validation(constraint_id: &str, method: &str, params: Value) -> ValidationItem {
    ValidationItem {
        constraint_id: constraint_id.to_string(),
        validation_method: method.to_string(),
        execution_required: true,
        description: None,
        inputs: object(params),
    }
}
