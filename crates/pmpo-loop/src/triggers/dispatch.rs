//! Running triggers: the dispatcher starts matching actions on threads of
//! their own and logs every outcome to the workflow log.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pmpo_store::Workspace;
use serde_json::{Map, Value, json};

use super::parse::{command_argv, webhook_headers};
use super::{Action, ActionKind, Event, OUTPUT_CAP, Trigger};

/// State shared by the dispatcher and its action threads.
struct Shared {
    workspace: Workspace,
    log_rel: String,
    log_lock: Mutex<()>,
    /// Set when [`Dispatcher::finish`] stops waiting: running commands are killed.
    stop: AtomicBool,
}

impl Shared {
    fn log(&self, mut line: Map<String, Value>) {
        line.insert("time".to_string(), json!(pmpo_store::now_rfc3339()));
        // `time` first reads better in the log.
        let mut ordered = Map::new();
        if let Some(t) = line.remove("time") {
            ordered.insert("time".to_string(), t);
        }
        ordered.extend(line);
        let text = Value::Object(ordered).to_string();
        let mut bytes = pmpo_store::secrets::redact(&text).into_owned().into_bytes();
        bytes.push(b'\n');
        // A poisoned lock only means another action thread panicked while
        // appending; the file is still usable.
        let _guard = self
            .log_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = self.workspace.append(&self.log_rel, &bytes) {
            // A closed stderr must not take the dispatcher down with it.
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("pmpo: cannot write the workflow log: {e}\n"),
            );
        }
    }
}

/// Starts the actions of triggers at lifecycle events without blocking the
/// caller, and logs their outcomes to the workflow log.
pub struct Dispatcher {
    shared: Arc<Shared>,
    triggers: Vec<Trigger>,
    running: Vec<JoinHandle<()>>,
    fired: usize,
}

impl Dispatcher {
    /// A dispatcher for `triggers` that logs to the workspace-relative
    /// `log_rel` (e.g. `.refiner/artifacts/NAME/workflow.log`).
    pub fn new(workspace: Workspace, log_rel: String, triggers: Vec<Trigger>) -> Self {
        Dispatcher {
            shared: Arc::new(Shared {
                workspace,
                log_rel,
                log_lock: Mutex::new(()),
                stop: AtomicBool::new(false),
            }),
            triggers,
            running: Vec::new(),
            fired: 0,
        }
    }

    /// The triggers this dispatcher serves.
    pub fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }

    /// Starts, in the background, the action of every trigger of `event`
    /// whose condition holds over `payload` (a hook-event object; its
    /// `metadata` fields are reachable as `metadata.x`). Triggers whose
    /// condition is false are logged as skipped. Returns at once with the
    /// number of actions started.
    pub fn dispatch(&mut self, event: Event, payload: &Value) -> usize {
        self.running.retain(|h| !h.is_finished());
        let mut started = 0;
        for (index, trigger) in self.triggers.iter().enumerate() {
            if trigger.event != event {
                continue;
            }
            if let Some((src, cond)) = &trigger.condition
                && !cond.eval(payload)
            {
                let mut line = outcome_base(event, index, &trigger.action);
                line.insert("status".to_string(), json!(ActionStatus::Skipped));
                line.insert(
                    "message".to_string(),
                    json!(format!("skipped: condition `{src}` is false")),
                );
                self.shared.log(line);
                continue;
            }
            let shared = Arc::clone(&self.shared);
            let action = trigger.action.clone();
            let payload = payload.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pmpo-trigger-{index}"))
                .spawn(move || {
                    let line = run_action(&shared, event, index, &action, &payload);
                    shared.log(line);
                });
            match spawned {
                Ok(handle) => {
                    self.running.push(handle);
                    started += 1;
                }
                Err(e) => {
                    let mut line = outcome_base(event, index, &trigger.action);
                    line.insert("status".to_string(), json!(ActionStatus::Failed));
                    line.insert(
                        "error".to_string(),
                        json!(format!("cannot start a thread for the action: {e}")),
                    );
                    self.shared.log(line);
                }
            }
        }
        self.fired += started;
        started
    }

    /// How many actions have been started so far.
    pub fn fired(&self) -> usize {
        self.fired
    }

    /// Waits up to `max_wait` for the started actions to end. Commands still
    /// running then are killed (and logged as `timeout`); webhooks end by
    /// their own deadline. Returns how many actions had not ended when it
    /// returned.
    pub fn finish(self, max_wait: Duration) -> usize {
        let deadline = Instant::now() + max_wait;
        let all_done = |running: &[JoinHandle<()>]| running.iter().all(|h| h.is_finished());
        while !all_done(&self.running) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !all_done(&self.running) {
            self.shared.stop.store(true, Ordering::SeqCst);
            // Give killed commands a moment to be reaped and logged.
            let grace = Instant::now() + Duration::from_secs(2);
            while !all_done(&self.running) && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut left = 0;
        for handle in self.running {
            if handle.is_finished() {
                // The thread body does not panic; if it did, there is
                // nothing more to report than its (missing) log line.
                let _ = handle.join();
            } else {
                left += 1;
            }
        }
        left
    }
}

fn outcome_base(event: Event, index: usize, action: &Action) -> Map<String, Value> {
    let mut line = Map::new();
    line.insert("event".to_string(), json!(event.as_str()));
    line.insert("trigger".to_string(), json!(index));
    line.insert("action".to_string(), json!(action.kind.as_str()));
    line.insert("target".to_string(), json!(action.target));
    line
}

fn run_action(
    shared: &Shared,
    event: Event,
    index: usize,
    action: &Action,
    payload: &Value,
) -> Map<String, Value> {
    let started = Instant::now();
    let mut line = outcome_base(event, index, action);
    let outcome = match action.kind {
        ActionKind::Command => run_command(shared, event, action, payload),
        ActionKind::Webhook => run_webhook(action, payload),
    };
    line.insert("status".to_string(), json!(outcome.status));
    line.extend(outcome.fields);
    line.insert(
        "duration_ms".to_string(),
        json!(started.elapsed().as_millis() as u64),
    );
    line
}

/// How an action ended, as the workflow log spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum ActionStatus {
    Ok,
    Failed,
    Timeout,
    /// Its condition was false.
    Skipped,
}

struct Outcome {
    status: ActionStatus,
    fields: Map<String, Value>,
}

impl Outcome {
    fn failed(error: String) -> Self {
        let mut fields = Map::new();
        fields.insert("error".to_string(), json!(error));
        Outcome {
            status: ActionStatus::Failed,
            fields,
        }
    }
}

fn run_command(shared: &Shared, event: Event, action: &Action, payload: &Value) -> Outcome {
    use pmpo_process::Termination;

    let argv = match command_argv(&action.args) {
        Ok(argv) => argv,
        Err(e) => return Outcome::failed(format!("args.argv {e}")),
    };
    let root = shared.workspace.root();
    // A relative path with a directory part is relative to the workspace;
    // a bare name is looked up on PATH.
    let program = if action.target.contains('/') {
        root.join(&action.target).to_string_lossy().into_owned()
    } else {
        action.target.clone()
    };
    let text = |key: &str| match payload.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let mut body = payload.to_string().into_bytes();
    body.push(b'\n');
    // Through pmpo's one process runner: its own process group, stopped
    // (SIGTERM, then SIGKILL after a short grace) at the timeout or when the
    // run stops waiting; the payload on stdin (a child that never reads it
    // does not block us); the first OUTPUT_CAP bytes of each stream kept.
    let spec = pmpo_process::ProcessSpec {
        cwd: Some(root.to_path_buf()),
        env: vec![
            ("PMPO_EVENT".to_string(), event.as_str().to_string()),
            ("PMPO_ARTIFACT".to_string(), text("artifact_name")),
            ("PMPO_PHASE".to_string(), text("phase")),
            ("PMPO_ITERATION".to_string(), text("iteration")),
        ],
        // Secrets stay with pmpo: a trigger's command gets no key either.
        env_remove: pmpo_store::secrets::hidden_variables(),
        stdin: Some(body),
        capture_limit: OUTPUT_CAP,
        capture_tail: 0,
        timeout: Some(action.timeout),
        pipes_grace: Duration::from_secs(1),
        ..pmpo_process::ProcessSpec::new(std::iter::once(program).chain(argv))
    };
    let r = match pmpo_process::run_blocking(&spec, Some(&shared.stop)) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::failed(format!("cannot start `{}`: {e}", action.target));
        }
    };

    let mut fields = Map::new();
    let code = match r.exit {
        Some(Termination::Exited(c)) => Some(c),
        _ => None,
    };
    fields.insert("exit_code".to_string(), json!(code));
    if let Some(Termination::Signaled(signal)) = r.exit {
        fields.insert("signal".to_string(), json!(signal));
    }
    let result = match r.termination {
        Termination::TimedOut | Termination::Cancelled => {
            let why = if r.termination == Termination::Cancelled {
                "killed: the run ended and stopped waiting for it".to_string()
            } else {
                format!(
                    "killed after its timeout of {} ms",
                    action.timeout.as_millis()
                )
            };
            fields.insert("error".to_string(), json!(why));
            ActionStatus::Timeout
        }
        Termination::Exited(0) => ActionStatus::Ok,
        Termination::Exited(c) => {
            fields.insert(
                "error".to_string(),
                json!(format!("`{}` exited with exit status: {c}", action.target)),
            );
            ActionStatus::Failed
        }
        Termination::Signaled(sig) => {
            fields.insert(
                "error".to_string(),
                json!(format!("`{}` exited with signal: {sig}", action.target)),
            );
            ActionStatus::Failed
        }
    };
    fields.insert(
        "stdout".to_string(),
        json!(String::from_utf8_lossy(&r.stdout.head)),
    );
    fields.insert(
        "stderr".to_string(),
        json!(String::from_utf8_lossy(&r.stderr.head)),
    );
    if r.stdout.truncated() {
        fields.insert("stdout_truncated".to_string(), json!(true));
    }
    if r.stderr.truncated() {
        fields.insert("stderr_truncated".to_string(), json!(true));
    }
    if let Some(note) = r.note {
        fields.insert("note".to_string(), json!(note));
    }
    Outcome {
        status: result,
        fields,
    }
}

/// A webhook's timeout is a deadline for the whole exchange: connecting,
/// sending, and reading the answer to its end. The exchange runs on a thread
/// of its own; past the deadline it is abandoned (its reads stop at the
/// deadline too, so the connection is closed soon after) and the outcome is
/// `timeout`.
fn run_webhook(action: &Action, payload: &Value) -> Outcome {
    let deadline = Instant::now() + action.timeout;
    let (tx, rx) = std::sync::mpsc::channel();
    let (act, body) = (action.clone(), payload.clone());
    let spawned = std::thread::Builder::new()
        .name("pmpo-webhook".into())
        .spawn(move || {
            let _ = tx.send(webhook_exchange(&act, &body, deadline));
        });
    if let Err(e) = spawned {
        return Outcome::failed(format!("cannot start the webhook call: {e}"));
    }
    match rx.recv_timeout(action.timeout) {
        Ok(outcome) => outcome,
        Err(_) => webhook_timed_out(action, Map::new()),
    }
}

fn webhook_timed_out(action: &Action, mut fields: Map<String, Value>) -> Outcome {
    fields.insert(
        "error".to_string(),
        json!(format!(
            "the webhook did not finish within its timeout of {} ms",
            action.timeout.as_millis()
        )),
    );
    Outcome {
        status: ActionStatus::Timeout,
        fields,
    }
}

fn webhook_exchange(action: &Action, payload: &Value, deadline: Instant) -> Outcome {
    let env = |name: &str| std::env::var(name).ok();
    let headers = match webhook_headers(&action.args, Some(&env)) {
        Ok(h) => h,
        Err(e) => return Outcome::failed(format!("args.headers {e}")),
    };
    let client = match reqwest::blocking::Client::builder()
        .timeout(action.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pmpo/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Outcome::failed(format!("cannot create an HTTP client: {e}")),
    };
    let response = client
        .post(&action.target)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .headers(headers)
        .body(payload.to_string())
        .send();
    let mut fields = Map::new();
    match response {
        Err(e) => {
            fields.insert("error".to_string(), json!(error_chain(&e)));
            Outcome {
                status: if e.is_timeout() {
                    ActionStatus::Timeout
                } else {
                    ActionStatus::Failed
                },
                fields,
            }
        }
        Ok(response) => {
            let status = response.status();
            fields.insert("http_status".to_string(), json!(status.as_u16()));
            // Read in pieces, so a server that trickles its answer is cut off
            // at the deadline rather than waited for byte by byte.
            let mut body = Vec::new();
            let mut reader = response.take(OUTPUT_CAP as u64 + 1);
            let mut piece = [0u8; 8192];
            let read = loop {
                if Instant::now() >= deadline {
                    return webhook_timed_out(action, fields);
                }
                match reader.read(&mut piece) {
                    Ok(0) => break Ok(()),
                    Ok(n) => body.extend_from_slice(&piece[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let truncated = body.len() > OUTPUT_CAP;
            body.truncate(OUTPUT_CAP);
            fields.insert(
                "response".to_string(),
                json!(String::from_utf8_lossy(&body)),
            );
            if truncated {
                fields.insert("response_truncated".to_string(), json!(true));
            }
            if status.is_success() {
                Outcome {
                    status: ActionStatus::Ok,
                    fields,
                }
            } else {
                let mut error = format!("the server answered {status}");
                if let Err(e) = read {
                    error.push_str(&format!(" (reading its body failed: {e})"));
                }
                fields.insert("error".to_string(), json!(error));
                Outcome {
                    status: ActionStatus::Failed,
                    fields,
                }
            }
        }
    }
}

/// An error with its causes, so "connection refused" is visible.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
