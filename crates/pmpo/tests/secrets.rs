//! Secrets stay with pmpo: stages never inherit the variables that hold keys
//! (unless they list them in `env_passthrough`), and a configured key that a
//! stage prints is redacted from every file pmpo writes.

use pmpo_testkit as common;

use common::{Run, Ws};

const OPENAI: &str = "sk-planted-openai-000111";
const TOKEN: &str = "tok-planted-gh-000222";
const CRED: &str = "cred-planted-model-000333";

fn pmpo(ws: &Ws, args: &[&str]) -> Run {
    common::bin_without_models(ws.path())
        .args(args)
        .env("OPENAI_API_KEY", OPENAI)
        .env("SOME_SERVICE_TOKEN", TOKEN)
        .env("MY_MODEL_CRED", CRED)
        .output()
        .unwrap()
        .into()
}

#[test]
fn stages_never_see_keys_and_a_printed_key_is_redacted_everywhere() {
    let ws = Ws::new();
    // An endpoint that reads its key from a variable no pattern would catch.
    ws.write(
        "pmpo.toml",
        "[ai]\ndefault_endpoint = \"m\"\n[ai.endpoints.m]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"x\"\napi_key_env = \"MY_MODEL_CRED\"\n",
    );
    // A file the stage leaks the key from (as model-written code might).
    ws.write("leak.txt", &format!("the key is {CRED}\n"));
    ws.plan(
        "    - id: env
      with: {command: [sh, -c, 'env > env.txt']}
      outputs: [env.txt]
    - id: pass
      with: {command: [sh, -c, 'printf %s \"$SOME_SERVICE_TOKEN\" > pass.txt'], env_passthrough: [SOME_SERVICE_TOKEN]}
      outputs: [pass.txt]
    - id: leak
      with: {command: [sh, -c, 'cat leak.txt; cat leak.txt >&2; exit 1']}
",
    );
    let r = pmpo(&ws, &["execute", "plan.yaml", "--keep-going", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let env = ws.read("env.txt");
    for (name, value) in [
        ("OPENAI_API_KEY", OPENAI),
        ("SOME_SERVICE_TOKEN", TOKEN),
        ("MY_MODEL_CRED", CRED),
    ] {
        assert!(
            !env.contains(name) && !env.contains(value),
            "{name} reached the stage"
        );
    }
    assert!(env.contains("PMPO_STAGE=env"), "{env}");
    // Listed in env_passthrough: handed on.
    assert_eq!(ws.read("pass.txt"), TOKEN);
    // The leaked key is redacted from the stage log, the errors and the results.
    let err = common::error_of(&r.json(), "leak");
    assert_eq!(err["stderr_tail"], "the key is [redacted]");
    assert!(ws.stage_log("leak").contains("the key is [redacted]"));
    // No file pmpo wrote holds a key (the workspace's own files aside).
    for f in ws.files() {
        if ["leak.txt", "env.txt", "pass.txt", "pmpo.toml", "plan.yaml"].contains(&f.as_str()) {
            continue;
        }
        let bytes = std::fs::read(ws.p(&f)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for value in [OPENAI, TOKEN, CRED] {
            assert!(!text.contains(value), "{f} holds a key");
        }
    }
}

#[test]
fn env_passthrough_must_be_a_list_of_names() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      with: {command: [echo], env_passthrough: GITHUB_TOKEN}\n");
    let r = ws.run_code(2, &["check", "plan.yaml"]);
    assert!(
        r.stderr
            .contains("`env_passthrough` must be a list of variable names"),
        "{}",
        r.stderr
    );
}

const HOOK: &str = "hook-planted-auth-000444";
const MY_TOKEN: &str = "mytok-planted-000555";

/// A model endpoint whose key is in `MY_MODEL_CRED`, and triggers that leak:
/// a webhook header from `HOOK_AUTH` (no pattern would catch that name) and a
/// command that prints its environment and the keys in `leak`.
fn write_leaky_refine(ws: &Ws, leak: &str) {
    ws.write(
        "pmpo.toml",
        "[ai]\ndefault_endpoint = \"m\"\n[ai.endpoints.m]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"x\"\napi_key_env = \"MY_MODEL_CRED\"\n",
    );
    // A trigger's webhook header names HOOK_AUTH (no pattern would catch that
    // name); its command trigger prints its environment and the keys.
    ws.write(
        "triggers.json",
        &serde_json::json!({"triggers": [
            {"event": "on_regression", "action": {"type": "webhook", "target": "http://127.0.0.1:9/h",
                "args": {"headers": {"Authorization": "Bearer ${env:HOOK_AUTH}"}}}},
            {"event": "on_phase_complete", "action": {"type": "command", "target": "sh",
                "args": {"argv": ["-c", format!("env; cat {leak}")]}, "timeout_ms": 5000}}
        ]})
        .to_string(),
    );
    ws.write("notes.md", "# Notes\n\nA short report.\n");
}

/// A plan whose stages and checks print the environment and the keys in
/// `leak` in every way a stage can: stdout, stderr, files, a whole output
/// kept aside, a reference into another stage, a failing stage, a check.
fn write_leaky_plan(ws: &Ws, leak: &str) {
    ws.plan(&format!(
        "    - id: env
      with: {{command: [sh, -c, 'env; env > env.txt']}}
      outputs: [env.txt]
    - id: pass
      with: {{command: [sh, -c, 'echo \"$MY_TOKEN\"'], env_passthrough: [MY_TOKEN]}}
    - id: use
      depends_on: [pass]
      with: {{command: [sh, -c, 'test -n \"$X\"'], env: {{X: $pass.stdout}}}}
    - id: big
      with: {{command: [sh, -c, 'yes \"$(cat {leak})\" | head -c 3000000'], outputs_json: false}}
    - id: small_file
      with: {{command: [cat, {leak}]}}
    - id: keep
      depends_on: [big, small_file]
      with: {{command: [sh, -c, 'test -s \"$A\" && test -s \"$B\"'], env: {{A: $big.stdout_file, B: $small_file.stdout_file}}}}
    - id: fail
      with: {{command: [sh, -c, 'cat {leak}; cat {leak} >&2; exit 1']}}
    - id: checked
      with: {{command: [true]}}
      validate:
        - {{check: command, with: {{command: [sh, -c, 'env; cat {leak}; cat {leak} >&2; exit 0']}}}}
"
    ));
    // A validation that prints the keys too.
    let plan = ws.read("plan.yaml").replace(
        "plan:\n",
        &format!("  constraints:\n    - {{id: c, description: d, severity: low}}\nplan:\n  validation_plan:\n    - constraint_id: c\n      validation_method: command\n      with: {{command: [sh, -c, 'env; cat {leak}; cat {leak} >&2; exit 1']}}\n"),
    );
    ws.write("plan.yaml", &plan);
}

#[test]
fn no_file_pmpo_writes_holds_a_planted_key() {
    let ws = Ws::new();
    // The keys a stage or a trigger may leak, kept outside the workspace so
    // that every file in it is one pmpo (or a stage it ran) wrote.
    let outside = tempfile::tempdir().unwrap();
    let leak = outside.path().join("leak.txt");
    let keys = [OPENAI, TOKEN, CRED, HOOK, MY_TOKEN];
    std::fs::write(&leak, keys.join("\n") + "\n").unwrap();
    let leak = leak.display().to_string();
    write_leaky_refine(&ws, &leak);
    let env = |c: &mut std::process::Command| {
        c.env("OPENAI_API_KEY", OPENAI)
            .env("SOME_SERVICE_TOKEN", TOKEN)
            .env("MY_MODEL_CRED", CRED)
            .env("HOOK_AUTH", HOOK)
            .env("MY_TOKEN", MY_TOKEN);
    };
    let mut c = common::bin_without_models(ws.path());
    env(&mut c);
    let r: Run = c
        .args([
            "refine",
            "r",
            "--type",
            "content",
            "--input",
            "notes.md",
            "--triggers",
            "triggers.json",
            "--offline",
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.stderr);

    write_leaky_plan(&ws, &leak);
    let mut c = common::bin_without_models(ws.path());
    env(&mut c);
    let r: Run = c
        .args(["execute", "plan.yaml", "--keep-going", "--json"])
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 1, "{}", r.stderr);
    let res = r.json();
    for s in res["stages"].as_array().unwrap() {
        let want = if s["id"] == "fail" {
            "FAILED"
        } else {
            "COMPLETED"
        };
        assert_eq!(s["status"], want, "{s}");
    }
    // No stage saw a key, nor a variable that holds one.
    let seen = ws.read("env.txt");
    for name in [
        "OPENAI_API_KEY",
        "SOME_SERVICE_TOKEN",
        "MY_MODEL_CRED",
        "HOOK_AUTH",
        "MY_TOKEN",
    ] {
        assert!(
            !seen.contains(&format!("{name}=")),
            "{name} reached a stage"
        );
    }
    // The validation's command ran, and what it printed is kept redacted.
    let validation = ws.read("constraints.json");
    assert!(validation.contains("[redacted]"), "{validation}");
    // Nor did the trigger's command (its output is in the workflow log).
    let log = ws.read(".refiner/artifacts/r/workflow.log");
    assert!(log.contains("[redacted]"), "{log}");
    // The whole output of `big` was kept, and redacted.
    assert!(
        ws.files()
            .iter()
            .any(|f| f.starts_with(".state/output/") && f.ends_with("big.stdout")),
        "{:?}",
        ws.files()
    );
    // Every file under the workspace: none holds a key.
    for f in ws.files() {
        let text = String::from_utf8_lossy(&std::fs::read(ws.p(&f)).unwrap()).into_owned();
        for key in keys {
            assert!(!text.contains(key), "{f} holds the key {key}");
        }
    }
    // What pmpo prints holds none either.
    for key in keys {
        assert!(
            !r.stdout.contains(key) && !r.stderr.contains(key),
            "{key} printed"
        );
    }
}

#[test]
fn a_key_in_a_model_answer_is_redacted_but_a_common_word_key_is_not() {
    let ws = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    let answer = outside.path().join("answer.txt");
    std::fs::write(
        &answer,
        format!("the key is {CRED}; run ollama locally\n```json\n{{\"key\": \"{CRED}\"}}\n```\n"),
    )
    .unwrap();
    // A model that is a local program answering with a key; another endpoint
    // reads its key from MY_MODEL_CRED, and a local one has the placeholder
    // key `ollama`.
    ws.write(
        "pmpo.toml",
        &format!(
            "[ai]\ndefault_endpoint = \"local\"\n[ai.endpoints.local]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"cat > /dev/null; cat {}\"]\n[ai.endpoints.remote]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"x\"\napi_key_env = \"MY_MODEL_CRED\"\n[ai.endpoints.ollama]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"x\"\napi_key_env = \"OLLAMA_KEY\"\n",
            answer.display()
        ),
    );
    ws.plan(
        "    - id: ask
      tool: ai
      with: {prompt: say it, output: dist/answer.md}
      outputs: [dist/answer.md]
",
    );
    let record = outside.path().join("cassette.jsonl");
    let r: Run = common::bin_without_models(ws.path())
        .args(["execute", "plan.yaml", "--json", "--record"])
        .arg(&record)
        .env("MY_MODEL_CRED", CRED)
        .env("OLLAMA_KEY", "ollama")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        ws.read("dist/answer.md"),
        "the key is [redacted]; run ollama locally\n```json\n{\"key\": \"[redacted]\"}\n```\n"
    );
    let cassette = std::fs::read_to_string(&record).unwrap();
    assert!(cassette.contains("[redacted]") && !cassette.contains(CRED));
    for f in ws.files() {
        let text = String::from_utf8_lossy(&std::fs::read(ws.p(&f)).unwrap()).into_owned();
        assert!(!text.contains(CRED), "{f} holds the key");
    }
    assert!(!r.stdout.contains(CRED) && !r.stderr.contains(CRED));
}
