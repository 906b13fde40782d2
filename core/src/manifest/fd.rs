//! Opening entries of an untrusted tree without ever following a symlink:
//! directories and files relative to their parent's descriptor, with
//! `O_NOFOLLOW`, their type checked with `fstat` on the descriptor. The
//! directories are opened by [`crate::dir`], for a [`TreeKind::READ`] tree.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::dir::{self, OpenDir, TreeKind};
use crate::error::{Error, Result};

/// Opens directory `path` for walking, refusing a symlink
/// ([`OpenDir::open_nofollow`] of a [`TreeKind::READ`] tree).
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    OpenDir::open_nofollow(path, TreeKind::READ).map(OwnedFd::from)
}

/// Opens `relative` (slash-separated components) beneath the open directory
/// `root`, one component at a time, each with `O_NOFOLLOW | O_DIRECTORY`: no
/// symlink anywhere on the way is followed ([`OpenDir::open_beneath`] of a
/// [`TreeKind::READ`] tree). `root_path` names `root` in messages.
pub fn open_beneath(root: &OwnedFd, root_path: &Path, relative: &str) -> Result<OwnedFd> {
    dir::walk(root.as_fd(), root_path, TreeKind::READ, relative, false).map(OwnedFd::from)
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
    /// Modification time, seconds and nanoseconds.
    pub fn mtime_ns(st: &Stat) -> (i64, i64) {
        (st.st_mtime as i64, st.st_mtime_nsec as i64)
    }
    /// Owner's user id.
    pub fn uid(st: &Stat) -> u32 {
        st.st_uid as u32
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
