//! A VM run's work directory beside its result root (`.NAME.vm`, NAME the
//! result root's, unique in that directory whatever the run ids: the
//! overlay disk, the console, QEMU's sockets and log), made locked so that
//! a later run in the same directory can tell one whose fruix died (SIGKILL,
//! a second Ctrl-C) from one still running, and remove it.
//!
//! The lock is an exclusive `flock` on `.lock` inside the directory, held
//! for the run's whole life by fruix itself (not inherited by the guest's
//! emulator): the kernel releases it however fruix ends. The directory is
//! made under another name (`.NAME.vm-new`) and renamed once its lock is
//! held, so a sweep never sees one whose lock is not taken yet.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fruix_core::{Error, Result};

/// The lock file inside a work directory.
const LOCK: &str = ".lock";

/// A run's work directory, locked while this lives.
#[derive(Debug)]
pub struct WorkDir {
    /// The directory (`.NAME.vm` beside the result root `NAME`).
    pub path: PathBuf,
    /// Held until the run's cleanup has removed the directory.
    _lock: File,
}

/// Makes and locks the work directory of the run whose result root is
/// `result_root`. One that exists already is an error.
pub fn create(result_root: &Path) -> Result<WorkDir> {
    let name = result_root
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let path = result_root.with_file_name(format!(".{name}.vm"));
    let staging = result_root.with_file_name(format!(".{name}.vm-new"));
    std::fs::create_dir(&staging).map_err(|e| Error::io("create", &staging, e))?;
    let locked = (|| {
        let lock_path = staging.join(LOCK);
        let lock = File::create_new(&lock_path).map_err(|e| Error::io("create", &lock_path, e))?;
        lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
        if path.symlink_metadata().is_ok() {
            return Err(Error::io(
                "create",
                &path,
                std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            ));
        }
        std::fs::rename(&staging, &path).map_err(|e| Error::io("rename", &staging, e))?;
        Ok(lock)
    })();
    match locked {
        Ok(lock) => Ok(WorkDir { path, _lock: lock }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Removes the work directories in `parent` that no running fruix holds
/// (their run's fruix was killed before its cleanup), returning them. A
/// directory without a lock file (made by an older fruix) is left alone,
/// and so is anything that is not a directory: nothing is followed.
pub fn sweep(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| is_work_dir_name(&e.file_name()) && e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|dir| {
            let lock = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(
                    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
                )
                .open(dir.join(LOCK));
            let Ok(lock) = lock else { return false };
            let stale = lock.metadata().is_ok_and(|m| m.is_file()) && lock.try_lock().is_ok();
            // Removed while its lock is held here: no other sweep takes it.
            stale && std::fs::remove_dir_all(dir).is_ok()
        })
        .collect()
}

/// Whether `name` is a work directory's (`.NAME.vm`).
fn is_work_dir_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= ".x.vm".len() && bytes.starts_with(b".") && bytes.ends_with(b".vm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_only_work_directories_nobody_holds() {
        let dir = tempfile::tempdir().unwrap();
        let root = |run: &str| dir.path().join(run);
        // A run whose fruix died: its directory and lock, nobody holding it.
        let dead = create(&root("r1")).unwrap();
        let dead_path = dead.path.clone();
        drop(dead);
        // A running one.
        let running = create(&root("r2")).unwrap();
        // One without a lock file (an older fruix), a file named like one,
        // and a symlink to a dead one's copy.
        let old = dir.path().join(".r3.vm");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(dir.path().join(".r4.vm"), "").unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join(LOCK), "").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(".r5.vm")).unwrap();
        assert_eq!(sweep(dir.path()), vec![dead_path.clone()]);
        assert!(!dead_path.exists());
        assert!(running.path.join(LOCK).is_file(), "the running one stays");
        assert!(old.is_dir() && target.join(LOCK).is_file());
        // Once its run ends, it goes too.
        let path = running.path.clone();
        drop(running);
        assert_eq!(sweep(dir.path()), vec![path]);
    }

    #[test]
    fn a_work_directory_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r1");
        let made = create(&root).unwrap();
        assert_eq!(made.path, dir.path().join(".r1.vm"));
        let e = create(&root).unwrap_err();
        assert!(e.to_string().contains(".r1.vm"), "{e}");
        assert!(!dir.path().join(".r1.vm-new").exists(), "nothing left");
    }
}
