//! Opening entries of an untrusted tree without ever following a symlink:
//! directories and files relative to their parent's descriptor, with
//! `O_NOFOLLOW`, their type checked with `fstat` on the descriptor. The
//! directories are opened by [`crate::dir`], for a [`TreeKind::READ`] tree.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::dir::{self, OpenDir, TreeKind};
use crate::error::{Error, Result};

/// Opens directory `path` for walking, refusing a symlink
/// ([`OpenDir::open_nofollow`] of a [`TreeKind::READ`] tree).
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    OpenDir::open_nofollow(path, TreeKind::READ).map(OwnedFd::from)
}

/// Opens `relative` (slash-separated components) beneath the open directory
/// `root`, one component at a time, each with `O_NOFOLLOW | O_DIRECTORY`: no
/// symlink anywhere on the way is followed ([`OpenDir::open_beneath`] of a
/// [`TreeKind::READ`] tree). `root_path` names `root` in messages.
pub fn open_beneath(root: &OwnedFd, root_path: &Path, relative: &str) -> Result<OwnedFd> {
    dir::walk(root.as_fd(), root_path, TreeKind::READ, relative, false).map(OwnedFd::from)
}

/// Opens regular file `relative` (bytes: a name need not be UTF-8)
/// beneath the open directory `root`, no symlink followed on the way, its
/// type checked on the descriptor. `root_path` names `root` in messages.
/// To open many files of one tree, [`FilesBeneath`] keeps the directories
/// on the way open.
pub fn open_file_beneath(root: &OwnedFd, root_path: &Path, relative: &[u8]) -> Result<File> {
    FilesBeneath::new(root, root_path).open(relative)
}

/// Opens regular files beneath one open directory, as
/// [`open_file_beneath`] does, keeping open the directories on the way to
/// the last one: files in a manifest's order (a directory's files
/// together) cost one `openat` each, not one per directory above them.
pub struct FilesBeneath<'a> {
    root: &'a OwnedFd,
    root_path: &'a Path,
    /// The directories open, from `root` down: each one's name and
    /// descriptor.
    open: Vec<(Vec<u8>, OwnedFd)>,
}

impl<'a> FilesBeneath<'a> {
    /// Opens files beneath `root`, which `root_path` names in messages.
    pub fn new(root: &'a OwnedFd, root_path: &'a Path) -> Self {
        FilesBeneath {
            root,
            root_path,
            open: Vec::new(),
        }
    }

    /// Opens regular file `relative` (slash-separated components, bytes),
    /// each directory on the way with `O_NOFOLLOW | O_DIRECTORY`, the file
    /// with `O_NOFOLLOW` and its type checked on the descriptor.
    pub fn open(&mut self, relative: &[u8]) -> Result<File> {
        let full = self.root_path.join(OsStr::from_bytes(relative));
        let (dirs, name) = match relative.iter().rposition(|b| *b == b'/') {
            Some(i) => (&relative[..i], &relative[i + 1..]),
            None => (&b""[..], relative),
        };
        let dirs: Vec<&[u8]> = dirs
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        let kept = self
            .open
            .iter()
            .zip(&dirs)
            .take_while(|((open, _), dir)| open.as_slice() == **dir)
            .count();
        self.open.truncate(kept);
        for dir in &dirs[kept..] {
            let mut path = self.root_path.to_path_buf();
            path.extend(self.open.iter().map(|(n, _)| OsStr::from_bytes(n)));
            path.push(OsStr::from_bytes(dir));
            if *dir == b".." {
                return Err(Error::UnsafePath {
                    path,
                    message: "path leaves its root (`..`); give a path inside it".into(),
                });
            }
            let parent = self.open.last().map_or(self.root, |(_, fd)| fd);
            let fd = dir::open_child(
                parent.as_fd(),
                OsStr::from_bytes(dir),
                &path,
                TreeKind::READ,
            )?;
            self.open.push((dir.to_vec(), fd));
        }
        let parent = self.open.last().map_or(self.root, |(_, fd)| fd);
        let fd = rfs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", &full, e.into()))?;
        let st = rfs::fstat(&fd).map_err(|e| Error::io("inspect", &full, e.into()))?;
        if stat::file_type(&st) != FileType::RegularFile {
            return Err(Error::UnsafePath {
                path: full,
                message: "is not a regular file".into(),
            });
        }
        Ok(File::from(fd))
    }
}

/// The fields of a `stat` the walk uses, as fixed-width numbers (their C
/// types differ between Linux and FreeBSD).
#[allow(clippy::unnecessary_cast)]
pub mod stat {
    use rustix::fs::{FileType, Stat};

    /// Permission and special bits.
    pub fn mode(st: &Stat) -> u32 {
        st.st_mode as u32 & 0o7777
    }
    /// The file type.
    pub fn file_type(st: &Stat) -> FileType {
        FileType::from_raw_mode(st.st_mode as _)
    }
    /// Size in bytes.
    pub fn size(st: &Stat) -> u64 {
        st.st_size as u64
    }
    /// Modification time, seconds.
    pub fn mtime(st: &Stat) -> i64 {
        st.st_mtime as i64
    }
    /// Modification time, seconds and nanoseconds.
    pub fn mtime_ns(st: &Stat) -> (i64, i64) {
        (st.st_mtime as i64, st.st_mtime_nsec as i64)
    }
    /// Owner's user id.
    pub fn uid(st: &Stat) -> u32 {
        st.st_uid as u32
    }
    /// Group id.
    pub fn gid(st: &Stat) -> u32 {
        st.st_gid as u32
    }
    /// Hard link count.
    pub fn nlink(st: &Stat) -> u64 {
        st.st_nlink as u64
    }
    /// Device.
    pub fn dev(st: &Stat) -> u64 {
        st.st_dev as u64
    }
    /// Inode number.
    pub fn ino(st: &Stat) -> u64 {
        st.st_ino as u64
    }
}

/// A failure because the tree changed under the walk.
pub fn changed(path: PathBuf, what: &str) -> Error {
    Error::UnsafePath {
        path,
        message: format!(
            "{what}: the tree changed while fruix was reading it; make sure nothing writes to it, then try again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read(file: File) -> String {
        let mut text = String::new();
        (&file).read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn files_beneath_keeps_the_directories_on_the_way_open_and_follows_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path();
        let odd = OsStr::from_bytes(b"d\xff");
        for (path, text) in [
            ("a/b/f1", "1"),
            ("a/b/f2", "2"),
            ("a/c/f3", "3"),
            ("g", "4"),
        ] {
            std::fs::create_dir_all(top.join(path).parent().unwrap()).unwrap();
            std::fs::write(top.join(path), text).unwrap();
        }
        std::fs::create_dir(top.join(odd)).unwrap();
        std::fs::write(top.join(odd).join("f"), "odd").unwrap();
        std::os::unix::fs::symlink(top.join("a"), top.join("link")).unwrap();
        std::os::unix::fs::symlink(top.join("g"), top.join("a/flink")).unwrap();
        let root = open_dir(top).unwrap();
        let mut files = FilesBeneath::new(&root, top);
        assert_eq!(read(files.open(b"a/b/f1").unwrap()), "1");
        // `a/b` stays open: renamed away, its next file is still found
        // through it, not by path again.
        std::fs::rename(top.join("a/b"), top.join("a/moved")).unwrap();
        assert_eq!(read(files.open(b"a/b/f2").unwrap()), "2");
        assert_eq!(read(files.open(b"a/c/f3").unwrap()), "3");
        assert_eq!(read(files.open(b"g").unwrap()), "4");
        assert_eq!(read(files.open(b"d\xff/f").unwrap()), "odd");
        // A link to a file is not opened (O_NOFOLLOW).
        assert!(files.open(b"a/flink").is_err());
        for refused in [&b"link/c/f3"[..], b"a/../g", b"a/c"] {
            let e = files.open(refused).unwrap_err();
            assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
        }
    }
}
