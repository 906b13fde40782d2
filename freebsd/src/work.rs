//! The work directory of a build: where it is, and what is in it (the object
//! tree and the install trees, make's `MAKEOBJDIRPREFIX` and `DESTDIR`s).

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fruix_core::dir::entries;
use fruix_core::error::IoContext;
use fruix_core::{escape, Error, Result};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::process::geteuid;
use sha2::{Digest, Sha256};

use crate::tree::remove_tree;

/// `MAKEOBJDIRPREFIX`, inside the work directory.
pub const OBJ_DIR: &str = "obj";
/// `DESTDIR` of `installworld` and `distribution`, inside the work directory.
pub const WORLD_DESTDIR: &str = "world";
/// `DESTDIR` of `installkernel`, inside the work directory.
pub const KERNEL_DESTDIR: &str = "kernel";

/// The directories a work directory starts with.
pub const WORK_SUBDIRS: [&str; 3] = [OBJ_DIR, WORLD_DESTDIR, KERNEL_DESTDIR];

/// What a fast exit (a second Ctrl-C) calls a build's work directory that
/// it leaves behind ([`fruix_core::at_exit`]).
pub const WORK_DIR_AT_EXIT: &str = "the build's work directory";

/// Where the work directory of the run into `result_root` goes.
///
/// With no `parent`, next to the result root: `RESULT_ROOT.work` (same
/// filesystem, so installed trees move into the result root by rename). With
/// a `parent`, `PARENT/RUN-ID-HASH`, where HASH is the first 12 hex digits of
/// the SHA-256 of the result root's canonical path: one directory per result
/// root, so runs never share one. The result root must exist.
pub fn work_dir_for(result_root: &Path, run_id: &str, parent: Option<&Path>) -> Result<PathBuf> {
    let root = std::fs::canonicalize(result_root).with_path("resolve result root", result_root)?;
    let name = root
        .file_name()
        .ok_or_else(|| Error::InvalidRequest {
            message: format!(
                "result root {} has no name to derive a work directory from",
                root.display()
            ),
        })?
        .to_owned();
    Ok(match parent {
        None => {
            let mut work = name;
            work.push(".work");
            root.with_file_name(work)
        }
        Some(parent) => {
            let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
            parent.join(format!("{run_id}-{}", &hex::encode(digest)[..12]))
        }
    })
}

/// The file fruix makes first in every work directory it creates, and
/// looks for before it removes one. A directory at a work directory's path
/// without it (a user's `RESULT_ROOT.work`) is never removed: fruix cannot
/// tell it is its own.
pub const WORK_MARKER: &str = ".fruix-work";

/// Makes `work` a fresh work directory holding [`WORK_SUBDIRS`]
/// ([`create_work_dir`]). Blocking.
pub fn prepare_work_dir(work: &Path) -> Result<()> {
    create_work_dir(work)?;
    for sub in WORK_SUBDIRS {
        let dir = work.join(sub);
        std::fs::create_dir_all(&dir).with_path("create work directory", &dir)?;
    }
    Ok(())
}

/// Makes `work` a fresh, empty work directory holding only its
/// [`WORK_MARKER`], written before anything else. What is already there is
/// replaced when it is fruix's own (a killed run's leftover: marked, or an
/// empty directory); anything else (a directory of the user's, a symlink, a
/// file) is left as it is and refused with [`Error::InvalidRequest`] naming
/// the path and what to do. Blocking.
pub fn create_work_dir(work: &Path) -> Result<()> {
    match examine(work)? {
        Found::Absent => {}
        Found::Own(id) => remove_own(work, id)?,
        Found::Foreign(why) => {
            return Err(Error::InvalidRequest {
                message: format!(
                    "work directory {} {why}: fruix did not make it (the work directories it makes hold {WORK_MARKER}), and it never removes what it cannot tell is its own; move it away, or give another --result-root",
                    escape::path(work)
                ),
            })
        }
    }
    if let Some(parent) = work.parent() {
        std::fs::create_dir_all(parent).with_path("create", parent)?;
    }
    std::fs::create_dir(work).with_path("create work directory", work)?;
    let marker = work.join(WORK_MARKER);
    let marked = std::fs::File::create_new(&marker)
        .and_then(|mut f| f.write_all(b"a work directory of fruix, removed after its run\n"));
    if let Err(e) = marked {
        let _ = std::fs::remove_dir(work);
        return Err(Error::io("create", &marker, e));
    }
    Ok(())
}

/// The file a run holds an exclusive `flock` on for its whole life, in a
/// work directory it made with [`prepare_held_work_dir`]. A work
/// directory holding it whose lock nobody holds is a leftover of a run no
/// longer running (killed): [`remove_dead_work_dirs`] removes it. One
/// without it (made by [`create_work_dir`] alone) is never taken for dead.
pub const RUN_LOCK: &str = ".fruix-run";

/// A run's hold on its work directory ([`RUN_LOCK`]), released when
/// dropped (or when the process ends, however it ends): keep it until the
/// work directory is removed.
#[derive(Debug)]
pub struct HeldWorkDir {
    _lock: std::fs::File,
}

/// [`prepare_work_dir`], held by this process ([`HeldWorkDir`]) until the
/// hold is dropped: no [`remove_dead_work_dirs`] removes it meanwhile, and
/// every one after does once this process is gone. Blocking.
pub fn prepare_held_work_dir(work: &Path) -> Result<HeldWorkDir> {
    create_work_dir(work)?;
    let held = hold(work)?;
    for sub in WORK_SUBDIRS {
        let dir = work.join(sub);
        std::fs::create_dir_all(&dir).with_path("create work directory", &dir)?;
    }
    Ok(held)
}

/// Takes the hold on the fresh work directory `work`: its [`RUN_LOCK`] is
/// made under a temporary name and locked before it is renamed into
/// place, so no sweep ever finds it unlocked while this process lives.
fn hold(work: &Path) -> Result<HeldWorkDir> {
    let io = |e: Errno| Error::io("lock work directory", work, e.into());
    let dir = rfs::open(work, dir_flags(), Mode::empty()).map_err(io)?;
    let temp = format!("{RUN_LOCK}.{}", std::process::id());
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let lock = rfs::openat(&dir, temp.as_str(), flags, Mode::from_raw_mode(0o600)).map_err(io)?;
    let locked = rfs::flock(&lock, rfs::FlockOperation::NonBlockingLockExclusive)
        .and_then(|()| rfs::renameat(&dir, temp.as_str(), &dir, RUN_LOCK));
    if let Err(e) = locked {
        let _ = rfs::unlinkat(&dir, temp.as_str(), rfs::AtFlags::empty());
        return Err(io(e));
    }
    Ok(HeldWorkDir {
        _lock: std::fs::File::from(lock),
    })
}

/// Removes the work directories in `parent` (a state directory's
/// `native-builds`) of runs no longer running: each a directory of this
/// user's, marked ([`WORK_MARKER`]), holding a [`RUN_LOCK`] that this
/// process could lock (its run is gone: killed, or ended by a fast exit).
/// Nothing in `parent` is followed: each is opened beneath its descriptor with
/// `O_NOFOLLOW`, and removed only while it is still the directory checked,
/// its lock held. With `dry_run`, only lists them. Returns their paths,
/// sorted; one that cannot be removed is left, unlisted. A missing
/// `parent` holds none. Blocking.
pub fn remove_dead_work_dirs(parent: &Path, dry_run: bool) -> Result<Vec<PathBuf>> {
    // `parent` itself is the user's to place (a symlink to another disk).
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = match rfs::open(parent, flags, Mode::empty()) {
        Ok(dir) => dir,
        Err(Errno::NOENT) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("open", parent, e.into())),
    };
    let mut removed = Vec::new();
    for name in entries(dir.as_fd(), parent)? {
        let work = parent.join(&name);
        let Some((id, _lock)) = dead_run(dir.as_fd(), &name) else {
            continue;
        };
        if !matches!(examine(&work), Ok(Found::Own(own)) if own == id) {
            continue;
        }
        if dry_run || remove_own(&work, id).is_ok() {
            removed.push(work);
        }
    }
    removed.sort();
    Ok(removed)
}

/// The device and inode of the directory `name` in `parent`, with its
/// [`RUN_LOCK`] locked, when that is a regular file of this user's that no
/// live run holds.
fn dead_run(parent: BorrowedFd<'_>, name: &OsStr) -> Option<((u64, u64), OwnedFd)> {
    let work = rfs::openat(parent, name, dir_flags(), Mode::empty()).ok()?;
    let st = rfs::fstat(&work).ok()?;
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let lock = rfs::openat(&work, RUN_LOCK, flags, Mode::empty()).ok()?;
    let l = rfs::fstat(&lock).ok()?;
    let own = FileType::from_raw_mode(l.st_mode) == FileType::RegularFile
        && l.st_uid == geteuid().as_raw();
    let free = own && rfs::flock(&lock, rfs::FlockOperation::NonBlockingLockExclusive).is_ok();
    free.then_some(((st.st_dev as u64, st.st_ino as u64), lock))
}

/// How a work directory is opened: a directory, never through a symlink.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Removes the work directory `work` with everything in it, when it is
/// fruix's own (see [`create_work_dir`]); a missing one is fine. Returns
/// whether nothing is left there: `false` when something fruix did not
/// make is, left as it is. Read-only directories (and, on FreeBSD,
/// immutable file flags set by an install as root) do not stop it.
/// Blocking.
pub fn remove_work_dir(work: &Path) -> Result<bool> {
    match examine(work)? {
        Found::Absent => Ok(true),
        Found::Own(id) => remove_own(work, id).map(|()| true),
        Found::Foreign(_) => Ok(false),
    }
}

/// What is at a work directory's path.
enum Found {
    /// Nothing.
    Absent,
    /// A directory of fruix's: marked, or empty; its device and inode.
    Own((u64, u64)),
    /// Anything else: why it is not fruix's, read after its path.
    Foreign(String),
}

/// Looks at `work` without following a symlink: the directory is opened
/// with `O_NOFOLLOW`, and its marker looked for relative to that
/// descriptor, also with `O_NOFOLLOW`: a regular file of this user.
fn examine(work: &Path) -> Result<Found> {
    let dir = match rfs::open(work, dir_flags(), Mode::empty()) {
        Ok(dir) => dir,
        Err(Errno::NOENT) => return Ok(Found::Absent),
        Err(e) => {
            let meta = std::fs::symlink_metadata(work).with_path("inspect", work)?;
            if meta.is_dir() {
                return Err(Error::io("open work directory", work, e.into()));
            }
            let kind = fruix_core::fsutil::file_type_name(meta.file_type());
            return Ok(Found::Foreign(format!("is a {kind}")));
        }
    };
    let st = rfs::fstat(&dir).map_err(|e| Error::io("inspect", work, e.into()))?;
    let id = (st.st_dev as u64, st.st_ino as u64);
    let marker_flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    match rfs::openat(&dir, WORK_MARKER, marker_flags, Mode::empty()) {
        Ok(marker) => {
            let m = rfs::fstat(&marker).map_err(|e| Error::io("inspect", work, e.into()))?;
            let regular = FileType::from_raw_mode(m.st_mode) == FileType::RegularFile;
            if regular && m.st_uid == geteuid().as_raw() {
                return Ok(Found::Own(id));
            }
        }
        Err(Errno::NOENT) if entries(dir.as_fd(), work)?.is_empty() => return Ok(Found::Own(id)),
        Err(_) => {}
    }
    Ok(Found::Foreign(format!(
        "holds files but no {WORK_MARKER} of this user's"
    )))
}

/// Removes the work directory of fruix's at `work` (device and inode `id`),
/// its marker last: a removal cut short leaves it still marked.
fn remove_own(work: &Path, id: (u64, u64)) -> Result<()> {
    let there = std::fs::symlink_metadata(work).with_path("inspect", work)?;
    if (there.dev(), there.ino()) != id {
        return Err(Error::io(
            "remove work directory",
            work,
            std::io::Error::other("it was replaced since it was checked"),
        ));
    }
    // A failure here (a directory made unreadable) is met again below, by
    // the removal that copes with it, or reported with its reason.
    for entry in std::fs::read_dir(work).into_iter().flatten().flatten() {
        if entry.file_name() != WORK_MARKER {
            let _ = fruix_core::remove::remove_tree(&entry.path());
        }
    }
    remove_tree(work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dir_is_next_to_the_result_root_or_unique_under_a_parent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("20260405T213444Z");
        std::fs::create_dir(&root).unwrap();
        let with_slash = PathBuf::from(format!("{}/", root.display()));
        assert_eq!(
            work_dir_for(&with_slash, "x", None).unwrap(),
            root.with_file_name("20260405T213444Z.work")
        );
        let other = dir.path().join("other/20260405T213444Z");
        std::fs::create_dir_all(&other).unwrap();
        let a = work_dir_for(&root, "20260405T213444Z", Some(Path::new("/w"))).unwrap();
        let b = work_dir_for(&other, "20260405T213444Z", Some(Path::new("/w"))).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/w")));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("20260405T213444Z-"), "{name}");
    }

    #[test]
    fn preparing_replaces_a_stale_work_dir() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("r.work");
        prepare_work_dir(&work).unwrap();
        std::fs::create_dir_all(work.join("world/stale")).unwrap();
        prepare_work_dir(&work).unwrap();
        assert!(!work.join("world/stale").exists());
        for sub in WORK_SUBDIRS {
            assert!(work.join(sub).is_dir(), "{sub}");
        }
        assert!(work.join(WORK_MARKER).is_file());
        // One a killed fruix had only begun to make: empty.
        std::fs::remove_dir_all(&work).unwrap();
        std::fs::create_dir(&work).unwrap();
        prepare_work_dir(&work).unwrap();
        assert!(work.join(WORK_MARKER).is_file());
    }

    #[test]
    fn a_work_dir_fruix_did_not_make_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("keep"), "mine").unwrap();
        let users = |name: &str, make: &dyn Fn(&Path)| {
            let work = dir.path().join(name);
            make(&work);
            let e = prepare_work_dir(&work).unwrap_err();
            assert!(matches!(e, Error::InvalidRequest { .. }), "{name}: {e}");
            let message = e.to_string();
            assert!(message.contains(&format!("work directory {}", work.display())));
            assert!(message.contains("move it away"), "{message}");
            assert!(!remove_work_dir(&work).unwrap(), "{name} is kept");
            assert!(work.symlink_metadata().is_ok(), "{name} is kept");
            message
        };
        let message = users("thesis.work", &|w| {
            std::fs::create_dir(w).unwrap();
            std::fs::write(w.join("chapter1.tex"), "years of work").unwrap();
        });
        assert!(
            message.contains("holds files but no .fruix-work"),
            "{message}"
        );
        let message = users("link.work", &|w| {
            std::os::unix::fs::symlink(&elsewhere, w).unwrap()
        });
        assert!(message.contains("is a symlink"), "{message}");
        users("file.work", &|w| std::fs::write(w, "a file").unwrap());
        // A marker that is a symlink is no marker, even to a marker.
        let marked = dir.path().join("marked.work");
        prepare_work_dir(&marked).unwrap();
        users("fake.work", &|w| {
            std::fs::create_dir(w).unwrap();
            std::fs::write(w.join("keep"), "mine").unwrap();
            std::os::unix::fs::symlink(marked.join(WORK_MARKER), w.join(WORK_MARKER)).unwrap();
        });
        assert_eq!(
            std::fs::read_to_string(elsewhere.join("keep")).unwrap(),
            "mine"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("thesis.work/chapter1.tex")).unwrap(),
            "years of work"
        );
    }

    /// Regression: the work directory of a killed run stayed forever.
    /// Swept, one no process holds goes; one held, one never held (made
    /// by [`create_work_dir`] alone, as other executors do), and one
    /// whose lock is a symlink stay.
    #[test]
    fn only_the_work_dirs_of_runs_no_longer_running_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let builds = dir.path().join("native-builds");
        let held = prepare_held_work_dir(&builds.join("live.work")).unwrap();
        drop(prepare_held_work_dir(&builds.join("killed.work")).unwrap());
        prepare_work_dir(&builds.join("unheld.work")).unwrap();
        let faked = builds.join("faked.work");
        prepare_work_dir(&faked).unwrap();
        std::os::unix::fs::symlink(
            builds.join("killed.work").join(RUN_LOCK),
            faked.join(RUN_LOCK),
        )
        .unwrap();
        let listed = remove_dead_work_dirs(&builds, true).unwrap();
        assert_eq!(listed, [builds.join("killed.work")]);
        assert!(builds.join("killed.work").is_dir(), "a dry run removed it");
        assert_eq!(remove_dead_work_dirs(&builds, false).unwrap(), listed);
        assert!(builds.join("killed.work").symlink_metadata().is_err());
        for kept in ["live.work", "unheld.work", "faked.work"] {
            assert!(builds.join(kept).join(OBJ_DIR).is_dir(), "{kept} went");
        }
        drop(held);
        assert_eq!(
            remove_dead_work_dirs(&builds, false).unwrap(),
            [builds.join("live.work")]
        );
        assert!(remove_dead_work_dirs(&dir.path().join("none"), false)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn removing_takes_only_a_work_dir_of_fruix_s() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("r.work");
        assert!(remove_work_dir(&work).unwrap(), "a missing one is fine");
        prepare_work_dir(&work).unwrap();
        std::fs::write(work.join("world/file"), "").unwrap();
        assert!(remove_work_dir(&work).unwrap());
        assert!(work.symlink_metadata().is_err());
    }
}
