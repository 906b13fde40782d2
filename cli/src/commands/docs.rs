//! `fruix completions SHELL` and `fruix man`: shell completion scripts and
//! man pages, generated from the same clap definitions as `--help`, so they
//! can never disagree with it.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use clap::CommandFactory;
use fruix_core::dir::{OpenDir, TreeKind};
use fruix_core::error::IoContext;
use fruix_core::escape;
use fruix_core::fsutil::write_atomic_at;

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
    let system = |e: std::io::Error| CliError::new(Status::SystemFailure, e);
    match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(system)?;
            crate::write_stdout(&page);
        }
        Some(dir) => {
            let pages = render_pages(command).map_err(system)?;
            write_pages(&pages, dir).map_err(|e| {
                CliError::new(
                    Status::SystemFailure,
                    anyhow::anyhow!("cannot write man pages into {}: {e}", escape::path(dir)),
                )
            })?;
        }
    }
    Ok(Status::Success)
}

/// A man page: its file name (`fruix-store-verify.1`) and its text.
type Page = (String, Vec<u8>);

/// The page of `command` and of each of its subcommands, recursively
/// (`fruix.1`, `fruix-store.1`, `fruix-store-verify.1`, ...). As
/// `clap_mangen::generate_to` renders them, but each page's source (the
/// `.TH` line's fourth field) names its command as its title does
/// (`fruix-store-verify 0.1.0`), not by its last word (`verify`).
fn render_pages(mut command: clap::Command) -> std::io::Result<Vec<Page>> {
    fn render(command: clap::Command, pages: &mut Vec<Page>) -> std::io::Result<()> {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            render(sub.clone(), pages)?;
        }
        let name = command
            .get_display_name()
            .unwrap_or_else(|| command.get_name())
            .to_string();
        let source = format!("{name} {}", command.get_version().unwrap_or_default());
        let man = clap_mangen::Man::new(command).source(source);
        let mut page = Vec::new();
        man.render(&mut page)?;
        pages.push((man.get_filename(), page));
        Ok(())
    }
    command.build();
    let mut pages = Vec::new();
    render(command, &mut pages)?;
    Ok(pages)
}

/// Writes `pages` into `dir`, made when missing.
///
/// `dir` is opened once (a symlink naming it is followed: the user chose
/// it), and each page is written beneath that descriptor as
/// [`write_atomic_at`] writes: into a new temporary (`O_CREAT | O_EXCL |
/// O_NOFOLLOW`), renamed over the page's name, the temporary removed if
/// that fails. An entry already there under the page's name, a symlink
/// included (dangling or not), is replaced as install(1) replaces it, never
/// written through: a link planted in a directory others may write
/// (`/tmp/man1`) cannot make fruix overwrite the file it points to.
fn write_pages(pages: &[Page], dir: &Path) -> fruix_core::Result<()> {
    std::fs::create_dir_all(dir).with_path("create", dir)?;
    let open = OpenDir::open(dir, TreeKind::named("a man page directory"))?;
    for (name, page) in pages {
        write_atomic_at(open.as_fd(), dir, OsStr::new(name), |file| {
            file.write_all(page)
        })?;
    }
    Ok(())
}
