//! The states pmpo writes down, as types: how a run, a stage, a validation, a
//! constraint and a ledger row stand, and why a stage failed. Each has one
//! spelling, shared by the terminal, the result files, the event log and the
//! database (through `ToSql`/`FromSql`), so a misspelt state does not compile.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Defines a state enum with one written form per variant, and everything
/// that reads or writes that form: `as_str`, `parse`, `ALL`, `Display`,
/// `FromStr`, serde and SQL.
macro_rules! states {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The one written form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Reads the written form; `None` for anything else.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;
            fn from_str(text: &str) -> Result<$name, UnknownState> {
                $name::parse(text).ok_or_else(|| UnknownState {
                    kind: stringify!($name),
                    text: text.to_string(),
                    expected: $name::ALL.iter().map(|s| s.as_str()).collect(),
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<$name> {
                let text = value.as_str()?;
                text.parse().map_err(|e: UnknownState| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

/// A written state that is not one of its type's states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{text}` (expected one of: {})", expected.join(", "))]
pub struct UnknownState {
    pub kind: &'static str,
    pub text: String,
    pub expected: Vec<&'static str>,
}

states! {
    /// How a run ended: the one vocabulary of the terminal,
    /// `execution_results.json`, the event log, the store and `pmpo status`.
    RunStatus {
        /// Still running (or interrupted: the process died).
        Running = "running",
        /// Every stage completed or was reused, and no blocking constraint failed.
        Completed = "completed",
        /// A stage failed or timed out, or a blocking constraint of the
        /// `validation_plan` was violated (or could not be checked).
        Failed = "failed",
        /// Nothing failed, but stages were skipped (a person chose to skip one).
        Incomplete = "incomplete",
        /// The user interrupted the run.
        Cancelled = "cancelled",
        /// A stage waits for a person's decision (`pmpo resume --retry|--skip|--abort`).
        AwaitingIntervention = "awaiting_intervention",
        /// Every adapter a stage can use is down (safe mode); `pmpo resume` retries.
        Paused = "paused",
    }
}

impl RunStatus {
    /// Whether the run waits for `pmpo resume`.
    pub fn is_paused(self) -> bool {
        matches!(self, RunStatus::AwaitingIntervention | RunStatus::Paused)
    }

    /// The process exit code of a command whose run ended so (`docs/cli.md`,
    /// "Exit codes"): 0 completed, 1 failed or incomplete, 3 paused, 130
    /// cancelled (the CLI answers 143 or 129 when SIGTERM or SIGHUP stopped it).
    pub fn exit_code(self) -> u8 {
        match self {
            RunStatus::Completed => 0,
            RunStatus::Running | RunStatus::Failed | RunStatus::Incomplete => 1,
            RunStatus::AwaitingIntervention | RunStatus::Paused => 3,
            RunStatus::Cancelled => 130,
        }
    }
}

impl From<RunStatus> for std::process::ExitCode {
    fn from(status: RunStatus) -> Self {
        std::process::ExitCode::from(status.exit_code())
    }
}

states! {
    /// A stage's lifecycle state.
    StageStatus {
        Pending = "PENDING",
        InProgress = "IN_PROGRESS",
        Validating = "VALIDATING",
        Completed = "COMPLETED",
        /// An identical earlier result was reused (outputs verified intact).
        Cached = "CACHED",
        Failed = "FAILED",
        Timeout = "TIMEOUT",
        /// Stopped while running because the user cancelled the run (Ctrl-C).
        Cancelled = "CANCELLED",
        Skipped = "SKIPPED",
        /// Waiting for a person (`on_failure: manual`) or for an adapter's breaker (safe mode).
        AwaitingIntervention = "AWAITING_INTERVENTION",
    }
}

impl StageStatus {
    /// Whether the stage ended well (completed now, earlier, or from the cache).
    pub fn is_success(self) -> bool {
        matches!(self, StageStatus::Completed | StageStatus::Cached)
    }

    /// Whether the stage ended badly (its dependents are skipped).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            StageStatus::Failed
                | StageStatus::Timeout
                | StageStatus::Cancelled
                | StageStatus::Skipped
        )
    }
}

states! {
    /// What one check found.
    ValidationStatus {
        Passed = "passed",
        Failed = "failed",
        /// The check could not look (a missing browser, an unreadable file).
        NotChecked = "not_checked",
    }
}

states! {
    /// How a constraint stands after the checks that measure it.
    ConstraintStatus {
        /// Not judged yet.
        Pending = "pending",
        Satisfied = "satisfied",
        Violated = "violated",
        /// Its checks could not look.
        NotChecked = "not_checked",
    }
}

states! {
    /// A person's (or a policy's) answer at the approval gate.
    ApprovalStatus {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
    }
}

states! {
    /// The state of a row of the patch ledger (`patch_history.state`).
    PatchState {
        /// Committed before the change: the change may or may not have happened.
        Pending = "pending",
        Completed = "completed",
        /// The change was attempted and did not happen.
        Failed = "failed",
        /// A pending row of a run that died; settled on the next run.
        Interrupted = "interrupted",
        /// A change nobody declared, found after the stage.
        Undeclared = "undeclared",
    }
}

impl PatchState {
    /// Whether the change may have half-happened (its backup must be kept).
    pub fn is_unsettled(self) -> bool {
        matches!(self, PatchState::Pending | PatchState::Interrupted)
    }
}

states! {
    /// Why a stage (or one attempt of it) failed.
    FailureKind {
        /// The command exited with a non-zero status.
        ExitStatus = "exit_status",
        Timeout = "timeout",
        /// The command was killed by a signal.
        Signal = "signal",
        /// The command was killed for using too much memory.
        Killed = "killed",
        /// A declared output is missing after the stage.
        MissingOutput = "missing_output",
        /// The user cancelled the run.
        Cancelled = "cancelled",
        /// A person aborted the stage at the intervention gate.
        Aborted = "aborted",
        /// pmpo itself failed (a bug, or its own state could not be written).
        Internal = "internal",
        /// The stage wrote outside its declared outputs.
        UndeclaredWrite = "undeclared_write",
        PermissionDenied = "permission_denied",
        MissingDependency = "missing_dependency",
        MissingInput = "missing_input",
        OutOfMemory = "out_of_memory",
        ServiceUnavailable = "service_unavailable",
        VersionIncompatibility = "version_incompatibility",
        InvalidInput = "invalid_input",
        NotConfigured = "not_configured",
        BadToolOutput = "bad_tool_output",
        /// The tool ran and reported that it failed (a plugin's `success: false`).
        ToolFailed = "tool_failed",
        Io = "io",
        /// A model answered, but the answer is unusable.
        AnswerQuality = "answer_quality",
        /// A check of the stage's own `validate:` failed or could not check.
        ValidationFailed = "validation_failed",
        /// The stage asks for no network, and nothing here can enforce it.
        NetworkUnenforceable = "network_unenforceable",
        /// The stage's confinement could not be set up.
        Sandbox = "sandbox",
        /// Every adapter the stage can use is open (the run pauses).
        SafeMode = "safe_mode",
        /// The stage waits for a person's decision.
        AwaitingDecision = "awaiting_decision",
        /// An `ai` stage routed to the agent host waits for its answer
        /// (`pmpo answer --run RUN --stage STAGE`).
        AwaitingAnswer = "awaiting_answer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy
            + PartialEq
            + std::fmt::Debug
            + std::fmt::Display
            + std::str::FromStr
            + ToSql
            + FromSql,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        for &s in all {
            let text = s.to_string();
            assert_eq!(text.parse::<T>().ok(), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), s);
            let back: T = db.query_row("SELECT ?1", [&s], |r| r.get(0)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn every_state_reads_back_what_it_writes() {
        round_trips(RunStatus::ALL);
        round_trips(StageStatus::ALL);
        round_trips(ValidationStatus::ALL);
        round_trips(ConstraintStatus::ALL);
        round_trips(ApprovalStatus::ALL);
        round_trips(PatchState::ALL);
        round_trips(FailureKind::ALL);
    }

    #[test]
    fn each_run_status_has_its_documented_exit_code() {
        let codes: Vec<(RunStatus, u8)> =
            RunStatus::ALL.iter().map(|s| (*s, s.exit_code())).collect();
        assert_eq!(
            codes,
            [
                (RunStatus::Running, 1),
                (RunStatus::Completed, 0),
                (RunStatus::Failed, 1),
                (RunStatus::Incomplete, 1),
                (RunStatus::Cancelled, 130),
                (RunStatus::AwaitingIntervention, 3),
                (RunStatus::Paused, 3),
            ]
        );
    }

    #[test]
    fn the_engine_s_own_failure_kinds_keep_their_spellings() {
        let written: Vec<&str> = [
            FailureKind::ValidationFailed,
            FailureKind::NetworkUnenforceable,
            FailureKind::Sandbox,
            FailureKind::SafeMode,
            FailureKind::AwaitingDecision,
            FailureKind::AwaitingAnswer,
        ]
        .iter()
        .map(|k| k.as_str())
        .collect();
        assert_eq!(
            written,
            [
                "validation_failed",
                "network_unenforceable",
                "sandbox",
                "safe_mode",
                "awaiting_decision",
                "awaiting_answer"
            ]
        );
    }

    #[test]
    fn an_unknown_state_is_refused_with_the_expected_ones() {
        let e = "AWAITING_INTERVENTON".parse::<StageStatus>().unwrap_err();
        assert!(e.to_string().contains("AWAITING_INTERVENTION"), "{e}");
        assert!(serde_json::from_str::<RunStatus>("\"done\"").is_err());
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let r: rusqlite::Result<PatchState> = db.query_row("SELECT 'half'", [], |r| r.get(0));
        assert!(r.is_err());
    }
}
