//! Operations: `pmpo adapters` and `pmpo metrics`.

use std::fmt::Write as _;
use std::path::PathBuf;

use pmpo_store::states::StageStatus;

use crate::error::CliError;
use crate::{EXIT_OK, EXIT_STAGE_FAILED};

#[derive(clap::Args)]
pub struct AdaptersArgs {
    /// The workspace directory.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    /// Also run each plugin's `--health` check.
    #[arg(long)]
    health: bool,
    /// Print as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct MetricsArgs {
    /// The workspace directory.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
}

fn plugins_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("plugins"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .trim_start_matches("pmpo-plugin-")
                        .to_string()
                })
                .filter(|n| pmpo_tools::plugin::valid_name(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    names
}

pub fn adapters(a: AdaptersArgs) -> u8 {
    let Ok(root) = std::fs::canonicalize(&a.workspace) else {
        return CliError::invalid(format!(
            "workspace `{}` does not exist",
            a.workspace.display()
        ))
        .hint("pass --workspace DIR")
        .report();
    };
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let known = if pmpo_store::db::store_exists(&root).unwrap_or(true) {
        match crate::state_cmd::open_db(&root).map(|mut db| db.adapters()) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return crate::state_cmd::fail(&e.to_string(), e.hint()),
            Err(c) => return c,
        }
    } else {
        Vec::new()
    };
    for r in &known {
        rows.push(serde_json::json!({
            "adapter": r.adapter_id, "kind": r.kind, "breaker": r.breaker_state,
            "consecutive_failures": r.consecutive_failures, "open_until": r.opened_until, "last_error": r.last_error,
        }));
    }
    for name in plugins_in(&root) {
        let id = format!("plugin:{name}");
        if !rows.iter().any(|r| r["adapter"] == id.as_str()) {
            rows.push(serde_json::json!({"adapter": id, "kind": "plugin", "breaker": "CLOSED", "consecutive_failures": 0}));
        }
    }
    let mut unhealthy = 0;
    if a.health {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return crate::state_cmd::fail("cannot start the async runtime", "try again");
        };
        for r in rows.iter_mut() {
            let id = r["adapter"].as_str().unwrap_or_default().to_string();
            if let Some(name) = id.strip_prefix("plugin:") {
                match rt.block_on(pmpo_tools::plugin::health(&root, name)) {
                    Ok(msg) => {
                        r["health"] = "healthy".into();
                        r["health_detail"] = msg.into();
                    }
                    Err(e) => {
                        unhealthy += 1;
                        r["health"] = "unhealthy".into();
                        r["health_detail"] = e.into();
                    }
                }
            }
        }
    }
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else if rows.is_empty() {
        outln!(
            "no adapters used yet in {} (and no plugins/ folder)",
            root.display()
        );
    } else {
        for r in &rows {
            let mut line = format!(
                "{:<28} {:<7} breaker {:<9} failures {}",
                r["adapter"].as_str().unwrap_or_default(),
                r["kind"].as_str().unwrap_or_default(),
                r["breaker"].as_str().unwrap_or_default(),
                r["consecutive_failures"]
            );
            if let Some(u) = r["open_until"].as_str() {
                let _ = write!(line, "  open until {u}");
            }
            if let Some(h) = r["health"].as_str() {
                let _ = write!(line, "  {h}");
                if let Some(d) = r["health_detail"].as_str().filter(|d| !d.is_empty()) {
                    let _ = write!(line, " ({d})");
                }
            }
            if let Some(e) = r["last_error"].as_str() {
                let _ = write!(line, "\n    last error: {e}");
            }
            outln!("{line}");
        }
        outln!("model endpoints: see `pmpo models`");
    }
    if unhealthy > 0 {
        EXIT_STAGE_FAILED
    } else {
        EXIT_OK
    }
}

const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

pub fn metrics(a: MetricsArgs) -> u8 {
    let mut db = match crate::state_cmd::open_db(&a.workspace) {
        Ok(db) => db,
        Err(c) => return c,
    };
    let attempts = match db.attempts(None) {
        Ok(r) => r,
        Err(e) => return crate::state_cmd::fail(&e.to_string(), e.hint()),
    };
    let adapters = db.adapters().unwrap_or_default();
    let mut out = String::new();
    let mut by_status: std::collections::BTreeMap<&str, u64> = Default::default();
    for at in &attempts {
        *by_status.entry(at.status.as_str()).or_default() += 1;
    }
    let _ = writeln!(
        out,
        "# HELP tasks_executed_total Stage attempts executed, by outcome.\n# TYPE tasks_executed_total counter"
    );
    for (status, n) in &by_status {
        let _ = writeln!(out, "tasks_executed_total{{status=\"{status}\"}} {n}");
    }
    let completed = by_status
        .get(StageStatus::Completed.as_str())
        .copied()
        .unwrap_or(0);
    let rate = if attempts.is_empty() {
        0.0
    } else {
        completed as f64 / attempts.len() as f64
    };
    let _ = writeln!(
        out,
        "# HELP task_success_rate Share of attempts that completed.\n# TYPE task_success_rate gauge\ntask_success_rate {rate}"
    );
    let _ = writeln!(
        out,
        "# HELP task_duration_seconds Duration of stage attempts.\n# TYPE task_duration_seconds histogram"
    );
    let secs: Vec<f64> = attempts.iter().map(|a| a.duration_ms / 1000.0).collect();
    for b in BUCKETS {
        let n = secs.iter().filter(|s| **s <= *b).count();
        let _ = writeln!(out, "task_duration_seconds_bucket{{le=\"{b}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "task_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        secs.len()
    );
    let _ = writeln!(
        out,
        "task_duration_seconds_sum {}",
        secs.iter().sum::<f64>()
    );
    let _ = writeln!(out, "task_duration_seconds_count {}", secs.len());
    let _ = writeln!(
        out,
        "# HELP circuit_breaker_state Breaker per adapter: 0 closed, 1 half-open, 2 open.\n# TYPE circuit_breaker_state gauge"
    );
    for ad in &adapters {
        let v = match ad.breaker_state.as_str() {
            "OPEN" => 2,
            "HALF_OPEN" => 1,
            _ => 0,
        };
        let _ = writeln!(
            out,
            "circuit_breaker_state{{adapter=\"{}\"}} {v}",
            ad.adapter_id.replace('"', "'")
        );
    }
    let retries = attempts.iter().filter(|a| a.attempt > 1).count();
    let _ = writeln!(
        out,
        "# HELP retry_attempts_total Attempts beyond a stage's first.\n# TYPE retry_attempts_total counter\nretry_attempts_total {retries}"
    );
    // Acceptance tests: the validations of the latest run.
    let (mut passed, mut total) = (0u64, 0u64);
    // pmpo's own file: never read through a link at it.
    if let Ok(file) = pmpo_store::open_own(
        &a.workspace.join(pmpo_engine::RESULTS_FILE),
        std::fs::OpenOptions::new().read(true),
    ) && let Ok(bytes) = std::io::read_to_string(file)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&bytes)
    {
        for o in v["validation_outputs"].as_array().into_iter().flatten() {
            match o["status"].as_str() {
                Some("passed") => {
                    passed += 1;
                    total += 1;
                }
                Some("failed") => total += 1,
                _ => {}
            }
        }
    }
    let acc = if total == 0 {
        0.0
    } else {
        passed as f64 / total as f64
    };
    let _ = writeln!(
        out,
        "# HELP acceptance_test_pass_rate Share of the latest run's validations that passed.\n# TYPE acceptance_test_pass_rate gauge\nacceptance_test_pass_rate {acc}"
    );
    out!("{out}");
    EXIT_OK
}
