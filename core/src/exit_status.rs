//! The exit statuses of every fruix command: one table, from which the CLI
//! exits, `fruix --help` prints its list, and the README's table is checked.

use crate::error::Failure;

/// How a fruix command ended. The numbers are part of fruix's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitStatus {
    /// 0: the command did what it was asked.
    Success,
    /// 1: a build step failed ([`Failure::Build`]); building again elsewhere
    /// fails the same way.
    BuildFailure,
    /// 2: bad arguments or input caught before any work (unknown executor,
    /// invalid request or configuration, missing source).
    Usage,
    /// 3: the machinery failed ([`Failure::System`]): unreachable machine,
    /// lost connection, timeout, full disk; a retry may succeed.
    SystemFailure,
    /// 4: input refused while validating or promoting: an invalid result
    /// root, a signature mismatch, a cap exceeded, a corrupt store object.
    PromotionFailure,
    /// A matrix cell did not pass.
    MatrixFailure,
    /// Matrix cells that must agree gave different artifacts.
    Divergence,
    /// 130 (as for `SIGINT`): the work was cancelled by Ctrl-C or `SIGTERM`.
    Cancelled,
}

impl ExitStatus {
    /// Every status, in the order of their numbers.
    pub const ALL: [ExitStatus; 8] = [
        ExitStatus::Success,
        ExitStatus::BuildFailure,
        ExitStatus::Usage,
        ExitStatus::SystemFailure,
        ExitStatus::PromotionFailure,
        ExitStatus::MatrixFailure,
        ExitStatus::Divergence,
        ExitStatus::Cancelled,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::BuildFailure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::SystemFailure => 3,
            ExitStatus::PromotionFailure => 4,
            ExitStatus::MatrixFailure => 5,
            ExitStatus::Divergence => 6,
            ExitStatus::Cancelled => 130,
        }
    }

    /// The status with exit code `code`, if it is one of fruix's.
    pub fn from_code(code: u32) -> Option<ExitStatus> {
        Self::ALL.into_iter().find(|s| u32::from(s.code()) == code)
    }

    /// The status's name, as `--json` failures give it (`kind`).
    pub fn name(self) -> &'static str {
        match self {
            ExitStatus::Success => "success",
            ExitStatus::BuildFailure => "build-failure",
            ExitStatus::Usage => "usage",
            ExitStatus::SystemFailure => "system-failure",
            ExitStatus::PromotionFailure => "promotion-failure",
            ExitStatus::MatrixFailure => "matrix-failure",
            ExitStatus::Divergence => "divergence",
            ExitStatus::Cancelled => "cancelled",
        }
    }

    /// What the status means, as `fruix --help` and the README say it.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitStatus::Success => "success",
            ExitStatus::BuildFailure => {
                "build failure: a build step failed (its name, last log lines and log path are printed)"
            }
            ExitStatus::Usage => {
                "invalid input or usage: bad arguments, unknown executor, not a store object, another version"
            }
            ExitStatus::SystemFailure => {
                "system failure: machine unreachable, connection lost, timeout, disk full, store not writable"
            }
            ExitStatus::PromotionFailure => {
                "promotion or validation failure: invalid root, signature mismatch, over a cap, corrupt object"
            }
            ExitStatus::MatrixFailure => {
                "matrix: a cell did not pass (it failed, or fail-fast or the time limit cancelled it)"
            }
            ExitStatus::Divergence => "matrix: every cell passed, but cells that must agree diverged",
            ExitStatus::Cancelled => "cancelled (Ctrl-C, SIGTERM or SIGHUP)",
        }
    }

    /// The status of a failure; `input` is what bad input means where it
    /// happened (usage before a build, a promotion failure when promoting).
    pub fn of_failure(failure: Failure, input: ExitStatus) -> ExitStatus {
        match failure {
            Failure::Build => ExitStatus::BuildFailure,
            Failure::System => ExitStatus::SystemFailure,
            Failure::Cancelled => ExitStatus::Cancelled,
            Failure::Input => input,
        }
    }

    /// The list `fruix --help` ends with.
    pub fn help_table() -> String {
        let mut out = String::from("Exit statuses:");
        for status in Self::ALL {
            out.push_str(&format!("\n  {:<4} {}", status.code(), status.meaning()));
        }
        out
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_in_order() {
        let codes: Vec<u8> = ExitStatus::ALL.iter().map(|s| s.code()).collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "{codes:?}");
    }

    #[test]
    fn help_lines_fit_100_columns() {
        for line in ExitStatus::help_table().lines() {
            assert!(line.len() <= 100, "{} columns: {line}", line.len());
        }
    }
}
