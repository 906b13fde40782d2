//! The store's own files and directories (`.links`, `.locks`, `.lock`,
//! `.fruix/` and what it holds), made and opened without following a
//! symlink: a store directory handed over from elsewhere (a tarball, a
//! disk) can hold `.fruix -> /etc`, and fruix running as root must not
//! write its registry, locks or temporary roots there.

use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// What the store's own entry at `path` is when it is not what fruix
/// makes there, or `None` when it is (or is missing): `a symlink`, `a
/// directory`, `a socket`...
fn foreign_type(path: &Path, dir: bool) -> Option<&'static str> {
    let t = fs::symlink_metadata(path).ok()?.file_type();
    let found = if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a file"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a device"
    };
    (t.is_dir() != dir || t.is_symlink()).then_some(found)
}

/// [`Error::StoreEntry`] when the store's own entry at `path` exists and
/// is not a directory (`dir`) or a regular file: a symlink is never
/// followed.
pub(crate) fn check(store: &Path, path: &Path, dir: bool) -> Result<()> {
    match foreign_type(path, dir) {
        None => Ok(()),
        Some(found) => Err(Error::StoreEntry {
            store: store.to_path_buf(),
            entry: path.to_path_buf(),
            found,
            expected: if dir { "a directory" } else { "a regular file" },
        }),
    }
}

/// Makes the store's own directory `path` (its parent exists and was
/// checked) unless it is there, and checks that it is a directory, not a
/// symlink to one.
pub(crate) fn own_dir(store: &Path, path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check(store, path, true),
        Err(source) => Err(Error::StoreNotWritable {
            store: store.to_path_buf(),
            source,
        }),
    }
}

/// How [`lock_file`] opens a lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Created when missing; this user must be able to write it.
    Write,
    /// As [`Access::Write`] when this user may write, else opened to read
    /// (a lock of a store this user only reads).
    WriteOrRead,
    /// Opened to read, never created.
    Read,
}

/// Opens the store's own file `path` to lock it, as `access` says, never
/// through a symlink (`O_NOFOLLOW`), and checked to be a regular file on
/// the descriptor.
pub(crate) fn lock_file(store: &Path, path: &Path, access: Access) -> Result<File> {
    // Non-blocking: opening a fifo planted there must not hang.
    let nofollow = (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32;
    let read = || {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(nofollow)
            .open(path)
    };
    let file = match access {
        Access::Read => read(),
        Access::Write | Access::WriteOrRead => {
            let created = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .custom_flags(nofollow)
                .open(path);
            match created {
                Err(e) if access == Access::WriteOrRead && is_read_only(&e) => read(),
                other => other,
            }
        }
    };
    let file = file.map_err(|source| match check(store, path, false) {
        Err(foreign) => foreign,
        Ok(()) if access == Access::Read => fruix_core::Error::io("open", path, source).into(),
        Ok(()) => Error::StoreNotWritable {
            store: store.to_path_buf(),
            source,
        },
    })?;
    let is_file = file
        .metadata()
        .map_err(|e| fruix_core::Error::io("stat lock", path, e))?
        .is_file();
    if !is_file {
        // A fifo or a device opened: `check` names what it is.
        check(store, path, false)?;
    }
    Ok(file)
}

/// Whether `e` says this user may not write there.
pub(crate) fn is_read_only(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join(".lock");
        symlink(&target, &link).unwrap();
        let err = lock_file(dir.path(), &link, Access::Write).unwrap_err();
        assert!(
            matches!(
                err,
                Error::StoreEntry {
                    found: "a symlink",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!target.exists(), "the link was followed");
        // A dangling symlink to a directory is refused as a directory would be.
        let err = own_dir(dir.path(), &link).unwrap_err();
        assert!(matches!(
            err,
            Error::StoreEntry {
                found: "a symlink",
                ..
            }
        ));
    }

    #[test]
    fn a_directory_where_a_file_belongs_is_refused_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gc.lock");
        fs::create_dir(&path).unwrap();
        let err = lock_file(dir.path(), &path, Access::WriteOrRead).unwrap_err();
        assert!(
            matches!(
                err,
                Error::StoreEntry {
                    found: "a directory",
                    expected: "a regular file",
                    ..
                }
            ),
            "{err:?}"
        );
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(lock_file(dir.path(), &file, Access::Read).is_ok());
        let err = own_dir(dir.path(), &file).unwrap_err();
        assert!(matches!(
            err,
            Error::StoreEntry {
                found: "a file",
                expected: "a directory",
                ..
            }
        ));
    }
}
