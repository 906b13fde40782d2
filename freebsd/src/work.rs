//! The work directory of a build: where it is, and what is in it (the object
//! tree and the install trees, make's `MAKEOBJDIRPREFIX` and `DESTDIR`s).

use std::path::{Path, PathBuf};

use fruix_core::error::IoContext;
use fruix_core::{Error, Result};
use sha2::{Digest, Sha256};

use crate::tree::remove_tree;

/// `MAKEOBJDIRPREFIX`, inside the work directory.
pub const OBJ_DIR: &str = "obj";
/// `DESTDIR` of `installworld` and `distribution`, inside the work directory.
pub const WORLD_DESTDIR: &str = "world";
/// `DESTDIR` of `installkernel`, inside the work directory.
pub const KERNEL_DESTDIR: &str = "kernel";

/// The directories a work directory starts with.
pub const WORK_SUBDIRS: [&str; 3] = [OBJ_DIR, WORLD_DESTDIR, KERNEL_DESTDIR];

/// What a fast exit (a second Ctrl-C) calls a build's work directory that
/// it leaves behind ([`fruix_core::at_exit`]).
pub const WORK_DIR_AT_EXIT: &str = "the build's work directory";

/// Where the work directory of the run into `result_root` goes.
///
/// With no `parent`, next to the result root: `RESULT_ROOT.work` (same
/// filesystem, so installed trees move into the result root by rename). With
/// a `parent`, `PARENT/RUN-ID-HASH`, where HASH is the first 12 hex digits of
/// the SHA-256 of the result root's canonical path: one directory per result
/// root, so runs never share one. The result root must exist.
pub fn work_dir_for(result_root: &Path, run_id: &str, parent: Option<&Path>) -> Result<PathBuf> {
    let root = std::fs::canonicalize(result_root).with_path("resolve result root", result_root)?;
    let name = root
        .file_name()
        .ok_or_else(|| Error::InvalidRequest {
            message: format!(
                "result root {} has no name to derive a work directory from",
                root.display()
            ),
        })?
        .to_owned();
    Ok(match parent {
        None => {
            let mut work = name;
            work.push(".work");
            root.with_file_name(work)
        }
        Some(parent) => {
            let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
            parent.join(format!("{run_id}-{}", &hex::encode(digest)[..12]))
        }
    })
}

/// Makes `work` a fresh work directory holding [`WORK_SUBDIRS`]. Anything
/// already there is a crashed run's leftover and is removed first.
/// Blocking.
pub fn prepare_work_dir(work: &Path) -> Result<()> {
    remove_tree(work)?;
    for sub in WORK_SUBDIRS {
        let dir = work.join(sub);
        std::fs::create_dir_all(&dir).with_path("create work directory", &dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dir_is_next_to_the_result_root_or_unique_under_a_parent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("20260405T213444Z");
        std::fs::create_dir(&root).unwrap();
        let with_slash = PathBuf::from(format!("{}/", root.display()));
        assert_eq!(
            work_dir_for(&with_slash, "x", None).unwrap(),
            root.with_file_name("20260405T213444Z.work")
        );
        let other = dir.path().join("other/20260405T213444Z");
        std::fs::create_dir_all(&other).unwrap();
        let a = work_dir_for(&root, "20260405T213444Z", Some(Path::new("/w"))).unwrap();
        let b = work_dir_for(&other, "20260405T213444Z", Some(Path::new("/w"))).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/w")));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("20260405T213444Z-"), "{name}");
    }

    #[test]
    fn preparing_replaces_a_stale_work_dir() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("r.work");
        std::fs::create_dir_all(work.join("world/stale")).unwrap();
        prepare_work_dir(&work).unwrap();
        assert!(!work.join("world/stale").exists());
        for sub in WORK_SUBDIRS {
            assert!(work.join(sub).is_dir(), "{sub}");
        }
    }
}
