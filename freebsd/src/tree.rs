//! Moving and copying installed trees into artifact trees, and removing work
//! directories.
//!
//! # Contract
//!
//! - No symlink is ever followed: a symlink is recreated with its target
//!   verbatim (absolute and dangling targets included). A tree is moved with
//!   `renameat` relative to its parent directories' descriptors, and copied
//!   through descriptors: each entry is opened relative to its parent's
//!   descriptor with `O_NOFOLLOW`, its type checked with `fstat` on what was
//!   opened, its bytes read from that descriptor into a file created with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`. An entry that becomes a symlink while
//!   it is copied fails the copy ([`fruix_core::manifest::changed`]): a build
//!   (or a process it left behind) cannot lead a copy out of its tree.
//! - Copies keep permission bits including setuid, setgid and sticky; owners
//!   and groups when running as root (as an unprivileged user every copy is
//!   the user's anyway); and hard links between files of one copied tree.
//!   Timestamps are not kept: the store canonicalises them.
//! - Device nodes, FIFOs and sockets are refused with the path named: they
//!   cannot be part of an artifact tree.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use fruix_core::dir::{dir_flags, entries as dir_entries, is_symlink_refusal};
use fruix_core::error::IoContext;
use fruix_core::manifest::{changed, stat, MAX_DEPTH};
use fruix_core::{Error, Result};
use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Stat, Uid};
use rustix::io::Errno;

use crate::dir::{not_installed, OpenDir, Tree};

/// The hint of a missing installed entry: the build did not install it.
pub const NOT_INSTALLED_HINT: &str = "the build did not install it; see the install step's log";

/// How [`place`] gets a tree to its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// Rename; copy when renaming is not possible (another filesystem, a
    /// read-only parent directory). The source is gone or irrelevant after.
    Move,
    /// Copy; the source stays as it was.
    Copy,
}

/// Puts the entry (tree, file or symlink) at `src` at `dst`, creating the
/// parents of `dst`. `dst` must not exist. The parent directories of `src`
/// and `dst` are opened as given; nothing below them is followed (see
/// [`place_at`]).
pub fn place(src: &Path, dst: &Path, transfer: Transfer) -> Result<()> {
    let (src_parent, src_name) = split(src)?;
    let (dst_parent, dst_name) = split(dst)?;
    let src_dir = OpenDir::open(src_parent, Tree::Install).map_err(|e| match e {
        Error::NotFound { .. } => not_installed(src.to_path_buf()),
        e => e,
    })?;
    fs::create_dir_all(dst_parent).with_path("create", dst_parent)?;
    let dst_dir = OpenDir::open(dst_parent, Tree::ResultRoot)?;
    place_at((&src_dir, src_name), (&dst_dir, dst_name), transfer)
}

/// The parent directory and name of `path`.
fn split(path: &Path) -> Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((
            if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            },
            name,
        )),
        _ => Err(Error::UnsafePath {
            path: path.to_path_buf(),
            message: "names no entry of a directory".into(),
        }),
    }
}

/// Puts entry `src.1` (tree, file or symlink) of the open directory `src.0`
/// at entry `dst.1` of `dst.0`, which must not exist: renamed relative to
/// the two descriptors when `transfer` is [`Transfer::Move`] and that is
/// possible, else copied through descriptors. No symlink is followed: one
/// is placed as a symlink.
pub fn place_at(
    src: (&OpenDir, &OsStr),
    dst: (&OpenDir, &OsStr),
    transfer: Transfer,
) -> Result<()> {
    let ((src_dir, src_name), (dst_dir, dst_name)) = (src, dst);
    if src_dir.lstat(src_name)?.is_none() {
        return Err(not_installed(src_dir.child(src_name)));
    }
    if transfer == Transfer::Move && rfs::renameat(src_dir, src_name, dst_dir, dst_name).is_ok() {
        return Ok(());
    }
    let mut copier = Copier {
        as_root: rustix::process::geteuid().is_root(),
        top: dst_dir,
        links: HashMap::new(),
    };
    let src_path = src_dir.child(src_name);
    copier.copy(
        At::new(src_dir.as_fd(), src_name, &src_path),
        At::new(dst_dir.as_fd(), dst_name, Path::new(dst_name)),
        0,
    )
}

/// The names in directory `dir`, sorted bytewise.
pub fn entries(dir: &Path) -> Result<Vec<OsString>> {
    let fd = rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("read directory", dir, e.into()))?;
    dir_entries(fd.as_fd(), dir)
}

/// Entry `name` of the open directory `dir`; `path` names it: in full on the
/// source side, relative to [`Copier::top`] on the destination side.
#[derive(Clone, Copy)]
struct At<'a> {
    dir: BorrowedFd<'a>,
    name: &'a OsStr,
    path: &'a Path,
}

impl<'a> At<'a> {
    fn new(dir: BorrowedFd<'a>, name: &'a OsStr, path: &'a Path) -> At<'a> {
        At { dir, name, path }
    }
}

/// Copies through descriptors under the rules of the module docs: each
/// source entry is opened relative to its parent's descriptor with
/// `O_NOFOLLOW` and its type checked with `fstat` on what was opened, so an
/// entry swapped for a symlink meanwhile fails the copy instead of leading
/// it elsewhere.
struct Copier<'a> {
    as_root: bool,
    /// The directory the copy is made in.
    top: &'a OpenDir,
    /// Files with several links already copied: (device, inode) → copy,
    /// relative to `top`.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier<'_> {
    fn copy(&mut self, src: At<'_>, dst: At<'_>, depth: usize) -> Result<()> {
        let inspect = |e: Errno| Error::io("inspect", src.path, e.into());
        let listed = rfs::statat(src.dir, src.name, AtFlags::SYMLINK_NOFOLLOW).map_err(inspect)?;
        match stat::file_type(&listed) {
            FileType::Symlink => return self.copy_symlink(src, dst, &listed),
            FileType::Directory | FileType::RegularFile => {}
            other => return Err(unsupported(src.path, other)),
        }
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rfs::openat(src.dir, src.name, flags, Mode::empty()).map_err(|e| {
            if is_symlink_refusal(e) {
                changed(src.path.to_path_buf(), "it became a symlink")
            } else {
                Error::io("open", src.path, e.into())
            }
        })?;
        let st = rfs::fstat(&fd).map_err(inspect)?;
        match stat::file_type(&st) {
            FileType::Directory => self.copy_dir(&fd, &st, src, dst, depth),
            FileType::RegularFile => self.copy_file(fd, &st, src, dst),
            other => Err(unsupported(src.path, other)),
        }
    }

    fn copy_symlink(&mut self, src: At<'_>, dst: At<'_>, st: &Stat) -> Result<()> {
        let target = rfs::readlinkat(src.dir, src.name, Vec::new()).map_err(|e| match e {
            Errno::INVAL => changed(src.path.to_path_buf(), "it is no longer a symlink"),
            e => Error::io("read symlink", src.path, e.into()),
        })?;
        let at = |e: Errno, action| Error::io(action, self.top.path().join(dst.path), e.into());
        rfs::symlinkat(&target, dst.dir, dst.name).map_err(|e| at(e, "create symlink"))?;
        if self.as_root {
            let (uid, gid) = owner(st);
            rfs::chownat(dst.dir, dst.name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| at(e, "set owner of"))?;
        }
        Ok(())
    }

    fn copy_dir(
        &mut self,
        fd: &OwnedFd,
        st: &Stat,
        src: At<'_>,
        dst: At<'_>,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::UnsafePath {
                path: src.path.to_path_buf(),
                message: format!(
                    "is nested deeper than {MAX_DEPTH} directories; fruix refuses deeper trees"
                ),
            });
        }
        let full = self.top.path().join(dst.path);
        rfs::mkdirat(dst.dir, dst.name, Mode::from_raw_mode(0o700))
            .map_err(|e| Error::io("create directory", &full, e.into()))?;
        let made = rfs::openat(dst.dir, dst.name, dir_flags(), Mode::empty())
            .map_err(|e| Error::io("open", &full, e.into()))?;
        for name in dir_entries(fd.as_fd(), src.path)? {
            let (src_path, dst_path) = (src.path.join(&name), dst.path.join(&name));
            self.copy(
                At::new(fd.as_fd(), &name, &src_path),
                At::new(made.as_fd(), &name, &dst_path),
                depth + 1,
            )?;
        }
        // After the entries: a read-only directory stays writable until then.
        self.keep_owner_and_mode(made.as_fd(), st, &full)
    }

    fn copy_file(&mut self, fd: OwnedFd, st: &Stat, src: At<'_>, dst: At<'_>) -> Result<()> {
        let full = self.top.path().join(dst.path);
        let key = (stat::dev(st), stat::ino(st));
        if let Some(first) = self.links.get(&key) {
            // Shares the first copy's inode, owner and mode.
            return rfs::linkat(self.top, first, dst.dir, dst.name, AtFlags::empty())
                .map_err(|e| Error::io("create hard link", &full, e.into()));
        }
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut out = rfs::openat(dst.dir, dst.name, flags, Mode::from_raw_mode(0o600))
            .map(File::from)
            .map_err(|e| Error::io("create", &full, e.into()))?;
        // What the file held when it was opened: one that keeps growing
        // cannot keep the copy going.
        let mut from = File::from(fd).take(stat::size(st));
        // `io::copy` (copy_file_range where it can) does not say which side
        // failed: a full, over-limit or read-only destination is said of
        // the copy being written, anything else of the file copied.
        std::io::copy(&mut from, &mut out).map_err(|e| copy_error(e, src.path, &full))?;
        self.keep_owner_and_mode(out.as_fd(), st, &full)?;
        if stat::nlink(st) > 1 {
            self.links.insert(key, dst.path.to_path_buf());
        }
        Ok(())
    }

    /// Gives the copy `fd` the owner (as root) and mode of the source `st`.
    fn keep_owner_and_mode(&self, fd: BorrowedFd<'_>, st: &Stat, path: &Path) -> Result<()> {
        if self.as_root {
            let (uid, gid) = owner(st);
            rfs::fchown(fd, uid, gid).map_err(|e| Error::io("set owner of", path, e.into()))?;
        }
        // After chown, which clears setuid and setgid.
        rfs::fchmod(fd, Mode::from_raw_mode(stat::mode(st) as _))
            .map_err(|e| Error::io("set mode of", path, e.into()))
    }
}

/// The owner and group in `st`.
fn owner(st: &Stat) -> (Option<Uid>, Option<Gid>) {
    (
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )
}

/// The refusal of a special file.
fn unsupported(path: &Path, file_type: FileType) -> Error {
    Error::UnsupportedFileType {
        path: path.to_path_buf(),
        kind: match file_type {
            FileType::Fifo => "a FIFO",
            FileType::Socket => "a socket",
            FileType::BlockDevice | FileType::CharacterDevice => "a device node",
            _ => "a special file (device node, FIFO or socket)",
        },
    }
}

/// Removes `dir` and everything in it; a missing `dir` is fine. When a plain
/// removal fails, makes every directory writable (and, on FreeBSD, clears
/// file flags such as `schg`) through descriptors, never following a
/// symlink (see [`fruix_core::remove`]), and tries again.
pub fn remove_tree(dir: &Path) -> Result<()> {
    fruix_core::remove::remove_tree(dir).with_path("remove work directory", dir)
}

/// The failure of copying the file `src` to `dst`, said of the side that
/// failed: a full, over-limit or read-only destination of `dst` being
/// written, anything else of `src` (`io::copy`, copy_file_range where it
/// can, does not say which).
fn copy_error(e: std::io::Error, src: &Path, dst: &Path) -> Error {
    use rustix::io::Errno;
    match Errno::from_io_error(&e) {
        Some(Errno::NOSPC | Errno::DQUOT | Errno::FBIG | Errno::ROFS) => Error::io("write", dst, e),
        _ => Error::io("copy", src, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::manifest::tree_signature;
    use std::fs::Permissions;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A tree with the awkward cases: setuid file, read-only directory,
    /// hard links, absolute, relative and dangling symlinks.
    fn awkward_tree(root: &Path) {
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir_all(root.join("ro/sub")).unwrap();
        fs::write(root.join("usr/bin/su"), "su").unwrap();
        fs::set_permissions(root.join("usr/bin/su"), Permissions::from_mode(0o4555)).unwrap();
        fs::write(root.join("usr/bin/vi"), "vi").unwrap();
        fs::hard_link(root.join("usr/bin/vi"), root.join("usr/bin/ex")).unwrap();
        std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", root.join("localtime")).unwrap();
        std::os::unix::fs::symlink("../usr/bin/su", root.join("ro/su")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        fs::write(root.join("ro/sub/f"), "f").unwrap();
        fs::set_permissions(root.join("ro/sub"), Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(root.join("ro"), Permissions::from_mode(0o555)).unwrap();
    }

    #[test]
    fn a_failed_copy_names_the_side_that_failed() {
        let (src, dst) = (Path::new("/src/f"), Path::new("/dst/f"));
        let errno = std::io::Error::from_raw_os_error;
        let full = copy_error(errno(rustix::io::Errno::NOSPC.raw_os_error()), src, dst);
        assert!(
            full.to_string().starts_with("failed to write /dst/f:"),
            "{full}"
        );
        let bad = copy_error(errno(rustix::io::Errno::IO.raw_os_error()), src, dst);
        assert!(
            bad.to_string().starts_with("failed to copy /src/f:"),
            "{bad}"
        );
    }

    #[test]
    fn copies_keep_modes_links_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("out/dst"));
        awkward_tree(&src);
        place(&src, &dst, Transfer::Copy).unwrap();
        assert_eq!(tree_signature(&src).unwrap(), tree_signature(&dst).unwrap());
        assert_eq!(
            fs::metadata(dst.join("usr/bin/su")).unwrap().mode() & 0o7777,
            0o4555
        );
        assert_eq!(
            fs::read_link(dst.join("localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/UTC")
        );
        assert_eq!(
            fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("nowhere")
        );
        let (vi, ex) = (
            fs::metadata(dst.join("usr/bin/vi")).unwrap(),
            fs::metadata(dst.join("usr/bin/ex")).unwrap(),
        );
        assert_eq!(vi.ino(), ex.ino());
        assert!(src.join("usr/bin/su").exists(), "a copy leaves its source");
        remove_tree(&dir.path().join("src")).unwrap();
        remove_tree(&dir.path().join("out")).unwrap();
        assert!(!dir.path().join("out").exists());
    }

    #[test]
    fn a_symlink_is_placed_as_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("target")).unwrap();
        std::os::unix::fs::symlink("target", dir.path().join("link")).unwrap();
        place(
            &dir.path().join("link"),
            &dir.path().join("copy/link"),
            Transfer::Copy,
        )
        .unwrap();
        let meta = fs::symlink_metadata(dir.path().join("copy/link")).unwrap();
        assert!(meta.file_type().is_symlink());
    }

    #[test]
    fn moving_renames() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("a/b/dst"));
        awkward_tree(&src);
        let before = tree_signature(&src).unwrap();
        place(&src, &dst, Transfer::Move).unwrap();
        assert!(!src.exists());
        assert_eq!(tree_signature(&dst).unwrap(), before);
    }

    #[test]
    fn a_missing_source_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let e = place(
            &dir.path().join("nope"),
            &dir.path().join("dst"),
            Transfer::Move,
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::NotFound { .. }) && e.to_string().contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn special_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        fruix_core::testing::mkfifo(&fifo).unwrap();
        let e = place(&fifo, &dir.path().join("copy"), Transfer::Copy).unwrap_err();
        assert!(matches!(e, Error::UnsupportedFileType { .. }), "{e}");
    }

    #[test]
    fn removing_a_missing_tree_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        remove_tree(&dir.path().join("never-made")).unwrap();
    }
}
