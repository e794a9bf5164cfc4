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

    /// `pmpo restore REL` succeeds, and the file holds `text` again.
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

fn walk(dir: &Path) -> Vec<PathBuf> {
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
