//! Moving and copying installed trees into artifact trees, and removing work
//! directories.
//!
//! # Contract
//!
//! - No symlink is ever followed: a symlink is recreated with its target
//!   verbatim (absolute and dangling targets included).
//! - Copies keep permission bits including setuid, setgid and sticky; owners
//!   and groups when running as root (as an unprivileged user every copy is
//!   the user's anyway); and hard links between files of one copied tree.
//!   Timestamps are not kept: the store canonicalises them.
//! - Device nodes, FIFOs and sockets are refused with the path named: they
//!   cannot be part of an artifact tree.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fruix_core::error::IoContext;
use fruix_core::{Error, Result};

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
/// parents of `dst`. `dst` must not exist.
pub fn place(src: &Path, dst: &Path, transfer: Transfer) -> Result<()> {
    if src.symlink_metadata().is_err() {
        return Err(Error::NotFound {
            path: src.to_path_buf(),
            hint: NOT_INSTALLED_HINT.into(),
        });
    }
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).with_path("create", parent)?;
    }
    if transfer == Transfer::Move && fs::rename(src, dst).is_ok() {
        return Ok(());
    }
    copy_tree(src, dst)
}

/// The names in directory `dir`, sorted bytewise.
pub fn entries(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)
        .with_path("read directory", dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_path("read directory", dir)?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    Ok(names)
}

/// Copies the entry at `src` to `dst` under the rules of the module docs.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut copier = Copier {
        as_root: rustix::process::geteuid().is_root(),
        links: HashMap::new(),
    };
    copier.copy(src, dst)
}

struct Copier {
    as_root: bool,
    /// Files with several links already copied: (device, inode) → copy.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier {
    fn copy(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(src).with_path("inspect", src)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = fs::read_link(src).with_path("read symlink", src)?;
            std::os::unix::fs::symlink(&target, dst).with_path("create symlink", dst)?;
        } else if kind.is_dir() {
            fs::create_dir(dst).with_path("create directory", dst)?;
            for name in entries(src)? {
                self.copy(&src.join(&name), &dst.join(&name))?;
            }
        } else if kind.is_file() {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                // Shares the first copy's inode, owner and mode.
                return fs::hard_link(first, dst).with_path("create hard link", dst);
            }
            fs::copy(src, dst).with_path("copy", src)?;
            if meta.nlink() > 1 {
                self.links.insert(key, dst.to_path_buf());
            }
        } else {
            return Err(Error::UnsupportedFileType {
                path: src.to_path_buf(),
                kind: "a special file (device node, FIFO or socket)",
            });
        }
        if self.as_root {
            std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
                .with_path("set owner of", dst)?;
        }
        if !kind.is_symlink() {
            // After chown, which clears setuid and setgid.
            fs::set_permissions(dst, Permissions::from_mode(meta.mode() & 0o7777))
                .with_path("set mode of", dst)?;
        }
        Ok(())
    }
}

/// Removes `dir` and everything in it; a missing `dir` is fine. When a plain
/// removal fails, makes every directory writable (and, on FreeBSD, clears
/// file flags such as `schg`) and tries again.
pub fn remove_tree(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            make_removable(dir);
            match fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("remove work directory", dir, e))
                }
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Best effort: lets the owner remove everything below `path`.
fn make_removable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    clear_flags(path);
    if meta.is_dir() {
        let _ = fs::set_permissions(path, Permissions::from_mode((meta.mode() & 0o7777) | 0o700));
        if let Ok(names) = entries(path) {
            for name in names {
                make_removable(&path.join(name));
            }
        }
    }
}

/// Clears BSD file flags (`schg`, `uunlnk`, ...) that forbid removal.
#[cfg(target_os = "freebsd")]
fn clear_flags(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
        unsafe { libc::lchflags(c.as_ptr(), 0) };
    }
}

/// Other systems have no file flags that outlive the permission bits.
#[cfg(not(target_os = "freebsd"))]
fn clear_flags(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::manifest::tree_signature;

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
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = copy_tree(&fifo, &dir.path().join("copy")).unwrap_err();
        assert!(matches!(e, Error::UnsupportedFileType { .. }), "{e}");
    }

    #[test]
    fn removing_a_missing_tree_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        remove_tree(&dir.path().join("never-made")).unwrap();
    }
}
