//! A stage's program named without a `/` is found on the stage's own `PATH`
//! once, then started by its path: what the stage sees and what pmpo
//! records are as before (the name it was given, the `PATH` it set), and a
//! program missing from the stage's `PATH` is "not found" even when pmpo's
//! own `PATH` has it and an earlier stage ran it.

use pmpo_testkit as common;

use common::{Ws, assert_mentions};

/// The tests of this file take turns: one that starts a process while the
/// other has the script it is writing open hands that open file to its
/// child until the child's exec, and running the script then fails with
/// "text file busy".
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_stage_runs_what_its_own_path_finds_under_the_name_it_gave() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let ws = Ws::new();
    ws.write(
        "bin/pmpo-e2e-tool",
        "#!/bin/sh\necho \"tool from bin\" > out/tool.txt\n",
    );
    let tool = ws.p("bin/pmpo-e2e-tool");
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(ws.p("out")).unwrap();
    let bin = ws.p("bin").display().to_string();
    ws.plan(&format!(
        "    - id: a\n      with: {{command: [sh, -c, 'echo $0 > out/a.txt']}}\n      outputs: [out/a.txt]\n\
         \x20   - id: b\n      depends_on: [a]\n      with: {{command: [sh, -c, 'echo $0 > out/b.txt']}}\n      outputs: [out/b.txt]\n\
         \x20   - id: tool\n      depends_on: [b]\n      with: {{command: [pmpo-e2e-tool], env: {{PATH: '{bin}:/usr/bin:/bin'}}}}\n      outputs: [out/tool.txt]\n"
    ));
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Found, then kept: both times the program sees the name it was given.
    assert_eq!(ws.read("out/a.txt"), "sh\n");
    assert_eq!(ws.read("out/b.txt"), "sh\n");
    assert_eq!(ws.read("out/tool.txt"), "tool from bin\n");
}

#[test]
fn a_program_not_on_the_stages_path_is_not_found_though_pmpo_knows_it() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let ws = Ws::new();
    std::fs::create_dir_all(ws.p("empty")).unwrap();
    let empty = ws.p("empty").display().to_string();
    ws.plan(&format!(
        "    - id: first\n      with: {{command: [sh, -c, 'true']}}\n\
         \x20   - id: nope\n      depends_on: [first]\n      with: {{command: [sh, -c, 'true'], env: {{PATH: '{empty}'}}}}\n"
    ));
    let r = ws.run(&["execute", "plan.yaml", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let e = &r.json()["errors"][0];
    assert_eq!(e["kind"], "missing_dependency", "{e}");
    assert_mentions(e, "message", "command not found: `sh`");
}
