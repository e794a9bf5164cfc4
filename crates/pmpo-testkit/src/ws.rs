//! A temporary workspace, a plan in it, and the real `pmpo` binary run there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Ws {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// Fails unless the run of `pmpo ARGS` exited `code`, with the command,
    /// both codes and everything it printed.
    #[track_caller]
    pub fn assert_exit(&self, code: i32, args: &[&str]) {
        assert_eq!(
            self.code,
            code,
            "`pmpo {}` exited {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// The binary in a workspace, with no model settings inherited from the
/// developer's shell (so a test talks only to the endpoints it sets up).
pub fn bin_without_models(dir: &Path) -> Command {
    let mut c = bin();
    for var in [
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_MODEL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_MODEL",
        "PMPO_PROVIDER_CONFIG",
    ] {
        c.env_remove(var);
    }
    c.current_dir(dir);
    c
}

/// The `pmpo` binary cargo built next to the running test or bench
/// (`target/<profile>/pmpo`; cargo builds it before a crate's integration
/// tests and benches). `CARGO_BIN_EXE_pmpo`, when set, names it instead.
pub fn pmpo_exe() -> PathBuf {
    if let Some(p) = std::env::var_os("CARGO_BIN_EXE_pmpo") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let mut dir = exe.parent().expect("the test's directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("pmpo{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "no pmpo binary at {} (run the tests through cargo)",
        bin.display()
    );
    bin
}

/// The `pmpo` binary, without colours.
pub fn bin() -> Command {
    let mut c = Command::new(pmpo_exe());
    c.env("NO_COLOR", "1");
    c
}

impl Default for Ws {
    fn default() -> Self {
        Ws::new()
    }
}

impl Ws {
    pub fn new() -> Ws {
        Ws {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.p(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.p(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// The lines of the stage logs (`logs/execution/<run>.jsonl`, runs in
    /// the order of their ids, which start with their time) that record an
    /// attempt of `stage`, each with its newline.
    pub fn stage_log(&self, stage: &str) -> String {
        let dir = self.p("logs/execution");
        let mut runs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        runs.sort();
        let mut out = String::new();
        for run in runs {
            let text = std::fs::read_to_string(&run).unwrap();
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: a line is not JSON: {e}", run.display()));
                if v["stage"] == stage {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    pub fn read_json(&self, rel: &str) -> serde_json::Value {
        serde_json::from_str(&self.read(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
    }

    /// Writes `plan.yaml` with a standard specification and the given stages block.
    pub fn plan(&self, stages_yaml: &str) -> PathBuf {
        self.write("plan.yaml", &format!("specification:\n  artifact_name: t\n  artifact_type: code\nplan:\n  stages:\n{stages_yaml}"))
    }

    pub fn run(&self, args: &[&str]) -> Run {
        bin()
            .args(args)
            .current_dir(self.path())
            .output()
            .unwrap()
            .into()
    }

    /// Runs `pmpo ARGS` and checks its exit code, failing with the command,
    /// both codes and everything it printed.
    #[track_caller]
    pub fn run_code(&self, code: i32, args: &[&str]) -> Run {
        let r = self.run(args);
        r.assert_exit(code, args);
        r
    }

    /// Runs `pmpo ARGS`, which must succeed.
    #[track_caller]
    pub fn run_ok(&self, args: &[&str]) -> Run {
        self.run_code(0, args)
    }

    /// Starts `pmpo ARGS` in the workspace without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        bin()
            .args(args)
            .current_dir(self.path())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `pmpo {}`: {e}", args.join(" ")))
    }

    /// Waits (60 s at most) until `rel` holds exactly `text`.
    pub fn wait_for_text(&self, rel: &str, text: &str) {
        let p = self.p(rel);
        crate::refine::wait_until(
            &format!("`{rel}` to hold {text:?}"),
            std::time::Duration::from_secs(60),
            || std::fs::read_to_string(&p).unwrap_or_default() == text,
        );
    }

    /// `pmpo restore REL` succeeds, and the file holds `text` again.
    #[track_caller]
    pub fn assert_restores(&self, rel: &str, text: &str) {
        let r = self.run(&["restore", rel]);
        assert_eq!(r.code, 0, "restore {rel}: {}\n{}", r.stdout, r.stderr);
        assert_eq!(self.read(rel), text, "`{rel}` did not come back");
    }

    /// Every file under the workspace, relative, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut out: Vec<String> = walk(self.path())
            .into_iter()
            .map(|p| {
                p.strip_prefix(self.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        out.sort();
        out
    }
}

/// Every file under `dir`, links not followed into.
pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Fails unless `text` contains `needle`, showing both.
#[track_caller]
pub fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

/// Fails unless `value[key]` is a string that contains `needle`.
#[track_caller]
pub fn assert_mentions(value: &serde_json::Value, key: &str, needle: &str) {
    let text = value[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string in {value}"));
    assert!(
        text.contains(needle),
        "`{key}` does not mention {needle:?}: {value}"
    );
}

/// The `validation_outputs[]` entry of a check in execution or validation results.
pub fn validation_of(results: &serde_json::Value, check: &str) -> serde_json::Value {
    results["validation_outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no validation_outputs in {results}"))
        .iter()
        .find(|o| o["check"] == check)
        .unwrap_or_else(|| panic!("no validation output of the {check} check: {results}"))
        .clone()
}

/// `head` followed by `--breaker-threshold THRESHOLD` and, when given,
/// `--breaker-cooldown COOLDOWN`.
pub fn with_breaker(
    head: &[&'static str],
    threshold: &'static str,
    cooldown: Option<&'static str>,
) -> Vec<&'static str> {
    let mut args = head.to_vec();
    args.extend(["--breaker-threshold", threshold]);
    if let Some(c) = cooldown {
        args.extend(["--breaker-cooldown", c]);
    }
    args
}

/// The `stages[]` entry of a stage in execution results.
pub fn stage<'a>(results: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    results["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("no stages in {results}"))
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no stage {id} in {results}"))
}

/// The `errors[]` entry of a stage in execution results.
pub fn error_of(results: &serde_json::Value, stage: &str) -> serde_json::Value {
    results["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["stage"] == stage)
        .unwrap_or_else(|| panic!("no error for stage {stage}: {results}"))
        .clone()
}

/// Whether a Chromium for previews is here (`PMPO_REQUIRE_BROWSER=1` makes
/// its absence a failure instead of a skip).
pub fn have_chromium() -> bool {
    let found = std::env::var_os("PMPO_CHROMIUM").is_some()
        || ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .any(|p| Path::new(p).exists());
    if !found {
        assert!(
            std::env::var("PMPO_REQUIRE_BROWSER").ok().as_deref() != Some("1"),
            "Chromium is required (PMPO_REQUIRE_BROWSER=1) but was not found"
        );
        eprintln!("skipping: Chromium not found");
    }
    found
}
