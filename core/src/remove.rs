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
//!
//! A tree with a file system mounted at or below it (a bind mount an
//! administrator left in a result root or a store object) is refused before
//! anything is removed ([`MountedInside`], an [`std::io::ErrorKind::ResourceBusy`]
//! error): removing it would empty what is mounted there, like `rm -rf`
//! without `--one-file-system`. The mount table is asked at the start
//! ([`mounted_inside`]; [`keep_mount_table`] keeps it for many removals in
//! a row); a directory found on another device while
//! modes are made writable is left as it is.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

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
    refuse_mounts(path)?;
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    if let Some(dir) = open_dir_at(rfs::CWD, path.as_os_str()) {
        use std::os::unix::fs::MetadataExt;
        make_writable(&dir, meta.dev(), 0);
    }
    not_found_is_fine(fs::remove_dir_all(path))
}

/// A file system is mounted at `mount`, in the tree `tree` that was to be
/// removed: nothing of it was (see the [module](self) documentation).
#[derive(Debug)]
pub struct MountedInside {
    /// The tree that was to be removed.
    pub tree: PathBuf,
    /// Where in it a file system is mounted.
    pub mount: PathBuf,
}

impl std::fmt::Display for MountedInside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a file system is mounted at {}, in {}: nothing of it was removed (unmount it first)",
            crate::escape::path(&self.mount),
            crate::escape::path(&self.tree)
        )
    }
}

impl std::error::Error for MountedInside {}

/// Fails with [`MountedInside`] (kind [`std::io::ErrorKind::ResourceBusy`])
/// when a file system is mounted at or below the directory `path`.
pub fn refuse_mounts(path: &Path) -> std::io::Result<()> {
    match mounted_inside(path)? {
        None => Ok(()),
        Some(mount) => Err(std::io::Error::new(
            std::io::ErrorKind::ResourceBusy,
            MountedInside {
                tree: path.to_path_buf(),
                mount,
            },
        )),
    }
}

/// The first mount point (of this process's mount table) at or below the
/// directory `path`, if any. `path` is resolved first (its parents may be
/// symlinks, as `/tmp` is on some systems; it is a directory itself).
pub fn mounted_inside(path: &Path) -> std::io::Result<Option<PathBuf>> {
    let tree = fs::canonicalize(path)?;
    Ok(mount_points()?
        .iter()
        .find(|m| m.starts_with(&tree))
        .cloned())
}

/// Keeps the mount table while it lives, for many removals in a row
/// (`store gc`): on Linux `/proc/self/mountinfo` stays open, and the table
/// read from it is used again until the kernel marks that open file
/// changed (a mount or an unmount since it was last asked: `poll` reports
/// `POLLPRI` and clears the mark, as libmount's monitor uses it). The mark
/// is asked before the table is read again, so no change is ever missed.
/// Without one, the table is read (and closed) at every removal: a process
/// near its limit of open files keeps that descriptor free.
#[must_use = "the table is kept only while this lives"]
pub struct KeptMountTable(());

/// How many [`KeptMountTable`]s live.
#[cfg(target_os = "linux")]
static KEEPERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The open table and the mount points last read from it, while a
/// [`KeptMountTable`] lives.
#[cfg(target_os = "linux")]
type Kept = std::sync::Mutex<Option<(fs::File, std::sync::Arc<Vec<PathBuf>>)>>;

#[cfg(target_os = "linux")]
static KEPT: Kept = std::sync::Mutex::new(None);

/// Keeps the mount table until the returned value is dropped (see
/// [`KeptMountTable`]).
pub fn keep_mount_table() -> KeptMountTable {
    #[cfg(target_os = "linux")]
    KEEPERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    KeptMountTable(())
}

impl Drop for KeptMountTable {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::sync::atomic::Ordering::SeqCst;
            let mut kept = KEPT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if KEEPERS.fetch_sub(1, SeqCst) == 1 {
                *kept = None;
            }
        }
    }
}

/// Every mount point in this process's mount table (`/proc/self/mountinfo`),
/// read again only when it changed while a [`KeptMountTable`] lives.
#[cfg(target_os = "linux")]
fn mount_points() -> std::io::Result<std::sync::Arc<Vec<PathBuf>>> {
    use std::io::{Read, Seek};
    use std::sync::atomic::Ordering::SeqCst;
    let mut kept = KEPT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut file = match kept.take() {
        Some((file, points)) if !changed(&file) => {
            *kept = Some((file, points.clone()));
            return Ok(points);
        }
        Some((file, _)) => file,
        None => fs::File::open("/proc/self/mountinfo")?,
    };
    let mut table = Vec::new();
    file.rewind()?;
    file.read_to_end(&mut table)?;
    let points: std::sync::Arc<Vec<PathBuf>> = std::sync::Arc::new(
        table
            .split(|&b| b == b'\n')
            .filter_map(|line| line.split(|&b| b == b' ').nth(4))
            .map(unescape_octal)
            .collect(),
    );
    if KEEPERS.load(SeqCst) > 0 {
        *kept = Some((file, points.clone()));
    }
    Ok(points)
}

/// Whether the mount table changed since `table` (an open
/// `/proc/self/mountinfo`) was last asked; an error counts as a change.
#[cfg(target_os = "linux")]
fn changed(table: &fs::File) -> bool {
    use rustix::event::{PollFd, PollFlags};
    let mut fds = [PollFd::new(table, PollFlags::PRI)];
    match rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())) {
        Ok(0) => false,
        Ok(_) => !fds[0].revents().is_empty(),
        Err(_) => true,
    }
}

/// A mount point as `/proc/self/mountinfo` writes it: space, tab, newline
/// and backslash as `\NNN` (octal).
#[cfg(target_os = "linux")]
fn unescape_octal(field: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let code = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match code {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Every mount point in the system's mount table (`getmntinfo(3)`).
#[cfg(target_os = "freebsd")]
fn mount_points() -> std::io::Result<std::sync::Arc<Vec<PathBuf>>> {
    use std::os::unix::ffi::OsStrExt;
    let mut table: *mut libc::statfs = std::ptr::null_mut();
    // SAFETY: getmntinfo stores into `table` a pointer to `n` entries it
    // owns (valid until the next call on this thread), read at once here.
    let n = unsafe { libc::getmntinfo(&mut table, libc::MNT_NOWAIT) };
    if n <= 0 || table.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above: `n` initialised entries at `table`.
    let entries = unsafe { std::slice::from_raw_parts(table, n as usize) };
    Ok(std::sync::Arc::new(
        entries
            .iter()
            .map(|e| {
                // SAFETY: f_mntonname is NUL-terminated within its array.
                let name = unsafe { std::ffi::CStr::from_ptr(e.f_mntonname.as_ptr()) };
                PathBuf::from(OsStr::from_bytes(name.to_bytes()))
            })
            .collect(),
    ))
}

/// Other systems: no mount table is read (the device check while modes
/// are made writable still holds).
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn mount_points() -> std::io::Result<std::sync::Arc<Vec<PathBuf>>> {
    Ok(Default::default())
}

fn not_found_is_fine(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes the open directory `dir` (at `depth`) and every directory below
/// it writable and searchable by its owner; one on a device other than
/// `dev` (a file system mounted since the mount table was read) is left.
fn make_writable(dir: &OwnedFd, dev: u64, depth: usize) {
    // `dev_t` is not `u64` on every system.
    #[allow(clippy::unnecessary_cast)]
    if rfs::fstat(dir).map_or(true, |st| st.st_dev as u64 != dev) {
        return;
    }
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
            make_writable(&sub, dev, depth + 1);
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

    #[cfg(target_os = "linux")]
    #[test]
    fn mount_points_are_read_unescaped_and_found_at_or_below_a_tree() {
        assert_eq!(
            unescape_octal(b"/mnt/a\\040b\\134c\\011"),
            PathBuf::from("/mnt/a b\\c\t")
        );
        // Not three octal digits: kept as written.
        assert_eq!(unescape_octal(b"/x\\09"), PathBuf::from("/x\\09"));
        // /proc is mounted in every Linux mount table the tests run in.
        let proc_fs = Some(PathBuf::from("/proc"));
        assert_eq!(mounted_inside(Path::new("/proc")).unwrap(), proc_fs);
        assert_eq!(mounted_inside(Path::new("/proc/../proc")).unwrap(), proc_fs);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(mounted_inside(dir.path()).unwrap(), None);
        let e = refuse_mounts(Path::new("/proc")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy);
        let inner = e.get_ref().and_then(|e| e.downcast_ref::<MountedInside>());
        assert_eq!(inner.map(|m| m.mount.as_path()), Some(Path::new("/proc")));
    }

    /// Set in the environment of the test binary run again by
    /// [`the_kept_mount_table_follows_a_mount_and_an_unmount`].
    #[cfg(target_os = "linux")]
    const OWN_NAMESPACE: &str = "FRUIX_TEST_OWN_MOUNT_NAMESPACE";

    /// The mount table [`mount_points`] keeps is read again after a mount
    /// and after an unmount. Runs [`mounts_seen_as_they_change`] in this
    /// test binary again, in a mount namespace of its own (private, so no
    /// mount reaches the machine's); needs root, as the tests run.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kept_mount_table_follows_a_mount_and_an_unmount() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args(["--exact", "remove::tests::mounts_seen_as_they_change"])
            .args(["--ignored", "--test-threads", "1"])
            .env(OWN_NAMESPACE, "1");
        // SAFETY: between fork and exec only system calls are made, on
        // C strings that are static.
        unsafe {
            child.pre_exec(|| {
                let none = std::ptr::null();
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                match libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(none, c"/".as_ptr(), none, flags, none.cast()) == 0
                {
                    true => Ok(()),
                    false => Err(std::io::Error::last_os_error()),
                }
            });
        }
        let out = child
            .output()
            .expect("run the test binary in a mount namespace (as root)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run by [`the_kept_mount_table_follows_a_mount_and_an_unmount`] only:
    /// mounts a tmpfs, so it refuses to run outside a namespace of its own.
    #[cfg(target_os = "linux")]
    #[test]
    #[ignore = "run in a mount namespace of its own by the_kept_mount_table_follows_a_mount_and_an_unmount"]
    fn mounts_seen_as_they_change() {
        assert!(
            std::env::var_os(OWN_NAMESPACE).is_some(),
            "run in a namespace of its own only"
        );
        let dir = tempfile::tempdir().unwrap();
        let sub = fs::canonicalize(dir.path()).unwrap().join("sub");
        fs::create_dir(&sub).unwrap();
        let target = std::ffi::CString::new(sub.as_os_str().as_encoded_bytes()).unwrap();
        let kept = keep_mount_table();
        assert_eq!(mounted_inside(dir.path()).unwrap(), None);
        assert!(KEPT.lock().unwrap().is_some(), "the table is not kept");
        // SAFETY: C strings valid for the call.
        let mounted = unsafe {
            let none = std::ptr::null();
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                none,
            )
        };
        assert_eq!(mounted, 0, "{}", std::io::Error::last_os_error());
        assert_eq!(mounted_inside(dir.path()).unwrap(), Some(sub.clone()));
        assert_eq!(mounted_inside(dir.path()).unwrap(), Some(sub.clone()));
        // SAFETY: as above.
        assert_eq!(unsafe { libc::umount(target.as_ptr()) }, 0);
        assert_eq!(mounted_inside(dir.path()).unwrap(), None);
        drop(kept);
        assert!(
            KEPT.lock().unwrap().is_none(),
            "the table outlived its keeper"
        );
        assert_eq!(mounted_inside(dir.path()).unwrap(), None);
        assert!(KEPT.lock().unwrap().is_none(), "kept with no keeper");
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
