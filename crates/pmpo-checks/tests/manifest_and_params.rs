//! The manifest, parameters checked before and at run time, the preview report, and the files a check names.

mod common;
use common::*;
use serde_json::json;

#[test]
fn manifest_schema_and_files() {
    let w = Ws::new();
    w.write("dist/logo.svg", "<svg/>");
    let digest = blake3::hash(b"<svg/>").to_hex().to_string();
    let good = json!({
        "artifact_name": "a", "artifact_type": "logo", "run_id": "r", "status": "completed",
        "variants": [{"name": "draw", "files": ["dist/logo.svg"], "format": "svg"}],
        "files": [{"path": "dist/logo.svg", "size": 6, "blake3": digest, "stage": "draw"}],
        "generated_at": "2026-01-01T00:00:00Z"
    });
    w.write("artifact_manifest.json", serde_json::to_vec(&good).unwrap());
    pass(&w.check("manifest", json!({"verify_digests": true})));

    w.write("dist/logo.svg", "<svg></svg>");
    fail(
        &w.check("manifest", json!({"verify_digests": true})),
        "the manifest says 6",
    );

    let mut missing = good.clone();
    missing["variants"][0]["files"] = json!(["dist/logo.svg", "dist/gone.png"]);
    w.write(
        "artifact_manifest.json",
        serde_json::to_vec(&missing).unwrap(),
    );
    fail(
        &w.check("manifest", json!({})),
        "`dist/gone.png` is named in the manifest but does not exist",
    );

    let bad = json!({"artifact_type": "logo", "variants": {"x": 1}, "files": [{"path": "../etc/passwd"}]});
    w.write("m2.json", serde_json::to_vec(&bad).unwrap());
    let o = w.check("manifest", json!({"path": "m2.json"}));
    fail(&o, "violates the manifest schema");
    let ptrs: Vec<&str> = o.evidence["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pointer"].as_str().unwrap())
        .collect();
    assert!(ptrs.contains(&"/variants"), "{ptrs:?}");
    assert!(ptrs.contains(&"/files/0/path"), "{ptrs:?}");
    assert!(
        o.evidence["problems"][0]
            .as_str()
            .unwrap()
            .contains("outside the workspace"),
        "{}",
        o.evidence
    );
    fail(
        &w.check("manifest", json!({"path": "nope.json"})),
        "does not exist",
    );
}

// ---------- parameters ----------

#[test]
fn parameters_are_checked_statically_and_at_run_time() {
    use pmpo_plan::CheckCatalog;
    let cat = pmpo_checks::Checks;
    let params = |v: serde_json::Value| v.as_object().unwrap().clone();
    assert_eq!(cat.resolve("file-exists"), Some("file_exists"));
    assert_eq!(cat.resolve("contrast-check"), Some("contrast"));
    assert_eq!(cat.resolve("schema-validate"), Some("json_schema"));
    assert_eq!(cat.resolve("nope"), None);

    let issues = cat.check_params("file_exists", &params(json!({"paht": "x"})));
    let text: Vec<String> = issues
        .iter()
        .map(|i| format!("{} {:?}", i.message, i.help))
        .collect();
    assert!(
        text.iter()
            .any(|t| t.contains("unknown parameter `paht`") && t.contains("did you mean `path`?")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("missing parameter `path`")),
        "{text:?}"
    );
    let issues = cat.check_params(
        "image_dimensions",
        &params(json!({"path": "a.png", "width": "wide"})),
    );
    assert!(
        issues[0]
            .message
            .contains("parameter `width`: expected a whole number"),
        "{}",
        issues[0].message
    );
    let issues = cat.check_params(
        "contrast",
        &params(json!({"foreground": "#12", "background": "#fff"})),
    );
    assert!(
        issues[0].message.contains("not a CSS colour"),
        "{}",
        issues[0].message
    );
    let issues = cat.check_params("file_size", &params(json!({"path": "a"})));
    assert!(
        issues[0]
            .message
            .contains("needs `min_bytes` or `max_bytes`"),
        "{}",
        issues[0].message
    );
    let issues = cat.check_params(
        "regex",
        &params(json!({"path": "a", "pattern": "(unclosed"})),
    );
    assert!(issues[0].message.contains("invalid regular expression"));
    for (name, p) in [
        ("regex", json!({"path": "a", "pattern": "x", "min": 0})),
        ("glob_count", json!({"pattern": "*.png", "min": 0})),
        ("file_size", json!({"path": "a", "min_bytes": "0KB"})),
    ] {
        let issues = cat.check_params(name, &params(p));
        assert!(
            issues[0].message.contains("cannot fail"),
            "{name}: {}",
            issues[0].message
        );
    }
    assert!(
        cat.check_params(
            "regex",
            &params(json!({"path": "a", "pattern": "x", "min": 0, "max": 0}))
        )
        .is_empty()
    );
    let issues = cat.check_params("json", &params(json!({"path": "../x"})));
    assert!(issues[0].message.contains("`..`"), "{}", issues[0].message);

    // Run time: the same problems make a failed check, never a panic.
    let w = Ws::new();
    fail(&w.check("json", json!({})), "missing parameter `path`");
    fail(
        &w.check("no_such_check", json!({})),
        "unknown check `no_such_check`; known checks:",
    );
}

// ---------- not checked: the check could not look ----------

fn preview_report(w: &Ws, diagnostics: bool, status: &str, console_error: bool) {
    w.write("dist/previews/p/screenshot.png", png_two_colours(40, 20));
    let console = if console_error {
        json!([{"level": "error", "text": "boom", "source": "console-api"}])
    } else {
        json!([])
    };
    let report = json!({
        "version": 1, "artifact_id": "p", "status": status, "required": false,
        "source": "page.html", "html": "dist/previews/p/preview.html",
        "screenshot": "dist/previews/p/screenshot.png",
        "driver": if diagnostics { "devtools" } else { "screenshot-mode" },
        "diagnostics_available": diagnostics, "runtime_source": "none", "runtime_detail": "",
        "network_allowed": false, "viewport": {"width": 40, "height": 20, "device_scale_factor": 1.0},
        "console": console, "page_errors": [], "failed_requests": [],
        "counts": {"console_errors": 0, "console_warnings": 0, "page_errors": 0, "failed_requests": 0},
        "timings": {"browser_start_ms": 0.0, "browser_reused": false, "load_ms": 0.0, "settle_ms": 0.0, "screenshot_ms": 0.0, "total_ms": 0.0},
        "generated_at": "2026-01-01T00:00:00Z",
    });
    w.write(
        "dist/previews/p/preview-report.json",
        serde_json::to_vec(&report).unwrap(),
    );
}

#[test]
fn a_preview_without_diagnostics_is_not_checked_never_clean() {
    let w = Ws::new();
    let report = json!({"report": "dist/previews/p/preview-report.json"});
    preview_report(&w, true, "success", false);
    pass(&w.check("preview", report.clone()));
    preview_report(&w, true, "success", true);
    fail(&w.check("preview", report.clone()), "boom");
    // Chromium's --screenshot mode sees no console: the same page is not judged clean.
    preview_report(&w, false, "success", false);
    let o = w.check("preview", report.clone());
    unseen(&o, "no_console_errors");
    assert!(!o.message.contains("rendered cleanly"), "{}", o.message);
    // Nor is a page that was expected to fail.
    unseen(
        &w.check(
            "preview",
            json!({"report": "dist/previews/p/preview-report.json", "expect": "fail"}),
        ),
        "not observe",
    );
    preview_report(&w, false, "skipped", false);
    unseen(&w.check("preview", report), "skipped");
}

#[test]
fn output_cut_before_the_awaited_text_is_not_checked() {
    let w = Ws::new();
    // 100 KB of output before the word and after it: the word is in the
    // middle part, which the check does not keep (its first and last 64 KiB).
    let long = json!({"command": ["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a; echo; echo needle; head -c 100000 /dev/zero | tr '\\0' b"], "stdout_contains": "needle"});
    unseen(&w.check("command", long), "not checked");
    // At the end of a long output it is kept, so it is found.
    let at_end = json!({"command": ["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a; echo; echo needle"], "stdout_contains": "needle"});
    pass(&w.check("command", at_end));
    let short = json!({"command": ["sh", "-c", "echo hay"], "stdout_contains": "needle"});
    fail(&w.check("command", short), "does not contain");
}

#[test]
fn a_body_cut_before_the_awaited_text_is_not_checked() {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let body = format!("{}needle", "x".repeat(2 * 1024 * 1024));
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let w = Ws::new();
    unseen(
        &w.check(
            "http",
            json!({"url": format!("http://127.0.0.1:{port}/"), "contains": "needle"}),
        ),
        "not checked",
    );
}

#[test]
fn named_files_are_the_file_parameters() {
    let w = Ws::new();
    w.write("dist/a.png", png(2, 2));
    w.write("dist/b.png", png(2, 2));
    let p = |v: serde_json::Value| v.as_object().unwrap().clone();
    let ws = &w.ws;
    assert_eq!(
        pmpo_checks::named_files(
            ws,
            "image_format",
            &p(json!({"path": "dist/*.png", "format": "png"}))
        ),
        ["dist/a.png", "dist/b.png"]
    );
    assert_eq!(
        pmpo_checks::named_files(ws, "manifest", &p(json!({}))),
        ["artifact_manifest.json"]
    );
    assert_eq!(
        pmpo_checks::named_files(ws, "preview", &p(json!({"report": "dist/r.json"}))),
        ["dist/r.json"]
    );
    assert!(pmpo_checks::named_files(ws, "http", &p(json!({"url": "http://x/"}))).is_empty());
}
