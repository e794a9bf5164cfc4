//! Every `--help` teaches: each argument has a description, a default is
//! said once, and prose paragraphs are wrapped by the terminal's width, not
//! by line breaks written into the text (which left short ragged lines
//! such as "... (a stage awaits a decision,\nor every adapter ...").

use pmpo_testkit::bin;

/// The help of `pmpo ARGS... --help` at a terminal this wide.
fn help(args: &[&str], columns: usize) -> String {
    let out = bin()
        .args(args)
        .arg("--help")
        .env("COLUMNS", columns.to_string())
        .output()
        .expect("run pmpo");
    assert!(
        out.status.success(),
        "pmpo {args:?} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands listed under `Commands:` of a help text.
fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

/// Every command path: `[]`, `[execute]`, `[adapters, reset]`, ...
fn commands() -> Vec<Vec<String>> {
    let mut all = vec![Vec::new()];
    let mut i = 0;
    while i < all.len() {
        let path = all[i].clone();
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        for sub in subcommands(&help(&args, 1000)) {
            let mut p = path.clone();
            p.push(sub);
            all.push(p);
        }
        i += 1;
    }
    all
}

/// The argument entries of a help text: (the flag or name, its description).
fn entries(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut in_args = false;
    for line in text.lines() {
        if line == "Arguments:" || line == "Options:" {
            in_args = true;
            continue;
        }
        if line.trim().is_empty() || !line.starts_with(' ') {
            in_args = false;
            continue;
        }
        if !in_args {
            continue;
        }
        let body = line.trim_start();
        let indent = line.len() - body.len();
        let starts_entry = indent <= 6 && (body.starts_with('-') || body.starts_with('<'));
        if starts_entry {
            // `  -w, --workspace <DIR>  The workspace` or the flag alone on its
            // line (the description follows, indented further).
            let (flag, desc) = match body.find("  ") {
                Some(at) => (&body[..at], body[at..].trim()),
                None => (body, ""),
            };
            out.push((flag.to_string(), desc.to_string()));
        } else if let Some(last) = out.last_mut() {
            last.1.push(' ');
            last.1.push_str(body);
        }
    }
    out
}

#[test]
fn every_argument_has_a_description_and_says_its_default_once() {
    let mut problems = Vec::new();
    for path in commands() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args, 1000);
        for (flag, desc) in entries(&text) {
            let name = format!("pmpo {} {flag}", path.join(" "));
            if desc.trim().is_empty() {
                problems.push(format!("{name}: no description"));
            }
            let said = desc.matches("(default").count() + desc.matches("default:").count();
            if desc.contains("[default:") && said > 1 {
                problems.push(format!("{name}: the default is said twice: {desc}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn prose_is_wrapped_by_the_terminal_not_by_the_text() {
    let mut problems = Vec::new();
    for path in commands() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        // On a wide terminal a paragraph is one line: a line of prose followed
        // by one that goes on mid-sentence (lowercase or a digit) was broken
        // by the text itself.
        let text = help(&args, 1000);
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let prose = !a.starts_with(' ') && !a.trim().is_empty();
            let goes_on = b
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.');
            if prose && goes_on {
                problems.push(format!("pmpo {}: {a:?} / {b:?}", path.join(" ")));
            }
        }
        // On a narrow one, no line is wider than the terminal unless it is one
        // unbreakable word.
        for line in help(&args, 60).lines() {
            if line.chars().count() > 60
                && line.trim().contains(' ')
                && !line.starts_with("  pmpo")
                && !line.starts_with("Usage:")
            {
                problems.push(format!("pmpo {}: wider than 60: {line:?}", path.join(" ")));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
