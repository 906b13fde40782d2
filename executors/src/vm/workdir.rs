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
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use fruix_core::promotion::is_name;
use fruix_core::{escape, fsutil, Error, Result};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::process::geteuid;

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

/// The most bytes of a `guest` file a sweep reads: three names of at
/// most 200 bytes, each ended by a newline.
const MAX_GUEST_BYTES: u64 = 3 * 201;

/// Whether `name` is one [`super::executor::guest_name`] makes:
/// `fruix-RUN_ID-SUFFIX`, RUN_ID of `A-Z a-z 0-9 . _ -`, SUFFIX 16 hex
/// digits. A sweep tears down no guest of another name.
pub fn is_guest_name(name: &str) -> bool {
    let Some((run_id, suffix)) = name
        .strip_prefix("fruix-")
        .and_then(|rest| rest.rsplit_once('-'))
    else {
        return false;
    };
    !run_id.is_empty()
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && suffix.len() == 16
        && suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a sweep found: a work directory to deal with, or one left alone.
#[derive(Debug)]
pub enum Found {
    /// A work directory of this user whose run's fruix died.
    Stale(Stale),
    /// A directory of this user named like a work directory, nobody
    /// holding it, that the sweep leaves alone (it names no guest fruix
    /// makes, or others may write to it): the caller warns about it.
    LeftAlone {
        /// The directory.
        path: PathBuf,
        /// Why it is left alone (anything read from it escaped).
        why: String,
    },
}

/// The work directory of a run whose fruix died, locked by the sweep that
/// found it until [`Stale::remove`] or drop.
#[derive(Debug)]
pub struct Stale {
    /// The directory.
    pub path: PathBuf,
    /// The guest it held, as its `guest` file says; `None` when that file
    /// is missing (an older fruix made the directory).
    pub guest: Option<Guest>,
    /// The directory as the sweep checked it: only the directory still
    /// there under its name is removed.
    dir: OwnedFd,
    _lock: File,
}

impl Stale {
    /// Removes the directory, still holding its lock, so that no other
    /// sweep takes it meanwhile; unless its name now names another one.
    pub fn remove(self) -> Result<PathBuf> {
        let inspect = |e: rustix::io::Errno| Error::io("inspect", &self.path, e.into());
        let held = rfs::fstat(&self.dir).map_err(inspect)?;
        let there = rfs::lstat(&self.path).map_err(inspect)?;
        if (there.st_dev, there.st_ino) != (held.st_dev, held.st_ino) {
            return Err(Error::io(
                "remove",
                &self.path,
                std::io::Error::other("it was replaced since it was checked"),
            ));
        }
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
/// `result_root`, its `guest` file naming `guest`; only this user may
/// write to it. One that exists already is an error.
pub fn create(result_root: &Path, guest: &Guest) -> Result<WorkDir> {
    let name = result_root
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let path = result_root.with_file_name(format!(".{name}.vm"));
    let staging = result_root.with_file_name(format!(".{name}{STAGING}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| Error::io("create", &staging, e))?;
    let locked = stage(&staging, guest).and_then(|lock| {
        if path.symlink_metadata().is_ok() {
            return Err(Error::io(
                "create",
                &path,
                std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            ));
        }
        std::fs::rename(&staging, &path).map_err(|e| Error::io("rename", &staging, e))?;
        Ok(lock)
    });
    match locked {
        Ok(lock) => Ok(WorkDir { path, _lock: lock }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// The suffix of a work directory being made (`.NAME.vm-new`).
const STAGING: &str = ".vm-new";

/// Locks the work directory being made at `staging` (just made) and
/// writes its `guest` file: what [`create`] does before it renames the
/// directory. A fruix killed meanwhile leaves it, its lock not held, for
/// a later [`sweep`] to remove (it never booted a guest).
fn stage(staging: &Path, guest: &Guest) -> Result<File> {
    let lock_path = staging.join(LOCK);
    let lock = File::create_new(&lock_path).map_err(|e| Error::io("create", &lock_path, e))?;
    lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
    fsutil::write_atomic(&staging.join(GUEST), guest.to_text().as_bytes())?;
    Ok(lock)
}

/// The work directories in `parent` that no running fruix holds (their
/// run's fruix was killed before its cleanup), each locked until the
/// caller removes it (once its guest is torn down) or drops it.
///
/// `parent` may be writable by others (a sticky `/tmp`), so only what
/// this user made is trusted: a directory named `.NAME.vm` (or
/// `.NAME.vm-new`, one whose fruix was killed while [`create`] made it,
/// once its `guest` file is written: none was booted yet), opened without
/// following a link, owned by this user, whose `.lock` is a regular file
/// of this user. Anything else is left alone unsaid (another user's, a
/// symlink, a file), and so is every directory of a `parent` that any user
/// may write to without its sticky bit (a directory's name there could be
/// swapped after it is checked). Such a directory that others may write
/// to, or whose `guest` file is not a regular file of this user naming a
/// guest fruix makes ([`is_guest_name`]), is [`Found::LeftAlone`]: its
/// guest is never torn down (nor bhyve's pid file in it read), its
/// directory never removed.
pub fn sweep(parent: &Path) -> Vec<Found> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(parent_fd) = rfs::open(parent, flags, Mode::empty()) else {
        return Vec::new();
    };
    // Others may rename entries of a directory they may write to, unless
    // it is sticky.
    let swappable = rfs::fstat(&parent_fd).map_or(true, |st| {
        let mode = Mode::from_raw_mode(st.st_mode);
        mode.contains(Mode::WOTH) && !mode.contains(Mode::SVTX)
    });
    if swappable {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name())
        .filter_map(|name| {
            let staging = work_dir_kind(&name)?;
            examine(&parent_fd, &parent.join(&name), &name, staging)
        })
        .collect()
}

/// [`sweep`]'s look at the entry `name` of `parent` (`path`), a work
/// directory being made if `staging`.
fn examine(parent: &OwnedFd, path: &Path, name: &OsStr, staging: bool) -> Option<Found> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rfs::openat(parent, name, flags, Mode::empty()).ok()?;
    let st = rfs::fstat(&dir).ok()?;
    if st.st_uid != geteuid().as_raw() {
        return None;
    }
    let left = |why: String| {
        Some(Found::LeftAlone {
            path: path.to_path_buf(),
            why,
        })
    };
    let lock = match open_own_file(&dir, LOCK) {
        Ok(Some(lock)) => lock,
        // Not a work directory of a fruix that locks them: left unsaid.
        Ok(None) => return None,
        Err(why) => return left(format!("its {LOCK} {why}")),
    };
    // Held: its run goes on.
    lock.try_lock().ok()?;
    if Mode::from_raw_mode(st.st_mode).intersects(Mode::WGRP | Mode::WOTH) {
        return left("others may write to it".into());
    }
    if staging {
        // Its `guest` file is written once its lock is held: without one,
        // its fruix may be about to take the lock (another run beside this
        // one, making its own), and it is left unsaid. With one, and the
        // lock free, its fruix was killed before it booted a guest: nothing
        // to tear down.
        return match open_own_file(&dir, GUEST) {
            Ok(Some(_)) => Some(Found::Stale(Stale {
                path: path.to_path_buf(),
                guest: None,
                dir,
                _lock: lock,
            })),
            _ => None,
        };
    }
    let guest = match open_own_file(&dir, GUEST) {
        Ok(None) => None,
        Ok(Some(file)) => {
            let mut text = Vec::new();
            if let Err(e) = file.take(MAX_GUEST_BYTES + 1).read_to_end(&mut text) {
                return left(format!("its {GUEST} file cannot be read: {e}"));
            }
            if text.len() as u64 > MAX_GUEST_BYTES {
                return left(format!("its {GUEST} file is longer than a guest's names"));
            }
            let Some(guest) = Guest::from_text(&text) else {
                return left(format!(
                    "its {GUEST} file does not name a machine, a driver and a guest"
                ));
            };
            if !is_guest_name(&guest.name) {
                return left(format!(
                    "its {GUEST} file names guest {}, not a name fruix gives a guest",
                    escape::quoted(&guest.name)
                ));
            }
            Some(guest)
        }
        Err(why) => return left(format!("its {GUEST} file {why}")),
    };
    Some(Found::Stale(Stale {
        path: path.to_path_buf(),
        guest,
        dir,
        _lock: lock,
    }))
}

/// The file `name` in `dir`, opened without following a link or blocking,
/// if it is a regular file of this user; `None` when there is none. Why
/// it is refused otherwise.
fn open_own_file(dir: &OwnedFd, name: &str) -> std::result::Result<Option<File>, String> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rfs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(format!("cannot be opened as a regular file: {e}")),
    };
    let st = rfs::fstat(&fd).map_err(|e| format!("cannot be inspected: {e}"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err("is not a regular file".into());
    }
    if st.st_uid != geteuid().as_raw() {
        return Err("belongs to another user".into());
    }
    Ok(Some(File::from(fd)))
}

/// Whether `name` is a work directory's: `Some(false)` for `.NAME.vm`,
/// `Some(true)` for one being made (`.NAME.vm-new`), else `None`.
fn work_dir_kind(name: &OsStr) -> Option<bool> {
    let bytes = name.as_bytes().strip_prefix(b".")?;
    [(".vm", false), (STAGING, true)]
        .into_iter()
        .find(|(suffix, _)| bytes.len() > suffix.len() && bytes.ends_with(suffix.as_bytes()))
        .map(|(_, staging)| staging)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: &str = "fruix-r1-0123456789abcdef";
    const R2: &str = "fruix-r2-00000000000000a0";

    fn guest(name: &str) -> Guest {
        Guest {
            machine: "bhyve-1".into(),
            driver: "bhyve".into(),
            name: name.into(),
        }
    }

    /// The stale directories among a sweep's findings; a directory left
    /// alone fails the test.
    fn stale(parent: &Path) -> Vec<Stale> {
        sweep(parent)
            .into_iter()
            .map(|found| match found {
                Found::Stale(stale) => stale,
                Found::LeftAlone { path, why } => panic!("{} left alone: {why}", path.display()),
            })
            .collect()
    }

    /// The directories a sweep leaves alone, and why.
    fn left_alone(parent: &Path) -> Vec<(PathBuf, String)> {
        sweep(parent)
            .into_iter()
            .map(|found| match found {
                Found::Stale(stale) => panic!("{} found stale", stale.path.display()),
                Found::LeftAlone { path, why } => (path, why),
            })
            .collect()
    }

    /// The sweep's findings, removed.
    fn swept(parent: &Path) -> Vec<(PathBuf, Option<Guest>)> {
        stale(parent)
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
        let dead = create(&root("r1"), &guest(R1)).unwrap();
        let dead_path = dead.path.clone();
        drop(dead);
        // A running one.
        let running = create(&root("r2"), &guest(R2)).unwrap();
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
        let found = stale(dir.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, dead_path);
        assert_eq!(found[0].guest, Some(guest(R1)));
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
        assert_eq!(swept(dir.path()), vec![(path, Some(guest(R2)))]);
    }

    /// A `guest` file that is not three names (or not a regular file, or
    /// not a guest name fruix gives) leaves its directory alone: its text
    /// would reach a driver's commands. One that is missing (an older
    /// fruix) names no guest.
    #[test]
    fn a_guest_file_is_three_names_or_its_directory_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let made = create(&dir.path().join("r1"), &guest(R1)).unwrap();
        let file = made.path.join(GUEST);
        drop(made);
        for text in [
            "bhyve-1\nbhyve\nfruix-r1-0123456789abcdef",
            "bhyve-1\nbhyve\n-x\n",
            "bhyve-1\nbhyve\nfruix r1\n",
            "bhyve-1\nbhyve\nfruix;reboot\n",
            "bhyve-1\nfruix-r1-0123456789abcdef\n",
            "a\nb\nc\nd\n",
            "",
            // Names fruix never gives a guest.
            "bhyve-1\nbhyve\nprod-db\n",
            "bhyve-1\nbhyve\nfruix-r1-1\n",
            "bhyve-1\nbhyve\nfruix--0123456789abcdef\n",
            "bhyve-1\nbhyve\nfruix-r1-0123456789ABCDEF\n",
        ] {
            std::fs::write(&file, text).unwrap();
            let left = left_alone(dir.path());
            assert_eq!(left.len(), 1, "{text:?}");
            assert_eq!(left[0].0, dir.path().join(".r1.vm"), "{text:?}");
        }
        std::fs::write(&file, "m\nqemu\nnot-a-fruix-guest\n").unwrap();
        assert!(
            left_alone(dir.path())[0]
                .1
                .ends_with("names guest \"not-a-fruix-guest\", not a name fruix gives a guest"),
            "{:?}",
            left_alone(dir.path())
        );
        std::fs::write(&file, "a\n".repeat(1000)).unwrap();
        assert!(left_alone(dir.path())[0].1.contains("longer"));
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &file).unwrap();
        assert_eq!(left_alone(dir.path()).len(), 1, "never followed");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(stale(dir.path())[0].guest, None, "an older fruix's");
    }

    #[test]
    fn only_guest_names_fruix_gives_are_guest_names() {
        for _ in 0..8 {
            let name = super::super::executor::guest_name("20260405T213444Z");
            assert!(is_guest_name(&name), "{name}");
        }
        assert!(is_guest_name(&super::super::executor::guest_name(
            "r+1 \u{e9}"
        )));
        for name in [
            "prod-db",
            "fruix-r1-1",
            "fruix-0123456789abcdef",
            "fruix-r 1-0123456789abcdef",
            "fruix-r1-0123456789abcdeff",
            "fruix-r1-0123456789abcdeg",
            "xfruix-r1-0123456789abcdef",
        ] {
            assert!(!is_guest_name(name), "{name}");
        }
    }

    /// Regression: a sweep as root took directories another user made in
    /// a shared directory (mode 1777) for stale work directories, removed
    /// them and tore down the guests they named. Only this user's own are
    /// trusted, down to their `.lock` and `guest` files.
    #[test]
    fn a_sweep_trusts_only_this_user_s_own_work_directories() {
        use std::os::unix::fs::{lchown, PermissionsExt};
        assert!(
            geteuid().is_root(),
            "this test gives files to another user: run it as root (scripts/test.sh)"
        );
        let nobody = Some(65534);
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let made = |run: &str| {
            let work = create(&dir.path().join(run), &guest(R1)).unwrap();
            let path = work.path.clone();
            drop(work);
            path
        };
        // Another user's directory, and its files.
        let theirs = made("theirs");
        for entry in [theirs.join(LOCK), theirs.join(GUEST), theirs.clone()] {
            lchown(&entry, nobody, nobody).unwrap();
        }
        assert!(sweep(dir.path()).is_empty(), "another user's: unsaid");
        // Ours, but another user's lock, or guest file.
        let lock = made("lock");
        lchown(lock.join(LOCK), nobody, nobody).unwrap();
        let guest_file = made("guest");
        lchown(guest_file.join(GUEST), nobody, nobody).unwrap();
        // Ours, but others may write to it.
        let open = made("open");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut left = left_alone(dir.path());
        left.sort();
        let expected = [
            (&guest_file, "its guest file belongs to another user"),
            (&lock, "its .lock belongs to another user"),
            (&open, "others may write to it"),
        ];
        assert_eq!(left.len(), expected.len(), "{left:?}");
        for ((path, why), (wanted, says)) in left.iter().zip(expected) {
            assert_eq!((path, why.as_str()), (wanted, says));
        }
        assert!(theirs.join(GUEST).is_file() && lock.is_dir() && open.is_dir());
        // Ours: still swept.
        for path in [&lock, &guest_file, &open] {
            std::fs::remove_dir_all(path).unwrap();
        }
        let ours = made("ours");
        assert_eq!(swept(dir.path()), vec![(ours, Some(guest(R1)))]);
        assert!(theirs.join(GUEST).is_file(), "theirs stays");
        // A parent that anyone may rename entries of is not swept at all.
        let path = made("r1");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(sweep(dir.path()).is_empty());
        assert!(path.is_dir());
    }

    #[test]
    fn a_work_directory_is_made_once_for_this_user_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r1");
        let made = create(&root, &guest(R1)).unwrap();
        assert_eq!(made.path, dir.path().join(".r1.vm"));
        assert_eq!(
            std::fs::read_to_string(made.path.join(GUEST)).unwrap(),
            format!("bhyve-1\nbhyve\n{R1}\n")
        );
        let mode = made.path.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let e = create(&root, &guest(R2)).unwrap_err();
        assert!(e.to_string().contains(".r1.vm"), "{e}");
        assert!(!dir.path().join(".r1.vm-new").exists(), "nothing left");
    }

    /// Regression: a fruix killed while it made its work directory (after
    /// locking `.NAME.vm-new`, before renaming it) left it, and every later
    /// run with that result root failed ("File exists") until it was
    /// removed by hand. The sweep removes it (it names no guest: none was
    /// booted); one being made by a running fruix stays.
    #[test]
    fn a_work_directory_a_killed_fruix_was_making_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r1");
        let staging = dir.path().join(".r1.vm-new");
        std::fs::create_dir(&staging).unwrap();
        // Regression: a sweep beside a run making its work directory, its
        // lock file made but not locked yet, took it for a killed run's and
        // removed it (the run failed: "failed to open directory").
        std::fs::write(staging.join(LOCK), "").unwrap();
        assert!(sweep(dir.path()).is_empty(), "no guest file: being made");
        std::fs::remove_file(staging.join(LOCK)).unwrap();
        let held = stage(&staging, &guest(R1)).unwrap();
        assert!(sweep(dir.path()).is_empty(), "held: being made");
        drop(held);
        create(&root, &guest(R1)).unwrap_err();
        assert_eq!(swept(dir.path()), vec![(staging.clone(), None)]);
        let made = create(&root, &guest(R1)).unwrap();
        assert_eq!(made.path, dir.path().join(".r1.vm"));
        assert!(!staging.exists());
        // Names that only look alike are not work directories.
        for name in [".vm", ".vm-new", "r2.vm-new", ".r2.vm-new2"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join(LOCK), "").unwrap();
        }
        assert!(sweep(dir.path()).is_empty());
    }

    /// A directory put in place of a stale one after the sweep checked it
    /// is not removed.
    #[test]
    fn only_the_directory_the_sweep_checked_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        drop(create(&dir.path().join("r1"), &guest(R1)).unwrap());
        let found = stale(dir.path()).pop().unwrap();
        std::fs::rename(&found.path, dir.path().join("moved")).unwrap();
        std::fs::create_dir(&found.path).unwrap();
        std::fs::write(found.path.join("precious"), "").unwrap();
        let path = found.path.clone();
        found.remove().unwrap_err();
        assert!(path.join("precious").is_file());
    }
}
