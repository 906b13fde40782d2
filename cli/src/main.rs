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

use std::process::ExitCode;

use clap::Parser;
use fruix_core::executor::Registry;

use args::{Cli, Command, NativeBuildCommand};
use exit::{CliError, Status};

fn main() -> ExitCode {
    fruix_executors::link();
    let cli = Cli::parse();
    match run(cli) {
        Ok(status) => status.into(),
        Err(CliError { status, error }) => {
            if is_broken_pipe(&error) {
                return Status::Success.into();
            }
            eprintln!("fruix: error: {error}");
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

fn registry() -> Result<Registry, CliError> {
    Registry::compiled().map_err(|e| CliError::new(Status::Usage, e))
}

fn run(cli: Cli) -> Result<Status, CliError> {
    match cli.command {
        Command::Build(args) => {
            let registry = registry()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::new(Status::SystemFailure, e))?;
            runtime.block_on(commands::build::run(*args, &registry))
        }
        Command::NativeBuild(NativeBuildCommand::Promote(args)) => commands::promote::run(args),
        Command::Store(command) => commands::store::run(command),
        Command::Executors(command) => commands::executors::run(command, &registry()?),
    }
}
