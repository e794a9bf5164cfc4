//! The ledger leads the write, and anything pmpo or a stage replaced can be
//! undone: per tool, after failures and timeouts, after `kill -9`, for a
//! whole run (and the rollback itself), and `gc` keeps what is still needed.

use pmpo_testkit as common;

use std::time::Duration;

use common::refine::wait_until;
use common::{Ws, assert_contains, bin};
use serde_json::Value;

fn ledger(ws: &Ws, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["ledger", "--json"];
    all.extend_from_slice(args);
    let r = ws.run(&all);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json().as_array().unwrap().clone()
}

/// The ledger's entries for one file.
fn entries(ws: &Ws, path: &str) -> Vec<Value> {
    ledger(ws, &["--path", path])
}

/// Runs the plan, checks that `path` was replaced, that the ledger names it,
/// and that `pmpo restore` brings back exactly `original`.
fn overwrite_then_restore(ws: &Ws, path: &str, original: &[u8], writer: &str) {
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    assert_ne!(
        std::fs::read(ws.p(path)).unwrap(),
        original,
        "the stage did not replace `{path}`"
    );
    let rows = entries(ws, path);
    let row = rows
        .iter()
        .find(|r| r["writer"] == writer)
        .unwrap_or_else(|| panic!("no ledger entry by `{writer}` for `{path}`: {rows:?}"));
    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(row["backed_up"], true, "{row}");
    assert_eq!(
        row["before_blake3"],
        blake3::hash(original).to_hex().as_str()
    );
    let text = ws.run(&["ledger", "--path", path]);
    assert_contains(&text.stdout, path);
    ws.run_ok(&["restore", path]);
    assert!(
        std::fs::read(ws.p(path)).unwrap() == original,
        "`{path}` did not come back byte for byte"
    );
}

#[test]
fn template_output_not_in_outputs_is_backed_up_ledgered_and_restorable() {
    let ws = Ws::new();
    ws.write("page.txt", "Hello {{ NAME }}\n");
    ws.write("index.html", "precious hand-written page\n");
    // `output:` names an existing file that `outputs:` does not repeat.
    ws.plan("    - id: page\n      tool: template\n      with: {template: page.txt, output: index.html, vars: {NAME: x}}\n");
    overwrite_then_restore(&ws, "index.html", b"precious hand-written page\n", "page");
}

#[test]
fn markdown_output_is_restorable() {
    let ws = Ws::new();
    ws.write("doc.md", "# Title\n\nbody\n");
    ws.write("doc.html", "<p>mine</p>\n");
    ws.plan("    - id: md\n      tool: markdown\n      with: {input: doc.md, output: doc.html}\n");
    overwrite_then_restore(&ws, "doc.html", b"<p>mine</p>\n", "md");
}

#[test]
fn prompt_output_and_meta_are_restorable() {
    let ws = Ws::new();
    ws.write("a.md", "my own notes\n");
    ws.write("a.json", "{\"mine\": true}\n");
    ws.plan("    - id: p\n      tool: prompt\n      with: {intent: A red fox, requirements: [red], output: a.md, meta: a.json}\n");
    overwrite_then_restore(&ws, "a.md", b"my own notes\n", "p");
    // The metadata file was replaced in the same run: also restorable.
    ws.assert_restores("a.json", "{\"mine\": true}\n");
}

#[test]
fn a2ui_output_and_report_are_restorable() {
    let ws = Ws::new();
    ws.write(
        "spec.json",
        r#"{"root": {"type": "Text", "id": "t", "props": {"text": "hi"}}, "version": "a2ui/v1"}"#,
    );
    ws.write("out.json", "keep me\n");
    ws.write("report.json", "my report\n");
    ws.plan("    - id: ui\n      tool: a2ui\n      with: {input: spec.json, output: out.json, report: report.json}\n");
    overwrite_then_restore(&ws, "out.json", b"keep me\n", "ui");
    ws.assert_restores("report.json", "my report\n");
}

#[test]
fn rasterize_output_is_restorable() {
    let ws = Ws::new();
    ws.write(
        "logo.svg",
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="red"/></svg>"#,
    );
    let original: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    std::fs::write(ws.p("icon-16.png"), &original).unwrap();
    ws.plan("    - id: icons\n      tool: rasterize\n      with: {input: logo.svg, sizes: [16], output: 'icon-{size}.png'}\n");
    overwrite_then_restore(&ws, "icon-16.png", &original, "icons");
}

#[test]
fn run_stage_output_is_restorable() {
    let ws = Ws::new();
    ws.write("data.txt", "original data\n");
    ws.plan("    - id: w\n      with: {command: [sh, -c, 'echo replaced > data.txt']}\n      outputs: [data.txt]\n");
    overwrite_then_restore(&ws, "data.txt", b"original data\n", "w");
}

#[test]
fn a_stage_that_overwrites_then_fails_or_times_out_leaves_a_restorable_entry() {
    for (name, with, extra) in [
        (
            "fails",
            "{command: [sh, -c, 'echo broken > data.txt; exit 3']}",
            "",
        ),
        (
            "times_out",
            "{command: [sh, -c, 'echo broken > data.txt; sleep 30']}",
            "      timeout: 1s\n",
        ),
    ] {
        let ws = Ws::new();
        ws.write("data.txt", "precious\n");
        ws.plan(&format!(
            "    - id: w\n      with: {with}\n{extra}      outputs: [data.txt]\n"
        ));
        let r = ws.run(&["execute", "plan.yaml", "-q"]);
        assert_ne!(r.code, 0, "{name}: the stage should fail");
        assert_eq!(ws.read("data.txt"), "broken\n", "{name}");
        let rows = entries(&ws, "data.txt");
        assert_eq!(rows.len(), 1, "{name}: {rows:?}");
        assert_eq!(rows[0]["status"], "failed", "{name}: {rows:?}");
        assert_eq!(rows[0]["writer"], "w");
        assert_eq!(
            rows[0]["after_blake3"],
            blake3::hash(b"broken\n").to_hex().as_str()
        );
        let r = ws.run(&["restore", "data.txt"]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert_eq!(ws.read("data.txt"), "precious\n", "{name}");
    }
}

#[test]
fn an_unchanged_output_leaves_no_entry() {
    let ws = Ws::new();
    ws.write("same.txt", "same\n");
    ws.plan("    - id: w\n      with: {command: [sh, -c, 'echo same > same.txt']}\n      outputs: [same.txt]\n");
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    assert!(entries(&ws, "same.txt").is_empty());
}

/// `kill -9` of a many-stage run, at several moments: every file that
/// changed is in the ledger (completed or interrupted) and comes back byte
/// for byte; a file the killed run created is moved into the backups.
#[test]
fn kill_9_trials_leave_every_changed_file_restorable() {
    const STAGES: usize = 6;
    for (trial, kill_after) in [1usize, 3, 5].into_iter().enumerate() {
        let ws = Ws::new();
        let mut yaml = String::new();
        for i in 0..STAGES {
            ws.write(
                &format!("f{i}.txt"),
                &format!("original {i} of trial {trial}\n"),
            );
            let dep = if i == 0 {
                String::new()
            } else {
                format!("      depends_on: [s{}]\n", i - 1)
            };
            yaml += &format!(
                "    - id: s{i}\n{dep}      cache: false\n      with: {{command: [sh, -c, 'echo changed-{i} > f{i}.txt; echo made > new{i}.txt; mkdir -p made; echo m > made/n{i}.txt; sleep 1; echo late >> f{i}.txt']}}\n      outputs: [f{i}.txt, new{i}.txt, made/]\n"
            );
        }
        ws.plan(&yaml);
        let mut child = ws.spawn(&["execute", "plan.yaml", "-q"]);
        // Kill once the `kill_after`-th file has changed (mid-sleep of its stage).
        let target = format!("f{}.txt", kill_after - 1);
        ws.wait_for_text(&target, &format!("changed-{}\n", kill_after - 1));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The killed stage's shell lives on; `pmpo restore` stops it before it
        // can append `late` to the restored file (checked below).

        let rows = ledger(&ws, &[]);
        let mut changed = 0;
        for i in 0..STAGES {
            let path = format!("f{i}.txt");
            let original = format!("original {i} of trial {trial}\n");
            if ws.read(&path) == original {
                continue;
            }
            changed += 1;
            let row = rows
                .iter()
                .rev()
                .find(|r| r["path"] == path.as_str())
                .unwrap_or_else(|| {
                    panic!("trial {trial}: `{path}` changed but is not in the ledger: {rows:?}")
                });
            assert!(
                row["status"] == "completed" || row["status"] == "interrupted",
                "trial {trial}: {row}"
            );
            let r = ws.run(&["restore", &path]);
            assert_eq!(r.code, 0, "trial {trial} {path}: {}", r.stderr);
            assert_eq!(ws.read(&path), original, "trial {trial}");
            // A file the run created (named in `outputs:`, or new under a
            // declared directory) is in the ledger and is taken away again,
            // into the backups.
            for new in [format!("new{i}.txt"), format!("made/n{i}.txt")] {
                if !ws.p(&new).exists() {
                    continue;
                }
                assert!(
                    rows.iter().any(|r| r["path"] == new.as_str()),
                    "trial {trial}: `{new}` was created but is not in the ledger: {rows:?}"
                );
                let r = ws.run(&["restore", &new]);
                assert_eq!(r.code, 0, "trial {trial} {new}: {}", r.stderr);
                assert!(!ws.p(&new).exists(), "trial {trial}: {new}");
            }
        }
        assert!(changed >= kill_after, "trial {trial}: {changed} changed");
        // Nothing the killed run left behind writes the restored files again.
        std::thread::sleep(Duration::from_millis(1300));
        for i in 0..STAGES {
            assert_eq!(
                ws.read(&format!("f{i}.txt")),
                format!("original {i} of trial {trial}\n"),
                "trial {trial}: f{i}.txt was written again after its restore"
            );
        }
        let interrupted = rows.iter().filter(|r| r["status"] == "interrupted").count();
        assert!(
            interrupted >= 1,
            "trial {trial}: nothing interrupted: {rows:?}"
        );
        let text = ws.run(&["ledger"]);
        assert_contains(&text.stdout, "interrupted");
    }
}

#[test]
fn restore_run_rolls_back_a_whole_run_and_the_rollback_can_be_undone() {
    let ws = Ws::new();
    ws.write("a.txt", "a before\n");
    ws.write("b.txt", "b before\n");
    ws.plan("    - id: one\n      with: {command: [sh, -c, 'echo a1 > a.txt; echo c1 > c.txt']}\n      outputs: [a.txt, c.txt]\n    - id: two\n      depends_on: [one]\n      with: {command: [sh, -c, 'echo a2 > a.txt; echo b2 > b.txt']}\n      outputs: [a.txt, b.txt]\n");
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let run_id = r.json()["run_id"].as_str().unwrap().to_string();
    assert_eq!(ws.read("a.txt"), "a2\n");
    let listed = ledger(&ws, &["--run", &run_id]);
    let paths: Vec<&str> = listed.iter().map(|r| r["path"].as_str().unwrap()).collect();
    for p in ["a.txt", "b.txt", "c.txt"] {
        assert!(paths.contains(&p), "{paths:?}");
    }

    let r = ws.run_ok(&["restore", "--run", &run_id, "--json"]);
    let report = r.json();
    assert_eq!(ws.read("a.txt"), "a before\n");
    assert_eq!(ws.read("b.txt"), "b before\n");
    // A file the run created is moved into the backups, not deleted.
    assert!(!ws.p("c.txt").exists());
    let c = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "c.txt")
        .unwrap();
    assert_eq!(c["action"], "moved_to_backups");
    let blob = ws.p(&format!(
        ".refiner/backups/{}/{}",
        &blake3::hash(b"c1\n").to_hex()[..2],
        blake3::hash(b"c1\n").to_hex()
    ));
    assert_eq!(std::fs::read(blob).unwrap(), b"c1\n");
    let rollback = report["restore_id"].as_str().unwrap().to_string();
    // Every change of the run, pmpo's own results (the manifest) included.
    let undone = ledger(&ws, &["--run", &rollback]);
    assert_eq!(
        undone.len(),
        listed
            .iter()
            .map(|r| &r["path"])
            .collect::<std::collections::HashSet<_>>()
            .len()
    );
    assert!(
        undone
            .iter()
            .all(|r| r["writer"] == "restore" && r["status"] == "completed")
    );
    assert!(!ws.p("artifact_manifest.json").exists());

    // The rollback is itself a change set: undo it.
    ws.run_ok(&["restore", "--run", &rollback]);
    assert_eq!(ws.read("a.txt"), "a2\n");
    assert_eq!(ws.read("b.txt"), "b2\n");
    assert_eq!(ws.read("c.txt"), "c1\n");
    assert!(ws.p("artifact_manifest.json").is_file());
}

#[test]
fn restore_names_its_mistakes() {
    let ws = Ws::new();
    ws.plan(
        "    - id: w\n      with: {command: [sh, -c, 'echo x > x.txt']}\n      outputs: [x.txt]\n",
    );
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    let r = ws.run_code(2, &["restore", "--run", "no-such-run"]);
    assert_contains(&r.stderr, "no run `no-such-run`");
    ws.run_code(2, &["ledger", "--run", "no-such-run"]);
    let r = ws.run_code(2, &["restore"]);
    assert_contains(&r.stderr, "name a file, or a run");
    ws.run_code(2, &["restore", "../outside.txt"]);
}

#[test]
fn gc_keeps_the_backups_of_interrupted_changes() {
    let ws = Ws::new();
    ws.write("slow.txt", "precious slow\n");
    ws.plan("    - id: slow\n      cache: false\n      with: {command: [sh, -c, 'echo $$ > stage.pid; echo clobbered > slow.txt; exec sleep 30']}\n      outputs: [slow.txt, stage.pid]\n");
    let mut child = ws.spawn(&["execute", "plan.yaml", "-q"]);
    ws.wait_for_text("slow.txt", "clobbered\n");
    child.kill().unwrap();
    child.wait().unwrap();
    // The stage's own process (started by the test's pmpo) is stopped by its id.
    let pid = ws.read("stage.pid").trim().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    // Many later runs of another plan push the killed run out of the kept ones.
    ws.write(
        "other.yaml",
        "specification:\n  artifact_name: t\n  artifact_type: code\nplan:\n  stages:\n    - id: w\n      cache: false\n      with: {command: [sh, -c, 'date +%N > f.txt']}\n      outputs: [f.txt]\n",
    );
    for _ in 0..3 {
        ws.run_ok(&["execute", "other.yaml", "-q"]);
    }
    // The next run on the workspace stored the killed run's intent as interrupted.
    let rows = entries(&ws, "slow.txt");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["state"], "interrupted", "{rows:?}");
    assert_eq!(rows[0]["status"], "interrupted", "{rows:?}");
    let r = ws.run_ok(&["gc", "--keep-runs", "1", "--json"]);
    let j = r.json();
    assert!(j["backups_removed"].as_u64().unwrap() >= 1, "{j}");
    assert_eq!(j["interrupted_backups_kept"], 1, "{j}");
    assert!(j["backups_kept"].as_u64().unwrap() >= 1, "{j}");
    let text = ws.run(&["gc", "--keep-runs", "1"]);
    assert_contains(&text.stdout, "interrupted");
    // The interrupted change is still undoable.
    ws.assert_restores("slow.txt", "precious slow\n");
}

#[test]
fn a_cancelled_stage_that_overwrote_its_output_is_recorded_and_restorable() {
    for sig in ["TERM", "INT"] {
        let ws = Ws::new();
        ws.write("data.txt", "precious\n");
        ws.plan("    - id: w\n      with: {command: [sh, -c, 'echo broken > data.txt; exec sleep 30']}\n      outputs: [data.txt]\n");
        let mut child = bin()
            .args(["execute", "plan.yaml", "-q"])
            .current_dir(ws.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        ws.wait_for_text("data.txt", "broken\n");
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let status = child.wait().unwrap();
        assert!(!status.success(), "{sig}");
        // A cancel completes the entry (the file was changed by a failed attempt).
        let rows = entries(&ws, "data.txt");
        assert_eq!(rows.len(), 1, "{sig}: {rows:?}");
        assert_eq!(rows[0]["status"], "failed", "{sig}: {rows:?}");
        let r = ws.run(&["restore", "data.txt"]);
        assert_eq!(r.code, 0, "{sig}: {}", r.stderr);
        assert_eq!(ws.read("data.txt"), "precious\n", "{sig}");
    }
}

#[test]
fn preview_files_over_existing_ones_are_restorable() {
    let ws = Ws::new();
    ws.write("page.html", "<html><body><p>hi</p></body></html>\n");
    ws.write("previews/p1/preview.html", "my own copy\n");
    // With or without a browser here, the preview writes its page copy first.
    ws.plan("    - id: show\n      tool: preview\n      with: {input: page.html, id: p1, out_dir: previews, chromium: /nonexistent/chromium}\n");
    let _ = ws.run(&["execute", "plan.yaml", "-q"]);
    assert_ne!(ws.read("previews/p1/preview.html"), "my own copy\n");
    let rows = entries(&ws, "previews/p1/preview.html");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["writer"], "show");
    ws.assert_restores("previews/p1/preview.html", "my own copy\n");
}

#[test]
fn a_tool_may_not_write_pmpos_own_files() {
    let ws = Ws::new();
    ws.write("page.txt", "x\n");
    ws.write("data.txt", "precious\n");
    ws.plan("    - id: w\n      with: {command: [sh, -c, 'echo new > data.txt']}\n      outputs: [data.txt]\n");
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    let blob = blake3::hash(b"precious\n").to_hex().to_string();
    let rel = format!(".refiner/backups/{}/{blob}", &blob[..2]);
    // A hostile template stage aims at the only copy of `precious`.
    ws.plan(&format!(
        "    - id: evil\n      tool: template\n      with: {{template: page.txt, output: '{rel}'}}\n"
    ));
    let r = ws.run(&["execute", "plan.yaml"]);
    assert_ne!(r.code, 0);
    let said = format!("{}{}", r.stdout, r.stderr);
    // Refused before anything runs (`pmpo check`), or by the executor.
    assert!(said.contains("pmpo's own"), "{said}");
    assert_eq!(ws.read(&rel), "precious\n");
    ws.assert_restores("data.txt", "precious\n");
}

#[test]
fn restore_never_writes_through_a_link_put_in_place_of_the_file() {
    let ws = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "outside\n").unwrap();
    ws.write("data.txt", "precious\n");
    ws.plan("    - id: w\n      with: {command: [sh, -c, 'echo new > data.txt']}\n      outputs: [data.txt]\n");
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    std::fs::remove_file(ws.p("data.txt")).unwrap();
    std::os::unix::fs::symlink(&victim, ws.p("data.txt")).unwrap();
    let r = ws.run_code(1, &["restore", "data.txt"]);
    assert_contains(&r.stderr, "symbolic link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "outside\n");
}

#[test]
fn backups_are_never_written_through_a_linked_directory() {
    let ws = Ws::new();
    ws.write(
        "data.txt",
        "precious
",
    );
    ws.write("inside/.keep", "");
    // The backups' directory is a link (to a directory inside the workspace).
    std::fs::create_dir_all(ws.p(".refiner")).unwrap();
    std::os::unix::fs::symlink(ws.p("inside"), ws.p(".refiner/backups")).unwrap();
    ws.plan("    - id: w\n      with: {command: [sh, -c, 'echo new > data.txt']}\n      outputs: [data.txt]\n");
    let r = ws.run(&["execute", "plan.yaml"]);
    assert_ne!(r.code, 0);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(said.contains("cannot back up"), "{said}");
    // The stage did not run: the file is as it was, nothing went through the link.
    assert_eq!(ws.read("data.txt"), "precious\n");
    assert_eq!(std::fs::read_dir(ws.p("inside")).unwrap().count(), 1);
}

#[test]
fn files_removed_or_created_under_a_declared_directory_are_ledgered_and_undone() {
    let ws = Ws::new();
    ws.write("out/a.txt", "keep a\n");
    ws.plan("    - id: w\n      with: {command: [sh, -c, 'rm out/a.txt; echo b > out/b.txt']}\n      outputs: [out/]\n");
    let r = ws.run_ok(&["execute", "plan.yaml", "--json"]);
    let run_id = r.json()["run_id"].as_str().unwrap().to_string();
    let a = entries(&ws, "out/a.txt");
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(a[0]["after_blake3"].is_null(), "{a:?}");
    assert_eq!(a[0]["status"], "completed");
    let text = ws.run(&["ledger", "--path", "out/a.txt"]);
    assert_contains(&text.stdout, "(removed)");
    assert_eq!(entries(&ws, "out/b.txt").len(), 1);
    ws.run_ok(&["restore", "--run", &run_id]);
    assert_eq!(ws.read("out/a.txt"), "keep a\n");
    assert!(!ws.p("out/b.txt").exists());
}

/// The user's files (everything outside pmpo's own directories), with content.
fn user_files(ws: &Ws) -> Vec<(String, Vec<u8>)> {
    ws.files()
        .into_iter()
        .filter(|f| {
            !(f.starts_with(".state/") || f.starts_with(".refiner/") || f.starts_with("logs/"))
        })
        .map(|f| {
            let bytes = std::fs::read(ws.p(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

#[test]
fn restore_run_rolls_back_a_killed_run_to_the_files_as_they_were() {
    let ws = Ws::new();
    ws.write("a.txt", "a\n");
    ws.write("out/keep.txt", "keep\n");
    ws.plan("    - id: one\n      cache: false\n      with: {command: [sh, -c, 'echo 1 > a.txt; echo x > out/keep.txt; echo n > out/new1.txt']}\n      outputs: [a.txt, out/]\n    - id: two\n      depends_on: [one]\n      cache: false\n      with: {command: [sh, -c, 'echo 2 > a.txt; rm out/keep.txt; echo n > out/new2.txt; touch two.started; sleep 30']}\n      outputs: [a.txt, out/, two.started]\n");
    let before = user_files(&ws);
    let mut child = ws.spawn(&["execute", "plan.yaml", "-q"]);
    wait_until("`two.started`", Duration::from_secs(60), || {
        ws.p("two.started").exists()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let r = ws.run(&["status", "--json"]);
    let run_id = r.json()["runs"][0]["run_id"].as_str().unwrap().to_string();
    let r = ws.run_ok(&["restore", "--run", &run_id, "--json"]);
    assert_eq!(user_files(&ws), before, "{}", r.stdout);
    // And the rollback itself can be undone: the killed run's files return.
    let id = r.json()["restore_id"].as_str().unwrap().to_string();
    ws.run_ok(&["restore", "--run", &id]);
    assert_eq!(ws.read("a.txt"), "2\n");
    assert_eq!(ws.read("out/new2.txt"), "n\n");
    assert!(!ws.p("out/keep.txt").exists());
}

#[test]
fn a_junit_report_over_a_workspace_file_is_ledgered_and_restorable() {
    let ws = Ws::new();
    ws.write("junit.xml", "my own report\n");
    ws.plan("    - id: w\n      with: {command: [echo, hi]}\n");
    let r = ws.run(&["validate", "plan.yaml", "--junit", "junit.xml"]);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    assert!(
        ws.read("junit.xml").contains("<testsuites"),
        "{}",
        ws.read("junit.xml")
    );
    let rows = entries(&ws, "junit.xml");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["writer"], "validate");
    ws.assert_restores("junit.xml", "my own report\n");
    // Outside the workspace the report is written as before.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = elsewhere.path().join("r.xml");
    let r = ws.run(&["validate", "plan.yaml", "--junit", out.to_str().unwrap()]);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("<testsuites")
    );
}
