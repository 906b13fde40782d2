//! Removing a pool entry, or whatever is at its name: a directory there
//! (no entry is one) goes with all it holds, beneath the pool's descriptor.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use fruix_core::manifest::stat;

/// The deepest directory [`remove_at`] goes into.
const MAX_REMOVE_DEPTH: usize = 256;

/// Removes `name` in the directory `parent`: a file (or a symlink, itself)
/// unlinked, a directory emptied first, each opened beneath its parent with
/// `O_NOFOLLOW` and made writable by its owner on its descriptor. `depth`
/// counts the directories above, up to [`MAX_REMOVE_DEPTH`].
pub(super) fn remove_at(parent: BorrowedFd<'_>, name: &Path, depth: usize) -> io::Result<()> {
    let st = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if stat::file_type(&st) != FileType::Directory {
        return Ok(rfs::unlinkat(parent, name, AtFlags::empty())?);
    }
    if depth >= MAX_REMOVE_DEPTH {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rfs::openat(parent, name, flags, Mode::empty())?;
    // Not its owner: what it holds may still go, if it is writable.
    let _ = rfs::fchmod(&dir, Mode::from_raw_mode(0o700));
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(&dir)? {
        let entry = entry?;
        let bytes = entry.file_name().to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(OsString::from_vec(bytes.to_vec()));
        }
    }
    for entry in names {
        remove_at(dir.as_fd(), Path::new(&entry), depth + 1)?;
    }
    Ok(rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}
