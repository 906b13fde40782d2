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
    /// Members added to the JSON error object besides `kind`,
    /// `exit_status` and `message`: what the command did before it
    /// failed (`promoted`, for a promotion that was not signed).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl CliError {
    pub fn new(status: Status, error: impl Into<anyhow::Error>) -> Self {
        CliError {
            status,
            error: error.into(),
            reported: false,
            details: serde_json::Map::new(),
        }
    }

    /// Adds `key` to the JSON error object (see [`CliError::details`]).
    pub fn with_detail(mut self, key: &str, value: serde_json::Value) -> Self {
        self.details.insert(key.to_string(), value);
        self
    }

    /// Marks the error as already reported in the command's JSON result.
    pub fn reported(mut self) -> Self {
        self.reported = true;
        self
    }

    /// The same failure (its status and JSON members kept), its message
    /// followed by `; HINT`.
    pub fn saying(self, hint: impl std::fmt::Display) -> Self {
        CliError {
            error: anyhow::anyhow!("{}; {hint}", self.error),
            ..self
        }
    }

    /// A usage error with `message`.
    pub fn usage(message: impl std::fmt::Display) -> Self {
        CliError::new(Status::Usage, anyhow::anyhow!("{message}"))
    }
}

/// Whether the command's results, a failure included, are JSON (`--json`):
/// set once the command line is parsed, for whatever ends the command
/// (the signal thread too).
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says whether the command prints its results, a failure included, as
/// JSON (see [`print_failure_with`]).
pub fn set_json(json: bool) {
    JSON.store(json, std::sync::atomic::Ordering::SeqCst);
}

/// A failure, as every command says it: `fruix: error: MESSAGE` on stderr
/// (`message` already escaped for the terminal), and under `--json` one
/// JSON object on stdout,
/// `{"error":{"kind":"usage","exit_status":2,"message":"..."}}`, with
/// `details` added to it (what the command did before it failed).
pub fn print_failure_with(
    status: Status,
    message: &str,
    details: serde_json::Map<String, serde_json::Value>,
) {
    eprintln!("fruix: error: {message}");
    if JSON.load(std::sync::atomic::Ordering::SeqCst) {
        print_json_error(status, message, details);
    }
}

/// The JSON error object of [`print_failure_with`], with `details` besides its
/// `kind`, `exit_status` and `message`.
pub fn print_json_error(
    status: Status,
    message: &str,
    details: serde_json::Map<String, serde_json::Value>,
) {
    let mut error = serde_json::Map::new();
    error.insert("kind".into(), status.name().into());
    error.insert("exit_status".into(), status.code().into());
    error.insert("message".into(), message.trim_end().into());
    error.extend(details);
    println!("{}", serde_json::json!({ "error": error }));
}

/// Ends the process at once with `status`, saying `message` as every
/// failure is said ([`print_failure_with`], with `details`): from the
/// signal thread, when what runs cannot be waited for.
pub fn exit_now(
    status: Status,
    message: &str,
    details: serde_json::Map<String, serde_json::Value>,
) -> ! {
    print_failure_with(status, message, details);
    std::process::exit(status.code().into())
}

/// `e`, with `hint` (what the cancelled command left, what to do) after
/// its message when it is a cancellation: its status says so, whatever the
/// message.
pub fn when_cancelled(e: CliError, hint: impl std::fmt::Display) -> CliError {
    match e.status {
        Status::Cancelled => e.saying(hint),
        _ => e,
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

/// Maps a failed run to its status, printing the log tail of a failed step
/// or command (build or system failure alike).
pub fn run_error(e: CoreError) -> CliError {
    if let Some(tail) = e.log().map(|l| &l.tail).filter(|t| !t.is_empty()) {
        eprintln!("--- last {} log lines ---", tail.len());
        for line in tail {
            eprintln!("{}", fruix_core::escape::line(line));
        }
        eprintln!("---");
    }
    // A request or configuration an executor refuses (its private key file
    // and its host keys too) is the caller's input (2); other bad input met
    // during a run is a result root that does not validate (4).
    let status = match (&e, e.failure()) {
        (
            CoreError::InvalidRequest { .. }
            | CoreError::InvalidConfig { .. }
            | CoreError::InvalidIdentity { .. }
            | CoreError::HostKey { .. },
            _,
        ) => Status::Usage,
        (_, fruix_core::Failure::Input) => Status::PromotionFailure,
        _ => before_run(&e),
    };
    CliError::new(status, e)
}

/// A build's source refused
/// ([`fruix_matrix::request::check_source_in_store`]): one that the store
/// holds inconsistently (its directory gone) is said as the `store`
/// commands say it, with their status (4); anything else as the matrix
/// says it.
pub fn source_refused(e: fruix_matrix::Error) -> CliError {
    match e {
        fruix_matrix::Error::Source(e) => from_promote(*e),
        e => from_matrix(e),
    }
}

/// Wraps a promote error with its status.
pub fn from_promote(e: fruix_promote::Error) -> CliError {
    CliError::new(promote(&e), e)
}

/// Maps a promote error as [`from_promote`] does, with `hint` (what is
/// left as it was) after the message of a cancellation
/// ([`when_cancelled`]): for the waits before a command's work begins,
/// such as opening the store while a repair holds it.
pub fn from_promote_saying(hint: &'static str) -> impl Fn(fruix_promote::Error) -> CliError {
    move |e| when_cancelled(from_promote(e), hint)
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
