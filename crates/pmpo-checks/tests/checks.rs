//! The file checks on real files, good and bad (each check must be able to
//! fail), and what every check refuses: links out, special files, paths
//! outside, binary and enormous files. The other families have their own files.

mod common;
use common::*;
use serde_json::json;

// ---------- files ----------

#[test]
fn file_exists_and_globs() {
    let w = Ws::new();
    w.write("dist/a.txt", "a");
    pass(&w.check("file_exists", json!({"path": "dist/a.txt"})));
    pass(&w.check("file-exists", json!({"path": ["dist/a.txt", "dist/*.txt"]})));
    fail(
        &w.check("file_exists", json!({"path": "dist/b.txt"})),
        "missing: dist/b.txt",
    );
    // A glob that matches nothing cannot pass.
    fail(
        &w.check("file_exists", json!({"path": "dist/*.png"})),
        "matches no file",
    );
    // A directory is not a file.
    fail(&w.check("non_empty", json!({"path": "dist"})), "directory");
}

#[test]
fn sizes_and_counts() {
    let w = Ws::new();
    w.write("e.txt", "");
    w.write("k.bin", vec![7u8; 2048]);
    fail(
        &w.check("non_empty", json!({"path": "e.txt"})),
        "e.txt is empty",
    );
    pass(&w.check("non_empty", json!({"path": "k.bin"})));
    pass(&w.check(
        "file_size",
        json!({"path": "k.bin", "min_bytes": 1, "max_bytes": "2KiB"}),
    ));
    fail(
        &w.check("file_size", json!({"path": "k.bin", "max_bytes": "2KB"})),
        "above the maximum 2000",
    );
    fail(
        &w.check("file_size", json!({"path": "e.txt", "min_bytes": 1})),
        "below the minimum 1",
    );
    fail(
        &w.check("max_file_size", json!({"path": "k.bin", "max_bytes": 100})),
        "above the maximum 100",
    );
    for i in 0..3 {
        w.write(&format!("out/{i}.png"), png(4, 4));
    }
    w.write("out/sub/x.png", png(4, 4));
    pass(&w.check("glob_count", json!({"pattern": "out/*.png", "equals": 3})));
    pass(&w.check(
        "glob_count",
        json!({"pattern": "out/**/*.png", "min": 4, "max": 4}),
    ));
    fail(
        &w.check("glob_count", json!({"pattern": "out/*.png", "min": 5})),
        "expected at least 5",
    );
    fail(
        &w.check("glob_count", json!({"pattern": "none/*.png", "min": 1})),
        "matches 0 file(s)",
    );
}

// ---------- safety ----------

#[cfg(unix)]
#[test]
fn symlinks_leading_outside_are_refused_not_followed() {
    let w = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.json"), "{\"a\": 1}").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.json"), w.p("link.json")).unwrap();
    std::os::unix::fs::symlink(outside.path(), w.p("dirlink")).unwrap();
    for name in ["json", "file_exists", "non_empty"] {
        fail(
            &w.check(name, json!({"path": "link.json"})),
            "outside the workspace",
        );
    }
    fail(
        &w.check("contains", json!({"path": "link.json", "text": "a"})),
        "refused, not followed",
    );
    fail(
        &w.check("json", json!({"path": "dirlink/secret.json"})),
        "symbolic link",
    );
    // A command's working directory cannot be a link leading out either.
    fail(
        &w.check("command", json!({"command": ["true"], "cwd": "dirlink"})),
        "outside the workspace",
    );
    fail(
        &w.check("import", json!({"module": "os", "cwd": "dirlink"})),
        "outside the workspace",
    );
    fail(
        &w.check("glob_count", json!({"pattern": "dirlink/*.json", "min": 1})),
        "symbolic link",
    );
    // Globs do not walk through a linked directory, and a linked file leading out is refused.
    w.write("g/ok.json", "{}");
    std::os::unix::fs::symlink(outside.path(), w.p("g/out")).unwrap();
    pass(&w.check("json", json!({"path": "g/**/*.json"})));
    std::os::unix::fs::symlink(outside.path().join("secret.json"), w.p("g/leak.json")).unwrap();
    fail(
        &w.check("json", json!({"path": "g/*.json"})),
        "refused, not followed",
    );
    // A link that stays inside is fine.
    w.write("real.json", "{}");
    std::os::unix::fs::symlink(w.p("real.json"), w.p("inner.json")).unwrap();
    pass(&w.check("json", json!({"path": "inner.json"})));
}

#[cfg(unix)]
#[test]
fn special_files_are_refused_without_blocking() {
    let w = Ws::new();
    let made = std::process::Command::new("mkfifo")
        .arg(w.p("pipe.json"))
        .status()
        .is_ok_and(|s| s.success());
    if made {
        fail(
            &w.check("json", json!({"path": "pipe.json"})),
            "not a regular file",
        );
    }
}

#[test]
fn paths_outside_the_workspace_are_refused() {
    let w = Ws::new();
    for bad in ["../x.json", "/etc/passwd", "a/../../x"] {
        let o = w.check("json", json!({"path": bad}));
        assert!(!o.passed(), "{bad}: {}", o.message);
        assert!(o.message.contains("workspace"), "{bad}: {}", o.message);
    }
}

#[test]
fn binary_where_text_is_expected_fails_clearly() {
    let w = Ws::new();
    w.write("logo.json", png(8, 8));
    fail(
        &w.check("json", json!({"path": "logo.json"})),
        "is not text",
    );
    w.write("latin1.md", b"# Caf\xe9\n");
    fail(
        &w.check("markdown_headings", json!({"path": "latin1.md"})),
        "not valid UTF-8",
    );
    fail(
        &w.check("contains", json!({"path": "logo.json", "text": "x"})),
        "NUL byte",
    );
}

/// A file too large to read whole was not looked at: not checked, not failed.
#[test]
fn enormous_files_are_refused_before_reading() {
    let w = Ws::new();
    let f = std::fs::File::create(w.p("huge.json")).unwrap();
    f.set_len(pmpo_checks::MAX_TEXT_BYTES + 1).unwrap(); // sparse: no disk used
    let start = std::time::Instant::now();
    for name in ["json", "yaml", "xml", "html", "markdown_headings"] {
        unseen(
            &w.check(name, json!({"path": "huge.json"})),
            "this check reads at most",
        );
    }
    unseen(
        &w.check("regex", json!({"path": "huge.json", "pattern": "x"})),
        "reads at most",
    );
    unseen(
        &w.check("json_schema", json!({"path": "huge.json", "schema": {}})),
        "reads at most",
    );
    assert!(
        start.elapsed().as_secs() < 5,
        "refusing must not read the file"
    );
}

#[test]
fn enormous_images_are_measured_from_their_headers() {
    use std::io::{Seek, SeekFrom, Write};
    let w = Ws::new();
    // A 1 GiB PNG (sparse): signature, IHDR, one huge IDAT chunk, IEND at the very end.
    let small = png(4000, 3000);
    let ihdr_end = 8 + 25;
    let idat_len: u64 = 1 << 30;
    let mut f = std::fs::File::create(w.p("huge.png")).unwrap();
    f.write_all(&small[..ihdr_end]).unwrap();
    f.write_all(&(idat_len as u32).to_be_bytes()).unwrap();
    f.write_all(b"IDAT").unwrap();
    f.seek(SeekFrom::Current(idat_len as i64)).unwrap();
    f.write_all(&[0, 0, 0, 0]).unwrap(); // CRC
    f.write_all(&small[small.len() - 12..]).unwrap(); // IEND
    drop(f);
    let start = std::time::Instant::now();
    pass(&w.check(
        "image_dimensions",
        json!({"path": "huge.png", "size": "4000x3000"}),
    ));
    // Cut before the end: truncated, and said so.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(w.p("huge.png"))
        .unwrap();
    f.set_len(idat_len / 2).unwrap();
    fail(
        &w.check("image_format", json!({"path": "huge.png", "format": "png"})),
        "truncated PNG",
    );
    assert!(
        start.elapsed().as_secs() < 5,
        "headers only, never the pixels"
    );
}

#[test]
fn truncated_and_empty_files() {
    let w = Ws::new();
    w.write("t.json", "{\"a\": [1, 2");
    fail(&w.check("json", json!({"path": "t.json"})), "line 1 column");
    let mut p = png(32, 32);
    p.truncate(p.len() - 20);
    w.write("t.png", &p);
    fail(
        &w.check(
            "image_dimensions",
            json!({"path": "t.png", "size": "32x32"}),
        ),
        "truncated PNG",
    );
    w.write("e.png", "");
    fail(
        &w.check("image_format", json!({"path": "e.png", "format": "png"})),
        "empty",
    );
    let mut j = jpeg(10, 10);
    j.truncate(j.len() - 2);
    w.write("t.jpg", &j);
    fail(
        &w.check("image_format", json!({"path": "t.jpg", "format": "jpeg"})),
        "truncated JPEG",
    );
}

// ---------- well-formedness ----------
