//! Temporary roots, as in Nix: objects a live process is using (the source
//! object a build reads) that no root names yet. Each process that needs
//! some keeps a file `STORE/.fruix/temproots/PID-N` of object names, locked
//! (flock) for as long as it lives. The garbage collector keeps every name
//! in a locked file; a file nobody holds was left by a dead process and is
//! removed.
//!
//! A name is added while the GC lock is held shared (in the same promotion
//! that made or found the object), so a collection either ran before (and
//! the object is made again or found) or sees the name.
//!
//! A file is made, then locked: a collection in between finds it held by
//! nobody and removes it. Locked then, it would be a file no collection
//! reads, and the names written to it would keep nothing; so, as Nix does,
//! the file is checked to be still there once locked, and made again under
//! a new name when it is not.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use fruix_core::error::IoContext;

use crate::db::META_DIR;
use crate::error::Result;

/// The directory of temporary roots in [`META_DIR`].
pub const TEMP_ROOTS_DIR: &str = "temproots";

/// This process's temporary roots in one store; removed when dropped.
#[derive(Debug)]
pub struct TempRoots {
    path: PathBuf,
    /// Held locked (exclusive) for the roots' lifetime.
    file: Mutex<File>,
}

impl TempRoots {
    /// A new, empty set of temporary roots for the store at `store`.
    pub fn create(store: &Path) -> Result<TempRoots> {
        Self::create_with(store, |_| {})
    }

    /// [`TempRoots::create`], calling `before_lock` with the path of each
    /// file it makes before locking it: where a collection may remove it.
    fn create_with(store: &Path, mut before_lock: impl FnMut(&Path)) -> Result<TempRoots> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = store.join(META_DIR).join(TEMP_ROOTS_DIR);
        crate::store::entries::own_dir(store, &store.join(META_DIR))?;
        crate::store::entries::own_dir(store, &dir)?;
        loop {
            let path = dir.join(format!(
                "{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let file = match OpenOptions::new().create_new(true).append(true).open(&path) {
                Ok(file) => file,
                // Left by a dead process that had this pid: the next name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                // A store this user may not write: [`Error::StoreNotWritable`].
                Err(e) => return Err(crate::Error::store_write(store, "create", &path, e)),
            };
            before_lock(&path);
            file.lock().with_path("lock", &path)?;
            // Removed by a collection before it was locked: made again
            // (see the module documentation).
            if crate::store::names_file(&path, &file)? {
                return Ok(TempRoots {
                    path,
                    file: Mutex::new(file),
                });
            }
        }
    }

    /// Adds object `name`. The caller holds the GC lock (shared).
    pub fn add(&self, name: &str) -> Result<()> {
        self.add_all(std::slice::from_ref(&name))
    }

    /// Adds the objects `names`, flushed to disk once. The caller holds
    /// the GC lock (shared).
    pub fn add_all(&self, names: &[impl AsRef<str>]) -> Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        for name in names {
            text.push_str(name.as_ref());
            text.push('\n');
        }
        file.write_all(text.as_bytes())
            .with_path("write", &self.path)?;
        file.sync_data().with_path("write", &self.path)?;
        Ok(())
    }
}

impl Drop for TempRoots {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The names in the temporary roots of live processes of the store at
/// `store`; files no process holds are removed when `remove_dead` (not by
/// a dry run). The caller holds the GC lock: exclusively, or shared when
/// it removes nothing.
pub fn live(store: &Path, remove_dead: bool) -> Result<Vec<String>> {
    let dir = store.join(META_DIR).join(TEMP_ROOTS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fruix_core::Error::io("read", &dir, e).into()),
    };
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        // Never through a symlink, nor blocking on a fifo: only regular
        // files are any process's roots.
        let flags = (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32;
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(&path)
        else {
            continue;
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        match file.try_lock_shared() {
            // Nobody holds it: its process is gone (or it is one that
            // `TempRoots::create` has not locked yet, and makes again).
            Ok(()) => {
                if remove_dead {
                    let _ = fs::remove_file(&path);
                }
            }
            Err(fs::TryLockError::WouldBlock) => {
                let text = std::io::read_to_string(&file).with_path("read", &path)?;
                names.extend(text.lines().map(str::to_string));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(fruix_core::Error::io("lock", &path, e).into())
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a file a dead process with this pid left (no
    /// collection ran since) made every new set of roots fail to be
    /// created. The next name is taken.
    #[test]
    fn a_name_a_dead_process_left_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let roots = dir.path().join(META_DIR).join(TEMP_ROOTS_DIR);
        std::fs::create_dir_all(&roots).unwrap();
        // More names than this test binary makes sets of roots.
        let left: Vec<PathBuf> = (0..64)
            .map(|n| roots.join(format!("{}-{n}", std::process::id())))
            .collect();
        for path in &left {
            std::fs::write(path, "stale\n").unwrap();
        }
        let made = TempRoots::create(dir.path()).unwrap();
        assert!(!left.contains(&made.path), "{}", made.path.display());
    }

    #[test]
    fn a_held_file_is_live_and_a_dropped_one_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let roots = TempRoots::create(dir.path()).unwrap();
        roots.add("a").unwrap();
        roots.add("b").unwrap();
        assert_eq!(live(dir.path(), true).unwrap(), ["a", "b"]);
        drop(roots);
        assert!(live(dir.path(), true).unwrap().is_empty());
        // A file left by a dead process (nobody holds its lock) is removed,
        // but not by a dry run.
        let stale = dir.path().join(META_DIR).join(TEMP_ROOTS_DIR).join("1-0");
        fs::write(&stale, "c\n").unwrap();
        assert!(live(dir.path(), false).unwrap().is_empty());
        assert!(stale.exists(), "a dry run removed a file");
        assert!(live(dir.path(), true).unwrap().is_empty());
        assert!(!stale.exists());
    }

    /// Regression: a collection between the making of the file and its
    /// locking removed it (nobody held it yet), and the names were then
    /// written to a file no collection reads: a build's source object was
    /// collected while the build ran. The file is made again.
    #[test]
    fn a_file_a_collection_removes_before_it_is_locked_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut removed = Vec::new();
        let roots = TempRoots::create_with(dir.path(), |path| {
            if removed.is_empty() {
                // A collection, while nobody holds the file.
                assert!(live(dir.path(), true).unwrap().is_empty());
                assert!(!path.exists(), "the collection left the file");
                removed.push(path.to_path_buf());
            }
        })
        .unwrap();
        assert_eq!(removed.len(), 1, "no collection ran");
        roots.add("source").unwrap();
        assert_eq!(live(dir.path(), true).unwrap(), ["source"]);
    }
}
