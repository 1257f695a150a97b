//! Exit codes that mean something (documented in `--help`): every failure
//! carries one, and a one-line message for a person.

/// A command failed: the exit code and what to tell the person.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: u8,
    /// One line (or a few) saying what went wrong and what to do.
    pub message: String,
}

/// 1: failed.
pub const FAILED: u8 = 1;
/// 2: bad command line or input.
pub const USAGE: u8 = 2;
/// 3: refused by the control plane.
pub const REFUSED: u8 = 3;
/// 4: unreachable, or not up in time.
pub const UNREACHABLE: u8 = 4;
/// 5: this box already has an identity.
pub const EXISTS: u8 = 5;

impl Failure {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Exit code 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(FAILED, message)
    }
}

/// `Result` of a command.
pub type Outcome<T = ()> = Result<T, Failure>;

/// Adds context to an I/O or other error as a [`FAILED`] failure.
pub trait Context<T> {
    /// `what` failed, with the cause appended.
    fn or_fail(self, what: impl FnOnce() -> String) -> Outcome<T>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn or_fail(self, what: impl FnOnce() -> String) -> Outcome<T> {
        self.map_err(|e| Failure::failed(format!("{}: {e}", what())))
    }
}
