//! One write path: outside the store crate (`crates/pmpo-store/src`), no
//! source file opens, replaces, renames, copies or removes a file itself.
//! Every such call goes through the store (confined, atomic, backed up and
//! ledgered for the user's files). The few exceptions are listed below, each
//! with the reason; anything else found fails this test, naming file and line.

use std::path::{Path, PathBuf};

/// Calls that write to, create, move or remove files.
const RAW_WRITES: &[&str] = &[
    "fs::write(",
    "File::create(",
    "File::create_new(",
    "File::options(",
    "OpenOptions",
    "fs::rename(",
    "fs::copy(",
    "remove_file(",
    "remove_dir(",
    "remove_dir_all(",
    "fs::create_dir(",
    "fs::create_dir_all(",
    "set_permissions(",
    "hard_link(",
    "fs::symlink(",
    "set_len(",
];

/// (file, call, why it may write without the store).
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "crates/pmpo-sandbox/src/policy.rs",
        "fs::create_dir(",
        "makes the missing directories of a stage's new outputs (directories only, inside the workspace, checked by the policy) so that the kernel rule is on them and not on the workspace",
    ),
    (
        "crates/pmpo-sandbox/src/policy.rs",
        "fs::create_dir_all(",
        "the same directories, for a glob's directory (directories only, inside the workspace)",
    ),
    (
        "crates/pmpo-sandbox/src/policy.rs",
        "remove_dir(",
        "removes again the directories it made when the stage left them empty (remove_dir never removes content)",
    ),
    (
        "crates/pmpo-engine/src/sandbox.rs",
        "remove_dir_all(",
        "empties a stage's scratch directory (its TMPDIR, in the system temp dir, outside any workspace) before it is lent to the next stage",
    ),
    (
        "crates/pmpo-engine/src/sandbox.rs",
        "remove_file(",
        "the same: files a stage left in its scratch directory in the system temp dir",
    ),
    (
        "crates/pmpo-process/src/capture.rs",
        "File::create(",
        "`Spill::to_path`, a spill file at a path the caller names (the runner's own tests); pmpo's tools pass Workspace::create_stream instead",
    ),
    (
        "crates/pmpo-tools/src/preview/browser.rs",
        "fs::write(",
        "the browser profile lives in the system temp dir, outside any workspace",
    ),
    (
        "crates/pmpo-tools/src/preview/browser.rs",
        "remove_dir_all(",
        "sweeps dead browser profiles in the system temp dir, outside any workspace",
    ),
    (
        "crates/pmpo-tools/src/preview/browser.rs",
        "File::create(",
        "the browser's log file in its profile in the system temp dir, outside any workspace",
    ),
    (
        "crates/pmpo/src/validate_cmd.rs",
        "fs::create_dir_all(",
        "`validate --junit PATH` outside the workspace (a path the user names, anywhere); inside it goes through Workspace::write_file",
    ),
    (
        "crates/pmpo/src/validate_cmd.rs",
        "fs::write(",
        "`validate --junit PATH` outside the workspace (a path the user names, anywhere); inside it goes through Workspace::write_file",
    ),
    (
        "crates/pmpo/src/validate_cmd.rs",
        "fs::rename(",
        "`validate --junit PATH` outside the workspace (a path the user names, anywhere); inside it goes through Workspace::write_file",
    ),
    (
        "crates/pmpo-testkit/src/ws.rs",
        "fs::write(",
        "the test kit writes a test's fixtures into its own temporary workspace (never shipped)",
    ),
    (
        "crates/pmpo-testkit/src/ws.rs",
        "fs::create_dir_all(",
        "the folders of those fixtures, in the test's temporary workspace",
    ),
    (
        "crates/pmpo/src/validate_cmd.rs",
        "remove_file(",
        "`validate --junit PATH`: removes its own temporary file after a failed rename",
    ),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") && !is_test_module(&p) {
            out.push(p);
        }
    }
}

/// The code of a file without its unit tests (an inline
/// `#[cfg(test)] mod tests { ... }` at its end), which write into their own
/// temporary directories. A `mod tests;` declaration cuts nothing: the code
/// after it is still the file's own.
fn without_tests(text: &str) -> &str {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == "#[cfg(test)]" {
            let rest = text[at + line.len()..].trim_start();
            if rest.starts_with("mod tests") && !rest.starts_with("mod tests;") {
                return &text[..at];
            }
        }
        at += line.len();
    }
    text
}

/// A unit-test module in a file of its own (`src/**/tests.rs`, declared
/// `#[cfg(test)] mod tests;`): test code only.
fn is_test_module(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "tests.rs")
}

#[test]
fn nothing_outside_the_store_writes_files_itself() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        let src = krate.path().join("src");
        if src.is_dir() && krate.file_name() != "pmpo-store" {
            sources(&src, &mut files);
        }
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut found = Vec::new();
    let mut used = vec![false; ALLOWED.len()];
    for file in &files {
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in without_tests(&text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for call in RAW_WRITES {
                if !code.contains(call) {
                    continue;
                }
                // Options that only read (`open_own` of a file to read).
                if *call == "OpenOptions"
                    && code.contains(".read(true)")
                    && !["write(", "append(", "create(", "create_new(", "truncate("]
                        .iter()
                        .any(|w| code.contains(w))
                {
                    continue;
                }
                match ALLOWED.iter().position(|(f, c, _)| *f == rel && c == call) {
                    Some(i) => used[i] = true,
                    None => found.push(format!("{rel}:{}: `{call}` in `{}`", n + 1, line.trim())),
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "files written outside the store (use Workspace::write_file / write_recorded for the user's files, \
         the *_own functions for pmpo's own, or add an entry with its reason to ALLOWED):\n{}",
        found.join("\n")
    );
    // An allowance that no longer matches anything is stale: remove it.
    let stale: Vec<String> = ALLOWED
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|((f, c, _), _)| format!("{f}: `{c}`"))
        .collect();
    assert!(stale.is_empty(), "stale allowances:\n{}", stale.join("\n"));
}

#[test]
fn the_scan_finds_a_raw_write() {
    // The scanner itself is not blind: a raw write is found, a test module is not scanned.
    let code = "fn f() { std::fs::write(\"x\", b\"\").unwrap(); }\n#[cfg(test)]\nmod tests { fn g() { std::fs::remove_file(\"y\"); } }\n";
    let kept = without_tests(code);
    assert!(kept.contains("fs::write("));
    assert!(!kept.contains("remove_file("));
}
