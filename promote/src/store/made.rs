//! A store a command opened tentatively ([`MadeStore`]): what opening it
//! made goes again when the command fails.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::lock::{flock, LockMode};
use super::{entries, Store};
use crate::db::META_DIR;
use crate::pool::{LINKS_DIR, TEMP_PREFIX};

/// A store [`Store::open_tentatively`] opened: it derefs to the [`Store`].
/// Dropped without [`MadeStore::keep`], it removes what opening the store
/// made (nothing when the store existed), unless another process uses the
/// store by then.
#[derive(Debug)]
pub struct MadeStore {
    /// The store's directory, as given.
    pub(super) root: PathBuf,
    /// `None` only while opening, and once kept.
    pub(super) store: Option<Store>,
    /// What opening the store made; `None` when the store was there.
    pub(super) made: Option<Made>,
}

/// What [`Store::open_tentatively`] made, which a [`MadeStore`] dropped
/// unkept removes.
#[derive(Debug)]
pub(super) enum Made {
    /// The directories opening made, the topmost first (the store's
    /// directory last, when it made that).
    Directories(Vec<MadeDir>),
    /// The store, in the existing directory that was empty: what opening a
    /// store puts there ([`STORE_ENTRIES`]), the directory left as it was.
    Entries,
}

/// A directory opening a store made: its path, and which directory that
/// was (device and inode), so that a path through a symlink switched
/// since, naming another, is never taken for it.
#[derive(Debug)]
pub(super) struct MadeDir {
    path: PathBuf,
    id: (u64, u64),
}

impl MadeDir {
    /// The directory just made at `path`.
    pub(super) fn new(path: &Path) -> io::Result<MadeDir> {
        let m = fs::symlink_metadata(path)?;
        Ok(MadeDir {
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
        })
    }

    /// Whether `path` still names the directory made.
    fn is_still_there(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_dir() && (m.dev(), m.ino()) == self.id)
    }
}

/// What opening a store creates in its directory.
pub(super) const STORE_ENTRIES: [&str; 4] = [LINKS_DIR, ".locks", ".lock", META_DIR];

impl MadeStore {
    /// Keeps the store, made or not: the command succeeded.
    pub fn keep(mut self) -> Store {
        self.made = None;
        self.store.take().expect("an open store until kept")
    }

    /// Whether opening the store made its directory.
    pub fn is_new(&self) -> bool {
        matches!(self.made, Some(Made::Directories(_)))
    }
}

impl std::ops::Deref for MadeStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.store.as_ref().expect("an open store until kept")
    }
}

impl Drop for MadeStore {
    fn drop(&mut self) {
        // Closed first: its locks and database are in what is removed.
        drop(self.store.take());
        let Some(made) = self.made.take() else {
            return;
        };
        // Every process using the store holds its `.lock` shared: while
        // one does (another command that found the store made), it stays.
        let lock_path = self.root.join(".lock");
        let lock = entries::own_file(&self.root, &lock_path, entries::Access::Read).ok();
        if let Some(lock) = &lock {
            if !flock(lock, &lock_path, LockMode::TryExclusive).unwrap_or(false) {
                return;
            }
        }
        match made {
            Made::Directories(dirs) => {
                // Only what this command made, while it holds nothing
                // else: the store's directory when it holds no more than
                // what opening put there (another command may have added
                // to the store since), then each parent made, while empty
                // (a state directory beside the store, a user's files,
                // stay). Each only while its path still names the
                // directory made.
                let (store, parents) = match dirs.split_last() {
                    Some((last, parents)) if last.path == self.root => (Some(last), parents),
                    _ => (None, &dirs[..]),
                };
                if let Some(store) = store {
                    if !store.is_still_there()
                        || !remove_store_entries(&self.root)
                        || fs::remove_dir(&self.root).is_err()
                    {
                        return;
                    }
                }
                for dir in parents.iter().rev() {
                    if !dir.is_still_there() || fs::remove_dir(&dir.path).is_err() {
                        return;
                    }
                }
            }
            Made::Entries => {
                remove_store_entries(&self.root);
            }
        }
    }
}

/// Removes what opening a store put in the directory `root` (some of it
/// only, when opening failed while making it: out of inodes), when that
/// is all it holds (its pool empty) but for temporaries (`.tmp-*`: the
/// caller's own, left when it ran out of descriptors, say; no other
/// process uses the store): anything else was put there since, and the
/// store stays. The caller holds the store's lock exclusively, if it has
/// one. Whether it removed them (`root` is then as it was before).
fn remove_store_entries(root: &Path) -> bool {
    let Ok(entries) = fs::read_dir(root) else {
        return false;
    };
    let is_temporary = |name: &[u8]| name.starts_with(TEMP_PREFIX.as_bytes());
    let mut temporaries = Vec::new();
    let mut only_the_store = true;
    for e in entries.flatten() {
        let name = e.file_name();
        if is_temporary(name.as_bytes()) {
            temporaries.push(e.path());
        } else if !STORE_ENTRIES
            .iter()
            .any(|n| name.as_bytes() == n.as_bytes())
        {
            only_the_store = false;
        }
    }
    // A pool not made (opening ran out of inodes before) holds nothing.
    let pool_empty = match fs::read_dir(root.join(LINKS_DIR)) {
        Ok(mut d) => d.next().is_none(),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    };
    if !only_the_store || !pool_empty {
        return false;
    }
    let mut removed = true;
    for path in temporaries {
        removed &= remove_made(&path).is_ok();
    }
    for dir in [LINKS_DIR, ".locks", META_DIR] {
        removed &= remove_made(&root.join(dir)).is_ok();
    }
    // Last: the lock the caller holds (none when opening failed to make
    // it).
    removed & not_found_is_fine(fs::remove_file(root.join(".lock"))).is_ok()
}

/// `result`, a removal's, where what was to be removed was never made.
fn not_found_is_fine(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes the tree `path` that opening a store made, as
/// [`fruix_core::remove::remove_tree`] does; when that fails (a process out
/// of file descriptors: the opening failed for want of one, and removing a
/// tree holds one per level), again holding one descriptor at a time.
fn remove_made(path: &Path) -> io::Result<()> {
    fruix_core::remove::remove_tree(path).or_else(|_| remove_one_level_at_a_time(path))
}

/// Removes `path` and what it holds, opening one directory at a time and
/// never following a symlink: a directory's names are read (its descriptor
/// closed) before what it holds is removed.
fn remove_one_level_at_a_time(path: &Path) -> io::Result<()> {
    use rustix::fs::{Dir, Mode, OFlags};
    let names: Vec<Vec<u8>> = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Dir::new(fd)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_bytes().to_vec()))
            .filter(|n| n.as_slice() != b"." && n.as_slice() != b"..")
            .collect(),
        // Not a directory (or a symlink): unlinked itself.
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            return fs::remove_file(path);
        }
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in names {
        remove_one_level_at_a_time(&path.join(std::ffi::OsStr::from_bytes(&name)))?;
    }
    fs::remove_dir(path)
}
