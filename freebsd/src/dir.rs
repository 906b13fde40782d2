//! Directories of install trees and result roots, opened by descriptor.
//!
//! A build writes its install trees, and a process it leaves behind may
//! change them while fruix slices them: any directory on the way to an entry
//! may have become a symlink to anywhere on the host. So only the top
//! directory, whose path fruix chose, is opened by path; everything below it
//! is opened relative to its parent's descriptor, one component at a time,
//! with `O_NOFOLLOW | O_DIRECTORY`. A symlink on the way is an
//! [`Error::UnsafePath`], never followed.
//!
//! The opener is [`fruix_core::dir`]'s [`OpenDir`]; this module says what
//! the trees of a FreeBSD build are ([`Tree`]): how a symlink's refusal names
//! them, and that a missing entry of an install tree is one the build did
//! not install.

use std::path::PathBuf;

use fruix_core::dir::TreeKind;
use fruix_core::Error;

pub use fruix_core::dir::OpenDir;

use crate::tree::NOT_INSTALLED_HINT;

/// Which kind of tree a directory belongs to, for messages: passed where
/// [`OpenDir`] takes a [`TreeKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// An install tree a build wrote (untrusted): a missing component is
    /// [`Error::NotFound`] with [`NOT_INSTALLED_HINT`].
    Install,
    /// A result root, written by fruix: a missing component is an I/O
    /// failure.
    ResultRoot,
}

/// The [`TreeKind`] of an install tree.
const INSTALL_TREE: TreeKind =
    TreeKind::named("a build's install tree").missing_hint(NOT_INSTALLED_HINT);

/// The [`TreeKind`] of a result root.
const RESULT_ROOT: TreeKind = TreeKind::named("a result root");

impl From<Tree> for TreeKind {
    fn from(tree: Tree) -> TreeKind {
        match tree {
            Tree::Install => INSTALL_TREE,
            Tree::ResultRoot => RESULT_ROOT,
        }
    }
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
