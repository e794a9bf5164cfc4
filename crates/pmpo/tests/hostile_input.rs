//! Hostile plans get a clear error (exit 2), never a crash: deep nesting and
//! alias expansion are bounded before they can exhaust the stack or memory.

use common::assert_contains;
use pmpo_testkit as common;

use common::Ws;

#[test]
fn a_deeply_nested_plan_is_refused_with_the_limit_not_a_stack_overflow() {
    let ws = Ws::new();
    ws.write(
        "plan.yaml",
        &format!("plan:\n  stages:\n    - {}x\n", "- ".repeat(20_000)),
    );
    for cmd in ["check", "execute"] {
        let r = ws.run(&[cmd, "plan.yaml"]);
        assert_eq!(r.code, 2, "{cmd}: {}", r.stderr);
        assert!(
            r.stderr.starts_with(
                "error: plan.yaml:3:513: the document nests sequences and mappings more than 256 levels deep; the limit is PMPO_YAML_MAX_DEPTH\n  help: a plan needs a few levels;"
            ),
            "{cmd}: {}",
            r.stderr
        );
    }
    assert!(!ws.p(".state").exists(), "an invalid plan wrote state");
}

#[test]
fn an_alias_bomb_is_refused_quickly_and_the_limit_can_be_raised() {
    let ws = Ws::new();
    let mut doc = String::from("x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n");
    for i in 1..9 {
        let p = i - 1;
        doc.push_str(&format!(
            "x{i}: &x{i} [*x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}]\n"
        ));
    }
    ws.write("plan.yaml", &doc);
    let r = ws.run_code(2, &["check", "plan.yaml"]);
    assert!(
        r.stderr.contains(
            "the document expands to more than 200000 nodes through aliases (`*name`); the limit is PMPO_YAML_MAX_ALIAS_NODES"
        ),
        "{}",
        r.stderr
    );
    // The limit is a setting: 1,111 nodes from aliases pass by default and are
    // refused under a limit of 100.
    let small: String = doc.lines().take(3).map(|l| format!("{l}\n")).collect();
    ws.write("small.yaml", &small);
    let r = ws.run(&["check", "small.yaml"]);
    assert!(!r.stderr.contains("aliases"), "{}", r.stderr);
    let r: common::Run = common::bin()
        .args(["check", "small.yaml"])
        .current_dir(ws.path())
        .env("PMPO_YAML_MAX_ALIAS_NODES", "100")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("expands to more than 100 nodes through aliases"),
        "{}",
        r.stderr
    );
    // A plan that repeats a block through an alias is fine under the limit.
    ws.write(
        "ok.yaml",
        "specification: {artifact_name: t, artifact_type: code}\nx-retry: &r {attempts: 2, initial: 1ms}\nplan:\n  stages:\n    - {id: a, retry: *r, with: {command: [echo]}}\n    - {id: b, retry: *r, with: {command: [echo]}}\n",
    );
    let r = ws.run(&["check", "ok.yaml"]);
    assert!(!r.stderr.contains("aliases"), "{}", r.stderr);
}

#[test]
fn a_link_planted_at_a_log_pmpo_appends_to_is_refused_and_its_target_is_untouched() {
    // The stage log's name holds the run's id: its directory is the link.
    for log in ["logs/executor.jsonl", "logs/execution"] {
        let ws = Ws::new();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim.txt");
        std::fs::write(&victim, "precious\n").unwrap();
        std::fs::create_dir_all(ws.p("logs")).unwrap();
        std::os::unix::fs::symlink(&victim, ws.p(log)).unwrap();
        ws.plan("    - id: a\n      with: {command: [echo, hi]}\n");
        let r = ws.run(&["execute", "plan.yaml"]);
        assert_eq!(r.code, 1, "{log}: {}", r.stderr);
        let words = if log == "logs/execution" {
            format!(
                "/{log}` leads to `{}` through a symbolic link",
                victim.display()
            )
        } else {
            format!(
                "refused `{log}`: it is a symbolic link (to `{}`), and pmpo never opens its own files through a link; remove the link (pmpo creates the file again)",
                victim.display()
            )
        };
        assert!(r.stderr.contains(&words), "{log}: {}", r.stderr);
        // Refused before the stage ran.
        assert!(!r.stderr.contains("completed"), "{log}: {}", r.stderr);
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "precious\n",
            "{log}"
        );
    }
}

#[test]
fn restore_streams_the_backup_and_refuses_a_damaged_one_without_touching_the_file() {
    let ws = Ws::new();
    // Larger than any buffer: the content must come back byte for byte.
    let original: Vec<u8> = (0..3_000_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(ws.p("data.bin"), &original).unwrap();
    ws.plan("    - id: w\n      with: {command: [sh, -c, 'printf small > data.bin']}\n      outputs: [data.bin]\n");
    ws.run_ok(&["execute", "plan.yaml"]);
    assert_eq!(ws.read("data.bin"), "small");
    ws.run_ok(&["restore", "data.bin"]);
    assert!(std::fs::read(ws.p("data.bin")).unwrap() == original);

    // The content the restore replaced is a backup too; damage it and ask
    // for it back: refused, and the file stays as it is.
    let blobs: Vec<std::path::PathBuf> = ws
        .files()
        .into_iter()
        .filter(|f| f.starts_with(".refiner/backups/"))
        .map(|f| ws.p(&f))
        .filter(|p| std::fs::metadata(p).unwrap().len() == 5)
        .collect();
    assert_eq!(blobs.len(), 1, "the backup of `small`");
    std::fs::write(&blobs[0], "SMALL").unwrap();
    let r = ws.run_code(1, &["restore", "data.bin"]);
    assert_contains(&r.stderr, "is missing or damaged");
    assert!(std::fs::read(ws.p("data.bin")).unwrap() == original);
}
