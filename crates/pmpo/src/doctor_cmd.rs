//! `pmpo doctor`: finds damaged or inconsistent state, explains it, and (with
//! --repair) fixes what can be fixed without losing anything: damaged files
//! are moved aside (`NAME.damaged-TIME`), never deleted.

use std::path::{Path, PathBuf};

use pmpo_store::artifacts::{
    ArtifactError, Artifacts, REGISTRY_FILE, RefinementState, Registry, RegistryEntry, state_path,
};
use pmpo_store::db::{DB_FILE, DbError, SqliteStore, StoreSpec};
use pmpo_store::provider::Provider;
use pmpo_store::{Durability, Workspace, now_rfc3339};
use serde::Serialize;

use crate::error::CliError;
use crate::{EXIT_OK, EXIT_STAGE_FAILED};

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Apply the repairs offered.
    #[arg(long)]
    repair: bool,
    #[command(flatten)]
    ws: crate::artifact_cmd::WsArgs,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Fix {
    /// Drop a torn last line of a log.
    TruncateTornLine { keep_bytes: u64 },
    /// Rename the file to `<file>.damaged-<time>`.
    MoveAside,
    /// Move aside, then rebuild the artifact's state from its newest checkpoint.
    RestoreFromCheckpoint { checkpoint: String },
    /// Rebuild `.refiner/registry.json` from the artifacts' state files.
    RebuildRegistry,
    /// Rewrite `.state/patch_ledger.jsonl` from the execution store.
    ExportLedger,
}

#[derive(Debug, Clone, Serialize)]
struct Finding {
    file: String,
    problem: String,
    /// What the repair does, or what the user must do.
    remedy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<Fix>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repaired: Option<bool>,
}

fn finding(
    file: &str,
    problem: impl Into<String>,
    remedy: impl Into<String>,
    fix: Option<Fix>,
) -> Finding {
    Finding {
        file: file.into(),
        problem: problem.into(),
        remedy: remedy.into(),
        fix,
        repaired: None,
    }
}

/// Checks a JSON-lines file: a bad last line is a torn append, a bad line elsewhere is damage.
fn check_jsonl(ws: &Workspace, rel: &str, out: &mut Vec<Finding>, regenerate: Option<Fix>) {
    let bytes = match ws.read_own(rel) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return,
        // A link at a journal: pmpo never reads or repairs through it.
        Err(e @ pmpo_store::StoreError::Link { .. }) => {
            out.push(finding(
                rel,
                e.to_string(),
                "move the link aside (the file it points to is not touched); a new journal is started",
                Some(Fix::MoveAside),
            ));
            return;
        }
        Err(_) => return,
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let bad: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            !l.trim().is_empty() && serde_json::from_str::<serde_json::Value>(l.trim()).is_err()
        })
        .map(|(i, _)| i)
        .collect();
    match bad.as_slice() {
        [] => {}
        [last] if *last == lines.len() - 1 => {
            let keep: usize = lines[..*last].iter().map(|l| l.len()).sum();
            out.push(finding(
                rel,
                format!(
                    "its last line ({}) is cut off, as after a crash mid-write",
                    *last + 1
                ),
                "drop the torn line",
                regenerate.or(Some(Fix::TruncateTornLine {
                    keep_bytes: keep as u64,
                })),
            ));
        }
        _ => out.push(finding(
            rel,
            format!(
                "{} line(s) are not JSON (first: line {})",
                bad.len(),
                bad[0] + 1
            ),
            "move it aside; a new one is started",
            regenerate.or(Some(Fix::MoveAside)),
        )),
    }
}

fn newest_checkpoint(ws: &Workspace, name: &str) -> Option<PathBuf> {
    let dir = ws
        .root()
        .join(pmpo_store::artifacts::artifact_dir(name))
        .join("checkpoints");
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(_, p)| {
            std::fs::read(p)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| {
                    serde_json::from_value::<RefinementState>(v["state"].clone())
                        .is_ok_and(|s| s.artifact_name == name)
                })
        })
        .collect();
    files.sort();
    files.pop().map(|(_, p)| p)
}

/// The execution store, the results file and the JSON-lines logs.
fn diagnose_store(ws: &Workspace, out: &mut Vec<Finding>) {
    let spec = match pmpo_store::db::store_spec(ws.root()) {
        Ok(s) => s,
        Err(e) => {
            out.push(finding("store", e.to_string(), e.hint(), None));
            StoreSpec::Sqlite
        }
    };
    // With a PostgreSQL store there is no database file to look at: the
    // server is checked by `pg_store` (and `.state/pmpo.db` is left alone).
    let sqlite = !spec.is_postgres();
    if sqlite && std::fs::symlink_metadata(ws.root().join(DB_FILE)).is_ok() {
        match SqliteStore::open_path(&ws.root().join(DB_FILE), false) {
            Err(e @ DbError::Link { .. }) => out.push(finding(DB_FILE, e.to_string(), "move the link aside (the file it points to is not touched); the next run starts a new database", Some(Fix::MoveAside))),
            Err(e @ DbError::TooNew { .. }) => out.push(finding(DB_FILE, e.to_string(), "upgrade pmpo; the database is left as it is", None)),
            Err(e) => out.push(finding(DB_FILE, e.to_string(), "move it aside; the next run starts a new one (run history and cache are lost, files are not)", Some(Fix::MoveAside))),
            Ok(db) => match db.integrity_check() {
                Ok(r) if r == ["ok"] => {}
                Ok(r) => out.push(finding(DB_FILE, format!("integrity check: {}", r.join("; ")), "move it aside; the next run starts a new one", Some(Fix::MoveAside))),
                Err(e) => out.push(finding(DB_FILE, e.to_string(), "move it aside; the next run starts a new one", Some(Fix::MoveAside))),
            },
        }
    }
    for rel in [pmpo_engine::RESULTS_FILE] {
        if let Ok(Some(bytes)) = ws.read_own(rel)
            && let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            out.push(finding(
                rel,
                format!("not valid JSON ({e})"),
                "move it aside; the next run writes it again",
                Some(Fix::MoveAside),
            ));
        }
    }
    let db_ok = !out.iter().any(|f| f.file == DB_FILE || f.file == "store");
    let has_db = !sqlite || ws.root().join(DB_FILE).exists();
    check_jsonl(
        ws,
        pmpo_store::LEDGER_FILE,
        out,
        (db_ok && has_db).then_some(Fix::ExportLedger),
    );
    check_jsonl(ws, pmpo_engine::EVENTS_LOG, out, None);
    check_jsonl(ws, pmpo_store::provider::PROVIDER_LOG, out, None);
    if let Ok(entries) = std::fs::read_dir(ws.root().join(pmpo_engine::STAGE_LOG_DIR)) {
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names.iter().filter(|n| n.ends_with(".jsonl")) {
            check_jsonl(
                ws,
                &format!("{}/{n}", pmpo_engine::STAGE_LOG_DIR),
                out,
                None,
            );
        }
    }
}

fn diagnose(ws: &Workspace, provider: &Provider) -> Vec<Finding> {
    let mut out = Vec::new();
    let arts = Artifacts { ws, provider };
    let mut registry_ok = true;
    let registry = match arts.registry() {
        Ok(r) => r,
        Err(e) => {
            registry_ok = false;
            let fix = matches!(e, ArtifactError::Corrupt { .. }).then_some(Fix::RebuildRegistry);
            let remedy = if fix.is_some() {
                "move it aside and rebuild it from the artifacts' state files"
            } else {
                "upgrade pmpo"
            };
            out.push(finding(REGISTRY_FILE, e.to_string(), remedy, fix));
            Registry::default()
        }
    };
    let mut states = Vec::new();
    for (name, path) in arts.state_files() {
        let rel = state_path(&name);
        if let Err(why) = pmpo_plan::validate_artifact_name(&name) {
            out.push(finding(
                &rel,
                format!("the folder name is not a valid artifact name ({why})"),
                "rename or remove that folder yourself; pmpo does not use it",
                None,
            ));
            continue;
        }
        if !path.exists() {
            // A deleted state whose checkpoints survive is recovered, never
            // replaced by a new lineage.
            if let Some(cp) = newest_checkpoint(ws, &name) {
                let checkpoint = ws.relative(&cp).unwrap_or_default();
                out.push(finding(
                    &rel,
                    "the state file is missing, but checkpoints survive",
                    format!("restore the state saved in {checkpoint}"),
                    Some(Fix::RestoreFromCheckpoint { checkpoint }),
                ));
                states.push(name);
            }
            continue;
        }
        match arts.load(&name) {
            Ok(_) => states.push(name),
            Err(e @ ArtifactError::TooNew { .. }) => {
                out.push(finding(&rel, e.to_string(), "upgrade pmpo", None))
            }
            Err(e) => {
                let fix = newest_checkpoint(ws, &name).map(|cp| Fix::RestoreFromCheckpoint {
                    checkpoint: ws.relative(&cp).unwrap_or_default(),
                });
                let remedy = match &fix {
                    Some(Fix::RestoreFromCheckpoint { checkpoint }) => format!("move it aside and restore the state saved in {checkpoint}"),
                    _ => "move it aside (no checkpoint to restore from); `pmpo init` then starts the artifact again".into(),
                };
                out.push(finding(
                    &rel,
                    e.to_string(),
                    remedy,
                    fix.or(Some(Fix::MoveAside)),
                ));
            }
        }
    }
    if registry_ok {
        let missing: Vec<&String> = registry
            .artifacts
            .keys()
            .filter(|n| {
                !ws.root().join(state_path(n)).exists() && newest_checkpoint(ws, n).is_none()
            })
            .collect();
        let unlisted: Vec<&String> = states
            .iter()
            .filter(|n| !registry.artifacts.contains_key(*n))
            .collect();
        if !missing.is_empty() || !unlisted.is_empty() {
            out.push(finding(
                REGISTRY_FILE,
                format!("registry and state files disagree (listed without state: {missing:?}; state not listed: {unlisted:?})"),
                "rebuild the registry from the state files",
                Some(Fix::RebuildRegistry),
            ));
        }
    }

    diagnose_store(ws, &mut out);
    out
}

fn move_aside(ws: &Workspace, rel: &str) -> Result<String, pmpo_store::StoreError> {
    let to = format!("{rel}.damaged-{}", now_rfc3339().replace([':', '.'], "-"));
    ws.rename_own(rel, &to)?;
    for side in ["-wal", "-shm", "-journal"] {
        let from = format!("{rel}{side}");
        // A link is moved as a link (rename never follows one).
        if std::fs::symlink_metadata(ws.root().join(&from)).is_ok() {
            ws.rename_own(&from, &format!("{to}{side}"))?;
        }
    }
    Ok(to)
}

fn rebuild_registry(ws: &Workspace, provider: &Provider) -> Result<(), String> {
    let arts = Artifacts { ws, provider };
    let mut reg = Registry::default();
    for (name, _) in arts.state_files() {
        if let Ok(s) = arts.load(&name) {
            reg.artifacts.insert(
                name.clone(),
                RegistryEntry {
                    refinement_id: s.refinement_id.clone(),
                    artifact_type: s.artifact_type.clone(),
                    content_type: s.content_type.clone(),
                    status: if s.finalized_at.is_some() {
                        "finalized".into()
                    } else {
                        "running".into()
                    },
                    created_at: s.started_at.clone(),
                    updated_at: s.updated_at.clone(),
                    cycles: 1 + ws
                        .root()
                        .join(".refiner/history")
                        .join(&name)
                        .read_dir()
                        .map(|d| d.count() as u64)
                        .unwrap_or(0),
                    state: state_path(&name),
                },
            );
        }
    }
    if ws.root().join(REGISTRY_FILE).exists() {
        move_aside(ws, REGISTRY_FILE).map_err(|e| e.to_string())?;
    }
    let bytes = serde_json::to_vec_pretty(&reg).map_err(|e| e.to_string())?;
    ws.write_atomic(REGISTRY_FILE, &bytes, Durability::Durable)
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn apply(ws: &Workspace, provider: &Provider, f: &Finding) -> Result<String, String> {
    match f.fix.as_ref().ok_or("no automatic repair")? {
        Fix::MoveAside => move_aside(ws, &f.file)
            .map(|to| format!("moved to {to}"))
            .map_err(|e| e.to_string()),
        Fix::TruncateTornLine { keep_bytes } => {
            // Never through a link: the journal is cut, not what a link names.
            ws.truncate_own(&f.file, *keep_bytes)
                .map_err(|e| e.to_string())?;
            Ok("dropped the torn line".into())
        }
        Fix::RestoreFromCheckpoint { checkpoint } => {
            let snap: serde_json::Value = serde_json::from_slice(
                &std::fs::read(ws.root().join(checkpoint)).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            let moved = if ws.root().join(&f.file).exists() {
                let to = move_aside(ws, &f.file).map_err(|e| e.to_string())?;
                format!("moved the damaged file to {to}; ")
            } else {
                String::new()
            };
            let bytes = serde_json::to_vec_pretty(&snap["state"]).map_err(|e| e.to_string())?;
            ws.write_atomic(&f.file, &bytes, Durability::Durable)
                .map_err(|e| e.to_string())?;
            Ok(format!("{moved}restored the state of {checkpoint}"))
        }
        Fix::RebuildRegistry => {
            rebuild_registry(ws, provider).map(|_| "rebuilt from the state files".into())
        }
        Fix::ExportLedger => {
            let mut db = pmpo_store::db::open_store(ws.root()).map_err(|e| e.to_string())?;
            pmpo_engine::export_ledger(ws, db.as_mut())
                .map(|n| format!("rewrote {n} entries from the execution store"))
                .map_err(|e| e.to_string())
        }
    }
}

pub fn doctor(a: DoctorArgs) -> u8 {
    let ws = match Workspace::open(Path::new(&a.ws.workspace)) {
        Ok(w) => w,
        Err(e) => return CliError::invalid(e).hint("pass --workspace DIR").report(),
    };
    let provider = Provider::resolve(&ws);
    let (store, pg_findings) = pg_store(&ws);
    let mut findings = pg_findings;
    findings.extend(diagnose(&ws, &provider));
    // Repairs run in a stable order: state files before the registry rebuilt from them.
    findings.sort_by_key(|f| matches!(f.fix, Some(Fix::RebuildRegistry)));
    let mut unresolved = 0;
    for f in findings.iter_mut() {
        if a.repair && f.fix.is_some() {
            match apply(&ws, &provider, f) {
                Ok(done) => {
                    f.repaired = Some(true);
                    f.remedy = done;
                }
                Err(e) => {
                    f.repaired = Some(false);
                    f.remedy = format!("repair failed: {e}");
                    unresolved += 1;
                }
            }
        } else {
            unresolved += 1;
        }
    }
    if a.ws.json {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({"workspace": ws.root(), "store": store, "problems": findings, "unresolved": unresolved}),
        );
        let _ = std::io::Write::write_all(&mut out, b"\n");
        return if unresolved == 0 {
            EXIT_OK
        } else {
            EXIT_STAGE_FAILED
        };
    }
    if let Some(line) = store.get("summary").and_then(|v| v.as_str()) {
        outln!("store: {line}");
    }
    if findings.is_empty() {
        outln!("doctor: no problems found in {}", ws.root().display());
    } else {
        for f in &findings {
            let tag = match f.repaired {
                Some(true) => "repaired",
                Some(false) => "NOT repaired",
                None => "problem",
            };
            outln!("{tag}: {}: {}\n  -> {}", f.file, f.problem, f.remedy);
        }
        if !a.repair && findings.iter().any(|f| f.fix.is_some()) {
            outln!(
                "run `pmpo doctor --repair` to apply the repairs offered (damaged files are moved aside, never deleted)"
            );
        }
    }
    if unresolved == 0 {
        EXIT_OK
    } else {
        EXIT_STAGE_FAILED
    }
}

/// The PostgreSQL store, when the workspace uses one: the server (never the
/// password), whether it answers, its schema version and whether it serves
/// this workspace (the marker). Reads only; creates nothing.
fn pg_store(ws: &Workspace) -> (serde_json::Value, Vec<Finding>) {
    use pmpo_store::pg::schema;
    let Ok(StoreSpec::Postgres(url)) = pmpo_store::db::store_spec(ws.root()) else {
        return (
            serde_json::json!({"kind": "sqlite", "file": DB_FILE}),
            Vec::new(),
        );
    };
    let server = pmpo_store::pg::conn::server_of(&url);
    let mut out = Vec::new();
    let mut report = serde_json::json!({"kind": "postgres", "server": server, "reachable": false});
    let conn = match pmpo_store::pg::PgConn::connect(&url, std::time::Duration::ZERO) {
        Ok(c) => c,
        Err(e) => {
            report["summary"] = format!("{server}: unreachable").into();
            out.push(finding(&server, e.to_string(), e.hint(), None));
            return (report, out);
        }
    };
    report["reachable"] = true.into();
    let rec = match schema::recorded(&conn) {
        Ok(r) => r,
        Err(e) => {
            out.push(finding(&server, e.to_string(), e.hint(), None));
            return (report, out);
        }
    };
    report["schema_version"] = rec.schema_version.into();
    report["created_by"] = rec.created_by.clone().into();
    let here = schema::read_workspace_id(ws.root());
    let marker = match (&rec.workspace_id, &here) {
        (None, _) => "no workspace recorded yet (the first run records this one)".to_string(),
        (Some(_), Err(e)) => {
            out.push(finding(schema::MARKER_FILE, e.to_string(), e.hint(), None));
            "this workspace's marker cannot be read".into()
        }
        (Some(theirs), Ok(ours)) if ours.as_deref() == Some(theirs.as_str()) => {
            "serves this workspace (markers match)".into()
        }
        (Some(theirs), Ok(ours)) => {
            let problem = format!(
                "the database serves the workspace {} on {} (id {theirs}), and this workspace's marker is {}",
                rec.workspace_path.as_deref().unwrap_or("?"),
                rec.workspace_host.as_deref().unwrap_or("?"),
                ours.as_deref().unwrap_or("missing")
            );
            out.push(finding(&server, problem, "mount the same shared directory on every machine (one database serves one workspace), or use another database", None));
            "serves another workspace".into()
        }
    };
    if let Some(v) = rec.schema_version
        && v > schema::PG_SCHEMA_VERSION
    {
        let problem = format!(
            "the database has schema {v}; this pmpo reads up to {}",
            schema::PG_SCHEMA_VERSION
        );
        out.push(finding(
            &server,
            problem,
            "upgrade pmpo; the database is left as it is",
            None,
        ));
    }
    let version = rec
        .schema_version
        .map_or("no pmpo tables yet".to_string(), |v| format!("schema {v}"));
    report["summary"] = format!("{server}: reachable, {version}, {marker}").into();
    (report, out)
}
