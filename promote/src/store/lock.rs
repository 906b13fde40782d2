//! The store's advisory locks (flock(2)): taking them, and waiting for
//! them in a way Ctrl-C ends ([`fruix_core::interrupt`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::ErrorKind::NotFound;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::entries;
use crate::error::Result;

/// An advisory lock (flock) released on drop.
#[derive(Debug)]
pub struct Lock {
    /// The locked file, when the hold is one of this process's shared holds
    /// of it ([`SHARED_HOLDS`]).
    shared: Option<FileId>,
    _file: File,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Before the file (a field) is closed.
        if let Some(id) = self.shared {
            let mut holds = shared_holds();
            if let Some(n) = holds.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    holds.remove(&id);
                }
            }
        }
    }
}

impl Lock {
    /// Locks the store's own file at `path` (created if needed), shared or
    /// exclusive, waiting for it, calling `busy` first when it has to wait.
    pub(super) fn take_noting(
        store: &Path,
        path: &Path,
        mode: LockMode,
        busy: impl FnOnce(),
    ) -> Result<Lock> {
        let file = entries::own_file(store, path, entries::Access::WriteOrRead)?;
        lock_noting(&file, path, mode, busy)?;
        Ok(Lock {
            shared: None,
            _file: file,
        })
    }

    /// Locks the store's own file at `path` as [`Lock::take_noting`] does,
    /// but fairly, through the file `turnstile` beside it: flock(2) queues
    /// nobody, so an exclusive holder (a collection) waiting for a steady
    /// stream of overlapping shared holders (promotions) could wait for
    /// ever. It goes through the turnstile as a writer does in a
    /// writer-preferring lock:
    ///
    /// - exclusively: the turnstile is held exclusively while the lock is
    ///   waited for, so that no shared holder starts meanwhile; those under
    ///   way end, and the exclusive hold comes next;
    /// - shared: the turnstile is held shared while the lock is taken, so
    ///   that a shared hold waits for an exclusive one already waiting.
    ///
    /// The turnstile is let go once the lock is held. A shared hold this
    /// process takes while it holds the lock shared already (a matrix
    /// promoting under its own hold, another cell) skips the turnstile:
    /// waiting there for an exclusive holder that waits for this process
    /// would never end. Nor does a shared hold wait there longer than
    /// [`TURNSTILE_PATIENCE`]: the exclusive holder may wait for a process
    /// that waits for this one (`store export | store import` on one
    /// store), and it then goes on without the turnstile. A turnstile
    /// missing in a store opened to read (made by no writer since) is done
    /// without.
    ///
    /// `busy` is called before the first wait, told whether it is at the
    /// turnstile (behind a waiting exclusive holder) or at the lock.
    pub(super) fn take_fair(
        store: &Path,
        path: &Path,
        turnstile: &Path,
        mode: LockMode,
        busy: impl FnOnce(bool),
    ) -> Result<Lock> {
        debug_assert!(mode != LockMode::TryExclusive, "a lock that waits");
        let file = entries::own_file(store, path, entries::Access::WriteOrRead)?;
        let shared = mode == LockMode::Shared;
        let id = FileId::of(&file, path)?;
        if shared {
            let mut holds = shared_holds();
            if let Some(n) = holds.get_mut(&id) {
                // No other process holds it exclusively while this one holds
                // it shared: taken at once.
                if file.try_lock_shared().is_ok() {
                    *n += 1;
                    return Ok(Lock {
                        shared: Some(id),
                        _file: file,
                    });
                }
            }
        }
        let mut busy = Some(busy);
        let mut notice = |queued: bool| {
            if let Some(busy) = busy.take() {
                busy(queued);
            }
        };
        let gate = match entries::own_file(store, turnstile, entries::Access::WriteOrRead) {
            Ok(gate) => Some(gate),
            Err(_)
                if turnstile
                    .symlink_metadata()
                    .is_err_and(|e| e.kind() == NotFound) =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(gate) = &gate {
            let patience = shared.then_some(TURNSTILE_PATIENCE);
            lock_within(gate, turnstile, mode, patience, || notice(true))?;
        }
        lock_noting(&file, path, mode, || notice(false))?;
        drop(gate);
        if shared {
            *shared_holds().entry(id).or_default() += 1;
        }
        Ok(Lock {
            shared: shared.then_some(id),
            _file: file,
        })
    }
}

/// A file's identity: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FileId(u64, u64);

impl FileId {
    fn of(file: &File, path: &Path) -> Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let meta = file
            .metadata()
            .map_err(|e| fruix_core::Error::io("stat lock", path, e))?;
        Ok(FileId(meta.dev(), meta.ino()))
    }
}

/// How many shared holds of each file [`Lock::take_fair`] took this
/// process holds.
static SHARED_HOLDS: Mutex<BTreeMap<FileId, usize>> = Mutex::new(BTreeMap::new());

fn shared_holds() -> std::sync::MutexGuard<'static, BTreeMap<FileId, usize>> {
    SHARED_HOLDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks `file` (`path`, for messages), shared or exclusive, waiting for
/// it ([`wait_for`]: interruptible), calling `busy` first when it has to
/// wait.
pub(super) fn lock_noting(
    file: &File,
    path: &Path,
    mode: LockMode,
    busy: impl FnOnce(),
) -> Result<()> {
    lock_within(file, path, mode, None, busy).map(drop)
}

/// How long a shared hold of the collector's lock waits behind a waiting
/// collection before it goes on without its turnstile (see [`Store::gc_lock`](super::Store::gc_lock)).
pub const TURNSTILE_PATIENCE: Duration = Duration::from_secs(5);

/// [`lock_noting`], giving up after `patience` (when given): whether it
/// locked `file`.
fn lock_within(
    file: &File,
    path: &Path,
    mode: LockMode,
    patience: Option<Duration>,
    busy: impl FnOnce(),
) -> Result<bool> {
    debug_assert!(mode != LockMode::TryExclusive, "a lock that waits");
    match try_lock(file, mode) {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => {
            busy();
            wait_for(file, path, mode, patience.map(|p| Instant::now() + p))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(fruix_core::Error::io("lock", path, e).into()),
    }
}

/// Tries to lock `file` (`mode`) at once.
fn try_lock(file: &File, mode: LockMode) -> std::result::Result<(), std::fs::TryLockError> {
    match mode {
        LockMode::Shared => file.try_lock_shared(),
        LockMode::Exclusive | LockMode::TryExclusive => file.try_lock(),
    }
}

/// How often a wait for a lock another process holds looks again.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Waits until `file` is locked (`mode`), giving up with
/// [`fruix_core::Error::Cancelled`] once the process is interrupted
/// ([`fruix_core::interrupt`]): a blocking flock(2) cannot be woken by
/// the signal thread, so the lock is tried again every [`LOCK_POLL`].
/// `false` once `until` has passed without it.
fn wait_for(file: &File, path: &Path, mode: LockMode, until: Option<Instant>) -> Result<bool> {
    loop {
        if fruix_core::interrupt::requested() {
            return Err(fruix_core::Error::Cancelled.into());
        }
        match try_lock(file, mode) {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock)
                if until.is_some_and(|u| Instant::now() >= u) =>
            {
                return Ok(false)
            }
            Err(std::fs::TryLockError::WouldBlock) => std::thread::sleep(LOCK_POLL),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(fruix_core::Error::io("lock", path, e).into())
            }
        }
    }
}

/// Whether `path` names `file` still (the same device and inode; a symlink
/// there is another file): a lock taken on a file that another process
/// removed meanwhile locks nothing anyone else opens, and must be taken
/// again on a new file (as Nix checks its temporary roots' file).
pub(crate) fn names_file(path: &Path, file: &File) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file
        .metadata()
        .map_err(|e| fruix_core::Error::io("stat", path, e))?;
    match std::fs::symlink_metadata(path) {
        Ok(named) => Ok(named.dev() == held.dev() && named.ino() == held.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(fruix_core::Error::io("stat", path, e).into()),
    }
}

/// What a process waits for when a lock of the store is held (the garbage
/// collector's, [`GC_LOCK_FILE`](super::GC_LOCK_FILE), the store's own
/// `.lock`, or an object's): a notice for the user, who may otherwise take
/// the wait for a hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Opening the store waits for another process holding it alone to
    /// end: a repair (`store verify --repair`,
    /// [`Store::exclusively`](super::Store::exclusively)), or another
    /// process's opening of the store sweeping what killed processes left
    /// ([`Store::open`](super::Store::open)).
    Repair,
    /// A promotion, import or export, or another collection, waits for a
    /// collection (or a `store delete`) to end.
    Collection,
    /// A promotion, import, export or verification waits behind a
    /// collection (or a `store delete`) that waits for the store's users:
    /// the waits are fair, so it goes first, unless it has not within
    /// [`TURNSTILE_PATIENCE`].
    QueuedCollection,
    /// A collection (or a `store delete`) waits for the promotions, imports
    /// and exports under way to end; a repair
    /// ([`Store::exclusively`](super::Store::exclusively)), for every other
    /// process using the store.
    Users,
    /// A promotion, import or `source add` waits for another one making
    /// the same object ([`Store::lock_object`](super::Store::lock_object))
    /// to end.
    SameObject,
    /// A command waits for another process's transaction on the store's
    /// registry (its SQLite database) to end, at most
    /// [`BUSY_TIMEOUT`](crate::db::BUSY_TIMEOUT).
    Registry,
}

/// The notice of every store of the process, unless a store has its own.
static NOTICE: OnceLock<fn(LockWait, &Path)> = OnceLock::new();

/// Sets, for the whole process and once (later calls change nothing), what
/// a store calls before it waits for one of its locks, opening included: a
/// command tells its user what it waits for. A store's own
/// [`Store::on_lock_wait`](super::Store::on_lock_wait) takes precedence.
pub fn set_lock_notice(notice: fn(LockWait, &Path)) {
    let _ = NOTICE.set(notice);
}

/// Calls the process's notice ([`set_lock_notice`]), if any.
pub(crate) fn notice(waits_for: LockWait, lock: &Path) {
    if let Some(notice) = NOTICE.get() {
        notice(waits_for, lock);
    }
}

/// How [`flock`] locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LockMode {
    Shared,
    Exclusive,
    /// Exclusive if no one else holds the file, without waiting.
    TryExclusive,
}

/// Locks `file` (std's `File::lock` family, flock(2) on Unix); `false` when
/// [`LockMode::TryExclusive`] found it held.
pub(super) fn flock(file: &File, path: &Path, mode: LockMode) -> Result<bool> {
    let locked = match mode {
        LockMode::Shared => file.lock_shared(),
        LockMode::Exclusive => file.lock(),
        LockMode::TryExclusive => match file.try_lock() {
            Ok(()) => Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        },
    };
    locked
        .map(|()| true)
        .map_err(|e| fruix_core::Error::io("lock", path, e).into())
}
