use super::*;

#[test]
fn output_patterns() {
    for ok in [
        "dist/logo.svg",
        "out/*.png",
        "./a.txt",
        "dist/**/*.html",
        "a b.txt",
        "logsx/a.txt",
        "my.state/a",
        "out/logs",
    ] {
        assert!(validate_output_pattern(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../b",
        "~/x",
        "C:\\x",
        ".",
        "./",
        "a[",
        "x\0y",
        // pmpo's own directories, written plainly or as a pattern.
        ".state",
        ".state/pmpo.db",
        "./.refiner/lock",
        "logs",
        "logs/execution/x.jsonl",
        ".s*/db",
        "log?/x",
        "*",
    ] {
        assert!(validate_output_pattern(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn artifact_names() {
    for ok in ["acme-logo", "v1.2", "logo_2", "café"] {
        assert!(validate_artifact_name(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "../x",
        "a/b",
        "a\\b",
        ".hidden",
        "-flag",
        "a\nb",
        "a b",
        "a'b",
        "x..y",
        &"a".repeat(101),
    ] {
        assert!(validate_artifact_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn writers_of_a_path_are_found_by_file_directory_and_glob() {
    let stage = |id: &str, outputs: &[&str]| -> crate::Stage {
        serde_json::from_value(serde_json::json!({"id": id, "outputs": outputs})).unwrap()
    };
    let stages = vec![
        stage("me", &["t/page.html"]),
        stage("file", &["./a/b.html"]),
        stage("dir", &["gen/"]),
        stage("glob", &["out/**/*.txt"]),
    ];
    let w = Writers::new(&stages);
    assert_eq!(w.writer("a/b.html", 0), Some(1));
    assert_eq!(w.writer("gen/x/y.j2", 0), Some(2));
    assert_eq!(w.writer("out/deep/p.txt", 0), Some(3));
    // A stage's own outputs do not make its template unknown.
    assert_eq!(w.writer("t/page.html", 0), None);
    assert_eq!(w.writer("t/page.html", 1), Some(0));
    assert_eq!(w.writer("generated.html", 0), None);
}

#[test]
fn cycles_are_found_in_order() {
    // 0 depends on 2, 1 on 0, 2 on 1.
    let deps = vec![vec![2], vec![0], vec![1]];
    let cycle = find_cycle(&deps).unwrap();
    assert_eq!(cycle.len(), 3);
    assert!(find_cycle(&[vec![], vec![0], vec![0, 1]]).is_none());
}
