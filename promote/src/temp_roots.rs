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
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = store.join(META_DIR).join(TEMP_ROOTS_DIR);
        crate::store::entries::own_dir(store, &store.join(META_DIR))?;
        crate::store::entries::own_dir(store, &dir)?;
        let path = dir.join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_path("create", &path)?;
        file.lock().with_path("lock", &path)?;
        Ok(TempRoots {
            path,
            file: Mutex::new(file),
        })
    }

    /// Adds object `name`. The caller holds the GC lock (shared).
    pub fn add(&self, name: &str) -> Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(file, "{name}").with_path("write", &self.path)?;
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
/// `store`; files no process holds are removed. The caller holds the GC
/// lock exclusively.
pub fn live(store: &Path) -> Result<Vec<String>> {
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
            // Nobody holds it: its process is gone.
            Ok(()) => {
                let _ = fs::remove_file(&path);
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

    #[test]
    fn a_held_file_is_live_and_a_dropped_one_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let roots = TempRoots::create(dir.path()).unwrap();
        roots.add("a").unwrap();
        roots.add("b").unwrap();
        assert_eq!(live(dir.path()).unwrap(), ["a", "b"]);
        drop(roots);
        assert!(live(dir.path()).unwrap().is_empty());
        // A file left by a dead process (nobody holds its lock) is removed.
        let stale = dir.path().join(META_DIR).join(TEMP_ROOTS_DIR).join("1-0");
        fs::write(&stale, "c\n").unwrap();
        assert!(live(dir.path()).unwrap().is_empty());
        assert!(!stale.exists());
    }
}
