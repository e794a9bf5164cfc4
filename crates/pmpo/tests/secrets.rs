//! Secrets stay with pmpo: stages never inherit the variables that hold keys
//! (unless they list them in `env_passthrough`), and a configured key that a
//! stage prints is redacted from every file pmpo writes.

mod common;

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
    assert!(
        ws.read("logs/execution/leak.jsonl")
            .contains("the key is [redacted]")
    );
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
    let r = ws.run(&["check", "plan.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("`env_passthrough` must be a list of variable names"),
        "{}",
        r.stderr
    );
}
