//! Exit statuses and the mapping from library errors to them.

use fruix_core::Error as CoreError;

/// The one table of exit statuses lives in core.
pub use fruix_core::ExitStatus as Status;

/// An error with the exit status it maps to.
#[derive(Debug)]
pub struct CliError {
    pub status: Status,
    pub error: anyhow::Error,
    /// The command already printed its result as JSON (a `store verify`
    /// report that found corruption): `--json` adds no error object.
    pub reported: bool,
}

impl CliError {
    pub fn new(status: Status, error: impl Into<anyhow::Error>) -> Self {
        CliError {
            status,
            error: error.into(),
            reported: false,
        }
    }

    /// Marks the error as already reported in the command's JSON result.
    pub fn reported(mut self) -> Self {
        self.reported = true;
        self
    }

    /// A usage error with `message`.
    pub fn usage(message: impl std::fmt::Display) -> Self {
        CliError::new(Status::Usage, anyhow::anyhow!("{message}"))
    }
}

/// Status of a core error met while preparing a build (bad input is usage).
pub fn before_run(e: &CoreError) -> Status {
    Status::of_failure(e.failure(), Status::Usage)
}

/// Status of a core error met while validating or promoting.
pub fn promotion(e: &CoreError) -> Status {
    Status::of_failure(e.failure(), Status::PromotionFailure)
}

/// Status of a promote-crate error.
pub fn promote(e: &fruix_promote::Error) -> Status {
    e.exit_status()
}

pub type CliResult<T = Status> = Result<T, CliError>;

/// Wraps a promote error with its status.
pub fn from_promote(e: fruix_promote::Error) -> CliError {
    CliError::new(promote(&e), e)
}

/// Wraps a matrix-crate error with its status.
pub fn from_matrix(e: fruix_matrix::Error) -> CliError {
    CliError::new(e.exit_status(), e)
}

/// A failure to create or write an output file named on the command line
/// (`store export --output`, `store generate-key`'s key files), one mapping
/// for all: a name that cannot be made (its directory missing, or not a
/// directory) or that is taken (output files are never overwritten) is the
/// caller's to fix, usage (2); anything else (no permission, a read-only
/// or full disk) is a system failure (3). `what` says what was being done,
/// the path is escaped, and `taken` is added when the file exists.
pub fn output_file(what: &str, path: &std::path::Path, e: std::io::Error, taken: &str) -> CliError {
    use std::io::ErrorKind;
    let status = match e.kind() {
        ErrorKind::NotFound | ErrorKind::AlreadyExists | ErrorKind::NotADirectory => Status::Usage,
        _ => Status::SystemFailure,
    };
    // One wording for a taken name, whether the OS said it (`File exists
    // (os error 17)`) or fruix found it first.
    let (e, why) = match e.kind() {
        ErrorKind::AlreadyExists => ("it already exists".to_string(), taken),
        _ => (e.to_string(), ""),
    };
    CliError::new(
        status,
        anyhow::anyhow!("cannot {what} {}: {e}{why}", fruix_core::escape::path(path)),
    )
}
