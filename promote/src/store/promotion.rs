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
            published: false,
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
    /// [`Promotion::succeed`] was called: its objects are published.
    published: bool,
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
        self.published = true;
    }

    fn remove_created_entries(&mut self) -> bool {
        self.active.take();
        let Ok(keys) = Journal::read(self.journal.path()) else {
            return false;
        };
        let pool = self.store.pool();
        // Published, with every entry it made linked by an object (another
        // promotion's too, that made the same object first): nothing to
        // remove, and no journal to leave for a sweep while the store is
        // in use.
        if keys.is_empty() || (self.published && pool.all_linked(&keys)) {
            return true;
        }
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::pool::{key, LINKS_DIR, TEMP_PREFIX};

    /// The store's temporaries (`.tmp-*`).
    fn temporaries(root: &Path) -> Vec<PathBuf> {
        fs::read_dir(root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
            .map(|e| e.path())
            .collect()
    }

    /// Regression of the matrix review: a published promotion whose
    /// journal named entries (a `source add` that found the object made
    /// meanwhile by another job) left its work directory whenever another
    /// process used the store, though an object linked every entry. It
    /// goes now; a journal naming an entry no object links still stays,
    /// for the sweep.
    #[test]
    fn a_published_promotion_leaves_no_journal_when_every_entry_is_linked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = Store::open(&root).unwrap();
        // Another holder of the store: nothing is removed exclusively.
        let _other = Store::open(&root).unwrap();
        let object = root.join("0000000000000000000000000000000-fruix-test");
        fs::create_dir(&object).unwrap();
        for (n, linked) in [(1u8, true), (2, false)] {
            let key = key(&[n; 32], 0o444);
            let entry = root.join(LINKS_DIR).join(&key);
            fs::write(&entry, [n]).unwrap();
            fs::set_permissions(&entry, fs::Permissions::from_mode(0o444)).unwrap();
            if linked {
                fs::hard_link(&entry, object.join(n.to_string())).unwrap();
            }
            let promotion = store.begin().unwrap();
            promotion.journal().record(&key).unwrap();
            let work = promotion.work_dir().to_path_buf();
            promotion.succeed(true);
            assert_eq!(work.exists(), !linked, "linked: {linked}");
            assert_eq!(temporaries(&root).len(), usize::from(!linked));
        }
    }
}
