//! The agent host as the model from a shell (`--via host` and `pmpo answer`):
//! a scripted host that reads each pending question and answers it drives a
//! whole refinement; a recorded host-driven refinement replays offline; an
//! invalid answer gets one repair question with its problems; and the errors
//! of `pmpo answer` (nothing pending, an empty answer, a bad name).

use pmpo_testkit::refine::*;
use pmpo_testkit::*;
use serde_json::{Value, json};

const PENDING: &str = ".refiner/artifacts/hero/pending.json";
const CLEAN: &str = "Create a calm hero banner: a lighthouse at dawn over a quiet sea, soft pastel light, wide 16:9 framing.";

/// What a host answers to a question, by its phase: an extra constraint,
/// a prompt stage, and every unmeasured constraint judged satisfied.
fn host_answer(q: &Value) -> Value {
    let prompt = q["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    match q["phase"].as_str().unwrap() {
        "specify" => json!({
            "goals": ["a banner that reads at a glance"],
            "constraints": [{"id": "mood", "description": "The prompt sets a calm mood",
                             "severity": "medium", "type": "semantic"}],
        }),
        "plan" => json!({"stages": [{
            "id": "compose", "tool": "prompt", "description": "Write the prompt",
            "with": {"intent": CLEAN, "title": "Hero banner", "output": "dist/prompt.md",
                     "meta": "dist/prompt.meta.json", "target_platform": "dall-e-3",
                     "content_type": "meta:image-prompt"},
            "outputs": ["dist/prompt.md", "dist/prompt.meta.json"],
        }]}),
        "reflect" => {
            let judgements: Vec<Value> = to_judge(&prompt)
                .iter()
                .map(|id| json!({"id": id, "status": "satisfied", "reason": "reads well"}))
                .collect();
            json!({ "judgements": judgements })
        }
        other => panic!("unexpected phase {other}"),
    }
}

fn start(ws: &Ws, extra: &[&str]) -> Run {
    let mut args = HERO.to_vec();
    args.extend_from_slice(&["--via", "host"]);
    args.extend_from_slice(extra);
    run_code(pmpo(ws), 3, &args)
}

/// Answers pending questions until the refinement ends; returns the last
/// report and the phases asked, in order.
fn answer_until_done(ws: &Ws) -> (Value, Vec<String>) {
    let mut asked = Vec::new();
    for _ in 0..20 {
        let pending: Value = ws.read_json(PENDING);
        let q = &pending["question"];
        asked.push(q["phase"].as_str().unwrap().to_string());
        // What the host is told: the schema, and what is not its to judge.
        assert!(q["schema"].is_object(), "{pending}");
        assert_eq!(
            pending["answer_with"],
            "pmpo answer hero --file ANSWER.json"
        );
        ws.write("answer.json", &host_answer(q).to_string());
        let r = run(
            pmpo(ws),
            &["answer", "hero", "--file", "answer.json", "--json"],
        );
        let report = r.json();
        match report["outcome"].as_str().unwrap() {
            "awaiting_answer" => {
                assert_eq!(r.code, 3, "{}", r.stderr);
                assert_eq!(report["pending"], ws.read_json(PENDING));
            }
            _ => return (report, asked),
        }
    }
    panic!("the refinement did not end after 20 answers: {asked:?}");
}

#[test]
fn a_host_answering_pending_questions_drives_a_refinement_to_convergence() {
    let ws = Ws::new();
    let r = start(&ws, &[]);
    assert!(
        r.stderr.contains("waiting for the host's answer")
            && r.stderr.contains("asking the host for a specification"),
        "{}",
        r.stderr
    );
    let first: Value = ws.read_json(PENDING);
    assert_eq!(first["question"]["phase"], "specify");
    // `pmpo status` says what the artifact waits for, and how to answer.
    let s = run_code(pmpo(&ws), 0, &["status", "hero"]);
    assert!(
        s.stdout
            .contains("waiting     the host's answer to the specify question of iteration 1")
            && s.stdout.contains("pmpo answer hero --file ANSWER.json"),
        "{}",
        s.stdout
    );
    // The question is kept under its id too, where `pmpo answer` finds it.
    let id = first["question"]["id"].as_str().unwrap();
    assert!(ws.p(&format!(".state/host/questions/{id}.json")).is_file());
    let (report, asked) = answer_until_done(&ws);
    assert_eq!(report["outcome"], "converged", "{report}");
    assert_eq!(asked, ["specify", "plan", "reflect"]);
    assert!(
        !ws.p(PENDING).exists(),
        "the answered question is not left pending"
    );
    // The host's constraint was added and judged; the measured ones were measured.
    let reflection: Value = ws.read_json(".refiner/artifacts/hero/reflections/iteration-1.json");
    let basis = |id: &str| {
        reflection["constraints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()["basis"]
            .clone()
    };
    assert_eq!(basis("mood"), "judged");
    assert_eq!(basis("no-unfilled-placeholders"), "measured");
    // Nothing is pending any more.
    let r = run_code(pmpo(&ws), 2, &["answer", "hero", "--file", "answer.json"]);
    assert!(r.stderr.contains("has no pending question"), "{}", r.stderr);
}

#[test]
fn a_host_driven_refinement_replays_offline_from_the_workspace_cassette() {
    let ws = Ws::new();
    start(&ws, &[]);
    let (report, _) = answer_until_done(&ws);
    assert_eq!(report["outcome"], "converged", "{report}");
    // Every answer, across the processes that went on, is in one cassette.
    let cassette = ws.p(".state/host/cassette.jsonl");
    let lines = std::fs::read_to_string(&cassette).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    // A fresh workspace replays the whole refinement from it alone.
    let again = Ws::new();
    let mut args = HERO.to_vec();
    args.extend_from_slice(&["--replay", cassette.to_str().unwrap(), "--json"]);
    let r = run_code(pmpo(&again), 0, &args);
    assert_eq!(r.json()["outcome"], "converged", "{}", r.stderr);
    assert!(!again.p(".state/host").exists());
}

#[test]
fn an_invalid_answer_gets_one_repair_question_with_its_problems() {
    let ws = Ws::new();
    start(&ws, &[]);
    ws.write(
        "bad.json",
        r#"{"constraints": [{"id": "x", "severity": "urgent"}]}"#,
    );
    let r = run_code(
        pmpo(&ws),
        3,
        &["answer", "hero", "--file", "bad.json", "--json"],
    );
    let q = &r.json()["pending"]["question"];
    assert_eq!(q["stage"], "specify-repair");
    let text = q["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap();
    assert!(text.contains("severity"), "{text}");
    // Still invalid: the adapter's defaults are used, with a note, and the loop goes on.
    let r = run_code(
        pmpo(&ws),
        3,
        &["answer", "hero", "--file", "bad.json", "--json"],
    );
    let report = r.json();
    assert_eq!(report["pending"]["question"]["phase"], "plan", "{report}");
    let log = std::fs::read_to_string(ws.p("refinement_log.md")).unwrap();
    assert!(log.contains("invalid after one repair"), "{log}");
    assert!(
        r.stderr.contains("invalid after one repair"),
        "{}",
        r.stderr
    );
}

#[test]
fn pmpo_answer_refuses_what_it_cannot_use() {
    let ws = Ws::new();
    // Nothing asked yet.
    ws.write("a.json", "{}");
    let r = run_code(pmpo(&ws), 2, &["answer", "hero", "--file", "a.json"]);
    assert!(r.stderr.contains("has no pending question"), "{}", r.stderr);
    start(&ws, &[]);
    // An empty answer, a missing file, a bad name, no target at all.
    ws.write("empty.json", "  \n");
    let r = run_code(pmpo(&ws), 2, &["answer", "hero", "--file", "empty.json"]);
    assert!(r.stderr.contains("the answer is empty"), "{}", r.stderr);
    let r = run_code(pmpo(&ws), 2, &["answer", "hero", "--file", "nope.json"]);
    assert!(r.stderr.contains("nope.json"), "{}", r.stderr);
    let r = run_code(pmpo(&ws), 2, &["answer", "../etc", "--file", "a.json"]);
    assert!(!r.stderr.is_empty());
    run_code(pmpo(&ws), 2, &["answer", "--file", "a.json"]);
    // No standard input (as in CI): an empty answer, not a hang.
    let r = run_code(pmpo(&ws), 2, &["answer", "hero"]);
    assert!(r.stderr.contains("the answer is empty"), "{}", r.stderr);
    // Still pending, untouched.
    let pending: Value = ws.read_json(PENDING);
    assert_eq!(pending["question"]["phase"], "specify");
    assert!(!ws.p(".state/host/answers").exists());
    // A damaged pending question, or one replaced by a link: refused, named,
    // nothing kept.
    let whole = ws.read(PENDING);
    ws.write(PENDING, "{\"artifact\": \"hero\", \"questi");
    let r = run_code(pmpo(&ws), 2, &["answer", "hero", "--file", "a.json"]);
    assert!(
        r.stderr.contains("pending.json` is damaged")
            && r.stderr.contains("move the damaged file aside"),
        "{}",
        r.stderr
    );
    ws.write("elsewhere.json", &whole);
    std::fs::remove_file(ws.p(PENDING)).unwrap();
    std::os::unix::fs::symlink(ws.p("elsewhere.json"), ws.p(PENDING)).unwrap();
    let r = run_code(pmpo(&ws), 2, &["answer", "hero", "--file", "a.json"]);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert!(!ws.p(".state/host/answers").exists());
}

#[test]
fn a_kill_while_an_answer_goes_on_leaves_state_that_resumes() {
    for delay_ms in [5u64, 30, 80, 200] {
        let ws = Ws::new();
        start(&ws, &[]);
        let pending: Value = ws.read_json(PENDING);
        ws.write(
            "answer.json",
            &host_answer(&pending["question"]).to_string(),
        );
        let mut child = pmpo(&ws)
            .args(["answer", "hero", "--file", "answer.json", "-q"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever the moment: the answer was kept before anything went on,
        // every state file is whole, and the host's loop goes on to the end.
        assert_state_whole(&ws, &format!("delay {delay_ms}"));
        let r = run(pmpo(&ws), &["refine", "hero", "--via", "host", "--json"]);
        let report = r.json();
        let report = if report["outcome"] == "awaiting_answer" {
            answer_until_done(&ws).0
        } else {
            report
        };
        assert_eq!(report["outcome"], "converged", "delay {delay_ms}: {report}");
        // One Specify for the cycle: the answered question was not asked again.
        let log = std::fs::read_to_string(ws.p("refinement_log.md")).unwrap();
        assert_eq!(log.matches("Specify").count(), 1, "delay {delay_ms}: {log}");
    }
}

#[test]
fn an_answer_too_large_binary_or_holding_a_key_is_refused_or_kept_without_the_key() {
    let ws = Ws::new();
    start(&ws, &[]);
    // Enormous: refused before anything is kept.
    let huge = format!("{{\"goals\": [\"{}\"]}}", "x".repeat(5 << 20));
    ws.write("huge.json", &huge);
    let r = run_code(pmpo(&ws), 2, &["answer", "hero", "--file", "huge.json"]);
    assert!(r.stderr.contains("larger than 4 MiB"), "{}", r.stderr);
    // Not text.
    std::fs::write(ws.p("bin.json"), [0xff, 0xfe, 0x00, 0x7b]).unwrap();
    let r = run_code(pmpo(&ws), 2, &["answer", "hero", "--file", "bin.json"]);
    assert!(r.stderr.contains("is not UTF-8 text"), "{}", r.stderr);
    assert!(!ws.p(".state/host/answers").exists());
    // A key the host's answer holds is not written anywhere.
    const KEY: &str = "sk-host-planted-7c1e55";
    let answer = json!({"goals": [format!("use {KEY}")], "constraints": []});
    ws.write("answer.json", &answer.to_string());
    let mut c = pmpo(&ws);
    c.env("OPENAI_API_KEY", KEY);
    let r = run(c, &["answer", "hero", "--file", "answer.json", "--json"]);
    assert_eq!(r.json()["outcome"], "awaiting_answer", "{}", r.stderr);
    std::fs::remove_file(ws.p("answer.json")).unwrap();
    pmpo_testkit::model_server::assert_no_key_under(ws.path(), KEY);
}
