//! pmpo's tools. A tool does one kind of work for a stage and reports what it
//! did; it never decides whether the stage succeeded (the engine does that by
//! checking exit status, declared outputs and validations).

pub mod a2ui;
pub mod ai;
pub mod capture;
mod inputs;
pub mod isolate;
pub mod markdown;
pub mod plugin;
pub mod preview;
pub mod process;
pub mod prompt;
pub mod rasterize;
pub mod run;
pub mod template;
mod typed;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pmpo_plan::{InputIssue, NamedOutputs, TemplateFile, TemplateReport, ToolCatalog};
use pmpo_store::Workspace;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

pub use capture::Captured;
pub use process::Termination;

/// Everything a tool may use while it runs.
pub struct ToolContext<'a> {
    pub workspace: &'a Workspace,
    pub run_id: &'a str,
    pub stage_id: &'a str,
    /// The tool name as the plan wrote it (`plugin:wordcount`).
    pub tool: &'a str,
    pub timeout: Duration,
    pub cancel: &'a CancellationToken,
    /// The plan's specification (AI prompts use it and its constraints).
    pub spec: Option<&'a pmpo_plan::Specification>,
    /// The plan's validation_plan (which checks read which files).
    pub validation: &'a [pmpo_plan::ValidationItem],
    /// The stage's description (an `ai` stage without a prompt is asked it).
    pub description: &'a str,
    /// How the stage's processes are confined (`run` and plugin stages).
    pub confine: Option<&'a Confinement>,
}

/// What the engine asks of a stage's processes: a sandbox to enter before
/// `exec`, and variables to set (`TMPDIR`, the stage's scratch directory).
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    pub pre_exec: Option<process::PreExec>,
    pub env: Vec<(String, String)>,
}

/// What a tool did.
#[derive(Debug, Clone)]
pub struct ToolOutcome {
    pub termination: Termination,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
    /// Named outputs (`$stage.NAME` for later stages).
    pub outputs: Map<String, Value>,
    /// What was invoked (argv, script path), for logs.
    pub invocation: Value,
    /// Anything the engine should tell the user.
    pub notes: Vec<String>,
    /// Set when the tool chose not to do optional work and says why (an
    /// optional preview with no browser): the stage is SKIPPED, not COMPLETED,
    /// and does not fail the run.
    pub skipped: Option<String>,
}

impl ToolOutcome {
    /// The outcome of a tool that did its work in-process and succeeded: exit
    /// status 0, `summary` as its stdout, nothing on stderr, timed from `started`.
    pub fn finished(
        started: std::time::Instant,
        summary: &str,
        outputs: Map<String, Value>,
        invocation: Value,
        notes: Vec<String>,
    ) -> Self {
        ToolOutcome {
            termination: Termination::Exited(0),
            stdout: Captured::from_bytes(summary.as_bytes()),
            stderr: Captured::default(),
            duration: started.elapsed(),
            outputs,
            invocation,
            notes,
            skipped: None,
        }
    }
}

/// Known kinds of failure, each with a recovery hint for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    InvalidInput,
    MissingDependency,
    PermissionDenied,
    NotConfigured,
    BadToolOutput,
    /// The tool ran and reported that it failed (a plugin's `success: false`).
    ToolFailed,
    Io,
    /// A service the tool needs (a model endpoint) is unreachable, overloaded or failing.
    ServiceUnavailable,
    /// A model answered, but the answer is unusable (cut off, refused, empty,
    /// off-schema after the repair request): not an outage of the endpoint.
    AnswerQuality,
    /// The stage's question waits for the agent host's answer (`via = "host"`):
    /// not a failure of the tool, a durable pause.
    AwaitingAnswer,
}

impl From<ErrorClass> for pmpo_store::states::FailureKind {
    fn from(class: ErrorClass) -> Self {
        use pmpo_store::states::FailureKind as K;
        match class {
            ErrorClass::InvalidInput => K::InvalidInput,
            ErrorClass::MissingDependency => K::MissingDependency,
            ErrorClass::PermissionDenied => K::PermissionDenied,
            ErrorClass::NotConfigured => K::NotConfigured,
            ErrorClass::BadToolOutput => K::BadToolOutput,
            ErrorClass::ToolFailed => K::ToolFailed,
            ErrorClass::Io => K::Io,
            ErrorClass::ServiceUnavailable => K::ServiceUnavailable,
            ErrorClass::AnswerQuality => K::AnswerQuality,
            ErrorClass::AwaitingAnswer => K::AwaitingAnswer,
        }
    }
}

/// A tool could not do its work.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    pub class: ErrorClass,
    pub message: String,
    pub hint: Option<String>,
}

impl ToolError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        ToolError {
            class,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// One kind of stage work.
#[async_trait]
pub trait Tool: Send + Sync {
    fn name(&self) -> &'static str;
    /// Other names plans may use (e.g. the seeds' `code_interpreter`).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// AI-only transformations are the tools of `requires_execution: false` stages.
    fn is_ai(&self) -> bool {
        false
    }
    /// Static check of a stage's `with:`; `$stage.field` strings are not yet resolved.
    fn check_inputs(&self, inputs: &Map<String, Value>) -> Vec<InputIssue>;
    /// The named outputs this tool gives for these inputs (`pmpo check`
    /// refuses a reference to a name the tool cannot give). Tools whose
    /// outputs are fixed list them in [`Registry`]'s catalog below.
    fn named_outputs(&self, _inputs: &Map<String, Value>) -> NamedOutputs {
        NamedOutputs::Open
    }
    /// Static check of the templates the tool renders (their variables).
    fn check_templates(
        &self,
        _inputs: &Map<String, Value>,
        _file: &mut dyn FnMut(&str) -> TemplateFile,
    ) -> TemplateReport {
        TemplateReport::default()
    }
    /// The workspace files (or directories, or globs) the tool itself writes
    /// for these inputs (a `template`'s `output:`, a preview's folder). They
    /// are declared outputs of the stage whether or not the plan repeats them
    /// under `outputs:`: backed up, ledgered and restorable like those.
    fn written_paths(&self, _inputs: &Map<String, Value>) -> Vec<String> {
        Vec::new()
    }
    /// Whether the tool can run at all here (called before the stage starts).
    fn preflight(&self) -> Result<(), ToolError> {
        Ok(())
    }
    /// Does the work with resolved inputs.
    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError>;
    /// The run is over: release what was kept for it (the preview tool's
    /// browser). Called once at the end of every run.
    async fn end_run(&self) {}
}

/// The string values of these inputs (the paths a tool writes).
pub(crate) fn path_inputs(inputs: &Map<String, Value>, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter_map(|k| inputs.get(*k).and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// The tools of this build, by name and alias.
#[derive(Clone)]
pub struct Registry {
    tools: Vec<Arc<dyn Tool>>,
    /// The model client, when one is configured (for `ai` stages and code corrections).
    client: Option<Arc<pmpo_ai::Client>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::builtin(ai::AiTool::default(), None)
    }
}

impl Registry {
    /// The built-in tools, with the given `ai` tool.
    fn builtin(ai: ai::AiTool, client: Option<Arc<pmpo_ai::Client>>) -> Self {
        Registry {
            client,
            tools: vec![
                Arc::new(run::RunTool),
                Arc::new(ai),
                isolate::wrap(Arc::new(template::TemplateTool)),
                isolate::wrap(Arc::new(rasterize::RasterizeTool)),
                isolate::wrap(Arc::new(markdown::MarkdownTool)),
                isolate::wrap(Arc::new(prompt::PromptTool)),
                isolate::wrap(Arc::new(a2ui::A2uiTool)),
                Arc::new(preview::PreviewTool::new()),
                Arc::new(plugin::PluginTool),
            ],
        }
    }

    /// The tools of this build with a model client for `ai` stages.
    pub fn with_ai(client: Arc<pmpo_ai::Client>) -> Self {
        Registry::builtin(ai::AiTool::new(client.clone()), Some(client))
    }

    /// This registry with one more tool (one of the embedding program's, or a
    /// test's fake): it answers to its name before any built-in.
    pub fn with_tool(mut self, tool: Arc<dyn Tool>) -> Self {
        self.tools.insert(0, tool);
        self
    }

    /// The model client of this registry, if any.
    pub fn model_client(&self) -> Option<Arc<pmpo_ai::Client>> {
        self.client.clone()
    }

    /// Tells every tool that the run is over (closes shared resources).
    pub async fn end_run(&self) {
        for tool in &self.tools {
            tool.end_run().await;
        }
    }

    /// The canonical name for a tool name or alias (the name itself when unknown).
    pub fn resolve_name<'a>(&self, name: &'a str) -> &'a str {
        match self.get(name) {
            Some(t) => t.name(),
            None => name,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        let name = match name.strip_prefix("plugin:") {
            Some(plugin) if plugin::valid_name(plugin) => "plugin",
            Some(_) => return None,
            None => name,
        };
        self.tools
            .iter()
            .find(|t| t.name() == name || t.aliases().contains(&name))
    }

    /// The adapter a stage's call goes to, and its kind: a plugin is its own
    /// adapter (`plugin:NAME`, kind `plugin`); an `ai` call goes to the model
    /// endpoint its route picks (`model:NAME`, kind `model`); other tools are
    /// adapters by name (kind `tool`).
    pub fn adapter_id(
        &self,
        name: &str,
        stage: &str,
        inputs: &Map<String, Value>,
    ) -> (String, &'static str) {
        if name.starts_with("plugin:") {
            return (name.to_string(), "plugin");
        }
        let canonical = self.resolve_name(name);
        if canonical == "ai"
            && let Some(client) = &self.client
        {
            let text = |k: &str| inputs.get(k).and_then(Value::as_str).map(str::to_string);
            let phase = text("phase")
                .and_then(|p| pmpo_ai::Phase::parse(&p))
                .unwrap_or(pmpo_ai::Phase::Execute);
            let asked = pmpo_ai::Route {
                endpoint: text("endpoint"),
                model: text("model"),
                fallback: text("fallback"),
                tier: None,
                via: None,
            };
            let route = client.config().route(phase, stage, &asked);
            if let Some(endpoint) = route.endpoint {
                return (format!("model:{endpoint}"), "model");
            }
        }
        (canonical.to_string(), "tool")
    }
}

impl ToolCatalog for Registry {
    fn resolve(&self, name: &str) -> Option<&'static str> {
        self.get(name).map(|t| t.name())
    }

    fn names(&self) -> Vec<&'static str> {
        self.tools.iter().map(|t| t.name()).collect()
    }

    fn is_ai(&self, canonical: &str) -> bool {
        self.get(canonical).is_some_and(|t| t.is_ai())
    }

    fn check_inputs(&self, canonical: &str, inputs: &Map<String, Value>) -> Vec<InputIssue> {
        self.get(canonical)
            .map(|t| t.check_inputs(inputs))
            .unwrap_or_default()
    }

    fn named_outputs(&self, canonical: &str, inputs: &Map<String, Value>) -> NamedOutputs {
        // The tools whose named outputs do not depend on their inputs: each
        // list is what the tool's `invoke` puts in `ToolOutcome::outputs`.
        let fixed: &[&'static str] = match canonical {
            "template" => template::OUTPUTS,
            "prompt" => prompt::OUTPUTS,
            "rasterize" => &["images", "sizes", "svg", "width", "height"],
            "markdown" => &["title", "headings", "html"],
            "a2ui" => &["components", "types", "bindings", "changed", "path"],
            "preview" => &[
                "preview_run",
                "status",
                "report",
                "screenshot",
                "html",
                "runtime_source",
            ],
            _ => {
                return self
                    .get(canonical)
                    .map_or(NamedOutputs::Open, |t| t.named_outputs(inputs));
            }
        };
        NamedOutputs::Fixed(fixed.to_vec())
    }

    fn check_templates(
        &self,
        canonical: &str,
        inputs: &Map<String, Value>,
        file: &mut dyn FnMut(&str) -> TemplateFile,
    ) -> TemplateReport {
        self.get(canonical)
            .map(|t| t.check_templates(inputs, file))
            .unwrap_or_default()
    }
}

/// Shared helper: an issue for an input key.
pub(crate) fn issue(key: &str, message: impl Into<String>, help: Option<&str>) -> InputIssue {
    InputIssue {
        key: if key.is_empty() {
            vec![]
        } else {
            vec![pmpo_plan::Seg::Key(key.to_string())]
        },
        message: message.into(),
        help: help.map(str::to_string),
    }
}

/// Shared helper: flags keys a tool does not know.
pub(crate) fn unknown_keys(
    inputs: &Map<String, Value>,
    known: &[&str],
    tool: &str,
) -> Vec<InputIssue> {
    inputs
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| {
            let help = match pmpo_plan::diag::did_you_mean(k, known.iter().copied()) {
                Some(s) => format!(
                    "did you mean `{s}`? the `{tool}` tool takes: {}",
                    known.join(", ")
                ),
                None => format!("the `{tool}` tool takes: {}", known.join(", ")),
            };
            issue(
                k,
                format!("unknown input `{k}` for tool `{tool}`"),
                Some(&help),
            )
        })
        .collect()
}
