//! The `fruix` command: native FreeBSD base builds through pluggable
//! executors, promoted into an immutable, content-identified store.
//!
//! This is the edge of the program: arguments are parsed here, library errors
//! are mapped to the documented exit statuses (see `exit`), and `anyhow` is
//! used only here. A closed stdout (`fruix store list | head`) is success.

mod args;
mod commands;
mod display;
mod exit;
mod live;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fruix_core::escape;
use fruix_core::executor::Registry;
use fruix_executors::external::file::register_files;

use args::{Cli, Command, MatrixCommand, NativeBuildCommand};
use exit::{CliError, Status};

fn main() -> ExitCode {
    fruix_executors::link();
    #[cfg(feature = "jail")]
    fruix_executor_jail::link();
    let cli = Cli::parse();
    match run(cli) {
        Ok(status) => status.into(),
        Err(CliError { status, error }) => {
            if is_broken_pipe(&error) {
                return Status::Success.into();
            }
            // Error messages escape the untrusted values they embed; this
            // keeps any control character that slipped through off the
            // terminal, leaving the messages' own line breaks.
            eprintln!("fruix: error: {}", escape::terminal(&error.to_string()));
            status.into()
        }
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
    let uses_executors = matches!(
        cli.command,
        Command::Build(_) | Command::Executors(_) | Command::Matrix(_)
    );
    if !uses_executors && !cli.executors_files.is_empty() {
        return Err(CliError::usage(
            "--executors-file is for the commands that use executors: build, executors and matrix",
        ));
    }
    match cli.command {
        Command::Build(args) => {
            let registry = registry(&cli.executors_files)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::new(Status::SystemFailure, e))?;
            runtime.block_on(commands::build::run(*args, &registry))
        }
        Command::NativeBuild(NativeBuildCommand::Promote(args)) => commands::promote::run(args),
        Command::NativeBuild(NativeBuildCommand::SelfHosted(args)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::new(Status::SystemFailure, e))?;
            runtime.block_on(commands::self_hosted::run(args))
        }
        Command::Store(command) => commands::store::run(command),
        Command::Executors(command) => {
            commands::executors::run(command, &registry(&cli.executors_files)?)
        }
        Command::Matrix(MatrixCommand::Plan(args)) => {
            commands::matrix::plan(args, &registry(&cli.executors_files)?)
        }
        Command::Matrix(MatrixCommand::Run(args)) => {
            let registry = registry(&cli.executors_files)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::new(Status::SystemFailure, e))?;
            runtime.block_on(commands::matrix::run(*args, registry))
        }
    }
}
