//! The error type shared by the core contracts.
//!
//! Every variant names the file, field or executor it is about and, where there
//! is one, what to do about it. Messages are lowercase fragments that read well
//! after "failed to ...". [`Error::failure`] classifies an error for callers that
//! retry: a [`Failure::System`] may succeed elsewhere, a [`Failure::Build`] will not.

use std::io;
use std::path::{Path, PathBuf};

use crate::escape;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, classified so that callers can decide to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// The build itself failed (a make step exited non-zero): retrying elsewhere
    /// gives the same failure.
    Build,
    /// The machinery around the build failed (machine unreachable, disk full,
    /// helper missing, connection dropped): a retry may succeed.
    System,
    /// The input was wrong (bad metadata, bad arguments, a result root that
    /// does not validate): fix the input.
    Input,
    /// The work was cancelled.
    Cancelled,
}

/// The log of a failed step or command: its file, if one was written, and
/// its last lines, stdout and stderr merged in the order they arrived.
/// Printers show the tail (escaped) after the error.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogRef {
    pub path: Option<PathBuf>,
    pub tail: Vec<String>,
}

impl LogRef {
    /// `; full log: PATH`, or nothing without a file.
    pub fn file_note(&self) -> String {
        self.path
            .as_ref()
            .map(|p| format!("; full log: {}", escape::path(p)))
            .unwrap_or_default()
    }
}

/// One problem found in a result root by [`crate::result_root::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file or directory the problem is about.
    pub path: PathBuf,
    /// The promotion.scm field involved, if any (for example `artifacts.world.probe`).
    pub field: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // An error that names its own path (an I/O error) comes with none.
        if !self.path.as_os_str().is_empty() {
            write!(f, "{}: ", escape::path(&self.path))?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{}`: ", escape::text(field))?;
        }
        f.write_str(&self.message)
    }
}

/// Why a metadata file was refused before its contents were read as metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataFileProblem {
    /// The file is a symlink (never followed).
    Symlink,
    /// The file is a directory, FIFO, device or socket (`kind` says which).
    NotRegular { kind: &'static str },
    /// The file holds more than `limit` bytes.
    TooLarge { limit: usize },
    /// The byte at `offset` is not part of valid UTF-8.
    NotUtf8 { offset: usize },
}

impl std::fmt::Display for MetadataFileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataFileProblem::Symlink => write!(
                f,
                "is a symlink; fruix never follows symlinks in metadata: replace it with the file itself"
            ),
            MetadataFileProblem::NotRegular { kind } => write!(
                f,
                "is a {kind}, not a regular file; metadata files are regular files: replace it"
            ),
            MetadataFileProblem::TooLarge { limit } => write!(
                f,
                "is larger than {limit} bytes ({} KiB), the limit for a metadata file; fruix never writes one that large: check where it came from",
                limit / 1024
            ),
            MetadataFileProblem::NotUtf8 { offset } => write!(
                f,
                "is not UTF-8 text (invalid byte at offset {offset}); metadata files are UTF-8: check where it came from"
            ),
        }
    }
}

/// The core error type.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An S-expression file could not be read as an S-expression.
    #[error("{}:{line}:{column}: syntax error: {message}", escape::path(path))]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A metadata field is missing, mistyped or has a value that is not allowed.
    #[error("{}: field `{}`{}: {message}", escape::path(path), escape::text(field), line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    InvalidMetadata {
        path: PathBuf,
        field: String,
        line: Option<usize>,
        message: String,
    },
    /// A metadata file declares a format version this fruix does not read.
    #[error("{}: unsupported format-version {version}; this fruix reads format-version {supported} (upgrade fruix, or regenerate the file)", escape::path(path))]
    UnsupportedFormatVersion {
        path: PathBuf,
        version: i64,
        supported: i64,
    },
    /// A tree contains something that cannot be part of a store object.
    #[error("{}: {kind} cannot be part of a store object (only directories, regular files and symlinks can); remove it from the tree", escape::path(path))]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    /// A metadata file is not a regular file of UTF-8 text within
    /// [`MAX_METADATA_BYTES`](crate::fsutil::MAX_METADATA_BYTES); nothing of
    /// it was shown, and nothing behind a symlink or a device was read.
    #[error("{}: {problem}", escape::path(path))]
    MetadataFile {
        path: PathBuf,
        problem: MetadataFileProblem,
    },
    /// A path inside a tree or root escapes it (absolute, `..`, or through a symlink).
    #[error("{}: {message}", escape::path(path))]
    UnsafePath { path: PathBuf, message: String },
    /// A tree's signature does not match the one declared for it.
    #[error("{}: tree signature mismatch: declared {expected}, computed {actual}; the tree changed after it was signed (or in transit): rebuild it", escape::path(path))]
    SignatureMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// A result root failed validation; every problem found is listed.
    #[error("{}: not a valid result root:\n{}", escape::path(root), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    InvalidResultRoot {
        root: PathBuf,
        problems: Vec<Problem>,
    },
    /// A file or directory already exists where fruix would create one.
    #[error("{}: already exists; {hint}", escape::path(path))]
    AlreadyExists { path: PathBuf, hint: String },
    /// A file or directory that must exist does not.
    #[error("{}: not found; {hint}", escape::path(path))]
    NotFound { path: PathBuf, hint: String },
    /// An I/O operation on a named path failed.
    #[error(
        "failed to {action} {}: {source}{}",
        escape::path(path),
        io_hint(source)
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No executor is registered under this name.
    #[error("unknown executor `{}`; {}available executors: {}", escape::text(name), suggestion.as_ref().map(|s| format!("did you mean `{s}`? ")).unwrap_or_default(), available.join(", "))]
    UnknownExecutor {
        name: String,
        available: Vec<String>,
        /// The available name `name` is probably a misspelling of.
        suggestion: Option<String>,
    },
    /// Two executors were registered under one name.
    #[error(
        "executor `{}` is registered twice: by {} and by {}; rename one of them",
        escape::text(name),
        escape::text(first),
        escape::text(second)
    )]
    DuplicateExecutor {
        name: String,
        first: String,
        second: String,
    },
    /// An executor's configuration was rejected.
    #[error(
        "executor `{}`: invalid configuration: {message}",
        escape::text(executor)
    )]
    InvalidConfig { executor: String, message: String },
    /// The build request is not acceptable.
    #[error("invalid build request: {message}")]
    InvalidRequest { message: String },
    /// A build step failed; `log` has its last lines (and its log file).
    #[error("build step `{}` failed{}{}", escape::text(step), status.as_ref().map(|s| format!(" ({})", escape::text(s))).unwrap_or_default(), log.file_note())]
    Build {
        step: String,
        status: Option<String>,
        log: LogRef,
    },
    /// The machinery around the build failed; retrying may help. `log`
    /// has the last lines of the command that failed, when one did.
    #[error("system failure: {message}{}", log.as_ref().map(LogRef::file_note).unwrap_or_default())]
    System {
        message: String,
        log: Option<LogRef>,
    },
    /// The work was cancelled (Ctrl-C, SIGTERM, or a caller's token).
    #[error("cancelled")]
    Cancelled,
    /// Untrusted input (a guest's archive, say) went over a cap. `key` is the
    /// configuration key that sets the cap, `limit` its value.
    #[error("{input}: {detail}, over the cap {key} = {limit}; it is refused (if this is expected, raise the executor configuration key `{key}`)")]
    LimitExceeded {
        input: String,
        detail: String,
        key: &'static str,
        limit: u64,
    },
    /// A connection to a machine could not be kept (or made): a retry on a
    /// new connection may succeed.
    #[error("system failure: connection lost to {} ({}); check that the machine is up and sshd is running, then retry", escape::text(target), escape::text(detail))]
    ConnectionLost { target: String, detail: String },
    /// Something did not finish or answer within its time limit. `detail`
    /// says what was done about it and what to do.
    #[error("system failure: {what} timed out after {}s{detail}{}", limit.as_secs_f64(), log.as_ref().map(LogRef::file_note).unwrap_or_default())]
    Timeout {
        what: String,
        limit: std::time::Duration,
        detail: String,
        log: Option<LogRef>,
    },
    /// The machine to build on could not be brought up (a virtual machine
    /// that did not prepare, boot or open SSH): nothing was built on it. A
    /// retry elsewhere may succeed; a matrix sets the machine aside.
    #[error(transparent)]
    MachineUnavailable(Box<Error>),
    /// A machines file has no machine of that name.
    #[error("{}: defines no machine named {}; it defines: {}{}", escape::path(path), escape::quoted(name), listed(known), suggestion.as_ref().map(|s| format!(" (did you mean {}?)", escape::text(s))).unwrap_or_default())]
    UnknownMachine {
        path: PathBuf,
        name: String,
        known: Vec<String>,
        suggestion: Option<String>,
    },
}

impl Error {
    /// An [`Error::Io`] for `action` on `path`.
    pub fn io(action: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A [`Error::System`] with `message`.
    pub fn system(message: impl Into<String>) -> Self {
        Error::System {
            message: message.into(),
            log: None,
        }
    }

    /// The log of the step or command that failed, if the error has one.
    pub fn log(&self) -> Option<&LogRef> {
        match self {
            Error::Build { log, .. } => Some(log),
            Error::System { log, .. } | Error::Timeout { log, .. } => log.as_ref(),
            Error::MachineUnavailable(e) => e.log(),
            _ => None,
        }
    }

    /// Classifies this error for retry decisions and exit statuses.
    pub fn failure(&self) -> Failure {
        match self {
            Error::Build { .. } => Failure::Build,
            Error::System { .. }
            | Error::Io { .. }
            | Error::ConnectionLost { .. }
            | Error::Timeout { .. }
            | Error::MachineUnavailable(_) => Failure::System,
            Error::Cancelled => Failure::Cancelled,
            Error::Syntax { .. }
            | Error::InvalidMetadata { .. }
            | Error::UnsupportedFormatVersion { .. }
            | Error::UnsupportedFileType { .. }
            | Error::MetadataFile { .. }
            | Error::UnsafePath { .. }
            | Error::SignatureMismatch { .. }
            | Error::InvalidResultRoot { .. }
            | Error::AlreadyExists { .. }
            | Error::NotFound { .. }
            | Error::UnknownExecutor { .. }
            | Error::DuplicateExecutor { .. }
            | Error::InvalidConfig { .. }
            | Error::InvalidRequest { .. }
            | Error::LimitExceeded { .. }
            | Error::UnknownMachine { .. } => Failure::Input,
        }
    }
}

/// How many names a message lists before saying how many more there are.
const LISTED_NAMES: usize = 10;

/// `names` for a message: escaped, the first [`LISTED_NAMES`] of them and
/// how many more (a pool may have thousands), or `none`.
fn listed(names: &[String]) -> String {
    if names.is_empty() {
        return "none".to_string();
    }
    let shown: Vec<String> = names
        .iter()
        .take(LISTED_NAMES)
        .map(|n| escape::text(n).to_string())
        .collect();
    match names.len().saturating_sub(LISTED_NAMES) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// What to do about common I/O failures, appended to their messages.
fn io_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "; free space on that filesystem and try again",
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "; check the permissions, or run as a user who may access it"
        }
        Some(libc::EROFS) => "; the filesystem is read-only: choose a writable location",
        _ => "",
    }
}

/// Extension for `io::Result` that attaches the action and path.
pub trait IoContext<T> {
    /// Maps the error into [`Error::Io`] naming `action` and `path`.
    fn with_path(self, action: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn with_path(self, action: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
