//! What to do after each attempt of a stage: a pure function of what the plan
//! says ([`Policy`]), what happened so far ([`History`]) and the breaker of the
//! tool in use ([`Gate`]). No I/O, no clock: the executor does what it says.

use std::time::Duration;

use pmpo_plan::Retry;
use pmpo_store::states::FailureKind;

use super::{Gate, backoff_delay};

/// What the stage's plan says about recovering from a failure.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `retry:` (attempts per tool, backoff); none means one attempt.
    pub retry: Option<Retry>,
    /// The stage has a `fallback:` tool.
    pub fallback: bool,
    /// `correct: true`: the model may correct the stage's code once.
    pub correct: bool,
    /// `on_failure: manual`: a person decides about a failure.
    pub manual: bool,
    /// Someone can be asked now (a terminal prompt); otherwise the run pauses.
    pub can_ask: bool,
    /// Spreads the jitter of stages that retry at the same time.
    pub salt: u64,
}

impl Policy {
    /// Calls of each tool before giving up on it.
    pub fn attempts(&self) -> u32 {
        self.retry.as_ref().map_or(1, |r| r.attempts.max(1))
    }
}

/// Which of the stage's tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Primary,
    Fallback,
}

/// One thing that happened to the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The tool in use was called; `None` means it succeeded.
    Ran(Option<FailureKind>),
    /// The tool in use was not called: its adapter's breaker is open.
    Blocked,
    /// The stage switched to its fallback tool.
    FellBack,
    /// The model's correction of the code ran; `None` means it succeeded.
    Corrected(Option<FailureKind>),
    /// No correction could be made (no model, no answer, no inputs).
    NoCorrection,
    /// A person asked for another round: the stage starts over with its own tool.
    PersonRetry,
}

/// What happened to the stage so far, in order.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub steps: Vec<Step>,
    /// The run was cancelled while the stage waited.
    pub cancelled: bool,
}

impl History {
    /// The steps since the last person's retry (a round).
    fn round(&self) -> &[Step] {
        let start = self
            .steps
            .iter()
            .rposition(|s| *s == Step::PersonRetry)
            .map_or(0, |i| i + 1);
        &self.steps[start..]
    }

    /// The tool the next call would use.
    pub fn tool(&self) -> Tool {
        if self.round().contains(&Step::FellBack) {
            Tool::Fallback
        } else {
            Tool::Primary
        }
    }

    /// Calls of the tool in use in this round.
    fn calls(&self) -> u32 {
        let round = self.round();
        let since = round
            .iter()
            .rposition(|s| *s == Step::FellBack)
            .map_or(0, |i| i + 1);
        round[since..]
            .iter()
            .filter(|s| matches!(s, Step::Ran(_)))
            .count() as u32
    }

    /// Whether the correction was tried (it is tried once per stage, whatever a person says).
    fn corrected(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Corrected(_) | Step::NoCorrection))
    }
}

/// Why a stage stops without finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// The run was cancelled: the stage ends CANCELLED.
    Cancelled,
    /// Every adapter the stage can use is open: the run pauses (safe mode).
    SafeMode,
    /// A person must decide, and nobody can be asked now: the run pauses.
    AwaitDecision,
    /// The stage's question waits for the agent host's answer: the run
    /// pauses, and `pmpo answer --run` gives the answer and retries it.
    AwaitAnswer,
}

/// The next thing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Call the tool in use after `delay` (zero for its first call); this is
    /// its `attempt`-th call of `of`.
    Retry {
        attempt: u32,
        of: u32,
        delay: Duration,
    },
    /// Give up on the stage's tool and use its fallback.
    Fallback,
    /// Ask the model to correct the code once, and run the correction.
    Correct,
    /// Ask a person: retry, skip or abort.
    AskPerson,
    /// Stop here, for this reason.
    Halt(Halt),
    /// The stage is done: it succeeded, or it failed for good.
    Finish,
}

/// Kinds after which calling the same tool again cannot help: its inputs are wrong.
pub const NOT_RETRIED: &[FailureKind] = &[FailureKind::InvalidInput, FailureKind::MissingInput];

fn not_retried(kind: FailureKind) -> bool {
    NOT_RETRIED.contains(&kind)
}

/// Whether the next step may call the tool in use, so its breaker must be read first.
pub fn needs_gate(policy: &Policy, history: &History) -> bool {
    matches!(
        next_step(policy, history, &Gate::Closed),
        Next::Retry { .. }
    )
}

/// Decides what the executor does next.
pub fn next_step(policy: &Policy, history: &History, gate: &Gate) -> Next {
    if history.cancelled {
        return Next::Halt(Halt::Cancelled);
    }
    let of = policy.attempts();
    let call = |attempt: u32| match (gate, &policy.retry) {
        (Gate::Open(_), _) => None,
        (_, Some(retry)) if attempt > 1 => Some(Next::Retry {
            attempt,
            of,
            delay: backoff_delay(retry, attempt, policy.salt),
        }),
        _ => Some(Next::Retry {
            attempt,
            of,
            delay: Duration::ZERO,
        }),
    };
    match history.round().last().copied() {
        None | Some(Step::FellBack | Step::PersonRetry) => {
            call(1).unwrap_or_else(|| tool_ended(policy, history, true))
        }
        Some(Step::Ran(None) | Step::Corrected(None)) => Next::Finish,
        Some(Step::Ran(Some(k)) | Step::Corrected(Some(k))) if k == FailureKind::Cancelled => {
            Next::Halt(Halt::Cancelled)
        }
        // A question for the host is not a failure: asking again, another
        // tool, a correction or a person cannot answer it, the host can.
        Some(Step::Ran(Some(k)) | Step::Corrected(Some(k))) if k == FailureKind::AwaitingAnswer => {
            Next::Halt(Halt::AwaitAnswer)
        }
        Some(Step::Ran(Some(k))) if not_retried(k) => tool_ended(policy, history, false),
        Some(Step::Ran(Some(_))) => {
            let n = history.calls();
            if n < of {
                call(n + 1).unwrap_or_else(|| tool_ended(policy, history, true))
            } else {
                tool_ended(policy, history, false)
            }
        }
        Some(Step::Blocked) => tool_ended(policy, history, true),
        Some(Step::Corrected(Some(_)) | Step::NoCorrection) => ask_or_finish(policy),
    }
}

/// The tool in use is done with (its calls failed, or its breaker is open).
fn tool_ended(policy: &Policy, history: &History, blocked: bool) -> Next {
    if policy.fallback && history.tool() == Tool::Primary {
        return Next::Fallback;
    }
    if blocked {
        // Every adapter the stage can use is open: do not hammer them.
        return Next::Halt(Halt::SafeMode);
    }
    if policy.correct && !history.corrected() {
        return Next::Correct;
    }
    ask_or_finish(policy)
}

fn ask_or_finish(policy: &Policy) -> Next {
    match (policy.manual, policy.can_ask) {
        (true, true) => Next::AskPerson,
        (true, false) => Next::Halt(Halt::AwaitDecision),
        (false, _) => Next::Finish,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmpo_plan::{Backoff, Timeout};

    /// A policy from words: `r3` (retry: 3 attempts, 100ms doubling, no
    /// jitter), `fb` (a fallback), `fix` (correct: true), `manual`, `ask`.
    fn policy(words: &str) -> Policy {
        let mut p = Policy::default();
        for w in words.split_whitespace() {
            match w {
                "fb" => p.fallback = true,
                "fix" => p.correct = true,
                "manual" => p.manual = true,
                "ask" => p.can_ask = true,
                n if n.starts_with('r') => {
                    p.retry = Some(Retry {
                        attempts: n[1..].parse().unwrap(),
                        backoff: Backoff::Exponential,
                        initial: Some(Timeout(Duration::from_millis(100))),
                        max: Some(Timeout(Duration::from_secs(1))),
                        jitter: false,
                    })
                }
                other => panic!("policy word {other}"),
            }
        }
        p
    }

    /// A history from letters: `ok`, `x` (exit status), `t` (timeout), `in`
    /// (invalid input), `mi` (missing input), `v` (a check failed), `c`
    /// (cancelled), `q` (a question waits for the host), `B` (blocked), `F` (fell back), `C+`/`C-` (the correction
    /// passed/failed), `N` (no correction), `P` (a person's retry).
    fn steps(letters: &str) -> Vec<Step> {
        let failed = |k: FailureKind| Step::Ran(Some(k));
        letters
            .split_whitespace()
            .map(|l| match l {
                "ok" => Step::Ran(None),
                "x" => failed(FailureKind::ExitStatus),
                "t" => failed(FailureKind::Timeout),
                "in" => failed(FailureKind::InvalidInput),
                "mi" => failed(FailureKind::MissingInput),
                "c" => failed(FailureKind::Cancelled),
                "q" => failed(FailureKind::AwaitingAnswer),
                "v" => Step::Ran(Some(FailureKind::ValidationFailed)),
                "B" => Step::Blocked,
                "F" => Step::FellBack,
                "C+" => Step::Corrected(None),
                "C-" => Step::Corrected(Some(FailureKind::ExitStatus)),
                "N" => Step::NoCorrection,
                "P" => Step::PersonRetry,
                other => panic!("step {other}"),
            })
            .collect()
    }

    fn again(attempt: u32, of: u32, ms: u64) -> Next {
        let delay = Duration::from_millis(ms);
        Next::Retry { attempt, of, delay }
    }

    const FINISH: Next = Next::Finish;
    const SAFE_MODE: Next = Next::Halt(Halt::SafeMode);
    const PAUSE: Next = Next::Halt(Halt::AwaitDecision);
    const CANCELLED: Next = Next::Halt(Halt::Cancelled);
    const AWAIT_ANSWER: Next = Next::Halt(Halt::AwaitAnswer);

    /// What happened -> what next. The gate column: `open` or `-` (closed);
    /// the last column: `cancelled` when the run was cancelled while waiting.
    #[rustfmt::skip]
    fn table() -> Vec<(&'static str, &'static str, &'static str, &'static str, &'static str, Next)> {
        vec![
            ("first call, at once",                     "",            "",              "-",    "", again(1, 1, 0)),
            ("success finishes",                        "r3",          "ok",            "-",    "", FINISH),
            ("one attempt only",                        "",            "x",             "-",    "", FINISH),
            ("second call after the initial delay",     "r3",          "x",             "-",    "", again(2, 3, 100)),
            ("third call, the delay doubles",           "r3",          "x x",           "-",    "", again(3, 3, 200)),
            ("retries exhausted, no fallback",          "r3",          "x x x",         "-",    "", FINISH),
            ("success on a retry",                      "r3",          "x ok",          "-",    "", FINISH),
            ("retries exhausted: the fallback",         "r2 fb",       "x x",           "-",    "", Next::Fallback),
            ("the fallback's first call",               "r2 fb",       "x x F",         "-",    "", again(1, 2, 0)),
            ("the fallback retries too",                "r2 fb",       "x x F t",       "-",    "", again(2, 2, 100)),
            ("the fallback exhausted",                  "r2 fb",       "x x F x x",     "-",    "", FINISH),
            ("bad inputs are not retried",              "r3 fb",       "in",            "-",    "", Next::Fallback),
            ("a missing input is not retried",          "r3",          "mi",            "-",    "", FINISH),
            ("a timeout is retried",                    "r2",          "t",             "-",    "", again(2, 2, 100)),
            ("a failed check is retried",               "r2",          "v",             "-",    "", again(2, 2, 100)),
            ("cancelled while running",                 "r3",          "c",             "-",    "", CANCELLED),
            ("cancelled while waiting",                 "r3",          "x",             "-",    "cancelled", CANCELLED),
            ("correction after the last failure",       "fix",         "x",             "-",    "", Next::Correct),
            ("a correction that worked",                "fix",         "x C+",          "-",    "", FINISH),
            ("correction once only",                    "fix",         "x C-",          "-",    "", FINISH),
            ("no correction possible",                  "fix",         "x N",           "-",    "", FINISH),
            ("correction after the fallback",           "r1 fb fix",   "x F x",         "-",    "", Next::Correct),
            ("manual: ask a person",                    "manual ask",  "x",             "-",    "", Next::AskPerson),
            ("manual, nobody to ask: pause",            "manual",      "x",             "-",    "", PAUSE),
            ("manual after the correction",             "fix manual ask", "x C-",       "-",    "", Next::AskPerson),
            ("a person's retry starts over",            "manual ask",  "x P",           "-",    "", again(1, 1, 0)),
            ("a person's retry, failed again",          "manual ask",  "x P x",         "-",    "", Next::AskPerson),
            ("no second correction after a retry",      "fix manual ask", "x C- P x",   "-",    "", Next::AskPerson),
            ("open breaker, no fallback: safe mode",    "r3",          "",              "open", "", SAFE_MODE),
            ("open breaker: straight to the fallback",  "r3 fb",       "",              "open", "", Next::Fallback),
            ("breaker opened between retries",          "r3 fb",       "x",             "open", "", Next::Fallback),
            ("the fallback's breaker is open too",      "r3 fb",       "B F",           "open", "", SAFE_MODE),
            ("primary blocked, fallback failed",        "r1 fb",       "B F x",         "-",    "", FINISH),
            ("primary failed, fallback blocked",        "r1 fb",       "x F B",         "-",    "", SAFE_MODE),
            ("an open breaker cannot undo a success",   "r3",          "ok",            "open", "", FINISH),
            ("a question for the host pauses",          "",            "q",             "-",    "", AWAIT_ANSWER),
            ("no retry while the host is asked",        "r3",          "q",             "-",    "", AWAIT_ANSWER),
            ("no fallback while the host is asked",     "r3 fb",       "q",             "-",    "", AWAIT_ANSWER),
            ("no correction while the host is asked",   "fix",         "q",             "-",    "", AWAIT_ANSWER),
            ("no person asked while the host is asked", "manual ask",  "q",             "-",    "", AWAIT_ANSWER),
            ("a question after a retry pauses too",     "r3 fb",       "x q",           "-",    "", AWAIT_ANSWER),
            ("the fallback's question pauses",          "r1 fb",       "x F q",         "-",    "", AWAIT_ANSWER),
            ("an open breaker does not hide a question", "r3 fb",      "q",             "open", "", AWAIT_ANSWER),
            ("cancelled while the host is asked",       "r3",          "q",             "-",    "cancelled", CANCELLED),
            ("a person's retry asks the host again",    "manual ask",  "q P",           "-",    "", again(1, 1, 0)),
        ]
    }

    #[test]
    fn the_policy_table() {
        let mut wrong = Vec::new();
        for (name, words, letters, gate, flag, want) in table() {
            let history = History {
                steps: steps(letters),
                cancelled: flag == "cancelled",
            };
            let gate = match gate {
                "open" => Gate::Open("2030-01-01T00:00:00Z".into()),
                _ => Gate::Closed,
            };
            let got = next_step(&policy(words), &history, &gate);
            if got != want {
                wrong.push(format!("{name}: got {got:?}, want {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_gate_is_read_only_before_a_call() {
        let at = |letters| History {
            steps: steps(letters),
            cancelled: false,
        };
        assert!(needs_gate(&policy("r2"), &at("")));
        assert!(needs_gate(&policy("r2"), &at("x")));
        assert!(!needs_gate(&policy("r2"), &at("ok")));
        assert!(!needs_gate(&policy("r2"), &at("x x")));
    }

    #[test]
    fn the_tool_in_use() {
        let at = |letters| History {
            steps: steps(letters),
            cancelled: false,
        };
        assert_eq!(at("").tool(), Tool::Primary);
        assert_eq!(at("x F").tool(), Tool::Fallback);
        assert_eq!(at("x F x P").tool(), Tool::Primary);
    }
}
