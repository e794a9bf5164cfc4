//! The skill for agent hosts (`skills/pmpo/SKILL.md` and the references
//! beside it), `docs/agents.md`, `docs/configuration.md` and the README stay
//! true to pmpo:
//!
//! - the skill's front matter parses as YAML and has the `name` and
//!   `description` the Agent Skills format requires, within its limits;
//! - every `pmpo ...` command line they show (in a shell block or a code
//!   span) names a subcommand of the real binary and only flags its `--help`
//!   lists, with a value among its possible values where it has them;
//! - every MCP tool they name is one of the server's, every tool call they
//!   show (`` `refine {"name": ...}` ``) gives only that tool's arguments and
//!   the ones it needs, and the skill's tool table lists every tool;
//! - every answer example (a ```` ```json answer=PHASE ```` block) satisfies
//!   the schema pmpo checks that phase's answers with, and the plan example
//!   passes `pmpo check`.
//!
//! Each checker returns its problems; the last test feeds each one a wrong
//! snippet, so none of them passes by finding nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pmpo_testkit::*;
use serde_json::{Value, json};

/// The MCP server's tools: name, the arguments it needs, the ones it may take.
const TOOLS: &[(&str, &[&str], &[&str])] = &[
    ("check_plan", &["plan"], &[]),
    (
        "execute",
        &["plan"],
        &["force", "keep_going", "jobs", "via"],
    ),
    ("validate", &["plan"], &[]),
    ("preview", &["input"], &["id", "viewport"]),
    ("artifact_status", &["name"], &[]),
    ("artifact_list", &[], &[]),
    (
        "refine",
        &["name"],
        &["type", "inputs", "intent", "max_iterations", "content_type"],
    ),
    ("answer", &["answer"], &["name", "run_id", "stage"]),
    ("approve", &["name", "decision"], &["note"]),
    ("ledger", &[], &["path", "run"]),
    ("restore", &[], &["path", "run"]),
];

/// The schema each phase's answer is checked with (`schemas/`).
const ANSWER_SCHEMAS: &[(&str, &str)] = &[
    ("specify", "specify-answer.schema.json"),
    ("plan", "plan-answer.schema.json"),
    ("reflect", "reflect-judgement.schema.json"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The skill's files: SKILL.md first, then its references.
fn skill_files() -> Vec<PathBuf> {
    let dir = root().join("skills/pmpo");
    let mut files = vec![dir.join("SKILL.md")];
    let mut refs: Vec<PathBuf> = std::fs::read_dir(dir.join("references"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    refs.retain(|p| p.extension().is_some_and(|x| x == "md"));
    refs.sort();
    files.extend(refs);
    files
}

/// Every file whose commands and tool calls are checked.
fn checked_files() -> Vec<(String, String)> {
    let mut files = skill_files();
    for doc in ["docs/agents.md", "docs/configuration.md", "README.md"] {
        files.push(root().join(doc));
    }
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            let name = p.strip_prefix(root()).unwrap_or(&p).display().to_string();
            (name, text)
        })
        .collect()
}

// ---- Markdown ----

/// The fenced blocks of a Markdown text: (info string, body).
fn fences(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(info) = t.strip_prefix("```") {
            match open.take() {
                Some(block) => out.push(block),
                None => open = Some((info.trim().to_string(), String::new())),
            }
        } else if let Some((_, body)) = &mut open {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// The text outside fenced blocks.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The code spans of the prose: a run of N backticks up to the next run of
/// exactly N (CommonMark), trimmed.
fn code_spans(text: &str) -> Vec<String> {
    let text = prose(text).replace('\n', " ");
    let b = text.as_bytes();
    let run_at = |i: usize| b[i..].iter().take_while(|&&c| c == b'`').count();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let start = i + n;
        let mut j = start;
        let mut end = None;
        while j < b.len() {
            if b[j] == b'`' {
                let m = run_at(j);
                if m == n {
                    end = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match end {
            Some(e) => {
                spans.push(text[start..e].trim().to_string());
                i = e + n;
            }
            None => i = start,
        }
    }
    spans
}

/// A shell line split into words (quotes and backslashes as a shell reads
/// them), up to a comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => words.extend(word.take()),
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Every `pmpo ...` command line of a text: the lines of its shell blocks
/// and its code spans that start with `pmpo `.
fn pmpo_commands(text: &str) -> Vec<Vec<String>> {
    let shell = ["sh", "bash", "shell", "console", ""];
    let mut lines: Vec<String> = fences(text)
        .into_iter()
        .filter(|(info, _)| shell.contains(&info.as_str()))
        .flat_map(|(_, body)| body.lines().map(str::to_string).collect::<Vec<_>>())
        .map(|l| l.trim().trim_start_matches("$ ").to_string())
        .collect();
    lines.extend(code_spans(text));
    let mut commands: Vec<Vec<String>> = lines
        .iter()
        // `claude mcp add pmpo -- pmpo mcp`: the command the host starts.
        .filter_map(|l| {
            l.find("-- pmpo ")
                .map_or(Some(l.as_str()), |i| Some(&l[i + 3..]))
        })
        .filter(|l| l.starts_with("pmpo "))
        .map(shell_words)
        .collect();
    commands.extend(config_commands(text));
    commands
}

/// The pmpo commands of the JSON configuration blocks: every object whose
/// `command` is `pmpo`, with its `args`. A block that is not JSON is one
/// command that names the problem.
fn config_commands(text: &str) -> Vec<Vec<String>> {
    fn walk(v: &Value, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) => {
                if m.get("command").and_then(Value::as_str) == Some("pmpo") {
                    let mut words = vec!["pmpo".to_string()];
                    let args = m.get("args").and_then(Value::as_array);
                    words.extend(
                        args.into_iter()
                            .flatten()
                            .map(|a| a.as_str().unwrap_or("?").to_string()),
                    );
                    out.push(words);
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (info, body) in fences(text).into_iter().filter(|(i, _)| i == "json") {
        match serde_json::from_str::<Value>(&body) {
            Ok(v) => walk(&v, &mut out),
            Err(e) => out.push(vec![
                "pmpo".into(),
                format!("(a ```{info} block that is not JSON: {e})"),
            ]),
        }
    }
    out
}

// ---- the binary's options ----

/// One subcommand's options, from its `--help`: each flag (`-f`, `--file`)
/// and the possible values it lists, if any.
#[derive(Default)]
struct Options {
    flags: BTreeMap<String, Option<Vec<String>>>,
}

/// The options of each subcommand asked so far.
type Cache = BTreeMap<String, Result<Options, String>>;

fn option_specs(help: &str) -> Options {
    let mut opts = Options::default();
    let mut blocks: Vec<(Vec<String>, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if t.starts_with('-') {
            let spec = t.split("  ").next().unwrap_or(t);
            let names = spec
                .split(", ")
                .filter_map(|s| s.split([' ', '=', '[']).next())
                .filter(|s| s.starts_with('-'))
                .map(str::to_string)
                .collect();
            blocks.push((names, t.to_string()));
        } else if t.is_empty() || !line.starts_with(' ') {
            blocks.push((Vec::new(), String::new()));
        } else if let Some((_, text)) = blocks.last_mut() {
            text.push(' ');
            text.push_str(t);
        }
    }
    for (names, text) in blocks {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let values = text.split("[possible values: ").nth(1).map(|v| {
            v.split(']')
                .next()
                .unwrap_or("")
                .split(", ")
                .map(str::to_string)
                .collect()
        });
        for n in names {
            opts.flags.insert(n, values.clone());
        }
    }
    opts
}

/// The options of `pmpo SUB`, or why there are none.
fn options_of<'c>(sub: &str, cache: &'c mut Cache) -> Result<&'c Options, String> {
    cache
        .entry(sub.to_string())
        .or_insert_with(|| {
            let out = bin().args([sub, "--help"]).output().unwrap();
            if out.status.success() {
                Ok(option_specs(&String::from_utf8_lossy(&out.stdout)))
            } else {
                Err(format!(
                    "`pmpo {sub} --help` fails: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// What is wrong with one `pmpo ...` command line.
fn command_problems(words: &[String], cache: &mut Cache) -> Vec<String> {
    let line = words.join(" ");
    let Some(sub) = words.get(1).filter(|s| !s.starts_with('-')) else {
        return vec![format!("`{line}`: no subcommand")];
    };
    let opts = match options_of(sub, cache) {
        Ok(o) => o,
        Err(e) => return vec![format!("`{line}`: {e}")],
    };
    let mut problems = Vec::new();
    let mut i = 2;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        if w == "--" {
            break;
        }
        if !w.starts_with('-') || w == "-" {
            continue;
        }
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (w.as_str(), None),
        };
        match opts.flags.get(flag) {
            None => problems.push(format!("`{line}`: `pmpo {sub}` has no option `{flag}`")),
            Some(Some(values)) => {
                let value = inline.or_else(|| words.get(i).cloned()).unwrap_or_default();
                if !values.contains(&value) {
                    problems.push(format!(
                        "`{line}`: `{flag} {value}` is not one of {values:?}"
                    ));
                }
            }
            Some(None) => {}
        }
    }
    problems
}

// ---- MCP tools ----

fn tool(
    name: &str,
) -> Option<&'static (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
)> {
    TOOLS.iter().find(|(n, _, _)| *n == name)
}

/// What is wrong with the tool calls (`` `name {json}` ``) of a text.
fn tool_call_problems(text: &str) -> (usize, Vec<String>) {
    let mut calls = 0;
    let mut problems = Vec::new();
    for span in code_spans(text) {
        let Some((name, args)) = span.split_once(' ') else {
            continue;
        };
        if !args.starts_with('{') || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            continue;
        }
        calls += 1;
        let Some((_, needs, may)) = tool(name) else {
            problems.push(format!("`{span}`: the server has no tool `{name}`"));
            continue;
        };
        let Ok(Value::Object(given)) = serde_json::from_str::<Value>(args) else {
            problems.push(format!("`{span}`: the arguments are not a JSON object"));
            continue;
        };
        for k in given.keys() {
            if !needs.contains(&k.as_str()) && !may.contains(&k.as_str()) {
                problems.push(format!("`{span}`: `{name}` takes no argument `{k}`"));
            }
        }
        for k in needs.iter().filter(|k| !given.contains_key(**k)) {
            problems.push(format!("`{span}`: `{name}` needs `{k}`"));
        }
        if name == "answer"
            && !given.contains_key("name")
            && !(given.contains_key("run_id") && given.contains_key("stage"))
        {
            problems.push(format!(
                "`{span}`: `answer` needs `name`, or `run_id` and `stage`"
            ));
        }
    }
    (calls, problems)
}

/// The tools of the skill's table (the rows under a header whose first
/// cell is `tool`).
fn table_tools(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in prose(text).lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if !line.starts_with('|') {
            inside = false;
        } else if cells.get(1) == Some(&"tool") {
            inside = true;
        } else if inside && !cells[1].starts_with("---") {
            out.push(cells[1].trim_matches('`').to_string());
        }
    }
    out
}

// ---- front matter ----

#[derive(serde::Deserialize)]
struct FrontMatter {
    name: String,
    description: String,
}

/// What is wrong with a SKILL.md's front matter, for a skill in directory `dir`.
fn front_matter_problems(text: &str, dir: &str) -> Vec<String> {
    let Some(rest) = text.strip_prefix("---\n") else {
        return vec!["SKILL.md does not start with a `---` line (YAML front matter)".into()];
    };
    let Some((yaml, _)) = rest.split_once("\n---\n") else {
        return vec!["the front matter has no closing `---` line".into()];
    };
    let node = match pmpo_plan::node::parse_yaml(yaml) {
        Ok(n) => n,
        Err(e) => return vec![format!("the front matter is not YAML: {}", e.message)],
    };
    let fm: FrontMatter = match pmpo_plan::de::from_node(&node) {
        Ok(fm) => fm,
        Err(e) => return vec![format!("the front matter: {}", e.message)],
    };
    let mut problems = Vec::new();
    let kebab = !fm.name.is_empty()
        && fm.name.split('-').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !kebab || fm.name.len() > 64 {
        problems.push(format!(
            "name `{}`: lowercase letters, digits and single hyphens, at most 64",
            fm.name
        ));
    }
    if fm.name != dir {
        problems.push(format!(
            "name `{}` is not its directory's name `{dir}`",
            fm.name
        ));
    }
    let d = fm.description.trim();
    if d.is_empty() || d.chars().count() > 1024 || d.contains('<') || d.contains('>') {
        problems.push("description: 1 to 1024 characters, no angle brackets".into());
    }
    problems
}

// ---- answer examples ----

/// The answer examples of a text: (phase, JSON text).
fn answer_examples(text: &str) -> Vec<(String, String)> {
    fences(text)
        .into_iter()
        .filter_map(|(info, body)| {
            let phase = info.strip_prefix("json answer=")?;
            Some((phase.to_string(), body))
        })
        .collect()
}

fn answer_problems(phase: &str, body: &str) -> Vec<String> {
    let Some((_, file)) = ANSWER_SCHEMAS.iter().find(|(p, _)| *p == phase) else {
        return vec![format!("no phase `{phase}` has an answer schema")];
    };
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("schemas").join(file)).unwrap())
            .unwrap();
    match serde_json::from_str::<Value>(body) {
        Ok(answer) => pmpo_ai::schema::validate(&schema, &answer)
            .into_iter()
            .map(|p| format!("the {phase} example: {p}"))
            .collect(),
        Err(e) => vec![format!("the {phase} example is not JSON: {e}")],
    }
}

// ---- the tests ----

#[test]
fn the_skill_front_matter_parses_with_a_name_and_a_description() {
    let text = std::fs::read_to_string(root().join("skills/pmpo/SKILL.md")).unwrap();
    let problems = front_matter_problems(&text, "pmpo");
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_pmpo_command_shown_parses_with_the_binary() {
    let mut cache = BTreeMap::new();
    let mut problems = Vec::new();
    let mut subs = std::collections::BTreeSet::new();
    for (file, text) in checked_files() {
        for words in pmpo_commands(&text) {
            subs.insert(words[1].clone());
            problems.extend(
                command_problems(&words, &mut cache)
                    .into_iter()
                    .map(|p| format!("{file}: {p}")),
            );
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    for needed in ["refine", "answer", "status", "execute"] {
        assert!(
            subs.contains(needed),
            "no `pmpo {needed}` line was found in {subs:?}"
        );
    }
}

#[test]
fn every_mcp_tool_named_is_the_servers_and_the_table_lists_them_all() {
    let mut calls = 0;
    let mut problems = Vec::new();
    for (file, text) in checked_files() {
        let (n, p) = tool_call_problems(&text);
        calls += n;
        problems.extend(p.into_iter().map(|p| format!("{file}: {p}")));
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(calls >= 4, "only {calls} tool calls were found");
    let skill = std::fs::read_to_string(root().join("skills/pmpo/SKILL.md")).unwrap();
    let listed = table_tools(&skill);
    let mut known: Vec<&str> = TOOLS.iter().map(|(n, _, _)| *n).collect();
    known.sort();
    let mut sorted: Vec<&str> = listed.iter().map(String::as_str).collect();
    sorted.sort();
    assert_eq!(sorted, known, "the skill's tool table");
}

#[test]
fn every_answer_example_satisfies_the_schema_its_phase_is_checked_with() {
    let mut seen = Vec::new();
    let mut problems = Vec::new();
    for path in skill_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (phase, body) in answer_examples(&text) {
            problems.extend(answer_problems(&phase, &body));
            if phase == "plan" {
                problems.extend(plan_check_problems(&body));
            }
            seen.push(phase);
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    for (phase, _) in ANSWER_SCHEMAS {
        assert!(
            seen.iter().any(|p| p == phase),
            "no {phase} answer example in {seen:?}"
        );
    }
}

/// The plan example's stages, as a plan document, checked by `pmpo check`.
fn plan_check_problems(body: &str) -> Vec<String> {
    let Ok(answer) = serde_json::from_str::<Value>(body) else {
        return vec!["the plan example is not JSON".into()];
    };
    let ws = Ws::new();
    ws.write("logo.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
    let plan = json!({
        "specification": {"artifact_name": "acme-logo", "artifact_type": "logo",
                          "content_type": "direct:image", "constraints": []},
        "plan": {"stages": answer["stages"]},
    });
    ws.write("plan.json", &plan.to_string());
    let r = ws.run(&["check", "plan.json"]);
    if r.code == 0 {
        Vec::new()
    } else {
        vec![format!(
            "`pmpo check` refuses the plan example: {}",
            r.stderr
        )]
    }
}

#[test]
fn the_checks_catch_what_they_are_for() {
    // A front matter without a description, a name that is not kebab-case.
    let bad = front_matter_problems("---\nname: Pmpo_Skill\n---\n# x\n", "pmpo");
    assert!(!bad.is_empty());
    let bad = front_matter_problems("---\nname: other\ndescription: d\n---\n", "pmpo");
    assert!(bad.iter().any(|p| p.contains("directory")), "{bad:?}");
    assert!(
        front_matter_problems("---\nname: pmpo\ndescription: [unclosed\n---\n", "pmpo")
            .iter()
            .any(|p| p.contains("YAML") || p.contains("front matter"))
    );
    // A flag the subcommand does not have, a value it does not take, a subcommand it lacks.
    let mut cache = BTreeMap::new();
    let text = "```sh\npmpo answer acme --flie a.json   # a typo\npmpo refine x --via cursor\npmpo anser x\n```\n";
    let cmds = pmpo_commands(text);
    assert_eq!(cmds.len(), 3, "{cmds:?}");
    assert!(command_problems(&cmds[0], &mut cache)[0].contains("no option `--flie`"));
    assert!(command_problems(&cmds[1], &mut cache)[0].contains("`--via cursor` is not one of"));
    assert!(command_problems(&cmds[2], &mut cache)[0].contains("--help` fails"));
    assert!(
        command_problems(
            &shell_words("pmpo answer acme --file=a.json -q"),
            &mut cache
        )
        .is_empty()
    );
    // The command a host starts, in a shell line and in a JSON configuration.
    let text = "`claude mcp add x -- pmpo statuss`\n```json\n{\"s\": {\"x\": {\"command\": \"pmpo\", \"args\": [\"status\", \"--jsn\"]}}}\n```\n```json\n{nope\n```\n";
    let cmds = pmpo_commands(text);
    assert_eq!(cmds.len(), 3, "{cmds:?}");
    for c in &cmds {
        assert!(!command_problems(c, &mut cache).is_empty(), "{c:?}");
    }
    // An unknown tool, an argument a tool does not take, a missing one.
    let (n, p) = tool_call_problems(
        "Call `refin {\"name\": \"a\"}`, `refine {\"nam\": \"a\"}` and `answer {\"answer\": {}}`.",
    );
    assert_eq!(n, 3);
    let p = p.join("\n");
    for want in [
        "no tool `refin`",
        "takes no argument `nam`",
        "`refine` needs `name`",
        "`answer` needs `name`, or",
    ] {
        assert!(p.contains(want), "{want} in {p}");
    }
    // An answer off its schema, and a plan that `pmpo check` refuses.
    assert!(
        !answer_problems(
            "reflect",
            "{\"judgements\": [{\"id\": \"a\", \"status\": \"fine\"}]}"
        )
        .is_empty()
    );
    assert!(
        !plan_check_problems("{\"stages\": [{\"id\": \"a\", \"tool\": \"paint\"}]}").is_empty()
    );
    // Code spans of two backticks hold one.
    assert_eq!(
        code_spans("a `` `x` y `` b `pmpo status`"),
        ["`x` y", "pmpo status"]
    );
}

/// The skill's answer example of a phase, as JSON.
fn example(phase: &str) -> Value {
    let text = std::fs::read_to_string(root().join("skills/pmpo/references/answers.md")).unwrap();
    let (_, body) = answer_examples(&text)
        .into_iter()
        .find(|(p, _)| p == phase)
        .unwrap_or_else(|| panic!("no {phase} example"));
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_skill_shell_route_with_its_answers_drives_a_refinement() {
    use pmpo_testkit::refine::{LOGO, pmpo, run_code};
    let skill = std::fs::read_to_string(root().join("skills/pmpo/SKILL.md")).unwrap();
    let commands = pmpo_commands(&skill);
    let find = |sub: &str, with: &str| -> Vec<String> {
        let c = commands
            .iter()
            .find(|c| c[1] == sub && c.iter().any(|w| w == with));
        c.unwrap_or_else(|| panic!("no `pmpo {sub} ... {with}` in SKILL.md"))
            .clone()
    };
    let (refine, answer) = (find("refine", "--via"), find("answer", "--file"));
    let args = |words: &[String], extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = words[1..].to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let ws = Ws::new();
    ws.write("logo.svg", LOGO);
    let pending = ".refiner/artifacts/acme-logo/pending.json";
    // One iteration is enough to show each answer was taken (not a fallback).
    let a = args(&refine, &["--max-iterations", "1"]);
    run_code(
        pmpo(&ws),
        3,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let file = answer
        .iter()
        .skip_while(|w| *w != "--file")
        .nth(1)
        .unwrap()
        .clone();
    let mut last = None;
    for phase in ["specify", "plan", "reflect"] {
        let q: Value = ws.read_json(pending);
        assert_eq!(q["question"]["phase"], phase, "{q}");
        ws.write(&file, &example(phase).to_string());
        let a = args(&answer, &["--json"]);
        let code = if phase == "reflect" { 1 } else { 3 };
        last = Some(run_code(
            pmpo(&ws),
            code,
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
    }
    let report = last.unwrap().json();
    assert_eq!(report["outcome"], "max_iterations_exceeded", "{report}");
    let dir = ".refiner/artifacts/acme-logo";
    let spec = ws.read(&format!("{dir}/specification.json"));
    assert!(spec.contains("simple-shape"), "{spec}");
    let plan: Value = ws.read_json(&format!("{dir}/plans/iteration-1.json"));
    let ids: Vec<&str> = plan["plan"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["import", "sizes"], "{plan}");
    let judged = report["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "simple-shape")
        .cloned();
    let judged = judged.unwrap_or_else(|| panic!("{report}"));
    assert_eq!(
        (judged["status"].as_str(), judged["basis"].as_str()),
        (Some("satisfied"), Some("judged")),
        "{judged}"
    );
}
