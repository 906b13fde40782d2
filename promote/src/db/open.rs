//! Opening the registry: creating it, migrating its schema, switching it
//! to WAL, and refusing what is not a fruix registry or not a regular file.
//!
//! Opening reads the schema version in a read transaction, which in WAL
//! mode never waits for another process's writes: only a migration (or the
//! registry's creation) takes the write lock, and checks again under it.

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{
    altered, busy, insert, schema, Database, Registration, DB_FILE, META_DIR, MIGRATIONS, RESTORE,
    SCHEMA_VERSION,
};
use crate::error::{Error, Result};
use crate::store::GC_LOCK_FILE;

/// The size the write-ahead log is cut back to when it starts over
/// (`PRAGMA journal_size_limit`); the last connection closing leaves it
/// empty.
const WAL_SIZE_LIMIT: i64 = 4 << 20;

/// The database file of the store at `store`, once it and SQLite's files
/// beside it are checked to be regular files where they exist (never
/// symlinks: SQLite's `SQLITE_OPEN_NOFOLLOW` covers the database file
/// only, and `.fruix` is checked by the caller).
fn check_files(store: &Path) -> Result<PathBuf> {
    let path = store.join(META_DIR).join(DB_FILE);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        crate::store::entries::check(store, Path::new(&file), false)?;
    }
    Ok(path)
}

/// Whether the store whose registry is `path` had one: its `gc.lock`, made
/// right after the registry, is there.
fn had_registry(path: &Path) -> bool {
    let meta = path.parent().unwrap_or(Path::new("."));
    meta.join(GC_LOCK_FILE).symlink_metadata().is_ok()
}

/// The refusal of the registry `path`, empty or missing in a store that
/// had one ([`had_registry`]): a truncated or deleted registry is never
/// silently rebuilt, losing its signatures and runs.
fn gone(path: &Path) -> Error {
    Error::DatabaseUnreadable {
        path: path.to_path_buf(),
        message: format!(
            "it is empty, or was missing, though this store had a registry: its signatures, registration times and promoted runs are gone; {RESTORE}"
        ),
    }
}

/// Refuses to create the schema in a database at version 0 that is not
/// new: one with tables (not a fruix registry), or an empty one in a
/// store that had a registry ([`gone`]).
fn check_new(conn: &Connection, path: &Path) -> Result<()> {
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| db_error(path, e))?;
    if tables > 0 {
        return Err(Error::DatabaseUnreadable {
            path: path.to_path_buf(),
            message:
                "it has tables but no schema version: it is not a fruix registry; move it away"
                    .into(),
        });
    }
    match had_registry(path) {
        true => Err(gone(path)),
        false => Ok(()),
    }
}

/// The schema version `version` of the registry `path`, when it is one
/// this fruix knows: never negative (no fruix wrote that: it is no
/// registry), and not newer than this fruix's.
fn known_version(path: &Path, version: i64) -> Result<usize> {
    if version > SCHEMA_VERSION {
        // As an older fruix, not a corrupt store.
        return Err(Error::Version {
            of: crate::error::Versioned::Registry,
            found: version as u64,
            place: Some(path.to_path_buf()),
        });
    }
    usize::try_from(version).map_err(|_| {
        altered(
            path,
            &format!("its schema version {version} is none fruix ever writes"),
        )
    })
}

/// The schema version of the registry `path`, open on `conn` (in a
/// transaction), once its schema is checked to be the one this fruix
/// makes at that version ([`schema::check`]; at version 0, [`check_new`]).
fn examine(conn: &Connection, path: &Path) -> Result<usize> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| db_error(path, e))?;
    let version = known_version(path, version)?;
    match version {
        0 => check_new(conn, path)?,
        _ => schema::check(conn, path, version)?,
    }
    Ok(version)
}

/// A database error, naming the file; a wait for another process's
/// transaction that the process's interrupt ended ([`busy`]) is a
/// cancellation, as the store's other lock waits say it.
pub(super) fn db_error(path: &Path, e: rusqlite::Error) -> Error {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
        && fruix_core::interrupt::requested()
    {
        return fruix_core::Error::Cancelled.into();
    }
    use rusqlite::ErrorCode;
    let cannot_open = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly)
    );
    if let Some(refused) = cannot_open.then(|| open_refusal(path, true)).flatten() {
        let store = path.parent().and_then(Path::parent).unwrap_or(path);
        return Error::store_write(store, "open", path, refused);
    }
    // SQLite says "disk I/O error" for a write the file system refused
    // for want of room: the file system tells.
    if e.sqlite_error_code() == Some(ErrorCode::SystemIoFailure) && nearly_full(path) {
        let store = path.parent().and_then(Path::parent).unwrap_or(path);
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        return Error::store_write(store, "write", path, full);
    }
    Error::Database {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Whether the file system of the registry `path` has less than 1 MiB or
/// 16 inodes left for this user: room a write (its journal) may lack.
fn nearly_full(path: &Path) -> bool {
    path.parent()
        .is_some_and(|dir| fruix_core::fsutil::short_of_room(dir, 1 << 20, 16))
}

/// [`db_error`] for `e`, which SQLite met while the system's last error
/// number it saw was `errno` (`sqlite3_system_errno`): a file SQLite could
/// not open (the registry, its journal or WAL) is said as the system's
/// error, decided from that number (no space or inodes left on the device,
/// out of file descriptors or memory), which SQLite's message leaves out;
/// so is a read or write it calls a "disk I/O error" ([`io_cause`]).
pub(super) fn db_system_error(path: &Path, e: rusqlite::Error, errno: c_int) -> Error {
    let (action, cause) = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::CannotOpen) => ("open", open_cause(path, errno)),
        Some(rusqlite::ErrorCode::SystemIoFailure) => ("write", io_cause(errno)),
        _ => ("open", None),
    };
    if let Some(source) = cause {
        let store = path.parent().and_then(Path::parent).unwrap_or(path);
        return Error::store_write(store, action, path, source);
    }
    db_error(path, e)
}

/// The system's error behind a "disk I/O error" of SQLite, from the last
/// error number it saw, `errno`, when that is one a write (or the resizing
/// of its shared-memory file) meets: no space or quota left, past the file
/// size limit (`ulimit -f`), a read-only or failing device. `None` for any
/// other number, which may be left from another call.
fn io_cause(errno: c_int) -> Option<std::io::Error> {
    matches!(
        errno,
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG | libc::EIO | libc::EROFS
    )
    .then(|| std::io::Error::from_raw_os_error(errno))
}

/// Why SQLite could not open a file of the registry `path` (it, its
/// journal or WAL), from the system's last error number it saw, `errno`.
/// SQLite tries a file it failed to open for writing again to read it
/// only, so one it could not create is said missing (`ENOENT`): the
/// filesystem's free inodes and blocks then tell whether it was full
/// (`ENOSPC`). `None` when neither tells.
fn open_cause(path: &Path, errno: c_int) -> Option<std::io::Error> {
    match errno {
        0 | libc::ENOENT => {
            let dir = path.parent()?;
            let full = fruix_core::fsutil::short_of_room(dir, 1, 1);
            full.then(|| std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        errno => Some(std::io::Error::from_raw_os_error(errno)),
    }
}

/// The system's last error number SQLite saw on the connection `db`
/// (`sqlite3_system_errno`): it tells why SQLite could not open a file.
///
/// # Safety
///
/// `db` is an open connection's handle (or null), used on this thread.
unsafe fn system_errno(db: *mut rusqlite::ffi::sqlite3) -> c_int {
    match db.is_null() {
        true => 0,
        // SAFETY: as the caller promises.
        false => unsafe { rusqlite::ffi::sqlite3_system_errno(db) },
    }
}

/// The registry `path` opened with `flags`, as
/// [`Connection::open_with_flags`] opens it; when SQLite cannot, its error
/// and the system's error number it saw ([`system_errno`]), which
/// rusqlite's opening drops with the connection.
fn connect(
    path: &Path,
    flags: OpenFlags,
) -> std::result::Result<Connection, (rusqlite::Error, c_int)> {
    use rusqlite::ffi;
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| (rusqlite::Error::NulError(e), 0))?;
    let flags = flags | OpenFlags::SQLITE_OPEN_EXRESCODE;
    let mut db: *mut ffi::sqlite3 = std::ptr::null_mut();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call,
    // `db` a place for the handle; a null VFS is the default one.
    let rc =
        unsafe { ffi::sqlite3_open_v2(c_path.as_ptr(), &mut db, flags.bits(), std::ptr::null()) };
    if rc == ffi::SQLITE_OK {
        // SAFETY: `db` is the connection just opened, handed over once: the
        // `Connection` closes it.
        return unsafe { Connection::from_handle_owned(db) }.map_err(|e| (e, 0));
    }
    // SAFETY: `db` is null or the handle SQLite gave for its failure,
    // which is read here, then closed once (closing null does nothing).
    let (errno, message) = unsafe {
        let errno = system_errno(db);
        let message = match db.is_null() {
            true => None,
            false => Some(
                std::ffi::CStr::from_ptr(ffi::sqlite3_errmsg(db))
                    .to_string_lossy()
                    .into_owned(),
            ),
        };
        ffi::sqlite3_close(db);
        (errno, message)
    };
    Err((
        rusqlite::Error::SqliteFailure(ffi::Error::new(rc), message),
        errno,
    ))
}

/// Why the registry `path` cannot be opened, asked of the system once
/// SQLite could not open it (SQLite says only that it could not): this
/// user's access to it, to read and (`write`) write it (to the directory it is made in, when it is not
/// there), then an opening of it as SQLite's (the system out of file
/// descriptors or memory refuses that one too). `None` when both succeed.
fn open_refusal(path: &Path, write: bool) -> Option<std::io::Error> {
    use rustix::fs::{Access, Mode, OFlags};
    let (target, flags) = match path.symlink_metadata() {
        Ok(_) if write => (path, OFlags::RDWR),
        Ok(_) => (path, OFlags::RDONLY),
        Err(_) => (path.parent()?, OFlags::RDONLY | OFlags::DIRECTORY),
    };
    let access = match write {
        true => Access::READ_OK | Access::WRITE_OK,
        false => Access::READ_OK,
    };
    if let Err(e) = rustix::fs::access(target, access) {
        return Some(e.into());
    }
    let opened = rustix::fs::open(
        target,
        flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    );
    opened.err().map(Into::into)
}

/// Whether the filesystem of `store` is mounted read-only: nobody, its
/// owner or root, may write it there.
fn is_mounted_read_only(store: &Path) -> bool {
    rustix::fs::statvfs(store)
        .is_ok_and(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// The error of opening the registry `path` to read it only (a store this
/// user may only read), which failed with `e`: what the system says of
/// reading it when it refuses ([`open_refusal`]), else as [`db_error`].
fn db_read_error(path: &Path, e: rusqlite::Error) -> Error {
    let cannot_open = e.sqlite_error_code() == Some(rusqlite::ErrorCode::CannotOpen);
    match cannot_open.then(|| open_refusal(path, false)).flatten() {
        Some(refused) => fruix_core::Error::io("open", path, refused).into(),
        None => db_error(path, e),
    }
}

impl Database {
    /// Opens (creating and migrating as needed) the database of the store
    /// at `store`. When this call creates it, `existing` gives the objects
    /// already in the store (written before the database existed), which
    /// are registered in the same transaction: no other process ever sees
    /// the database without them. Returns it and whether it was created.
    pub fn open(
        store: &Path,
        existing: impl FnOnce() -> Result<Vec<Registration>>,
    ) -> Result<(Database, bool)> {
        let dir = store.join(META_DIR);
        crate::store::entries::own_dir(store, &dir)?;
        let path = check_files(store)?;
        // Created only in a store that never had one: a deleted registry's
        // refusal leaves no empty file behind.
        let had_one = had_registry(&path);
        let mut flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        flags.set(OpenFlags::SQLITE_OPEN_CREATE, !had_one);
        let conn = match connect(&path, flags) {
            Ok(conn) => conn,
            Err(_) if had_one && path.symlink_metadata().is_err() => return Err(gone(&path)),
            Err((e, errno)) => return Err(db_system_error(&path, e, errno)),
        };
        let mut db = Database { conn, path };
        let created = db.setup(existing).map_err(|e| db.system_error(e))?;
        db.persist_wal().map_err(|e| db.system_error(e))?;
        Ok((db, created))
    }

    /// `e`, an error of opening or writing this registry: one SQLite met
    /// on the connection (a journal or WAL it could not create, a write
    /// past the file size limit, say) is said as [`db_system_error`] says
    /// it, from the system's error number it saw.
    pub(super) fn system_error(&self, e: Error) -> Error {
        match e {
            Error::Database { path, source } => {
                // SAFETY: this open connection's handle, used on this thread.
                let errno = unsafe { system_errno(self.conn.handle()) };
                db_system_error(&path, source, errno)
            }
            other => other,
        }
    }

    /// Keeps the `-wal` and `-shm` files when the last connection closes
    /// (`SQLITE_FCNTL_PERSIST_WAL`): a user who may only read the store can
    /// open its WAL database only while they exist.
    fn persist_wal(&self) -> Result<()> {
        use rusqlite::ffi;
        let mut on: std::ffi::c_int = 1;
        // SAFETY: the handle is this open connection's, used on this
        // thread; SQLITE_FCNTL_PERSIST_WAL takes a pointer to an int, which
        // `on` is, and it outlives the call.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                self.conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_PERSIST_WAL,
                (&raw mut on).cast(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(db_error(
                &self.path,
                rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None),
            ));
        }
        // A read makes them, in a database just switched to WAL.
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map(drop)
            .map_err(|e| db_error(&self.path, e))
    }

    /// Opens the database of the store at `store` to read it only (for a
    /// store this user cannot write): nothing is created or migrated, so its
    /// schema must already be this fruix's.
    pub fn open_read_only(store: &Path) -> Result<Database> {
        crate::store::entries::check(store, &store.join(META_DIR), true)?;
        let path = check_files(store)?;
        let read_only_mount = is_mounted_read_only(store);
        let unreadable = |why: &str| {
            Error::DatabaseUnreadable {
            path: path.clone(),
            message: match read_only_mount {
                true => format!(
                    "its filesystem is mounted read-only, so fruix may only read it, {why}; mount it read-write and run any fruix store command on the store once"
                ),
                false => format!(
                    "this user may only read it, {why}; run any fruix store command on the store once as its owner"
                ),
            },
        }
        };
        // Only a registry that is not there is "none yet": one this user
        // may not reach (`.fruix` without search permission) is said as the
        // system refuses it.
        match path.symlink_metadata() {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(unreadable(
                    "and there is none yet (the store was written before fruix kept one)",
                ));
            }
            Err(e) => return Err(fruix_core::Error::io("open", &path, e).into()),
        }
        let e = |e| db_error(&path, e);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn =
            Connection::open_with_flags(&path, flags).map_err(|err| db_read_error(&path, err))?;
        busy::install(&conn, busy::Interrupt::EndsWait).map_err(e)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|err| match err.sqlite_error_code() {
                // Its -shm file is missing, and this user cannot create it.
                Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen) => {
                    unreadable(&format!(
                        "which SQLite cannot while its {DB_FILE}-shm file is missing (fruix keeps it once it has used the store)"
                    ))
                }
                _ => db_error(&path, err),
            })?;
        match known_version(&path, version)? {
            version if version == SCHEMA_VERSION as usize => {
                schema::check(&conn, &path, version)?;
                Ok(Database { conn, path })
            }
            version => Err(unreadable(&format!(
                "not migrate it from schema version {version} to this fruix's {SCHEMA_VERSION}"
            ))),
        }
    }

    /// WAL mode, foreign keys, the busy handler, and the schema checked and
    /// migrated to [`SCHEMA_VERSION`]; `true` when the schema was created
    /// here.
    fn setup(&mut self, existing: impl FnOnce() -> Result<Vec<Registration>>) -> Result<bool> {
        let path = self.path.clone();
        let e = |e| db_error(&path, e);
        busy::install(&self.conn, busy::Interrupt::EndsWait).map_err(e)?;
        self.conn
            .pragma_update(None, "foreign_keys", true)
            .map_err(e)?;
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(e)?;
        // The log is kept when the last connection closes (`persist_wal`),
        // and a log kept whole is read again whole by the next opening and
        // then grown (11 KB an object; 133 MB at 10,000): with a size
        // limit, the last connection's checkpoint truncates it to nothing,
        // and a log started over while connections are open is cut back.
        self.conn
            .pragma_update_and_check(None, "journal_size_limit", WAL_SIZE_LIMIT, |r| {
                r.get::<_, i64>(0)
            })
            .map_err(e)?;
        // Read first: most openings change nothing, and a reader does not
        // wait for another process's writes.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(e)?;
        let version = examine(&tx, &path)?;
        tx.commit().map_err(e)?;
        let created = match version < SCHEMA_VERSION as usize {
            true => self.migrate(existing)?,
            false => false,
        };
        self.wal()?;
        Ok(created)
    }

    /// Migrates the schema to [`SCHEMA_VERSION`] under the write lock,
    /// checking it again there (another process may have migrated it
    /// meanwhile); creating it, the store's `existing` objects registered,
    /// at version 0. `true` when the schema was created here.
    fn migrate(&mut self, existing: impl FnOnce() -> Result<Vec<Registration>>) -> Result<bool> {
        let path = self.path.clone();
        let e = |e| db_error(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let version = examine(&tx, &path)?;
        for migration in &MIGRATIONS[version..] {
            tx.execute_batch(migration).map_err(e)?;
        }
        if version < SCHEMA_VERSION as usize {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(e)?;
        }
        if version == 0 {
            insert(&tx, &path, &existing()?)?;
        }
        tx.commit().map_err(e)?;
        Ok(version == 0)
    }

    /// Switches to WAL mode (persistent: once one process has, every later
    /// connection is). The switch needs the database to itself, and SQLite
    /// does not wait for that, so a busy database is tried again.
    fn wal(&self) -> Result<()> {
        let mut tries = 0;
        loop {
            let mode: rusqlite::Result<String> =
                self.conn
                    .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0));
            match mode {
                Ok(_) => return Ok(()),
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::DatabaseBusy
                        && tries < 1000
                        && !fruix_core::interrupt::requested() =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(err) => return Err(db_error(&self.path, err)),
            }
        }
    }
}
