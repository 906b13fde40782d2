//! The Fruix store on disk: immutable objects, the `.links` pool, locks and
//! temporaries.
//!
//! ```text
//! STORE/<hash>-fruix-native-<artifact>-<version>-<executor>/   artifact objects
//! STORE/<hash>-fruix-native-build-result-<version>-<executor>/ result bundles
//! STORE/.links/<sha256>-<r|x>   one inode per distinct file content and mode
//! STORE/.locks/<object>.lock    per-object locks (flock)
//! STORE/.tmp-<what>-<pid>-<n>   objects being built and promotions' work
//!                               directories (hidden, removed when stale)
//! STORE/.lock                   shared by every process using the store;
//!                               exclusive to sweep what dead ones left
//! STORE/.fruix/db.sqlite        the registry of valid objects and their
//!                               references (see [`crate::db`])
//! STORE/.fruix/gc.lock          shared by promotions, exclusive to the
//!                               garbage collector
//! STORE/.fruix/gc.turnstile     passed through on the way to gc.lock:
//!                               a waiting collection goes first
//! STORE/.fruix/temproots/PID-N  objects live processes use (see
//!                               [`crate::temp_roots`])
//! ```
//!
//! An object is built in a temporary directory inside the store, made
//! read-only with fixed timestamps, flushed to disk, and renamed into place
//! while its lock is held: it becomes visible complete or not at all.
//!
//! A promotion ([`Store::begin`]) keeps a work directory holding the journal
//! of the pool entries it created ([`crate::pool::Journal`]). When it fails,
//! those entries are removed unless an object links them; when it is killed,
//! the next process that opens the store alone removes them and the work
//! directory ([`Store::open`]).

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fruix_core::error::IoContext;

use crate::db::{Database, DB_FILE, META_DIR};
use crate::error::{Error, Result};
use crate::pool::{lock_file_name, temp_name, Pool, LINKS_DIR};
use crate::register;

mod directory;
pub(crate) mod entries;
mod layout;
mod lock;
mod made;
mod promotion;
mod sweep;

use self::directory::{
    create_error, holds_a_store, is_empty_dir, is_incomplete_store, may_hold_a_store, no_store,
};
pub use self::directory::{not_a_directory, NotADirectory};
use self::layout::text_path;
pub use self::layout::{
    disk_usage, is_source_name, remove_tree, reserved_names, set_mode, set_mtime, sync_filesystem,
    MANIFEST_FILE, OBJECT_METADATA_FILE, REFERENCES_FILE, RESERVED_NAMES, RESULT_METADATA_FILE,
    SOURCE_RESERVED_NAMES,
};
pub(crate) use self::lock::names_file;
pub(crate) use self::lock::notice as notice_lock_wait;
use self::lock::{flock, lock_noting, LockMode};
pub use self::lock::{set_lock_notice, Lock, LockWait, TURNSTILE_PATIENCE};
pub use self::made::MadeStore;
use self::made::{Made, STORE_ENTRIES};
pub use self::promotion::{Promotion, TempObject};

/// [`Error::IncompleteStore`] for the store directory `root`, named
/// absolute, as other store errors name it.
fn incomplete(root: &Path) -> Error {
    Error::IncompleteStore {
        path: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()),
    }
}

/// The garbage collector's lock file in [`META_DIR`].
pub const GC_LOCK_FILE: &str = "gc.lock";

/// The file beside [`GC_LOCK_FILE`] that makes its waits fair: a waiting
/// collection goes before the promotions that start after it (see
/// [`Store::gc_lock`]).
pub const GC_TURNSTILE_FILE: &str = "gc.turnstile";

/// Modification time of every store file, directory and symlink (as in Nix).
pub const STORE_MTIME: i64 = 1;

/// The default store.
pub const DEFAULT_STORE: &str = "/frx/store";

/// Name of a promotion's journal inside its work directory.
const JOURNAL_FILE: &str = "journal";

/// An open store directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    pool: Pool,
    /// `STORE/.lock`, held shared for the store's lifetime (blocks sweeps by
    /// others while this process may have temporaries and pool entries in use).
    lock: File,
    /// The same within this process: promotions hold it shared, and
    /// [`Store::exclusively`] takes it exclusively (flock cannot tell two
    /// threads of one process apart).
    active: std::sync::RwLock<()>,
    /// The registry of valid objects.
    db: std::sync::Mutex<Database>,
    /// Called before waiting for the garbage collector's lock.
    on_lock_wait: OnceLock<fn(LockWait, &Path)>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, and removes what
    /// killed processes left when no other process is using the store.
    /// Something else than a directory in the way (`root`, or a parent, a
    /// regular file) is [`Error::StoreNotDirectory`]; a directory that
    /// holds other things but no store, [`Error::NotAStoreDirectory`].
    pub fn open(root: &Path) -> Result<Store> {
        text_path(root)?;
        may_hold_a_store(root)?;
        fs::create_dir_all(root).map_err(|e| create_error(root, e))?;
        Self::open_at(root)
    }

    /// Opens the store at `root` as [`Store::open`] does, remembering what
    /// this made: the directories (`root` and any missing parents), or,
    /// when `root` is an empty directory, the store's entries in it. A
    /// command that then fails drops the [`MadeStore`], which removes them
    /// (unless another process uses the store by then), so a refused
    /// command leaves no new store behind. [`MadeStore::keep`] once the
    /// store holds what the command made.
    pub fn open_tentatively(root: &Path) -> Result<MadeStore> {
        text_path(root)?;
        may_hold_a_store(root)?;
        // Made one level at a time, so that a directory another process
        // made meanwhile is never taken for this one's.
        let missing: Vec<&Path> = root
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && a.symlink_metadata().is_err())
            .collect();
        let mut made = MadeStore {
            root: root.to_path_buf(),
            store: None,
            made: None,
        };
        for dir in missing.into_iter().rev() {
            match fs::create_dir(dir) {
                Ok(()) => {
                    // Which directory it made: a path through a symlink
                    // switched before the failure names another.
                    let made_dir = made::MadeDir::new(dir).map_err(|e| create_error(root, e))?;
                    match &mut made.made {
                        Some(Made::Directories(dirs)) => dirs.push(made_dir),
                        _ => made.made = Some(Made::Directories(vec![made_dir])),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(create_error(root, e)),
            }
        }
        // Through `..` after a missing parent (`new/..`), the store's
        // directory may be one that was there: it is checked as one given
        // directly is, now that it can be reached.
        may_hold_a_store(root)?;
        // Whatever is left (a dangling symlink, say) fails as in `open`.
        fs::create_dir_all(root).map_err(|e| create_error(root, e))?;
        // An empty directory given as the store gets one: it is taken back
        // as it was made, and the directory stays.
        if is_empty_dir(root) {
            made.made.get_or_insert(Made::Entries);
        }
        made.store = Some(Self::open_at(root)?);
        Ok(made)
    }

    /// Opens an existing store; a missing directory, or one that holds no
    /// store (empty, or holding neither `.fruix` nor a store object: `~`
    /// mistyped as the store), is [`Error::NoStore`], and is left as it
    /// was; anything else there, [`Error::StoreNotDirectory`]. A store a
    /// command was making when it failed or was killed (no registry, no
    /// pool entry, no object) is [`Error::IncompleteStore`], left as it is.
    pub fn open_existing(root: &Path) -> Result<Store> {
        text_path(root)?;
        match fs::metadata(root) {
            Ok(m) if m.is_dir() && holds_a_store(root) && is_incomplete_store(root) => {
                Err(incomplete(root))
            }
            Ok(m) if m.is_dir() && holds_a_store(root) => Self::open_at(root),
            _ => Err(no_store(root)),
        }
    }

    /// Opens the store in the existing directory `root`, making one there
    /// when it is empty: `store serve`, into which a client copies. A
    /// missing directory, or one that holds other things but no store, is
    /// [`Error::NoStore`]: a mistyped path makes nothing.
    pub fn open_directory(root: &Path) -> Result<Store> {
        Self::open_directory_tentatively(root).map(MadeStore::keep)
    }

    /// [`Store::open_directory`], remembering the store it made in an empty
    /// directory ([`Store::open_tentatively`]): `store serve`, whose store
    /// goes again when the session imported nothing into it.
    pub fn open_directory_tentatively(root: &Path) -> Result<MadeStore> {
        text_path(root)?;
        match fs::metadata(root) {
            Ok(m) if m.is_dir() && (is_empty_dir(root) || holds_a_store(root)) => {
                Self::open_tentatively(root)
            }
            _ => Err(no_store(root)),
        }
    }

    /// Opens an existing store to read it: as [`Store::open_existing`] when
    /// this user may write it; otherwise (the system store, as another user;
    /// a read-only file system) without writing anything: no sweep, a
    /// read-only database, locks taken on files opened to read. Writing to
    /// such a store fails. An incomplete store is refused as by
    /// [`Store::open_existing`].
    pub fn open_for_reading(root: &Path) -> Result<Store> {
        text_path(root)?;
        use rustix::fs::{access, Access};
        // What does not exist yet is made by a writer (in a store from
        // before the database).
        let may_write = |p: &Path| match access(p, Access::WRITE_OK) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => true,
            Err(_) => false,
        };
        let meta = root.join(META_DIR);
        let writable = access(root, Access::WRITE_OK).is_ok()
            && may_write(&meta)
            && may_write(&meta.join(DB_FILE));
        match fs::metadata(root) {
            Ok(m) if m.is_dir() && !holds_a_store(root) => Err(Error::NoStore {
                path: root.to_path_buf(),
            }),
            Ok(m) if m.is_dir() && is_incomplete_store(root) => Err(incomplete(root)),
            Ok(m) if m.is_dir() && writable => Self::open_at(root),
            Ok(m) if m.is_dir() => Self::open_read_only(root),
            _ => Err(no_store(root)),
        }
    }

    fn open_read_only(root: &Path) -> Result<Store> {
        let root = fs::canonicalize(root).with_path("resolve store", root)?;
        text_path(&root)?;
        let lock_path = root.join(".lock");
        let lock = entries::own_file(&root, &lock_path, entries::Access::Read)?;
        entries::check_occasional(&root)?;
        let store = Store {
            pool: Pool::open(root.join(LINKS_DIR))?,
            db: std::sync::Mutex::new(Database::open_read_only(&root)?),
            root,
            lock,
            active: std::sync::RwLock::new(()),
            on_lock_wait: OnceLock::new(),
        };
        store.share_lock()?;
        Ok(store)
    }

    fn open_at(root: &Path) -> Result<Store> {
        let root = fs::canonicalize(root).with_path("resolve store", root)?;
        text_path(&root)?;
        loop {
            if let Some(store) = Self::open_once(&root)? {
                return Ok(store);
            }
        }
    }

    /// Opens the store at `root` (canonical) as [`Store::open_at`] does, or
    /// `None` when a refused command that made the store (a [`MadeStore`]
    /// dropped) removed it meanwhile: it is made again.
    fn open_once(root: &Path) -> Result<Option<Store>> {
        // Held shared before anything else is made: a dropped `MadeStore`
        // removes the store only once it holds `.lock` alone, so never under
        // an opening past this point. One that held it while this waited
        // removed `.lock` last: this then holds a file nobody else opens.
        let lock_path = root.join(".lock");
        let lock = entries::own_file(root, &lock_path, entries::Access::Write)?;
        lock_noting(&lock, &lock_path, LockMode::Shared, || {
            lock::notice(LockWait::Repair, &lock_path)
        })?;
        if !names_file(&lock_path, &lock)? {
            return Ok(None);
        }
        for dir in [LINKS_DIR, ".locks"] {
            entries::own_dir(root, &root.join(dir))?;
        }
        let pool = Pool::open(root.join(LINKS_DIR))?;
        // A store written before the database is registered from its
        // objects when the database is created.
        let (db, _) = Database::open(root, || register::scan(root))?;
        entries::check_occasional(root)?;
        let gc_lock = root.join(META_DIR).join(GC_LOCK_FILE);
        entries::own_file(root, &gc_lock, entries::Access::Write)?;
        let turnstile = root.join(META_DIR).join(GC_TURNSTILE_FILE);
        entries::own_file(root, &turnstile, entries::Access::Write)?;
        entries::reserve(root, 0);
        let store = Store {
            root: root.to_path_buf(),
            pool,
            lock,
            active: std::sync::RwLock::new(()),
            db: std::sync::Mutex::new(db),
            on_lock_wait: OnceLock::new(),
        };
        // Alone, this process sweeps. Converting the flock is not atomic:
        // when another process holds `.lock` too, the shared hold is lost
        // until `share_lock` takes it again. A `MadeStore` dropped in that
        // instant may find the store unused and remove it (only when it
        // holds no more than opening makes, its pool empty): `.lock` then
        // names no file of this one's, and the store is opened again. (A
        // `MadeStore` that made the store's directory removes it whole:
        // opening it again then fails, as for a missing directory.)
        if flock(&store.lock, &lock_path, LockMode::TryExclusive)? {
            store.sweep()?;
        }
        store.share_lock()?;
        Ok(names_file(&lock_path, &store.lock)?.then_some(store))
    }

    /// Holds the store's `.lock` shared, waiting while another process
    /// holds it alone (a repair, [`Store::exclusively`], or another
    /// opening's sweep) as every lock wait of the store does: with a notice
    /// ([`LockWait::Repair`]), and giving up with
    /// [`fruix_core::Error::Cancelled`] once the process is interrupted.
    fn share_lock(&self) -> Result<()> {
        let path = self.root.join(".lock");
        lock_noting(&self.lock, &path, LockMode::Shared, || {
            self.notice_wait(LockWait::Repair, &path)
        })
    }

    /// The store directory (absolute).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The content pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs `f` while holding the store exclusively (no other process uses
    /// it), waiting for others when `wait`; without `wait`, returns `None`
    /// when another process holds it. The shared hold is taken back after.
    ///
    /// A wait first calls the notice set with [`Store::on_lock_wait`]
    /// ([`LockWait::Users`]), and gives up with
    /// [`fruix_core::Error::Cancelled`] once the process is interrupted
    /// ([`fruix_core::interrupt`]), as every lock wait of the store does,
    /// without running `f`. The shared hold is then taken back only if no
    /// other process holds the store exclusively (the process is ending).
    pub fn exclusively<T>(&self, wait: bool, f: impl FnOnce() -> T) -> Result<Option<T>> {
        let _in_process = if wait {
            self.active.write().unwrap_or_else(|e| e.into_inner())
        } else {
            match self.active.try_write() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
            }
        };
        let path = self.root.join(".lock");
        // Converting a flock is not atomic: when it fails, the shared hold
        // may be gone too, so it is taken again in every case.
        let got = if wait {
            lock_noting(&self.lock, &path, LockMode::Exclusive, || {
                self.notice_wait(LockWait::Users, &path)
            })
            .map(|()| true)
        } else {
            flock(&self.lock, &path, LockMode::TryExclusive)
        };
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                let _ = self.lock.try_lock_shared();
                return Err(e);
            }
        };
        let out = got.then(f);
        // Another repair may take the store between the two locks.
        self.share_lock()?;
        Ok(out)
    }

    /// Calls the notice set with [`Store::on_lock_wait`], if any.
    fn notice_wait(&self, waits_for: LockWait, lock: &Path) {
        match self.on_lock_wait.get() {
            Some(notice) => notice(waits_for, lock),
            None => lock::notice(waits_for, lock),
        }
    }

    /// The registry of valid objects (one connection per store, shared by
    /// its threads).
    pub fn db(&self) -> std::sync::MutexGuard<'_, Database> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether object `name` is valid: registered in the database.
    pub fn is_valid(&self, name: &str) -> Result<bool> {
        Ok(self.db().get(name)?.is_some())
    }

    /// Takes the garbage collector's lock: `exclusive` for a collection,
    /// shared for a promotion (which then never overlaps a collection).
    /// When it must wait for it, it first calls the notice set with
    /// [`Store::on_lock_wait`].
    ///
    /// Fairly: a collection waiting for the promotions under way goes
    /// before those that start after it ([`GC_TURNSTILE_FILE`]), so a steady
    /// stream of promotions never keeps it out.
    pub fn gc_lock(&self, exclusive: bool) -> Result<Lock> {
        let mode = match exclusive {
            true => LockMode::Exclusive,
            false => LockMode::Shared,
        };
        let path = self.root.join(META_DIR).join(GC_LOCK_FILE);
        let turnstile = self.root.join(META_DIR).join(GC_TURNSTILE_FILE);
        Lock::take_fair(&self.root, &path, &turnstile, mode, |queued| {
            // An exclusive holder is another collection: a shared lock
            // tried on a descriptor of its own says which it is.
            let held_exclusively = || {
                entries::own_file(&self.root, &path, entries::Access::Read)
                    .is_ok_and(|f| matches!(f.try_lock_shared(), Err(fs::TryLockError::WouldBlock)))
            };
            let waits_for = match (exclusive, queued) {
                (false, true) => LockWait::QueuedCollection,
                (false, false) => LockWait::Collection,
                // Behind another collection.
                (true, true) => LockWait::Collection,
                (true, false) if held_exclusively() => LockWait::Collection,
                (true, false) => LockWait::Users,
            };
            self.notice_wait(waits_for, &path);
        })
    }

    /// Sets what [`Store::gc_lock`] and [`Store::exclusively`] call before
    /// they wait (once; later calls change nothing): a command tells its
    /// user what it waits for.
    pub fn on_lock_wait(&self, notice: fn(LockWait, &Path)) {
        let _ = self.on_lock_wait.set(notice);
    }

    /// Locks object `name` exclusively, waiting for other promotions,
    /// imports and `source add`s of it; a wait first calls the notice set
    /// with [`Store::on_lock_wait`] ([`LockWait::SameObject`]).
    pub fn lock_object(&self, name: &str) -> Result<Lock> {
        let path = self.root.join(".locks").join(lock_file_name(name));
        Lock::take_noting(&self.root, &path, LockMode::Exclusive, || {
            self.notice_wait(LockWait::SameObject, &path)
        })
    }

    /// A fresh temporary directory (mode 0700) for building object `name`.
    pub fn temp_dir(&self, name: &str) -> Result<TempObject> {
        let path = self.root.join(temp_name(name));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_path("create temporary object", &path)?;
        Ok(TempObject::new(path))
    }

    /// Publishes finished temporary objects under their names, all or none
    /// failing together: each root is made read-only with a fixed timestamp,
    /// everything is flushed to disk once, then each is renamed into place.
    /// The caller holds every object's lock.
    pub fn publish(&self, temps: Vec<(TempObject, String)>) -> Result<Vec<PathBuf>> {
        for (temp, _) in &temps {
            set_mode(temp.path(), 0o555)?;
            set_mtime(temp.path())?;
        }
        if temps.is_empty() {
            return Ok(Vec::new());
        }
        sync_filesystem(&self.root)?;
        let mut published = Vec::new();
        for (mut temp, name) in temps {
            let path = temp.keep();
            let target = self.root.join(&name);
            if let Err(e) = fs::rename(&path, &target) {
                remove_tree(&path);
                // What this call published goes again: never valid.
                self.unpublish(&published);
                return Err(fruix_core::Error::io("rename into place", &target, e).into());
            }
            published.push(target);
        }
        fruix_core::fsutil::sync_dir(&self.root)?;
        Ok(published)
    }
}

#[cfg(test)]
mod tests {
    use fruix_core::testing::sorted_names as listing;

    use super::*;

    /// What opening a store puts in its directory, sorted.
    fn store_entries() -> Vec<String> {
        let mut names = STORE_ENTRIES.map(String::from).to_vec();
        names.sort();
        names
    }

    /// What each way of opening a store to write (`open`, `open_tentatively`)
    /// says of `root`, which it must refuse.
    fn writers_refusals(root: &Path) -> [Error; 2] {
        [
            Store::open(root).unwrap_err(),
            Store::open_tentatively(root).unwrap_err(),
        ]
    }

    /// A store opened tentatively in an existing empty directory left its
    /// database, pool, locks and lock file there when dropped unkept (a
    /// refused import said "the store was not changed"): they go, and the
    /// directory stays, empty; kept, they stay.
    #[test]
    fn a_store_opened_tentatively_in_an_empty_directory_goes_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let made = Store::open_tentatively(&empty).unwrap();
        assert!(!made.is_new(), "the directory was there");
        assert_eq!(listing(&empty), store_entries());
        drop(made);
        assert!(empty.is_dir());
        assert_eq!(listing(&empty), Vec::<String>::new());
        drop(Store::open_tentatively(&empty).unwrap().keep());
        assert_eq!(listing(&empty), store_entries(), "a kept store went");
    }

    /// What the process's lock notice was called for (what was waited for,
    /// and the lock), and a signal when it is.
    #[allow(clippy::type_complexity)]
    static NOTICED: (
        std::sync::Mutex<Vec<(LockWait, PathBuf)>>,
        std::sync::Condvar,
    ) = (std::sync::Mutex::new(Vec::new()), std::sync::Condvar::new());

    /// The process's lock notice in these tests: records the wait.
    fn record_notice(waits_for: LockWait, lock: &Path) {
        NOTICED
            .0
            .lock()
            .unwrap()
            .push((waits_for, lock.to_path_buf()));
        NOTICED.1.notify_all();
    }

    /// Waits (a minute at most) until the process's lock notice, set to
    /// [`record_notice`], is called for `lock`: a process is about to wait
    /// for it.
    fn wait_for_notice(lock: &Path) {
        wait_for_notice_that(|_, l| l == lock);
    }

    /// Waits (a minute at most) until the process's lock notice, set to
    /// [`record_notice`], is called for a wait `noticed` accepts; what that
    /// wait was for.
    fn wait_for_notice_that(noticed: impl Fn(LockWait, &Path) -> bool) -> (LockWait, PathBuf) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut seen = NOTICED.0.lock().unwrap();
        loop {
            if let Some(wait) = seen.iter().find(|(w, l)| noticed(*w, l)) {
                return wait.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "no such wait: {seen:?}");
            seen = NOTICED.1.wait_timeout(seen, left).unwrap().0;
        }
    }

    /// Regression: a write waiting for another process's transaction on
    /// the registry printed a line of its own, which neither the CLI's
    /// lock notice nor a library user could type or silence: it now tells
    /// the process's notice, as every lock wait of the store does.
    #[test]
    fn a_write_waiting_for_the_registry_tells_the_lock_notice() {
        set_lock_notice(record_notice);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let registry = store.db().path().to_path_buf();
        let holder = rusqlite::Connection::open(&registry).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::scope(|s| {
            let writing = s.spawn(|| store.db().unregister(&["x".to_string()]));
            let (waits_for, lock) =
                wait_for_notice_that(|_, l| l.file_name() == registry.file_name());
            holder.execute_batch("ROLLBACK").unwrap();
            writing.join().unwrap().unwrap();
            assert_eq!(waits_for, LockWait::Registry);
            assert_eq!(
                lock.canonicalize().unwrap(),
                registry.canonicalize().unwrap()
            );
        });
    }

    /// Regression: opening a store made its entries (`.links`, `.locks`,
    /// the database) before it held `.lock` shared, so a refused command
    /// that had made the store (a [`MadeStore`] dropped) could find it
    /// unused and remove it under the opening. Now nothing is made before
    /// the hold; and a store removed while the opening waited for `.lock`
    /// (its remover held it alone) is made again, `.lock` included.
    #[test]
    fn opening_a_store_holds_its_lock_before_making_anything() {
        set_lock_notice(record_notice);
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap().join("store");
        fs::create_dir(&root).unwrap();
        let lock_path = root.join(".lock");
        // A dropped `MadeStore` that found the store unused holds it alone.
        let remover = File::create(&lock_path).unwrap();
        remover.lock().unwrap();
        let opening = std::thread::spawn({
            let root = root.clone();
            move || Store::open(&root)
        });
        wait_for_notice(&lock_path);
        assert_eq!(listing(&root), [".lock"], "made before holding .lock");
        // It removes `.lock` last, then lets go.
        fs::remove_file(&lock_path).unwrap();
        drop(remover);
        let store = opening.join().unwrap().unwrap();
        assert_eq!(listing(&root), store_entries());
        let other = File::open(&lock_path).unwrap();
        assert!(
            matches!(other.try_lock(), Err(fs::TryLockError::WouldBlock)),
            "the store does not hold its .lock"
        );
        drop(store);
        other.try_lock().unwrap();
    }

    /// Regression: a promotion into a store whose path is not UTF-8 wrote
    /// its bundle's metadata with the path made lossy (U+FFFD for the odd
    /// byte): `store verify` then called the bundle corrupt (its artifacts
    /// "missing"), and `--repair` removed it; a build from a source object
    /// there was given a path that did not exist. Such a store is refused
    /// by every way of opening one, before anything is made; so is one
    /// whose path only resolves to such a path (through a symlink).
    #[test]
    fn a_store_whose_path_is_not_utf8_is_refused_and_nothing_made() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"dir\xff"));
        let root = odd.join("store");
        let refused = |e: Error, path: &Path| {
            assert!(
                matches!(&e, Error::StorePathNotText { path: p } if p == path),
                "{e:?}"
            );
            assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage);
        };
        for e in writers_refusals(&root) {
            refused(e, &root);
        }
        assert!(!odd.exists(), "made {odd:?}");
        fs::create_dir_all(&root).unwrap();
        refused(Store::open_existing(&root).unwrap_err(), &root);
        refused(Store::open_directory(&root).unwrap_err(), &root);
        refused(Store::open_for_reading(&root).unwrap_err(), &root);
        assert_eq!(listing(&root), Vec::<String>::new());
        // A UTF-8 path that resolves to it.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        let resolved = fs::canonicalize(&root).unwrap();
        refused(Store::open(&link).unwrap_err(), &resolved);
        assert_eq!(listing(&root), Vec::<String>::new());
        // UTF-8, but with a line break (or an escape): metadata refuses it.
        for odd in ["line\nbreak", "esc\u{1b}[31m"] {
            let root = dir.path().join(odd).join("store");
            for e in writers_refusals(&root) {
                assert!(
                    matches!(&e, Error::StorePathControl { path } if *path == root),
                    "{e:?}"
                );
                assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage);
            }
            assert!(!dir.path().join(odd).exists(), "made {odd:?}");
        }
    }

    /// A collection waiting for the collector's lock holds its turnstile:
    /// a shared hold taken while this process holds none waits behind it
    /// (a stream of promotions no longer keeps a collection out), but one
    /// taken while this process holds the lock shared already goes on (the
    /// collection waits for this process: waiting for it would never end;
    /// a matrix promotes under its own hold).
    #[test]
    fn a_shared_gc_hold_waits_behind_a_waiting_collection_unless_nested() {
        set_lock_notice(record_notice);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let meta = store.path().join(META_DIR);
        let first = store.gc_lock(false).unwrap();
        let collection = File::open(meta.join(GC_TURNSTILE_FILE)).unwrap();
        collection.lock().unwrap();
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let store = &store;
            s.spawn(move || tx.send(store.gc_lock(false).map(drop)));
            let nested = rx.recv_timeout(std::time::Duration::from_secs(60));
            collection.unlock().unwrap();
            nested.expect("the nested hold waited").unwrap();
        });
        drop(first);
        collection.lock().unwrap();
        std::thread::scope(|s| {
            let waiting = s.spawn(|| store.gc_lock(false).map(drop));
            wait_for_notice(&meta.join(GC_LOCK_FILE));
            assert!(
                !waiting.is_finished(),
                "it went past the waiting collection"
            );
            collection.unlock().unwrap();
            waiting.join().unwrap().unwrap();
        });
    }

    /// Regression: a writer given a directory holding other things but no
    /// store (`~`) made a store among them. Both ways of opening one to
    /// write refuse it, typed, as invalid input, and leave it as it was; a
    /// directory holding only what a new file system holds (`lost+found`,
    /// FreeBSD UFS's `.snap`, ZFS's `.zfs`) gets a store.
    #[test]
    fn a_writer_refuses_a_directory_that_holds_no_store() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        fs::create_dir(&home).unwrap();
        fs::write(home.join("notes.txt"), "mine").unwrap();
        for e in writers_refusals(&home) {
            assert!(
                matches!(&e, Error::NotAStoreDirectory { path } if *path == home),
                "{e:?}"
            );
            assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage);
        }
        assert_eq!(listing(&home), ["notes.txt"]);
        for entry in ["lost+found", ".snap", ".zfs"] {
            let mount = dir.path().join(format!("mount-{entry}"));
            fs::create_dir_all(mount.join(entry)).unwrap();
            drop(Store::open_tentatively(&mount).unwrap().keep());
            drop(Store::open(&mount).unwrap());
        }
    }

    /// What a tentative opening made stays while another process (here,
    /// another opening of the store) uses the store, or once something
    /// else is in it.
    #[test]
    fn a_store_opened_tentatively_stays_while_used_or_holding_more() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new");
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        for store in [&new, &empty] {
            let made = Store::open_tentatively(store).unwrap();
            let user = Store::open(store).unwrap();
            drop(made);
            assert_eq!(listing(store), store_entries(), "{store:?} went while used");
            drop(user);
        }
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        let made = Store::open_tentatively(&other).unwrap();
        fs::write(other.join("note"), "").unwrap();
        drop(made);
        let mut expected = store_entries();
        expected.push("note".into());
        assert_eq!(listing(&other), expected, "what was made went with more");
    }

    /// Regression: a store made in missing parents went with the topmost
    /// parent it made, whole: a state directory made beside the store
    /// since, or a user's files put there, went with it. The store goes;
    /// each parent it made only while empty, and nothing it did not make
    /// (a path through `..`) is taken for made.
    /// Regression: a store under a symlink to nothing (`link/store`) made
    /// a writer fail with exit 3, "failed to create …: No such file or
    /// directory", where a reader said what is in the way (exit 2).
    #[test]
    fn a_store_under_a_symlink_to_nothing_is_no_directory_to_a_writer_too() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("nowhere", dir.path().join("link")).unwrap();
        let root = dir.path().join("link/store");
        for e in [
            Store::open(&root).unwrap_err(),
            Store::open_tentatively(&root).map(|_| ()).unwrap_err(),
            Store::open_existing(&root).unwrap_err(),
        ] {
            assert!(
                matches!(&e, Error::StoreNotDirectory(found)
                    if found.found == dir.path().join("link") && found.kind == "dangling symlink"),
                "{e:?}"
            );
            assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage);
        }
        assert_eq!(listing(dir.path()), ["link"]);
        assert!(!dir.path().join("nowhere").exists());
    }

    #[test]
    fn a_store_made_in_missing_parents_takes_back_only_what_it_made() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("home/.local");
        let store = top.join("share/fruix/store");
        let made = Store::open_tentatively(&store).unwrap();
        fs::create_dir_all(top.join("share/fruix/state/logs")).unwrap();
        fs::write(top.join("mine"), "keep").unwrap();
        drop(made);
        assert!(store.symlink_metadata().is_err(), "the store stayed");
        assert_eq!(listing(&top.join("share/fruix")), ["state"]);
        assert_eq!(fs::read(top.join("mine")).unwrap(), b"keep");
        // Alone, what it made goes, up to the topmost directory it made.
        drop(Store::open_tentatively(&top.join("share/other/store")).unwrap());
        assert!(top.join("share/other").symlink_metadata().is_err());
        // `kept` was there: reached through `..`, it is not made.
        let kept = dir.path().join("kept");
        fs::create_dir(&kept).unwrap();
        drop(Store::open_tentatively(&dir.path().join("x/../kept/store")).unwrap());
        assert!(kept.is_dir(), "a directory that was there went");
        assert!(dir.path().join("x").symlink_metadata().is_err());
    }

    /// Regression: a store a failed command made went whole once no other
    /// process held it, with what another command had added meanwhile;
    /// and the path, through a symlink switched since, could name another
    /// directory, which went instead. A store holding more than opening
    /// put there stays, and a path no longer naming the directory made is
    /// left alone.
    #[test]
    fn a_made_store_stays_with_more_in_it_and_a_switched_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("new/store");
        let made = Store::open_tentatively(&store).unwrap();
        // Another command added to it and ended.
        fs::write(store.join(LINKS_DIR).join("entry"), "").unwrap();
        drop(made);
        assert!(
            store.join(LINKS_DIR).join("entry").exists(),
            "the store went"
        );
        // A symlink on the path switched to another directory meanwhile.
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        fs::create_dir_all(&one).unwrap();
        fs::create_dir_all(two.join("new/store")).unwrap();
        fs::write(two.join("new/store/thesis"), "mine").unwrap();
        let link = dir.path().join("current");
        std::os::unix::fs::symlink("one", &link).unwrap();
        let made = Store::open_tentatively(&link.join("new/store")).unwrap();
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("two", &link).unwrap();
        drop(made);
        assert_eq!(fs::read(two.join("new/store/thesis")).unwrap(), b"mine");
        // `new/..` reaches a directory that holds other things: refused,
        // as that directory given directly is, and `new` taken back.
        let mine = dir.path().join("mine");
        fs::create_dir(&mine).unwrap();
        fs::write(mine.join("file"), "").unwrap();
        assert!(Store::open_tentatively(&mine.join("new/..")).is_err());
        assert_eq!(listing(&mine), ["file"]);
    }
}
