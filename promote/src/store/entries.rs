//! The store's own files and directories (`.links`, `.locks`, `.lock`,
//! `.fruix/` and what it holds), made and opened without following a
//! symlink: a store directory handed over from elsewhere (a tarball, a
//! disk) can hold `.fruix -> /etc`, and fruix running as root must not
//! write its registry, locks or temporary roots there. Also the space
//! reserved for the garbage collector (`.fruix/reserved`).

use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::db::META_DIR;
use crate::error::{Error, Result};

/// The file in `STORE/.fruix` that keeps [`RESERVED_BYTES`] of disk space
/// for the garbage collector, which removes it first: on a full disk,
/// SQLite needs room to record what a collection removes. As Nix's
/// `gc-reserved-space`.
pub const RESERVED_FILE: &str = "reserved";

/// The space [`RESERVED_FILE`] keeps (Nix's default, 8 MiB).
pub const RESERVED_BYTES: u64 = 8 << 20;

/// What the store's own entry at `path` is when it is not what fruix
/// makes there (`symlink`, `directory`, `FIFO`...), or `None` when it is
/// (or is missing).
fn foreign_type(path: &Path, dir: bool) -> Option<&'static str> {
    let t = fs::symlink_metadata(path).ok()?.file_type();
    let ours = if dir { t.is_dir() } else { t.is_file() };
    (!ours).then(|| fruix_core::fsutil::file_type_name(t))
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
            expected: if dir { "directory" } else { "regular file" },
        }),
    }
}

/// Checks the store's own entries a command makes only when it needs them
/// (`.fruix/temproots`): one that is not what fruix makes there is refused
/// on opening the store, by every command alike ([`Error::StoreEntry`]),
/// not only by those that use it (a build, a collection).
pub(crate) fn check_occasional(store: &Path) -> Result<()> {
    let temp_roots = store.join(META_DIR).join(crate::temp_roots::TEMP_ROOTS_DIR);
    check(store, &temp_roots, true)
}

/// Makes the store's own directory `path` (its parent exists and was
/// checked) unless it is there, and checks that it is a directory, not a
/// symlink to one.
pub(crate) fn own_dir(store: &Path, path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check(store, path, true),
        Err(source) => Err(Error::store_write(store, "create", path, source)),
    }
}

/// How [`own_file`] opens a lock file.
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
pub(crate) fn own_file(store: &Path, path: &Path, access: Access) -> Result<File> {
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
        Ok(()) => Error::store_write(store, "open", path, source),
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

/// Makes [`RESERVED_FILE`] hold [`RESERVED_BYTES`] of allocated space
/// (not a sparse file), when the filesystem has the room; otherwise
/// removes what it could not fill. Never fails: it is a reserve.
pub(crate) fn reserve(store: &Path) {
    let path = store.join(META_DIR).join(RESERVED_FILE);
    let Ok(file) = own_file(store, &path, Access::Write) else {
        return;
    };
    let allocated = |m: &fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        m.len() == RESERVED_BYTES && m.blocks() * 512 >= RESERVED_BYTES
    };
    if file.metadata().is_ok_and(|m| allocated(&m)) {
        return;
    }
    let made = match rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::empty(),
        0,
        RESERVED_BYTES,
    ) {
        Err(rustix::io::Errno::OPNOTSUPP) => write_zeros(&file),
        other => other.map_err(std::io::Error::from),
    };
    if made.is_err() {
        drop(file);
        let _ = fs::remove_file(&path);
    }
}

/// Writes [`RESERVED_BYTES`] of zeros into `file`, from its start: a
/// reserve where `fallocate` is not supported.
fn write_zeros(mut file: &File) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    file.seek(std::io::SeekFrom::Start(0))?;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..RESERVED_BYTES / zeros.len() as u64 {
        file.write_all(&zeros)?;
    }
    file.sync_data()
}

/// Removes [`RESERVED_FILE`]: a collection's first step, for its room.
pub(crate) fn release_reserve(store: &Path) {
    let _ = fs::remove_file(store.join(META_DIR).join(RESERVED_FILE));
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

    /// What `err`, an [`Error::StoreEntry`], found and expected.
    fn found_and_expected(err: &Error) -> (&'static str, &'static str) {
        match err {
            Error::StoreEntry {
                found, expected, ..
            } => (found, expected),
            other => panic!("not a refused store entry: {other:?}"),
        }
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join(".lock");
        symlink(&target, &link).unwrap();
        let err = own_file(dir.path(), &link, Access::Write).unwrap_err();
        assert_eq!(found_and_expected(&err), ("symlink", "regular file"));
        assert!(!target.exists(), "the link was followed");
        // A dangling symlink to a directory is refused as a directory would be.
        let err = own_dir(dir.path(), &link).unwrap_err();
        assert_eq!(found_and_expected(&err), ("symlink", "directory"));
    }

    #[test]
    fn a_directory_where_a_file_belongs_is_refused_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gc.lock");
        fs::create_dir(&path).unwrap();
        let err = own_file(dir.path(), &path, Access::WriteOrRead).unwrap_err();
        assert_eq!(found_and_expected(&err), ("directory", "regular file"));
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(own_file(dir.path(), &file, Access::Read).is_ok());
        let err = own_dir(dir.path(), &file).unwrap_err();
        assert_eq!(found_and_expected(&err), ("regular file", "directory"));
    }
}
