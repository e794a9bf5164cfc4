//! Whole rendered plan errors, as `pmpo check` prints them after `error: `:
//! the first line scripts match, the offending line with a caret, the help.

use std::path::PathBuf;

use pmpo_plan::{Diagnostic, check, parse_plan_text};
use pmpo_tools::Registry;

const HEAD: &str = "specification:\n  artifact_name: t\n  artifact_type: code\nplan:\n  stages:\n";

/// Every error of a plan whose stages are `stages`, rendered without color.
fn errors(stages: &str) -> String {
    let text = format!("{HEAD}{stages}");
    let diags: Vec<Diagnostic> =
        match parse_plan_text(text, PathBuf::from("plan.yaml"), "plan.yaml".into()) {
            Ok(plan) => check(&plan, &Registry::default()),
            Err(diags) => diags,
        };
    assert!(!diags.is_empty(), "the plan was expected to be refused");
    diags
        .iter()
        .map(|d| format!("error: {}", d.render(false)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_unknown_key_is_underlined_with_the_key_it_meant() {
    insta::assert_snapshot!(errors(
        "    - id: a\n      with: {command: [echo]}\n    - id: b\n      dependson: [a]\n      with: {command: [echo]}\n"
    ));
}

#[test]
fn a_value_of_the_wrong_type_is_underlined() {
    insta::assert_snapshot!(errors(
        "    - id: a\n      requires_execution: yes please\n      with: {command: [echo]}\n"
    ));
}

#[test]
fn an_unknown_dependency_is_underlined_in_its_list() {
    insta::assert_snapshot!(errors(
        "    - id: a\n      depends_on: [a, ghost]\n      with: {command: [echo]}\n"
    ));
}

#[test]
fn a_yaml_syntax_error_shows_its_line() {
    insta::assert_snapshot!(errors(
        "    - id: a\n      with: {command: [echo]\n    - id: b\n"
    ));
}
