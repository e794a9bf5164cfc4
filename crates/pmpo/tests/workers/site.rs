//! What the workers tests share: a workspace with its database, workers and
//! submitters started from the real binary, and the queue's rows.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pmpo_store::pg::PgConn;
use serde_json::{Value, json};

pub fn pmpo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pmpo"))
}

/// A workspace and the database its store and queue live in.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl Site {
    pub fn new(tag: &str) -> Option<Site> {
        let url = pmpo_testkit::pg::fresh_db(tag)?;
        Some(Site::at(url))
    }

    pub fn at(url: String) -> Site {
        let dir = tempfile::tempdir().unwrap();
        Site { dir, url }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = pmpo();
        c.current_dir(self.root())
            .env("PMPO_STORE", &self.url)
            .env_remove("PMPO_WORKER_VERSION_FOR_TESTS")
            .stdin(Stdio::null());
        c
    }

    /// Writes a plan of `stages` (id, depends_on, shell command, outputs).
    pub fn plan(&self, stages: &[(String, Vec<String>, String, Vec<String>)]) -> PathBuf {
        let stages: Vec<Value> = stages
            .iter()
            .map(|(id, deps, cmd, outs)| {
                json!({"id": id, "description": id, "tool": "run", "depends_on": deps,
                       "with": {"command": ["sh", "-c", cmd]}, "outputs": outs})
            })
            .collect();
        let plan = json!({
            "specification": {"artifact_name": "w", "artifact_type": "content",
                "content_type": "direct:text", "intent": "workers", "constraints": []},
            "plan": {"stages": stages}
        });
        let path = self.root().join("plan.yaml");
        std::fs::write(&path, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
        path
    }

    /// Starts a worker; its stdout and stderr go to files named after `name`.
    pub fn worker(&self, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Child {
        let out = std::fs::File::create(self.log(name, "out")).unwrap();
        let err = std::fs::File::create(self.log(name, "err")).unwrap();
        let mut c = self.cmd();
        c.arg("worker").arg("-w").arg(self.root()).args(args);
        for (k, v) in envs {
            c.env(k, v);
        }
        c.stdout(out).stderr(err).spawn().unwrap()
    }

    pub fn log(&self, name: &str, ext: &str) -> PathBuf {
        // Beside the workspace, not in it: the sandbox would see them change.
        self.root().parent().unwrap().join(format!(
            "{}-{name}.{ext}",
            self.root().file_name().unwrap().to_string_lossy()
        ))
    }

    pub fn read_log(&self, name: &str, ext: &str) -> String {
        std::fs::read_to_string(self.log(name, ext)).unwrap_or_default()
    }

    /// Starts `pmpo execute plan.yaml --workers --json`.
    pub fn submit(&self, name: &str, extra: &[&str]) -> Child {
        let out = std::fs::File::create(self.log(name, "out")).unwrap();
        let err = std::fs::File::create(self.log(name, "err")).unwrap();
        self.cmd()
            .args(["execute", "plan.yaml", "--workers", "--json"])
            .args(extra)
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap()
    }

    pub fn db(&self) -> PgConn {
        PgConn::connect(&self.url, Duration::from_secs(30)).unwrap()
    }
}

impl Drop for Site {
    /// A test that failed midway leaves no pmpo behind (a process whose
    /// directory is this workspace); a test that passed leaves no logs.
    fn drop(&mut self) {
        let root = self.root().canonicalize().unwrap_or_default();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cwd == root && String::from_utf8_lossy(&cmd).contains("pmpo") {
                // SAFETY: a pmpo this test started in its own workspace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "logs of the failed test: {}-*.out/err",
                self.root().display()
            );
            return;
        }
        let prefix = format!("{}-", self.root().file_name().unwrap().to_string_lossy());
        for e in std::fs::read_dir(self.root().parent().unwrap())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Every job row: (stage, attempt, state, worker, epoch).
pub fn jobs(db: &PgConn) -> Vec<(String, i64, String, String, i64)> {
    db.query(
        "SELECT stage_id, attempt, state, worker, epoch FROM pmpo_jobs ORDER BY stage_id, attempt",
        vec![],
    )
    .unwrap_or_default()
    .iter()
    .map(|r| {
        (
            r[0].text().unwrap_or_default(),
            r[1].int().unwrap_or_default(),
            r[2].text().unwrap_or_default(),
            r[3].text().unwrap_or_default(),
            r[4].int().unwrap_or_default(),
        )
    })
    .collect()
}

/// Waits (bounded, so a broken build fails rather than hangs) for `cond`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child, killing it if it outlives a generous bound.
pub fn finish(mut c: Child, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = c.kill();
            let _ = c.wait();
            panic!("a pmpo process did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the submitter `sub` (logged as `sub`) to exit 0, then stops
/// the workers.
pub fn succeeds(site: &Site, sub: Child, limit: Duration, workers: Vec<Child>) {
    assert_eq!(finish(sub, limit), 0, "{}", site.read_log("sub", "err"));
    for w in workers {
        stop(w);
    }
}

pub fn stop(mut c: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let _ = finish_ref(&mut c);
}

pub fn finish_ref(c: &mut Child) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(st)) = c.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

/// Whether a process of group `pgid` still runs.
pub fn group_alive(pgid: u32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z"
    })
}

/// `n` independent stages `s00..`, each writing its own directory; each
/// run of a stage leaves `out/ID/pid.$$` (so re-runs can be counted).
pub fn independent(n: usize, sleep: &str) -> Vec<(String, Vec<String>, String, Vec<String>)> {
    (0..n)
        .map(|i| {
            let id = format!("s{i:02}");
            let cmd = format!(
                "mkdir -p out/{id} && echo $$ > out/{id}/pid.$$ && sleep {sleep} && echo {id} > out/{id}/done.txt"
            );
            (id.clone(), vec![], cmd, vec![format!("out/{id}/")])
        })
        .collect()
}

pub fn results(site: &Site, name: &str) -> Value {
    serde_json::from_str(&site.read_log(name, "out")).unwrap_or_else(|e| {
        panic!(
            "the submitter's --json is not JSON ({e}); stderr:\n{}",
            site.read_log(name, "err")
        )
    })
}

/// Each stage completed once: one attempt in the results, one job done.
pub fn assert_each_once(site: &Site, name: &str, n: usize) {
    let r = results(site, name);
    let stages = r["stages"].as_array().unwrap();
    assert_eq!(stages.len(), n);
    for s in stages {
        assert_eq!(s["status"], "COMPLETED", "{s}");
        assert_eq!(s["attempts"], 1, "{s}");
        let id = s["id"].as_str().unwrap();
        let done = site.root().join(format!("out/{id}/done.txt"));
        assert_eq!(
            std::fs::read_to_string(done).unwrap().trim(),
            id,
            "output of {id}"
        );
    }
    let rows = jobs(&site.db());
    assert_eq!(rows.len(), n, "{rows:?}");
    assert!(rows.iter().all(|j| j.2 == "done" && j.1 == 1), "{rows:?}");
}

/// A tiny deterministic generator, so a failing trial can be replayed.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The pid in a worker id `host:pid:start`.
pub fn pid_of(worker: &str) -> Option<i32> {
    worker.split(':').nth(1).and_then(|p| p.parse().ok())
}
