//! One regular file of a walk: opened by the walk ([`OpenFile`]), read
//! once by a [`ReadFile`] (by default [`hash_file`]) up to the size it had
//! at open, and checked on its descriptor once read (a file truncated,
//! grown or written in place meanwhile fails as changed).

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering as AtomicOrdering;

use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};

use super::progress::{check, count_bytes};
use super::{listed_entry_error, unsupported, Progress, WalkOptions, Walked, READ_BUFFER};
use crate::dir::is_symlink_refusal;
use crate::error::{Error, Result};
use crate::manifest::fd::{changed, stat};
use crate::manifest::{canonical_mode, Entry, EntryKind, SPECIAL_BITS};

/// A regular file the walk opened, handed to a [`ReadFile`].
pub struct OpenFile<'a> {
    /// Open for reading; its type was checked on this descriptor.
    pub file: File,
    /// Path relative to the tree root.
    pub path: &'a [u8],
    /// Size when it was opened; reading past it means the file grew.
    pub size: u64,
    /// Canonical mode (with recorded special bits).
    pub mode: u32,
    /// Its owner's user id, and its permission bits as they are on disk.
    pub owner: (u32, u32),
    /// Its group id.
    pub group: u32,
    pub(super) root: &'a Path,
    /// Counts bytes as they are read (a large file moves a display too).
    pub(super) progress: Option<&'a Progress>,
}

impl OpenFile<'_> {
    /// Where the file is, for messages.
    pub fn full_path(&self) -> PathBuf {
        self.root.join(OsStr::from_bytes(self.path))
    }

    /// Reads the next piece into `buf` (interrupted reads retried). `read_so_far`
    /// is what was read before; a file longer than its size at open fails as
    /// changed, so a file that keeps growing cannot keep the walk reading.
    /// Once the walk is cancelled (see [`Progress::cancel`]), fails with
    /// [`Error::Cancelled`] instead.
    pub fn read_piece(&mut self, buf: &mut [u8], read_so_far: u64) -> Result<usize> {
        check(self.progress)?;
        if read_so_far == self.size {
            // The end, as `fstat` said at open: no read is made to find it.
            // One that grew since is caught by the walk's `fstat` after the
            // file is read (its size), as one written in place is.
            return Ok(0);
        }
        loop {
            match self.file.read(buf) {
                Ok(n) if read_so_far + n as u64 > self.size => {
                    return Err(changed(self.full_path(), "grew while it was being read"))
                }
                Ok(n) => {
                    count_bytes(self.progress, n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", self.full_path(), e)),
            }
        }
    }
}

/// What reading a file found: the bytes read and their SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    /// How many bytes were read, which becomes the entry's size.
    pub size: u64,
    /// SHA-256 of exactly those bytes.
    pub sha256: [u8; 32],
}

/// Reads one opened file once and returns the digest of what it read. Called
/// on any thread.
pub type ReadFile<'a> = dyn Fn(&mut OpenFile<'_>) -> Result<FileDigest> + Sync + 'a;

thread_local! {
    static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_BUFFER]);
}

/// Runs `f` with this thread's read buffer.
pub fn with_buffer<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    BUFFER.with(|b| f(&mut b.borrow_mut()))
}

/// The [`ReadFile`] that only hashes.
pub fn hash_file(file: &mut OpenFile<'_>) -> Result<FileDigest> {
    with_buffer(|buf| {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            let n = file.read_piece(buf, size)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok(FileDigest {
            size,
            sha256: hasher.finalize().into(),
        })
    })
}

pub(super) fn read_one(
    parent: &OwnedFd,
    name: &CStr,
    path: Vec<u8>,
    root: &Path,
    options: &WalkOptions<'_>,
) -> Result<Walked> {
    let full = || root.join(OsStr::from_bytes(&path));
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rfs::openat(parent.as_fd(), name, flags, Mode::empty()).map_err(|e| match e {
        e if is_symlink_refusal(e) => changed(full(), "listed as a file, it is now a symlink"),
        e => listed_entry_error(e, full(), "open"),
    })?;
    let stat = rfs::fstat(&fd).map_err(|e| Error::io("inspect", full(), e.into()))?;
    match stat::file_type(&stat) {
        FileType::RegularFile => {}
        FileType::Directory => {
            return Err(changed(full(), "listed as a file, it is now a directory"))
        }
        other => return Err(unsupported(full(), other)),
    }
    let extra = options
        .extra_modes
        .and_then(|m| m.get(&path))
        .map_or(0, |bits| bits & SPECIAL_BITS);
    let mode = canonical_mode(false, stat::mode(&stat)) | extra;
    let mut open = OpenFile {
        file: File::from(fd),
        path: &path,
        size: stat::size(&stat),
        mode,
        owner: (stat::uid(&stat), stat::mode(&stat)),
        group: stat::gid(&stat),
        root,
        progress: options.progress,
    };
    let digest = match options.read_file {
        Some(read) => read(&mut open)?,
        None => hash_file(&mut open)?,
    };
    // What was read is what the file held only if nothing wrote to it
    // meanwhile (growth is caught as it is read): as tar's "file changed
    // as we read it", a truncation or a rewrite in place is refused.
    let now = rfs::fstat(&open.file).map_err(|e| Error::io("inspect", full(), e.into()))?;
    let same_size = digest.size == stat::size(&stat) && stat::size(&now) == stat::size(&stat);
    if !same_size || stat::mtime_ns(&now) != stat::mtime_ns(&stat) {
        return Err(changed(full(), "was written while it was being read"));
    }
    drop(open);
    // Its bytes were counted as they were read.
    if let Some(p) = options.progress {
        p.files.fetch_add(1, AtomicOrdering::Relaxed);
    }
    Ok(Walked {
        entry: Entry {
            path,
            mode,
            kind: EntryKind::File {
                size: digest.size,
                sha256: digest.sha256,
            },
        },
        mtime: stat::mtime(&stat),
        inode: (stat::dev(&stat), stat::ino(&stat)),
    })
}
