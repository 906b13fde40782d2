//! `fruix completions SHELL` and `fruix man`: shell completion scripts and
//! man pages, generated from the same clap definitions as `--help`, so they
//! can never disagree with it.

use std::path::Path;

use clap::CommandFactory;
use fruix_core::escape;

use crate::args::{Cli, CompletionsArgs, ManArgs};
use crate::exit::{CliError, CliResult, Status};

/// Generated into memory first: clap_complete panics when its writer
/// fails; stdout is then written as every print is (a closed pipe is
/// success, another failure a system failure).
pub fn completions(args: CompletionsArgs) -> CliResult {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "fruix", &mut script);
    crate::write_stdout(&script);
    Ok(Status::Success)
}

pub fn man(args: ManArgs) -> CliResult {
    // As `clap_mangen::generate_to` does: `help` gets no page of its own.
    let command = Cli::command().disable_help_subcommand(true);
    match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| CliError::new(Status::SystemFailure, e))?;
            crate::write_stdout(&page);
        }
        Some(dir) => {
            write_pages(command, dir).map_err(|e| {
                CliError::new(
                    Status::SystemFailure,
                    anyhow::anyhow!("cannot write man pages into {}: {e}", escape::path(dir)),
                )
            })?;
        }
    }
    Ok(Status::Success)
}

/// Writes the page of `command` and of each of its subcommands, recursively
/// (`fruix.1`, `fruix-store.1`, `fruix-store-verify.1`, ...), into `dir`.
fn write_pages(mut command: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // As `clap_mangen::generate_to` does, but each page's source (the
    // `.TH` line's fourth field) names its command as its title does
    // (`fruix-store-verify 0.1.0`), not by its last word (`verify`).
    command.build();
    write_page(command, dir)
}

fn write_page(command: clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub.clone(), dir)?;
    }
    let name = command
        .get_display_name()
        .unwrap_or_else(|| command.get_name())
        .to_string();
    let source = format!("{name} {}", command.get_version().unwrap_or_default());
    clap_mangen::Man::new(command)
        .source(source)
        .generate_to(dir)
        .map(drop)
}
