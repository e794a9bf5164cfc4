//! Helpers of the `pmpo refine` tests: the binary with or without a scripted
//! model, the loop's state files, and Ctrl-C at a chosen phase.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::model_server::{ModelServer, Reply, openai};
use crate::{Run, Ws, bin_without_models};

/// A logo every default constraint of the logo adapter accepts.
pub const LOGO: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><circle cx="32" cy="32" r="28" fill="#38bdf8"/><path d="M16 44 L32 16 L48 44 Z" fill="#818cf8"/></svg>"##;

/// The arguments that refine `hero`, an image prompt for a calm hero banner
/// (a `meta:image-prompt` artifact: no browser, quick to run).
pub const HERO: &[&str] = &[
    "refine",
    "hero",
    "--type",
    "meta-prompt",
    "--content-type",
    "meta:image-prompt",
    "--intent",
    "an image prompt for a calm hero banner",
];

/// `pmpo` in the workspace, with no model settings from the shell and no
/// standard input (so no question is ever asked).
pub fn pmpo(ws: &Ws) -> Command {
    let mut c = bin_without_models(ws.path());
    c.stdin(Stdio::null());
    c
}

/// Runs the command with these arguments to its end.
pub fn run(mut c: Command, args: &[&str]) -> Run {
    c.args(args).output().unwrap().into()
}

/// Runs the command with these arguments to its end and checks its exit
/// code, failing with the arguments, both codes and everything it printed.
#[track_caller]
pub fn run_code(c: Command, code: i32, args: &[&str]) -> Run {
    let r = run(c, args);
    r.assert_exit(code, args);
    r
}

/// A Reflect answer that judges every constraint `prompt` asks about
/// satisfied, for `reason`.
pub fn judge_all(prompt: &str, reason: &str) -> Reply {
    let judgements: Vec<Value> = to_judge(prompt)
        .iter()
        .map(|id| serde_json::json!({"id": id, "status": "satisfied", "reason": reason}))
        .collect();
    reply_json(serde_json::json!({ "judgements": judgements }))
}

/// [`pmpo`] talking to `server` as its OpenAI endpoint, with this key and model.
pub fn with_model(ws: &Ws, server: &ModelServer, key: &str, model: &str) -> Command {
    let mut c = pmpo(ws);
    c.env("OPENAI_BASE_URL", server.openai_base())
        .env("OPENAI_API_KEY", key)
        .env("OPENAI_MODEL", model);
    c
}

/// Every state file of the loop (`.refiner/**/*.json`) is whole JSON: what
/// a kill at any moment must leave; `when` names the moment in a failure.
#[track_caller]
pub fn assert_state_whole(ws: &Ws, when: &str) {
    for f in ws.files() {
        if f.starts_with(".refiner/") && f.ends_with(".json") {
            let text = ws.read(&f);
            assert!(
                serde_json::from_str::<Value>(&text).is_ok(),
                "{when}: {f} is torn: {text}"
            );
        }
    }
}

/// The artifact's `state.json`.
pub fn state(ws: &Ws, name: &str) -> Value {
    ws.read_json(&format!(".refiner/artifacts/{name}/state.json"))
}

/// The phases the artifact's state records as done.
pub fn phases(ws: &Ws, name: &str) -> Vec<String> {
    state(ws, name)["phases_completed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

/// A model answer holding `v` in a JSON code block.
pub fn reply_json(v: Value) -> Reply {
    openai(&format!("```json\n{v}\n```"), "stop")
}

/// The constraint ids a Reflect prompt asks the model to judge.
pub fn to_judge(prompt: &str) -> Vec<String> {
    prompt
        .split("Judge only these constraints:\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .take_while(|l| l.starts_with("- "))
        .map(|l| l[2..].split(':').next().unwrap_or("").to_string())
        .collect()
}

/// How many requests of this phase (`"Plan"`, `"Reflect"`, ...) the server saw.
pub fn phase_requests(server: &ModelServer, phase: &str) -> usize {
    let prefix = format!("Phase: {phase}");
    server
        .chat_requests()
        .iter()
        .filter(|r| r.prompt().starts_with(&prefix))
        .count()
}

/// Sends SIGINT, as Ctrl-C in a terminal does.
pub fn interrupt(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -INT failed");
}

/// Waits until `cond` holds; fails the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `pmpo refine NAME --type logo --input brand/logo.svg -q` with
/// `cmd`, presses Ctrl-C once the server has seen the first request of
/// `phase` (within `limit`), and returns how the run ended.
pub fn ctrl_c_during(
    cmd: Command,
    server: &ModelServer,
    name: &str,
    phase: &str,
    limit: Duration,
) -> Run {
    let mut cmd = cmd;
    let child = cmd
        .args([
            "refine",
            name,
            "--type",
            "logo",
            "--input",
            "brand/logo.svg",
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(&format!("the {phase} request"), limit, || {
        phase_requests(server, phase) >= 1
    });
    interrupt(&child);
    child.wait_with_output().unwrap().into()
}
