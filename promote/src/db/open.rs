//! Opening the registry: creating it, migrating its schema, switching it
//! to WAL, and refusing what is not a fruix registry or not a regular file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{
    db_error, insert, Database, Registration, BUSY_TIMEOUT, DB_FILE, META_DIR, MIGRATIONS,
    SCHEMA_VERSION,
};
use crate::error::{Error, Result};

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

/// Refuses to create the schema in a database at version 0 that is not
/// new: one with tables (not a fruix registry), or an empty one in a
/// store that had a registry (its `gc.lock`, made right after the
/// registry, is there): a truncated or deleted registry is never
/// silently rebuilt, losing its signatures and runs.
fn check_new(tx: &rusqlite::Transaction<'_>, path: &Path) -> Result<()> {
    let tables: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| db_error(path, e))?;
    let meta = path.parent().unwrap_or(Path::new("."));
    let message = if tables > 0 {
        "it has tables but no schema version: it is not a fruix registry; move it away"
    } else if meta
        .join(crate::store::GC_LOCK_FILE)
        .symlink_metadata()
        .is_ok()
    {
        "it is empty, or was missing, though this store had a registry: its signatures, registration times and promoted runs are gone. Restore it from a backup, or move the store's `.fruix` directory away (the next command registers the store's objects anew from their metadata) and run `fruix store verify`"
    } else {
        return Ok(());
    };
    Err(Error::DatabaseUnreadable {
        path: path.to_path_buf(),
        message: message.into(),
    })
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
        let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(&path, flags).map_err(|e| db_error(&path, e))?;
        let mut db = Database { conn, path };
        let created = db.setup(existing)?;
        db.persist_wal()?;
        Ok((db, created))
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
        let unreadable = |why: &str| {
            Error::DatabaseUnreadable {
            path: path.clone(),
            message: format!(
                "this user may only read it, {why}; run any fruix store command on the store once as its owner"
            ),
        }
        };
        if !path.is_file() {
            return Err(unreadable(
                "and there is none yet (the store was written before fruix kept one)",
            ));
        }
        let e = |e| db_error(&path, e);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(&path, flags).map_err(e)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(e)?;
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
        match version.cmp(&SCHEMA_VERSION) {
            std::cmp::Ordering::Equal => Ok(Database { conn, path }),
            std::cmp::Ordering::Less => Err(unreadable(&format!(
                "not migrate it from schema version {version} to this fruix's {SCHEMA_VERSION}"
            ))),
            std::cmp::Ordering::Greater => Err(Error::DatabaseUnreadable {
                path: path.clone(),
                message: format!(
                    "its schema version {version} is newer than this fruix's {SCHEMA_VERSION}; use a newer fruix"
                ),
            }),
        }
    }

    /// WAL mode, foreign keys, the busy timeout, and the schema migrated to
    /// [`SCHEMA_VERSION`]; `true` when the schema was created here.
    fn setup(&mut self, existing: impl FnOnce() -> Result<Vec<Registration>>) -> Result<bool> {
        let path = self.path.clone();
        let e = |e| db_error(&path, e);
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(e)?;
        self.conn
            .pragma_update(None, "foreign_keys", true)
            .map_err(e)?;
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(e)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(e)?;
        if version > SCHEMA_VERSION {
            // As the read-only path says it: not a corrupt store, an
            // older fruix.
            return Err(Error::DatabaseUnreadable {
                path: path.clone(),
                message: format!(
                    "its schema version {version} is newer than this fruix's {SCHEMA_VERSION}; use a newer fruix"
                ),
            });
        }
        if version == 0 {
            check_new(&tx, &path)?;
        }
        for migration in &MIGRATIONS[version as usize..] {
            tx.execute_batch(migration).map_err(e)?;
        }
        if version < SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(e)?;
        }
        if version == 0 {
            insert(&tx, &path, &existing()?)?;
        }
        tx.commit().map_err(e)?;
        self.wal()?;
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
                    if f.code == rusqlite::ErrorCode::DatabaseBusy && tries < 1000 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(err) => return Err(db_error(&self.path, err)),
            }
        }
    }
}
