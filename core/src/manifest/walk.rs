//! Walking a tree through directory descriptors, in path order, without ever
//! following a symlink.
//!
//! The root is opened with `O_NOFOLLOW | O_DIRECTORY`; every entry below it is
//! opened relative to its parent directory's descriptor with `O_NOFOLLOW`
//! (and `O_NONBLOCK`, so that a FIFO swapped in never blocks), and its type is
//! checked with `fstat` on the descriptor that was opened. A name listed as a
//! directory that is a symlink by the time it is opened fails the walk as
//! changed: the walk never descends through a symlink, whatever happens to
//! the tree while it runs.
//!
//! Each regular file is opened once and handed to a [`ReadFile`] callback,
//! which reads it once: [`hash_file`] only hashes it; promotion hashes the
//! bytes as it writes them into the store, so that what is stored is exactly
//! what was hashed. A file is read up to the size it had when it was opened;
//! one that grows meanwhile fails the walk as changed.
//!
//! Directories are listed completely, their names sorted bytewise, and walked
//! depth first, which is path order (see [`super::path_order`]). Memory is
//! bounded by the directories on the current path (one sorted list of names
//! per level) and three batches of entries, never by the size of the tree.
//! Files are read on every core (rayon), one bounded batch at a time, while
//! the next batch is listed and the batch read before is visited on the
//! caller's thread.
//!
//! A walk given a [`Progress`] counts on it, and obeys its cancellation: it
//! fails with [`Error::Cancelled`] at its next entry or piece of a file.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode};

use super::fd::{changed, open_dir, stat};
use super::{canonical_mode, Entry, EntryKind, SPECIAL_BITS};
use crate::dir::{dir_flags, is_symlink_refusal};
use crate::error::{Error, Result};

mod file;
mod progress;
use file::read_one;
pub use file::{hash_file, with_buffer, FileDigest, OpenFile, ReadFile};
use progress::check;
pub use progress::{Cancelled, Progress};

/// Deepest directory nesting a walk accepts below its root.
pub const MAX_DEPTH: usize = 256;

/// Longest path (bytes, relative to the root) and symlink target a walk accepts.
pub const MAX_PATH_BYTES: usize = 4096;

/// Entries per batch handed to the readers.
const BATCH_ENTRIES: usize = 1024;
/// File bytes per batch.
const BATCH_BYTES: u64 = 128 << 20;
/// Directories opened per batch (each holds a descriptor until its files
/// are read): three batches are in flight (listed, read, visited), so a
/// walk holds up to three times this many (the README's caps table).
const BATCH_DIRS: usize = 128;

/// Size of the per-thread read buffer.
pub const READ_BUFFER: usize = 256 << 10;

/// Which entries a walk leaves out, by path relative to its root.
pub type Exclude<'a> = dyn Fn(&[u8]) -> bool + Sync + 'a;

/// Checks each directory the walk reads, the root included, before it is
/// read: given the very descriptor the walk lists it through, its status
/// (from `fstat` on that descriptor), and its path relative to the root.
/// An error ends the walk.
pub type CheckDir<'a> = dyn Fn(BorrowedFd<'_>, &rfs::Stat, &[u8]) -> Result<()> + Sync + 'a;

/// An entry as walked.
#[derive(Debug, Clone)]
pub struct Walked {
    /// The manifest entry: path, canonical mode and kind.
    pub entry: Entry,
    /// Modification time of files and directories (seconds); 0 for symlinks.
    pub mtime: i64,
    /// Device and inode number of files and directories; 0s for symlinks.
    pub inode: (u64, u64),
}

/// Options for [`walk`].
#[derive(Default)]
pub struct WalkOptions<'a> {
    /// Names at the top of the tree to leave out (store object metadata files).
    pub skip_top_level: &'a [&'a str],
    /// Counters to update while reading.
    pub progress: Option<&'a Progress>,
    /// Leave file digests zero and never open files: a structural walk
    /// (types, sizes, modes, times, symlink targets).
    pub skip_digests: bool,
    /// Setuid/setgid/sticky bits recorded for entries (by path relative to
    /// the root) instead of carried on disk; see [`crate::special_modes`].
    pub extra_modes: Option<&'a std::collections::HashMap<Vec<u8>, u32>>,
    /// Reads each regular file; [`hash_file`] when `None`.
    pub read_file: Option<&'a ReadFile<'a>>,
    /// Entries to leave out, by path relative to the root (a directory left
    /// out is not descended into): untracked build output of a source tree.
    pub exclude: Option<&'a Exclude<'a>>,
    /// Checks each directory before it is read ([`CheckDir`]).
    pub check_dir: Option<&'a CheckDir<'a>>,
}

/// Walks the tree at `root` in path order and calls `visit` for every entry,
/// in order, the root first (with an empty path). `root` itself must be a
/// directory, not a symlink.
pub fn walk(
    root: &Path,
    options: &WalkOptions<'_>,
    visit: impl FnMut(&Walked) -> Result<()>,
) -> Result<()> {
    walk_fd(open_dir(root)?, root, options, visit)
}

/// Like [`walk`], for a directory already open (for example through
/// [`open_beneath`](super::fd::open_beneath)); `root` names it in messages.
pub fn walk_fd(
    dir: OwnedFd,
    root: &Path,
    options: &WalkOptions<'_>,
    mut visit: impl FnMut(&Walked) -> Result<()>,
) -> Result<()> {
    let mut producer = Producer::start(dir, root, options)?;
    let mut current = producer.next_batch()?;
    let mut read: Vec<Walked> = Vec::new();
    // Three stages at once: the next batch is listed and this one read on
    // the pool while the one read before is visited here, on the caller's
    // thread (`visit` need not be `Send`).
    while !current.is_empty() || !read.is_empty() {
        let (mut this, mut next) = (Ok(Vec::new()), Ok(Vec::new()));
        let visited = rayon::in_place_scope(|s| {
            if !current.is_empty() {
                let (producer, current) = (&mut producer, std::mem::take(&mut current));
                let (this, next) = (&mut this, &mut next);
                s.spawn(move |_| {
                    (*this, *next) = rayon::join(
                        || read_batch(current, root, options),
                        || producer.next_batch(),
                    );
                });
            }
            std::mem::take(&mut read).iter().try_for_each(|w| {
                check(options.progress)?;
                visit(w)
            })
        });
        // A failed visit ends the walk once the batch under way is done.
        visited?;
        read = this?;
        current = next?;
    }
    Ok(())
}

/// One directory being walked.
struct Frame {
    fd: Arc<OwnedFd>,
    /// Path relative to the root ("" for the root).
    path: Vec<u8>,
    depth: usize,
    names: std::vec::IntoIter<(CString, FileType)>,
}

/// An entry of a batch: complete, or a file still to be opened and read.
enum Pending {
    Ready(Walked),
    File {
        parent: Arc<OwnedFd>,
        name: CString,
        path: Vec<u8>,
    },
}

/// Lists the tree depth first, one batch at a time (one thread).
struct Producer<'a> {
    root: &'a Path,
    options: &'a WalkOptions<'a>,
    stack: Vec<Frame>,
    root_entry: Option<Walked>,
}

impl<'a> Producer<'a> {
    fn start(dir: OwnedFd, root: &'a Path, options: &'a WalkOptions<'a>) -> Result<Self> {
        let stat = rfs::fstat(&dir).map_err(|e| Error::io("inspect", root, e.into()))?;
        if let Some(check) = options.check_dir {
            check(dir.as_fd(), &stat, b"")?;
        }
        let mut producer = Producer {
            root,
            options,
            stack: Vec::new(),
            root_entry: None,
        };
        let entry = producer.dir_entry(Vec::new(), &stat);
        producer.push_dir(dir, Vec::new(), 0)?;
        producer.root_entry = Some(entry);
        Ok(producer)
    }

    fn full(&self, relative: &[u8]) -> PathBuf {
        if relative.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(OsStr::from_bytes(relative))
        }
    }

    fn extra_bits(&self, path: &[u8]) -> u32 {
        self.options
            .extra_modes
            .and_then(|m| m.get(path))
            .map_or(0, |bits| bits & SPECIAL_BITS)
    }

    fn dir_entry(&self, path: Vec<u8>, st: &rfs::Stat) -> Walked {
        let mode = canonical_mode(true, stat::mode(st)) | self.extra_bits(&path);
        Walked {
            entry: Entry {
                path,
                mode,
                kind: EntryKind::Directory,
            },
            mtime: stat::mtime(st),
            inode: (stat::dev(st), stat::ino(st)),
        }
    }

    /// Lists directory `fd` and pushes it for walking.
    fn push_dir(&mut self, fd: OwnedFd, path: Vec<u8>, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::UnsafePath {
                path: self.full(&path),
                message: format!(
                    "is nested deeper than {MAX_DEPTH} directories below the root; fruix refuses deeper trees"
                ),
            });
        }
        let mut names = Vec::new();
        // A duplicate shares the open directory (no second open): the listing
        // reads through it, and children are opened relative to `fd`.
        let listing = fd
            .try_clone()
            .map_err(|e| Error::io("read", self.full(&path), e))
            .and_then(|dup| {
                rfs::Dir::new(dup).map_err(|e| Error::io("read", self.full(&path), e.into()))
            })?;
        for item in listing {
            let item = item.map_err(|e| Error::io("read", self.full(&path), e.into()))?;
            let name = item.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            if depth == 0
                && self
                    .options
                    .skip_top_level
                    .iter()
                    .any(|n| n.as_bytes() == name.to_bytes())
            {
                continue;
            }
            if let Some(exclude) = self.options.exclude {
                let mut child = path.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(name.to_bytes());
                if exclude(&child) {
                    continue;
                }
            }
            names.push((name.to_owned(), item.file_type()));
        }
        names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        self.stack.push(Frame {
            fd: Arc::new(fd),
            path,
            depth,
            names: names.into_iter(),
        });
        Ok(())
    }

    /// The next batch of entries, in path order; empty at the end.
    fn next_batch(&mut self) -> Result<Vec<Pending>> {
        let mut batch = Vec::with_capacity(BATCH_ENTRIES);
        if let Some(root) = self.root_entry.take() {
            batch.push(Pending::Ready(root));
        }
        let (mut bytes, mut dirs) = (0u64, 0usize);
        while batch.len() < BATCH_ENTRIES && bytes < BATCH_BYTES && dirs < BATCH_DIRS {
            check(self.options.progress)?;
            let Some(frame) = self.stack.last_mut() else {
                break;
            };
            let Some((name, file_type)) = frame.names.next() else {
                self.stack.pop();
                continue;
            };
            let (parent, depth) = (Arc::clone(&frame.fd), frame.depth);
            let mut path = frame.path.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.to_bytes());
            if path.len() > MAX_PATH_BYTES {
                return Err(Error::UnsafePath {
                    path: self.full(&path),
                    message: format!(
                        "path is longer than {MAX_PATH_BYTES} bytes; fruix refuses longer paths"
                    ),
                });
            }
            match self.entry(&parent, name, file_type, path, depth)? {
                Some(p @ Pending::File { .. }) => {
                    batch.push(p);
                }
                Some(Pending::Ready(w)) => {
                    if let EntryKind::File { size, .. } = w.entry.kind {
                        bytes += size;
                    }
                    if matches!(w.entry.kind, EntryKind::Directory) {
                        dirs += 1;
                    }
                    batch.push(Pending::Ready(w));
                }
                None => {}
            }
        }
        Ok(batch)
    }

    /// Handles one listed name. Directories are opened and pushed here.
    fn entry(
        &mut self,
        parent: &Arc<OwnedFd>,
        name: CString,
        file_type: FileType,
        path: Vec<u8>,
        depth: usize,
    ) -> Result<Option<Pending>> {
        let file_type = match file_type {
            FileType::Unknown => {
                let stat = rfs::statat(&**parent, &name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| listed_entry_error(e, self.full(&path), "inspect"))?;
                stat::file_type(&stat)
            }
            known => known,
        };
        match file_type {
            FileType::Directory => {
                let fd = rfs::openat(&**parent, &name, dir_flags(), Mode::empty()).map_err(
                    |e| match e {
                        e if is_symlink_refusal(e) || e == rustix::io::Errno::NOTDIR => changed(
                            self.full(&path),
                            "listed as a directory, it is no longer one",
                        ),
                        e => listed_entry_error(e, self.full(&path), "open"),
                    },
                )?;
                let stat = rfs::fstat(&fd)
                    .map_err(|e| Error::io("inspect", self.full(&path), e.into()))?;
                if let Some(check) = self.options.check_dir {
                    check(fd.as_fd(), &stat, &path)?;
                }
                let walked = self.dir_entry(path.clone(), &stat);
                self.push_dir(fd, path, depth + 1)?;
                Ok(Some(Pending::Ready(walked)))
            }
            FileType::Symlink => {
                let target =
                    rfs::readlinkat(&**parent, &name, Vec::new()).map_err(|e| match e {
                        rustix::io::Errno::INVAL => {
                            changed(self.full(&path), "listed as a symlink, it is no longer one")
                        }
                        e => listed_entry_error(e, self.full(&path), "read symlink"),
                    })?;
                let target = target.into_bytes();
                if target.len() > MAX_PATH_BYTES {
                    return Err(Error::UnsafePath {
                        path: self.full(&path),
                        message: format!("symlink target is longer than {MAX_PATH_BYTES} bytes"),
                    });
                }
                Ok(Some(Pending::Ready(Walked {
                    entry: Entry {
                        path,
                        mode: 0,
                        kind: EntryKind::Symlink { target },
                    },
                    mtime: 0,
                    inode: (0, 0),
                })))
            }
            FileType::RegularFile if self.options.skip_digests => {
                let stat = rfs::statat(&**parent, &name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| listed_entry_error(e, self.full(&path), "inspect"))?;
                if stat::file_type(&stat) != FileType::RegularFile {
                    return Err(changed(
                        self.full(&path),
                        "listed as a file, it is no longer one",
                    ));
                }
                let mode = canonical_mode(false, stat::mode(&stat)) | self.extra_bits(&path);
                Ok(Some(Pending::Ready(Walked {
                    entry: Entry {
                        path,
                        mode,
                        kind: EntryKind::File {
                            size: stat::size(&stat),
                            sha256: [0; 32],
                        },
                    },
                    mtime: stat::mtime(&stat),
                    inode: (stat::dev(&stat), stat::ino(&stat)),
                })))
            }
            FileType::RegularFile => Ok(Some(Pending::File {
                parent: Arc::clone(parent),
                name,
                path,
            })),
            other => Err(unsupported(self.full(&path), other)),
        }
    }
}

pub(super) fn unsupported(path: PathBuf, file_type: FileType) -> Error {
    let kind = match file_type {
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::BlockDevice => "a block device",
        FileType::CharacterDevice => "a character device",
        _ => "an unknown file type",
    };
    Error::UnsupportedFileType { path, kind }
}

/// Opens and reads a batch's files on every core; other entries pass through.
fn read_batch(batch: Vec<Pending>, root: &Path, options: &WalkOptions<'_>) -> Result<Vec<Walked>> {
    batch
        .into_par_iter()
        .map(|p| match p {
            Pending::Ready(w) => Ok(w),
            Pending::File { parent, name, path } => read_one(&parent, &name, path, root, options),
        })
        .collect()
}

/// The error of `action` (`open`, say) on entry `path`, which the walk
/// listed: gone since (`ENOENT`, or `ENOTDIR` for a parent replaced) means
/// the tree changed while fruix read it, as a build still writing it or a
/// hostile one swapping entries would make it, not that the machine
/// failed; anything else is an I/O failure.
pub(super) fn listed_entry_error(
    e: rustix::io::Errno,
    path: PathBuf,
    action: &'static str,
) -> Error {
    match e {
        rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => {
            changed(path, "listed, it is no longer there")
        }
        e => Error::io(action, path, e.into()),
    }
}
