//! `fruix completions SHELL` and `fruix man`: shell completion scripts and
//! man pages, generated from the same clap definitions as `--help`, so they
//! can never disagree with it.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use clap::CommandFactory;
use fruix_core::error::IoContext;
use fruix_core::escape;
use fruix_core::fsutil::write_atomic_at;
use fruix_core::manifest::stat;
use rustix::fs::{mkdirat, openat, statat, unlinkat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

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
            write_pages(&pages, dir)?;
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

/// Writes `pages` into `dir`, made when missing ([`open_making`]).
///
/// On failure (a full disk, say) what this run wrote is removed again: the
/// pages it made, and the directories its own mkdir made; a page it wrote
/// over one already there cannot be taken back, and is kept. The error
/// comes with what was undone ([`Written::undo`]), a system failure. Before
/// writing, the temporaries a killed `fruix man --dir` left for these pages
/// are removed ([`remove_leftovers`]).
///
/// Each page is written beneath `dir`'s descriptor as [`write_atomic_at`]
/// writes: into a new temporary (`O_CREAT | O_EXCL | O_NOFOLLOW`), renamed
/// over the page's name, the temporary removed if that fails. An entry
/// already there under the page's name, a symlink included (dangling or
/// not), is replaced as install(1) replaces it, never written through: a
/// link planted in a directory others may write (`/tmp/man1`) cannot make
/// fruix overwrite the file it points to.
fn write_pages(pages: &[Page], dir: &Path) -> Result<(), CliError> {
    let mut written = Written::default();
    match write_into(pages, dir, &mut written) {
        Ok(()) => Ok(()),
        Err(e) => Err(CliError::new(
            Status::SystemFailure,
            anyhow::anyhow!(
                "cannot write man pages into {}: {e}; {}",
                escape::path(dir),
                written.undo()
            ),
        )),
    }
}

/// [`write_pages`]' work, recording in `written` what it made.
fn write_into(pages: &[Page], dir: &Path, written: &mut Written) -> fruix_core::Result<()> {
    let open = written
        .dir
        .insert(open_making(dir, &mut written.made_dirs)?);
    remove_leftovers(open.as_fd(), pages);
    for (name, page) in pages {
        let existed = statat(open.as_fd(), name.as_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok();
        let mut file_id = None;
        write_atomic_at(open.as_fd(), dir, OsStr::new(name), |file| {
            file_id = Some(FileId::of(file.as_fd()).map_err(std::io::Error::from)?);
            file.write_all(page)
        })?;
        match (existed, file_id) {
            (false, Some(id)) => written.made_pages.push((name.clone(), id)),
            _ => written.replaced += 1,
        }
    }
    Ok(())
}

/// What [`write_pages`] wrote so far.
#[derive(Default)]
struct Written {
    /// The directories this run made, in the order it made them.
    made_dirs: Vec<MadeDir>,
    /// The man page directory, once open.
    dir: Option<OwnedFd>,
    /// The pages made where there was none, with the file each was when
    /// written.
    made_pages: Vec<(String, FileId)>,
    /// How many pages were written over one already there.
    replaced: usize,
}

/// Which file an entry names: its device and inode number.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    fn of(fd: BorrowedFd<'_>) -> rustix::io::Result<FileId> {
        rustix::fs::fstat(fd).map(|st| FileId(stat::dev(&st), stat::ino(&st)))
    }

    fn at(dir: BorrowedFd<'_>, name: &str) -> Option<FileId> {
        let st = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        Some(FileId(stat::dev(&st), stat::ino(&st)))
    }
}

/// A directory this run's mkdir made: the directory it was made in, open,
/// its name there, and the path naming it in messages.
struct MadeDir {
    parent: OwnedFd,
    name: OsString,
    path: PathBuf,
}

impl Written {
    /// Removes what was made, beneath the descriptors it was made in, and
    /// says what it did: the pages, then the directories deepest first,
    /// each with rmdir (one no longer empty stays, and is said). A page is
    /// removed only while its name still names the file this run wrote: one
    /// another run (or the user) put there since stays.
    fn undo(&self) -> String {
        let (mut left, mut since) = (Vec::new(), Vec::new());
        let removed = self
            .made_pages
            .iter()
            .filter(|(name, id)| {
                let Some(dir) = self.dir.as_ref() else {
                    return false;
                };
                let shown = escape::text(name).to_string();
                if FileId::at(dir.as_fd(), name) != Some(*id) {
                    since.push(shown);
                    return false;
                }
                let gone = unlinkat(dir, name.as_str(), AtFlags::empty()).is_ok();
                if !gone {
                    left.push(shown);
                }
                gone
            })
            .count();
        let mut said = vec![format!("removed the {removed} page(s) this run had made")];
        if !left.is_empty() {
            said.push(format!("could not remove {}", left.join(", ")));
        }
        if !since.is_empty() {
            said.push(format!(
                "kept {}, replaced since by another",
                since.join(", ")
            ));
        }
        if self.replaced > 0 {
            said.push(format!(
                "the {} page(s) it wrote over ones already there keep the new text",
                self.replaced
            ));
        }
        for made in self.made_dirs.iter().rev() {
            let path = escape::path(&made.path);
            match unlinkat(&made.parent, made.name.as_os_str(), AtFlags::REMOVEDIR) {
                Ok(()) => said.push(format!("removed {path}, which it made")),
                Err(Errno::NOENT) => {}
                Err(e) => said.push(format!(
                    "could not remove {path}, which it made: {}",
                    std::io::Error::from(e)
                )),
            }
        }
        said.join("; ")
    }
}

/// Opens directory `dir`, making it and its missing parents as `mkdir -p`
/// does, but one component at a time beneath the directory before it, and
/// records in `made` each one whose mkdir succeeded. A component there
/// already (`EEXIST`), and `.` and `..` however the path spells them
/// (`x/../keep`), were not made by this run and are never taken back. A
/// symlink on the way to a directory that was there is followed (the user
/// chose the path); one where this run just made a directory is refused.
fn open_making(dir: &Path, made: &mut Vec<MadeDir>) -> fruix_core::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let start = if dir.has_root() { "/" } else { "." };
    let mut current = rustix::fs::open(start, flags, Mode::empty())
        .map_err(std::io::Error::from)
        .with_path("open", start)?;
    let mut path = PathBuf::new();
    for component in dir.components() {
        path.push(component);
        let (name, fresh) = match component {
            Component::Normal(name) => match mkdirat(&current, name, Mode::from_raw_mode(0o777)) {
                Ok(()) => (name, true),
                Err(Errno::EXIST) => (name, false),
                Err(e) => return Err(std::io::Error::from(e)).with_path("create", &path),
            },
            Component::ParentDir => (OsStr::new(".."), false),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
        };
        let next_flags = if fresh {
            flags | OFlags::NOFOLLOW
        } else {
            flags
        };
        let next = openat(&current, name, next_flags, Mode::empty())
            .map_err(std::io::Error::from)
            .with_path("open", &path)?;
        let parent = std::mem::replace(&mut current, next);
        if fresh {
            made.push(MadeDir {
                parent,
                name: name.to_os_string(),
                path: path.clone(),
            });
        }
    }
    Ok(current)
}

/// Removes from `dir` the temporaries [`write_atomic_at`] made for
/// `pages` that a `fruix man --dir` killed before it renamed them left:
/// regular files named exactly `.PAGE.tmp-PID-HEX` for one of `pages`,
/// whose process `PID` is gone. Nothing else is touched, and a failure
/// to remove one is left to the next run.
fn remove_leftovers(dir: BorrowedFd<'_>, pages: &[Page]) {
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_bytes();
        let Some(pid) = pages.iter().find_map(|(page, _)| leftover_pid(name, page)) else {
            continue;
        };
        let gone = rustix::process::Pid::from_raw(pid)
            .is_some_and(|p| rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH));
        let regular = statat(dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile);
        if gone && regular {
            let _ = unlinkat(dir, entry.file_name(), AtFlags::empty());
        }
    }
}

/// The process id in `name` when it is a temporary of page `page` as
/// [`write_atomic_at`] names them: `.PAGE.tmp-PID-HEX` (PID decimal, HEX
/// at least 9 lowercase hex digits).
fn leftover_pid(name: &[u8], page: &str) -> Option<i32> {
    let rest = name.strip_prefix(b".")?.strip_prefix(page.as_bytes())?;
    let rest = std::str::from_utf8(rest.strip_prefix(b".tmp-")?).ok()?;
    let (pid, hex) = rest.split_once('-')?;
    let hex_ok = hex.len() >= 9 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let pid_ok = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    (hex_ok && pid_ok).then(|| pid.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the undo removed a page it had made by name, so a page
    /// another `fruix man --dir` (or the user) put there since went too.
    #[test]
    fn an_undo_removes_only_the_pages_still_as_this_run_wrote_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("man1");
        let pages: Vec<Page> = ["a.1", "b.1"]
            .map(|n| (n.to_string(), b"page\n".to_vec()))
            .to_vec();
        let mut written = Written::default();
        write_into(&pages, &dir, &mut written).unwrap();
        std::fs::write(tmp.path().join("other"), "another run's page\n").unwrap();
        std::fs::rename(tmp.path().join("other"), dir.join("a.1")).unwrap();
        let said = written.undo();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.1")).unwrap(),
            "another run's page\n"
        );
        assert!(!dir.join("b.1").exists(), "{said}");
        assert!(said.contains("kept a.1, replaced since"), "{said}");
        assert!(said.contains("removed the 1 page(s)"), "{said}");
        // The directory it made holds another's page now: it stays.
        assert!(dir.is_dir(), "{said}");
    }

    #[test]
    fn only_a_temporary_of_the_page_is_a_leftover() {
        let page = "fruix-store.1";
        assert_eq!(
            leftover_pid(b".fruix-store.1.tmp-5052-15aee50d12", page),
            Some(5052)
        );
        for name in [
            "fruix-store.1",
            ".fruix-store.1.tmp-5052-15aee50d",
            ".fruix-store.1.tmp-5052-15AEE50D12",
            ".fruix-store.1.tmp--15aee50d12",
            ".fruix-store.1.tmp-50x2-15aee50d12",
            ".fruix-store.10.tmp-5052-15aee50d12",
            ".fruix-store.1.tmp-5052-15aee50d12.keep",
        ] {
            assert_eq!(leftover_pid(name.as_bytes(), page), None, "{name}");
        }
    }
}
