//! Checks that run something or read text: commands, syntax, imports, HTTP, text search.

mod common;
use common::*;
use serde_json::json;

#[test]
fn commands_exit_codes_timeouts_and_output() {
    let w = Ws::new();
    pass(&w.check(
        "command",
        json!({"command": ["sh", "-c", "echo built"], "stdout_contains": "built"}),
    ));
    let o = w.check(
        "build",
        json!({"command": ["sh", "-c", "echo oops >&2; exit 3"]}),
    );
    fail(&o, "exited with 3, expected 0: oops");
    assert_eq!(o.evidence["stderr"], "oops\n");
    pass(&w.check(
        "tests",
        json!({"command": ["sh", "-c", "exit 3"], "expect_exit": 3}),
    ));
    fail(
        &w.check("lint", json!({"command": ["no-such-linter-xyz"]})),
        "not found",
    );
    let start = std::time::Instant::now();
    let o = w.check(
        "command",
        json!({"command": ["sh", "-c", "sleep 30 & sleep 30"], "timeout": "300ms"}),
    );
    fail(&o, "timed out");
    assert!(
        start.elapsed().as_secs() < 10,
        "the whole group is killed at the limit"
    );
    // A process that leaves the group (setsid) and keeps the pipes open cannot hang the check.
    if std::path::Path::new("/usr/bin/setsid").exists()
        || std::path::Path::new("/bin/setsid").exists()
    {
        let start = std::time::Instant::now();
        let o = w.check(
            "command",
            json!({"command": ["sh", "-c", "setsid sleep 5 & echo started"]}),
        );
        pass(&o);
        assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    }
    w.write("sub/f.txt", "x");
    pass(&w.check(
        "command",
        json!({"command": ["test", "-f", "f.txt"], "cwd": "sub"}),
    ));
}

#[test]
fn syntax_and_import_checks() {
    let w = Ws::new();
    w.write("ok.py", "def f(x):\n    return x + 1\n");
    w.write("bad.py", "def f(x)\n    return x\n");
    w.write("ok.js", "const f = (x) => x + 1;\n");
    w.write("bad.js", "const f = (x => ;\n");
    w.write("pkg_ok.py", "VALUE = 1\n");
    w.write("pkg_bad.py", "import no_such_module_xyz\n");
    pass(&w.check("syntax", json!({"path": ["ok.py", "ok.js"]})));
    fail(
        &w.check("syntax", json!({"path": "bad.py"})),
        "python syntax error",
    );
    fail(
        &w.check("syntax", json!({"path": "bad.js"})),
        "node syntax error",
    );
    assert!(
        !w.p("__pycache__").exists(),
        "py_compile must not litter the workspace"
    );
    pass(&w.check("import", json!({"module": "pkg_ok"})));
    fail(
        &w.check("import", json!({"module": "pkg_bad"})),
        "does not import",
    );
    fail(
        &w.check("import", json!({"module": "os; print(1)"})),
        "not a module name",
    );
    pass(&w.check("import", json!({"module": "path", "language": "node"})));
    fail(
        &w.check(
            "import",
            json!({"module": "no-such-node-module-xyz", "language": "node"}),
        ),
        "does not import",
    );
}

// ---------- http ----------

fn serve(status: &'static str, body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn http_health() {
    let w = Ws::new();
    let ok = serve("200 OK", "{\"status\": \"healthy\"}");
    let down = serve("503 Service Unavailable", "nope");
    pass(&w.check(
        "http",
        json!({"url": format!("http://127.0.0.1:{ok}/health"), "contains": "healthy"}),
    ));
    fail(
        &w.check(
            "http",
            json!({"url": format!("http://localhost:{ok}/health"), "contains": "sick"}),
        ),
        "does not contain",
    );
    fail(
        &w.check(
            "http",
            json!({"url": format!("http://127.0.0.1:{down}/health")}),
        ),
        "status 503, expected 200",
    );
    pass(&w.check(
        "http",
        json!({"url": format!("http://127.0.0.1:{down}/"), "status": 503}),
    ));
    // Nobody listening.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fail(
        &w.check(
            "http",
            json!({"url": format!("http://127.0.0.1:{free}/"), "timeout": "2s"}),
        ),
        "failed",
    );
    // Not loopback: refused without connecting, so not checked.
    unseen(
        &w.check("http", json!({"url": "http://192.0.2.1/health"})),
        "not a loopback address",
    );
}

// ---------- text ----------

#[test]
fn contains_not_contains_regex() {
    let w = Ws::new();
    w.write("dist/index.html", "<h1>Acme</h1>\n<p>{{TAGLINE}}</p>\n");
    pass(&w.check(
        "contains",
        json!({"path": "dist/index.html", "text": ["Acme", "<h1>"]}),
    ));
    fail(
        &w.check(
            "contains",
            json!({"path": "dist/index.html", "text": "acme"}),
        ),
        "does not contain \"acme\"",
    );
    pass(&w.check(
        "contains",
        json!({"path": "dist/index.html", "text": "acme", "ignore_case": true}),
    ));
    fail(
        &w.check("not_contains", json!({"path": "dist/*.html", "text": "{{"})),
        "contains \"{{\" at line 2",
    );
    pass(&w.check(
        "regex",
        json!({"path": "dist/index.html", "pattern": "(?m)^<h1>"}),
    ));
    fail(
        &w.check(
            "regex",
            json!({"path": "dist/index.html", "pattern": "\\{\\{[A-Z_]+\\}\\}", "max": 0}),
        ),
        "expected at most 0",
    );
    fail(
        &w.check(
            "regex",
            json!({"path": "dist/index.html", "pattern": "<h2>"}),
        ),
        "expected at least 1",
    );
}

// ---------- manifest ----------
