//! The `ai` tool: AI-only transformations (`requires_execution: false`).
//!
//! Model endpoints are not part of this build yet, so the tool refuses to
//! start and says so; every other stage of the plan is unaffected.

use async_trait::async_trait;
use pmpo_plan::InputIssue;
use serde_json::{Map, Value};

use crate::{ErrorClass, Tool, ToolContext, ToolError, ToolOutcome};

pub struct AiTool;

#[async_trait]
impl Tool for AiTool {
    fn name(&self) -> &'static str {
        "ai"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["image_generation"]
    }

    fn is_ai(&self) -> bool {
        true
    }

    fn check_inputs(&self, _inputs: &Map<String, Value>) -> Vec<InputIssue> {
        Vec::new()
    }

    fn preflight(&self) -> Result<(), ToolError> {
        Err(ToolError::new(ErrorClass::NotConfigured, "no model endpoint is configured, so this AI-only stage cannot run")
            .hint("this build has no model client yet; produce the stage's outputs with a `run` stage instead (requires_execution: true)"))
    }

    async fn invoke(
        &self,
        _ctx: &ToolContext<'_>,
        _inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        Err(self.preflight().expect_err("preflight always refuses"))
    }
}
