//! Helpers of the domain-adapter tests (`refine_adapters*.rs`): fixtures,
//! `pmpo refine --offline` in a workspace, and asserts over the plan it
//! writes, its report and `dist/`.
#![allow(dead_code)]

use std::path::Path;

use pmpo_testkit::{Run, Ws, bin};
use serde_json::Value;

pub fn fixtures() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/refine"
    ))
}

pub fn require_browser() -> bool {
    std::env::var("PMPO_REQUIRE_BROWSER").ok().as_deref() == Some("1")
}

/// Whether previews can run here (Chromium found); a failure when required but missing.
pub fn have_chromium() -> bool {
    let found = std::env::var_os("PMPO_CHROMIUM").is_some()
        || ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .any(|p| Path::new(p).exists());
    assert!(
        found || !require_browser(),
        "Chromium is required (PMPO_REQUIRE_BROWSER=1) but was not found"
    );
    found
}

/// Whether TSX previews can run here (Chromium and esbuild).
pub fn have_esbuild() -> bool {
    let found = std::env::var_os("PMPO_ESBUILD").is_some()
        || Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tools/node_modules/.bin/esbuild")
            .is_file();
    assert!(
        found || !require_browser(),
        "esbuild is required for TSX previews (PMPO_REQUIRE_BROWSER=1) but was not found; run `npm ci --prefix tools`"
    );
    found
}

/// Copies a fixture directory (recursively) into the workspace at `to`.
pub fn copy_fixture(ws: &Ws, from: &str, to: &str) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                copy(&p, &to.join(e.file_name()));
            } else {
                std::fs::copy(&p, to.join(e.file_name())).unwrap();
            }
        }
    }
    copy(&fixtures().join(from), &ws.p(to));
}

/// `pmpo refine NAME --offline --json ARGS...` in the workspace.
pub fn refine(ws: &Ws, name: &str, args: &[&str]) -> Run {
    let r: Run = bin()
        .args(["refine", name, "--offline", "--json"])
        .args(args)
        .current_dir(ws.path())
        .output()
        .unwrap()
        .into();
    assert!(
        r.code != 2,
        "refine {name} {args:?} was refused:\n{}",
        r.stderr
    );
    r
}

/// The plan of an artifact's first iteration.
pub fn plan(ws: &Ws, name: &str) -> Value {
    ws.read_json(&format!(".refiner/artifacts/{name}/plans/iteration-1.json"))
}

/// `(stage id, tool)` in plan order.
pub fn stages(plan: &Value) -> Vec<(String, String)> {
    plan["plan"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["tool"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub fn stage<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan["plan"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no stage {id} in the plan"))
}

pub fn check<'a>(plan: &'a Value, constraint: &str) -> &'a Value {
    plan["plan"]["validation_plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["constraint_id"] == constraint)
        .unwrap_or_else(|| panic!("no check of {constraint} in the validation plan"))
}

/// Asserts the stages (ids and tools, in order), and that the validation
/// plan holds exactly one check per constraint that declares a validation
/// method, with that method, and that those are the `checked` ones.
pub fn assert_plan(plan: &Value, want_stages: &[(&str, &str)], checked: &[&str]) {
    let got = stages(plan);
    let want: Vec<(String, String)> = want_stages
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want, "stages of the plan");
    let invocations: Vec<&str> = plan["plan"]["tool_invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["stage"].as_str().unwrap())
        .collect();
    let ids: Vec<&str> = want_stages.iter().map(|(id, _)| *id).collect();
    assert_eq!(invocations, ids, "tool_invocations follow the stages");

    let vp: Vec<&Value> = plan["plan"]["validation_plan"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let vp_ids: Vec<&str> = vp
        .iter()
        .map(|v| v["constraint_id"].as_str().unwrap())
        .collect();
    let constraints = plan["specification"]["constraints"].as_array().unwrap();
    let with_method: Vec<&str> = constraints
        .iter()
        .filter(|c| c["validation"]["validation_method"].is_string())
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        vp_ids, with_method,
        "one check per constraint that has a validation method"
    );
    assert_eq!(vp_ids, checked, "the checked constraints");
    for v in vp {
        let c = constraints
            .iter()
            .find(|c| c["id"] == v["constraint_id"])
            .unwrap();
        assert_eq!(
            v["validation_method"], c["validation"]["validation_method"],
            "method of {}",
            v["constraint_id"]
        );
        assert!(
            v["with"].is_object(),
            "parameters of {}",
            v["constraint_id"]
        );
    }
}

pub fn status<'a>(report: &'a Value, id: &str) -> &'a str {
    report["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no constraint {id} in the report: {report}"))["status"]
        .as_str()
        .unwrap()
}

/// Asserts a run converged in its first iteration, every checked constraint satisfied.
pub fn assert_converged(ws: &Ws, r: &Run, name: &str) -> Value {
    assert_eq!(r.code, 0, "{name}: {}", r.stderr);
    let report = r.json();
    assert_eq!(report["outcome"], "converged", "{report}");
    assert_eq!(report["iteration"], 1, "{report}");
    for c in report["constraints"].as_array().unwrap() {
        assert_ne!(c["status"], "violated", "{name}: {c}");
    }
    assert_eq!(
        ws.read_json(&format!(".refiner/artifacts/{name}/state.json"))["convergence_status"],
        "converged"
    );
    report
}

/// Asserts a run with `--max-iterations 2` ended unconverged with `violated` violated.
pub fn assert_not_converged(ws: &Ws, r: &Run, name: &str, violated: &str) -> Value {
    assert_eq!(r.code, 1, "{name}: {}", r.stderr);
    let report = r.json();
    assert_eq!(report["outcome"], "max_iterations_exceeded", "{report}");
    assert_eq!(report["iteration"], 2, "{report}");
    assert_eq!(status(&report, violated), "violated", "{report}");
    assert_eq!(
        ws.read_json(&format!(".refiner/artifacts/{name}/state.json"))["convergence_status"],
        "max_iterations_exceeded"
    );
    assert!(
        ws.p(&format!(
            ".refiner/artifacts/{name}/reflections/iteration-2.json"
        ))
        .is_file()
    );
    report
}

/// Asserts the files exist and the manifest lists each of them.
pub fn assert_dist(ws: &Ws, files: &[&str]) {
    let manifest = ws.read_json("artifact_manifest.json");
    let listed: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for f in files {
        assert!(ws.p(f).is_file(), "{f} is missing");
        assert!(
            listed.contains(f),
            "artifact_manifest.json does not list {f}: {listed:?}"
        );
    }
}

/// A small real PNG (RGB, 8 bits), built with the zlib "stored" mode.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    // Each row: filter type 0, then the pixels.
    let row: Vec<u8> = std::iter::once(0)
        .chain((0..width).flat_map(|_| [200, 30, 30]))
        .collect();
    let raw = row.repeat(height as usize);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    let mut z = vec![0x78, 0x01, 1];
    z.extend((raw.len() as u16).to_le_bytes());
    z.extend((!(raw.len() as u16)).to_le_bytes());
    z.extend(&raw);
    z.extend(((b << 16) | a).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

// ---- logo ------------------------------------------------------------------

/// The accessibility constraints the `ui`, `a2ui` and `content` adapters add
/// after `renders` when a browser can run (none otherwise).
pub fn a11y(browser: bool) -> &'static [&'static str] {
    if browser {
        &["accessible", "accessible-moderate"]
    } else {
        &[]
    }
}
