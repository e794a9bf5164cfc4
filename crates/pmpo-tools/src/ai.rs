//! The `ai` tool: AI-only transformations (`requires_execution: false`).
//!
//! It renders the stage's prompt template (`{{ name }}` from `vars:`, the
//! specification and its constraints), asks the routed model through the
//! [`pmpo_ai::Client`], and puts the answer where the stage says: a file (the
//! whole answer or one fenced code block) and/or named outputs parsed from a
//! JSON answer, validated against a JSON schema when one is given. A bad
//! answer gets exactly one repair request quoting the problems; if the second
//! answer is bad too, the stage fails and both answers are kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pmpo_ai::answer::Schema;
use pmpo_ai::{
    AiConfig, AiError, Answer, CallContext, ChatRequest, Client, ErrorKind, Message, Phase, Role,
    Route, template,
};
use pmpo_plan::{InputIssue, NamedOutputs, TemplateFile, TemplateReport};
use pmpo_store::Durability;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    Captured, ErrorClass, Termination, Tool, ToolContext, ToolError, ToolOutcome, issue,
    typed::{self, Inputs, Wrong},
};

/// The inputs of an `ai` stage (`with:`), in the order `pmpo check` lists them.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AiInputs {
    prompt: Option<String>,
    prompt_file: Option<String>,
    #[serde(default)]
    verbatim: bool,
    system: Option<String>,
    vars: Option<Value>,
    output: Option<String>,
    code_block: Option<String>,
    #[serde(default)]
    outputs_json: bool,
    schema: Option<Value>,
    phase: Option<String>,
    endpoint: Option<String>,
    model: Option<String>,
    fallback: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
}

impl Inputs for AiInputs {
    const TOOL: &'static str = "ai";
    const WRITES: &'static [&'static str] = &["output"];
    /// A reference is not resolved at plan time: `verbatim: $s.flag` is
    /// text where true or false is wanted.
    const REFERENCES: bool = false;

    fn wrong(key: &str) -> Wrong {
        match key {
            "max_tokens" => Wrong::Say("`max_tokens` must be a positive whole number"),
            "temperature" => Wrong::Say("`temperature` must be a number from 0 to 2"),
            _ => Wrong::Reader,
        }
    }
}

/// Where answers are kept when a stage fails on a bad answer.
pub use pmpo_ai::ANSWERS_DIR;
/// The answer reader's parts, under the names this module gave them before
/// `pmpo_ai::answer` read every model answer.
pub use pmpo_ai::answer::{code_block, fenced_blocks, strip_reasoning as strip_thinking};

use crate::inputs::{invalid, is_reference};

mod names;
mod shape;

use names::{template_context, undefined_names};
use shape::{Shape, Shaped};

/// A JSON value from an answer, read by [`pmpo_ai::answer::extract_json`].
pub fn parse_json_answer(text: &str) -> Result<Value, String> {
    pmpo_ai::answer::extract_json(text)
}

/// The `ai` tool; without a client (no endpoint configured) it refuses to start.
#[derive(Default)]
pub struct AiTool {
    client: Option<Arc<Client>>,
}

impl AiTool {
    pub fn new(client: Arc<Client>) -> Self {
        AiTool {
            client: Some(client),
        }
    }
}

/// The stage's failure class of a model-call failure. Outages and
/// answer-quality failures are told apart by `pmpo_ai` (one rule for both
/// crates): the engine counts only the former against the endpoint's breaker.
fn class_of(kind: ErrorKind) -> ErrorClass {
    if kind.outage() {
        return ErrorClass::ServiceUnavailable;
    }
    if kind.answer_quality() {
        return ErrorClass::AnswerQuality;
    }
    match kind {
        ErrorKind::NotConfigured | ErrorKind::UnknownModel | ErrorKind::NotRecorded => {
            ErrorClass::NotConfigured
        }
        ErrorKind::Auth => ErrorClass::PermissionDenied,
        ErrorKind::BadRequest => ErrorClass::InvalidInput,
        ErrorKind::Io => ErrorClass::Io,
        ErrorKind::AwaitingHost => ErrorClass::AwaitingAnswer,
        _ => ErrorClass::BadToolOutput,
    }
}

fn tool_error(e: AiError) -> ToolError {
    let mut t = ToolError::new(class_of(e.kind), e.message);
    t.hint = e.hint;
    if let Some(q) = e.question {
        let (message, hint) = awaiting_words(&q);
        t.message = message;
        t.hint = Some(hint);
    }
    t
}

/// What a stage whose question waits for the host says: the question's
/// file, and the command that answers it.
fn awaiting_words(q: &pmpo_ai::host::Question) -> (String, String) {
    let round = if q.messages.len() > 1 {
        " (a repair question: the last answer did not fit; the question says why)"
    } else {
        ""
    };
    let message = format!(
        "stage `{}` waits for the host's answer to its question{round}, kept in {}",
        q.stage,
        pmpo_ai::host::Question::path(&q.id)
    );
    let hint = format!(
        "answer with `pmpo answer --run {} --stage {} --file ANSWER.json` (the run goes on), or through the MCP `answer` tool",
        q.run_id, q.stage
    );
    (message, hint)
}

#[async_trait]
impl Tool for AiTool {
    fn name(&self) -> &'static str {
        "ai"
    }
    fn written_paths(&self, inputs: &Map<String, Value>) -> Vec<String> {
        typed::written::<AiInputs>(inputs)
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["image_generation"]
    }

    fn is_ai(&self) -> bool {
        true
    }

    fn check_inputs(&self, inputs: &Map<String, Value>) -> Vec<InputIssue> {
        let mut issues = typed::check::<AiInputs>(inputs);
        if inputs.contains_key("prompt") && inputs.contains_key("prompt_file") {
            issues.push(issue(
                "prompt_file",
                "give either `prompt` or `prompt_file`, not both",
                None,
            ));
        }
        if let Some(v) = inputs.get("vars")
            && !v.is_object()
            && !is_reference(v)
        {
            issues.push(issue(
                "vars",
                "`vars` must be a mapping of names to values",
                Some("e.g. `vars: {subject: a fox, palette: $colors.palette}`"),
            ));
        }
        if let Some(v) = inputs.get("schema")
            && !(v.is_object() || v.is_string())
        {
            issues.push(issue(
                "schema",
                "`schema` must be a JSON schema (a mapping) or the path of a schema file",
                None,
            ));
        }
        if let Some(Value::String(p)) = inputs.get("phase")
            && !is_reference(&json!(p))
            && Phase::parse(p).is_none()
        {
            issues.push(issue(
                "phase",
                format!("unknown phase `{p}`"),
                Some("phases are specify, plan, execute, reflect, persist"),
            ));
        }
        if inputs.get("max_tokens").and_then(Value::as_u64) == Some(0) {
            issues.push(issue(
                "max_tokens",
                "`max_tokens` must be a positive whole number",
                None,
            ));
        }
        if let Some(t) = inputs.get("temperature").and_then(Value::as_f64)
            && !(0.0..=2.0).contains(&t)
        {
            issues.push(issue(
                "temperature",
                "`temperature` must be a number from 0 to 2",
                None,
            ));
        }
        if inputs.contains_key("code_block") && !inputs.contains_key("output") {
            issues.push(issue("code_block", "`code_block` says which part of the answer goes to the `output` file, but there is no `output`", Some("add `output: PATH`")));
        }
        // Every `{{ name }}` must be a built-in or a `vars:` key (`verbatim`
        // prompts are sent as written: their placeholders are the point).
        let verbatim = inputs.get("verbatim").and_then(Value::as_bool) == Some(true);
        for key in ["prompt", "system"] {
            if let Some(Value::String(t)) = inputs.get(key) {
                if is_reference(&json!(t)) || (verbatim && key == "prompt") {
                    continue;
                }
                let what = if key == "system" {
                    "the system prompt"
                } else {
                    "the prompt"
                };
                issues.extend(undefined_names(key, what, t, inputs, None));
            }
        }
        issues
    }

    fn check_templates(
        &self,
        inputs: &Map<String, Value>,
        file: &mut dyn FnMut(&str) -> TemplateFile,
    ) -> TemplateReport {
        let mut report = TemplateReport::default();
        let Some(Value::String(path)) = inputs.get("prompt_file") else {
            return report;
        };
        if inputs.get("verbatim").and_then(Value::as_bool) == Some(true)
            || inputs.contains_key("prompt")
        {
            return report;
        }
        if let Some(text) =
            crate::inputs::template_text("prompt_file", "prompt file", path, file, &mut report)
        {
            let what = format!("prompt file `{path}`");
            report.errors = undefined_names("prompt_file", &what, &text, inputs, Some(path));
        }
        report
    }

    fn named_outputs(&self, inputs: &Map<String, Value>) -> NamedOutputs {
        // Only `outputs_json` makes named outputs.
        NamedOutputs::of_outputs_json(inputs)
    }

    fn preflight(&self) -> Result<(), ToolError> {
        match &self.client {
            Some(c) if c.is_configured() => Ok(()),
            _ => Err(ToolError::new(
                ErrorClass::NotConfigured,
                "no model endpoint is configured, so this AI-only stage cannot run",
            )
            .hint(AiConfig::how_to_configure())),
        }
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        self.preflight()?;
        let Some(client) = &self.client else {
            return Err(invalid("no model client"));
        };
        let started = Instant::now();
        let deadline = started + ctx.timeout;
        let input: AiInputs = typed::decode(inputs)?;
        let shape = Shape {
            code_block: input.code_block.as_deref(),
            outputs_json: input.outputs_json,
            schema: schema_input(ctx, input.schema.as_ref())?,
        };
        let request = request(ctx, &input, &shape)?;
        let phase = match input.phase.as_deref() {
            Some(p) => Phase::parse(p).ok_or_else(|| invalid(format!("unknown phase `{p}`")))?,
            None => Phase::Execute,
        };
        // What the host is told when it answers this stage (`via = "host"`).
        let brief = pmpo_ai::host::Brief {
            schema: shape.schema.as_ref().map(|(v, _)| v.clone()),
            files: input.output.iter().cloned().collect(),
            measured: Vec::new(),
        };
        let call = CallContext {
            workspace: ctx.workspace,
            run_id: ctx.run_id,
            stage: ctx.stage_id,
            phase,
            route: Route {
                endpoint: input.endpoint.clone(),
                model: input.model.clone(),
                fallback: input.fallback.clone(),
                tier: None,
                via: None,
            },
            cancel: ctx.cancel,
            deadline,
            brief: Some(&brief),
        };
        let mut answers: Vec<Answer> = Vec::new();
        let shaped = match converse(ctx, client, &call, request, &shape, &mut answers).await? {
            Ok(shaped) => shaped,
            Err(termination) => return Ok(self.ended(termination, started, &answers)),
        };
        if let Some(path) = &input.output {
            write_output(ctx, path, &shaped.file_text)?;
        }
        let mut outcome = self.ended(Termination::Exited(0), started, &answers);
        outcome.outputs = shaped.outputs;
        Ok(outcome)
    }
}

/// The stage's schema: inline, or read from a file; compiled once.
fn schema_input(
    ctx: &ToolContext<'_>,
    schema: Option<&Value>,
) -> Result<Option<(Value, Schema)>, ToolError> {
    let (value, source) = match schema {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(file)) => {
            let text = crate::inputs::read_text(ctx.workspace, file)?;
            let value = serde_json::from_str(&text)
                .map_err(|e| invalid(format!("schema `{file}` is not JSON: {e}")))?;
            (value, format!("schema `{file}`"))
        }
        Some(v) => (v.clone(), "the stage's `schema`".to_string()),
    };
    let compiled = Schema::new(&value).map_err(|e| invalid(format!("{source}: {e}")))?;
    Ok(Some((value, compiled)))
}

/// The first request: the rendered prompt, the system prompt and what the
/// wanted shape asks of the model.
fn request(
    ctx: &ToolContext<'_>,
    input: &AiInputs,
    shape: &Shape<'_>,
) -> Result<ChatRequest, ToolError> {
    let template_text = match (input.prompt.as_deref(), input.prompt_file.as_deref()) {
        (Some(p), _) => p.to_string(),
        (None, Some(file)) => crate::inputs::read_text(ctx.workspace, file)?,
        // A stage without a prompt is asked what its description says.
        (None, None) if !ctx.description.trim().is_empty() => ctx.description.to_string(),
        (None, None) => {
            return Err(
                invalid("the `ai` stage has neither a `prompt` nor a description")
                    .hint("add `with: {prompt: ...}` (see docs/plan-format.md)"),
            );
        }
    };
    let context = template_context(ctx.spec, ctx.stage_id, input.vars.as_ref());
    // `verbatim: true` sends the prompt as written: a prompt under test
    // keeps its own `{{placeholders}}`.
    let prompt = if input.verbatim {
        template_text
    } else {
        template::render(&template_text, &context).map_err(|e| {
            invalid(e).hint("define the name under `vars:` (see docs/plan-format.md)")
        })?
    };
    let system = match &input.system {
        Some(s) => Some(template::render(s, &context).map_err(invalid)?),
        None => None,
    };
    let system = match (system, shape.instructions()) {
        (Some(s), Some(i)) => Some(format!("{s}\n\n{i}")),
        (s, i) => s.or(i),
    };
    Ok(ChatRequest {
        system,
        messages: vec![Message {
            role: Role::User,
            content: prompt,
        }],
        max_tokens: input.max_tokens,
        temperature: input.temperature,
    })
}

/// Asks, reads the answer, and asks once more with the one repair request
/// when it cannot be used. `Ok(Err(_))`: the stage was cancelled or timed
/// out while it waited. Every answer received is pushed onto `answers`.
async fn converse(
    ctx: &ToolContext<'_>,
    client: &Client,
    call: &CallContext<'_>,
    mut req: ChatRequest,
    shape: &Shape<'_>,
    answers: &mut Vec<Answer>,
) -> Result<Result<Shaped, Termination>, ToolError> {
    // What each answer so far was found to lack (kept with it on failure).
    let mut found: Vec<Vec<String>> = Vec::new();
    loop {
        let answer = match client.complete(call, &req).await {
            Ok(a) => a,
            Err(e) if e.kind == ErrorKind::Cancelled || ctx.cancel.is_cancelled() => {
                return Ok(Err(Termination::Cancelled));
            }
            Err(e) if e.kind == ErrorKind::Timeout && Instant::now() >= call.deadline => {
                return Ok(Err(Termination::TimedOut));
            }
            Err(e) => {
                // A rejected answer is already kept by the client (its
                // message says where); the answers before it are kept here.
                let earlier = keep_answers(ctx, answers, &found);
                let mut err = tool_error(e);
                if !earlier.is_empty() {
                    err.message = format!(
                        "{} (the earlier answer is kept in {})",
                        err.message,
                        earlier.join(" and ")
                    );
                }
                return Err(err);
            }
        };
        let result = shape.apply(&answer.completion.text);
        let text = answer.completion.text.clone();
        answers.push(answer);
        found.push(result.as_ref().err().cloned().unwrap_or_default());
        match result {
            Ok(s) => return Ok(Ok(s)),
            Err(problems) if answers.len() == 1 => {
                pmpo_ai::answer::repair_request(&mut req, &text, &problems);
            }
            Err(problems) => {
                let kept = keep_answers(ctx, answers, &found).join(" and ");
                return Err(ToolError::new(
                    ErrorClass::AnswerQuality,
                    format!(
                        "the model's answer is still unusable after one repair request: {}; both answers are kept in {kept}",
                        problems.join("; ")
                    ),
                )
                .hint("make the prompt and schema clearer, raise max_tokens, or use a stronger model"));
            }
        }
    }
}

/// Writes the stage's file (secrets redacted), making its folder first.
fn write_output(ctx: &ToolContext<'_>, path: &str, text: &str) -> Result<(), ToolError> {
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .and_then(|d| d.to_str())
        .filter(|d| !d.is_empty())
    {
        ctx.workspace
            .create_dir_all(dir)
            .map_err(|e| ToolError::new(ErrorClass::Io, e.to_string()))?;
    }
    ctx.workspace
        .write_atomic(
            path,
            pmpo_store::secrets::redact(text).as_bytes(),
            Durability::Relaxed,
        )
        .map(drop)
        .map_err(|e| ToolError::new(ErrorClass::Io, e.to_string()))
}

impl AiTool {
    /// The outcome: stdout is the last answer; the invocation says where it came from.
    fn ended(&self, termination: Termination, started: Instant, answers: &[Answer]) -> ToolOutcome {
        let last = answers.last();
        let calls: Vec<Value> = answers
            .iter()
            .map(|a| {
                json!({
                    "endpoint": a.endpoint,
                    "model": a.model,
                    "request_hash": a.request_hash,
                    "attempts": a.attempts,
                    "tokens_in": a.completion.tokens_in,
                    "tokens_out": a.completion.tokens_out,
                    "latency_ms": (a.latency.as_secs_f64() * 1e6).round() / 1e3,
                    "fallback_from": a.fallback_from,
                })
            })
            .collect();
        ToolOutcome {
            termination,
            stdout: Captured::from_bytes(
                last.map_or("", |a| a.completion.text.as_str()).as_bytes(),
            ),
            stderr: Captured::default(),
            duration: started.elapsed().max(Duration::ZERO),
            outputs: Map::new(),
            invocation: json!({ "model_calls": calls }),
            notes: answers
                .iter()
                .flat_map(|a| a.notes.iter().cloned())
                .collect(),
            skipped: None,
        }
    }
}

/// Keeps the answers of a failed stage where the user can read them, each
/// at the place the client numbered it (`.state/ai/<run>/<stage>/answer-N.txt`,
/// with `answer-N.json` beside it: finish reason, tokens, endpoint, model, and
/// what the stage found wrong with it). Returns the paths that were written.
fn keep_answers(ctx: &ToolContext<'_>, answers: &[Answer], found: &[Vec<String>]) -> Vec<String> {
    answers
        .iter()
        .zip(found)
        .filter_map(|(a, problems)| {
            Client::keep_answer(
                ctx.workspace,
                &a.keep_as,
                &a.completion,
                &a.endpoint,
                &a.model,
                &a.request_hash,
                if problems.is_empty() {
                    "usable"
                } else {
                    "unusable"
                },
                problems,
            )
            .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_code_blocks_and_json() {
        let a = "Here:\n```svg\n<svg/>\n```\nand\n```json\n{\"a\": 1}\n```\n";
        assert_eq!(code_block(a, "svg").as_deref(), Some("<svg/>\n"));
        assert_eq!(code_block(a, "python"), None);
        assert_eq!(
            code_block("<svg></svg>", "svg").as_deref(),
            Some("<svg></svg>\n")
        );
        assert_eq!(parse_json_answer(a).unwrap(), json!({"a": 1}));
        assert_eq!(
            parse_json_answer("Sure! {\"b\": [1]} done").unwrap(),
            json!({"b": [1]})
        );
        assert!(parse_json_answer("no").is_err());
        assert_eq!(
            code_block("Sure: <svg a=\"1\"></svg> enjoy", "svg").as_deref(),
            Some("<svg a=\"1\"></svg>\n")
        );
        assert_eq!(
            strip_thinking("<think>{x}</think>\n{\"a\": 2}").trim(),
            "{\"a\": 2}"
        );
    }

    #[test]
    fn a_question_for_the_host_is_a_pause_that_says_how_to_answer() {
        use pmpo_ai::host::{Brief, Question, awaiting};
        let req = ChatRequest::user("Pick colors");
        let q = Question::new("r1", Phase::Execute, "palette", &req, Brief::default());
        let id = q.id.clone();
        let t = tool_error(awaiting(q));
        assert_eq!(t.class, ErrorClass::AwaitingAnswer);
        assert_eq!(
            pmpo_store::states::FailureKind::from(t.class).as_str(),
            "awaiting_answer"
        );
        assert!(
            t.message
                .contains(&format!(".state/host/questions/{id}.json")),
            "{}",
            t.message
        );
        assert!(!t.message.contains("repair"), "{}", t.message);
        let hint = t.hint.unwrap();
        assert!(
            hint.contains("pmpo answer --run r1 --stage palette --file ANSWER.json"),
            "{hint}"
        );
        // A repair round says so.
        let mut repair = req.clone();
        pmpo_ai::answer::repair_request(&mut repair, "{}", &["`primary` is missing".into()]);
        let q = Question::new("r1", Phase::Execute, "palette", &repair, Brief::default());
        assert!(
            tool_error(awaiting(q))
                .message
                .contains("a repair question")
        );
        // Other failures keep their class.
        assert_eq!(class_of(ErrorKind::Auth), ErrorClass::PermissionDenied);
    }

    #[test]
    fn checks_inputs() {
        let t = AiTool::default();
        let check = |v: Value| {
            t.check_inputs(v.as_object().unwrap())
                .into_iter()
                .map(|i| i.message)
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            check(
                json!({"prompt": "Draw {{ subject }} for {{ artifact_name }}", "vars": {"subject": "x"}})
            ),
            ""
        );
        let m = check(
            json!({"prompt": "{{ nope }}", "code_block": "svg", "max_tokens": -1, "promt": 1}),
        );
        for want in [
            "`nope` is not defined",
            "no `output`",
            "max_tokens",
            "unknown input `promt`",
        ] {
            assert!(m.contains(want), "{want} in {m}");
        }
        assert_eq!(check(json!({})), "");
        assert!(check(json!({"prompt": "a", "prompt_file": "b"})).contains("not both"));
        assert!(
            t.preflight()
                .unwrap_err()
                .hint
                .unwrap()
                .contains("OPENAI_BASE_URL")
        );
    }
}
