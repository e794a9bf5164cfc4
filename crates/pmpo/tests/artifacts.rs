//! Named artifacts, state providers and `pmpo doctor`.

use common::assert_mentions;
use common::*;
use pmpo_testkit as common;
use serde_json::Value;

/// The required fields and enums of the reference refinement-state schema.
fn assert_refinement_state_shape(state: &Value) {
    for key in [
        "refinement_id",
        "artifact_name",
        "artifact_type",
        "content_type",
        "started_at",
        "updated_at",
        "current_iteration",
        "max_iterations",
        "convergence_status",
    ] {
        assert!(state.get(key).is_some(), "state.json lacks {key}: {state}");
    }
    assert!(
        [
            "logo",
            "ui",
            "a2ui",
            "image",
            "content",
            "code",
            "meta-prompt"
        ]
        .contains(&state["artifact_type"].as_str().unwrap())
    );
    let ct = state["content_type"].as_str().unwrap();
    assert!(ct.starts_with("direct:") || ct.starts_with("meta:"));
    assert!(
        [
            "running",
            "converged",
            "max_iterations_exceeded",
            "user_terminated"
        ]
        .contains(&state["convergence_status"].as_str().unwrap())
    );
    assert!(state["max_iterations"].as_u64().unwrap() >= 1);
}

#[test]
fn lifecycle_init_resume_checkpoint_finalize_new_cycle() {
    let ws = Ws::new();
    let r = ws.run(&["init", "acme-logo"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "needs a type");

    let r = ws.run_ok(&["init", "acme-logo", "--type", "logo", "--json"]);
    let created = r.json();
    assert_eq!(created["outcome"], "created");
    let first_id = created["state"]["refinement_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_refinement_state_shape(&ws.read_json(".refiner/artifacts/acme-logo/state.json"));
    assert_eq!(
        ws.read_json(".refiner/registry.json")["artifacts"]["acme-logo"]["status"],
        "running"
    );

    assert_eq!(
        ws.run(&["init", "acme-logo", "--json"]).json()["outcome"],
        "resumed"
    );
    let r = ws.run(&["init", "acme-logo", "--type", "ui"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "is a logo, not a ui");

    let r = ws.run_ok(&["checkpoint", "acme-logo", "plan"]);
    let cp = r.stdout.trim().to_string();
    assert!(
        ws.p(&format!(
            ".refiner/artifacts/acme-logo/checkpoints/{cp}.json"
        ))
        .is_file()
    );
    let r = ws.run(&["checkpoint", "acme-logo", "dance"]);
    assert!(
        r.code == 2 && r.stderr.contains("unknown phase `dance`"),
        "{}",
        r.stderr
    );

    let st = ws.run(&["status", "acme-logo", "--json"]).json();
    assert_eq!(st["checkpoints"][0]["checkpoint_id"], cp.as_str());
    assert_eq!(st["phases_completed"], serde_json::json!(["plan"]));

    let r = ws.run_ok(&["finalize", "acme-logo", "--json"]);
    let history = r.json()["history"].as_str().unwrap().to_string();
    assert!(history.starts_with(".refiner/history/acme-logo/"));
    let archived = ws.read_json(&format!("{history}/state.json"));
    assert_eq!(archived["convergence_status"], "converged");
    assert!(archived["finalized_at"].is_string());
    assert!(ws.p(&format!("{history}/checkpoints/{cp}.json")).is_file());
    assert!(
        ws.run(&["finalize", "acme-logo"])
            .stderr
            .contains("already finalized")
    );

    let r = ws.run(&["init", "acme-logo", "--json"]);
    let cycle = r.json();
    assert_eq!(cycle["outcome"], "new_cycle");
    assert_eq!(cycle["state"]["prior_cycle_id"], first_id.as_str());
    assert_ne!(cycle["state"]["refinement_id"], first_id.as_str());
    assert_eq!(cycle["state"]["current_iteration"], 0);
    let list = ws.run(&["list", "--json"]).json();
    assert_eq!(list["artifacts"]["acme-logo"]["cycles"], 2);
}

#[test]
fn names_that_try_to_escape_are_refused() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.p("inner")).unwrap();
    for bad in [
        "../escape",
        "a/b",
        "..",
        ".hidden",
        "-rf",
        "a\nb",
        "a b",
        "x\\y",
        &"n".repeat(101),
        "",
    ] {
        let r = bin()
            .args(["init", bad, "--type", "logo", "-w", "inner"])
            .current_dir(ws.path())
            .output()
            .unwrap();
        assert_eq!(
            r.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    assert_eq!(
        ws.files(),
        Vec::<String>::new(),
        "nothing may be written for a bad name"
    );
    let r = ws.run(&["init", "x", "--type", "banana"]);
    assert!(
        r.code == 2
            && r.stderr.contains("Unknown artifact_type: banana")
            && r.stderr.contains("meta-prompt"),
        "{}",
        r.stderr
    );
    let r = ws.run(&["status", "../../etc"]);
    assert_eq!(r.code, 2);
}

#[test]
fn custom_provider_receives_saves_and_failures_fall_back() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.p("remote")).unwrap();
    ws.write(
        "provider.json",
        r#"{"provider_type": "custom", "config": {
            "init_command": "touch remote/init-$PMPO_ARTIFACT_NAME",
            "save_command": "cat > remote/$PMPO_ARTIFACT_NAME.json",
            "load_command": "cat remote/$PMPO_ARTIFACT_NAME.json 2>/dev/null || true"}}"#,
    );
    let cfg = ws.p("provider.json");
    let run = |args: &[&str]| -> Run {
        bin()
            .args(args)
            .env("PMPO_PROVIDER_CONFIG", &cfg)
            .current_dir(ws.path())
            .output()
            .unwrap()
            .into()
    };
    let r = run(&["init", "card", "--type", "ui"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(ws.p("remote/init-card").is_file());
    let saved: Value = serde_json::from_str(&ws.read("remote/card.json")).unwrap();
    assert_eq!(saved["artifact_name"], "card");
    let p = run(&["provider", "--json"]).json();
    assert_eq!(p["kind"]["provider_type"], "custom");
    assert_mentions(&p, "source", "PMPO_PROVIDER_CONFIG");

    // The remote copy is preferred on load.
    let mut remote = saved.clone();
    remote["current_iteration"] = 3.into();
    ws.write("remote/card.json", &remote.to_string());
    assert_eq!(
        run(&["status", "card", "--json"]).json()["current_iteration"],
        3
    );

    // A failing provider degrades to the filesystem, says so, and logs it.
    ws.write(
        "provider.json",
        r#"{"provider_type": "custom", "config": {"init_command": "exit 3", "save_command": "exit 3", "load_command": "echo boom >&2; exit 3"}}"#,
    );
    let r = run(&["checkpoint", "card", "specify"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("custom provider load failed") && r.stderr.contains("boom"),
        "{}",
        r.stderr
    );
    assert!(ws.read(".refiner/provider.log").contains("degraded_to"));

    // A broken or unsupported config degrades too.
    ws.write("provider.json", "{not json");
    let r = run(&["provider"]);
    assert!(
        r.stdout.contains("degraded") && r.stdout.contains("provider: filesystem"),
        "{}",
        r.stdout
    );
    ws.write("provider.json", r#"{"provider_type": "mcp"}"#);
    assert!(run(&["provider"]).stdout.contains("not available to pmpo"));
}

#[test]
fn project_provider_file_is_found() {
    let ws = Ws::new();
    ws.write(
        ".refiner/provider.json",
        r#"{"provider_type": "filesystem", "config": {"state_directory": ".refiner"}}"#,
    );
    let p = ws.run(&["provider", "--json"]).json();
    assert_eq!(p["kind"]["provider_type"], "filesystem");
    assert!(
        p["source"]
            .as_str()
            .unwrap()
            .contains(".refiner/provider.json"),
        "{p}"
    );
}

#[test]
fn doctor_explains_and_repairs_damaged_state() {
    let ws = Ws::new();
    ws.run_ok(&["init", "acme", "--type", "logo"]);
    ws.run_ok(&["checkpoint", "acme", "specify"]);
    ws.plan(
        "    - id: a\n      with: {command: [sh, -c, 'echo x > x.txt']}\n      outputs: [x.txt]\n",
    );
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    ws.run_ok(&["doctor"]);

    // A truncated state file: a clear error, and the file is left alone.
    let state = ws.read(".refiner/artifacts/acme/state.json");
    ws.write(
        ".refiner/artifacts/acme/state.json",
        &state[..state.len() / 2],
    );
    let r = ws.run(&["status", "acme"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(".refiner/artifacts/acme/state.json") && r.stderr.contains("pmpo doctor"),
        "{}",
        r.stderr
    );
    assert_eq!(
        ws.read(".refiner/artifacts/acme/state.json"),
        state[..state.len() / 2]
    );

    // A torn ledger line and a state file of the wrong shape.
    let ledger = ws.read(".state/patch_ledger.jsonl");
    ws.write(
        ".state/patch_ledger.jsonl",
        &format!("{ledger}{{\"time\": \"2026"),
    );
    ws.write(".refiner/registry.json", r#"{"artifacts": {"acme": 42}}"#);

    let r = ws.run(&["doctor", "--json"]);
    assert_eq!(r.code, 1);
    let report = r.json();
    let files: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    assert!(
        files.contains(&".refiner/artifacts/acme/state.json"),
        "{report}"
    );
    assert!(files.contains(&".state/patch_ledger.jsonl"), "{report}");
    assert!(files.contains(&".refiner/registry.json"), "{report}");

    ws.run_ok(&["doctor", "--repair"]);
    assert_eq!(
        ws.run(&["doctor"]).code,
        0,
        "{}",
        ws.run(&["doctor"]).stdout
    );
    let st = ws.run(&["status", "acme", "--json"]);
    assert_eq!(st.code, 0, "{}", st.stderr);
    assert_eq!(st.json()["artifact_name"], "acme");
    assert_eq!(ws.read(".state/patch_ledger.jsonl"), ledger);
    // The damaged files were moved aside, not deleted.
    let aside: Vec<String> = ws
        .files()
        .into_iter()
        .filter(|f| f.contains(".damaged-"))
        .collect();
    assert!(aside.len() >= 2, "{aside:?}");
}

#[test]
fn doctor_moves_a_broken_database_aside_and_runs_continue() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      with: {command: [echo]}\n");
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    for f in [".state/pmpo.db-wal", ".state/pmpo.db-shm"] {
        let _ = std::fs::remove_file(ws.p(f));
    }
    std::fs::write(ws.p(".state/pmpo.db"), vec![0x42u8; 4096]).unwrap();
    let r = ws.run(&["doctor"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains(".state/pmpo.db") && r.stdout.contains("--repair"),
        "{}",
        r.stdout
    );
    ws.run_ok(&["doctor", "--repair"]);
    ws.run_ok(&["execute", "plan.yaml", "-q"]);

    // A database from a newer pmpo is refused and never "repaired".
    let bumped = std::process::Command::new("python3")
        .args(["-c", "import sqlite3; c = sqlite3.connect('.state/pmpo.db'); c.execute('PRAGMA user_version = 99'); c.commit()"])
        .current_dir(ws.path())
        .status()
        .unwrap();
    assert!(bumped.success());
    let r = ws.run(&["execute", "plan.yaml"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("written by a newer pmpo") && r.stderr.contains("upgrade pmpo"),
        "{}",
        r.stderr
    );
    let r = ws.run(&["doctor", "--repair"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("NOT") || r.stdout.contains("upgrade pmpo"),
        "{}",
        r.stdout
    );
    assert!(
        ws.p(".state/pmpo.db").is_file(),
        "a newer database must be left in place"
    );
}

#[test]
fn a_state_that_names_another_artifact_is_refused_and_never_written_over_it() {
    let ws = Ws::new();
    for name in ["art", "other"] {
        ws.run_ok(&["init", name, "--type", "logo"]);
        ws.run_ok(&["checkpoint", name, "specify"]);
    }
    let other_before = ws.read(".refiner/artifacts/other/state.json");
    // `art`'s state now claims to be `other`'s.
    let mut st = ws.read_json(".refiner/artifacts/art/state.json");
    st["artifact_name"] = "other".into();
    ws.write(
        ".refiner/artifacts/art/state.json",
        &serde_json::to_string_pretty(&st).unwrap(),
    );
    for args in [
        &["checkpoint", "art", "plan"][..],
        &["status", "art"],
        &["init", "art"],
    ] {
        let r = ws.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(
                "`.refiner/artifacts/art/state.json` is the state of artifact `other`, but it sits in the folder of `art`"
            ),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert_eq!(ws.read(".refiner/artifacts/other/state.json"), other_before);
    // doctor names it, and --repair brings back `art`'s own state.
    let r = ws.run(&["doctor"]);
    assert_ne!(r.code, 0);
    assert_contains(&r.stdout, "is the state of artifact `other`");
    ws.run_ok(&["doctor", "--repair"]);
    assert_eq!(
        ws.read_json(".refiner/artifacts/art/state.json")["artifact_name"],
        "art"
    );
    assert_eq!(ws.read(".refiner/artifacts/other/state.json"), other_before);
}

#[test]
fn a_deleted_state_with_checkpoints_is_recovered_not_replaced_by_a_new_lineage() {
    let ws = Ws::new();
    let r = ws.run_ok(&["init", "keep", "--type", "logo", "--json"]);
    let id = r.json()["state"]["refinement_id"].clone();
    ws.run_ok(&["checkpoint", "keep", "specify"]);
    std::fs::remove_file(ws.p(".refiner/artifacts/keep/state.json")).unwrap();
    let r = ws.run_code(2, &["init", "keep", "--type", "logo"]);
    assert!(
        r.stderr.contains(
            "the state of artifact `keep` is missing, but 1 checkpoint(s) survive: starting over would replace its lineage"
        ),
        "{}",
        r.stderr
    );
    assert_contains(&r.stderr, "pmpo doctor --repair");
    assert!(!ws.p(".refiner/artifacts/keep/state.json").exists());
    let r = ws.run(&["doctor"]);
    assert!(
        r.stdout
            .contains("the state file is missing, but checkpoints survive"),
        "{}",
        r.stdout
    );
    ws.run_ok(&["doctor", "--repair"]);
    let st = ws.read_json(".refiner/artifacts/keep/state.json");
    assert_eq!(st["refinement_id"], id);
    assert_eq!(st["phases_completed"][0], "specify");
    ws.run_ok(&["doctor"]);
}

/// `--new-lineage` starts over on purpose, and keeps the old lineage: its
/// folder (checkpoints included) moves under `.refiner/history/`. Where the
/// state is intact, the flag changes nothing.
#[test]
fn new_lineage_sets_the_old_checkpoints_aside_never_deletes_them() {
    let ws = Ws::new();
    let r = ws.run(&["init", "keep", "--type", "logo", "--json"]);
    let old_id = r.json()["state"]["refinement_id"].clone();
    ws.run_ok(&["checkpoint", "keep", "specify"]);
    let checkpoints = |root: &std::path::Path| {
        walk(root)
            .into_iter()
            .filter(|p| p.contains("/checkpoints/"))
            .count()
    };
    let before = checkpoints(&ws.p(".refiner"));
    assert!(before > 0);
    // Intact state: the flag resumes as usual.
    let r = ws.run_ok(&["init", "keep", "--new-lineage", "--json"]);
    assert_eq!(r.json()["state"]["refinement_id"], old_id);
    std::fs::remove_file(ws.p(".refiner/artifacts/keep/state.json")).unwrap();
    let r = ws.run_ok(&["init", "keep", "--type", "logo", "--new-lineage", "--json"]);
    assert_ne!(r.json()["state"]["refinement_id"], old_id);
    assert!(
        r.stderr.contains(
            "the earlier lineage of `keep` was moved to .refiner/history/keep/set-aside-"
        ),
        "{}",
        r.stderr
    );
    let aside = walk(&ws.p(".refiner/history/keep"));
    assert_eq!(
        aside.iter().filter(|p| p.contains("/checkpoints/")).count(),
        before,
        "{aside:?}"
    );
    ws.run_ok(&["doctor"]);
    // The same through refine.
    ws.run_ok(&["checkpoint", "keep", "specify"]);
    std::fs::remove_file(ws.p(".refiner/artifacts/keep/state.json")).unwrap();
    let r = ws.run_code(2, &["refine", "keep", "--offline", "--max-iterations", "1"]);
    assert_contains(&r.stderr, "--new-lineage");
    ws.write(
        "logo.svg",
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 10 10\"><rect width=\"10\" height=\"10\" fill=\"#123456\"/></svg>",
    );
    let r = ws.run(&[
        "refine",
        "keep",
        "--offline",
        "--max-iterations",
        "1",
        "--new-lineage",
        "--type",
        "logo",
        "--input",
        "logo.svg",
    ]);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    assert!(ws.p(".refiner/artifacts/keep/state.json").exists());
    let sets = std::fs::read_dir(ws.p(".refiner/history/keep"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("set-aside-"))
        .count();
    assert_eq!(sets, 2);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Setting a lineage aside never moves it through a link: with
/// `.refiner/history` a link to a folder outside, `--new-lineage` is refused,
/// the checkpoints stay where they are and nothing lands outside.
#[test]
fn new_lineage_is_refused_through_a_linked_history_folder() {
    let ws = Ws::new();
    ws.run_ok(&["init", "keep", "--type", "logo"]);
    ws.run_ok(&["checkpoint", "keep", "specify"]);
    std::fs::remove_file(ws.p(".refiner/artifacts/keep/state.json")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.p(".refiner/history")).unwrap();
    let r = ws.run(&["init", "keep", "--type", "logo", "--new-lineage"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_contains(&r.stderr, "symbolic link");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(ws.p(".refiner/artifacts/keep/checkpoints").is_dir());
}

/// An artifact asked for in the wrong workspace: the hint names `-w`, and
/// the same command with it works.
#[test]
fn an_artifact_in_another_workspace_is_found_with_w() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.p("sub")).unwrap();
    let r = ws.run(&["init", "elsewhere", "--type", "content", "-w", "sub"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = ws.run(&["status", "elsewhere"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("there is no artifact `elsewhere` in this workspace")
            && r.stderr.contains("name it with `-w DIR`"),
        "{}",
        r.stderr
    );
    let r = ws.run(&["status", "elsewhere", "-w", "sub"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}
