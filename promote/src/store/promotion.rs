//! A promotion's hold on the store ([`Promotion`]: its work directory, its
//! journal of new pool entries, the collector's lock) and the temporary
//! directories objects are built in ([`TempObject`]).

use std::path::{Path, PathBuf};

use super::{remove_tree, Lock, Store, JOURNAL_FILE};
use crate::error::Result;
use crate::pool::Journal;

impl Store {
    /// Starts a promotion: its work directory and pool journal, holding the
    /// garbage collector's lock shared until it ends (a collection never
    /// removes the pool entries or objects it is about to link).
    pub fn begin(&self) -> Result<Promotion<'_>> {
        let gc = self.gc_lock(false)?;
        let active = Some(self.active.read().unwrap_or_else(|e| e.into_inner()));
        let work = self.temp_dir("promote")?;
        let journal = Journal::create(work.path().join(JOURNAL_FILE))?;
        Ok(Promotion {
            store: self,
            _gc: gc,
            active,
            work,
            journal,
            succeeded: false,
        })
    }
}

/// One promotion's work in the store: a work directory for its temporary
/// manifests and the journal of the pool entries it created. Dropped without
/// [`Promotion::succeed`], it removes those entries unless an object links
/// them (right away when no other process uses the store, otherwise at the
/// next sweep).
#[derive(Debug)]
pub struct Promotion<'s> {
    store: &'s Store,
    /// The garbage collector's lock, shared.
    _gc: Lock,
    /// Held while the promotion runs (see [`Store::exclusively`]).
    active: Option<std::sync::RwLockReadGuard<'s, ()>>,
    work: TempObject,
    journal: Journal,
    succeeded: bool,
}

impl<'s> Promotion<'s> {
    /// The store promoted into.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    /// The work directory.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The journal new pool entries are recorded in.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Marks the promotion as published. When `check_pool` (an artifact's
    /// object already existed, so entries created for it may be unlinked),
    /// the journal's unlinked entries are still removed.
    pub fn succeed(mut self, check_pool: bool) {
        self.succeeded = !check_pool;
    }

    fn remove_created_entries(&mut self) -> bool {
        self.active.take();
        let Ok(keys) = Journal::read(self.journal.path()) else {
            return false;
        };
        if keys.is_empty() {
            return true;
        }
        let pool = self.store.pool();
        matches!(
            self.store
                .exclusively(false, || pool.remove_unlinked(&keys)),
            Ok(Some(_))
        )
    }
}

impl Drop for Promotion<'_> {
    fn drop(&mut self) {
        if self.succeeded || self.remove_created_entries() {
            return; // the work directory goes with `self.work`
        }
        // Another process uses the store: leave the journal for the next sweep.
        self.work.path.take();
    }
}

/// A temporary directory in the store, removed on drop unless published.
#[derive(Debug)]
pub struct TempObject {
    path: Option<PathBuf>,
}

impl TempObject {
    /// The temporary directory `path`, just made; removed on drop.
    pub(super) fn new(path: PathBuf) -> TempObject {
        TempObject { path: Some(path) }
    }

    /// Its path, no longer removed on drop (it is being published).
    pub(super) fn keep(&mut self) -> PathBuf {
        self.path.take().expect("temporary object is live")
    }

    /// Where the object is being built.
    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("temporary object is live")
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            remove_tree(&path);
        }
    }
}
