//! The one voice of the command line's errors: what went wrong, how to fix
//! it, and the exit code, rendered to standard error in one place.
//!
//! Every command that stops on an error builds a [`CliError`] and returns
//! [`CliError::report`]'s code; nothing else writes `error: ...` lines.

use std::fmt;

use crate::{EXIT_BUSY, EXIT_INVALID, EXIT_STAGE_FAILED};

/// An error that stops a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// What went wrong (one sentence; names the file, run or stage involved).
    what: String,
    /// How to fix it, when there is something to say.
    hint: Option<String>,
    /// The process exit code.
    code: u8,
}

impl CliError {
    /// A usage or input error: exit 2.
    pub fn invalid(what: impl fmt::Display) -> Self {
        Self::with_code(what, EXIT_INVALID)
    }

    /// A command that could not do its work: exit 1.
    pub fn failed(what: impl fmt::Display) -> Self {
        Self::with_code(what, EXIT_STAGE_FAILED)
    }

    /// Another pmpo holds the workspace: exit 4.
    pub fn busy(what: impl fmt::Display) -> Self {
        Self::with_code(what, EXIT_BUSY)
    }

    pub fn with_code(what: impl fmt::Display, code: u8) -> Self {
        Self {
            what: what.to_string(),
            hint: None,
            code,
        }
    }

    /// Adds how to fix it (an empty hint says nothing).
    pub fn hint(mut self, hint: impl fmt::Display) -> Self {
        let hint = hint.to_string();
        self.hint = (!hint.is_empty()).then_some(hint);
        self
    }

    /// Writes the error to standard error and returns its exit code.
    pub fn report(&self) -> u8 {
        errln!("{self}");
        self.code
    }
}

impl fmt::Display for CliError {
    /// `error: WHAT`, then `  help: HINT` on its own line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.what)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_then_the_hint_on_its_own_line() {
        let e = CliError::invalid("workspace `x` is not a directory").hint("pass --workspace DIR");
        assert_eq!(
            e.to_string(),
            "error: workspace `x` is not a directory\n  help: pass --workspace DIR"
        );
        assert_eq!(e.code, EXIT_INVALID);
    }

    #[test]
    fn no_hint_and_an_empty_hint_print_no_help_line() {
        assert_eq!(CliError::failed("boom").to_string(), "error: boom");
        assert_eq!(CliError::busy("held").hint("").to_string(), "error: held");
        assert_eq!(CliError::busy("held").code, EXIT_BUSY);
    }
}
