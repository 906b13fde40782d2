//! Import of a guest's result root: guest output is untrusted input.
//!
//! # Contract
//!
//! [`fetch`] transfers the guest result root as one stream (`tar -cf - .`
//! run in it, over an exec channel) into a fresh staging directory next to
//! the host result root (`.RUN-ID.import-XXXXXX` in its parent, created
//! `0700` so that no other local user can reach into it), extracting it with
//! [`extract()`] while it arrives. Extraction:
//!
//! - refuses absolute paths and `..` components, device nodes, FIFOs and any
//!   other entry type than directory, regular file, symlink and hard link;
//! - never follows a symlink: every entry's parent must be a directory the
//!   extraction itself created, so a symlink used as a directory
//!   (`etc -> /etc`, then `etc/passwd`) is refused, and files are created
//!   with `O_CREAT | O_EXCL | O_NOFOLLOW`; symlinks are created verbatim and
//!   never resolved; a hard link must name a regular file extracted before;
//!   a path that appears twice is refused;
//! - refuses a symlink at the top of the result root (a `logs` or a
//!   `.fruix-signatures` pointing elsewhere: the host reads and writes
//!   those names), and a `logs` that is not a directory;
//! - never creates a setuid, setgid or sticky file or directory: those bits
//!   are *neutralised* (stripped) and recorded in [`Staged::special_modes`];
//! - treats the guest's modes as data: group and world write are stripped,
//!   so nothing gets more than `0755` (directories and executables) or
//!   `0644` (other files) on the host ([`host_mode`]); directories keep
//!   `0700` for their owner. Signatures only see whether a file is
//!   executable (and the recorded special bits), so they do not change;
//! - never writes outside the staging directory, whatever the archive holds;
//! - stays within [`ImportLimits`] (total bytes, entries, path, name, link
//!   and extended header lengths; see [`limits`] for the defaults and
//!   configuration keys): going over one is [`Error::LimitExceeded`] naming
//!   the cap's key and value, and costs no more than the cap allows. No work
//!   grows faster than the archive: see [`extract`](mod@extract).
//!
//! A guest root that still carries the unfinished marker is refused. Any
//! failure removes the staging directory: nothing partial is left. A
//! connection that drops is [`Error::System`] recognised by
//! [`crate::ssh::is_connection_lost`], so callers retry on a new connection;
//! a refused archive is never taken for a dropped connection. Of the remote
//! `tar`'s stderr only the last lines are kept, each cut at the session's
//! line cap, and shown escaped.
//!
//! The remote `tar` is held at a gate (`ssh::gate`) until its
//! lifeline is armed, as every remote command is ([`crate::ssh::remote`]):
//! from the moment it runs, this host going away (killed, its connection
//! dropped) stops its whole session in the guest. A cancelled import
//! (Ctrl-C, a time limit) stops that session with the kill loop; one
//! cancelled before `tar` was let run returns at once, without waiting for
//! its session id: held at its gate, it exits by itself, having run
//! nothing. An import refused while `tar` still sends is stopped the same
//! way.
//!
//! Then [`Staged::verify`] re-hashes every artifact tree (with the recorded
//! special bits, which signatures cover) and compares it with the signature
//! the guest wrote in `promotion.scm`; a mismatch (corruption in transit, or
//! a tree changed in the guest after it was signed) is
//! [`Error::SignatureMismatch`]. [`Staged::place`] finally moves every
//! top-level entry into the result root, which must not already hold it, and
//! records the special bits found inside artifact trees whose signature was
//! checked or computed in the result root's `.fruix-special-modes` (see
//! [`fruix_core::special_modes`]): the bits are never put back on disk, and
//! promotion adds them to the signed modes. Bits found anywhere else (`logs/`,
//! for instance) are dropped.

pub mod extract;
pub mod limits;
mod tree;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fruix_core::error::IoContext;
use fruix_core::executor::{Event, RunContext};
use fruix_core::manifest::{walk, ManifestBuilder, WalkOptions};
use fruix_core::promotion::{PromotionMetadata, PROMOTION_FILE};
use fruix_core::result_root::INCOMPLETE_MARKER;
use fruix_core::special_modes::{self, SpecialModes};
use fruix_core::{escape, Error, Result, TreeSignature};
use russh::ChannelMsg;

pub use self::extract::{extract, host_mode, HOST_MODE_MASK};
pub use self::limits::{Cap, ImportLimits};
use crate::ssh::remote::SessionLine;
use crate::ssh::{lost, shell_quote, SshSession};
use fruix_core::bounded::{LineSplitter, Tail};

/// How many bytes between two progress events.
const PROGRESS_EVERY: u64 = 16 << 20;

/// How many last lines of the remote `tar`'s stderr a failure reports.
const STDERR_TAIL_LINES: usize = 20;

/// A staged import: the extracted guest root, not yet in place.
#[derive(Debug)]
pub struct Staged {
    dir: tempfile::TempDir,
    /// Setuid, setgid and sticky bits stripped at extraction, by path
    /// relative to the staged root.
    pub special_modes: BTreeMap<PathBuf, u32>,
    /// Artifact trees (relative paths) whose bits may be restored.
    signed: Vec<PathBuf>,
}

/// Bridges channel data (async) to the extractor (a blocking thread).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// The remote `tar`'s stderr: first the line saying its remote session
/// ([`crate::ssh::remote::wrap`]), whose verdict opens its gate, then its
/// last [`STDERR_TAIL_LINES`] lines, each cut at the session's line cap.
struct RemoteStderr {
    lines: LineSplitter,
    session_line: SessionLine,
    tail: Tail,
}

impl RemoteStderr {
    fn new(session: &SshSession) -> Self {
        RemoteStderr {
            lines: LineSplitter::new(session.max_line_bytes(), Some(crate::ssh::LINE_CAP_KEY)),
            session_line: SessionLine::default(),
            tail: Tail::new(STDERR_TAIL_LINES),
        }
    }

    fn push(&mut self, data: &[u8]) {
        let (session_line, tail) = (&mut self.session_line, &mut self.tail);
        self.lines.push(data, |l| Self::line(session_line, tail, l));
    }

    fn finish(&mut self) {
        let (session_line, tail) = (&mut self.session_line, &mut self.tail);
        self.lines.finish(|l| Self::line(session_line, tail, l));
    }

    fn line(session_line: &mut SessionLine, tail: &mut Tail, line: &[u8]) {
        let text = fruix_core::escape::utf8_or_octal(line);
        if session_line.take(&text).is_none() {
            tail.push(&text);
        }
    }
}

/// Creates the staging directory of an import into `host_root`: next to it,
/// `0700` whatever the umask.
fn staging_dir(host_root: &Path) -> Result<tempfile::TempDir> {
    let parent = host_root.parent().unwrap_or(Path::new("."));
    let name = host_root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}.import-"))
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .with_path("create staging directory in", parent)
}

/// Transfers and extracts the guest result root `remote_root` into a new
/// staging directory next to `ctx.result_root`, within `limits` (see the
/// module docs).
pub async fn fetch(
    session: &SshSession,
    remote_root: &str,
    ctx: &RunContext,
    limits: &ImportLimits,
) -> Result<Staged> {
    let dir = staging_dir(&ctx.result_root)?;
    let script = format!("cd {} && exec tar -cf - .", shell_quote(remote_root));
    // Held at its gate, a `tar` whose start is cancelled runs nothing.
    let started = session.exec_gated(&script, None::<&[u8]>, &ctx.cancel);
    let Some((mut channel, mut gate)) = started.await? else {
        return Err(Error::Cancelled);
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let staging = dir.path().to_path_buf();
    let limits = *limits;
    let extractor = tokio::task::spawn_blocking(move || {
        extract(
            ChannelReader {
                rx,
                current: bytes::Bytes::new(),
            },
            &staging,
            &limits,
        )
    });
    let mut tx = Some(tx);
    let mut stderr = RemoteStderr::new(session);
    let (mut exit, mut received, mut reported) = (None, 0u64, 0u64);
    // Whether the extractor stopped reading before the stream ended.
    let mut extractor_stopped = false;
    loop {
        let msg = tokio::select! {
            msg = channel.wait() => msg,
            () = gate.run() => continue,
            () = ctx.cancel.cancelled() => {
                drop(tx.take());
                gate.stop(&mut channel).await;
                let _ = extractor.await;
                return Err(Error::Cancelled);
            }
        };
        match msg {
            Some(ChannelMsg::Data { data }) => {
                received += data.len() as u64;
                if received - reported >= PROGRESS_EVERY {
                    reported = received;
                    ctx.events.emit(Event::Progress {
                        stage: "import".into(),
                        done: received,
                        total: None,
                    });
                }
                // The extractor stopped (it refused something): stop reading.
                let sent = match &tx {
                    Some(tx) => tx.send(data).await.is_ok(),
                    None => false,
                };
                if !sent {
                    extractor_stopped = true;
                    break;
                }
            }
            Some(ChannelMsg::ExtendedData { data, .. }) => {
                stderr.push(&data);
                if let Some(said) = stderr.session_line.said() {
                    gate.said(said);
                }
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(exit_status),
            Some(ChannelMsg::ExitSignal { .. }) => exit = Some(u32::MAX),
            Some(_) => {}
            None => break,
        }
    }
    if extractor_stopped {
        drop(tx.take());
        gate.stop(&mut channel).await;
    } else {
        gate.release().await;
    }
    drop(tx);
    stderr.finish();
    let extracted = extractor
        .await
        .map_err(|e| Error::system(format!("the import's extraction thread failed: {e}")))?;
    let special_modes = match (extracted, exit) {
        (
            Err(Error::LimitExceeded {
                detail, key, limit, ..
            }),
            _,
        ) => {
            return Err(Error::LimitExceeded {
                input: format!("the import of {remote_root} from {}", session.target()),
                detail,
                key,
                limit,
            })
        }
        // A refusal, or an archive unreadable before its end: not the connection's fault.
        (Err(e), _) if extractor_stopped || !matches!(e, Error::System { .. }) => return Err(e),
        (_, None) => {
            return Err(lost(
                session.target(),
                format!("the transfer of {remote_root} was cut off after {received} bytes"),
            ))
        }
        (_, Some(code)) if code != 0 => {
            return Err(Error::system(format!(
                "tar of the guest result root {remote_root} on {} failed ({}): {}",
                session.target(),
                if code == u32::MAX {
                    "killed by a signal".to_string()
                } else {
                    format!("exit status {code}")
                },
                // Bounded already (lines and their cap): shown whole, so
                // that a line's `[line cut at ...]` note stays.
                escape::text(&stderr.tail.text()).cut_at(usize::MAX)
            )));
        }
        (result, Some(_)) => result?,
    };
    if dir
        .path()
        .join(INCOMPLETE_MARKER)
        .symlink_metadata()
        .is_ok()
    {
        return Err(Error::system(format!(
            "the guest result root {remote_root} still carries {INCOMPLETE_MARKER}: the run there did not finish; it is not imported"
        )));
    }
    Ok(Staged {
        dir,
        special_modes,
        signed: Vec::new(),
    })
}

impl Staged {
    /// The staging directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The signature of artifact tree `relative` (with the neutralised
    /// special bits put back, as the build site saw it).
    pub fn signature(&self, relative: &str) -> Result<TreeSignature> {
        let dir = fruix_core::fsutil::resolve_beneath(self.path(), relative)?;
        let mut builder = ManifestBuilder::new();
        walk(&dir, &WalkOptions::default(), |w| {
            let mut entry = w.entry.clone();
            let key = Path::new(relative).join(OsStr::from_bytes(&entry.path));
            if let Some(bits) = self.special_modes.get(&key) {
                entry.mode |= bits;
            }
            builder.add(&entry);
            Ok(())
        })?;
        Ok(builder.finish().0)
    }

    /// Checks every artifact of the staged `promotion.scm` against the
    /// signature the guest declared for it; every artifact must have one.
    pub fn verify(&mut self) -> Result<PromotionMetadata> {
        let path = self.path().join(PROMOTION_FILE);
        let metadata = PromotionMetadata::read(&path)?;
        for a in &metadata.artifacts {
            let Some(declared) = &a.tree_signature else {
                return Err(Error::InvalidMetadata {
                    path: path.clone(),
                    field: format!("artifacts.{}.tree-signature", a.name),
                    line: None,
                    message: "is missing; the guest must sign every artifact it built so that the import can be checked".into(),
                });
            };
            let actual = self.signature(&a.path)?;
            if actual != *declared {
                return Err(Error::SignatureMismatch {
                    path: self.path().join(&a.path),
                    expected: declared.to_string(),
                    actual: actual.to_string(),
                });
            }
            self.signed.push(PathBuf::from(&a.path));
        }
        Ok(metadata)
    }

    /// Marks artifact tree `relative` as signed by this host.
    pub fn signed_here(&mut self, relative: &str) {
        self.signed.push(PathBuf::from(relative));
    }

    /// Moves every top-level entry into `result_root` (the staging directory
    /// goes away) and records the special bits found inside signed artifact
    /// trees in the result root's
    /// [`SPECIAL_MODES_FILE`](fruix_core::special_modes::SPECIAL_MODES_FILE): they are never put
    /// back on disk, but they stay part of the trees' signatures. A
    /// `.fruix-special-modes` the guest sent is not moved: a guest cannot
    /// add bits to what its trees are signed with.
    pub fn place(self, result_root: &Path) -> Result<()> {
        let recorded: SpecialModes = self
            .special_modes
            .iter()
            .filter(|(relative, _)| self.signed.iter().any(|s| relative.starts_with(s)))
            .map(|(relative, bits)| (relative.as_os_str().as_bytes().to_vec(), *bits))
            .collect();
        // Every entry is checked before any is moved, and a move that fails
        // puts back those already moved: a refused import leaves the result
        // root as it found it.
        let mut moves = Vec::new();
        for entry in fs::read_dir(self.path()).with_path("read", self.path())? {
            let entry = entry.with_path("read", self.path())?;
            if entry.file_name() == special_modes::SPECIAL_MODES_FILE {
                // Only the bits this import found count; the guest's own
                // record stays behind, and goes with the staging directory.
                continue;
            }
            let to = result_root.join(entry.file_name());
            if to.symlink_metadata().is_ok() {
                return Err(Error::AlreadyExists {
                    path: to,
                    hint: "the result root already holds an entry the guest's result root also has; it is not overwritten".into(),
                });
            }
            moves.push((entry.path(), to));
        }
        for (done, (from, to)) in moves.iter().enumerate() {
            if let Err(e) = fs::rename(from, to).with_path("move into the result root", to) {
                for (from, to) in &moves[..done] {
                    let _ = fs::rename(to, from);
                }
                return Err(e);
            }
        }
        special_modes::write(result_root, &recorded)?;
        fruix_core::fsutil::sync_dir(result_root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the remote `tar`'s stderr was made text with
    /// `from_utf8_lossy`, so a byte that is not UTF-8 (a name `tar` quotes
    /// in its complaint) was lost to U+FFFD; it is shown as `\ooo`.
    #[test]
    fn a_tar_stderr_byte_that_is_not_utf8_is_kept_as_octal() {
        let (mut session_line, mut tail) = (SessionLine::default(), Tail::new(4));
        RemoteStderr::line(&mut session_line, &mut tail, b"tar: a\xffb: Cannot open");
        assert_eq!(tail.last(), Some("tar: a\\377b: Cannot open"));
    }

    /// A staged root holding `artifacts/world/bin/su` (its setuid bit
    /// stripped and recorded), and whatever `plant` adds.
    fn staged_with(plant: impl FnOnce(&Path)) -> (tempfile::TempDir, Staged) {
        let dir = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir_in(dir.path()).unwrap();
        fs::create_dir_all(staging.path().join("artifacts/world/bin")).unwrap();
        fs::write(staging.path().join("artifacts/world/bin/su"), "su").unwrap();
        plant(staging.path());
        let mut staged = Staged {
            dir: staging,
            special_modes: BTreeMap::from([(PathBuf::from("artifacts/world/bin/su"), 0o4000)]),
            signed: Vec::new(),
        };
        staged.signed_here("artifacts/world");
        (dir, staged)
    }

    #[test]
    fn placing_keeps_only_the_bits_the_import_found() {
        let guest_record = "(fruix-special-modes (format-version 1) (modes (\"artifacts/world/bin/sh\" \"4000\")))";
        let (dir, staged) = staged_with(|root| {
            fs::write(root.join(special_modes::SPECIAL_MODES_FILE), guest_record).unwrap();
        });
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        staged.place(&root).unwrap();
        let recorded = special_modes::read(&root).unwrap();
        assert_eq!(
            recorded,
            SpecialModes::from([(b"artifacts/world/bin/su".to_vec(), 0o4000)])
        );

        // With no bit found, the guest's record is not kept either.
        let (dir, mut staged) = staged_with(|root| {
            fs::write(root.join(special_modes::SPECIAL_MODES_FILE), guest_record).unwrap();
        });
        staged.special_modes.clear();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        staged.place(&root).unwrap();
        assert!(special_modes::read(&root).unwrap().is_empty());
        assert!(root.join("artifacts/world/bin/su").is_file());
    }

    #[test]
    fn placing_never_writes_through_a_symlink_the_guest_sent() {
        let victim = tempfile::NamedTempFile::new().unwrap();
        fs::write(victim.path(), "keep").unwrap();
        let (dir, staged) = staged_with(|root| {
            // The name the record's temporary had (pid only), and the record.
            let tmp = format!(
                ".{}.tmp-{}",
                special_modes::SPECIAL_MODES_FILE,
                std::process::id()
            );
            std::os::unix::fs::symlink(victim.path(), root.join(tmp)).unwrap();
        });
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        staged.place(&root).unwrap();
        assert_eq!(fs::read_to_string(victim.path()).unwrap(), "keep");
        assert_eq!(special_modes::read(&root).unwrap().len(), 1);
    }

    #[test]
    fn placing_over_an_existing_entry_moves_nothing() {
        // Several entries, so that whichever read_dir gives first, one of
        // them can be moved before the clash is met.
        let names = ["a", "b", "c", "d", "e", "f"];
        let (dir, staged) = staged_with(|root| {
            for name in names {
                fs::write(root.join(name), name).unwrap();
            }
        });
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("d"), "the runner's").unwrap();
        let e = staged.place(&root).unwrap_err();
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
        let left: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["d"], "the result root was changed");
        assert_eq!(fs::read_to_string(root.join("d")).unwrap(), "the runner's");
    }

    #[test]
    fn staging_is_created_0700_next_to_the_result_root() {
        let dir = tempfile::tempdir().unwrap();
        let staging = staging_dir(&dir.path().join("r1")).unwrap();
        assert_eq!(staging.path().parent(), Some(dir.path()));
        let name = staging.path().file_name().unwrap().to_string_lossy();
        assert!(name.starts_with(".r1.import-"), "{name}");
        let mode = staging.path().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
    }
}
