//! A path given as a directory (a store, a state directory, a report
//! directory) that is not one, nor can become one: it, or a directory above
//! it, is there as something else (a regular file, a device, a symlink to
//! nothing). Told from file types and error kinds, never from messages.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use fruix_core::escape;

use crate::error::Error;

/// A path that should be a directory, or where one should be made, and
/// that cannot be: see [`not_a_directory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotADirectory {
    /// The path as given.
    pub path: PathBuf,
    /// What is in the way: `path` itself, or the first of its parents
    /// that is there.
    pub found: PathBuf,
    /// What `found` is: `regular file`, `character device`, `dangling
    /// symlink`...
    pub kind: &'static str,
}

impl fmt::Display for NotADirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a directory", escape::path(&self.path))?;
        if self.found == self.path {
            write!(f, " (it is a {})", self.kind)
        } else {
            write!(f, " ({} is a {})", escape::path(&self.found), self.kind)
        }
    }
}

/// Why `path` is no directory and cannot be made one: the nearest of it
/// and its parents that is there, when that is not a directory (symlinks
/// followed; a symlink to nothing is in the way too). `None` when the
/// nearest one there is a directory, or when what is there cannot be told
/// (no permission to look): the caller's own error says that.
pub fn not_a_directory(path: &Path) -> Option<NotADirectory> {
    let in_the_way = |found: &Path, kind| {
        Some(NotADirectory {
            path: path.to_path_buf(),
            found: found.to_path_buf(),
            kind,
        })
    };
    for found in path.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        match std::fs::metadata(found) {
            Ok(m) if m.is_dir() => return None,
            Ok(m) => return in_the_way(found, fruix_core::fsutil::file_type_name(m.file_type())),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let dangling =
                    std::fs::symlink_metadata(found).is_ok_and(|m| m.file_type().is_symlink());
                if dangling {
                    return in_the_way(found, "dangling symlink");
                }
            }
            // A parent is no directory: it is further up.
            Err(e) if e.kind() == ErrorKind::NotADirectory => {}
            Err(_) => return None,
        }
    }
    None
}

/// The error of making the store directory `root` (or a missing parent)
/// that failed with `source`: [`Error::StoreNotDirectory`] when something
/// other than a directory is in the way (`EEXIST`, `ENOTDIR`, or `ENOENT`
/// under a symlink to nothing: the user's input), else
/// [`Error::store_write`]'s error.
pub(super) fn create_error(root: &Path, source: std::io::Error) -> Error {
    let in_the_way = matches!(
        source.kind(),
        ErrorKind::AlreadyExists | ErrorKind::NotADirectory | ErrorKind::NotFound
    );
    match not_a_directory(root).filter(|_| in_the_way) {
        Some(found) => Error::StoreNotDirectory(found),
        None => Error::store_write(root, "create", root, source),
    }
}

/// The error of a store that is not there to open as it is (a command
/// that only uses an existing store): [`Error::StoreNotDirectory`] when
/// something other than a directory is there, else [`Error::NoStore`].
pub(super) fn no_store(root: &Path) -> Error {
    match not_a_directory(root) {
        Some(found) => Error::StoreNotDirectory(found),
        None => Error::NoStore {
            path: root.to_path_buf(),
        },
    }
}

/// Whether `dir` is a directory with nothing in it.
pub(super) fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// Whether a writer may make (or open) a store in `root`: it is missing,
/// not a directory (the opening then says what is in the way), or a
/// directory that holds a store ([`holds_a_store`]) or nothing but what
/// opening a store makes there (empty, or left holding a `.lock` by a
/// store taken back) and what a file system made for the store holds at
/// its root ([`FILE_SYSTEM_ENTRIES`]). Any other directory (`~`, `/tmp`, a mistyped path) is
/// [`Error::NotAStoreDirectory`], and nothing is made in it.
/// What a new file system holds at its root, which a store may be made
/// beside: `lost+found` (ext4, UFS made by some tools), `.snap` (FreeBSD's
/// `newfs` makes it on every UFS file system) and `.zfs` (ZFS with
/// `snapdir=visible`).
pub(super) const FILE_SYSTEM_ENTRIES: [&str; 3] = ["lost+found", ".snap", ".zfs"];

pub(super) fn may_hold_a_store(root: &Path) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    let ours = |name: &[u8]| {
        FILE_SYSTEM_ENTRIES
            .iter()
            .chain(super::STORE_ENTRIES.iter())
            .any(|n| n.as_bytes() == name)
    };
    if entries.flatten().all(|e| ours(e.file_name().as_bytes())) || holds_a_store(root) {
        return Ok(());
    }
    Err(Error::NotAStoreDirectory {
        path: root.to_path_buf(),
    })
}

/// Whether the directory `dir` holds a store: its `.fruix`, or (a store
/// from before the database) its `.links` or an entry named as a store
/// object. Another directory (`~`, `/tmp`, a mistyped path) is none, and
/// a command that only reads a store makes nothing there. The listing stops at the first
/// entry that shows it; an unreadable directory is left to the open, which
/// says why.
pub(super) fn holds_a_store(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().any(|e| {
            let name = e.file_name();
            name == crate::db::META_DIR
                || name == crate::pool::LINKS_DIR
                || crate::verify::is_object_name(name.as_bytes())
        }),
        Err(_) => true,
    }
}

/// Whether the directory `dir` holds a store that was never made whole
/// ([`Error::IncompleteStore`]): nothing but what opening a store makes
/// (and what a new file system holds), its pool empty, and no registry
/// (nor the collector's lock made with it: a store whose registry went is
/// refused for that), and no other process using it (one is making it).
pub(super) fn is_incomplete_store(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let meta = dir.join(crate::db::META_DIR);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let only_what_opening_makes = entries.flatten().all(|e| {
        FILE_SYSTEM_ENTRIES
            .iter()
            .chain(super::STORE_ENTRIES.iter())
            .any(|n| n.as_bytes() == e.file_name().as_bytes())
    });
    let missing = |p: &Path| {
        p.symlink_metadata()
            .is_err_and(|e| e.kind() == ErrorKind::NotFound)
    };
    let pool_empty = match std::fs::read_dir(dir.join(crate::pool::LINKS_DIR)) {
        Ok(mut pool) => pool.next().is_none(),
        Err(e) => e.kind() == ErrorKind::NotFound,
    };
    // Another process holding `.lock` is making it now.
    let lock = dir.join(".lock");
    let in_use = super::entries::own_file(dir, &lock, super::entries::Access::Read)
        .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
    only_what_opening_makes
        && pool_empty
        && missing(&meta.join(crate::db::DB_FILE))
        && missing(&meta.join(super::GC_LOCK_FILE))
        && !in_use
}
