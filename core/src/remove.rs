//! Removing trees (store objects, temporaries, result roots, a build's work
//! directory) whose directories may be read-only, or on FreeBSD carry flags
//! such as `schg`, without ever following a symlink.
//!
//! A tree is first removed with [`std::fs::remove_dir_all`], which removes
//! symlinks themselves. Where that fails, its directories are made writable
//! (and its entries' file flags cleared) through descriptors, each opened
//! relative to its parent with `O_NOFOLLOW`, so a symlink planted anywhere in
//! it (its top included: a symlink named like an object in the store) never
//! lets a mode or flag change reach outside it; then it is removed again.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, FileType, Mode, OFlags};

/// Deepest directory [`remove_tree`] makes writable (deeper ones are left
/// as they are; removing them may then fail).
const MAX_DEPTH: usize = 4096;

/// Removes `path` and everything below it, even when its directories are
/// read-only. A symlink (or any other non-directory) at `path` is unlinked
/// itself; nothing is ever followed. A `path` that does not exist is fine.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    if !meta.is_dir() {
        return not_found_is_fine(fs::remove_file(path));
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    if let Some(dir) = open_dir_at(rfs::CWD, path.as_os_str()) {
        make_writable(&dir, 0);
    }
    not_found_is_fine(fs::remove_dir_all(path))
}

fn not_found_is_fine(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes the open directory `dir` (at `depth`) and every directory below
/// it writable and searchable by its owner.
fn make_writable(dir: &OwnedFd, depth: usize) {
    clear_flags(dir.as_fd(), None);
    let _ = rfs::fchmod(dir, Mode::from_raw_mode(0o700));
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = rfs::Dir::read_from(dir) else {
        return;
    };
    let mut subdirs: Vec<std::ffi::CString> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        match entry.file_type() {
            FileType::Directory | FileType::Unknown => subdirs.push(name.to_owned()),
            _ => clear_flags(dir.as_fd(), Some(name)),
        }
    }
    for name in subdirs {
        use std::os::unix::ffi::OsStrExt;
        if let Some(sub) = open_dir_at(dir.as_fd(), OsStr::from_bytes(name.as_bytes())) {
            make_writable(&sub, depth + 1);
        }
    }
}

/// Opens directory `name` in `parent` to read it, never following a
/// symlink; one this user may not read is made readable first (through a
/// descriptor too). `None` when it is not a directory or cannot be opened.
fn open_dir_at(parent: BorrowedFd<'_>, name: &OsStr) -> Option<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat(parent, name, flags, Mode::empty()) {
        Ok(dir) => Some(dir),
        Err(rustix::io::Errno::ACCESS) => {
            make_accessible(parent, name)?;
            rfs::openat(parent, name, flags, Mode::empty()).ok()
        }
        Err(_) => None,
    }
}

/// Gives directory `name` in `parent` mode 0700 without following a
/// symlink there: through an `O_PATH` descriptor of the directory itself
/// on Linux (whose `fchmodat` has no `AT_SYMLINK_NOFOLLOW`), with
/// `AT_SYMLINK_NOFOLLOW` elsewhere.
#[cfg(target_os = "linux")]
fn make_accessible(parent: BorrowedFd<'_>, name: &OsStr) -> Option<()> {
    use std::os::fd::AsRawFd;
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rfs::openat(parent, name, flags, Mode::empty()).ok()?;
    let by_fd = format!("/proc/self/fd/{}", dir.as_raw_fd());
    rfs::chmod(by_fd.as_str(), Mode::from_raw_mode(0o700)).ok()
}

#[cfg(not(target_os = "linux"))]
fn make_accessible(parent: BorrowedFd<'_>, name: &OsStr) -> Option<()> {
    let st = rfs::statat(parent, name, rfs::AtFlags::SYMLINK_NOFOLLOW).ok()?;
    if FileType::from_raw_mode(st.st_mode as _) != FileType::Directory {
        return None;
    }
    rfs::chmodat(
        parent,
        name,
        Mode::from_raw_mode(0o700),
        rfs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .ok()
}

/// Clears the BSD file flags (`schg`, `uunlnk`, ...) that forbid removal,
/// of `dir` itself or of its entry `name`, never following a symlink.
#[cfg(target_os = "freebsd")]
fn clear_flags(dir: BorrowedFd<'_>, name: Option<&std::ffi::CStr>) {
    use std::os::fd::AsRawFd;
    match name {
        // SAFETY: `dir` is an open descriptor for the call's duration.
        None => unsafe {
            libc::fchflags(dir.as_raw_fd(), 0);
        },
        // SAFETY: `dir` is open and `name` NUL-terminated for the call.
        Some(name) => unsafe {
            libc::chflagsat(dir.as_raw_fd(), name.as_ptr(), 0, libc::AT_SYMLINK_NOFOLLOW);
        },
    }
}

/// Other systems have no file flags that outlive the permission bits.
#[cfg(not(target_os = "freebsd"))]
fn clear_flags(_dir: BorrowedFd<'_>, _name: Option<&std::ffi::CStr>) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn read_only_trees_go_and_symlinks_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        // A read-only tree with a symlink to `outside` inside it.
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        fs::write(tree.join("a/b/file"), b"x").unwrap();
        for d in ["a/b", "a", ""] {
            fs::set_permissions(tree.join(d), fs::Permissions::from_mode(0o555)).unwrap();
        }
        remove_tree(&tree).unwrap();
        assert!(tree.symlink_metadata().is_err());
        // A symlink at the top is unlinked itself.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(link.symlink_metadata().is_err());
        assert_eq!(mode(&outside), 0o755);
        assert!(outside.join("sub").is_dir());
    }

    #[test]
    fn an_unreadable_directory_is_made_accessible_but_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let parent = rfs::open(dir.path(), OFlags::RDONLY, Mode::empty()).unwrap();
        fs::create_dir(dir.path().join("closed")).unwrap();
        fs::set_permissions(dir.path().join("closed"), fs::Permissions::from_mode(0o000)).unwrap();
        assert!(make_accessible(parent.as_fd(), OsStr::new("closed")).is_some());
        assert_eq!(mode(&dir.path().join("closed")), 0o700);
        fs::create_dir(dir.path().join("target")).unwrap();
        fs::set_permissions(dir.path().join("target"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("link")).unwrap();
        assert!(make_accessible(parent.as_fd(), OsStr::new("link")).is_none());
        assert_eq!(mode(&dir.path().join("target")), 0o755);
    }
}
