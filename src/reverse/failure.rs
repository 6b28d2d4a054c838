//! Why a reverse pipeline stopped, with the exit code of the CLI contract it maps to.

use crate::exit;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `exit::FAILED`, `exit::QUOTA` or `exit::USAGE`.
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Something failed at run time (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: exit::FAILED,
            message: message.into(),
        }
    }

    /// Stopped by the monthly quota (exit 3).
    pub fn quota(message: impl Into<String>) -> Self {
        Failure {
            code: exit::QUOTA,
            message: message.into(),
        }
    }

    /// Bad configuration found at run time (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
