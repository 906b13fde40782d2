//! Small filesystem helpers shared by fruix crates: durable atomic writes,
//! symlink-safe path resolution and bounded, non-following metadata reads.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use crate::error::{Error, IoContext, MetadataFileProblem, Result};

/// This user's home directory: `$HOME` when it is set and absolute, else
/// the home the password database gives the effective user (as OpenSSH
/// and most tools find it under `env -i`, cron or a systemd unit; a
/// relative or empty `$HOME` is passed over too, where it sent a user's
/// store to root's `/frx/store`); only an absolute one, else `None`.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|home| home.is_absolute())
        .or_else(password_home)
        .filter(|home| home.is_absolute())
}

/// The effective user's home in the password database (`getpwuid_r`).
fn password_home() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero `passwd` is a valid value to be overwritten.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to a live local of the size given; the
    // strings `entry` then points to lie in `buf`, read before it goes.
    let status = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if status != 0 || found.is_null() || entry.pw_dir.is_null() {
        return None;
    }
    // SAFETY: `pw_dir` is a NUL-terminated string in `buf`.
    let dir = unsafe { std::ffi::CStr::from_ptr(entry.pw_dir) };
    Some(PathBuf::from(OsStr::from_bytes(dir.to_bytes())))
}

/// The room this user has left on the file system holding `path`: bytes
/// (root's count includes the blocks reserved for root) and inodes
/// (`None` for a file system that counts none, as tmpfs without
/// `nr_inodes`). `None` when it cannot be asked (`statvfs`).
pub fn room_left(path: &Path) -> Option<(u64, Option<u64>)> {
    let st = rustix::fs::statvfs(path).ok()?;
    let blocks = match rustix::process::geteuid().is_root() {
        true => st.f_bfree,
        false => st.f_bavail,
    };
    let inodes = (st.f_files > 0).then_some(st.f_favail);
    Some((blocks.saturating_mul(st.f_frsize), inodes))
}

/// Whether the file system holding `path` has less than `bytes` or
/// `inodes` left for this user ([`room_left`]): a write that failed there
/// may have failed for want of room.
pub fn short_of_room(path: &Path, bytes: u64, inodes: u64) -> bool {
    room_left(path).is_some_and(|(b, i)| b < bytes || i.is_some_and(|i| i < inodes))
}

/// The largest metadata file fruix reads (`promotion.scm`, special modes,
/// machines, executors and matrix files, object metadata): 1 MiB, far more
/// than any of them needs.
pub const MAX_METADATA_BYTES: usize = 1 << 20;

/// Writes `contents` to `path` atomically: a temporary file in the same
/// directory is written, flushed to disk, then renamed over `path`.
///
/// See [`write_atomic_with`] for why a planted entry cannot redirect it.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomic_with(path, |file| file.write_all(contents))
}

/// Writes what `fill` writes to `path` atomically, like [`write_atomic`].
///
/// The directory may hold entries someone else chose (a guest's result
/// root, a build's logs), so nothing in it is followed: the temporary is
/// created relative to the directory's descriptor with `O_CREAT | O_EXCL |
/// O_NOFOLLOW` under a name no one can predict, and renamed over `path`'s
/// name, which replaces an entry there (a symlink included) and never writes
/// through it. A planted entry can make the write fail, never land elsewhere.
/// On failure the temporary is removed.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    // A bare file name's directory is the current one.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = match path.components().next_back() {
        Some(Component::Normal(name)) => name,
        _ => {
            return Err(Error::UnsafePath {
                path: path.to_path_buf(),
                message: "names no file to write; give a file's path".into(),
            })
        }
    };
    let dir_fd = rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open directory", dir, e.into()))?;
    write_atomic_at(dir_fd.as_fd(), dir, name, fill)
}

/// [`write_atomic_with`] into the open directory `dir` (named `dir_path` in
/// messages), as entry `name`: for a directory reached without following
/// a symlink ([`OpenDir`](crate::dir::OpenDir)), so that nothing on the
/// way to the file is followed either.
pub fn write_atomic_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &OsStr,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let path = dir_path.join(name);
    let (tmp_name, fd) = create_temporary(dir, dir_path, name)?;
    let tmp = dir_path.join(&tmp_name);
    let result = (|| {
        let mut file = File::from(fd);
        fill(&mut file).with_path("write", &tmp)?;
        file.sync_all().with_path("flush to disk", &tmp)?;
        rfs::renameat(dir, &tmp_name, dir, name)
            .map_err(|e| Error::io("rename into place", &path, e.into()))?;
        rfs::fsync(dir).map_err(|e| Error::io("flush directory to disk", dir_path, e.into()))
    })();
    if result.is_err() {
        let _ = rfs::unlinkat(dir, &tmp_name, AtFlags::empty());
    }
    result
}

/// Creates `.NAME.tmp-PID-NONCE` in `dir_fd`, exclusively and without
/// following a symlink; a name that exists is skipped for another nonce.
fn create_temporary(
    dir_fd: BorrowedFd<'_>,
    dir: &Path,
    name: &OsStr,
) -> Result<(OsString, OwnedFd)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..16 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}-{nanos:08x}{count:x}", std::process::id()));
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rfs::openat(dir_fd, &tmp_name, flags, Mode::from(0o666)) {
            Ok(fd) => return Ok((tmp_name, fd)),
            Err(rustix::io::Errno::EXIST) => last = Some(tmp_name),
            Err(e) => return Err(Error::io("create", dir.join(&tmp_name), e.into())),
        }
    }
    let tmp = dir.join(last.unwrap_or_default());
    Err(Error::io(
        "create",
        tmp,
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "every temporary name tried already exists",
        ),
    ))
}

/// Flushes a directory's entries to disk (after creating or renaming in it).
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_path("flush directory to disk", dir)
}

/// Resolves `relative` under `root` without following any symlink.
///
/// Every component must exist as a real directory (the last one may be any
/// type, and is returned as is). A symlink anywhere on the way is refused,
/// because it could lead outside `root`.
pub fn resolve_beneath(root: &Path, relative: &str) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    let components: Vec<_> = Path::new(relative).components().collect();
    for (i, component) in components.iter().enumerate() {
        let Component::Normal(name) = component else {
            return Err(Error::UnsafePath {
                path: root.join(relative),
                message: "path leaves its root (absolute or `..`); give a path inside it".into(),
            });
        };
        path.push(name);
        let meta = fs::symlink_metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: path.clone(),
                hint: "the result root does not contain it".into(),
            },
            // What is denied is looking into the directory holding it
            // (`root` itself, or one this loop inspected): named, rather
            // than the entry that could not be looked at.
            std::io::ErrorKind::PermissionDenied => {
                Error::io("look into", path.parent().unwrap_or(root), e)
            }
            _ => Error::io("inspect", &path, e),
        })?;
        let last = i + 1 == components.len();
        if meta.file_type().is_symlink() {
            return Err(Error::UnsafePath {
                path,
                message: "is a symlink; fruix never follows symlinks out of a result root".into(),
            });
        }
        if !last && !meta.is_dir() {
            return Err(Error::UnsafePath {
                path,
                message: "is not a directory".into(),
            });
        }
    }
    Ok(path)
}

/// Reads the metadata file at `path` as UTF-8 text, refusing anything that is
/// not a regular file of at most [`MAX_METADATA_BYTES`].
///
/// The file is opened with `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY` (and
/// `O_CLOEXEC`), and its type is checked with `fstat` on that descriptor
/// (and before opening, with `lstat`, so that a device is not even opened):
///
/// - a symlink is refused and never followed (nothing of its target is read);
/// - a FIFO is refused at once instead of blocking, and a device is refused
///   without reading a byte from it;
/// - a larger file is refused by its size, and at most one byte past the
///   limit is ever read (in case it grows meanwhile).
///
/// An absent file is [`Error::NotFound`]; every refusal is
/// [`Error::MetadataFile`] naming the path and the [`MetadataFileProblem`].
pub fn read_metadata_file(path: &Path) -> Result<String> {
    read_optional_metadata_file(path)?.ok_or_else(|| Error::NotFound {
        path: path.to_path_buf(),
        hint: "give the path of an existing metadata file".into(),
    })
}

/// Reads a file the user names as a `kind` (`matrix file`, a secret key
/// file...) as [`read_metadata_file`] does, but through the symlinks its
/// path goes through, the last included: the user chose the path (a key
/// mounted from a Kubernetes secret is a symlink). What it reaches must
/// still be a regular file (checked on the descriptor), of at most
/// [`MAX_METADATA_BYTES`], never waited on. An absent one is named so.
///
/// A path whose symlinks make a loop leads to no file either: it is
/// [`Error::NotFound`] too, saying so (the user's input, not a failure of
/// this host). One that is not a regular file is refused naming `kind`
/// ([`MetadataFileProblem::NotRegular`]), not as metadata.
pub fn read_file_of_kind(path: &Path, kind: &'static str) -> Result<String> {
    let missing = |why: &str| Error::NotFound {
        path: path.to_path_buf(),
        hint: format!("{why}give the path of an existing {kind}"),
    };
    match read_optional_file_of_kind(path, kind) {
        Ok(Some(file)) => Ok(file.text),
        Ok(None) => Err(missing("")),
        Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ELOOP) => Err(
            missing("its symlinks make a loop (too many levels of symbolic links); "),
        ),
        Err(e) => Err(e),
    }
}

/// A file the user named, as [`read_optional_file_of_kind`] read it.
#[derive(Debug)]
pub struct NamedFile {
    /// Its text.
    pub text: String,
    /// The metadata (`fstat`) of the descriptor it was read through: its
    /// owner and mode, checked without a second lookup of its path (which
    /// a file swapped in between would pass).
    pub metadata: fs::Metadata,
}

/// [`read_file_of_kind`] for an optional file: `None` when absent (or a
/// symlink to nothing), the file's text and metadata otherwise.
pub fn read_optional_file_of_kind(path: &Path, kind: &'static str) -> Result<Option<NamedFile>> {
    let Some((bytes, metadata)) = read_regular_file(path, Reading::Named(kind))? else {
        return Ok(None);
    };
    let text = utf8(path, bytes)?;
    Ok(Some(NamedFile { text, metadata }))
}

/// Like [`read_metadata_file`], for optional files: `None` when absent.
pub fn read_optional_metadata_file(path: &Path) -> Result<Option<String>> {
    read_optional_regular_file(path)?
        .map(|bytes| utf8(path, bytes))
        .transpose()
}

/// `bytes` of the file at `path` as text.
fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| Error::MetadataFile {
        path: path.to_path_buf(),
        problem: MetadataFileProblem::NotUtf8 {
            offset: e.utf8_error().valid_up_to(),
        },
    })
}

/// The bytes of the file at `path`, read as [`read_metadata_file`] reads
/// (a regular file of at most [`MAX_METADATA_BYTES`], never through a
/// symlink, never blocking), but not necessarily UTF-8: `None` when absent.
pub fn read_optional_regular_file(path: &Path) -> Result<Option<Vec<u8>>> {
    Ok(read_regular_file(path, Reading::Metadata)?.map(|(bytes, _)| bytes))
}

/// What [`read_regular_file`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// A file the user names as this kind (`secret key file`): its path is
    /// theirs to choose, symlinks included, and a refusal names the kind.
    Named(&'static str),
    /// Anything else, metadata: a symlink is refused unread.
    Metadata,
}

/// The bytes of the regular file at `path` (at most
/// [`MAX_METADATA_BYTES`], never blocking) and the metadata of the
/// descriptor they were read through, `None` when absent; through a
/// symlink only when [`Reading::Named`].
fn read_regular_file(path: &Path, reading: Reading) -> Result<Option<(Vec<u8>, fs::Metadata)>> {
    let refused = |problem| Error::MetadataFile {
        path: path.to_path_buf(),
        problem,
    };
    // What (l)stat already shows is not a regular file is refused unopened:
    // opening a device can have effects (and fails on `nodev` mounts). The
    // fstat of the opened descriptor below stays the authority, for a file
    // swapped in between.
    let (looked, named) = match reading {
        Reading::Named(kind) => (fs::metadata(path), Some(kind)),
        Reading::Metadata => (fs::symlink_metadata(path), None),
    };
    match looked {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("inspect", path, e)),
        Ok(meta) => {
            if let Some(problem) = unless_regular(meta.file_type(), named) {
                return Err(refused(problem));
            }
        }
    }
    let nofollow = match reading {
        Reading::Named(_) => 0,
        Reading::Metadata => libc::O_NOFOLLOW,
    };
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW on a symlink fails with ELOOP (Linux) or EMLINK (FreeBSD).
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EMLINK)) && is_symlink(path) =>
        {
            return Err(refused(MetadataFileProblem::Symlink))
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let meta = file.metadata().with_path("inspect", path)?;
    if let Some(problem) = unless_regular(meta.file_type(), named) {
        return Err(refused(problem));
    }
    let too_large = MetadataFileProblem::TooLarge {
        limit: MAX_METADATA_BYTES,
    };
    if meta.len() > MAX_METADATA_BYTES as u64 {
        return Err(refused(too_large));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_METADATA_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_path("read", path)?;
    if bytes.len() > MAX_METADATA_BYTES {
        return Err(refused(too_large));
    }
    Ok(Some((bytes, meta)))
}

/// Why a file of type `kind` is not read, if it is not a regular file:
/// as metadata, or (`named`) as the kind of file the user named.
fn unless_regular(kind: fs::FileType, named: Option<&'static str>) -> Option<MetadataFileProblem> {
    if kind.is_file() {
        None
    } else if kind.is_symlink() {
        Some(MetadataFileProblem::Symlink)
    } else {
        Some(MetadataFileProblem::NotRegular {
            kind: file_type_name(kind),
            named,
        })
    }
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// What a file type is called in messages: `directory`, `symlink`,
/// `regular file`, `FIFO`...
pub fn file_type_name(kind: fs::FileType) -> &'static str {
    type Is = fn(&fs::FileType) -> bool;
    const NAMES: [(Is, &str); 7] = [
        (fs::FileType::is_symlink, "symlink"),
        (fs::FileType::is_file, "regular file"),
        (fs::FileType::is_dir, "directory"),
        (FileTypeExt::is_fifo, "FIFO"),
        (FileTypeExt::is_char_device, "character device"),
        (FileTypeExt::is_block_device, "block device"),
        (FileTypeExt::is_socket, "socket"),
    ];
    NAMES
        .iter()
        .find(|(is, _)| is(&kind))
        .map_or("file of unknown type", |&(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_short_only_below_what_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(room_left(dir.path()).is_some());
        assert!(!short_of_room(dir.path(), 0, 0));
        assert!(short_of_room(dir.path(), u64::MAX, 0));
        assert!(room_left(&dir.path().join("missing")).is_none());
        assert!(!short_of_room(
            &dir.path().join("missing"),
            u64::MAX,
            u64::MAX
        ));
    }
    use std::sync::mpsc;
    use std::time::Duration;

    /// The entries of `dir` whose names hold `.tmp-`.
    fn temporaries(dir: &Path) -> Vec<OsString> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect()
    }

    #[test]
    fn an_atomic_write_never_writes_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        // The temporary's old name (pid only), and the target itself.
        let old_tmp = dir
            .path()
            .join(format!(".promotion.scm.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_tmp).unwrap();
        let target = dir.path().join("promotion.scm");
        std::os::unix::fs::symlink(&victim, &target).unwrap();

        write_atomic(&target, b"new").unwrap();

        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        let meta = fs::symlink_metadata(&target).unwrap();
        assert!(meta.is_file(), "the symlink is replaced, not followed");
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(temporaries(dir.path()), vec![old_tmp.file_name().unwrap()]);
    }

    #[test]
    fn a_failed_atomic_write_leaves_no_temporary_and_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("report.json");
        fs::write(&target, "old").unwrap();
        let e = write_atomic_with(&target, |file| {
            file.write_all(b"half")?;
            Err(std::io::Error::other("the writer failed"))
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Io {
                    action: "write",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "old");
        assert!(temporaries(dir.path()).is_empty());

        // A directory in the way: the rename fails, nothing is left either.
        let busy = dir.path().join("busy");
        fs::create_dir(&busy).unwrap();
        fs::write(busy.join("inside"), "x").unwrap();
        let e = write_atomic(&busy, b"x").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Io {
                    action: "rename into place",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(temporaries(dir.path()).is_empty());
    }

    fn refusal(path: &Path) -> (MetadataFileProblem, String) {
        match read_metadata_file(path) {
            Err(e @ Error::MetadataFile { problem, .. }) => (problem, e.to_string()),
            other => panic!("expected a MetadataFile error for {path:?}, got {other:?}"),
        }
    }

    /// Checks that `refused` is the problem `expected`, with a message that
    /// says `says`; returns the message.
    fn assert_refused(
        refused: (MetadataFileProblem, String),
        expected: MetadataFileProblem,
        says: &str,
    ) -> String {
        let (problem, message) = refused;
        assert_eq!(problem, expected, "{message}");
        assert!(message.contains(says), "{message}");
        message
    }

    #[test]
    fn a_regular_file_is_read_and_an_absent_one_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.scm");
        fs::write(&path, "(x)").unwrap();
        assert_eq!(read_metadata_file(&path).unwrap(), "(x)");
        let absent = dir.path().join("absent");
        assert_eq!(read_optional_metadata_file(&absent).unwrap(), None);
        assert!(matches!(
            read_metadata_file(&absent),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn a_symlink_is_refused_without_reading_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, "SECRET-MARKER").unwrap();
        let link = dir.path().join("m.scm");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let message = assert_refused(
            refusal(&link),
            MetadataFileProblem::Symlink,
            "is a symlink; fruix never follows symlinks in metadata",
        );
        assert!(!message.contains("SECRET"), "{message}");
    }

    /// A file the user names (a key, a machines file) is read through the
    /// symlinks of its path, as a Kubernetes secret's mount is made: before,
    /// it was refused as metadata is. What it reaches is held to the same
    /// rules: a FIFO is refused at once, a device unread, and a dangling
    /// link is an absent file.
    #[test]
    fn a_named_file_is_read_through_symlinks_and_held_to_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..data");
        fs::create_dir(&data).unwrap();
        fs::write(data.join("key"), "k:AAAA\n").unwrap();
        let link = dir.path().join("key");
        std::os::unix::fs::symlink("..data/key", &link).unwrap();
        assert_eq!(
            read_file_of_kind(&link, "secret key file").unwrap(),
            "k:AAAA\n"
        );
        let fifo = dir.path().join("fifo");
        crate::testing::mkfifo(&fifo).unwrap();
        let through = |target: &Path, name: &str| {
            let link = dir.path().join(name);
            std::os::unix::fs::symlink(target, &link).unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || tx.send(read_file_of_kind(&link, "key file")));
            match rx
                .recv_timeout(Duration::from_secs(30))
                .expect("it blocked")
            {
                Err(Error::MetadataFile { problem, .. }) => problem,
                other => panic!("{name}: {other:?}"),
            }
        };
        assert_eq!(
            through(&fifo, "to-fifo"),
            MetadataFileProblem::NotRegular {
                kind: "FIFO",
                named: Some("key file")
            }
        );
        assert_eq!(
            through(Path::new("/dev/zero"), "to-zero"),
            MetadataFileProblem::NotRegular {
                kind: "character device",
                named: Some("key file")
            }
        );
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("nowhere", &dangling).unwrap();
        assert!(read_optional_file_of_kind(&dangling, "key file")
            .unwrap()
            .is_none());
        assert!(matches!(
            read_file_of_kind(&dangling, "key file"),
            Err(Error::NotFound { .. })
        ));
    }

    /// Regression: a secret key file that was a FIFO or a directory was
    /// refused saying "metadata files are regular files".
    #[test]
    fn a_named_file_that_is_not_regular_is_refused_as_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        crate::testing::mkfifo(&fifo).unwrap();
        for path in [fifo.as_path(), dir.path()] {
            let e = read_file_of_kind(path, "secret key file").unwrap_err();
            let message = e.to_string();
            assert!(
                message.contains(
                    "not a regular file; give the path of a regular file as the secret key file"
                ),
                "{message}"
            );
            assert!(!message.contains("metadata"), "{message}");
        }
    }

    /// What a named file is read with is what it is: the metadata of the
    /// descriptor its text came from.
    #[test]
    fn a_named_file_comes_with_its_metadata() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        fs::write(&path, "k:AAAA\n").unwrap();
        let file = read_optional_file_of_kind(&path, "trusted keys file")
            .unwrap()
            .unwrap();
        assert_eq!(file.text, "k:AAAA\n");
        assert_eq!(file.metadata.ino(), fs::metadata(&path).unwrap().ino());
    }

    /// A loop of symlinks named as a file is the user's input, like a
    /// missing file: not a failure of this host.
    #[test]
    fn a_named_symlink_loop_is_a_missing_file_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("loop1"), dir.path().join("loop2"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let e = read_file_of_kind(&a, "matrix file").unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains("symlinks make a loop"), "{e}");
        assert!(e.to_string().contains("existing matrix file"), "{e}");
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("m.scm");
        crate::testing::mkfifo(&fifo).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(refusal(&fifo)));
        let refused = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("reading a FIFO must not block");
        assert_refused(
            refused,
            MetadataFileProblem::NotRegular {
                kind: "FIFO",
                named: None,
            },
            "is a FIFO, not a regular file; metadata files are regular files",
        );
    }

    #[test]
    fn devices_and_directories_are_refused() {
        assert_refused(
            refusal(Path::new("/dev/zero")),
            MetadataFileProblem::NotRegular {
                kind: "character device",
                named: None,
            },
            "is a character device, not a regular file",
        );
        let dir = tempfile::tempdir().unwrap();
        assert_refused(
            refusal(dir.path()),
            MetadataFileProblem::NotRegular {
                kind: "directory",
                named: None,
            },
            "is a directory, not a regular file",
        );
    }

    #[test]
    fn each_file_type_has_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let [file, fifo, link] = ["file", "fifo", "link"].map(|n| dir.path().join(n));
        fs::write(&file, "").unwrap();
        crate::testing::mkfifo(&fifo).unwrap();
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for (path, name) in [
            (link.as_path(), "symlink"),
            (&file, "regular file"),
            (dir.path(), "directory"),
            (&fifo, "FIFO"),
            (Path::new("/dev/null"), "character device"),
            (&socket, "socket"),
        ] {
            let kind = fs::symlink_metadata(path).unwrap().file_type();
            assert_eq!(file_type_name(kind), name, "{path:?}");
        }
    }

    #[test]
    fn the_size_cap_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.scm");
        fs::write(&path, vec![b' '; MAX_METADATA_BYTES]).unwrap();
        assert_eq!(read_metadata_file(&path).unwrap().len(), MAX_METADATA_BYTES);
        fs::write(&path, vec![b' '; 2 * MAX_METADATA_BYTES]).unwrap();
        assert_refused(
            refusal(&path),
            MetadataFileProblem::TooLarge {
                limit: MAX_METADATA_BYTES,
            },
            "1048576 bytes (1024 KiB)",
        );
    }

    #[test]
    fn invalid_utf8_is_refused_naming_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.scm");
        fs::write(&path, b"(ok \xff)").unwrap();
        let (problem, _) = refusal(&path);
        assert_eq!(problem, MetadataFileProblem::NotUtf8 { offset: 4 });
    }
}
