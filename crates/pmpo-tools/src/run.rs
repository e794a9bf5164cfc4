//! The `run` tool, the seeds' code interpreter.
//!
//! ```yaml
//! with:
//!   command: [python3, scripts/build.py, --out, dist]   # argv, no shell
//! # or
//! with:
//!   language: python          # bash | sh | python | node
//!   code: |
//!     print("hello")
//!   env: {NAME: $other.stdout}  # values reach code as variables, never spliced into it
//!   outputs_json: true          # last stdout line is a JSON object of named outputs
//!   schema: {type: object, required: [n], properties: {n: {type: integer}}}  # optional: what it must hold
//! ```

mod correct;

pub use correct::{Correction, correct_code, correction_prompt};

use std::io::ErrorKind;

use async_trait::async_trait;
use pmpo_plan::{InputIssue, NamedOutputs};
use pmpo_store::Durability;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::capture::DEFAULT_LIMIT;
use crate::inputs::is_reference;
use crate::process::ProcessSpec;
use crate::typed::{self, Inputs, Wrong};
use crate::{ErrorClass, Tool, ToolContext, ToolError, ToolOutcome, issue};

/// The inputs of a `run` stage (`with:`). `command`, `code`, `stdin`,
/// `env_passthrough` and `schema` take more than one shape, checked below
/// in their own words.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // some keys are read from the map by `program` and `stage_env`
struct RunInputs {
    command: Option<Value>,
    language: Option<Value>,
    code: Option<Value>,
    env: Option<Map<String, Value>>,
    env_passthrough: Option<Value>,
    cwd: Option<String>,
    stdin: Option<Value>,
    outputs_json: Option<bool>,
    schema: Option<Value>,
}

impl Inputs for RunInputs {
    const TOOL: &'static str = "run";
    /// `env: $s.vars` or `outputs_json: $s.flag` is refused before the run.
    const REFERENCES: bool = false;

    fn wrong(key: &str) -> Wrong {
        match key {
            "env" => Wrong::Say("`env` must be a mapping of NAME: value"),
            "cwd" => Wrong::Say("`cwd` must be a path relative to the workspace"),
            _ => Wrong::Reader,
        }
    }
}

/// Language name -> (interpreter, file extension).
const LANGUAGES: &[(&str, &str, &str)] = &[
    ("bash", "bash", "sh"),
    ("sh", "sh", "sh"),
    ("python", "python3", "py"),
    ("python3", "python3", "py"),
    ("node", "node", "js"),
    ("javascript", "node", "js"),
];

pub struct RunTool;

fn scalar_to_arg(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Builds argv from `command:`, flattening lists that references resolved to.
fn argv_of(command: &Value) -> Result<Vec<String>, ToolError> {
    let bad = |what: &str| ToolError::new(ErrorClass::InvalidInput, format!("`command` {what}"));
    let items = command
        .as_array()
        .ok_or_else(|| bad("must be a list of arguments"))?;
    let mut argv = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Array(inner) => {
                for x in inner {
                    argv.push(
                        scalar_to_arg(x).ok_or_else(|| bad("contains a value that is not text"))?,
                    );
                }
            }
            other => argv.push(
                scalar_to_arg(other).ok_or_else(|| bad("contains a value that is not text"))?,
            ),
        }
    }
    if argv.is_empty() || argv[0].is_empty() {
        return Err(bad("is empty"));
    }
    Ok(argv)
}

#[async_trait]
impl Tool for RunTool {
    fn name(&self) -> &'static str {
        "run"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["code_interpreter"]
    }

    fn check_inputs(&self, inputs: &Map<String, Value>) -> Vec<InputIssue> {
        let mut issues = typed::check::<RunInputs>(inputs);
        check_program(inputs, &mut issues);
        check_env(inputs, &mut issues);
        check_options(inputs, &mut issues);
        issues
    }

    fn named_outputs(&self, inputs: &Map<String, Value>) -> NamedOutputs {
        // Only `outputs_json` makes named outputs.
        NamedOutputs::of_outputs_json(inputs)
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        let invalid = |m: String| ToolError::new(ErrorClass::InvalidInput, m);
        let input: RunInputs = typed::decode(inputs)?;
        let (argv, script_path) = program(ctx, inputs)?;
        let cwd = match input.cwd.as_deref() {
            None | Some(".") | Some("./") => ctx.workspace.root().to_path_buf(),
            Some(dir) => ctx
                .workspace
                .resolve(dir)
                .map_err(|e| invalid(format!("`cwd`: {e}")))?,
        };
        if !cwd.is_dir() {
            return Err(invalid(format!(
                "`cwd` `{}` is not a directory",
                cwd.display()
            )));
        }

        let mut env = stage_env(ctx, inputs);
        let stdin = input
            .stdin
            .as_ref()
            .and_then(scalar_to_arg)
            .map(String::into_bytes);

        // A relative program path (`./build.sh`) means relative to the working directory.
        let mut argv = argv;
        if argv[0].contains('/') && !argv[0].starts_with('/') {
            argv[0] = cwd.join(&argv[0]).to_string_lossy().into_owned();
        }
        if let Some(c) = ctx.confine {
            env.extend(c.env.iter().cloned());
        }
        let spec = ProcessSpec {
            argv: argv.clone(),
            cwd,
            env,
            stdin,
            capture_limit: DEFAULT_LIMIT,
            pre_exec: ctx.confine.and_then(|c| c.pre_exec.clone()),
        };
        // Output beyond the capture limit is kept whole, for `$stage.stdout_file`.
        let spill = |stream: &str| {
            Some(crate::capture::Spill {
                workspace: ctx.workspace.clone(),
                rel: whole_output_rel(ctx.run_id, ctx.stage_id, stream),
            })
        };
        let result = crate::process::run_process_spilling(
            &spec,
            ctx.timeout,
            ctx.cancel,
            [spill("stdout"), spill("stderr")],
        )
        .await
        .map_err(|e| spawn_error(&argv[0], e))?;
        let mut result = result;
        // A key the stage printed stays with pmpo: out of what it keeps in
        // memory (logs, results, `$stage.stdout`) and out of the whole output.
        redact_captured(&mut result.stdout);
        redact_captured(&mut result.stderr);
        for whole in [&result.stdout.whole_file, &result.stderr.whole_file]
            .into_iter()
            .flatten()
        {
            pmpo_store::secrets::redact_file(ctx.workspace, whole).map_err(|e| {
                ToolError::new(
                    ErrorClass::Io,
                    format!("cannot remove a key from `{whole}`: {e}"),
                )
            })?;
        }

        let mut outcome = ToolOutcome {
            termination: result.termination,
            stdout: result.stdout,
            stderr: result.stderr,
            duration: result.duration,
            outputs: Map::new(),
            invocation: json!({ "argv": argv, "script": script_path }),
            notes: result.note.into_iter().collect(),
            skipped: None,
        };
        named_outputs_of(ctx, inputs, &mut outcome)?;
        Ok(outcome)
    }
}

/// `command`, or `language` + `code`: what the stage runs.
fn check_program(inputs: &Map<String, Value>, issues: &mut Vec<InputIssue>) {
    let shell_help = "write `language: sh` and `code: ...` to use a shell, or give argv as a list: `command: [echo, hello]`";
    match (inputs.get("command"), inputs.get("code")) {
        (Some(_), Some(_)) => issues.push(issue(
            "code",
            "give either `command` or `code`, not both",
            None,
        )),
        (None, None) => issues.push(issue(
            "",
            "the `run` tool needs `command` (an argv list) or `language` + `code`",
            Some("e.g. `with: {command: [echo, hello]}`"),
        )),
        (Some(Value::String(s)), None) if !is_reference(&Value::String(s.clone())) => {
            issues.push(issue(
                "command",
                "`command` must be a list of arguments, not a string (no shell is used)",
                Some(shell_help),
            ))
        }
        (Some(Value::Array(items)), None) => {
            if items.is_empty() {
                issues.push(issue(
                    "command",
                    "`command` is empty",
                    Some("give the program and its arguments"),
                ));
            }
            for item in items {
                if matches!(item, Value::Object(_) | Value::Array(_) | Value::Null) {
                    issues.push(issue("command", "every element of `command` must be text, a number or a `$stage.field` reference", None));
                    break;
                }
            }
        }
        (Some(v), None) if !is_reference(v) && !v.is_array() => issues.push(issue(
            "command",
            "`command` must be a list of arguments",
            Some(shell_help),
        )),
        (None, Some(code)) => {
            if !code.is_string() {
                issues.push(issue("code", "`code` must be text", None));
            }
            match inputs.get("language") {
                None => issues.push(issue(
                    "",
                    "`code` needs a `language`",
                    Some("one of: bash, sh, python, node"),
                )),
                Some(Value::String(l)) if !LANGUAGES.iter().any(|(n, _, _)| n == l) => {
                    issues.push(issue(
                        "language",
                        format!("unknown language `{l}`"),
                        Some("one of: bash, sh, python, node"),
                    ))
                }
                Some(Value::String(_)) => {}
                Some(_) => issues.push(issue(
                    "language",
                    "`language` must be text",
                    Some("one of: bash, sh, python, node"),
                )),
            }
        }
        _ => {}
    }
    if inputs.contains_key("language") && inputs.contains_key("command") {
        issues.push(issue(
            "language",
            "`language` goes with `code`, not with `command`",
            None,
        ));
    }
}

/// `env` and `env_passthrough`: what the stage's processes see.
fn check_env(inputs: &Map<String, Value>, issues: &mut Vec<InputIssue>) {
    // A mapping, or the typed reader has said so.
    if let Some(Value::Object(map)) = inputs.get("env") {
        for (k, v) in map {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                issues.push(issue(
                    "env",
                    format!("`{k}` is not a valid environment variable name"),
                    None,
                ));
            }
            if matches!(v, Value::Object(_) | Value::Null) {
                issues.push(issue(
                    "env",
                    format!("env `{k}` must be text, a number, a boolean or a list"),
                    None,
                ));
            }
        }
    }
    match inputs.get("env_passthrough") {
        None => {}
        Some(Value::Array(names))
            if names.iter().all(|n| {
                n.as_str()
                    .is_some_and(|s| !s.is_empty() && !s.contains(['=', '\0']))
            }) => {}
        Some(_) => issues.push(issue(
            "env_passthrough",
            "`env_passthrough` must be a list of variable names",
            Some("e.g. `env_passthrough: [GITHUB_TOKEN]`: secret variables are kept from stages unless listed here"),
        )),
    }
}

/// `cwd`, `stdin` and `schema` (the types of `cwd` and `outputs_json` are
/// the typed reader's).
fn check_options(inputs: &Map<String, Value>, issues: &mut Vec<InputIssue>) {
    if let Some(Value::String(s)) = inputs.get("cwd")
        && !(is_reference(&Value::String(s.clone())) || s == "." || s == "./")
        && let Err(msg) = pmpo_plan::validate_output_pattern(s)
    {
        issues.push(issue(
            "cwd",
            format!("`cwd` {msg}"),
            Some("give a directory relative to the workspace"),
        ));
    }
    if let Some(v) = inputs.get("stdin")
        && !(v.is_string() || v.is_number())
    {
        issues.push(issue("stdin", "`stdin` must be text", None));
    }
    match inputs.get("schema") {
        None => {}
        Some(v) if !(v.is_object() || v.is_string()) => issues.push(issue(
            "schema",
            "`schema` must be a JSON schema (a mapping) or the path of a schema file",
            None,
        )),
        Some(_) if inputs.get("outputs_json").and_then(Value::as_bool) != Some(true) => issues
            .push(issue(
                "schema",
                "`schema` describes the named outputs, but `outputs_json` is not true",
                Some("add `outputs_json: true`, or remove `schema`"),
            )),
        Some(_) => {}
    }
}

/// The argv the stage runs: its `command`, or its interpreter and its `code`
/// (kept under .state/scripts/, whose path is returned too).
fn program(
    ctx: &ToolContext<'_>,
    inputs: &Map<String, Value>,
) -> Result<(Vec<String>, Option<String>), ToolError> {
    let invalid = |m: String| ToolError::new(ErrorClass::InvalidInput, m);
    if let Some(command) = inputs.get("command") {
        return Ok((argv_of(command)?, None));
    }
    let language = inputs
        .get("language")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (_, interpreter, ext) = LANGUAGES
        .iter()
        .find(|(n, _, _)| *n == language)
        .ok_or_else(|| invalid(format!("unknown language `{language}`")))?;
    let code = inputs
        .get("code")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("`code` must be text".into()))?;
    // The code is kept under .state/scripts/ as a record of what ran.
    let rel = format!(
        "{}/scripts/{}/{}.{ext}",
        pmpo_store::STATE_DIR,
        ctx.run_id,
        ctx.stage_id
    );
    ctx.workspace
        .write_atomic(&rel, code.as_bytes(), Durability::Relaxed)
        .map_err(|e| {
            ToolError::new(
                ErrorClass::Io,
                format!("cannot write the stage's code to `{rel}`: {e}"),
            )
        })?;
    let argv = vec![
        interpreter.to_string(),
        ctx.workspace
            .root()
            .join(&rel)
            .to_string_lossy()
            .into_owned(),
    ];
    Ok((argv, Some(rel)))
}

/// The stage's environment: pmpo's variables, its `env`, and the secret
/// variables it lists in `env_passthrough`.
fn stage_env(ctx: &ToolContext<'_>, inputs: &Map<String, Value>) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PMPO_WORKSPACE".to_string(),
            ctx.workspace.root().to_string_lossy().into_owned(),
        ),
        ("PMPO_RUN_ID".to_string(), ctx.run_id.to_string()),
        ("PMPO_STAGE".to_string(), ctx.stage_id.to_string()),
    ];
    if let Some(Value::Object(vars)) = inputs.get("env") {
        for (k, v) in vars {
            let value = match v {
                Value::Array(items) => items
                    .iter()
                    .filter_map(scalar_to_arg)
                    .collect::<Vec<_>>()
                    .join("\n"),
                other => scalar_to_arg(other).unwrap_or_default(),
            };
            env.push((k.clone(), value));
        }
    }
    // Secret variables are kept from stages; the ones the stage lists in
    // `env_passthrough` are handed on from pmpo's own environment.
    if let Some(Value::Array(names)) = inputs.get("env_passthrough") {
        for name in names.iter().filter_map(Value::as_str) {
            if let Ok(value) = std::env::var(name) {
                env.push((name.to_string(), value));
            }
        }
    }
    env
}

/// `outputs_json: true`: the last line of stdout is the named outputs (checked against `schema`).
fn named_outputs_of(
    ctx: &ToolContext<'_>,
    inputs: &Map<String, Value>,
    outcome: &mut ToolOutcome,
) -> Result<(), ToolError> {
    if inputs.get("outputs_json").and_then(Value::as_bool) == Some(true)
        && outcome.termination == crate::Termination::Exited(0)
    {
        let line = outcome.stdout.last_line().unwrap_or_default();
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(map)) => {
                let value = Value::Object(map);
                if let Some(schema) = outputs_schema(ctx, inputs)? {
                    let errors = pmpo_ai::schema::validate(&schema, &value);
                    if !errors.is_empty() {
                        return Err(ToolError::new(
                            ErrorClass::BadToolOutput,
                            format!(
                                "the named outputs (the last line of stdout) do not satisfy `schema`: {}",
                                errors.join("; ")
                            ),
                        )
                        .hint("print the fields the schema declares, or change the schema"));
                    }
                }
                if let Value::Object(map) = value {
                    outcome.outputs = map;
                }
            }
            _ => {
                let shown: String = line.chars().take(200).collect();
                return Err(ToolError::new(
                    ErrorClass::BadToolOutput,
                    format!("`outputs_json: true` but the last line of stdout is not a JSON object: {shown:?}"),
                )
                .hint("print one JSON object, e.g. {\"name\": \"value\"}, as the last line of stdout"));
            }
        }
    }
    Ok(())
}

/// Replaces the configured keys in what was kept of a process's output by
/// `[redacted]`; the byte count follows, so truncation is still told right.
pub(crate) fn redact_captured(c: &mut crate::capture::Captured) {
    for part in [&mut c.head, &mut c.tail] {
        if let std::borrow::Cow::Owned(clean) = pmpo_store::secrets::redact_bytes(part) {
            c.total = (c.total + clean.len() as u64).saturating_sub(part.len() as u64);
            *part = clean;
        }
    }
}

/// The stage's `schema` for its named outputs: inline, or a workspace file.
fn outputs_schema(
    ctx: &ToolContext<'_>,
    inputs: &Map<String, Value>,
) -> Result<Option<Value>, ToolError> {
    match inputs.get("schema") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(file)) => {
            let text = crate::inputs::read_text(ctx.workspace, file)?;
            serde_json::from_str(&text).map(Some).map_err(|e| {
                ToolError::new(
                    ErrorClass::InvalidInput,
                    format!("schema `{file}` is not JSON: {e}"),
                )
            })
        }
        Some(v) => Ok(Some(v.clone())),
    }
}

fn spawn_error(program: &str, e: std::io::Error) -> ToolError {
    match e.kind() {
        ErrorKind::NotFound => ToolError::new(
            ErrorClass::MissingDependency,
            format!("command not found: `{program}`"),
        )
        .hint(format!(
            "install `{program}` or put it on PATH; pmpo never installs anything on its own"
        )),
        ErrorKind::PermissionDenied => ToolError::new(
            ErrorClass::PermissionDenied,
            format!("permission denied running `{program}`"),
        )
        .hint(format!(
            "make it executable (chmod +x {program}) or run it through its interpreter"
        )),
        _ => ToolError::new(ErrorClass::Io, format!("cannot start `{program}`: {e}")),
    }
}

/// Where a stage's whole stdout or stderr is kept (`$stage.stdout_file`):
/// `.state/output/<run>/<stage>.<stream>`.
pub fn whole_output_rel(run_id: &str, stage_id: &str, stream: &str) -> String {
    format!(".state/output/{run_id}/{stage_id}.{stream}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(yaml: Value) -> Map<String, Value> {
        yaml.as_object().unwrap().clone()
    }

    #[test]
    fn input_checks() {
        let t = RunTool;
        assert!(
            t.check_inputs(&inputs(json!({"command": ["echo", "hi"]})))
                .is_empty()
        );
        assert!(
            t.check_inputs(&inputs(json!({"language": "python", "code": "print(1)"})))
                .is_empty()
        );
        assert!(
            t.check_inputs(&inputs(json!({"command": "$a.files"})))
                .is_empty()
        );
        let msgs = |v| {
            t.check_inputs(&inputs(v))
                .into_iter()
                .map(|i| i.message)
                .collect::<Vec<_>>()
                .join("; ")
        };
        assert!(msgs(json!({})).contains("needs `command`"));
        assert!(msgs(json!({"command": "echo hi"})).contains("not a string"));
        assert!(msgs(json!({"code": "x"})).contains("needs a `language`"));
        assert!(msgs(json!({"language": "ruby", "code": "x"})).contains("unknown language"));
        assert!(msgs(json!({"command": ["a"], "comand": 1})).contains("unknown input `comand`"));
        assert!(msgs(json!({"command": ["a"], "cwd": "../x"})).contains("`cwd`"));
        assert!(msgs(json!({"command": []})).contains("empty"));
        // The typed reader: the key, the tool's words, and a reference taken
        // literally where a mapping or true/false is wanted.
        let typed = json!({
            "command": ["a"],
            "env": "$s.vars",
            "cwd": 3,
            "outputs_json": "$s.flag",
            "cwd_": "x",
        });
        assert_eq!(
            msgs(typed),
            "unknown input `cwd_` for tool `run`; \
             `env` must be a mapping of NAME: value; \
             `cwd` must be a path relative to the workspace; \
             `outputs_json` must be true or false"
        );
        let help = t.check_inputs(&inputs(json!({"command": ["a"], "stdn": "x"})));
        assert!(
            help[0]
                .help
                .as_deref()
                .unwrap()
                .starts_with("did you mean `stdin`? the `run` tool takes: command, language")
        );
        assert!(msgs(json!({"command": ["a"], "cwd": "$s.dir"})).is_empty());
    }

    #[test]
    fn argv_flattens_resolved_lists() {
        let argv = argv_of(&json!(["cat", ["a.txt", "b.txt"], 3])).unwrap();
        assert_eq!(argv, vec!["cat", "a.txt", "b.txt", "3"]);
        assert!(argv_of(&json!([])).is_err());
        assert!(argv_of(&json!([{"a": 1}])).is_err());
    }
}
