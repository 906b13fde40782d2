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
        /// The option or matrix file field at fault, as the user spells it:
        /// `--max-parallel`, `--cell`, `share-results`, `runner-tags`.
        option: &'static str,
        /// What is wrong with its value; the message shows it after the option.
        message: String,
    },
    /// The report directory is locked by another `fruix matrix` command: a
    /// `run` has it to itself, `run-cell` and `collect` share it only with
    /// one another.
    #[error("--report-dir {} is in use by another fruix matrix command (a `matrix run` has its report directory to itself; `run-cell` and `collect` share one only with each other); wait for it to finish, or give another directory", fruix_core::escape::path(path))]
    ReportDirInUse {
        /// The report directory.
        path: PathBuf,
    },
    /// The source tree is missing, or is not a FreeBSD source tree. The
    /// message names the path and what to do.
    #[error("{message}")]
    InvalidSource {
        /// The source as given, or its canonical path when it exists but is no
        /// FreeBSD source tree.
        path: PathBuf,
        /// The whole message shown.
        message: String,
    },
    /// The FreeBSD version of a source tree cannot be told from
    /// `sys/conf/newvers.sh`, or names no branch.
    #[error("{message}")]
    UnknownVersion {
        /// The source tree.
        path: PathBuf,
        /// The whole message shown: the tree, why `newvers.sh` could not be
        /// read, and how to give the version instead.
        message: String,
    },
    /// The machines file's path cannot be made absolute.
    #[error("machines file {}: {source}", fruix_core::escape::path(path))]
    MachinesPath {
        /// The machines file's path as given (`--machines`, or the matrix
        /// file's `machines-file`).
        path: PathBuf,
        /// Why it could not be made absolute (the current directory is gone,
        /// say).
        #[source]
        source: io::Error,
    },
    /// The matrix file's executor configuration sets a key that the
    /// scheduler sets for each cell it places on a machine.
    #[error(
        "{}: config.{executor}: `{key}` is set by the matrix scheduler for each cell it places on a machine (use the machines file, and `machine` in an `include` to pin a cell); remove it",
        fruix_core::escape::path(matrix)
    )]
    SchedulerKey {
        /// The matrix file.
        matrix: PathBuf,
        /// The executor whose `config` entry sets the key.
        executor: String,
        /// The key, one of [`MACHINE_KEYS`](crate::plan::MACHINE_KEYS).
        key: &'static str,
    },
    /// A cell cannot run as the matrix describes it (no machine can take it,
    /// it pins a machine its executor cannot use, ...).
    #[error("cell {cell}: {message}")]
    InvalidCell {
        /// The cell's id.
        cell: String,
        /// Why it cannot run, and what to change.
        message: String,
    },
    /// A cell's executor configuration or build request was refused.
    #[error("cell {cell}: {source}")]
    CellSetup {
        /// The cell's id.
        cell: String,
        /// What the executor's factory or the request check refused.
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
        /// The refused report, as found or named (escaped when shown).
        path: PathBuf,
        /// What is wrong with it.
        problem: crate::split::CellReportProblem,
    },
    /// The report directory or a report file cannot be written.
    #[error("cannot {action} {}: {source}", fruix_core::escape::path(path))]
    Report {
        /// What was being done: `write` (a report file), `create report
        /// directory`, `remove` (what an earlier run wrote there).
        action: &'static str,
        /// The report file, the `logs/` directory of the report directory,
        /// or the entry being removed.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A cell's log could not be written (a full disk, say): its cell
    /// failed, as a system failure, and the run fails with it once its
    /// report is written (when it can be).
    #[error("{source}; its cell failed (system failure), {}", report_said(report))]
    CellLog {
        /// The write that failed ([`fruix_core::Error::Io`]).
        source: Box<fruix_core::Error>,
        /// The report written (`report.json`, or a cell report), or why
        /// it could not be.
        report: std::result::Result<PathBuf, String>,
    },
}

/// What [`Error::CellLog`] says of the report.
fn report_said(report: &std::result::Result<PathBuf, String>) -> String {
    match report {
        Ok(path) => format!("as the report {} says", fruix_core::escape::path(path)),
        Err(e) => format!("and the report could not be written either: {e}"),
    }
}

impl Error {
    /// Classifies this error for exit statuses: what the caller gave is
    /// [`Failure::Input`], a report that cannot be written a
    /// [`Failure::System`], and a core error keeps its own class.
    pub fn failure(&self) -> Failure {
        match self {
            Error::Core(e) => e.failure(),
            Error::InvalidOption { .. }
            | Error::ReportDirInUse { .. }
            | Error::InvalidSource { .. }
            | Error::UnknownVersion { .. }
            | Error::MachinesPath { .. }
            | Error::SchedulerKey { .. }
            | Error::InvalidCell { .. }
            | Error::CellSetup { .. }
            | Error::CellReport { .. } => Failure::Input,
            Error::Report { .. } | Error::CellLog { .. } => Failure::System,
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
