//! The `run` tool's correction hook (`correct: true` on a stage): after the
//! stage's code failed, the model endpoint is asked once for the smallest
//! change that fixes it. The engine runs the corrected code when its recovery
//! policy says `Correct`.

use std::time::Instant;

use pmpo_store::Workspace;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// What the correction of a failed stage's code is asked from.
pub struct Correction<'a> {
    pub workspace: &'a Workspace,
    pub run_id: &'a str,
    pub stage: &'a str,
    /// The stage's inputs as written (`code`, `language`).
    pub inputs: &'a Map<String, Value>,
    /// What failed (the stage's failure message).
    pub error: &'a str,
    /// The failed attempt's stderr.
    pub stderr: &'a str,
    /// When the model must have answered.
    pub deadline: Instant,
}

/// The prompt that asks for the correction.
pub fn correction_prompt(c: &Correction<'_>) -> (String, String) {
    let language = c
        .inputs
        .get("language")
        .and_then(Value::as_str)
        .unwrap_or("sh")
        .to_string();
    let code = c
        .inputs
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let tail: String = c
        .stderr
        .chars()
        .rev()
        .take(4000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let error = c.error;
    let prompt = format!(
        "This {language} code, run as a step of a build, failed.\n\nError: {error}\n\nIts stderr (the end):\n{tail}\n\nThe code:\n```{language}\n{code}\n```\n\nReturn the same code with the smallest change that fixes the error, in one fenced ```{language} block. Do not add features or change what the code is for."
    );
    (language, prompt)
}

/// Asks the model endpoint for a minimal correction of a failed stage's code;
/// returns the corrected code, or why there is none.
pub async fn correct_code(
    client: Option<std::sync::Arc<pmpo_ai::Client>>,
    c: &Correction<'_>,
    cancel: &CancellationToken,
) -> Result<String, String> {
    let client = client
        .filter(|c| c.is_configured())
        .ok_or("no model endpoint is configured (see docs/configuration.md)")?;
    let (language, prompt) = correction_prompt(c);
    let ctx = pmpo_ai::CallContext {
        workspace: c.workspace,
        run_id: c.run_id,
        stage: c.stage,
        phase: pmpo_ai::Phase::Execute,
        route: pmpo_ai::Route::default(),
        cancel,
        deadline: c.deadline,
        brief: None,
    };
    let answer = client
        .complete(&ctx, &pmpo_ai::ChatRequest::user(prompt))
        .await
        .map_err(|e| format!("the model call failed: {}", e.message))?;
    crate::ai::code_block(&answer.completion.text, &language)
        .ok_or_else(|| format!("the model's answer had no ```{language} block"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_carries_the_code_the_error_and_the_end_of_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let inputs: Map<String, Value> =
            serde_json::from_str(r#"{"language": "python", "code": "print(x)"}"#).unwrap();
        let stderr = format!("{}NameError: name 'x' is not defined", "a".repeat(5000));
        let c = Correction {
            workspace: &ws,
            run_id: "r",
            stage: "s",
            inputs: &inputs,
            error: "exited with code 1",
            stderr: &stderr,
            deadline: Instant::now(),
        };
        let (language, prompt) = correction_prompt(&c);
        assert_eq!(language, "python");
        assert!(prompt.contains("```python\nprint(x)\n```"), "{prompt}");
        assert!(prompt.contains("Error: exited with code 1"));
        assert!(prompt.contains("NameError: name 'x' is not defined"));
        assert!(
            !prompt.contains(&"a".repeat(4000)),
            "only the end of stderr"
        );
    }

    #[tokio::test]
    async fn without_a_model_there_is_no_correction() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let inputs = Map::new();
        let c = Correction {
            workspace: &ws,
            run_id: "r",
            stage: "s",
            inputs: &inputs,
            error: "",
            stderr: "",
            deadline: Instant::now(),
        };
        let why = correct_code(None, &c, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(why.contains("no model endpoint"), "{why}");
    }
}
