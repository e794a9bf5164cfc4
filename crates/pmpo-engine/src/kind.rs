//! Why a stage failed, as a type: the shared [`FailureKind`]s, plus the few
//! kinds only the engine gives (a stage's own checks failed, its sandbox
//! could not be set up, the run waits). Written exactly as before in
//! `execution_results.json` and the store.

use pmpo_store::states::FailureKind;

/// The kind of a stage's failure (or of a run's error entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// One of the kinds every crate shares.
    Stage(FailureKind),
    /// A check of the stage's own `validate:` failed or could not check.
    ValidationFailed,
    /// The stage asks for no network, and nothing here can enforce it.
    NetworkUnenforceable,
    /// The stage's confinement could not be set up.
    Sandbox,
    /// Every adapter the stage can use is open (the run pauses).
    SafeMode,
    /// The stage waits for a person's decision.
    AwaitingDecision,
}

impl ErrorKind {
    /// The one written form.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Stage(k) => k.as_str(),
            ErrorKind::ValidationFailed => "validation_failed",
            ErrorKind::NetworkUnenforceable => "network_unenforceable",
            ErrorKind::Sandbox => "sandbox",
            ErrorKind::SafeMode => "safe_mode",
            ErrorKind::AwaitingDecision => "awaiting_decision",
        }
    }

    /// The shared kind, when it is one.
    pub fn shared(self) -> Option<FailureKind> {
        match self {
            ErrorKind::Stage(k) => Some(k),
            _ => None,
        }
    }

    /// Whether it is this shared kind.
    pub fn is(self, kind: FailureKind) -> bool {
        self == ErrorKind::Stage(kind)
    }
}

impl From<FailureKind> for ErrorKind {
    fn from(k: FailureKind) -> Self {
        ErrorKind::Stage(k)
    }
}

impl From<pmpo_tools::ErrorClass> for ErrorKind {
    fn from(c: pmpo_tools::ErrorClass) -> Self {
        ErrorKind::Stage(c.into())
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_before() {
        let all = [
            (ErrorKind::Stage(FailureKind::ExitStatus), "exit_status"),
            (ErrorKind::ValidationFailed, "validation_failed"),
            (ErrorKind::NetworkUnenforceable, "network_unenforceable"),
            (ErrorKind::Sandbox, "sandbox"),
            (ErrorKind::SafeMode, "safe_mode"),
            (ErrorKind::AwaitingDecision, "awaiting_decision"),
        ];
        for (k, text) in all {
            assert_eq!(k.to_string(), text);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{text}\""));
        }
        for k in FailureKind::ALL {
            assert_eq!(ErrorKind::from(*k).as_str(), k.as_str());
        }
    }
}
