//! `pmpo execute --workers` and `pmpo worker`: the real binary, a real
//! PostgreSQL (skipped with a reason when the tests have none, a failure
//! under PMPO_REQUIRE_PG), real processes killed and stopped.
//!
//! Short leases (1-2 s) keep the file fast; nothing here asserts on time:
//! waits are bounded only so that a broken build fails instead of hanging.

#[path = "workers/site.rs"]
mod site;

use std::process::{Child, Stdio};
use std::time::Duration;

use pmpo_store::pg::queue;
use serde_json::{Value, json};
use site::*;

#[test]
fn one_worker_runs_a_plan_with_dependencies() {
    let Some(site) = Site::new("workers_one") else {
        return;
    };
    let mut stages = independent(4, "0.05");
    stages[2].1 = vec!["s00".into(), "s01".into()];
    stages[3].1 = vec!["s02".into()];
    site.plan(&stages);
    let w = site.worker("w1", &["--lease", "2s"], &[]);
    let sub = site.submit("sub", &[]);
    assert_eq!(
        finish(sub, Duration::from_secs(60)),
        0,
        "{}",
        site.read_log("sub", "err")
    );
    stop(w);
    assert_each_once(&site, "sub", 4);
    let lines = site.read_log("w1", "out");
    assert_eq!(lines.lines().count(), 4, "one line per stage:\n{lines}");
    assert!(lines.contains("stage s03 of run"), "{lines}");
    // The stage log says which worker ran each attempt.
    let run = results(&site, "sub")["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let log =
        std::fs::read_to_string(site.root().join(format!("logs/execution/{run}.jsonl"))).unwrap();
    let worker = jobs(&site.db())[0].3.clone();
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["invocation"]["worker"], worker.as_str(), "{line}");
    }
}

#[test]
fn four_workers_share_a_plan_and_each_stage_runs_once() {
    let Some(site) = Site::new("workers_four") else {
        return;
    };
    site.plan(&independent(12, "0.3"));
    let ws: Vec<Child> = (0..4)
        .map(|i| site.worker(&format!("w{i}"), &["--lease", "2s"], &[]))
        .collect();
    let sub = site.submit("sub", &[]);
    succeeds(&site, sub, Duration::from_secs(90), ws);
    assert_each_once(&site, "sub", 12);
    let workers: std::collections::BTreeSet<String> =
        jobs(&site.db()).into_iter().map(|j| j.3).collect();
    assert!(workers.len() >= 2, "the stages were shared: {workers:?}");
    // Each stage's command ran once: one pid file each.
    for i in 0..12 {
        let n = std::fs::read_dir(site.root().join(format!("out/s{i:02}")))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("pid."))
            })
            .count();
        assert_eq!(n, 1, "stage s{i:02} ran {n} times");
    }
}

#[test]
fn kill_9_of_workers_mid_stage_loses_nothing_and_reruns_nothing_completed() {
    let Some(site) = Site::new("workers_kill") else {
        return;
    };
    let seed = std::env::var("PMPO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000
        });
    eprintln!("seed={seed} (PMPO_SEED={seed} replays the choices)");
    let mut rng = Lcg(seed);
    const TRIALS: usize = 20;
    site.plan(&independent(TRIALS, "0.5"));
    let mut workers: Vec<Child> = (0..2)
        .map(|i| site.worker(&format!("w{i}"), &["--lease", "1s"], &[]))
        .collect();
    let sub = site.submit("sub", &[]);
    let db = site.db();
    let mut done_before: Vec<(String, i64)> = Vec::new();
    let mut killed_groups = Vec::new();
    let mut targeted = std::collections::BTreeSet::new();
    for trial in 0..TRIALS {
        // The stages running now, not yet chosen: the RNG picks one and a moment.
        let mut running = Vec::new();
        wait_for("a running stage", Duration::from_secs(60), || {
            running = jobs(&db)
                .into_iter()
                .filter(|j| j.2 == "claimed" && !targeted.contains(&j.0))
                .collect();
            let all = jobs(&db);
            !running.is_empty() || (all.len() == TRIALS && all.iter().all(|j| j.2 == "done"))
        });
        if running.is_empty() {
            eprintln!("seed={seed} trial {trial}: every stage is done already");
            break;
        }
        let pick = running[rng.below(running.len() as u64) as usize].clone();
        let delay = Duration::from_millis(rng.below(400));
        targeted.insert(pick.0.clone());
        std::thread::sleep(delay);
        for j in jobs(&db).into_iter().filter(|j| j.2 == "done") {
            done_before.push((j.0, j.4));
        }
        let Some(pid) = pid_of(&pick.3) else { continue };
        let dir = site.root().join(format!("out/{}", pick.0));
        let pgids: Vec<u32> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_prefix("pid.")
                            .and_then(|p| p.parse().ok())
                    })
                    .collect()
            })
            .unwrap_or_default();
        // SAFETY: a worker process this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        eprintln!(
            "seed={seed} trial {trial}: killed worker {} during {} after {delay:?}",
            pick.3, pick.0
        );
        killed_groups.extend(pgids);
        if let Some(i) = workers.iter().position(|w| w.id() as i32 == pid) {
            let mut dead = workers.remove(i);
            let _ = dead.wait();
        }
        workers.push(site.worker(&format!("r{trial}"), &["--lease", "1s"], &[]));
    }
    assert_eq!(
        finish(sub, Duration::from_secs(120)),
        0,
        "seed={seed}: {}",
        site.read_log("sub", "err")
    );
    for w in workers {
        stop(w);
    }
    assert_each_once(&site, "sub", TRIALS);
    // No completed stage was claimed again: its epoch did not move.
    let end = jobs(&db);
    for (stage, epoch) in &done_before {
        let now = end.iter().find(|j| &j.0 == stage).unwrap();
        assert_eq!(
            now.4, *epoch,
            "seed={seed}: completed stage {stage} re-claimed"
        );
    }
    // The killed workers' stage processes died with them (the guard).
    for g in killed_groups {
        wait_for(
            &format!("seed={seed}: group {g} to be gone"),
            Duration::from_secs(10),
            || !group_alive(g),
        );
    }
}

#[test]
fn a_stage_dies_with_its_worker() {
    let Some(site) = Site::new("workers_pdeath") else {
        return;
    };
    // Long on the first run; quick on the run that takes it over.
    let cmd = "mkdir -p out/k && echo $$ > out/k/pid.$$ && if [ -e out/k/started ]; then echo k > out/k/done.txt; else touch out/k/started; sleep 30; echo late > out/k/done.txt; fi";
    site.plan(&[("k".into(), vec![], cmd.into(), vec!["out/k/".into()])]);
    let mut a = site.worker("a", &["--lease", "1s"], &[]);
    let sub = site.submit("sub", &[]);
    let pid_file = || {
        std::fs::read_dir(site.root().join("out/k"))
            .ok()?
            .flatten()
            .find_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix("pid.")
                    .and_then(|p| p.parse::<u32>().ok())
            })
    };
    wait_for("the stage to start", Duration::from_secs(30), || {
        pid_file().is_some()
    });
    let pgid = pid_file().unwrap();
    assert!(group_alive(pgid));
    a.kill().unwrap();
    let _ = a.wait();
    wait_for(
        "the killed worker's stage (sh and its sleep 30) to be gone",
        Duration::from_secs(10),
        || !group_alive(pgid),
    );
    let b = site.worker("b", &["--lease", "1s"], &[]);
    assert_eq!(
        finish(sub, Duration::from_secs(60)),
        0,
        "{}",
        site.read_log("sub", "err")
    );
    stop(b);
    assert_each_once(&site, "sub", 1);
    let rows = jobs(&site.db());
    assert_eq!(rows[0].4, 2, "taken over once: {rows:?}");
}

#[test]
fn a_stale_lease_cannot_complete() {
    let Some(site) = Site::new("workers_stale") else {
        return;
    };
    site.plan(&[(
        "s".into(),
        vec![],
        "mkdir -p out/s && echo $$ > out/s/pid.$$ && sleep 1.5 && echo s > out/s/done.txt && echo $$ >> out/s/by.txt".into(),
        vec!["out/s/".into()],
    )]);
    let mut a = site.worker("a", &["--lease", "1s"], &[]);
    let sub = site.submit("sub", &[]);
    let db = site.db();
    let first_pid = || -> Option<u32> {
        std::fs::read_dir(site.root().join("out/s"))
            .ok()?
            .flatten()
            .find_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix("pid.")?
                    .parse()
                    .ok()
            })
    };
    wait_for("worker a's stage to start", Duration::from_secs(30), || {
        first_pid().is_some()
    });
    let a_stage = first_pid().unwrap();
    let a_pid = a.id() as i32;
    // SAFETY: a worker process this test started.
    unsafe { libc::kill(a_pid, libc::SIGSTOP) };
    let b = site.worker("b", &["--lease", "1s"], &[]);
    wait_for(
        "worker b to finish the stage",
        Duration::from_secs(30),
        || {
            jobs(&db)
                .first()
                .is_some_and(|j| j.2 == "done" && !j.3.contains(&format!(":{a_pid}:")))
        },
    );
    // The frozen worker could not kill its stage when its lease ran out: its
    // guard did, before the stage could write.
    assert!(!group_alive(a_stage), "worker a's stage outlived its lease");
    let wrote = std::fs::read_to_string(site.root().join("out/s/by.txt")).unwrap();
    assert_eq!(
        wrote.lines().count(),
        1,
        "only worker b's stage wrote: {wrote}"
    );
    assert_ne!(
        wrote.trim(),
        a_stage.to_string(),
        "worker a's stage wrote its output"
    );
    // SAFETY: as above.
    unsafe { libc::kill(a_pid, libc::SIGCONT) };
    wait_for("worker a to give up", Duration::from_secs(30), || {
        site.read_log("a", "out").contains("discarded")
    });
    assert_eq!(
        finish(sub, Duration::from_secs(60)),
        0,
        "{}",
        site.read_log("sub", "err")
    );
    stop(b);
    let _ = a.kill();
    let _ = a.wait();
    let said = site.read_log("a", "out");
    let rows = jobs(&db);
    assert_eq!(rows.len(), 1);
    let (_, _, state, holder, epoch) = &rows[0];
    assert_eq!((state.as_str(), *epoch), ("done", 2), "{rows:?}");
    assert!(
        said.contains(&format!(
            "this worker's lease (epoch 1) was taken over by {holder} (epoch 2); its result was discarded"
        )),
        "{said}"
    );
    assert_each_once(&site, "sub", 1);
}

#[test]
fn a_database_restart_mid_run_loses_nothing() {
    let Some(cluster) = pmpo_testkit::pg::Cluster::start("workers_restart") else {
        return;
    };
    let site = Site::at(cluster.fresh_db("workers_restart"));
    let mut stages = independent(8, "0.3");
    for (i, s) in stages.iter_mut().enumerate().skip(1) {
        s.1 = vec![format!("s{:02}", i - 1)];
    }
    site.plan(&stages);
    let ws: Vec<Child> = (0..2)
        .map(|i| site.worker(&format!("w{i}"), &["--lease", "5s"], &[]))
        .collect();
    let sub = site.submit("sub", &[]);
    let db = site.db();
    wait_for("two stages done", Duration::from_secs(60), || {
        jobs(&db).iter().filter(|j| j.2 == "done").count() >= 2
    });
    drop(db);
    cluster.restart();
    succeeds(&site, sub, Duration::from_secs(120), ws);
    assert_each_once(&site, "sub", 8);
}

#[test]
fn a_resumed_run_takes_its_jobs_over_and_a_duplicate_is_refused() {
    let Some(site) = Site::new("workers_dup") else {
        return;
    };
    let mut stages = independent(2, "0.05");
    stages[1].1 = vec!["s00".into()];
    site.plan(&stages);
    // No worker yet: the first submitter's job waits; the submitter dies.
    let mut first = site.submit("first", &[]);
    let db = site.db();
    wait_for("the first job", Duration::from_secs(30), || {
        !jobs(&db).is_empty()
    });
    first.kill().unwrap();
    let _ = first.wait();
    let run_id: String = db.query("SELECT run_id FROM pmpo_jobs", vec![]).unwrap()[0][0]
        .text()
        .unwrap();
    let epoch = jobs(&db)[0].4;
    // `pmpo resume --workers` owns the run now: it takes the job over (a new epoch).
    let resumed = site
        .cmd()
        .args(["resume", &run_id, "--workers", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the resumed job", Duration::from_secs(30), || {
        jobs(&db)
            .first()
            .is_some_and(|j| j.2 == "queued" && j.4 > epoch)
    });
    // Meanwhile another machine submits the next stage of the same run.
    for attempt in 1..4i64 {
        let dup = queue::NewJob {
            run_id: run_id.clone(),
            stage_id: "s01".into(),
            attempt,
            plan: "plan.yaml".into(),
            plan_blake3: "x".into(),
            version: "other".into(),
            payload: "{}".into(),
            submitted_by: "elsewhere:4242".into(),
        };
        queue::enqueue(&db, &dup).unwrap();
    }
    let w = site.worker("w", &["--lease", "2s"], &[]);
    let out = resumed.wait_with_output().unwrap();
    stop(w);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("was already submitted by elsewhere:4242")
            && text.contains("the same run is submitted twice"),
        "{text}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["stages"][0]["status"], "COMPLETED", "{text}");
    assert_eq!(r["stages"][1]["status"], "FAILED", "{text}");
}

#[test]
fn a_worker_of_another_version_is_ignored_and_the_submitter_says_why() {
    let Some(site) = Site::new("workers_version") else {
        return;
    };
    site.plan(&independent(1, "0.05"));
    let other = site.worker(
        "old",
        &["--lease", "2s"],
        &[("PMPO_WORKER_VERSION_FOR_TESTS", "0.0.1-old")],
    );
    let sub = site.submit("sub", &[]);
    wait_for("the submitter's notice", Duration::from_secs(40), || {
        site.read_log("sub", "err").contains("runs pmpo 0.0.1-old")
    });
    let err = site.read_log("sub", "err");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        err.contains(&format!(
            "runs pmpo 0.0.1-old, this run needs {version}: run the same version everywhere"
        )),
        "{err}"
    );
    let rows = jobs(&site.db());
    assert_eq!((rows[0].2.as_str(), rows[0].4), ("queued", 0), "{rows:?}");
    let right = site.worker("new", &["--lease", "2s"], &[]);
    assert_eq!(finish(sub, Duration::from_secs(60)), 0, "{err}");
    stop(other);
    stop(right);
    assert!(site.read_log("old", "out").is_empty());
    assert_each_once(&site, "sub", 1);
}

#[test]
fn a_worker_in_another_workspace_is_refused() {
    let Some(site) = Site::new("workers_marker") else {
        return;
    };
    let first = site
        .cmd()
        .args(["worker", "--idle-exit", "100ms"])
        .output()
        .unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let marker = std::fs::read_to_string(site.root().join(".state/workspace-id")).unwrap();
    assert_eq!(marker.trim().len(), 32);
    let elsewhere = tempfile::tempdir().unwrap();
    let out = pmpo()
        .current_dir(elsewhere.path())
        .env("PMPO_STORE", &site.url)
        .args(["worker", "--idle-exit", "100ms"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // As every command with a database of another workspace: exit 2.
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("serves the workspace"), "{err}");
    assert!(
        err.contains("mount the same shared directory on every machine")
            && err.contains("or use another database"),
        "{err}"
    );
    // A server that cannot be reached is a setting at fault, as for every command.
    let out = pmpo()
        .current_dir(site.root())
        .env("PMPO_STORE", "postgres://pmpo:secret@127.0.0.1:1/none")
        .args(["worker", "--idle-exit", "100ms"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot connect") && !err.contains("secret"),
        "{err}"
    );
    // Without a PostgreSQL store, a worker says what it needs.
    let out = pmpo()
        .current_dir(site.root())
        .env_remove("PMPO_STORE")
        .args(["worker"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs a PostgreSQL store"), "{err}");
}

#[test]
fn a_worker_refuses_a_changed_plan_and_files_that_differ_from_the_submitters() {
    let Some(site) = Site::new("workers_coherent") else {
        return;
    };
    let plan = site.plan(&independent(1, "0"));
    let blake = blake3::hash(&std::fs::read(&plan).unwrap())
        .to_hex()
        .to_string();
    std::fs::write(site.root().join("in.txt"), "here\n").unwrap();
    let db = site.db();
    queue::ensure(&db).unwrap();
    let payload = |reads: Value| {
        json!({"tool": "run", "inputs": {"command": ["sh", "-c", "mkdir -p out/s00 && echo s00 > out/s00/done.txt"]},
               "timeout_ms": 5000, "reads": reads})
        .to_string()
    };
    let job = |stage: &str, blake: &str, reads: Value| queue::NewJob {
        run_id: "r1".into(),
        stage_id: stage.into(),
        attempt: 1,
        plan: "plan.yaml".into(),
        plan_blake3: blake.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        payload: payload(reads),
        submitted_by: "there:1".into(),
    };
    let wrong = "0".repeat(64);
    for j in [
        job("s00", &blake, json!({"in.txt": wrong})),
        queue::NewJob {
            run_id: "r2".into(),
            ..job("s00", &"1".repeat(64), json!({}))
        },
        queue::NewJob {
            run_id: "r3".into(),
            payload: payload(json!({})).replace("\"run\"", "\"template\""),
            ..job("s00", &blake, json!({}))
        },
        queue::NewJob {
            run_id: "r4".into(),
            plan: "../plan.yaml".into(),
            ..job("s00", &"2".repeat(64), json!({}))
        },
    ] {
        queue::enqueue(&db, &j).unwrap();
    }
    let out = site
        .cmd()
        .args(["worker", "--idle-exit", "300ms", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcomes: Vec<String> = db
        .query("SELECT outcome FROM pmpo_jobs ORDER BY run_id", vec![])
        .unwrap()
        .iter()
        .map(|r| r[0].text().unwrap_or_default())
        .collect();
    assert!(
        outcomes[0].contains(&format!(
            "the shared filesystem is not coherent: `in.txt` has blake3 {wrong} for the submitter"
        )),
        "{outcomes:?}"
    );
    assert!(
        outcomes[1].contains("the plan changed under the run"),
        "{outcomes:?}"
    );
    assert!(
        outcomes[2].contains("the job asks for tool `template`, which stage `s00`"),
        "{outcomes:?}"
    );
    assert!(outcomes[3].contains("cannot be read here"), "{outcomes:?}");
    // No job's stage ran.
    assert!(
        !site.root().join("out/s00/done.txt").exists(),
        "{outcomes:?}"
    );
    let lines = String::from_utf8_lossy(&out.stdout);
    assert_eq!(lines.lines().count(), 4, "{lines}");
}

/// A stage that runs long the first time and quickly when run again.
fn long_then_quick(site: &Site) -> impl Fn() -> Option<u32> + '_ {
    let cmd = "mkdir -p out/k && echo $$ > out/k/pid.$$ && if [ -e out/k/started ]; then echo k > out/k/done.txt; else touch out/k/started; sleep 30; echo late > out/k/done.txt; fi";
    site.plan(&[("k".into(), vec![], cmd.into(), vec!["out/k/".into()])]);
    move || {
        std::fs::read_dir(site.root().join("out/k"))
            .ok()?
            .flatten()
            .find_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix("pid.")
                    .and_then(|p| p.parse::<u32>().ok())
            })
    }
}

#[test]
fn ctrl_c_on_the_submitter_cancels_its_job_and_the_worker_kills_the_stage() {
    let Some(site) = Site::new("workers_sigint") else {
        return;
    };
    let pid_file = long_then_quick(&site);
    let w = site.worker("w", &["--lease", "2s"], &[]);
    let sub = site.submit("sub", &[]);
    wait_for("the stage to start", Duration::from_secs(30), || {
        pid_file().is_some()
    });
    let pgid = pid_file().unwrap();
    // SAFETY: a submitter this test started.
    unsafe { libc::kill(sub.id() as i32, libc::SIGINT) };
    assert_eq!(finish(sub, Duration::from_secs(30)), 130);
    wait_for("the stage to be killed", Duration::from_secs(10), || {
        !group_alive(pgid)
    });
    wait_for("the worker to say so", Duration::from_secs(10), || {
        site.read_log("w", "out").contains("discarded")
    });
    stop(w);
    let said = site.read_log("w", "out");
    assert!(
        said.contains("its job was cancelled (epoch 2) while this worker held epoch 1; its result was discarded"),
        "{said}"
    );
    let rows = jobs(&site.db());
    assert_eq!(
        (rows[0].2.as_str(), rows[0].4),
        ("cancelled", 2),
        "{rows:?}"
    );
    assert!(!site.root().join("out/k/done.txt").exists());
}

#[test]
fn sigterm_on_a_worker_gives_its_job_back() {
    let Some(site) = Site::new("workers_sigterm") else {
        return;
    };
    let pid_file = long_then_quick(&site);
    let mut a = site.worker("a", &["--lease", "2s"], &[]);
    let sub = site.submit("sub", &[]);
    wait_for("the stage to start", Duration::from_secs(30), || {
        pid_file().is_some()
    });
    let pgid = pid_file().unwrap();
    // SAFETY: a worker this test started.
    unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
    assert_eq!(finish_ref(&mut a), Some(0), "{}", site.read_log("a", "err"));
    assert!(
        !group_alive(pgid),
        "the stage was stopped before the worker exited"
    );
    let rows = jobs(&site.db());
    assert_eq!((rows[0].2.as_str(), rows[0].4), ("queued", 1), "{rows:?}");
    let said = site.read_log("a", "out");
    assert!(
        said.contains("this worker is stopping") && said.contains("back in the queue"),
        "{said}"
    );
    let b = site.worker("b", &["--lease", "2s"], &[]);
    assert_eq!(
        finish(sub, Duration::from_secs(60)),
        0,
        "{}",
        site.read_log("sub", "err")
    );
    stop(b);
    assert_each_once(&site, "sub", 1);
    assert_eq!(jobs(&site.db())[0].4, 2);
}

#[test]
fn the_worker_confines_the_stage_unless_the_submitter_says_no_sandbox() {
    let Some(site) = Site::new("workers_sandbox") else {
        return;
    };
    // The stage writes a file it did not declare.
    site.plan(&[(
        "s".into(),
        vec![],
        "mkdir -p out/s && echo s > out/s/done.txt && echo x > stray.txt".into(),
        vec!["out/s/".into()],
    )]);
    let w = site.worker("w", &["--lease", "2s"], &[]);
    let confined = site.submit("confined", &[]);
    assert_eq!(finish(confined, Duration::from_secs(60)), 1);
    let r = results(&site, "confined");
    let stage = &r["stages"][0];
    assert_eq!(stage["status"], "FAILED", "{stage}");
    assert_ne!(stage["sandbox"], "off", "{stage}");
    let _ = std::fs::remove_file(site.root().join("stray.txt"));
    let open = site.submit("open", &["--no-sandbox", "--force"]);
    assert_eq!(
        finish(open, Duration::from_secs(60)),
        0,
        "{}",
        site.read_log("open", "err")
    );
    stop(w);
    let r = results(&site, "open");
    assert_eq!(r["stages"][0]["status"], "COMPLETED", "{r}");
    assert_eq!(r["stages"][0]["sandbox"], "off", "{r}");
    assert!(site.root().join("stray.txt").exists());
}

#[test]
fn execute_continuing_an_interrupted_run_takes_its_jobs_over() {
    let Some(site) = Site::new("workers_continue") else {
        return;
    };
    site.plan(&independent(2, "0.05"));
    // No worker yet: the jobs wait; their submitter dies.
    let mut first = site.submit("first", &[]);
    let db = site.db();
    wait_for("the first jobs", Duration::from_secs(30), || {
        jobs(&db).len() == 2
    });
    first.kill().unwrap();
    let _ = first.wait();
    let again = site.submit("again", &[]);
    wait_for("the withdrawal", Duration::from_secs(30), || {
        site.read_log("again", "err").contains("withdrew")
    });
    let w = site.worker("w", &["--lease", "2s"], &[]);
    assert_eq!(
        finish(again, Duration::from_secs(60)),
        0,
        "{}",
        site.read_log("again", "err")
    );
    stop(w);
    assert!(
        site.read_log("again", "err")
            .contains("withdrew 2 unfinished job(s) of run"),
        "{}",
        site.read_log("again", "err")
    );
    assert_each_once(&site, "again", 2);
}
