//! Opening entries of an untrusted tree without ever following a symlink:
//! directories and files relative to their parent's descriptor, with
//! `O_NOFOLLOW`, their type checked with `fstat` on the descriptor.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::error::{Error, Result};

/// Opens directory `path` for walking, refusing a symlink.
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    rfs::open(path, dir_flags(), Mode::empty()).map_err(|e| open_dir_error(path, e))
}

/// Opens `relative` (slash-separated components) beneath the open directory
/// `root`, one component at a time, each with `O_NOFOLLOW | O_DIRECTORY`: no
/// symlink anywhere on the way is followed. `root_path` names `root` in messages.
pub fn open_beneath(root: &OwnedFd, root_path: &Path, relative: &str) -> Result<OwnedFd> {
    let mut path = root_path.to_path_buf();
    let mut current: Option<OwnedFd> = None;
    for component in relative.split('/').filter(|c| !c.is_empty() && *c != ".") {
        path.push(component);
        if component == ".." {
            return Err(Error::UnsafePath {
                path,
                message: "path leaves its root (`..`); give a path inside it".into(),
            });
        }
        let parent = current.as_ref().unwrap_or(root);
        let fd = rfs::openat(parent, component, dir_flags(), Mode::empty())
            .map_err(|e| open_dir_error(&path, e))?;
        current = Some(fd);
    }
    match current {
        Some(fd) => Ok(fd),
        None => rfs::openat(root, ".", dir_flags(), Mode::empty())
            .map_err(|e| open_dir_error(root_path, e)),
    }
}

/// Opens regular file `relative` beneath the open directory `root`, no
/// symlink followed on the way, its type checked on the descriptor.
/// `root_path` names `root` in messages.
pub fn open_file_beneath(root: &OwnedFd, root_path: &Path, relative: &[u8]) -> Result<File> {
    let full = root_path.join(OsStr::from_bytes(relative));
    let (parent, name) = match relative.iter().rposition(|b| *b == b'/') {
        Some(i) => (
            Some(open_beneath(
                root,
                root_path,
                &String::from_utf8_lossy(&relative[..i]),
            )?),
            &relative[i + 1..],
        ),
        None => (None, relative),
    };
    let fd = rfs::openat(
        parent.as_ref().unwrap_or(root),
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open", &full, e.into()))?;
    let st = rfs::fstat(&fd).map_err(|e| Error::io("inspect", &full, e.into()))?;
    if stat::file_type(&st) != FileType::RegularFile {
        return Err(Error::UnsafePath {
            path: full,
            message: "is not a regular file".into(),
        });
    }
    Ok(File::from(fd))
}

pub(super) fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn open_dir_error(path: &Path, e: rustix::io::Errno) -> Error {
    match e {
        rustix::io::Errno::LOOP => Error::UnsafePath {
            path: path.to_path_buf(),
            message: "is a symlink; fruix never follows symlinks in a tree it reads".into(),
        },
        rustix::io::Errno::NOTDIR => Error::UnsafePath {
            path: path.to_path_buf(),
            message: match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => {
                    "is a symlink; fruix never follows symlinks in a tree it reads".into()
                }
                _ => "is not a directory".into(),
            },
        },
        e => Error::io("open", path, e.into()),
    }
}

/// The fields of a `stat` the walk uses, as fixed-width numbers (their C
/// types differ between Linux and FreeBSD).
#[allow(clippy::unnecessary_cast)]
pub mod stat {
    use rustix::fs::{FileType, Stat};

    /// Permission and special bits.
    pub fn mode(st: &Stat) -> u32 {
        st.st_mode as u32 & 0o7777
    }
    /// The file type.
    pub fn file_type(st: &Stat) -> FileType {
        FileType::from_raw_mode(st.st_mode as _)
    }
    /// Size in bytes.
    pub fn size(st: &Stat) -> u64 {
        st.st_size as u64
    }
    /// Modification time, seconds.
    pub fn mtime(st: &Stat) -> i64 {
        st.st_mtime as i64
    }
    /// Hard link count.
    pub fn nlink(st: &Stat) -> u64 {
        st.st_nlink as u64
    }
    /// Device.
    pub fn dev(st: &Stat) -> u64 {
        st.st_dev as u64
    }
    /// Inode number.
    pub fn ino(st: &Stat) -> u64 {
        st.st_ino as u64
    }
}

/// A failure because the tree changed under the walk.
pub fn changed(path: PathBuf, what: &str) -> Error {
    Error::UnsafePath {
        path,
        message: format!(
            "{what}: the tree changed while fruix was reading it; make sure nothing writes to it, then try again"
        ),
    }
}
