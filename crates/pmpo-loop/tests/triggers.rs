//! Workflow triggers end to end: parsing, command and webhook actions, and
//! the workflow log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pmpo_loop::triggers::{
    ActionKind, DEFAULT_TIMEOUT, Dispatcher, Event, TriggerError, hook_payload, parse_triggers,
};
use pmpo_store::Workspace;
use serde_json::{Value, json};

const LOG: &str = ".refiner/artifacts/demo/workflow.log";

fn workspace() -> (tempfile::TempDir, Workspace) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ws = Workspace::open(dir.path()).expect("open workspace");
    (dir, ws)
}

fn dispatcher(ws: &Workspace, triggers: Value) -> Dispatcher {
    let triggers = parse_triggers(&triggers).expect("valid triggers");
    Dispatcher::new(ws.clone(), LOG.to_string(), triggers)
}

fn log_lines(ws: &Workspace) -> Vec<Value> {
    let path = ws.resolve(LOG).expect("log path");
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| serde_json::from_str(l).expect("log line is JSON"))
        .collect()
}

fn payload(phase: &str, content_type: &str) -> Value {
    hook_payload(
        "on_phase_complete",
        "demo",
        "r-1",
        "prompt",
        content_type,
        Some(phase),
        2,
        json!({"regressions": 1}),
    )
}

fn sh(script: &str, timeout_ms: u64) -> Value {
    json!({
        "type": "command",
        "target": "sh",
        "args": {"argv": ["-c", script]},
        "timeout_ms": timeout_ms
    })
}

#[test]
fn a_command_trigger_runs_with_the_payload_and_is_logged() {
    let (_dir, ws) = workspace();
    let script = "cat > got.json; \
                  echo \"$PMPO_EVENT|$PMPO_ARTIFACT|$PMPO_PHASE|$PMPO_ITERATION\" > env.txt; \
                  echo out; echo err >&2";
    let mut d = dispatcher(
        &ws,
        json!({"triggers": [{
            "event": "on_phase_complete",
            "condition": "phase == execute && content_type.startsWith(meta:)",
            "action": sh(script, 10_000)
        }]}),
    );
    let p = payload("execute", "meta:prompt");
    assert_eq!(d.dispatch(Event::PhaseComplete, &p), 1);
    assert_eq!(
        d.dispatch(Event::PhaseStart, &p),
        0,
        "other events do not fire"
    );
    assert_eq!(d.fired(), 1);
    assert_eq!(d.finish(Duration::from_secs(10)), 0);

    let got: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.root().join("got.json")).expect("stdin"))
            .expect("payload JSON");
    assert_eq!(got, p);
    let env = std::fs::read_to_string(ws.root().join("env.txt")).expect("env file");
    assert_eq!(env.trim(), "on_phase_complete|demo|execute|2");

    let lines = log_lines(&ws);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["status"], "ok");
    assert_eq!(line["event"], "on_phase_complete");
    assert_eq!(line["trigger"], 0);
    assert_eq!(line["action"], "command");
    assert_eq!(line["target"], "sh");
    assert_eq!(line["exit_code"], 0);
    assert_eq!(line["stdout"], "out\n");
    assert_eq!(line["stderr"], "err\n");
    assert!(line["duration_ms"].is_u64());
    assert!(line["time"].is_string());
}

#[test]
fn a_trigger_whose_condition_is_false_does_not_run_and_is_logged_as_skipped() {
    let (_dir, ws) = workspace();
    let mut d = dispatcher(
        &ws,
        json!([{
            "event": "on_phase_complete",
            "condition": "phase == execute",
            "action": sh("touch ran", 5_000)
        }]),
    );
    assert_eq!(d.dispatch(Event::PhaseComplete, &payload("plan", "x")), 0);
    assert_eq!(d.finish(Duration::from_secs(5)), 0);
    assert!(!ws.root().join("ran").exists());
    let lines = log_lines(&ws);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["status"], "skipped");
    assert_eq!(
        lines[0]["message"],
        "skipped: condition `phase == execute` is false"
    );
}

#[test]
fn a_failing_or_missing_command_is_logged_as_failed() {
    let (_dir, ws) = workspace();
    let mut d = dispatcher(
        &ws,
        json!([
            {"event": "on_regression", "action": sh("echo bad >&2; exit 3", 5_000)},
            {"event": "on_regression",
             "action": {"type": "command", "target": "./no/such/program"}}
        ]),
    );
    assert_eq!(d.dispatch(Event::Regression, &payload("execute", "x")), 2);
    assert_eq!(d.finish(Duration::from_secs(10)), 0);
    let mut lines = log_lines(&ws);
    lines.sort_by_key(|l| l["trigger"].as_u64());
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["status"], "failed");
    assert_eq!(lines[0]["exit_code"], 3);
    assert_eq!(lines[0]["stderr"], "bad\n");
    assert_eq!(lines[1]["status"], "failed");
    assert!(
        lines[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot start")),
        "{:?}",
        lines[1]
    );
}

fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting to be reaped by init has stopped running too.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_command_past_its_timeout_is_killed_with_its_process_group() {
    let (_dir, ws) = workspace();
    let mut d = dispatcher(
        &ws,
        json!([{
            "event": "on_iteration_complete",
            "action": sh("sleep 30 & echo $! > bg.pid; echo started; wait", 300)
        }]),
    );
    let started = Instant::now();
    assert_eq!(
        d.dispatch(Event::IterationComplete, &payload("execute", "x")),
        1
    );
    assert_eq!(d.finish(Duration::from_secs(20)), 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let lines = log_lines(&ws);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["status"], "timeout");
    // Stopped gently first: SIGTERM ends a shell waiting on a child.
    assert_eq!(lines[0]["signal"], 15);
    assert_eq!(lines[0]["stdout"], "started\n");
    let bg = std::fs::read_to_string(ws.root().join("bg.pid")).expect("bg pid");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !process_gone(bg.trim()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(process_gone(bg.trim()), "background sleep survived");
}

#[test]
fn dispatch_returns_before_a_slow_command_finishes() {
    let (_dir, ws) = workspace();
    let mut d = dispatcher(
        &ws,
        json!([{
            "event": "on_refinement_complete",
            "action": sh("sleep 1; touch done", 10_000)
        }]),
    );
    let started = Instant::now();
    assert_eq!(
        d.dispatch(Event::RefinementComplete, &payload("persist", "x")),
        1
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(!ws.root().join("done").exists());
    assert_eq!(d.finish(Duration::from_secs(10)), 0);
    assert!(ws.root().join("done").exists());
    assert_eq!(log_lines(&ws)[0]["status"], "ok");
}

#[test]
fn finish_kills_commands_still_running_when_it_stops_waiting() {
    let (_dir, ws) = workspace();
    let mut d = dispatcher(
        &ws,
        json!([{"event": "on_phase_start", "action": sh("sleep 30", 60_000)}]),
    );
    d.dispatch(Event::PhaseStart, &payload("plan", "x"));
    let started = Instant::now();
    assert_eq!(d.finish(Duration::from_millis(200)), 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    let lines = log_lines(&ws);
    assert_eq!(lines[0]["status"], "timeout");
}

struct Request {
    head: String,
    body: Vec<u8>,
}

/// A one-request HTTP server answering with `status_line`.
fn serve_once(status_line: &'static str) -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; len];
        let _ = reader.read_exact(&mut body);
        let reply = format!("{status_line}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
        let _ = reader.get_mut().write_all(reply.as_bytes());
        let _ = tx.send(Request { head, body });
    });
    (url, rx)
}

#[test]
fn a_webhook_posts_the_payload_as_json() {
    let (_dir, ws) = workspace();
    let (url, rx) = serve_once("HTTP/1.1 200 OK");
    let mut d = dispatcher(
        &ws,
        json!([{
            "event": "on_approval_required",
            "action": {"type": "webhook", "target": url,
                       "args": {"headers": {"X-Token": "Bearer ${env:PATH}", "X-Plain": "abc"}},
                       "timeout_ms": 5000}
        }]),
    );
    let p = payload("reflect", "x");
    assert_eq!(d.dispatch(Event::ApprovalRequired, &p), 1);
    assert_eq!(d.finish(Duration::from_secs(10)), 0);
    let req = rx.recv_timeout(Duration::from_secs(5)).expect("request");
    assert!(req.head.starts_with("POST /hook HTTP/1.1"), "{}", req.head);
    let head = req.head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    // The secret header takes its value from the environment when sent.
    let path = std::env::var("PATH").unwrap().to_ascii_lowercase();
    assert!(head.contains(&format!("x-token: bearer {path}")), "{head}");
    assert!(head.contains("x-plain: abc"), "{head}");
    let body: Value = serde_json::from_slice(&req.body).expect("JSON body");
    assert_eq!(body, p);
    let lines = log_lines(&ws);
    assert_eq!(lines[0]["status"], "ok");
    assert_eq!(lines[0]["http_status"], 200);
    assert_eq!(lines[0]["action"], "webhook");
}

#[test]
fn a_webhook_answering_500_is_logged_as_failed() {
    let (_dir, ws) = workspace();
    let (url, _rx) = serve_once("HTTP/1.1 500 Internal Server Error");
    let mut d = dispatcher(
        &ws,
        json!([{"event": "on_regression", "action": {"type": "webhook", "target": url}}]),
    );
    d.dispatch(Event::Regression, &payload("execute", "x"));
    assert_eq!(d.finish(Duration::from_secs(10)), 0);
    let lines = log_lines(&ws);
    assert_eq!(lines[0]["status"], "failed");
    assert_eq!(lines[0]["http_status"], 500);
    assert_eq!(lines[0]["response"], "hi");
}

#[test]
fn a_webhook_whose_connection_is_refused_is_logged_as_failed() {
    let (_dir, ws) = workspace();
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let mut d = dispatcher(
        &ws,
        json!([{"event": "on_regression", "action": {
            "type": "webhook", "target": format!("http://127.0.0.1:{port}/"), "timeout_ms": 3000
        }}]),
    );
    d.dispatch(Event::Regression, &payload("execute", "x"));
    assert_eq!(d.finish(Duration::from_secs(10)), 0);
    let lines = log_lines(&ws);
    assert_eq!(lines[0]["status"], "failed");
    assert!(lines[0]["error"].is_string());
    assert!(lines[0].get("http_status").is_none());
}

#[test]
fn hook_payload_follows_the_hook_event_format() {
    let p = hook_payload(
        "on_regression",
        "demo",
        "r-9",
        "prompt",
        "meta:prompt",
        None,
        4,
        Value::Null,
    );
    assert_eq!(p["event_type"], "regression_detected");
    assert_eq!(p["artifact_name"], "demo");
    assert_eq!(p["refinement_id"], "r-9");
    assert_eq!(p["artifact_type"], "prompt");
    assert_eq!(p["content_type"], "meta:prompt");
    assert_eq!(p["phase"], Value::Null);
    assert_eq!(p["iteration"], 4);
    assert_eq!(p["metadata"], json!({}));
    let ts = p["timestamp"].as_str().expect("timestamp");
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    let p = hook_payload(
        "on_phase_start",
        "a",
        "",
        "",
        "",
        Some("plan"),
        0,
        json!({}),
    );
    assert_eq!(p["event_type"], "phase_start");
    let p = hook_payload("checkpoint_created", "a", "", "", "", None, 0, json!({}));
    assert_eq!(p["event_type"], "checkpoint_created");
}

#[test]
fn both_layouts_parse_with_defaults() {
    let one = json!({
        "event": "on_phase_start",
        "action": {"type": "webhook", "target": "https://example.invalid/x"}
    });
    let a = parse_triggers(&json!({"triggers": [one.clone()]})).expect("reference layout");
    let b = parse_triggers(&json!([one])).expect("bare array");
    assert_eq!(a, b);
    assert_eq!(a[0].event, Event::PhaseStart);
    assert_eq!(a[0].action.kind, ActionKind::Webhook);
    assert_eq!(a[0].action.timeout, DEFAULT_TIMEOUT);
    assert!(a[0].condition.is_none());
    assert!(
        parse_triggers(&json!({"triggers": []}))
            .expect("empty")
            .is_empty()
    );
}

fn parse_error(trigger: Value) -> (usize, String, String) {
    match parse_triggers(&json!([{"event": "on_phase_start", "action": sh("true", 100)}, trigger]))
    {
        Ok(t) => panic!("accepted: {t:?}"),
        Err(TriggerError::Field {
            index,
            field,
            message,
        }) => (index, field, message),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn bad_triggers_are_refused_with_the_index_the_field_and_what_to_do() {
    let cmd = json!({"type": "command", "target": "true"});

    let (i, f, m) = parse_error(json!({"event": "on_start", "action": cmd}));
    assert_eq!((i, f.as_str()), (1, "event"));
    assert!(m.contains("unknown event `on_start`"), "{m}");
    assert!(
        m.contains("on_approval_required"),
        "lists the known events: {m}"
    );

    for t in ["mcp_tool", "workflow_file"] {
        let (_, f, m) =
            parse_error(json!({"event": "on_phase_start", "action": {"type": t, "target": "x"}}));
        assert_eq!(f, "action.type");
        assert!(m.contains("not support"), "{m}");
    }
    let (_, f, m) =
        parse_error(json!({"event": "on_phase_start", "action": {"type": "email", "target": "x"}}));
    assert_eq!(f, "action.type");
    assert!(m.contains("unknown action type `email`"), "{m}");

    let (_, f, m) = parse_error(
        json!({"event": "on_phase_start", "action": {"type": "command", "target": "  "}}),
    );
    assert_eq!(f, "action.target");
    assert!(m.contains("empty"), "{m}");

    let (_, f, m) =
        parse_error(json!({"event": "on_phase_start", "condition": "phase == ", "action": cmd}));
    assert_eq!(f, "condition");
    assert!(m.contains("column 10: expected a value"), "{m}");

    let mut zero = cmd.clone();
    zero["timeout_ms"] = json!(0);
    let (_, f, m) = parse_error(json!({"event": "on_phase_start", "action": zero}));
    assert_eq!(f, "action.timeout_ms");
    assert!(m.contains("is 0"), "{m}");
    let mut long = cmd.clone();
    long["timeout_ms"] = json!(600_001);
    let (_, f, m) = parse_error(json!({"event": "on_phase_start", "action": long}));
    assert_eq!(f, "action.timeout_ms");
    assert!(m.contains("10 minutes"), "{m}");

    for url in [
        "ftp://example.invalid/x",
        "example.invalid/hook",
        "file:///etc/passwd",
    ] {
        let (_, f, m) = parse_error(
            json!({"event": "on_phase_start", "action": {"type": "webhook", "target": url}}),
        );
        assert_eq!(f, "action.target");
        assert!(m.contains("http:// or https://"), "{m}");
    }

    let (_, f, m) = parse_error(json!({"event": "on_phase_start", "action": cmd, "when": "x"}));
    assert_eq!(f, "when");
    assert!(m.contains("unknown key"), "{m}");
    let mut extra = cmd.clone();
    extra["retries"] = json!(3);
    let (_, f, _) = parse_error(json!({"event": "on_phase_start", "action": extra}));
    assert_eq!(f, "action.retries");
    let (_, f, _) = parse_error(json!({"event": "on_phase_start", "action": {
        "type": "command", "target": "true", "args": {"env": {}}}}));
    assert_eq!(f, "action.args.env");
    let (_, f, _) = parse_error(json!({"event": "on_phase_start", "action": {
        "type": "command", "target": "true", "args": {"argv": ["a", 1]}}}));
    assert_eq!(f, "action.args.argv");
    let (_, f, _) = parse_error(json!({"event": "on_phase_start", "action": {
        "type": "webhook", "target": "http://localhost/", "args": {"headers": {"X": 1}}}}));
    assert_eq!(f, "action.args.headers");

    let (_, f, _) = parse_error(json!({"action": cmd}));
    assert_eq!(f, "event");
    let (_, f, _) = parse_error(json!({"event": "on_phase_start"}));
    assert_eq!(f, "action");

    let err = parse_triggers(&json!({"trigger": []})).expect_err("wrong layout");
    assert!(err.to_string().contains("unknown key `trigger`"), "{err}");
    assert!(parse_triggers(&json!("x")).is_err());

    let shown = parse_triggers(&json!([{"event": "nope", "action": cmd}]))
        .expect_err("bad")
        .to_string();
    assert!(
        shown.starts_with("workflow trigger #0, `event`: unknown event `nope`"),
        "{shown}"
    );
}

#[test]
fn a_webhook_that_trickles_its_answer_is_cut_off_at_its_deadline_and_logged() {
    let (_dir, ws) = workspace();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
        }
        // 200 at once, then one byte of a long body every 300 ms: each read
        // succeeds well inside any per-read timeout.
        let w = reader.get_mut();
        let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
        for _ in 0..100 {
            if w.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let mut d = dispatcher(
        &ws,
        json!([{"event": "on_regression",
                "action": {"type": "webhook", "target": url, "timeout_ms": 1000}}]),
    );
    let t = std::time::Instant::now();
    d.dispatch(Event::Regression, &payload("execute", "x"));
    assert_eq!(d.finish(Duration::from_secs(20)), 0);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the webhook ran {:?} past its 1 s deadline",
        t.elapsed()
    );
    let lines = log_lines(&ws);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], "timeout", "{}", lines[0]);
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within its timeout of 1000 ms"),
        "{}",
        lines[0]
    );
}

#[test]
fn a_literal_secret_in_a_header_is_refused_and_a_missing_variable_fails_the_call() {
    // Written into a trigger, a token would be kept in state.json, checkpoints
    // and archives: refused up front, with the fix.
    for header in ["Authorization", "X-Api-Key", "x-hook-token"] {
        let (index, field, message) = parse_error(json!({
            "event": "on_regression",
            "action": {"type": "webhook", "target": "http://127.0.0.1:9/h",
                       "args": {"headers": {header: "s3cr3t-literal"}}}
        }));
        assert_eq!((index, field.as_str()), (1, "action.args.headers"));
        assert!(
            message.contains(&format!("`{header}` holds a literal value"))
                && message.contains("${env:NAME}"),
            "{message}"
        );
    }
    let (_, _, message) = parse_error(json!({
        "event": "on_regression",
        "action": {"type": "webhook", "target": "http://127.0.0.1:9/h",
                   "args": {"headers": {"Authorization": "Bearer ${env:HOOK"}}}
    }));
    assert!(message.contains("unclosed `${env:` reference"), "{message}");
    // A variable that is not set when the webhook is sent: a failed call,
    // logged, and no request made.
    let (_dir, ws) = workspace();
    let (url, rx) = serve_once("HTTP/1.1 200 OK");
    let mut d = dispatcher(
        &ws,
        json!([{"event": "on_regression",
                "action": {"type": "webhook", "target": url,
                           "args": {"headers": {"Authorization": "Bearer ${env:PMPO_TEST_SURELY_UNSET_VAR}"}}}}]),
    );
    d.dispatch(Event::Regression, &payload("execute", "x"));
    assert_eq!(d.finish(Duration::from_secs(10)), 0);
    let lines = log_lines(&ws);
    assert_eq!(lines[0]["status"], "failed");
    assert!(
        lines[0]["error"].as_str().unwrap().contains(
            "needs the environment variable `PMPO_TEST_SURELY_UNSET_VAR`, which is not set"
        ),
        "{}",
        lines[0]
    );
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
}
