//! Stages confined by the kernel (Landlock), and the detection fallback
//! (forced with the test switch PMPO_SANDBOX_SIMULATE_NO_LANDLOCK): hostile
//! stages, plugins and check commands that overwrite, delete and create files
//! outside their outputs; what still works; opt-outs; `network: false`; bad input.

use pmpo_testkit as common;

use std::path::PathBuf;

use common::{Run, Ws, assert_contains, bin, error_of, stage};
use serde_json::Value;

const SIMULATE: &str = "PMPO_SANDBOX_SIMULATE_NO_LANDLOCK";

/// A workspace outside the system temp directory (granting /tmp to stages
/// would otherwise grant the workspace), with a sibling directory that
/// stands for the rest of the user's files.
struct Box_ {
    ws: Ws,
    outside: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Box_ {
    fn new() -> Box_ {
        let base = env!("CARGO_TARGET_TMPDIR");
        Box_ {
            ws: Ws {
                dir: tempfile::tempdir_in(base).unwrap(),
            },
            outside: tempfile::tempdir_in(base).unwrap(),
            cache: tempfile::tempdir_in(base).unwrap(),
        }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.outside.path().join(name)
    }

    fn run(&self, args: &[&str], detection: bool) -> Run {
        let mut c = bin();
        c.args(args)
            .current_dir(self.ws.path())
            .env("XDG_CACHE_HOME", self.cache.path());
        if detection {
            c.env(SIMULATE, "1");
        } else {
            c.env_remove(SIMULATE);
        }
        c.output().unwrap().into()
    }
}

fn landlock_abi() -> u32 {
    // SAFETY: the version query reads and writes no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if v < 0 { 0 } else { v as u32 }
}

/// Kernel tests need Landlock ABI 3; where it is missing they say so and pass.
fn need_landlock() -> bool {
    let abi = landlock_abi();
    if abi < 3 {
        eprintln!("skipped: this kernel has Landlock ABI {abi}, 3 is needed");
        return false;
    }
    true
}

fn ledger(ws: &Ws) -> Vec<Value> {
    std::fs::read_to_string(ws.p(".state/patch_ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn undeclared_rows(ws: &Ws, stage: &str) -> Vec<String> {
    let mut v: Vec<String> = ledger(ws)
        .into_iter()
        .filter(|r| r["state"] == "undeclared" && r["writer"] == stage)
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// The hostile stage: overwrites, deletes and creates files outside its
/// outputs, inside and outside the workspace, through `..` and a symlink;
/// every command's failure is ignored, so the stage exits 0.
fn hostile_setup(b: &Box_) {
    let ws = &b.ws;
    ws.write("victim.txt", "original\n");
    ws.write("keep/doomed.txt", "keep me\n");
    ws.write("src/main.c", "int main(){}\n");
    std::fs::write(b.out("home.txt"), "outside\n").unwrap();
    std::os::unix::fs::symlink(b.outside.path(), ws.p("link")).unwrap();
    let outside = b.outside.path().display().to_string();
    let name =
        b.ws.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
    ws.plan(&format!(
        "    - id: evil\n      with:\n        command: [sh, -c, 'echo pwned > victim.txt; rm -f keep/doomed.txt; echo new > created.txt; echo pwned > {outside}/home.txt; echo pwned > ../{name}/src/main.c; echo pwned > link/via-link.txt; mkdir -p out && echo ok > out/result.txt; true']\n      outputs: [out/result.txt]\n"
    ));
}

fn assert_untouched(b: &Box_) {
    let ws = &b.ws;
    assert_eq!(ws.read("victim.txt"), "original\n");
    assert_eq!(ws.read("keep/doomed.txt"), "keep me\n");
    assert_eq!(ws.read("src/main.c"), "int main(){}\n");
    assert!(!ws.p("created.txt").exists());
    assert_eq!(
        std::fs::read_to_string(b.out("home.txt")).unwrap(),
        "outside\n"
    );
    assert!(!b.out("via-link.txt").exists());
}

#[test]
fn landlock_changes_nothing_outside_the_outputs() {
    if !need_landlock() {
        return;
    }
    let b = Box_::new();
    hostile_setup(&b);
    let r = b.run(&["execute", "plan.yaml", "--json"], false);
    // The refused writes changed nothing and the stage ignored them: it passes.
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_untouched(&b);
    assert_eq!(b.ws.read("out/result.txt"), "ok\n");
    let res = r.json();
    let mode = res["sandbox"].as_str().unwrap();
    assert!(mode.starts_with("landlock ABI "), "{mode}");
    assert_eq!(stage(&res, "evil")["sandbox"], mode);
    assert!(undeclared_rows(&b.ws, "evil").is_empty());
}

#[test]
fn landlock_stage_failing_on_a_refused_write_is_an_undeclared_write() {
    if !need_landlock() {
        return;
    }
    let b = Box_::new();
    b.ws.write("victim.txt", "original\n");
    b.ws.plan(
        "    - id: strict\n      with: {command: [sh, -c, 'set -e; echo pwned > victim.txt']}\n",
    );
    let r = b.run(&["execute", "plan.yaml", "--json"], false);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let e = error_of(&r.json(), "strict");
    assert_eq!(e["kind"], "undeclared_write", "{e}");
    assert!(e["message"].as_str().unwrap().contains("victim.txt"), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("outputs:"), "{e}");
    assert!(
        e["hint"].as_str().unwrap().contains("sandbox: false"),
        "{e}"
    );
    assert_eq!(b.ws.read("victim.txt"), "original\n");
}

#[test]
fn detection_records_and_fails_every_undeclared_change() {
    let b = Box_::new();
    hostile_setup(&b);
    let r = b.run(&["execute", "plan.yaml", "--json"], true);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let res = r.json();
    assert_eq!(res["sandbox"], "detection");
    let s = stage(&res, "evil");
    assert_eq!(s["sandbox"], "detection");
    let e = error_of(&res, "evil");
    assert_eq!(e["kind"], "undeclared_write", "{e}");
    let msg = e["message"].as_str().unwrap();
    for p in ["victim.txt", "keep/doomed.txt", "created.txt", "src/main.c"] {
        assert!(msg.contains(p), "{p} not named: {msg}");
    }
    // Every change inside the workspace is in the ledger, marked undeclared.
    assert_eq!(
        undeclared_rows(&b.ws, "evil"),
        vec!["created.txt", "keep/doomed.txt", "src/main.c", "victim.txt"]
    );
    assert_eq!(
        s["undeclared"],
        serde_json::json!(["created.txt", "keep/doomed.txt", "src/main.c", "victim.txt"])
    );
    // The declared output is not among them.
    assert!(!msg.contains("out/result.txt"));
    // Said once per run.
    assert_eq!(
        r.stderr.matches("fall back to detection").count(),
        1,
        "{}",
        r.stderr
    );
    // The ledger says what restore cannot do for such a file.
    let rs = b.run(&["restore", "victim.txt"], true);
    assert_ne!(rs.code, 0);
    assert_contains(&rs.stderr, "outside its declared outputs");
}

#[test]
fn outputs_scratch_temp_devices_and_cache_still_work() {
    for detection in [false, true] {
        if !detection && !need_landlock() {
            continue;
        }
        let b = Box_::new();
        let tmp = std::env::temp_dir().join(format!(
            "pmpo-sandbox-test-{}-{detection}",
            std::process::id()
        ));
        b.ws.write("gen/old.txt", "old\n");
        // The system temp directory is granted unless it holds the workspace
        // (where this checkout itself lies under it).
        let sys_tmp = std::fs::canonicalize(std::env::temp_dir()).unwrap();
        let in_tmp = std::fs::canonicalize(b.ws.path())
            .unwrap()
            .starts_with(&sys_tmp);
        let tmp_write = if in_tmp {
            String::new()
        } else {
            format!("echo s > {tmp}; rm {tmp};", tmp = tmp.display())
        };
        b.ws.plan(&format!(
            "    - id: ok\n      with:\n        command: [sh, -c, 'set -e; mkdir -p out/deep; echo a > out/deep/a.txt; echo b > gen/new.txt; echo c > gen/old.txt; echo t > \"$TMPDIR/x\"; cat \"$TMPDIR/x\"; {tmp_write} echo n > /dev/null; mkdir -p \"$XDG_CACHE_HOME/tool\"; echo c > \"$XDG_CACHE_HOME/tool/c\"; echo z > pics-1.png']\n        env_passthrough: [XDG_CACHE_HOME]\n      outputs: [out/deep/a.txt, gen, 'pics-*.png']\n"
        ));
        let r = b.run(&["execute", "plan.yaml", "--json"], detection);
        assert_eq!(r.code, 0, "detection={detection}: {}", r.stderr);
        assert_eq!(b.ws.read("out/deep/a.txt"), "a\n");
        assert_eq!(b.ws.read("gen/old.txt"), "c\n");
        assert_eq!(
            std::fs::read_to_string(b.cache.path().join("tool/c")).unwrap(),
            "c\n"
        );
        // The scratch directory is gone after the stage.
        let st = stage(&r.json(), "ok").clone();
        assert!(st["undeclared"].is_null(), "{st}");
    }
}

#[test]
fn sandbox_false_and_no_sandbox_opt_out_and_are_recorded() {
    let b = Box_::new();
    b.ws.write("victim.txt", "original\n");
    b.ws.plan("    - id: free\n      sandbox: false\n      with: {command: [sh, -c, 'echo changed > victim.txt']}\n");
    for detection in [false, true] {
        let r = b.run(&["execute", "plan.yaml", "--json", "--force"], detection);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(stage(&r.json(), "free")["sandbox"], "off");
    }
    assert_eq!(b.ws.read("victim.txt"), "changed\n");

    b.ws.write("victim.txt", "original\n");
    b.ws.plan("    - id: confined\n      with: {command: [sh, -c, 'echo changed > victim.txt']}\n");
    for detection in [false, true] {
        let r = b.run(
            &["execute", "plan.yaml", "--json", "--force", "--no-sandbox"],
            detection,
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        let res = r.json();
        assert_eq!(res["sandbox"], "off");
        assert_eq!(stage(&res, "confined")["sandbox"], "off");
        assert!(!r.stderr.contains("fall back to detection"));
    }
    assert_eq!(b.ws.read("victim.txt"), "changed\n");
}

fn connect_plan(b: &Box_, port: u16, network: bool) {
    b.ws.plan(&format!(
        "    - id: net\n{}      with:\n        language: python\n        code: |\n          import socket\n          open('ran.txt', 'w').write('1')\n          socket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n      outputs: [ran.txt]\n",
        if network { "" } else { "      network: false\n" }
    ));
}

#[test]
fn network_false_blocks_tcp_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let b = Box_::new();
    if landlock_abi() >= 4 {
        connect_plan(&b, port, true);
        let r = b.run(&["execute", "plan.yaml", "--json"], false);
        assert_eq!(r.code, 0, "{}", r.stderr);
        connect_plan(&b, port, false);
        let r = b.run(&["execute", "plan.yaml", "--json", "--force"], false);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let e = error_of(&r.json(), "net");
        assert!(
            e["message"].as_str().unwrap().contains("ermission denied")
                || e["message"].as_str().unwrap().contains("PermissionError"),
            "{e}"
        );
        // Also with sandbox: false (files free, network still closed).
        b.ws.plan(&format!(
            "    - id: net\n      network: false\n      sandbox: false\n      with: {{command: [python3, -c, 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=5)']}}\n"
        ));
        let r = b.run(&["execute", "plan.yaml", "--json", "--force"], false);
        assert_eq!(r.code, 1, "{}", r.stderr);
    } else {
        eprintln!("kernel part skipped: Landlock ABI {} < 4", landlock_abi());
    }
    // Where it cannot be enforced the stage is refused, never run unconfined.
    std::fs::remove_file(b.ws.p("ran.txt")).ok();
    connect_plan(&b, port, false);
    let r = b.run(&["execute", "plan.yaml", "--json", "--force"], true);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let e = error_of(&r.json(), "net");
    assert_eq!(e["kind"], "network_unenforceable", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("was not run"),
        "{e}"
    );
    assert!(!b.ws.p("ran.txt").exists(), "the stage ran");
    drop(listener);
}

fn plugin(ws: &Ws, name: &str, body: &str) {
    let p = ws.write(&format!("plugins/{name}"), &format!("#!/bin/sh\n{body}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_plugin_that_writes_outside_is_confined_or_reported() {
    for detection in [false, true] {
        if !detection && !need_landlock() {
            continue;
        }
        let b = Box_::new();
        b.ws.write("victim.txt", "original\n");
        plugin(
            &b.ws,
            "sneaky",
            "cat >/dev/null; echo pwned > \"$PMPO_WORKSPACE/victim.txt\"; mkdir -p \"$PMPO_WORKSPACE/out\"; echo made > \"$PMPO_WORKSPACE/out/made.txt\"; echo '{\"success\": true}'",
        );
        b.ws.plan("    - id: p\n      tool: plugin:sneaky\n      outputs: [out/made.txt]\n");
        let r = b.run(&["execute", "plan.yaml", "--json"], detection);
        assert_eq!(b.ws.read("out/made.txt"), "made\n");
        if detection {
            assert_eq!(r.code, 1, "{}", r.stderr);
            assert_eq!(error_of(&r.json(), "p")["kind"], "undeclared_write");
            assert_eq!(undeclared_rows(&b.ws, "p"), vec!["victim.txt"]);
        } else {
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert_eq!(b.ws.read("victim.txt"), "original\n");
            // A new output at the top of the workspace can only be granted
            // through the workspace itself: detection watches it then.
            b.ws.plan(
                "    - id: p\n      tool: plugin:sneaky\n      outputs: [out/made.txt, top.txt]\n",
            );
            let r = b.run(&["execute", "plan.yaml", "--json"], false);
            assert_eq!(r.code, 1, "{}", r.stderr);
            assert_eq!(error_of(&r.json(), "p")["kind"], "undeclared_write");
            assert_eq!(undeclared_rows(&b.ws, "p"), vec!["victim.txt"]);
        }
    }
}

fn check_plan(ws: &Ws, writes: Option<&str>) {
    ws.plan(&format!(
        "    - id: s\n      with: {{command: [sh, -c, 'echo ok > o.txt']}}\n      outputs: [o.txt]\n      validate:\n        - check: command\n          with:\n            command: [sh, -c, 'echo built > build.log']\n{}",
        writes
            .map(|w| format!("            writes: [{w}]\n"))
            .unwrap_or_default()
    ));
}

fn check_of(res: &Value) -> Value {
    common::validation_of(res, "command")
}

#[test]
fn check_commands_write_only_their_writes_list() {
    for detection in [false, true] {
        if !detection && !need_landlock() {
            continue;
        }
        let b = Box_::new();
        check_plan(&b.ws, None);
        let r = b.run(&["execute", "plan.yaml", "--json"], detection);
        assert_eq!(r.code, 1, "detection={detection}: {}", r.stderr);
        let c = check_of(&r.json());
        assert_eq!(c["status"], "failed", "{c}");
        let ev = c["evidence"].to_string();
        assert!(ev.contains("build.log"), "{c}");
        assert!(ev.contains("undeclared"), "{c}");
        if detection {
            assert!(b.ws.p("build.log").exists());
        } else {
            assert!(!b.ws.p("build.log").exists());
        }
        std::fs::remove_file(b.ws.p("build.log")).ok();
        check_plan(&b.ws, Some("build.log"));
        let r = b.run(&["execute", "plan.yaml", "--json", "--force"], detection);
        assert_eq!(r.code, 0, "detection={detection}: {}", r.stderr);
        assert_eq!(b.ws.read("build.log"), "built\n");
    }
}

#[test]
fn bad_outputs_get_clear_errors() {
    let b = Box_::new();
    // An output that is a symlink leading out of the workspace.
    std::fs::write(b.out("secret.txt"), "secret\n").unwrap();
    std::os::unix::fs::symlink(b.out("secret.txt"), b.ws.p("report.txt")).unwrap();
    b.ws.plan("    - id: s\n      with: {command: [sh, -c, 'echo pwned > report.txt']}\n      outputs: [report.txt]\n");
    for detection in [false, true] {
        let r = b.run(&["execute", "plan.yaml", "--json", "--force"], detection);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let e = error_of(&r.json(), "s");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("outside the workspace"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(b.out("secret.txt")).unwrap(),
            "secret\n"
        );
    }
    // Globs that match the workspace's own state, the root, `/`.
    for bad in ["'*'", "'**'", "'.state/*'", "'.s*/db'", "/", "."] {
        b.ws.plan(&format!(
            "    - id: s\n      with: {{command: [echo]}}\n      outputs: [{bad}]\n"
        ));
        let r = b.run(&["execute", "plan.yaml"], false);
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("output"), "{bad}: {}", r.stderr);
    }
}

#[test]
fn a_stage_deleting_its_own_declared_directory_loses_nothing() {
    for detection in [false, true] {
        if !detection && !need_landlock() {
            continue;
        }
        let b = Box_::new();
        b.ws.write("gen/a.txt", "a\n");
        b.ws.plan(
            "    - id: s\n      with: {command: [sh, -c, 'rm -rf gen']}\n      outputs: [gen]\n",
        );
        let r = b.run(&["execute", "plan.yaml", "--json"], detection);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let e = error_of(&r.json(), "s");
        let kind = e["kind"].as_str().unwrap();
        assert!(
            kind == "undeclared_write" || kind == "missing_output",
            "{e}"
        );
        // The file it removed was a declared output: kept before the stage.
        let rs = b.run(&["restore", "gen/a.txt"], detection);
        assert_eq!(rs.code, 0, "{}{}", rs.stdout, rs.stderr);
        assert_eq!(b.ws.read("gen/a.txt"), "a\n");
    }
}

#[test]
fn parallel_stages_see_each_others_outputs_as_declared() {
    let b = Box_::new();
    b.ws.plan("    - id: a\n      with: {command: [sh, -c, 'sleep 0.3; echo a > a.txt']}\n      outputs: [a.txt]\n    - id: b\n      with: {command: [sh, -c, 'echo b > b.txt; sleep 0.6; echo x > stray.txt']}\n      outputs: [b.txt]\n");
    let r = b.run(
        &[
            "execute",
            "plan.yaml",
            "--json",
            "--jobs",
            "2",
            "--keep-going",
        ],
        true,
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let res = r.json();
    assert_eq!(stage(&res, "a")["status"], "COMPLETED", "{res}");
    assert_eq!(undeclared_rows(&b.ws, "b"), vec!["stray.txt"]);
}

/// Every `execution_results.json` a refinement left, wherever it keeps them.
fn all_results(dir: &std::path::Path, out: &mut Vec<Value>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_results(&p, out);
        } else if p.file_name().is_some_and(|n| n == "execution_results.json") {
            out.push(serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap());
        }
    }
}

#[test]
fn refine_runs_its_stages_confined_unless_no_sandbox() {
    const LOGO: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><circle cx="32" cy="32" r="28" fill="#38bdf8"/></svg>"##;
    for (flag, want) in [(None, "confined"), (Some("--no-sandbox"), "off")] {
        let b = Box_::new();
        b.ws.write("brand/logo.svg", LOGO);
        let mut args = vec![
            "refine",
            "acme",
            "--type",
            "logo",
            "--input",
            "brand/logo.svg",
            "--offline",
        ];
        args.extend(flag);
        let r = b.run(&args, true);
        assert_eq!(r.code, 0, "{flag:?}: {}", r.stderr);
        let mut found = Vec::new();
        all_results(b.ws.path(), &mut found);
        assert!(!found.is_empty(), "no execution results");
        for res in found {
            let mode = res["sandbox"].as_str().unwrap();
            if want == "off" {
                assert_eq!(mode, "off");
            } else {
                assert_eq!(mode, "detection");
            }
        }
    }
}

/// A new output in a folder that holds other files: Landlock grants the
/// folder, and the kernel's file events watch its other files. Overwriting,
/// deleting or adding one of them is recorded `undeclared` and fails the
/// stage; the declared output and a temporary file made and removed again
/// are not. Many stages adding a file to one folder stay cheap (the events
/// cost what a stage changes, not what the folder holds).
#[test]
fn a_granted_folders_other_files_are_watched_under_landlock() {
    if !need_landlock() {
        return;
    }
    let b = Box_::new();
    b.ws.write("out/other.txt", "other\n");
    b.ws.write("out/old.txt", "old\n");
    b.ws.write("out/sub/deep.txt", "deep\n");
    b.ws.plan("    - id: w\n      with: {command: [sh, -c, 'echo new > out/new.txt; echo t > out/tmp; rm out/tmp; echo x >> out/other.txt; rm out/old.txt; echo y > out/sub/deep.txt; echo z > out/extra.txt']}\n      outputs: [out/new.txt]\n");
    let r = b.run(&["execute", "plan.yaml", "--json"], false);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(error_of(&r.json(), "w")["kind"], "undeclared_write");
    assert_eq!(
        undeclared_rows(&b.ws, "w"),
        vec![
            "out/extra.txt",
            "out/old.txt",
            "out/other.txt",
            "out/sub/deep.txt"
        ]
    );
    // Only declared files: passes, as many times as there are stages.
    let stages: String = (0..50)
        .map(|i| format!("    - id: s{i}\n      with: {{command: [sh, -c, 'echo {i} > out/n{i}.txt']}}\n      outputs: [out/n{i}.txt]\n"))
        .collect();
    b.ws.plan(&stages);
    let r = b.run(&["execute", "plan.yaml", "--json"], false);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(b.ws.read("out/n49.txt"), "49\n");
}

/// A stage's scratch directory (its TMPDIR) is lent to the next stage only
/// empty, and only while it is still the directory pmpo made: a stage that
/// left files there, or replaced it with a link to somewhere else, gives the
/// next stage neither its files nor that place.
#[test]
fn a_scratch_directory_is_lent_again_only_empty_and_as_made() {
    for detection in [false, true] {
        if !detection && !need_landlock() {
            continue;
        }
        let b = Box_::new();
        let outside = b.outside.path().display().to_string();
        b.ws.plan(&format!(
            "    - id: leaves\n      with: {{command: [sh, -c, 'echo left > \"$TMPDIR/left\"; echo a > out/a.txt']}}\n      outputs: [out/a.txt]\n\
             \x20   - id: looks\n      depends_on: [leaves]\n      with: {{command: [sh, -c, 'ls -A \"$TMPDIR\" > out/seen.txt']}}\n      outputs: [out/seen.txt]\n\
             \x20   - id: swaps\n      depends_on: [looks]\n      with: {{command: [sh, -c, 'rm -rf \"$TMPDIR\" && ln -s {outside} \"$TMPDIR\" && echo s > out/s.txt']}}\n      outputs: [out/s.txt]\n\
             \x20   - id: writes\n      depends_on: [swaps]\n      with: {{command: [sh, -c, 'echo w > \"$TMPDIR/f\"; ls {outside} > out/w.txt']}}\n      outputs: [out/w.txt]\n"
        ));
        std::fs::create_dir_all(b.ws.p("out")).unwrap();
        std::fs::write(b.out("precious"), "keep\n").unwrap();
        // A temp directory of its own, beside the workspace: the system's
        // may hold the workspace (a checkout under /tmp) and is then not
        // granted, so no stage could swap its scratch directory there.
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let mut c = bin();
        c.args(["execute", "plan.yaml", "--json"])
            .current_dir(b.ws.path())
            .env("TMPDIR", tmp.path())
            .env("XDG_CACHE_HOME", b.cache.path());
        if detection {
            c.env(SIMULATE, "1");
        } else {
            c.env_remove(SIMULATE);
        }
        let r: Run = c.output().unwrap().into();
        let what = format!("detection {detection}: {}", r.stderr);
        assert_eq!(r.code, 0, "{what}");
        assert_eq!(b.ws.read("out/seen.txt"), "", "{what}");
        // What the last stage saw there: nothing it wrote through the link.
        assert_eq!(b.ws.read("out/w.txt"), "precious\n", "{what}");
        // Nor was the place the link names emptied as if it were the scratch directory.
        assert_eq!(
            std::fs::read_to_string(b.out("precious")).unwrap(),
            "keep\n",
            "{what}"
        );
    }
}
