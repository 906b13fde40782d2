//! The error type of the matrix crate.
//!
//! Everything `fruix matrix` can refuse before a cell runs is an [`Error`]
//! (a run itself never fails as a whole: its cells do, and the report says
//! how). [`Error::failure`] classifies an error the way the core's errors
//! are classified, and [`Error::exit_status`] gives the status a command
//! ends with from core's one table.

use std::io;
use std::path::PathBuf;

use fruix_core::{ExitStatus, Failure};

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a matrix, a source tree or a report was refused.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a matrix or machines file, finding an executor, allocating a
    /// run directory.
    #[error(transparent)]
    Core(#[from] fruix_core::Error),
    /// An option given by the caller has a value the matrix refuses.
    #[error("{option} {message}")]
    InvalidOption {
        option: &'static str,
        message: String,
    },
    /// The source tree is missing, or is not a FreeBSD source tree. The
    /// message names the path and what to do.
    #[error("{message}")]
    InvalidSource { path: PathBuf, message: String },
    /// The FreeBSD version of a source tree cannot be told from
    /// `sys/conf/newvers.sh`.
    #[error("{message}")]
    UnknownVersion { path: PathBuf, message: String },
    /// The machines file's path cannot be made absolute.
    #[error("machines file {}: {source}", fruix_core::escape::path(path))]
    MachinesPath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The matrix file's executor configuration sets a key that the
    /// scheduler sets for each cell.
    #[error(
        "{}: config.{executor}: `{key}` is set by the matrix scheduler for each cell; remove it",
        fruix_core::escape::path(matrix)
    )]
    SchedulerKey {
        matrix: PathBuf,
        executor: String,
        key: &'static str,
    },
    /// A cell cannot run as the matrix describes it (no machine can take it,
    /// it pins a machine its executor cannot use, ...).
    #[error("cell {cell}: {message}")]
    InvalidCell { cell: String, message: String },
    /// A cell's executor configuration or build request was refused.
    #[error("cell {cell}: {source}")]
    CellSetup {
        cell: String,
        #[source]
        source: Box<fruix_core::Error>,
    },
    /// The matrix's source could not be made a source object.
    #[error("source: {0}")]
    Source(Box<fruix_promote::Error>),
    /// `collect` refused a cell report (its path, found in a directory of
    /// untrusted reports, is escaped).
    #[error("cell report {}: {problem}", fruix_core::escape::path(path))]
    CellReport {
        path: PathBuf,
        problem: crate::split::CellReportProblem,
    },
    /// The report directory or a report file cannot be written.
    #[error("cannot {action} {}: {source}", fruix_core::escape::path(path))]
    Report {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Classifies this error for exit statuses: what the caller gave is
    /// [`Failure::Input`], a report that cannot be written a
    /// [`Failure::System`], and a core error keeps its own class.
    pub fn failure(&self) -> Failure {
        match self {
            Error::Core(e) => e.failure(),
            Error::InvalidOption { .. }
            | Error::InvalidSource { .. }
            | Error::UnknownVersion { .. }
            | Error::MachinesPath { .. }
            | Error::SchedulerKey { .. }
            | Error::InvalidCell { .. }
            | Error::CellSetup { .. }
            | Error::CellReport { .. } => Failure::Input,
            Error::Report { .. } => Failure::System,
            Error::Source(e) => e.failure(),
        }
    }

    /// The exit status a command ends with on this error: bad input is
    /// usage, since a matrix is refused before anything runs.
    pub fn exit_status(&self) -> ExitStatus {
        ExitStatus::of_failure(self.failure(), ExitStatus::Usage)
    }

    /// An [`Error::InvalidCell`] for cell `cell`.
    pub(crate) fn cell(cell: &str, message: impl Into<String>) -> Error {
        Error::InvalidCell {
            cell: cell.to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_errors_are_input_and_core_errors_keep_their_class() {
        assert_eq!(Error::cell("local", "pins").failure(), Failure::Input);
        assert_eq!(
            Error::cell("local", "pins").exit_status(),
            ExitStatus::Usage
        );
        let io = || io::Error::from(io::ErrorKind::PermissionDenied);
        let report = Error::Report {
            action: "write",
            path: "/r/junit.xml".into(),
            source: io(),
        };
        assert_eq!(report.failure(), Failure::System);
        assert_eq!(report.exit_status(), ExitStatus::SystemFailure);
        assert!(report
            .to_string()
            .starts_with("cannot write /r/junit.xml: "));
        let core = Error::from(fruix_core::Error::system("disk full"));
        assert_eq!(core.failure(), Failure::System);
        assert_eq!(core.to_string(), "system failure: disk full");
    }
}
