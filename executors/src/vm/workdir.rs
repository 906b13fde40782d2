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
//! held and its `guest` file written, so a sweep never sees one whose lock
//! is not taken yet, nor one that does not say whose guest it held.
//!
//! The `guest` file names the run's machine, its driver and its guest
//! ([`Guest`]): a bhyve guest or an XCP-ng VM outlives a killed fruix, and
//! the sweep's caller tears it down before the directory (which holds
//! bhyve's pid file) goes.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fruix_core::promotion::is_name;
use fruix_core::{fsutil, Error, Result};

/// The lock file inside a work directory.
const LOCK: &str = ".lock";

/// The file inside a work directory naming its run's [`Guest`].
const GUEST: &str = "guest";

/// Whose guest a work directory held: written when it is made, read back
/// by a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// The VM machine of the machines file the run booted.
    pub machine: String,
    /// Its driver: `qemu`, `bhyve` or `xcp-ng`.
    pub driver: String,
    /// The guest's name (`fruix-RUN_ID-SUFFIX`, see
    /// [`super::executor::guest_name`]).
    pub name: String,
}

impl Guest {
    /// The file's text: one field a line.
    fn to_text(&self) -> String {
        format!("{}\n{}\n{}\n", self.machine, self.driver, self.name)
    }

    /// The fields of a `guest` file, each a name of at most 200 bytes of
    /// `A-Z a-z 0-9 . _ + -` (not starting with `.` or `-`); anything else
    /// is `None`. The file is in a directory others may write to, and its
    /// name reaches a driver's commands.
    fn from_text(text: &[u8]) -> Option<Guest> {
        let text = std::str::from_utf8(text).ok()?;
        let fields: Vec<&str> = text.strip_suffix('\n')?.split('\n').collect();
        let [machine, driver, name] = fields[..] else {
            return None;
        };
        let ok = |field: &str| {
            is_name(field, 200, b".-", |b| {
                b.is_ascii_alphanumeric() || b"._+-".contains(&b)
            })
        };
        (ok(machine) && ok(driver) && ok(name)).then(|| Guest {
            machine: machine.into(),
            driver: driver.into(),
            name: name.into(),
        })
    }
}

/// The work directory of a run whose fruix died, locked by the sweep that
/// found it until [`Stale::remove`] or drop.
#[derive(Debug)]
pub struct Stale {
    /// The directory.
    pub path: PathBuf,
    /// The guest it held, as its `guest` file says; `None` when that file
    /// is missing (an older fruix made the directory) or unreadable.
    pub guest: Option<Guest>,
    _lock: File,
}

impl Stale {
    /// Removes the directory, still holding its lock, so that no other
    /// sweep takes it meanwhile.
    pub fn remove(self) -> Result<PathBuf> {
        std::fs::remove_dir_all(&self.path).map_err(|e| Error::io("remove", &self.path, e))?;
        Ok(self.path)
    }
}

/// A run's work directory, locked while this lives.
#[derive(Debug)]
pub struct WorkDir {
    /// The directory (`.NAME.vm` beside the result root `NAME`).
    pub path: PathBuf,
    /// Held until the run's cleanup has removed the directory.
    _lock: File,
}

/// Makes and locks the work directory of the run whose result root is
/// `result_root`, its `guest` file naming `guest`. One that exists already
/// is an error.
pub fn create(result_root: &Path, guest: &Guest) -> Result<WorkDir> {
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
        fsutil::write_atomic(&staging.join(GUEST), guest.to_text().as_bytes())?;
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

/// The work directories in `parent` that no running fruix holds (their
/// run's fruix was killed before its cleanup), each locked until the
/// caller removes it (once its guest is torn down) or drops it. A
/// directory without a lock file is left alone, and so is anything that is
/// not a directory: nothing is followed.
pub fn sweep(parent: &Path) -> Vec<Stale> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| is_work_dir_name(&e.file_name()) && e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter_map(|dir| {
            let lock = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(
                    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
                )
                .open(dir.join(LOCK));
            let lock = lock.ok()?;
            let stale = lock.metadata().is_ok_and(|m| m.is_file()) && lock.try_lock().is_ok();
            stale.then(|| Stale {
                guest: fsutil::read_optional_regular_file(&dir.join(GUEST))
                    .ok()
                    .flatten()
                    .and_then(|text| Guest::from_text(&text)),
                path: dir,
                _lock: lock,
            })
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

    fn guest(name: &str) -> Guest {
        Guest {
            machine: "bhyve-1".into(),
            driver: "bhyve".into(),
            name: name.into(),
        }
    }

    /// The sweep's findings, removed.
    fn swept(parent: &Path) -> Vec<(PathBuf, Option<Guest>)> {
        sweep(parent)
            .into_iter()
            .map(|stale| {
                let guest = stale.guest.clone();
                (stale.remove().unwrap(), guest)
            })
            .collect()
    }

    #[test]
    fn a_sweep_finds_only_work_directories_nobody_holds() {
        let dir = tempfile::tempdir().unwrap();
        let root = |run: &str| dir.path().join(run);
        // A run whose fruix died: its directory and lock, nobody holding it.
        let dead = create(&root("r1"), &guest("fruix-r1-0123456789abcdef")).unwrap();
        let dead_path = dead.path.clone();
        drop(dead);
        // A running one.
        let running = create(&root("r2"), &guest("fruix-r2-0")).unwrap();
        // One without a lock file (an older fruix), a file named like one,
        // and a symlink to a dead one's copy.
        let old = dir.path().join(".r3.vm");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(dir.path().join(".r4.vm"), "").unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join(LOCK), "").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(".r5.vm")).unwrap();
        // Found and held: a second sweep meanwhile does not find it.
        let found = sweep(dir.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, dead_path);
        assert_eq!(found[0].guest, Some(guest("fruix-r1-0123456789abcdef")));
        assert!(sweep(dir.path()).is_empty(), "held by the first sweep");
        assert_eq!(
            found.into_iter().next().unwrap().remove().unwrap(),
            dead_path
        );
        assert!(!dead_path.exists());
        assert!(running.path.join(LOCK).is_file(), "the running one stays");
        assert!(old.is_dir() && target.join(LOCK).is_file());
        // Once its run ends, it goes too.
        let path = running.path.clone();
        drop(running);
        assert_eq!(swept(dir.path()), vec![(path, Some(guest("fruix-r2-0")))]);
    }

    /// A `guest` file that is not three names (or not a regular file) names
    /// no guest: its text would reach a driver's commands.
    #[test]
    fn a_guest_file_is_three_names_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let made = create(&dir.path().join("r1"), &guest("fruix-r1-1")).unwrap();
        let file = made.path.join(GUEST);
        drop(made);
        for (text, named) in [
            ("bhyve-1\nbhyve\nfruix-r1-1\n", true),
            ("bhyve-1\nbhyve\nfruix-r1-1", false),
            ("bhyve-1\nbhyve\n-x\n", false),
            ("bhyve-1\nbhyve\nfruix r1\n", false),
            ("bhyve-1\nbhyve\nfruix;reboot\n", false),
            ("bhyve-1\nfruix-r1-1\n", false),
            ("a\nb\nc\nd\n", false),
            ("", false),
        ] {
            std::fs::write(&file, text).unwrap();
            let found = sweep(dir.path());
            assert_eq!(found.len(), 1, "{text:?}");
            assert_eq!(found[0].guest.is_some(), named, "{text:?}");
        }
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &file).unwrap();
        assert_eq!(sweep(dir.path())[0].guest, None, "never followed");
    }

    #[test]
    fn a_work_directory_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r1");
        let made = create(&root, &guest("fruix-r1-1")).unwrap();
        assert_eq!(made.path, dir.path().join(".r1.vm"));
        assert_eq!(
            std::fs::read_to_string(made.path.join(GUEST)).unwrap(),
            "bhyve-1\nbhyve\nfruix-r1-1\n"
        );
        let e = create(&root, &guest("fruix-r1-2")).unwrap_err();
        assert!(e.to_string().contains(".r1.vm"), "{e}");
        assert!(!dir.path().join(".r1.vm-new").exists(), "nothing left");
    }
}
