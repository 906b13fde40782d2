//! Small filesystem helpers shared by fruix crates: durable atomic writes,
//! symlink-safe path resolution and bounded, non-following metadata reads.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, MetadataFileProblem, Result};

/// The largest metadata file fruix reads (`promotion.scm`, special modes,
/// machines, executors and matrix files, object metadata): 1 MiB, far more
/// than any of them needs.
pub const MAX_METADATA_BYTES: usize = 1 << 20;

/// Writes `contents` to `path` atomically: a temporary file in the same
/// directory is written, flushed to disk, then renamed over `path`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    // A bare file name's directory is the current one.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp).with_path("create", &tmp)?;
        file.write_all(contents).with_path("write", &tmp)?;
        file.sync_all().with_path("flush to disk", &tmp)?;
        fs::rename(&tmp, path).with_path("rename into place", path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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

/// Like [`read_metadata_file`], for optional files: `None` when absent.
pub fn read_optional_metadata_file(path: &Path) -> Result<Option<String>> {
    let refused = |problem| Error::MetadataFile {
        path: path.to_path_buf(),
        problem,
    };
    // What lstat already shows is not a regular file is refused unopened:
    // opening a device can have effects (and fails on `nodev` mounts). The
    // fstat of the opened descriptor below stays the authority, for a file
    // swapped in between.
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("inspect", path, e)),
        Ok(meta) => {
            if let Some(problem) = unless_regular(meta.file_type()) {
                return Err(refused(problem));
            }
        }
    }
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
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
    if let Some(problem) = unless_regular(meta.file_type()) {
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
    String::from_utf8(bytes).map(Some).map_err(|e| {
        refused(MetadataFileProblem::NotUtf8 {
            offset: e.utf8_error().valid_up_to(),
        })
    })
}

/// Why a file of type `kind` is not read as metadata, if it is not a regular file.
fn unless_regular(kind: fs::FileType) -> Option<MetadataFileProblem> {
    if kind.is_file() {
        None
    } else if kind.is_symlink() {
        Some(MetadataFileProblem::Symlink)
    } else {
        Some(MetadataFileProblem::NotRegular {
            kind: file_type_name(kind),
        })
    }
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// What a file type is called in messages.
fn file_type_name(kind: fs::FileType) -> &'static str {
    if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_socket() {
        "socket"
    } else {
        "file of unknown type"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

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
            MetadataFileProblem::NotRegular { kind: "FIFO" },
            "is a FIFO, not a regular file",
        );
    }

    #[test]
    fn devices_and_directories_are_refused() {
        assert_refused(
            refusal(Path::new("/dev/zero")),
            MetadataFileProblem::NotRegular {
                kind: "character device",
            },
            "is a character device, not a regular file",
        );
        let dir = tempfile::tempdir().unwrap();
        assert_refused(
            refusal(dir.path()),
            MetadataFileProblem::NotRegular { kind: "directory" },
            "is a directory, not a regular file",
        );
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
