//! `pmpo check` (and `pmpo execute` on invalid plans): every class of bad
//! input gets exit code 2, a position, and a fix; nothing is written.

use common::assert_mentions;
use common::*;
use pmpo_testkit as common;

/// Runs check and execute on an invalid plan; returns check's stderr.
fn invalid(ws: &Ws) -> String {
    let before = ws.files();
    let check = ws.run(&["check", "plan.yaml"]);
    assert_eq!(check.code, 2, "check should fail with 2:\n{}", check.stderr);
    let exec = ws.run(&["execute", "plan.yaml"]);
    assert_eq!(exec.code, 2, "execute should fail with 2:\n{}", exec.stderr);
    assert_eq!(ws.files(), before, "an invalid plan must write nothing");
    assert_contains(&check.stderr, "nothing was run or written");
    check.stderr
}

#[test]
fn valid_plan_passes() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      with: {command: [echo, hi]}\n");
    let r = ws.run_ok(&["check", "plan.yaml"]);
    assert_contains(&r.stdout, "ok (1 stages");
    let j = ws.run(&["check", "plan.yaml", "--json"]).json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["stages"], 1);
}

#[test]
fn unknown_field_suggests_the_right_one() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      with: {command: [echo]}\n    - id: b\n      dependson: [a]\n      with: {command: [echo]}\n");
    let err = invalid(&ws);
    assert!(
        err.contains("plan.yaml:9:7: unknown field `dependson`"),
        "{err}"
    );
    assert!(err.contains("did you mean `depends_on`?"), "{err}");
    assert!(err.contains("plan.stages[1].dependson"), "{err}");
}

#[test]
fn wrong_types_are_named() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      requires_execution: yes please\n      with: {command: [echo]}\n");
    let err = invalid(&ws);
    assert!(
        err.contains("plan.yaml:7:27: expected `true` or `false`, found a string"),
        "{err}"
    );
}

#[test]
fn missing_required_field() {
    let ws = Ws::new();
    ws.write(
        "plan.yaml",
        "specification:\n  artifact_type: logo\nplan:\n  stages: []\n",
    );
    let err = invalid(&ws);
    assert!(err.contains("missing field `artifact_name`"), "{err}");
    assert!(err.contains("add `artifact_name:`"), "{err}");
}

#[test]
fn duplicate_stage_ids_name_both_places() {
    let ws = Ws::new();
    ws.plan(
        "    - id: a\n      with: {command: [echo]}\n    - id: a\n      with: {command: [echo]}\n",
    );
    let err = invalid(&ws);
    assert!(
        err.contains("plan.yaml:8:11: duplicate stage id `a` (first defined at line 6)"),
        "{err}"
    );
}

#[test]
fn unknown_tool_lists_known_tools() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      tool: rnu\n      with: {command: [echo]}\n");
    let err = invalid(&ws);
    assert!(
        err.contains("plan.yaml:7:13: stage `a` uses unknown tool `rnu`"),
        "{err}"
    );
    assert!(
        err.contains("did you mean `run`?")
            && err.contains(
                "known tools: a2ui, ai, markdown, plugin, preview, prompt, rasterize, run, template"
            ),
        "{err}"
    );
}

#[test]
fn missing_dependency() {
    let ws = Ws::new();
    ws.plan("    - id: build\n      with: {command: [echo]}\n    - id: test\n      depends_on: [biuld]\n      with: {command: [echo]}\n");
    let err = invalid(&ws);
    assert!(
        err.contains(
            "plan.yaml:9:20: stage `test` depends on `biuld`, which is not a stage of this plan"
        ),
        "{err}"
    );
    assert!(err.contains("did you mean `build`?"), "{err}");
}

#[test]
fn cycles_are_named() {
    let ws = Ws::new();
    ws.plan(
        "    - id: a\n      depends_on: [c]\n      with: {command: [echo]}\n    - id: b\n      depends_on: [a]\n      with: {command: [echo]}\n    - id: c\n      depends_on: [b]\n      with: {command: [echo]}\n",
    );
    let err = invalid(&ws);
    assert!(
        err.contains("dependency cycle: a -> b -> c -> a")
            || err.contains("dependency cycle: c -> a -> b -> c")
            || err.contains("dependency cycle: b -> c -> a -> b"),
        "{err}"
    );
    let self_dep = Ws::new();
    self_dep.plan("    - id: a\n      depends_on: a\n      with: {command: [echo]}\n");
    assert!(invalid(&self_dep).contains("stage `a` depends on itself"));
}

#[test]
fn references_must_name_upstream_stages() {
    let ws = Ws::new();
    ws.plan(
        "    - id: a\n      with: {command: [echo]}\n    - id: b\n      with:\n        command: [echo, $a.stdout]\n",
    );
    let err = invalid(&ws);
    assert!(
        err.contains(
            "plan.yaml:10:25: stage `b` refers to `$a.stdout`, but `a` is not upstream of `b`"
        ),
        "{err}"
    );
    assert!(err.contains("add `a` to the `depends_on` of `b`"), "{err}");

    let ws = Ws::new();
    ws.plan("    - id: a\n      with: {command: [echo]}\n    - id: b\n      depends_on: [a]\n      with:\n        env: {X: $nope.stdout}\n        command: [echo]\n");
    let err = invalid(&ws);
    assert!(
        err.contains("refers to `$nope.stdout`, but there is no stage `nope`"),
        "{err}"
    );
    assert!(err.contains("`$$`"), "{err}");
}

#[test]
fn transitive_upstream_references_are_fine() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      with: {command: [echo]}\n    - id: b\n      depends_on: [a]\n      with: {command: [echo]}\n    - id: c\n      depends_on: [b]\n      with: {command: [echo, $a.stdout, $$literal.x]}\n");
    ws.run_ok(&["check", "plan.yaml"]);
}

#[test]
fn outputs_outside_the_workspace() {
    for (out, why) in [
        ("/etc/passwd", "absolute path"),
        ("../escape.txt", "contains `..`"),
        ("dist/../../x", "contains `..`"),
        ("~/x", "home directory"),
    ] {
        let ws = Ws::new();
        ws.plan(&format!(
            "    - id: a\n      with: {{command: [echo]}}\n      outputs: ['{out}']\n"
        ));
        let err = invalid(&ws);
        assert!(
            err.contains(&format!("output `{out}`")) && err.contains(why),
            "{out}: {err}"
        );
        assert!(err.contains("plan.yaml:8:"), "{err}");
    }
}

#[test]
fn tool_invocations_and_validation_plan_must_match() {
    let ws = Ws::new();
    ws.write(
        "plan.yaml",
        "specification:\n  artifact_name: t\n  artifact_type: code\n  constraints:\n    - {id: c1, description: d, severity: blocking}\nplan:\n  stages:\n    - id: a\n      with: {command: [echo]}\n  tool_invocations:\n    - {stage: b, tool: run}\n    - {stage: a, tool: ai}\n  validation_plan:\n    - {constraint_id: c2, validation_method: file_exists}\n",
    );
    let err = invalid(&ws);
    assert!(
        err.contains("plan.yaml:11:15: tool_invocations[0] names stage `b`, which does not exist"),
        "{err}"
    );
    assert!(
        err.contains("tool_invocations[1] says stage `a` calls `ai`, but the stage uses `run`"),
        "{err}"
    );
    assert!(
        err.contains("validation_plan[0] names constraint `c2`"),
        "{err}"
    );
    assert!(err.contains("did you mean `c1`?"), "{err}");
}

#[test]
fn tool_inputs_are_checked() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      with:\n        command: echo hello\n    - id: b\n      with: {language: ruby, code: x}\n    - id: c\n      with: {commnd: [x]}\n");
    let err = invalid(&ws);
    assert!(
        err.contains(
            "plan.yaml:8:18: stage `a`: `command` must be a list of arguments, not a string"
        ),
        "{err}"
    );
    assert!(err.contains("stage `b`: unknown language `ruby`"), "{err}");
    assert!(
        err.contains("stage `c`: unknown input `commnd` for tool `run`")
            && err.contains("did you mean `command`?"),
        "{err}"
    );
}

#[test]
fn ai_only_stage_with_an_executing_tool() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      requires_execution: false\n      tool: run\n      with: {command: [echo]}\n");
    assert!(
        invalid(&ws).contains("says `requires_execution: false` (AI-only) but uses tool `run`")
    );
}

#[test]
fn odd_ids_and_artifact_names() {
    let ws = Ws::new();
    ws.plan("    - id: 'a/b'\n      with: {command: [echo]}\n    - id: 'x y'\n      with: {command: [echo]}\n");
    let err = invalid(&ws);
    assert!(err.contains("stage id `a/b` contains '/'"), "{err}");
    assert!(err.contains("stage id `x y` contains ' '"), "{err}");
    let ws = Ws::new();
    ws.write("plan.yaml", "specification:\n  artifact_name: ../../etc\n  artifact_type: code\nplan:\n  stages:\n    - id: a\n      with: {command: [echo]}\n");
    let err = invalid(&ws);
    assert!(
        err.contains("plan.yaml:2:18: artifact name `../../etc` contains a path separator"),
        "{err}"
    );
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let ws = Ws::new();
    ws.write(
        "plan.yaml",
        "specification:\n  artifact_name: t\n  artifact_type: [code\nplan: {}\n",
    );
    let err = invalid(&ws);
    assert!(err.contains("plan.yaml:4:"), "{err}");
    assert!(err.contains("YAML syntax error"), "{err}");
    let ws = Ws::new();
    ws.write(
        "plan.yaml",
        "specification:\n  artifact_name: t\n  artifact_name: u\n",
    );
    assert!(invalid(&ws).contains("plan.yaml:3:3: duplicate key `artifact_name`"));
}

#[test]
fn json_plans_work_and_json_errors_have_positions() {
    let ws = Ws::new();
    ws.write(
        "plan.json",
        "{\n\t\"specification\": {\"artifact_name\": \"t\", \"artifact_type\": \"code\"},\n\t\"plan\": {\"stages\": [{\"id\": \"a\", \"with\": {\"command\": [\"sh\", \"-c\", \"echo hi > a.txt\"]}, \"outputs\": [\"a.txt\"]}]}\n}\n",
    );
    ws.run_ok(&["execute", "plan.json"]);
    assert_eq!(ws.read("a.txt"), "hi\n");

    let ws = Ws::new();
    ws.write(
        "plan.json",
        "{\n  \"specification\": {\"artifact_name\": \"t\",, }\n}\n",
    );
    let r = ws.run(&["check", "plan.json"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "plan.json:2:");

    let ws = Ws::new();
    ws.write("plan.json", "{\"specification\": {\"artifact_name\": \"t\", \"artifact_type\": \"c\"}, \"plan\": {\"stages\": [{\"id\": \"a\", \"tool\": \"nope\"}]}}");
    let r = ws.run(&["check", "plan.json", "--json"]);
    assert_eq!(r.code, 2);
    let j = r.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["errors"][0]["line"], 1);
    assert_mentions(&j["errors"][0], "message", "unknown tool `nope`");
}

#[test]
fn unreadable_inputs() {
    let ws = Ws::new();
    let r = ws.run(&["check", "missing.yaml"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "missing.yaml: cannot read the plan");

    std::fs::write(ws.p("bin.yaml"), [0xff, 0xfe, 0x00, 0x01, 0x80]).unwrap();
    let r = ws.run(&["check", "bin.yaml"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "not UTF-8 text");

    ws.write("empty.yaml", "");
    let r = ws.run(&["check", "empty.yaml"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "empty");

    ws.write("list.yaml", "- a\n- b\n");
    let r = ws.run(&["check", "list.yaml"]);
    assert!(
        r.code == 2 && r.stderr.contains("a plan must be a mapping, found a list"),
        "{}",
        r.stderr
    );

    let r = ws.run(&["check", "."]);
    assert!(
        r.code == 2 && r.stderr.contains("directory"),
        "{}",
        r.stderr
    );
}

#[test]
fn no_stages() {
    let ws = Ws::new();
    ws.write(
        "plan.yaml",
        "specification:\n  artifact_name: t\n  artifact_type: code\nplan:\n  stages: []\n",
    );
    assert!(invalid(&ws).contains("the plan has no stages"));
}

#[test]
fn usage_errors_exit_2() {
    let ws = Ws::new();
    let r = ws.run(&["execute"]);
    assert_eq!(r.code, 2);
    let r = ws.run(&["frobnicate"]);
    assert_eq!(r.code, 2);
    let r = ws.run(&["execute", "x.yaml", "--timeout", "soon"]);
    assert_eq!(r.code, 2);
    assert_contains(&r.stderr, "not a duration");
}

// ---- What `pmpo check` can know about references and templates ----------

/// Runs `pmpo check`; returns (exit code, stderr).
fn check(ws: &Ws) -> (i32, String) {
    let r = ws.run(&["check", "plan.yaml"]);
    (r.code, r.stderr)
}

/// The first stderr line that starts with `prefix`, whole.
fn line_with<'a>(stderr: &'a str, prefix: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stderr}"))
}

#[test]
fn unknown_named_output_of_a_declared_schema_run_stage() {
    let ws = Ws::new();
    let stages = |field: &str| {
        format!(
            "    - id: palette\n      with:\n        command: [echo, '{{\"primary\": \"#fff\", \"shades\": {{\"dark\": \"#000\"}}}}']\n        outputs_json: true\n        schema:\n          type: object\n          properties:\n            primary: {{type: string}}\n            shades: {{type: object, properties: {{dark: {{type: string}}}}}}\n    - id: use\n      depends_on: [palette]\n      with: {{command: [echo, {field}]}}\n"
        )
    };
    ws.plan(&stages("$palette.primray"));
    let err = invalid(&ws);
    assert_eq!(
        line_with(&err, "error: "),
        "error: plan.yaml:17:30: stage `use` refers to `$palette.primray`, but the `schema` of stage `palette` declares no `primray` (at plan.stages[1].with.command[1])",
        "{err}"
    );
    assert!(
        err.contains("help: did you mean `$palette.primary`? it declares primary, shades;"),
        "{err}"
    );
    // Nested names are checked against the nested schema.
    ws.plan(&stages("$palette.shades.light"));
    let err = invalid(&ws);
    assert!(
        err.contains("plan.yaml:17:30: stage `use` refers to `$palette.shades.light`, but the `schema` of stage `palette` declares no `light` under `shades`"),
        "{err}"
    );
    // The declared names, and the fields every stage has, are fine and resolve.
    ws.plan(&stages("$palette.shades.dark"));
    let (code, err) = check(&ws);
    assert_eq!(code, 0, "{err}");
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    for builtin in [
        "$palette.stdout",
        "$palette.stderr",
        "$palette.stdout_file",
        "$palette.exit_code",
        "$palette.files",
        "$palette.duration_ms",
    ] {
        ws.plan(&stages(builtin));
        let (code, err) = check(&ws);
        assert_eq!(code, 0, "{builtin}: {err}");
    }
}

#[test]
fn a_run_stage_schema_is_enforced_when_it_runs() {
    let ws = Ws::new();
    ws.plan("    - id: a\n      with:\n        command: [echo, '{\"n\": \"three\"}']\n        outputs_json: true\n        schema: {type: object, required: [n], properties: {n: {type: integer}}}\n");
    let (code, err) = check(&ws);
    assert_eq!(code, 0, "{err}");
    ws.run_code(1, &["execute", "plan.yaml", "-q"]);
    let results = ws.read_json(".state/execution_results.json");
    let reason = results["stages"][0]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("do not satisfy `schema`") && reason.contains("/n"),
        "{results}"
    );
    // A schema describes named outputs, so it needs `outputs_json`.
    ws.plan(
        "    - id: a
      with:
        command: [echo, '{}']
        schema: {type: object}
",
    );
    let err = invalid(&ws);
    assert!(
        err.contains("plan.yaml:9:17: stage `a`: `schema` describes the named outputs, but `outputs_json` is not true"),
        "{err}"
    );
}

#[test]
fn unknown_named_output_of_a_fixed_output_tool() {
    let ws = Ws::new();
    ws.write("page.html", "<h1>{{ TITLE }}</h1>\n");
    ws.plan("    - id: page\n      tool: template\n      with: {template: page.html, output: dist/index.html, vars: {TITLE: Hi}}\n    - id: show\n      depends_on: [page]\n      with: {command: [cat, $page.outptu]}\n");
    let err = invalid(&ws);
    assert_eq!(
        line_with(&err, "error: "),
        "error: plan.yaml:11:29: stage `show` refers to `$page.outptu`, but stage `page` (tool `template`) gives no output `outptu` (at plan.stages[1].with.command[1])",
        "{err}"
    );
    assert!(
        err.contains("help: did you mean `$page.output`? its outputs are output, bytes; every stage has stdout, stderr"),
        "{err}"
    );
    // A `run` stage without `outputs_json` gives no named outputs at all.
    ws.plan("    - id: a\n      with: {command: [echo, hi]}\n    - id: b\n      depends_on: [a]\n      with: {command: [echo, $a.colors]}\n");
    let err = invalid(&ws);
    assert!(
        err.contains("plan.yaml:10:30: stage `b` refers to `$a.colors`, but stage `a` (tool `run`) gives no named outputs"),
        "{err}"
    );
    // Free-form outputs stay free: `outputs_json` without a schema, or a
    // fallback that is a plugin.
    ws.plan("    - id: a\n      with: {command: [echo, '{\"colors\": 1}'], outputs_json: true}\n    - id: b\n      depends_on: [a]\n      with: {command: [echo, $a.colors]}\n");
    assert_eq!(check(&ws).0, 0);
    ws.plan("    - id: a\n      with: {command: [echo, hi]}\n      fallback: {tool: 'plugin:gen'}\n    - id: b\n      depends_on: [a]\n      with: {command: [echo, $a.colors]}\n");
    let (code, err) = check(&ws);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unknown_template_variable_in_a_workspace_template() {
    let ws = Ws::new();
    ws.write("page.html", "<h1>{{ TITLE }}</h1>\n<p>by {{ AUTHR }}</p>\n");
    ws.plan("    - id: page\n      tool: template\n      with: {template: page.html, output: dist/index.html, vars: {TITLE: Hi, AUTHOR: me}}\n");
    let err = invalid(&ws);
    assert_eq!(
        line_with(&err, "error: "),
        "error: plan.yaml:8:24: stage `page`: template `page.html` uses `AUTHR` at page.html:2:10, which neither `vars` nor `files` gives (at plan.stages[0].with.template)",
        "{err}"
    );
    assert!(
        err.contains("help: did you mean `AUTHOR`? `vars` and `files` give AUTHOR, TITLE"),
        "{err}"
    );
}

#[test]
fn prompts_of_many_braces_or_unknown_names_are_checked_whole_and_briefly() {
    let ws = Ws::new();
    // 400 KB of `{{` that close nowhere, then far-away placeholders: plain text.
    let stray = format!("{}{}", "x {{ ".repeat(80_000), "{{ artifact_name }}");
    ws.write("prompts/big.md", &stray);
    ws.plan("    - id: draw\n      requires_execution: false\n      with:\n        prompt_file: prompts/big.md\n");
    ws.run_ok(&["check", "plan.yaml"]);
    // A thousand unknown names on three lines: the first 20 are named, with
    // their places, then one line says there are more.
    let names: String = (0..1000).map(|i| format!("{{{{ n{i} }}}} ")).collect();
    ws.write("prompts/names.md", &format!("a\nb\n{names}"));
    ws.plan("    - id: draw\n      requires_execution: false\n      with:\n        prompt_file: prompts/names.md\n");
    let err = invalid(&ws);
    assert!(
        err.contains("uses `{{ n0 }}` at prompts/names.md:3:4,"),
        "{err}"
    );
    assert!(
        err.contains("uses `{{ n19 }}` at prompts/names.md:3:"),
        "{err}"
    );
    assert!(!err.contains("`{{ n20 }}`"), "{err}");
    assert!(
        err.contains("uses more undefined names; the first 20 are listed"),
        "{err}"
    );
}

#[test]
fn unknown_template_variable_in_an_inline_template() {
    let ws = Ws::new();
    // An `ai` prompt written in the plan.
    ws.plan("    - id: draw\n      requires_execution: false\n      with:\n        prompt: \"Draw {{ subjet }} for {{ artifact_name }}\"\n        vars: {subject: a fox}\n");
    let err = invalid(&ws);
    assert_eq!(
        line_with(&err, "error: "),
        "error: plan.yaml:9:17: stage `draw`: the prompt uses `{{ subjet }}`, but `subjet` is not defined (at plan.stages[0].with.prompt)",
        "{err}"
    );
    assert!(err.contains("help: did you mean `subject`?"), "{err}");
    // A prompt file in the workspace: the place in the file is named.
    ws.write(
        "prompts/hero.md",
        "# Hero\n\nDraw {{ subject }} in {{ colour }}.\n",
    );
    ws.plan("    - id: draw\n      requires_execution: false\n      with:\n        prompt_file: prompts/hero.md\n        vars: {subject: a fox, color: red}\n");
    let err = invalid(&ws);
    assert_eq!(
        line_with(&err, "error: "),
        "error: plan.yaml:9:22: stage `draw`: prompt file `prompts/hero.md` uses `{{ colour }}` at prompts/hero.md:3:26, but `colour` is not defined (at plan.stages[0].with.prompt_file)",
        "{err}"
    );
    // A template compiled into pmpo: every variable it reads must be given.
    ws.plan("    - id: show\n      tool: template\n      with: {template: 'builtin:logo-showcase', output: dist/index.html, vars: {NAME: x}}\n");
    let err = invalid(&ws);
    assert!(
        err.contains("plan.yaml:8:24: stage `show`: template `builtin:logo-showcase` uses `SVG` at builtin:logo-showcase:"),
        "{err}"
    );
}

#[test]
fn guarded_template_variables_are_fine() {
    let ws = Ws::new();
    ws.write(
        "page.html",
        "{% if SUBTITLE is defined %}<h2>{{ SUBTITLE }}</h2>{% endif %}<p>{{ AUTHOR | default('anonymous') }}</p>\n",
    );
    ws.plan("    - id: page\n      tool: template\n      with: {template: page.html, output: dist/index.html}\n      outputs: [dist/index.html]\n");
    let (code, err) = check(&ws);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("note:"), "{err}");
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    assert_eq!(ws.read("dist/index.html"), "<p>anonymous</p>\n");
}

#[test]
fn template_written_by_an_upstream_stage_is_a_note() {
    let ws = Ws::new();
    ws.plan("    - id: gen\n      with: {language: sh, code: 'mkdir -p gen && echo \"{{ X }}\" > gen/page.txt'}\n      outputs: [gen/*.txt]\n    - id: page\n      tool: template\n      depends_on: [gen]\n      with: {template: gen/page.txt, output: dist/page.txt, vars: {X: made}}\n");
    let r = ws.run_ok(&["check", "plan.yaml"]);
    assert_eq!(
        line_with(&r.stderr, "note: "),
        "note: plan.yaml:12:24: stage `page`: template `gen/page.txt` is written by stage `gen`: its variables are checked when the stage runs (at plan.stages[1].with.template)",
        "{}",
        r.stderr
    );
    let j = ws.run(&["check", "plan.yaml", "--json"]).json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["notes"][0]["line"], 12, "{j}");
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    assert_eq!(ws.read("dist/page.txt"), "made\n");
}

#[test]
fn verbatim_prompts_are_not_checked_for_placeholders() {
    let ws = Ws::new();
    ws.plan("    - id: probe\n      requires_execution: false\n      with:\n        prompt: \"Write a tagline for {{ product }}.\"\n        verbatim: true\n");
    let (code, err) = check(&ws);
    assert_eq!(code, 0, "{err}");
    // Without `verbatim`, the same prompt is refused.
    ws.plan("    - id: probe\n      requires_execution: false\n      with:\n        prompt: \"Write a tagline for {{ product }}.\"\n");
    assert!(invalid(&ws).contains("`product` is not defined"));
}

#[test]
fn template_variable_given_by_a_reference_is_fine() {
    let ws = Ws::new();
    ws.write("page.txt", "{{ TITLE }} / {{ COUNT }}\n");
    ws.plan("    - id: a\n      with: {command: [echo, '{\"title\": \"Made\"}'], outputs_json: true, schema: {type: object, properties: {title: {type: string}}}}\n    - id: page\n      tool: template\n      depends_on: [a]\n      with: {template: page.txt, output: dist/page.txt, vars: {TITLE: $a.title, COUNT: $a.exit_code}}\n");
    let (code, err) = check(&ws);
    assert_eq!(code, 0, "{err}");
    ws.run_ok(&["execute", "plan.yaml", "-q"]);
    assert_eq!(ws.read("dist/page.txt"), "Made / 0\n");
}
