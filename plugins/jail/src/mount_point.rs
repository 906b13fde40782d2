//! Mount points in the jail root: the directories a run creates there for
//! its nullfs mounts, each recorded so that its cleanup removes exactly
//! those, innermost first, and only while they are empty (never what was
//! there before, nor what someone put in them).

use std::path::{Path, PathBuf};

use fruix_core::{Error, Result};

/// Creates the directory `path` of the host inside `jail_root`
/// (`JAIL_ROOT/PATH`) with the parents it lacks, adding each directory it
/// creates to `created`, outermost first. What it created before a failure
/// is in `created` too.
pub fn create(jail_root: &Path, path: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    let mut dir = jail_root.to_path_buf();
    for part in path.strip_prefix("/").unwrap_or(path).components() {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => created.push(dir.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create mount point", &dir, e)),
        }
    }
    Ok(())
}

/// Removes the directories of `created` (as [`create`] recorded them)
/// innermost first, each only if it is empty: one something was put in is
/// left, and so are its parents. A missing one is fine. The first other
/// failure (one still mounted, say) is returned, after trying them all.
pub fn remove(created: &[PathBuf]) -> Result<()> {
    let mut first_error = None;
    for dir in created.iter().rev() {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {}
            Err(e) => {
                first_error.get_or_insert(Error::io("remove mount point", dir, e));
            }
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
        remove(&created).unwrap();
        let mut left: Vec<_> = walk(&jail);
        left.sort();
        assert_eq!(
            left,
            ["tmp", "tmp/a", "tmp/a/c", "tmp/a/c/kept", "usr", "usr/bin"].map(|p| jail.join(p))
        );
        remove(&created).unwrap();
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
        assert!(e.to_string().contains("create mount point"), "{e}");
        assert_eq!(created, [jail.join("a"), jail.join("a/b")]);
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
