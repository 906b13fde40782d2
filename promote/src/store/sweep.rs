//! The sweep of what killed processes left in a store: temporary objects,
//! promotions' work directories, pool temporaries, and the pool entries the
//! killed promotions' journals name that no object links.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fruix_core::error::IoContext;

use super::{remove_tree, Store, JOURNAL_FILE};
use crate::error::Result;
use crate::pool::{Journal, LINKS_DIR, TEMP_PREFIX};

impl Store {
    /// Removes what dead processes left: temporary objects, pool temporaries,
    /// and the pool entries of promotions that never finished (from their
    /// journals), unless an object links them. The caller holds the store
    /// exclusively.
    ///
    /// Every temporary goes before any pool entry is looked at: a killed
    /// promotion's half-built object links the entries its journal names,
    /// which would be kept while it is there (two links) and left unlinked
    /// once it went. So the outcome never depends on the directory's order.
    ///
    /// The pool (`.links`, the store's largest directory: an entry for
    /// every distinct content) is listed only when the store's directory
    /// held a temporary. A pool temporary is made only within a promotion,
    /// whose work directory stays in the store's directory until every
    /// pool temporary of it is gone, so a killed one leaves both; opening a
    /// store in use is then not slowed by the size of its pool. (A pool
    /// temporary left otherwise, one whose removal failed, goes with the
    /// next `store gc`.)
    pub(super) fn sweep(&self) -> Result<()> {
        let mut journaled = Vec::new();
        if self.sweep_dir(&self.root, &mut journaled)? {
            self.sweep_dir(&self.root.join(LINKS_DIR), &mut journaled)?;
        }
        journaled.sort_unstable();
        journaled.dedup();
        self.pool.remove_unlinked(&journaled);
        Ok(())
    }

    /// Removes the temporaries in `dir`, adding the keys of the journals
    /// among them to `journaled`. Whether there was any.
    fn sweep_dir(&self, dir: &Path, journaled: &mut Vec<String>) -> Result<bool> {
        let mut found = false;
        for entry in fs::read_dir(dir).with_path("read", dir)?.flatten() {
            if !entry
                .file_name()
                .as_bytes()
                .starts_with(TEMP_PREFIX.as_bytes())
            {
                continue;
            }
            found = true;
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if let Ok(keys) = Journal::read(&path.join(JOURNAL_FILE)) {
                    journaled.extend(keys);
                }
                remove_tree(&path);
            } else {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::key;

    /// How many promotions a test leaves killed: with as many half-built
    /// objects, in whatever order the directory lists them.
    const KILLED: u8 = 32;

    /// Leaves in `store` what `KILLED` promotions killed while building an
    /// object each leave: a pool entry of its own, named in its journal and
    /// linked by its half-built object. Returns the entries' keys.
    fn leave_killed_promotions(store: &Path) -> Vec<String> {
        (0..KILLED)
            .map(|n| {
                let key = key(&[n; 32], 0o444);
                let entry = store.join(LINKS_DIR).join(&key);
                fs::write(&entry, [n]).unwrap();
                let object = store.join(format!(".tmp-{n:02}-fruix-native-world-1-0"));
                fs::create_dir_all(object.join("usr/bin")).unwrap();
                fs::hard_link(&entry, object.join("usr/bin").join(n.to_string())).unwrap();
                let work = store.join(format!(".tmp-promote-1-{n}"));
                fs::create_dir(&work).unwrap();
                fs::write(work.join(JOURNAL_FILE), format!("{key}\n")).unwrap();
                key
            })
            .collect()
    }

    /// A killed promotion's pool temporary goes with its work directory at
    /// the next opening; a pool temporary with no temporary in the store's
    /// directory is not looked for there (the pool is not listed), and goes
    /// with `store gc`.
    #[test]
    fn the_pool_is_swept_only_after_a_promotion_was_killed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        drop(Store::open(&root).unwrap());
        let pool_temp = root.join(LINKS_DIR).join(".tmp-pool-1-0");
        fs::write(&pool_temp, b"half").unwrap();
        drop(Store::open(&root).unwrap());
        assert!(
            pool_temp.exists(),
            "the pool was listed with nothing killed"
        );
        fs::create_dir(root.join(".tmp-promote-1-1")).unwrap();
        drop(Store::open(&root).unwrap());
        assert!(
            !pool_temp.exists(),
            "a killed promotion's pool temporary was left"
        );
        assert!(!root.join(".tmp-promote-1-1").exists());
    }

    /// Regression: the sweep after killed promotions applied each journal
    /// when the directory listed it: one listed before the half-built
    /// object linking its entries kept them (two links), and the object
    /// went after, leaving entries no object links that `store verify`
    /// called fine. Whatever the order, every entry now goes, with every
    /// temporary.
    #[test]
    fn the_sweep_after_killed_promotions_leaves_no_unlinked_pool_entry() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        drop(Store::open(&root).unwrap());
        let keys = leave_killed_promotions(&root);
        // A published object linking one of them keeps that one.
        let kept = root.join("0000000000000000000000000000000-fruix-native-world-1-0");
        fs::create_dir(&kept).unwrap();
        fs::hard_link(root.join(LINKS_DIR).join(&keys[0]), kept.join("f")).unwrap();
        drop(Store::open(&root).unwrap());
        let mut left: Vec<String> = fs::read_dir(root.join(LINKS_DIR))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [keys[0].clone()], "unlinked pool entries left");
        let temporaries: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().as_bytes().starts_with(TEMP_PREFIX.as_bytes()))
            .map(|e| e.path())
            .collect();
        assert!(temporaries.is_empty(), "{temporaries:?}");
    }
}
