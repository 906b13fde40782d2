//! Directories of install trees and result roots, opened by descriptor.
//!
//! A build writes its install trees, and a process it leaves behind may
//! change them while fruix slices them: any directory on the way to an entry
//! may have become a symlink to anywhere on the host. So only the top
//! directory, whose path fruix chose, is opened by path; everything below it
//! is opened relative to its parent's descriptor, one component at a time,
//! with `O_NOFOLLOW | O_DIRECTORY`. A symlink on the way is an
//! [`Error::UnsafePath`], never followed.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use fruix_core::manifest::stat;
use fruix_core::{Error, Result};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::tree::NOT_INSTALLED_HINT;

/// Which kind of tree a directory belongs to, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// An install tree a build wrote (untrusted).
    Install,
    /// A result root, written by fruix.
    ResultRoot,
}

impl Tree {
    fn symlink_message(self) -> &'static str {
        match self {
            Tree::Install => "is a symlink; fruix never follows symlinks in a build's install tree",
            Tree::ResultRoot => "is a symlink; fruix never follows symlinks in a result root",
        }
    }
}

/// An open directory and the path that names it in messages.
#[derive(Debug)]
pub struct OpenDir {
    fd: OwnedFd,
    path: PathBuf,
    tree: Tree,
}

/// Flags of a directory opened for reading, never through a symlink.
pub(crate) fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Whether `e` is how `openat` with `O_NOFOLLOW` refuses a symlink (`ELOOP`;
/// FreeBSD says `EMLINK`).
pub(crate) fn is_symlink_refusal(e: Errno) -> bool {
    matches!(e, Errno::LOOP | Errno::MLINK)
}

impl OpenDir {
    /// Opens directory `path`, which fruix chose (a work directory, a result
    /// root): the one path opened as given.
    pub fn open(path: &Path, tree: Tree) -> Result<OpenDir> {
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT if tree == Tree::Install => not_installed(path.to_path_buf()),
            e => Error::io("open", path, e.into()),
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
    /// [`Error::NotFound`] (for an install tree: the build did not install
    /// it); a symlink or a non-directory is [`Error::UnsafePath`].
    pub fn open_beneath(&self, relative: &str) -> Result<OpenDir> {
        self.walk(relative, false)
    }

    /// Creates `relative` beneath this directory with its parents (those
    /// there already are fine), never through a symlink, and opens it.
    pub fn create_beneath(&self, relative: &str) -> Result<OpenDir> {
        self.walk(relative, true)
    }

    fn walk(&self, relative: &str, create: bool) -> Result<OpenDir> {
        let mut current: Option<OpenDir> = None;
        for component in relative.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let parent = current.as_ref().unwrap_or(self);
            let path = parent.child(OsStr::new(component));
            if component == ".." {
                return Err(Error::UnsafePath {
                    path,
                    message: "path leaves its root (`..`); give a path inside it".into(),
                });
            }
            if create {
                match rfs::mkdirat(&parent.fd, component, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(Error::io("create", &path, e.into())),
                }
            }
            current = Some(parent.open_dir(OsStr::new(component))?);
        }
        match current {
            Some(dir) => Ok(dir),
            None => Ok(OpenDir {
                fd: rfs::openat(&self.fd, ".", dir_flags(), Mode::empty())
                    .map_err(|e| Error::io("open", &self.path, e.into()))?,
                path: self.path.clone(),
                tree: self.tree,
            }),
        }
    }

    /// Opens directory `name` of this directory, refusing a symlink.
    fn open_dir(&self, name: &OsStr) -> Result<OpenDir> {
        let path = self.child(name);
        let fd = rfs::openat(&self.fd, name, dir_flags(), Mode::empty()).map_err(|e| match e {
            Errno::NOENT if self.tree == Tree::Install => not_installed(path.clone()),
            e if is_symlink_refusal(e) => self.unsafe_path(path.clone(), true),
            Errno::NOTDIR => {
                let symlink = self
                    .lstat(name)
                    .is_ok_and(|st| st.is_some_and(|st| stat::file_type(&st) == FileType::Symlink));
                self.unsafe_path(path.clone(), symlink)
            }
            e => Error::io("open", &path, e.into()),
        })?;
        Ok(OpenDir {
            fd,
            path,
            tree: self.tree,
        })
    }

    fn unsafe_path(&self, path: PathBuf, symlink: bool) -> Error {
        Error::UnsafePath {
            path,
            message: if symlink {
                self.tree.symlink_message().into()
            } else {
                "is not a directory".into()
            },
        }
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
        dir_entries(self.fd.as_fd(), &self.path)
    }
}

impl AsFd for OpenDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The names in the open directory `fd` (named `path` in messages), sorted
/// bytewise. Reads through a fresh description of `fd`, never by path.
pub(crate) fn dir_entries(fd: BorrowedFd<'_>, path: &Path) -> Result<Vec<OsString>> {
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

/// A missing installed entry.
pub(crate) fn not_installed(path: PathBuf) -> Error {
    Error::NotFound {
        path,
        hint: NOT_INSTALLED_HINT.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    fn unsafe_message(e: &Error) -> &str {
        match e {
            Error::UnsafePath { message, .. } => message,
            e => panic!("not an unsafe path: {e}"),
        }
    }

    #[test]
    fn opening_beneath_never_goes_through_a_symlink_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, outside) = (dir.path().join("tree"), dir.path().join("outside"));
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::create_dir_all(tree.join("a")).unwrap();
        fs::write(tree.join("file"), "").unwrap();
        symlink(&outside, tree.join("a/link")).unwrap();
        let top = OpenDir::open(&tree, Tree::Install).unwrap();

        let e = top.open_beneath("a/link/sub").unwrap_err();
        assert!(e.to_string().contains("a/link"), "{e}");
        assert_eq!(
            unsafe_message(&e),
            "is a symlink; fruix never follows symlinks in a build's install tree"
        );
        let e = top.open_beneath("file/sub").unwrap_err();
        assert_eq!(unsafe_message(&e), "is not a directory");
        let e = top.open_beneath("a/../a").unwrap_err();
        assert!(unsafe_message(&e).contains("`..`"), "{e}");
        let e = top.open_beneath("a/missing/deeper").unwrap_err();
        assert!(
            matches!(&e, Error::NotFound { path, hint }
                if path.ends_with("a/missing") && hint == NOT_INSTALLED_HINT),
            "{e}"
        );
        assert_eq!(top.open_beneath("a").unwrap().path(), tree.join("a"));
        assert_eq!(
            top.open_beneath("").unwrap().entries().unwrap(),
            ["a", "file"]
        );
    }

    #[test]
    fn creating_beneath_never_goes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir_all(&root).unwrap();
        symlink(&outside, root.join("artifacts")).unwrap();
        let top = OpenDir::open(&root, Tree::ResultRoot).unwrap();
        let e = top.create_beneath("artifacts/kernel/boot").unwrap_err();
        assert_eq!(
            unsafe_message(&e),
            "is a symlink; fruix never follows symlinks in a result root"
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

        let made = top.create_beneath("a/b/c").unwrap();
        assert_eq!(made.path(), root.join("a/b/c"));
        assert!(root.join("a/b/c").is_dir());
        top.create_beneath("a/b/c").unwrap();
    }
}
