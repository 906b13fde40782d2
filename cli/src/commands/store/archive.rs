//! `fruix store export` and `fruix store import`: archives of objects (see
//! [`fruix_promote::archive`]), and the trusted keys imports check them with.
//!
//! Ctrl-C, SIGTERM or SIGHUP cancels either (exit 130): an export to `--output`
//! removes its temporary (the archive is written beside its final name and
//! renamed there once complete), a second signal's fast exit too; an import
//! stops reading, which removes its temporaries and a store it made.

use std::io::{BufReader, IsTerminal, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};

use fruix_core::at_exit::{AtExit, Fate};
use fruix_core::escape;
use fruix_core::manifest::Progress;
use fruix_promote::archive::{
    export, export_order, export_to_file, import, ArchiveLimits, ImportOptions, Trust,
};
use fruix_promote::sign::PublicKey;
use fruix_promote::Store;

use super::{object_names, open_as, print_moved};
use crate::args::{ExportArgs, ImportArgs, QuietArg, TrustArgs};
use crate::defaults;
use crate::display::{with_progress, Mode};
use crate::exit::{self, from_promote, from_promote_saying, CliError, CliResult, Status};
use crate::signals::ExitAtSignal;

/// What a cancelled export to `--output` left.
const NO_ARCHIVE: &str = "no archive was written";

/// The keys `args` trust: every `--trusted-key`, and the keys file's lines.
/// The default file may be absent; a file named otherwise must be readable.
/// A file that others than its owner may write, or that neither this user
/// nor root owns, is refused (exit 2), as OpenSSH's `StrictModes` refuses
/// an `authorized_keys`: whoever may write it decides what this store
/// trusts.
pub fn trust(args: &TrustArgs) -> CliResult<Trust> {
    let mut keys = Vec::new();
    for key in &args.trusted_keys {
        keys.push(
            PublicKey::parse(key).map_err(|m| {
                CliError::usage(format!("--trusted-key {}: {m}", escape::quoted(key)))
            })?,
        );
    }
    let file = &args.trusted_keys_file;
    let cannot = |verb: &str, why: String| {
        CliError::usage(format!(
            "cannot {verb} the trusted keys file {}: {why}",
            escape::path(file)
        ))
    };
    // Read as every file fruix is named is: a regular file (through the
    // symlinks of its path), bounded, never waiting on a FIFO. Its owner
    // and mode are those of the descriptor read (fstat), not of a second
    // lookup of its path.
    // Its directories are those of its path with every symlink resolved:
    // a directory another user may write could swap the file under the
    // check (OpenSSH's StrictModes looks at them too). The resolved path is
    // the one read, so a symlink on the way swapped after the check
    // changes nothing.
    let real = std::fs::canonicalize(file).ok();
    if let Some(why) = real.as_deref().and_then(unsafe_directory) {
        return Err(cannot("use", why));
    }
    let read = real.as_deref().unwrap_or(file);
    match fruix_core::fsutil::read_optional_file_of_kind(read, "trusted keys file") {
        Ok(Some(read)) => {
            if let Some(why) = unsafe_owner_or_mode(file, &read.metadata) {
                return Err(cannot("use", why));
            }
            for (n, line) in read.text.lines().enumerate() {
                let at = || format!("{}:{}", escape::path(file), n + 1);
                let Some(key) = trusted_key_text(line)
                    .map_err(|m| CliError::usage(format!("{}: {m}", at())))?
                else {
                    continue;
                };
                keys.push(
                    PublicKey::parse(key).map_err(|m| CliError::usage(format!("{}: {m}", at())))?,
                );
            }
        }
        Ok(None) if file == Path::new(defaults::TRUSTED_KEYS_FILE) => {}
        Ok(None) => return Err(cannot("read", "it does not exist".into())),
        Err(e) => return Err(cannot("read", unreadable(e))),
    }
    Ok(Trust {
        keys,
        check_signatures: !args.no_check_sigs,
    })
}

/// Why a read of a trusted keys file failed, read after "cannot read the
/// trusted keys file PATH: " (which names the file already).
fn unreadable(e: fruix_core::Error) -> String {
    match e {
        fruix_core::Error::MetadataFile { problem, .. } => format!("it {problem}"),
        fruix_core::Error::Io { action, source, .. } => format!("failed to {action} it: {source}"),
        e => e.to_string(),
    }
}

/// Why the trusted keys file `file`, whose descriptor's metadata is `meta`,
/// must not be trusted, if it must not: another user than its owner may
/// write it (its group or others), or its owner is neither this user nor
/// root. Either could make this store trust any key.
fn unsafe_owner_or_mode(file: &Path, meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "its group and by others",
        (true, false) => "its group",
        (false, true) => "others",
        (false, false) => "",
    };
    let me = rustix::process::geteuid().as_raw();
    let owner = meta.uid();
    if !writers.is_empty() {
        Some(format!(
            "it may be written by {writers} (mode {mode:04o}), who could make this store trust any key; make it writable by its owner alone: chmod go-w {}",
            escape::path(file)
        ))
    } else if owner != me && owner != 0 {
        Some(format!(
            "it is owned by user {owner}, neither this user ({me}) nor root, who could make this store trust any key; use a file that this user or root owns (copy it, or chown it)"
        ))
    } else {
        None
    }
}

/// Why the directories holding `real` (a path without symlinks) make a
/// trusted keys file there unsafe, if they do: one that neither this user
/// nor root owns, or that its group or others may write without the
/// sticky bit (`/tmp`'s `1777` is safe: others cannot replace what they do
/// not own there). Whoever controls such a directory could put another
/// file in the keys file's place.
fn unsafe_directory(real: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    real.ancestors().skip(1).find_map(|dir| {
        let meta = std::fs::symlink_metadata(dir).ok()?;
        let mode = meta.mode() & 0o7777;
        let owner = meta.uid();
        if owner != me && owner != 0 {
            Some(format!(
                "its directory {} is owned by user {owner}, neither this user ({me}) nor root, who could put another file in its place; keep it in a directory this user or root owns",
                escape::path(dir)
            ))
        } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            Some(format!(
                "its directory {} may be written by others than its owner (mode {mode:04o}), who could put another file in its place; chmod go-w {}",
                escape::path(dir),
                escape::path(dir)
            ))
        } else {
            None
        }
    })
}

/// The key a trusted-keys file's `line` holds, or `None` when it holds
/// none (empty, or a comment). A comment starts with `#` at the line's
/// start or after white space: a key has no white space, but its name may
/// hold `#`. Anything else after the key is refused.
fn trusted_key_text(line: &str) -> Result<Option<&str>, String> {
    let mut words = line.split_whitespace();
    let key = words.next().filter(|w| !w.starts_with('#'));
    match words.next() {
        Some(after) if key.is_some() && !after.starts_with('#') => Err(format!(
            "{} follows the key: give one key a line, then nothing or a # comment",
            escape::quoted(after)
        )),
        _ => Ok(key),
    }
}

/// How exports and imports show their progress: under `--json` too (on
/// stderr; stdout holds the JSON alone), as every command's; none when
/// `--quiet`.
fn mode(quiet: QuietArg) -> Mode {
    Mode::unless_quiet(quiet.quiet)
}

pub fn export_command(args: ExportArgs) -> CliResult {
    // `-` is standard output, as `store import -` reads standard input and
    // `matrix export -o -` writes standard output: never a file named `-`.
    let output = match args.output {
        Some(path) if path == Path::new("-") => {
            if args.json {
                return Err(CliError::usage(
                    "--json with --output -: the JSON report would go to standard output, with the archive; give --output a file name",
                ));
            }
            None
        }
        output => output,
    };
    // Ctrl-C, SIGTERM or SIGHUP ends a wait for a lock, and stops an export
    // to `--output` at its next object or file; one to standard output,
    // whose write may block on a reader that stopped, exits at once.
    let progress = Progress::default();
    let to_stdout = ExitAtSignal::default();
    {
        let to_stdout = to_stdout.clone();
        crate::signals::cancel_work(&progress, move || to_stdout.exit_if_running())?;
    }
    let nothing = match output {
        Some(_) => NO_ARCHIVE,
        None => "nothing was exported",
    };
    let mode = mode(args.quiet);
    let store = open_as(mode, &args.objects.store, None, false, nothing)?;
    let names = object_names(&store, &args.objects.paths)?;
    let order = export_order(&store, &names, args.recursive).map_err(from_promote)?;
    let report = match &output {
        Some(path) => {
            // Cancelled before the archive is complete, its temporary goes,
            // and nothing is left at the final name.
            let partial = PartialFile::create(path)?;
            let file = match partial.file.try_clone() {
                Ok(file) => file,
                Err(e) => {
                    partial.remove();
                    return Err(exit::output_file("write", path, e, ""));
                }
            };
            let written = with_progress(mode, ("export", "files"), &progress, None, || {
                // A failed write (a full disk) names the file.
                export_to_file(&store, &order, &file, path, Some(&progress))
            });
            match written {
                Ok(report) => {
                    partial.finish()?;
                    report
                }
                Err(e) => {
                    partial.remove();
                    return Err(exit::when_cancelled(from_promote(e), NO_ARCHIVE));
                }
            }
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(CliError::usage(
                    "standard output is a terminal: redirect it to a file, or give --output FILE",
                ));
            }
            // Nothing to clean up: what was written is the reader's.
            let out = std::io::stdout().lock();
            to_stdout
                .run("cancelled; the archive written is incomplete", || {
                    with_progress(mode, ("export", "files"), &progress, None, || {
                        export(&store, &order, out, Some(&progress))
                    })
                })
                .map_err(from_promote)?
        }
    };
    // With the archive on stdout, nothing else goes there.
    if output.is_some() {
        let summary = format!(
            "exported {} object(s), {} bytes",
            report.objects.len(),
            report.bytes
        );
        print_moved(args.json, &report, &report.objects, summary)?;
    }
    Ok(Status::Success)
}

/// What a cancelled import left.
const NOT_IMPORTED: &str = "nothing was imported, the store was not changed";

pub fn import_command(args: ImportArgs) -> CliResult {
    let trust = trust(&args.local.trust)?;
    let mode = mode(args.quiet);
    defaults::announce(mode, Some(&args.local.store.store), None);
    let input: Box<dyn Read + Send> = match args.archive.as_deref().filter(|p| *p != Path::new("-"))
    {
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| CliError::usage(format!("cannot open {}: {e}", escape::path(path))))?;
            // A directory opens, and only its first read fails.
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(CliError::usage(format!(
                    "{} is a directory; give an archive file (or - for standard input)",
                    escape::path(path)
                )));
            }
            Box::new(file)
        }
        None => {
            // A directory given as standard input (`< DIR`) opens too.
            let stdin = std::io::stdin();
            let is_dir = rustix::fs::fstat(stdin.as_fd()).is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
            });
            if is_dir {
                return Err(CliError::usage(
                    "standard input is a directory; give an archive file (fruix store import ARCHIVE, or < ARCHIVE)",
                ));
            }
            Box::new(stdin)
        }
    };
    // Cancelling stops the reading: the import then fails, cancelled, as
    // any failed import does, removing everything it wrote.
    let progress = Progress::default();
    let input = Feed::start(input, &progress)?;
    // A store made for the import goes again when the import is refused:
    // "the store was not changed" holds for a mistyped --store too.
    let store = Store::open_tentatively(&args.local.store.store)
        .map_err(from_promote_saying(NOT_IMPORTED))?;
    let report = with_progress(mode, ("import", "files"), &progress, None, || {
        let options = ImportOptions {
            trust: &trust,
            limits: ArchiveLimits::default(),
            progress: Some(&progress),
            whole_input: true,
        };
        import(&store, BufReader::with_capacity(1 << 20, input), &options)
    });
    let report = report.map_err(from_promote_saying(NOT_IMPORTED))?;
    store.keep();
    let summary = format!(
        "imported {} object(s), {} already present",
        report.imported.len(),
        report.present.len()
    );
    print_moved(args.json, &report, &report.imported, summary)?;
    Ok(Status::Success)
}

/// What the reading thread of a [`Feed`] passes on.
enum Chunk {
    Data(Vec<u8>),
    End,
    Failed(std::io::Error),
    Cancelled,
}

/// An input read on a thread of its own, so that a cancellation ends a
/// read even while the input has nothing to give (a pipe held open).
struct Feed<'a> {
    chunks: Receiver<Chunk>,
    data: Vec<u8>,
    at: usize,
    ended: bool,
    /// Cancelled by Ctrl-C, SIGTERM or SIGHUP; reading fails from then on.
    cancelled: &'a Progress,
}

impl Feed<'_> {
    /// Starts reading `input`, and the cancellation of the reading (and of
    /// the work `progress` counts).
    fn start(mut input: Box<dyn Read + Send>, progress: &Progress) -> CliResult<Feed<'_>> {
        let (send, chunks): (SyncSender<Chunk>, _) = std::sync::mpsc::sync_channel(4);
        let wake = send.clone();
        crate::signals::cancel_work(progress, move || {
            // A reader waiting for a chunk wakes; one with chunks to take
            // sees the cancellation at its next read.
            let _ = wake.try_send(Chunk::Cancelled);
        })?;
        std::thread::Builder::new()
            .name("input".into())
            .spawn(move || loop {
                let mut buffer = vec![0; 1 << 20];
                let chunk = match input.read(&mut buffer) {
                    Ok(0) => Chunk::End,
                    Ok(n) => {
                        buffer.truncate(n);
                        Chunk::Data(buffer)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Chunk::Failed(e),
                };
                let last = !matches!(chunk, Chunk::Data(_));
                // The receiver is gone when the import ended first.
                if send.send(chunk).is_err() || last {
                    return;
                }
            })
            .map_err(|e| CliError::new(Status::SystemFailure, e))?;
        Ok(Feed {
            chunks,
            data: Vec::new(),
            at: 0,
            ended: false,
            cancelled: progress,
        })
    }
}

impl Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let cancelled = || std::io::Error::other("cancelled");
        loop {
            if self.cancelled.is_cancelled() {
                return Err(cancelled());
            }
            if self.at < self.data.len() {
                let n = buf.len().min(self.data.len() - self.at);
                buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Chunk::Data(data)) => (self.data, self.at) = (data, 0),
                Ok(Chunk::End) => self.ended = true,
                Ok(Chunk::Failed(e)) => return Err(e),
                Ok(Chunk::Cancelled) | Err(_) => return Err(cancelled()),
            }
        }
    }
}

/// An output file being written: a temporary beside its final name,
/// which it takes only once complete ([`PartialFile::finish`]), never
/// replacing a file there.
struct PartialFile {
    file: std::fs::File,
    temporary: PathBuf,
    target: PathBuf,
    /// Registers the temporary, so that a fast exit (a second signal,
    /// with no time for [`PartialFile::remove`]) removes it too.
    _fast_exit: AtExit,
}

const NEVER_OVERWRITTEN: &str = "; archives are never overwritten";

impl PartialFile {
    fn create(target: &Path) -> CliResult<PartialFile> {
        if target.symlink_metadata().is_ok() {
            return Err(exit::output_file(
                "create",
                target,
                std::io::ErrorKind::AlreadyExists.into(),
                NEVER_OVERWRITTEN,
            ));
        }
        let name = target.file_name().ok_or_else(|| {
            CliError::usage(format!(
                "{}: names no file to write; give a file's path",
                escape::path(target)
            ))
        })?;
        let mut temporary_name = std::ffi::OsString::from(".");
        temporary_name.push(name);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        temporary_name.push(format!(".tmp-{}-{nanos:08x}", std::process::id()));
        let temporary = target.with_file_name(temporary_name);
        // Exclusive: never through a link or over a file someone put there.
        let (file, fast_exit) =
            AtExit::create("the unfinished archive", &temporary, Fate::Removed, || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&temporary)
            })
            .map_err(|e| exit::output_file("create", target, e, NEVER_OVERWRITTEN))?;
        Ok(PartialFile {
            file,
            temporary,
            target: target.to_path_buf(),
            _fast_exit: fast_exit,
        })
    }

    /// Flushes the file to disk and gives it its final name: a link, which
    /// fails when a file took the name meanwhile (a file system without
    /// links gets a rename, once the name is seen free).
    fn finish(self) -> CliResult<()> {
        let done = self.file.sync_all().and_then(|()| {
            match std::fs::hard_link(&self.temporary, &self.target) {
                Err(e)
                    if e.kind() != std::io::ErrorKind::AlreadyExists
                        && self.target.symlink_metadata().is_err() =>
                {
                    std::fs::rename(&self.temporary, &self.target)
                }
                linked => linked,
            }
        });
        let _ = std::fs::remove_file(&self.temporary);
        done.map_err(|e| exit::output_file("create", &self.target, e, NEVER_OVERWRITTEN))
    }

    fn remove(self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}
