//! Exit statuses and the mapping from library errors to them.

use std::process::ExitCode;

use fruix_core::{Error as CoreError, Failure};

/// The documented exit statuses (see `args::EXIT_STATUSES` and the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success = 0,
    BuildFailure = 1,
    Usage = 2,
    SystemFailure = 3,
    PromotionFailure = 4,
    /// A matrix cell did not pass.
    MatrixFailure = 5,
    /// Matrix cells that must agree gave different artifacts.
    Divergence = 6,
    Cancelled = 130,
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> ExitCode {
        ExitCode::from(s as u8)
    }
}

/// An error with the exit status it maps to.
#[derive(Debug)]
pub struct CliError {
    pub status: Status,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn new(status: Status, error: impl Into<anyhow::Error>) -> Self {
        CliError {
            status,
            error: error.into(),
        }
    }

    /// A usage error with `message`.
    pub fn usage(message: impl std::fmt::Display) -> Self {
        CliError::new(Status::Usage, anyhow::anyhow!("{message}"))
    }
}

/// Status of a core error met while preparing a build (bad input is usage).
pub fn before_run(e: &CoreError) -> Status {
    by_failure(e.failure(), Status::Usage)
}

/// Status of a core error met while validating or promoting.
pub fn promotion(e: &CoreError) -> Status {
    by_failure(e.failure(), Status::PromotionFailure)
}

fn by_failure(f: Failure, input: Status) -> Status {
    match f {
        Failure::Build => Status::BuildFailure,
        Failure::System => Status::SystemFailure,
        Failure::Cancelled => Status::Cancelled,
        Failure::Input => input,
    }
}

/// Status of a promote-crate error.
pub fn promote(e: &fruix_promote::Error) -> Status {
    match e {
        fruix_promote::Error::Core(c) => promotion(c),
        fruix_promote::Error::StoreNotWritable { .. } => Status::SystemFailure,
        fruix_promote::Error::NoStore { .. } | fruix_promote::Error::NotAStoreObject { .. } => {
            Status::Usage
        }
        _ => Status::PromotionFailure,
    }
}

pub type CliResult<T = Status> = Result<T, CliError>;

/// Wraps a promote error with its status.
pub fn from_promote(e: fruix_promote::Error) -> CliError {
    CliError::new(promote(&e), e)
}
