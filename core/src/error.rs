//! The error type shared by the core contracts.
//!
//! Every variant names the file, field or executor it is about and, where there
//! is one, what to do about it. Messages are lowercase fragments that read well
//! after "failed to ...". [`Error::failure`] classifies an error for callers that
//! retry: a [`Failure::System`] may succeed elsewhere, a [`Failure::Build`] will not.

use std::io;
use std::path::{Path, PathBuf};

use crate::escape;

mod host_key;

pub use self::host_key::{HostKeyProblem, OfferedKey, RecordedKey};

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
    /// The full log file, on the machine that runs fruix; `None` when the
    /// output only arrived as lines (a guest's failure report).
    pub path: Option<PathBuf>,
    /// The last lines, oldest first, without line endings (at most
    /// [`TAIL_LINES`](crate::process::TAIL_LINES) from a step run by
    /// [`crate::process`]). Untrusted text: print it through [`crate::escape`].
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
    /// The line of `path` the field is on, when known.
    pub line: Option<usize>,
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
            write!(f, "field `{}`", escape::text(field))?;
            if let Some(line) = self.line {
                write!(f, " (line {line})")?;
            }
            f.write_str(": ")?;
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
    NotRegular {
        /// What the file is instead, without an article, read after "is a":
        /// `directory`, `FIFO`, `character device`, `block device`,
        /// `socket`, `file of unknown type`.
        kind: &'static str,
        /// What the user named it as (`secret key file`, `trusted keys
        /// file`), read after "the"; `None` for metadata.
        named: Option<&'static str>,
    },
    /// The file holds more than `limit` bytes.
    TooLarge {
        /// The cap in bytes
        /// ([`MAX_METADATA_BYTES`](crate::fsutil::MAX_METADATA_BYTES)).
        limit: usize,
    },
    /// The byte at `offset` is not part of valid UTF-8.
    NotUtf8 {
        /// Byte offset of the first invalid byte from the start of the file.
        offset: usize,
    },
}

impl std::fmt::Display for MetadataFileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataFileProblem::Symlink => write!(
                f,
                "is a symlink; fruix never follows symlinks in metadata: replace it with the file itself"
            ),
            MetadataFileProblem::NotRegular { kind, named: None } => write!(
                f,
                "is a {kind}, not a regular file; metadata files are regular files: replace it"
            ),
            MetadataFileProblem::NotRegular {
                kind,
                named: Some(named),
            } => write!(
                f,
                "is a {kind}, not a regular file; give the path of a regular file as the {named}"
            ),
            MetadataFileProblem::TooLarge { limit } => write!(
                f,
                "is larger than {limit} bytes ({} KiB), the most fruix reads of a metadata or configuration file: check where it came from",
                limit / 1024
            ),
            MetadataFileProblem::NotUtf8 { offset } => write!(
                f,
                "is not UTF-8 text (invalid byte at offset {offset}): check where it came from"
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
        /// The file the text came from, for the message.
        path: PathBuf,
        /// 1-based line of the error; 0 when the parser gave no position.
        line: usize,
        /// 1-based column on `line`, counted in characters (Unicode scalar
        /// values, as most editors count them; a tab is one), for a
        /// refusal of the limits scan and a syntax error of the parser
        /// alike; 0 when the parser gave no position.
        column: usize,
        /// What is wrong, without the position.
        message: String,
    },
    /// A metadata field is missing, mistyped or has a value that is not allowed.
    #[error("{}: field `{}`{}: {message}", escape::path(path), escape::text(field), line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    InvalidMetadata {
        /// The file the value was read from: a metadata file, or another
        /// input such as `sys/conf/newvers.sh` or a key file.
        path: PathBuf,
        /// The field. Records read through [`crate::sexp`] name it dotted
        /// from the top record, repeated records indexed from 0: `run-id`,
        /// `build-policy.jobs`, `machine[0].port`. Other readers use their
        /// own names (`artifacts.world.tree-signature`, `BRANCH`).
        field: String,
        /// 1-based line of the field, or of its record when the field is
        /// missing; `None` when no line applies (an empty file, a check made
        /// after parsing).
        line: Option<usize>,
        /// What is wrong with the value and what to give instead.
        message: String,
    },
    /// A metadata file declares a format version this fruix does not read.
    #[error("{}: unsupported format-version {version}; this fruix reads format-version {supported} (upgrade fruix, or regenerate the file)", escape::path(path))]
    UnsupportedFormatVersion {
        /// The metadata file.
        path: PathBuf,
        /// The `format-version` the file declares.
        version: i64,
        /// The only `format-version` this fruix reads for that kind of file.
        supported: i64,
    },
    /// A tree contains something that cannot be part of a store object.
    #[error("{}: {kind} cannot be part of a store object (only directories, regular files and symlinks can); remove it from the tree", escape::path(path))]
    UnsupportedFileType {
        /// Full path of the offending entry.
        path: PathBuf,
        /// What it is, with its article: `a FIFO`, `a socket`,
        /// `a block device`, `a character device`, `an unknown file type`.
        kind: &'static str,
    },
    /// A metadata file is not a regular file of UTF-8 text within
    /// [`MAX_METADATA_BYTES`](crate::fsutil::MAX_METADATA_BYTES); nothing of
    /// it was shown, and nothing behind a symlink or a device was read.
    #[error("{}: {problem}", escape::path(path))]
    MetadataFile {
        /// The metadata file refused.
        path: PathBuf,
        /// Why it was refused.
        problem: MetadataFileProblem,
    },
    /// A path inside a tree or root escapes it (absolute, `..`, or through a symlink).
    #[error("{}: {message}", escape::path(path))]
    UnsafePath {
        /// The path refused: the full path of an entry reached on disk, or
        /// the path as declared (an archive member, a metadata value).
        path: PathBuf,
        /// How it escapes, and what fruix does instead; follows the path in
        /// the message.
        message: String,
    },
    /// A tree's signature does not match the one declared for it.
    #[error("{}: tree signature mismatch: declared {expected}, computed {actual}; the tree changed after it was signed (or in transit): rebuild it", escape::path(path))]
    SignatureMismatch {
        /// The tree whose signature was checked.
        path: PathBuf,
        /// The declared signature, `sha256:<64 hex digits>` (see
        /// [`TreeSignature`](crate::manifest::TreeSignature)).
        expected: String,
        /// The signature computed from the tree as it is now, same form.
        actual: String,
    },
    /// A result root failed validation; every problem found is listed.
    #[error("{}: not a valid result root:\n{}", escape::path(root), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    InvalidResultRoot {
        /// The result root directory.
        root: PathBuf,
        /// Every problem found, in the order checked; never empty.
        problems: Vec<Problem>,
    },
    /// A file or directory already exists where fruix would create one.
    #[error("{}: already exists; {hint}", escape::path(path))]
    AlreadyExists {
        /// What exists.
        path: PathBuf,
        /// What to do about it, printed after `already exists; `.
        hint: String,
    },
    /// A file or directory that must exist does not.
    #[error("{}: not found; {hint}", escape::path(path))]
    NotFound {
        /// What is missing.
        path: PathBuf,
        /// Why it should exist or what to do, printed after `not found; `.
        hint: String,
    },
    /// An I/O operation on a named path failed.
    #[error(
        "failed to {action} {}: {source}{}",
        escape::path(path),
        io_hint(source)
    )]
    Io {
        /// What fruix was doing, as a verb phrase read after "failed to"
        /// and before the path: `read`, `create log directory`, `set mode of`.
        action: &'static str,
        /// The path the operation was on.
        path: PathBuf,
        /// The operating system's error; its errno selects the hint printed
        /// after it (disk full, permission denied, read-only filesystem).
        #[source]
        source: io::Error,
    },
    /// No executor is registered under this name.
    #[error("unknown executor `{}`; {}available executors: {}", escape::text(name), suggestion.as_ref().map(|s| format!("did you mean `{s}`? ")).unwrap_or_default(), available.join(", "))]
    UnknownExecutor {
        /// The name asked for, as given (untrusted; the message escapes it).
        name: String,
        /// Every registered name, sorted.
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
        /// The name both claim.
        name: String,
        /// The registration already present, as `ORIGIN (KIND)`: the crate
        /// name of a compiled-in executor, `FILE:LINE` of an external one.
        first: String,
        /// The registration refused, in the same form.
        second: String,
    },
    /// An executor's configuration was rejected.
    #[error(
        "executor `{}`: invalid configuration: {message}",
        escape::text(executor)
    )]
    InvalidConfig {
        /// The executor's registered name.
        executor: String,
        /// What is wrong: serde's message for an unknown key or a mistyped
        /// value, rebuilt with the key or value escaped and cut, or the
        /// executor's own check.
        message: String,
    },
    /// A private key file the caller named (an SSH identity: `--identity`,
    /// the `identity` configuration key, a machine's `private-key`) cannot
    /// be used: it is not there, not a regular file, not a private key, or
    /// encrypted without its passphrase. Nothing was sent with it; the
    /// caller's to fix, as a configuration is.
    #[error("cannot use identity {} (the private key file of --identity, the `identity` configuration key or a machine's `private-key`): {problem}", escape::path(path))]
    InvalidIdentity {
        /// The key file, as given.
        path: PathBuf,
        /// What is wrong with it and what to give instead.
        problem: String,
    },
    /// An SSH host key was refused, or could not be checked, by the
    /// caller's known_hosts file or pinned key: an unknown, changed or
    /// revoked key, a certificate, a pinned key or known_hosts file that
    /// cannot be read as one. Nothing was sent; the caller's to fix, as a
    /// configuration is (never retried, no machine set aside). A failure of
    /// this host to read or write the file stays [`Error::Io`].
    #[error("SSH host key of {}: {problem}", escape::text(host))]
    HostKey {
        /// The host as known_hosts names it: `host`, or `[host]:port` off
        /// port 22.
        host: String,
        /// What is wrong, and what to do (boxed: it is large, and rare).
        problem: Box<HostKeyProblem>,
    },
    /// The build request is not acceptable.
    #[error("invalid build request: {message}")]
    InvalidRequest {
        /// What in the request is wrong and what to give instead.
        message: String,
    },
    /// A build step failed; `log` has its last lines (and its log file).
    #[error("build step `{}` failed{}{}", escape::text(step), status.as_ref().map(|s| format!(" ({})", escape::text(s))).unwrap_or_default(), log.file_note())]
    Build {
        /// The step (stage) that failed: `buildworld`, `installkernel`, or
        /// the name a guest or external executor reported.
        step: String,
        /// How it ended, for the message: `exit status 2`, `killed by signal
        /// 9`, `in the guest: exit status 2`; `None` when unknown.
        status: Option<String>,
        /// Its last output lines, and its log file when there is one.
        log: LogRef,
    },
    /// The machinery around the build failed; retrying may help. `log`
    /// has the last lines of the command that failed, when one did.
    #[error("system failure: {message}{}", log.as_ref().map(LogRef::file_note).unwrap_or_default())]
    System {
        /// What failed and, where known, what to do; printed after
        /// `system failure: `.
        message: String,
        /// The failed command's output, when a command failed.
        log: Option<LogRef>,
    },
    /// The work was cancelled (Ctrl-C, SIGTERM, or a caller's token).
    #[error("cancelled")]
    Cancelled,
    /// Untrusted input (a guest's archive, say) went over a cap. `key` is the
    /// configuration key that sets the cap, `limit` its value.
    #[error("{input}: {detail}, over the cap {key} = {limit}; it is refused (if this is expected, raise the executor configuration key `{key}`)")]
    LimitExceeded {
        /// What was refused, as a noun phrase (`the guest's archive of its
        /// result root`).
        input: String,
        /// What was measured that went over (`a component of 256 bytes`).
        detail: String,
        /// The executor configuration key that sets the cap
        /// (`import_max_name_bytes`).
        key: &'static str,
        /// The cap in force, in the key's unit (bytes, entries, ...).
        limit: u64,
    },
    /// A connection to a machine could not be kept (or made): a retry on a
    /// new connection may succeed.
    #[error("system failure: connection lost to {} ({}); check that the machine is up and sshd is running, then retry", escape::text(target), escape::text(detail))]
    ConnectionLost {
        /// Where the connection went, as
        /// [`SshTarget`](crate::ssh_target::SshTarget) displays it:
        /// `user@host:port`.
        target: String,
        /// What failed (the SSH library's or the peer's words).
        detail: String,
    },
    /// Something did not finish or answer within its time limit. `detail`
    /// says what was done about it and what to do.
    #[error("system failure: {what} timed out after {}s{detail}{}", limit.as_secs_f64(), log.as_ref().map(LogRef::file_note).unwrap_or_default())]
    Timeout {
        /// What timed out, as a noun phrase: `step buildworld`, `connecting
        /// to root@host:22`.
        what: String,
        /// The time limit that passed.
        limit: std::time::Duration,
        /// Appended verbatim after the duration, so it starts with its own
        /// separator (`; it was stopped`) or is empty.
        detail: String,
        /// The output of the command that timed out, when one did.
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
        /// The machines file.
        path: PathBuf,
        /// The machine name asked for.
        name: String,
        /// Every machine the file defines, in file order (the message shows
        /// the first ten).
        known: Vec<String>,
        /// The known name closest to `name`, when one is close enough to be a
        /// likely misspelling.
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
            | Error::InvalidIdentity { .. }
            | Error::HostKey { .. }
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
        Some(libc::EFBIG) => {
            "; the file is larger than the limit on file sizes (ulimit -f) or the filesystem allows"
        }
        Some(libc::EMFILE) => {
            "; this process has too many files open: raise the limit on open files (ulimit -n)"
        }
        Some(libc::ENFILE) => "; the system has too many files open: try again later",
        Some(libc::EXDEV) => {
            "; a hard link or rename cannot cross file systems: keep the store (its .links included) on one file system, with nothing mounted inside it"
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_errors_name_the_limit_or_the_file_system_to_look_at() {
        let said = |errno: i32| {
            Error::io("write", "/s/f", io::Error::from_raw_os_error(errno)).to_string()
        };
        assert!(said(libc::EFBIG).ends_with("(ulimit -f) or the filesystem allows"));
        assert!(said(libc::EMFILE).ends_with("raise the limit on open files (ulimit -n)"));
        assert!(said(libc::EXDEV).contains("cannot cross file systems"));
        assert!(said(libc::ENOSPC).ends_with("free space on that filesystem and try again"));
        assert!(said(libc::EIO).ends_with("Input/output error (os error 5)"));
    }
}
