//! The store's own files and directories (`.links`, `.locks`, `.lock`,
//! `.fruix/` and what it holds), made and opened without following a
//! symlink: a store directory handed over from elsewhere (a tarball, a
//! disk) can hold `.fruix -> /etc`, and fruix running as root must not
//! write its registry, locks or temporary roots there. Also the space
//! reserved for the garbage collector (`.fruix/reserved`).

use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::Store;
use crate::db::META_DIR;
use crate::error::{Error, Result};
use crate::warning::{warn, Warning};

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

/// The steps [`reserve`] grows [`RESERVED_FILE`] by: on a disk without
/// room for all of [`RESERVED_BYTES`], it keeps the steps it could make.
const RESERVE_STEP: u64 = 1 << 20;

/// Makes [`RESERVED_FILE`] hold [`RESERVED_BYTES`] of allocated space
/// (not a sparse file), growing what it holds a [`RESERVE_STEP`] at a
/// time. What it held is never removed: a partial reserve is still room
/// for the collector. When the filesystem has no room to make it whole, it
/// keeps no more than it held before or `keep` bytes (rounded up to a
/// step), whichever is more, giving the rest back: opening a store
/// (`keep` 0) never takes a nearly full disk's last room, and a collection
/// that released the reserve makes again what it released. Returns the
/// bytes it holds (0 when it cannot be opened). Never fails: it is a
/// reserve.
pub(crate) fn reserve(store: &Path, keep: u64) -> u64 {
    let path = store.join(META_DIR).join(RESERVED_FILE);
    let Ok(file) = own_file(store, &path, Access::Write) else {
        return 0;
    };
    let length = |file: &File| file.metadata().map_or(0, |m| m.len());
    if length(&file) > RESERVED_BYTES {
        let _ = file.set_len(RESERVED_BYTES);
    }
    if held(&file) < RESERVED_BYTES {
        let before = length(&file);
        grow(&file);
        if held(&file) < RESERVED_BYTES {
            let limit = before
                .max(keep.next_multiple_of(RESERVE_STEP))
                .min(RESERVED_BYTES);
            if length(&file) > limit {
                let _ = file.set_len(limit);
            }
        }
    }
    held(&file)
}

/// The bytes of allocated space `file` holds within its length.
fn held(file: &File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    file.metadata()
        .map_or(0, |m| (m.blocks() * 512).min(m.len()))
}

/// Allocates [`RESERVED_BYTES`] for `file` a [`RESERVE_STEP`] at a time
/// (what is allocated already costs nothing), stopping at the first step
/// the filesystem has no room for.
fn grow(file: &File) {
    for start in (0..RESERVED_BYTES).step_by(RESERVE_STEP as usize) {
        let step = rustix::fs::fallocate(
            file,
            rustix::fs::FallocateFlags::empty(),
            start,
            RESERVE_STEP,
        );
        match step {
            Ok(()) => {}
            Err(rustix::io::Errno::OPNOTSUPP) => return write_zeros(file),
            Err(_) => return,
        }
    }
}

/// Writes [`RESERVED_BYTES`] of zeros into `file`, from its start, a
/// [`RESERVE_STEP`] at a time, stopping at the first step that fails (what
/// was written stays): a reserve where `fallocate` is not supported.
fn write_zeros(file: &File) {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; RESERVE_STEP as usize];
    for start in (0..RESERVED_BYTES).step_by(RESERVE_STEP as usize) {
        if file
            .write_all_at(&zeros, start)
            .and_then(|()| file.sync_data())
            .is_err()
        {
            return;
        }
    }
}

/// Removes [`RESERVED_FILE`]: a collection's first step, for its room.
fn release_reserve(store: &Path) {
    let _ = fs::remove_file(store.join(META_DIR).join(RESERVED_FILE));
}

/// The store's reserved space ([`RESERVED_FILE`]), released while a
/// collection, a deletion or a repair runs (on a full disk, SQLite needs
/// that room to record what goes), and made again when it ends, as far as
/// there is room: the registry's write-ahead log, grown meanwhile, is
/// checkpointed first, to give its room back. A reserve it could not make
/// whole is said once ([`Warning::ReserveShort`]).
pub(crate) struct Reserve<'a> {
    store: &'a Store,
    /// What the reserve held when it was released.
    released: u64,
}

impl<'a> Reserve<'a> {
    /// Removes `store`'s reserve, until the guard is dropped.
    pub(crate) fn release(store: &'a Store) -> Reserve<'a> {
        let path = store.path().join(META_DIR).join(RESERVED_FILE);
        let released = fs::symlink_metadata(&path)
            .ok()
            .filter(fs::Metadata::is_file)
            .map_or(0, |m| {
                use std::os::unix::fs::MetadataExt;
                (m.blocks() * 512).min(m.len())
            });
        release_reserve(store.path());
        Reserve { store, released }
    }
}

impl Drop for Reserve<'_> {
    fn drop(&mut self) {
        // Not when this thread holds the registry (never waited for).
        if let Ok(db) = self.store.db.try_lock() {
            let _ = db.checkpoint();
        }
        let held = reserve(self.store.path(), self.released);
        if held < RESERVED_BYTES && held < self.released {
            warn(Warning::ReserveShort {
                file: self.store.path().join(META_DIR).join(RESERVED_FILE),
                held,
                wanted: RESERVED_BYTES,
            });
        }
    }
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

    /// A store directory with its `.fruix`, and the path of its reserve.
    fn reserve_in(dir: &Path) -> std::path::PathBuf {
        fs::create_dir(dir.join(META_DIR)).unwrap();
        dir.join(META_DIR).join(RESERVED_FILE)
    }

    /// The bytes `path` has allocated within its length.
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).unwrap();
        (m.blocks() * 512).min(m.len())
    }

    /// Regression: a reserve that was not whole was removed when it could
    /// not be made whole at once. It is grown in place (the same file,
    /// what it held kept), and one longer than the reserve is cut.
    #[test]
    fn a_partial_reserve_is_grown_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = reserve_in(dir.path());
        fs::write(&path, vec![7u8; 2 * RESERVE_STEP as usize]).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        assert_eq!(reserve(dir.path(), 0), RESERVED_BYTES);
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "replaced");
        assert_eq!(fs::metadata(&path).unwrap().len(), RESERVED_BYTES);
        assert_eq!(allocated(&path), RESERVED_BYTES);
        assert_eq!(fs::read(&path).unwrap()[0], 7, "what it held was rewritten");
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(RESERVED_BYTES + 1)
            .unwrap();
        assert_eq!(reserve(dir.path(), 0), RESERVED_BYTES);
        assert_eq!(fs::metadata(&path).unwrap().len(), RESERVED_BYTES);
    }

    /// Where `fallocate` is not supported, zeros written step by step make
    /// the reserve whole, over a sparse file as over a short one.
    #[test]
    fn zeros_written_make_the_reserve_where_fallocate_is_not_supported() {
        let dir = tempfile::tempdir().unwrap();
        let path = reserve_in(dir.path());
        let file = fs::File::create(&path).unwrap();
        file.set_len(RESERVED_BYTES).unwrap();
        write_zeros(&file);
        assert_eq!(fs::metadata(&path).unwrap().len(), RESERVED_BYTES);
        assert_eq!(allocated(&path), RESERVED_BYTES);
        assert_eq!(held(&file), RESERVED_BYTES);
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
