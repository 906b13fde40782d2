//! Mount points in the jail root: the directories a run creates there for
//! its nullfs mounts, each recorded so that its cleanup removes exactly
//! those, innermost first, and only while they are empty (never what was
//! there before, nor what someone put in them).
//!
//! The jail root is written by what runs in the jail, as root: a symlink a
//! build left there (`JAIL_ROOT/tmp -> /etc`) would put a mount point, and
//! the mount on it, on the host. So the directories on the way are opened
//! one at a time beneath the jail root, never through a symlink
//! ([`fruix_core::dir::OpenDir`]), and so are the parents of those removed.

use std::path::{Path, PathBuf};

use fruix_core::dir::{OpenDir, TreeKind};
use fruix_core::{Error, Result};

/// The jail root, as a refusal of a symlink in it names it.
const JAIL_ROOT: TreeKind = TreeKind::named("a jail root (a mount there would land outside it)");

/// Creates the directory `path` of the host inside `jail_root`
/// (`JAIL_ROOT/PATH`) with the parents it lacks, adding each directory it
/// creates to `created`, outermost first. What it created before a failure
/// is in `created` too. A symlink or a non-directory on the way is refused
/// ([`Error::UnsafePath`]), never followed.
pub fn create(jail_root: &Path, path: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    let mut dir = OpenDir::open(jail_root, JAIL_ROOT)?;
    for part in path.strip_prefix("/").unwrap_or(path).components() {
        let name = part.as_os_str();
        let Some(text) = name.to_str() else {
            return Err(Error::UnsafePath {
                path: dir.child(name),
                message: "is not UTF-8; mount points in a jail root must be".into(),
            });
        };
        let there = dir.lstat(name)?.is_some();
        let next = match there {
            true => dir.open_beneath(text),
            false => dir.create_beneath(text),
        }
        .map_err(|e| match e {
            Error::Io { source, .. } => Error::io("create mount point", dir.child(name), source),
            e => e,
        })?;
        if !there {
            created.push(next.path().to_path_buf());
        }
        dir = next;
    }
    Ok(())
}

/// Removes the directories of `created` (as [`create`] recorded them,
/// beneath `jail_root`) innermost first, each only if it is empty: one
/// something was put in is left, and so are its parents. A missing one is
/// fine. Each is removed from its parent opened beneath the jail root,
/// never through a symlink. The first other failure (one still mounted, a
/// parent replaced by a symlink) is returned, after trying them all.
pub fn remove(jail_root: &Path, created: &[PathBuf]) -> Result<()> {
    use rustix::fs::{unlinkat, AtFlags};
    use rustix::io::Errno;
    let root = OpenDir::open(jail_root, JAIL_ROOT)?;
    let mut first_error = None;
    for dir in created.iter().rev() {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            continue;
        };
        let relative = parent.strip_prefix(jail_root).unwrap_or(parent);
        let removed = match root.open_beneath(&relative.to_string_lossy()) {
            Ok(parent) => match unlinkat(&parent, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT | Errno::NOTEMPTY | Errno::EXIST) => Ok(()),
                Err(e) => Err(Error::io("remove mount point", dir, e.into())),
            },
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_directories_created_are_removed_and_only_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let jail = dir.path().join("jail");
        std::fs::create_dir_all(jail.join("usr/bin")).unwrap();
        let mut created = Vec::new();
        create(&jail, Path::new("/usr/src"), &mut created).unwrap();
        create(&jail, Path::new("/tmp/a/b.work"), &mut created).unwrap();
        create(&jail, Path::new("/tmp/a/c"), &mut created).unwrap();
        assert_eq!(
            created,
            ["usr/src", "tmp", "tmp/a", "tmp/a/b.work", "tmp/a/c"].map(|p| jail.join(p))
        );
        std::fs::write(jail.join("tmp/a/c/kept"), "").unwrap();
        remove(&jail, &created).unwrap();
        let mut left: Vec<_> = walk(&jail);
        left.sort();
        assert_eq!(
            left,
            ["tmp", "tmp/a", "tmp/a/c", "tmp/a/c/kept", "usr", "usr/bin"].map(|p| jail.join(p))
        );
        remove(&jail, &created).unwrap();
    }

    #[test]
    fn what_was_created_before_a_failure_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let jail = dir.path().join("jail");
        std::fs::create_dir_all(&jail).unwrap();
        std::fs::write(jail.join("file"), "").unwrap();
        let mut created = Vec::new();
        create(&jail, Path::new("/a/b"), &mut created).unwrap();
        let e = create(&jail, Path::new("/file/x"), &mut created).unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
        assert_eq!(created, [jail.join("a"), jail.join("a/b")]);
    }

    /// Regression: a symlink a build left in the jail root was followed,
    /// so the mount point (and the mount on it) was made on the host. It
    /// is refused, nothing is made outside, and a cleanup whose parent was
    /// replaced by a symlink meanwhile removes nothing through it.
    #[test]
    fn a_symlink_in_the_jail_root_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (jail, host) = (dir.path().join("jail"), dir.path().join("host"));
        std::fs::create_dir_all(&jail).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::os::unix::fs::symlink(&host, jail.join("tmp")).unwrap();
        let mut created = Vec::new();
        let e = create(&jail, Path::new("/tmp/a/b.work"), &mut created).unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
        assert!(e.to_string().contains("jail root"), "{e}");
        assert!(created.is_empty(), "{created:?}");
        assert!(
            walk(&host).is_empty(),
            "made on the host: {:?}",
            walk(&host)
        );

        std::fs::remove_file(jail.join("tmp")).unwrap();
        create(&jail, Path::new("/tmp/a/b.work"), &mut created).unwrap();
        // What runs in the jail swaps `tmp` for a symlink to the host,
        // where a directory of the same name waits.
        std::fs::rename(jail.join("tmp"), dir.path().join("moved")).unwrap();
        std::fs::create_dir_all(host.join("a/b.work")).unwrap();
        std::os::unix::fs::symlink(&host, jail.join("tmp")).unwrap();
        let e = remove(&jail, &created).unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
        assert!(host.join("a/b.work").is_dir(), "removed on the host");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            }
            out.push(e.path());
        }
        out
    }
}
