//! Directories of trees fruix does not trust, opened by descriptor.
//!
//! A tree someone else wrote (an object being checked, a build's install
//! tree, a guest's result root) may change while fruix reads it: any
//! directory on the way to an entry may have become a symlink to anywhere on
//! the host. So only the top directory is opened by path; everything below it
//! is opened relative to its parent's descriptor, one component at a time,
//! with `O_NOFOLLOW | O_DIRECTORY`. A symlink on the way is an
//! [`Error::UnsafePath`], never followed.
//!
//! This is the one opener of such directories: [`crate::manifest`]'s
//! [`open_dir`](crate::manifest::open_dir),
//! [`open_beneath`](crate::manifest::open_beneath) and
//! [`open_file_beneath`](crate::manifest::open_file_beneath) are built on it,
//! and so are the install trees of `fruix-freebsd`. The caller says which
//! tree a directory belongs to with a [`TreeKind`], which words the refusal
//! of a symlink and says whether a missing component is
//! [`Error::NotFound`] (with the caller's hint) or an I/O failure.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::manifest::stat;

/// Which tree a directory belongs to: how its messages name it, and what a
/// missing component of it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeKind {
    /// The tree, as a symlink's refusal names it: `a tree it reads`.
    name: &'static str,
    /// The hint of [`Error::NotFound`] for a missing component; `None`: a
    /// missing component is an I/O failure.
    missing_hint: Option<&'static str>,
}

impl TreeKind {
    /// A tree fruix reads (an object, a source tree, an artifact tree): a
    /// missing component is an I/O failure.
    pub const READ: TreeKind = TreeKind::named("a tree it reads");

    /// A tree that messages name `name`, completing `is a symlink; fruix
    /// never follows symlinks in …` (for example `a result root`). A missing
    /// component is an I/O failure unless [`TreeKind::missing_hint`] says
    /// otherwise.
    pub const fn named(name: &'static str) -> TreeKind {
        TreeKind {
            name,
            missing_hint: None,
        }
    }

    /// This kind, a missing component of which is [`Error::NotFound`] with
    /// `hint` (for example: the build did not install it).
    pub const fn missing_hint(self, hint: &'static str) -> TreeKind {
        TreeKind {
            missing_hint: Some(hint),
            ..self
        }
    }

    /// The refusal of a symlink in this tree, following its path.
    pub fn symlink_message(self) -> String {
        format!(
            "is a symlink; fruix never follows symlinks in {}",
            self.name
        )
    }

    /// The failure to open `path` with `e`: [`Error::NotFound`] with this
    /// kind's hint when it is missing and there is one, else an I/O failure.
    fn open_error(self, path: &Path, e: Errno) -> Error {
        match (e, self.missing_hint) {
            (Errno::NOENT, Some(hint)) => Error::NotFound {
                path: path.to_path_buf(),
                hint: hint.into(),
            },
            (e, _) => Error::io("open", path, e.into()),
        }
    }

    /// The refusal of `path`, a symlink when `symlink`, else not a directory.
    fn unsafe_path(self, path: PathBuf, symlink: bool) -> Error {
        Error::UnsafePath {
            path,
            message: if symlink {
                self.symlink_message()
            } else {
                "is not a directory".into()
            },
        }
    }
}

/// An open directory, the path that names it in messages and the tree it
/// belongs to.
#[derive(Debug)]
pub struct OpenDir {
    fd: OwnedFd,
    path: PathBuf,
    tree: TreeKind,
}

/// Flags of a directory opened for reading, never through a symlink.
pub const fn dir_flags() -> OFlags {
    OFlags::RDONLY
        .union(OFlags::DIRECTORY)
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC)
}

/// Whether `e` is how `openat` with `O_NOFOLLOW` refuses a symlink (`ELOOP`;
/// FreeBSD says `EMLINK`).
pub fn is_symlink_refusal(e: Errno) -> bool {
    matches!(e, Errno::LOOP | Errno::MLINK)
}

impl OpenDir {
    /// Opens directory `path` as given, a symlink at `path` itself followed:
    /// for a directory whose path fruix chose (a work directory, a result
    /// root). A missing `path` is as [`TreeKind`] says.
    pub fn open(path: &Path, tree: impl Into<TreeKind>) -> Result<OpenDir> {
        let tree = tree.into();
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| tree.open_error(path, e))?;
        Ok(OpenDir {
            fd,
            path: path.to_path_buf(),
            tree,
        })
    }

    /// Opens directory `path`, refusing a symlink at `path` itself (an
    /// [`Error::UnsafePath`]) as well as anything but a directory. A missing
    /// `path` is as [`TreeKind`] says.
    pub fn open_nofollow(path: &Path, tree: impl Into<TreeKind>) -> Result<OpenDir> {
        let tree = tree.into();
        let fd = rfs::open(path, dir_flags(), Mode::empty()).map_err(|e| match e {
            e if is_symlink_refusal(e) => tree.unsafe_path(path.to_path_buf(), true),
            Errno::NOTDIR => {
                let symlink = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink());
                tree.unsafe_path(path.to_path_buf(), symlink)
            }
            e => tree.open_error(path, e),
        })?;
        Ok(OpenDir {
            fd,
            path: path.to_path_buf(),
            tree,
        })
    }

    /// The path that names this directory in messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where entry `name` of this directory is, for messages.
    pub fn child(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Opens `relative` (slash-separated) beneath this directory, one
    /// component at a time, never through a symlink. A missing component is
    /// as [`TreeKind`] says; a symlink, a non-directory or `..` is
    /// [`Error::UnsafePath`]. An empty `relative` opens this directory again.
    pub fn open_beneath(&self, relative: &str) -> Result<OpenDir> {
        walk(self.as_fd(), &self.path, self.tree, relative, false)
    }

    /// Creates `relative` beneath this directory with its parents (those
    /// there already are fine), never through a symlink, and opens it.
    pub fn create_beneath(&self, relative: &str) -> Result<OpenDir> {
        walk(self.as_fd(), &self.path, self.tree, relative, true)
    }

    /// The status of entry `name`, not following a symlink; `None` when
    /// there is no such entry.
    pub fn lstat(&self, name: &OsStr) -> Result<Option<Stat>> {
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("inspect", self.child(name), e.into())),
        }
    }

    /// The names in this directory, sorted bytewise.
    pub fn entries(&self) -> Result<Vec<OsString>> {
        entries(self.fd.as_fd(), &self.path)
    }
}

impl AsFd for OpenDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<OpenDir> for OwnedFd {
    fn from(dir: OpenDir) -> OwnedFd {
        dir.fd
    }
}

/// Opens (after creating it and its parents when `create`) `relative`
/// beneath the open directory `root` of a `tree`, which `root_path` names in
/// messages: see [`OpenDir::open_beneath`].
pub(crate) fn walk(
    root: BorrowedFd<'_>,
    root_path: &Path,
    tree: TreeKind,
    relative: &str,
    create: bool,
) -> Result<OpenDir> {
    let mut current: Option<OpenDir> = None;
    for component in relative.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let (parent, parent_path) = match &current {
            Some(dir) => (dir.as_fd(), dir.path()),
            None => (root, root_path),
        };
        let path = parent_path.join(component);
        if component == ".." {
            return Err(Error::UnsafePath {
                path,
                message: "path leaves its root (`..`); give a path inside it".into(),
            });
        }
        if create {
            match rfs::mkdirat(parent, component, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(Error::io("create", &path, e.into())),
            }
        }
        let fd = open_child(parent, OsStr::new(component), &path, tree)?;
        current = Some(OpenDir { fd, path, tree });
    }
    match current {
        Some(dir) => Ok(dir),
        None => Ok(OpenDir {
            fd: rfs::openat(root, ".", dir_flags(), Mode::empty())
                .map_err(|e| Error::io("open", root_path, e.into()))?,
            path: root_path.to_path_buf(),
            tree,
        }),
    }
}

/// Opens directory `name` of the open directory `parent`, refusing a
/// symlink; `path` names it in messages.
pub(crate) fn open_child(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    tree: TreeKind,
) -> Result<OwnedFd> {
    rfs::openat(parent, name, dir_flags(), Mode::empty()).map_err(|e| match e {
        e if is_symlink_refusal(e) => tree.unsafe_path(path.to_path_buf(), true),
        Errno::NOTDIR => {
            let symlink = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| stat::file_type(&st) == FileType::Symlink);
            tree.unsafe_path(path.to_path_buf(), symlink)
        }
        e => tree.open_error(path, e),
    })
}

/// The names in the open directory `fd` (named `path` in messages), sorted
/// bytewise. Reads through a fresh description of `fd`, never by path.
pub fn entries(fd: BorrowedFd<'_>, path: &Path) -> Result<Vec<OsString>> {
    let listing =
        rfs::Dir::read_from(fd).map_err(|e| Error::io("read directory", path, e.into()))?;
    let mut names = Vec::new();
    for item in listing {
        let item = item.map_err(|e| Error::io("read directory", path, e.into()))?;
        let name = item.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    const HINT: &str = "the test did not make it";
    const KIND: TreeKind = TreeKind::named("a test tree").missing_hint(HINT);

    fn unsafe_message(e: &Error) -> &str {
        match e {
            Error::UnsafePath { message, .. } => message,
            e => panic!("not an unsafe path: {e}"),
        }
    }

    /// `tree/a/link` → `outside`, `tree/file`, `tree/a/b`.
    fn tree_with_a_symlink(dir: &Path) -> (PathBuf, PathBuf) {
        let (tree, outside) = (dir.join("tree"), dir.join("outside"));
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("file"), "").unwrap();
        symlink(&outside, tree.join("a/link")).unwrap();
        (tree, outside)
    }

    #[test]
    fn the_caller_words_a_symlink_and_a_missing_component() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, _) = tree_with_a_symlink(dir.path());
        let top = OpenDir::open(&tree, KIND).unwrap();
        let e = top.open_beneath("a/link/sub").unwrap_err();
        assert!(matches!(&e, Error::UnsafePath { path, .. } if *path == tree.join("a/link")));
        assert_eq!(
            unsafe_message(&e),
            "is a symlink; fruix never follows symlinks in a test tree"
        );
        let e = top.open_beneath("a/missing/deeper").unwrap_err();
        assert!(
            matches!(&e, Error::NotFound { path, hint }
                if *path == tree.join("a/missing") && hint == HINT),
            "{e}"
        );
        let e = OpenDir::open(&dir.path().join("nope"), KIND).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound { hint, .. } if hint == HINT),
            "{e}"
        );

        // Without a hint, missing is an I/O failure.
        let top = OpenDir::open(&tree, TreeKind::READ).unwrap();
        let e = top.open_beneath("a/missing").unwrap_err();
        assert!(
            matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{e}"
        );
        let e = top.open_beneath("a/link").unwrap_err();
        assert_eq!(
            unsafe_message(&e),
            "is a symlink; fruix never follows symlinks in a tree it reads"
        );
        let e = top.open_beneath("file").unwrap_err();
        assert_eq!(unsafe_message(&e), "is not a directory");
    }

    #[test]
    fn open_nofollow_refuses_a_symlink_at_the_top_open_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, outside) = tree_with_a_symlink(dir.path());
        let link = tree.join("a/link");
        let e = OpenDir::open_nofollow(&link, KIND).unwrap_err();
        assert!(matches!(&e, Error::UnsafePath { path, .. } if *path == link));
        assert_eq!(
            unsafe_message(&e),
            "is a symlink; fruix never follows symlinks in a test tree"
        );
        let e = OpenDir::open_nofollow(&tree.join("file"), KIND).unwrap_err();
        assert_eq!(unsafe_message(&e), "is not a directory");
        let e = OpenDir::open_nofollow(&tree.join("nope"), KIND).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound { hint, .. } if hint == HINT),
            "{e}"
        );

        let followed = OpenDir::open(&link, KIND).unwrap();
        assert_eq!(followed.path(), link);
        assert_eq!(followed.entries().unwrap(), [OsStr::new("sub")]);
        assert_eq!(
            OpenDir::open_nofollow(&outside, KIND)
                .unwrap()
                .entries()
                .unwrap(),
            [OsStr::new("sub")]
        );
    }

    #[test]
    fn the_manifest_openers_share_it() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, _) = tree_with_a_symlink(dir.path());
        let e = crate::manifest::open_dir(&tree.join("a/link")).unwrap_err();
        assert_eq!(unsafe_message(&e), TreeKind::READ.symlink_message());
        let root = crate::manifest::open_dir(&tree).unwrap();
        let e = crate::manifest::open_beneath(&root, &tree, "a/link/sub").unwrap_err();
        assert!(matches!(&e, Error::UnsafePath { path, .. } if *path == tree.join("a/link")));
        assert_eq!(unsafe_message(&e), TreeKind::READ.symlink_message());
        let e = crate::manifest::open_beneath(&root, &tree, "a/../a").unwrap_err();
        assert!(unsafe_message(&e).contains("`..`"), "{e}");
        let b = crate::manifest::open_beneath(&root, &tree, "a//./b").unwrap();
        assert_eq!(entries(b.as_fd(), &tree).unwrap(), Vec::<OsString>::new());
        let e = crate::manifest::open_file_beneath(&root, &tree, b"a/link/f").unwrap_err();
        assert_eq!(unsafe_message(&e), TreeKind::READ.symlink_message());
    }
}
