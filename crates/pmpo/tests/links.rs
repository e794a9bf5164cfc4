//! A symbolic link planted where pmpo keeps its own files (a cloned
//! repository may ship one) never makes pmpo change a file outside the
//! workspace, and a tool never reads a file through a link leading out of it.

use pmpo_testkit as common;

use std::path::{Path, PathBuf};

use common::{Run, Ws};

/// A plan with one stage and one blocking constraint on its output, so
/// `execute` and `validate` both open the lock, the database and the logs.
const PLAN: &str = "specification:
  artifact_name: t
  artifact_type: code
  constraints:
    - {id: c1, description: a.txt exists, severity: high}
plan:
  stages:
    - id: a
      with: {command: [sh, -c, 'echo hi > a.txt']}
      outputs: [a.txt]
  validation_plan:
    - constraint_id: c1
      validation_method: file_exists
      with: {path: a.txt}
";

/// A file outside the workspace that a planted link points to.
struct Victim {
    _dir: tempfile::TempDir,
    path: PathBuf,
    content: &'static [u8],
}

impl Victim {
    fn new() -> Victim {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("victim.jsonl");
        // Looks like a journal with a torn last line, so a repair would cut it.
        let content: &[u8] = b"{\"precious\": true}\n{\"torn";
        std::fs::write(&path, content).unwrap();
        Victim {
            _dir: dir,
            path,
            content,
        }
    }

    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            std::fs::read(&self.path).unwrap(),
            self.content,
            "{what}: the file outside the workspace was changed"
        );
    }
}

fn workspace_with_link(link: &str, victim: &Path) -> Ws {
    let ws = Ws::new();
    ws.write("plan.yaml", PLAN);
    ws.write("notes.md", "# Notes\n\nA short report.\n");
    let at = ws.p(link);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(victim, &at).unwrap();
    ws
}

fn run(ws: &Ws, args: &[&str]) -> Run {
    common::bin_without_models(ws.path())
        .args(args)
        .output()
        .unwrap()
        .into()
}

const COMMANDS: &[&[&str]] = &[
    &["init", "r", "--type", "content"],
    &["validate", "plan.yaml"],
    &["execute", "plan.yaml"],
    &[
        "refine", "r2", "--type", "content", "--input", "notes.md", "--json",
    ],
    &["status"],
    &["ledger"],
    &["doctor", "--repair"],
];

#[test]
fn a_link_at_any_of_pmpos_own_files_changes_nothing_outside() {
    for link in [
        ".state/lock",
        ".refiner/lock",
        ".state/pmpo.db",
        ".state/pmpo.db-wal",
        ".state/pmpo.db-shm",
        ".state/pmpo.db-journal",
        "logs/executor.jsonl",
        "logs/execution",
        "logs/provider.jsonl",
        ".state/patch_ledger.jsonl",
        ".state/execution_results.json",
        "decisions.md",
        "refinement_log.md",
        "constraints.json",
    ] {
        for args in COMMANDS {
            let victim = Victim::new();
            let ws = workspace_with_link(link, &victim.path);
            let r = run(&ws, args);
            let what = format!("{link} with {args:?} (exit {}): {}", r.code, r.stderr);
            assert_ne!(r.code, 101, "{what}");
            victim.assert_untouched(&what);
            // Nor was it read into the workspace (a log rewritten whole
            // after reading it through the link would copy it in).
            for f in ws.files() {
                let p = ws.p(&f);
                if !std::fs::symlink_metadata(&p)
                    .unwrap()
                    .file_type()
                    .is_symlink()
                {
                    let bytes = std::fs::read(&p).unwrap();
                    assert!(
                        !String::from_utf8_lossy(&bytes).contains("\"precious\""),
                        "{f} holds the outside file's content; {what}"
                    );
                }
            }
            // Refused with a clear error naming the link, or replaced as a
            // link (an atomic rename replaces the link, never its target).
            if r.code != 0 && r.stderr.contains(link) {
                assert!(r.stderr.contains("symbolic link"), "{what}");
            }
        }
    }
}

#[test]
fn the_locks_database_and_logs_behind_a_link_are_refused_by_name() {
    for (link, args) in [
        (".state/lock", &["validate", "plan.yaml"][..]),
        (".state/lock", &["execute", "plan.yaml"]),
        (".refiner/lock", &["init", "r", "--type", "content"]),
        (
            ".refiner/lock",
            &["refine", "r2", "--type", "content", "--input", "notes.md"],
        ),
        (".state/pmpo.db", &["execute", "plan.yaml"]),
        (".state/pmpo.db", &["validate", "plan.yaml"]),
        (".state/pmpo.db-wal", &["execute", "plan.yaml"]),
        (".state/pmpo.db-shm", &["validate", "plan.yaml"]),
        ("logs/executor.jsonl", &["execute", "plan.yaml"]),
        ("logs/execution", &["execute", "plan.yaml"]),
        ("refinement_log.md", &["validate", "plan.yaml"]),
        ("refinement_log.md", &["execute", "plan.yaml"]),
        (
            "decisions.md",
            &["refine", "r2", "--type", "content", "--input", "notes.md"],
        ),
    ] {
        let victim = Victim::new();
        let ws = workspace_with_link(link, &victim.path);
        let r = run(&ws, args);
        let what = format!("{link} with {args:?}: {}", r.stderr);
        assert_eq!(r.code, 1, "{what}");
        // The stage log's name holds the run's id: the link is its directory.
        let words = if link == "logs/execution" {
            format!(
                "leads to `{}` through a symbolic link",
                victim.path.display()
            )
        } else {
            format!(
                "it is a symbolic link (to `{}`), and pmpo never opens its own files through a link",
                victim.path.display()
            )
        };
        assert!(r.stderr.contains(&words), "{what}");
        assert!(r.stderr.contains(link), "{what}");
        victim.assert_untouched(&what);
    }
    // The status of a workspace whose database is a link: refused too.
    let victim = Victim::new();
    let ws = workspace_with_link(".state/pmpo.db", &victim.path);
    let r = run(&ws, &["status"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("is refused: it is a symbolic link"));
    victim.assert_untouched("status");
}

#[test]
fn doctor_moves_a_linked_journal_aside_instead_of_cutting_its_target() {
    for link in [
        "logs/executor.jsonl",
        ".state/patch_ledger.jsonl",
        ".state/pmpo.db",
    ] {
        let victim = Victim::new();
        let ws = workspace_with_link(link, &victim.path);
        let r = run(&ws, &["doctor"]);
        assert_eq!(r.code, 1, "{link}: {}", r.stdout);
        assert!(
            r.stdout.contains(&format!("problem: {link}")) && r.stdout.contains("symbolic link"),
            "{link}: {}",
            r.stdout
        );
        let r = run(&ws, &["doctor", "--repair"]);
        assert_eq!(r.code, 0, "{link}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains(&format!("repaired: {link}")),
            "{}",
            r.stdout
        );
        victim.assert_untouched(link);
        // The link itself was moved aside; the next run starts a new file.
        assert!(std::fs::symlink_metadata(ws.p(link)).is_err(), "{link}");
        assert_eq!(run(&ws, &["execute", "plan.yaml"]).code, 0, "{link}");
        victim.assert_untouched(link);
    }
}

const OUTSIDE: &str = "OUTSIDE-THE-WORKSPACE-7f3a";

/// Every file under the workspace that is not one of `links`, as text.
fn files_written(ws: &Ws, links: &[&str]) -> Vec<(String, String)> {
    ws.files()
        .into_iter()
        .filter(|f| !links.contains(&f.as_str()))
        .map(|f| {
            let text = String::from_utf8_lossy(&std::fs::read(ws.p(&f)).unwrap()).into_owned();
            (f, text)
        })
        .collect()
}

#[test]
fn tools_do_not_read_a_file_through_a_link_leading_out() {
    let outside = tempfile::tempdir().unwrap();
    let text = outside.path().join("notes.md");
    std::fs::write(&text, format!("# {OUTSIDE}\n")).unwrap();
    let svg = outside.path().join("logo.svg");
    std::fs::write(
        &svg,
        format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"8\" height=\"8\"><title>{OUTSIDE}</title></svg>"),
    )
    .unwrap();
    let json = outside.path().join("spec.json");
    std::fs::write(
        &json,
        format!("{{\"root\": {{\"id\": \"{OUTSIDE}\", \"type\": \"text\"}}}}"),
    )
    .unwrap();
    let ws = Ws::new();
    let links = [
        ("in.md", &text),
        ("page.html", &text),
        ("logo.svg", &svg),
        ("spec.json", &json),
        ("schema.json", &json),
    ];
    for (name, target) in links {
        std::os::unix::fs::symlink(target, ws.p(name)).unwrap();
    }
    // A link that stays inside the workspace is followed, as checks do.
    ws.write("real.html", "<p>{{ X }}</p>\n");
    std::os::unix::fs::symlink(ws.p("real.html"), ws.p("inner.html")).unwrap();
    ws.write(
        "plan.yaml",
        "specification: {artifact_name: t, artifact_type: code}
plan:
  stages:
    - {id: markdown, tool: markdown, with: {input: in.md, output: dist/md.html}}
    - {id: template, tool: template, with: {template: page.html, output: dist/t.html}}
    - {id: template_files, tool: template, with: {template: real.html, output: dist/f.html, files: {X: in.md}}}
    - {id: rasterize, tool: rasterize, with: {input: logo.svg, sizes: [8]}}
    - {id: prompt, tool: prompt, with: {input: in.md, output: dist/p.md, meta: dist/p.json}}
    - {id: a2ui, tool: a2ui, with: {input: spec.json, output: dist/a.json}}
    - {id: run_schema, with: {command: [echo, '{}'], outputs_json: true, schema: schema.json}}
    - {id: inside, tool: template, with: {template: inner.html, output: dist/i.html, vars: {X: fine}}}
",
    );
    let r = run(&ws, &["execute", "plan.yaml", "--keep-going", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let res = r.json();
    for (stage, file) in [
        ("markdown", "in.md"),
        ("template", "page.html"),
        ("template_files", "in.md"),
        ("rasterize", "logo.svg"),
        ("prompt", "in.md"),
        ("a2ui", "spec.json"),
        ("run_schema", "schema.json"),
    ] {
        let err = common::error_of(&res, stage);
        assert_eq!(err["kind"], "invalid_input", "{stage}: {err}");
        let message = err["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("refused `{file}`: it is a symbolic link to `")),
            "{stage}: {message}"
        );
        assert!(
            message.contains("does not follow a link out of it"),
            "{message}"
        );
    }
    assert_eq!(ws.read("dist/i.html"), "<p>fine</p>\n");
    let names: Vec<&str> = links.iter().map(|(n, _)| *n).collect();
    for (f, text) in files_written(&ws, &names) {
        assert!(!text.contains(OUTSIDE), "{f} holds what the link points to");
    }
}

#[test]
fn the_preview_page_server_does_not_serve_a_link_leading_out() {
    if !common::have_chromium() {
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, OUTSIDE).unwrap();
    let ws = Ws::new();
    std::os::unix::fs::symlink(&secret, ws.p("leak.txt")).unwrap();
    ws.write("inside.txt", "inside\n");
    // The page fetches both and prints what it got on the console, which the
    // preview report keeps.
    ws.write(
        "page.html",
        "<!doctype html><title>t</title><p>page</p>
<script>
for (const f of ['leak.txt', 'inside.txt']) {
  fetch(f).then(r => r.text().then(t => console.error(f + ' ' + r.status + ' ' + t)));
}
</script>
",
    );
    ws.write(
        "plan.yaml",
        "specification: {artifact_name: t, artifact_type: ui}
plan:
  stages:
    - {id: look, tool: preview, with: {input: page.html, id: page}}
",
    );
    let r = run(&ws, &["execute", "plan.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = ws.read_json("dist/previews/page/preview-report.json");
    let failed: Vec<&str> = report["failed_requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == 404)
        .filter_map(|f| f["url"].as_str())
        .collect();
    assert!(failed.iter().any(|u| u.ends_with("/leak.txt")), "{report}");
    assert!(
        !failed.iter().any(|u| u.ends_with("/inside.txt")),
        "{report}"
    );
    for (f, text) in files_written(&ws, &["leak.txt"]) {
        assert!(!text.contains(OUTSIDE), "{f} holds what the link points to");
    }
}

#[test]
fn check_does_not_read_a_template_through_a_link_leading_out() {
    let outside = tempfile::tempdir().unwrap();
    let tpl = outside.path().join("t.html");
    std::fs::write(&tpl, "{{ OUTSIDE_VARIABLE }}").unwrap();
    let ws = Ws::new();
    std::os::unix::fs::symlink(&tpl, ws.p("t.html")).unwrap();
    ws.write(
        "plan.yaml",
        "specification: {artifact_name: t, artifact_type: code}\nplan:\n  stages:\n    - {id: a, tool: template, with: {template: t.html, output: o.html}}\n",
    );
    let r = ws.run_ok(&["check", "plan.yaml"]);
    assert!(!r.stderr.contains("OUTSIDE_VARIABLE"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("outside the workspace, through a symbolic link: not read"),
        "{}",
        r.stderr
    );
}

#[test]
fn rasterize_loads_an_svg_image_only_from_inside_the_workspace() {
    let ws = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    // A picture (an SVG: the only image kind this build draws) outside the
    // workspace, the same inside it, and a link to the outside one.
    let red = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"8\" height=\"8\"><rect width=\"8\" height=\"8\" fill=\"#f00\"/></svg>";
    let secret = outside.path().join("secret.svg");
    std::fs::write(&secret, red).unwrap();
    ws.write("art/img/inside.svg", red);
    std::os::unix::fs::symlink(&secret, ws.p("art/img/linked.svg")).unwrap();
    let with_image = |href: &str| {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"8\" height=\"8\"><image href=\"{href}\" width=\"8\" height=\"8\"/></svg>"
        )
    };
    ws.write("art/empty.svg", &with_image("none.svg"));
    ws.write("art/inside.svg", &with_image("img/inside.svg"));
    ws.write(
        "art/absolute.svg",
        &with_image(&secret.display().to_string()),
    );
    ws.write("art/linked.svg", &with_image("img/linked.svg"));
    ws.write("art/above.svg", &with_image("../../secret.svg"));
    ws.write(
        "plan.yaml",
        "specification: {artifact_name: t, artifact_type: logo}
plan:
  stages:
    - {id: empty, tool: rasterize, with: {input: art/empty.svg, sizes: [8]}}
    - {id: inside, tool: rasterize, with: {input: art/inside.svg, sizes: [8]}}
    - {id: absolute, tool: rasterize, with: {input: art/absolute.svg, sizes: [8]}}
    - {id: linked, tool: rasterize, with: {input: art/linked.svg, sizes: [8]}}
    - {id: above, tool: rasterize, with: {input: art/above.svg, sizes: [8]}}
",
    );
    ws.run_ok(&["execute", "plan.yaml"]);
    let png = |name: &str| std::fs::read(ws.p(&format!("art/{name}-8.png"))).unwrap();
    // An image inside the workspace is drawn; one outside is not read at all.
    assert_ne!(png("inside"), png("empty"));
    for name in ["absolute", "linked", "above"] {
        assert_eq!(
            png(name),
            png("empty"),
            "{name}: the outside image was drawn"
        );
    }
}
