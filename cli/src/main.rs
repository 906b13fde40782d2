//! The `fruix` command: native FreeBSD base builds through pluggable
//! executors, promoted into an immutable, content-identified store.
//!
//! This is the edge of the program: arguments are parsed here, library errors
//! are mapped to the documented exit statuses (see `exit`), and `anyhow` is
//! used only here. A closed stdout (`fruix store list | head`) is success;
//! any other failure to write stdout (a full disk) is a system failure.

// The argument structs' doc comments are `--help` text, written for people
// at a terminal (`USER@HOST[:PORT]`, `STORE/<hash>-...`), not rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

// Printing never panics, as std's macros do when a write fails: when the
// reader of stdout or stderr went away (`fruix store list | head`; a CI
// runner that stopped a job and closed its pipes), what was left to say is
// dropped and fruix carries on, so that a cancelled run still writes its
// reports, cleans up and exits with its own status. Any other failure to
// write stdout (a full disk) is remembered, and the command then ends as a
// system failure (see `stdout_checked`). These shadow std's macros in every
// module below.
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::stdout_written(write!(std::io::stdout(), $($arg)*));
    }};
}
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::stdout_written(writeln!(std::io::stdout(), $($arg)*));
    }};
}
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod commands;
mod defaults;
mod display;
mod exit;
mod heartbeat;
mod live;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

use fruix_core::escape;
use fruix_core::executor::Registry;
use fruix_executors::external::file::register_files;

use args::{
    Cli, Command, ExecutorsCommand, MatrixCommand, NativeBuildCommand, ProgressArg, SourceCommand,
    StoreCommand,
};
use exit::{CliError, Status};

fn main() -> ExitCode {
    quiet_caught_panics();
    fruix_core::process::files_too_large_are_errors();
    fruix_executors::link();
    #[cfg(feature = "jail")]
    fruix_executor_jail::link();
    let cli = match args::parse() {
        Ok(cli) => cli,
        Err(e) => return stdout_checked(not_run(e)).into(),
    };
    exit::set_json(wants_json(&cli.command));
    heartbeat::set_every(progress_arg(&cli.command).and_then(ProgressArg::every));
    fruix_promote::store::set_lock_notice(display::lock_wait);
    fruix_promote::warning::set_warning_hook(display::store_warning);
    let status = match run(cli) {
        Ok(status) => status,
        Err(CliError {
            status,
            error,
            reported,
            details,
        }) => {
            if is_broken_pipe(&error) {
                return Status::Success.into();
            }
            // Error messages escape the untrusted values they embed; this
            // keeps any control character that slipped through off the
            // terminal, leaving the messages' own line breaks.
            let message = escape::terminal(&error.to_string());
            match reported {
                false => exit::print_failure_with(status, &message, details),
                true => eprintln!("fruix: error: {message}"),
            }
            status
        }
    };
    stdout_checked(status).into()
}

/// Rust's panic hook, but silent for an executor's panic, which fruix
/// catches and reports itself as its own error, saying where it panicked
/// (see `fruix_core::executor::panic_is_caught`): the user sees that error
/// alone. Any other panic is a crash, said as Rust says it (where, and a
/// backtrace under `RUST_BACKTRACE`).
fn quiet_caught_panics() {
    let rust_s = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let starting_runtime = STARTING_RUNTIME.get();
        if !fruix_core::executor::panic_is_caught(info.location()) && !starting_runtime {
            rust_s(info);
        }
    }));
}

/// What clap says instead of a command: help or the version on stdout
/// (success, unless it cannot be written: see `stdout_checked`), or a
/// refused command line on stderr (usage), its values escaped (see
/// `args::refusal`), and under `--json` as a JSON error too.
fn not_run(e: clap::Error) -> Status {
    if !e.use_stderr() {
        stdout_written(e.print());
        return Status::Success;
    }
    let wants_json = args::refused_line_wants_json(&e);
    let refusal = args::refusal(e);
    if refusal.plain {
        eprintln!("{}", refusal.text.trim_end());
    } else {
        let _ = refusal.error.print();
    }
    if wants_json {
        exit::print_json_error(Status::Usage, refusal.message(), serde_json::Map::new());
    }
    Status::Usage
}

/// The first failure to write stdout other than a closed pipe, as its
/// message.
static STDOUT_FAILURE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Remembers the first failure of a write to stdout; a closed pipe (the
/// reader went away) is no failure.
pub(crate) fn stdout_written(result: std::io::Result<()>) {
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILURE.get_or_init(|| e.to_string());
        }
    }
}

/// Writes `bytes` to stdout as the print macros do (see `stdout_written`).
pub(crate) fn write_stdout(bytes: &[u8]) {
    use std::io::Write as _;
    stdout_written(std::io::stdout().write_all(bytes));
}

/// `status`, unless stdout could not be written (after flushing what is
/// left of it): then that is said, once, and a command that otherwise
/// succeeded is a system failure (a failed one keeps its own status).
fn stdout_checked(status: Status) -> Status {
    use std::io::Write as _;
    stdout_written(std::io::stdout().flush());
    match STDOUT_FAILURE.get() {
        None => status,
        Some(e) => {
            eprintln!("fruix: error: cannot write to standard output: {e}");
            match status {
                Status::Success => Status::SystemFailure,
                failed => failed,
            }
        }
    }
}

/// Whether the command prints its results as JSON: its failure then does
/// too.
fn wants_json(command: &Command) -> bool {
    match command {
        Command::Build(args) => args.output.json,
        Command::NativeBuild(NativeBuildCommand::Promote(args)) => args.output.json,
        // The guest helper's stdout is its protocol, JSON already.
        Command::NativeBuild(NativeBuildCommand::SelfHosted(_)) => false,
        Command::Store(command) => match command {
            StoreCommand::Verify(args) => args.json,
            StoreCommand::List(args) => args.json,
            StoreCommand::Info(args) => args.json,
            StoreCommand::Query(args) => args.json,
            StoreCommand::Roots(args) => args.json,
            StoreCommand::AddRoot(args) => args.json,
            StoreCommand::Gc(args) => args.json,
            StoreCommand::Delete(args) => args.json,
            StoreCommand::Sign(args) => args.json,
            StoreCommand::Export(args) => args.json,
            StoreCommand::Import(args) => args.json,
            StoreCommand::Copy(args) => args.json,
            // Its stdout is its protocol, JSON already.
            StoreCommand::Serve(_) => false,
            StoreCommand::GenerateKey(args) => args.json,
        },
        Command::Executors(
            ExecutorsCommand::List { json, .. } | ExecutorsCommand::Describe { json, .. },
        ) => *json,
        Command::Matrix(MatrixCommand::Plan(args)) => args.json,
        Command::Matrix(MatrixCommand::Run(args)) => args.json,
        Command::Matrix(MatrixCommand::RunCell(args)) => args.json,
        Command::Matrix(MatrixCommand::Collect(args)) => args.json,
        Command::Matrix(MatrixCommand::Export(_)) => false,
        Command::Source(SourceCommand::Add(args)) => args.output.json,
        Command::Completions(_) | Command::Man(_) => false,
    }
}

/// The command's `--progress-every`, when it has one: the commands that
/// build or do long store work.
fn progress_arg(command: &Command) -> Option<&ProgressArg> {
    match command {
        Command::Build(args) => Some(&args.progress),
        Command::NativeBuild(NativeBuildCommand::Promote(args)) => Some(&args.progress),
        Command::NativeBuild(NativeBuildCommand::SelfHosted(_)) => None,
        Command::Store(command) => match command {
            StoreCommand::Verify(args) => Some(&args.progress),
            StoreCommand::Gc(args) => Some(&args.progress),
            StoreCommand::Export(args) => Some(&args.progress),
            StoreCommand::Import(args) => Some(&args.progress),
            StoreCommand::Copy(args) => Some(&args.progress),
            StoreCommand::List(_)
            | StoreCommand::Info(_)
            | StoreCommand::Query(_)
            | StoreCommand::Roots(_)
            | StoreCommand::AddRoot(_)
            | StoreCommand::Delete(_)
            | StoreCommand::Sign(_)
            | StoreCommand::Serve(_)
            | StoreCommand::GenerateKey(_) => None,
        },
        Command::Matrix(MatrixCommand::Run(args)) => Some(&args.show.progress),
        Command::Matrix(MatrixCommand::RunCell(args)) => Some(&args.show.progress),
        Command::Matrix(
            MatrixCommand::Plan(_) | MatrixCommand::Collect(_) | MatrixCommand::Export(_),
        ) => None,
        Command::Source(SourceCommand::Add(args)) => Some(&args.progress),
        Command::Executors(_) | Command::Completions(_) | Command::Man(_) => None,
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The compiled-in executors plus the external ones of the default executors
/// files and of `--executors-file`.
fn registry(executors_files: &[PathBuf]) -> Result<Registry, CliError> {
    let mut registry = Registry::compiled().map_err(|e| CliError::new(Status::Usage, e))?;
    register_files(&mut registry, executors_files)
        .map_err(|e| CliError::new(exit::before_run(&e), e))?;
    Ok(registry)
}

fn run(cli: Cli) -> Result<Status, CliError> {
    // `--executors-file` before the command, plus those after it.
    let mut files = cli.executors.files;
    match &cli.command {
        Command::Build(args) => files.extend(args.executors.files.iter().cloned()),
        Command::Executors(
            ExecutorsCommand::List { executors, .. } | ExecutorsCommand::Describe { executors, .. },
        ) => files.extend(executors.files.iter().cloned()),
        Command::Matrix(MatrixCommand::Plan(args)) => {
            files.extend(args.executors.files.iter().cloned())
        }
        Command::Matrix(MatrixCommand::Run(args)) => {
            files.extend(args.with.executors.files.iter().cloned())
        }
        Command::Matrix(MatrixCommand::RunCell(args)) => {
            files.extend(args.with.executors.files.iter().cloned())
        }
        Command::NativeBuild(_)
        | Command::Matrix(MatrixCommand::Collect(_) | MatrixCommand::Export(_))
        | Command::Store(_)
        | Command::Source(_)
        | Command::Completions(_)
        | Command::Man(_)
            if !files.is_empty() =>
        {
            return Err(CliError::usage(
                "--executors-file is for the commands that use executors: build, executors, matrix plan, run and run-cell",
            ))
        }
        Command::NativeBuild(_)
        | Command::Matrix(MatrixCommand::Collect(_) | MatrixCommand::Export(_))
        | Command::Store(_)
        | Command::Source(_)
        | Command::Completions(_)
        | Command::Man(_) => {}
    }
    if !matches!(cli.command, Command::Completions(_) | Command::Man(_)) {
        fruix_core::threads::start_pool().map_err(|e| CliError::new(Status::SystemFailure, e))?;
    }
    match cli.command {
        Command::Build(args) => {
            let registry = registry(&files)?;
            runtime()?.block_on(commands::build::run(*args, &registry))
        }
        Command::NativeBuild(NativeBuildCommand::Promote(args)) => commands::promote::run(args),
        Command::NativeBuild(NativeBuildCommand::SelfHosted(args)) => {
            runtime()?.block_on(commands::self_hosted::run(args))
        }
        Command::Store(command) => commands::store::run(command),
        Command::Executors(command) => commands::executors::run(command, &registry(&files)?),
        Command::Matrix(MatrixCommand::Plan(args)) => {
            commands::matrix::plan(args, &registry(&files)?)
        }
        Command::Matrix(MatrixCommand::Run(args)) => {
            let registry = registry(&files)?;
            runtime()?.block_on(commands::matrix::run(*args, registry))
        }
        Command::Matrix(MatrixCommand::RunCell(args)) => {
            let registry = registry(&files)?;
            runtime()?.block_on(commands::matrix::run_cell(*args, registry))
        }
        Command::Matrix(MatrixCommand::Collect(args)) => commands::matrix::collect(*args),
        Command::Matrix(MatrixCommand::Export(args)) => commands::matrix::export(args),
        Command::Source(command) => commands::source::run(command),
        Command::Completions(args) => commands::docs::completions(args),
        Command::Man(args) => commands::docs::man(args),
    }
}

/// The async runtime of the commands that run builds ([`starting_runtime`]).
/// Its workers (one per CPU) are checked to be able to start first
/// ([`fruix_core::threads::can_start`]): tokio hangs when one cannot.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The workers, and one for the blocking work they hand off.
    fruix_core::threads::can_start(workers + 1, "the async runtime")
        .map_err(|e| CliError::new(Status::SystemFailure, e))?;
    starting_runtime(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    })
}

/// Runs `start`, which starts a tokio runtime or its signal handling:
/// that takes threads and file descriptors (an event loop, a socket pair
/// for signals), and a failure says so, a system failure. tokio panics
/// when it cannot make its signal handling's socket pair (out of file
/// descriptors): that panic is said as such a failure too, not as a crash.
pub(crate) fn starting_runtime<T>(
    start: impl FnOnce() -> std::io::Result<T>,
) -> Result<T, CliError> {
    let failed = |e: &dyn std::fmt::Display| {
        CliError::new(
            Status::SystemFailure,
            anyhow::anyhow!(
                "cannot start the async runtime (its threads, event loop and signal handling): {e}; the limits on open files (ulimit -n) and on processes and threads (ulimit -u) may be too low"
            ),
        )
    };
    STARTING_RUNTIME.set(true);
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(start));
    STARTING_RUNTIME.set(false);
    match started {
        Ok(started) => started.map_err(|e| failed(&e)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("it panicked");
            Err(failed(&fruix_core::escape::line(message)))
        }
    }
}

thread_local! {
    /// [`starting_runtime`] is starting a runtime on this thread: a panic then is
    /// caught and said as its failure (see `quiet_caught_panics`).
    static STARTING_RUNTIME: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
