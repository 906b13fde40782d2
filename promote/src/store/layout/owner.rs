//! Whether this process may remove a store object: another user's is
//! refused unless this process is root, since only an object's owner (or
//! root) may make its read-only directories writable again to empty them;
//! and one with a file system mounted in it is refused to everyone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::gc::Refused;

impl crate::store::Store {
    /// Checks that this process may remove `path`, an object directory (or
    /// a hidden temporary) of this store, before anything is changed: root
    /// may remove anything, another user only what they own
    /// ([`Error::NotOwner`]). The owner is read on the directory's own
    /// descriptor, opened beneath its parent without following a symlink.
    /// What is gone, or no directory (a symlink, a file), is left to the
    /// removal, which unlinks it. A directory with a file system mounted at
    /// or below it is refused to root too
    /// ([`fruix_core::remove::MountedInside`]): removing it would empty
    /// what is mounted there.
    pub fn may_remove(&self, path: &Path) -> Result<()> {
        if fs_is_dir(path) {
            fruix_core::remove::refuse_mounts(path)
                .map_err(|e| fruix_core::Error::io("remove", path, e))?;
        }
        let user = rustix::process::geteuid();
        if user.is_root() {
            return Ok(());
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(());
        };
        let Some(owner) = owner_of(parent, name.as_ref()) else {
            return Ok(());
        };
        match owner == user.as_raw() {
            true => Ok(()),
            false => Err(Error::NotOwner {
                object: path.to_path_buf(),
                owner,
                user: user.as_raw(),
            }),
        }
    }

    /// `order` (dead objects, referrers first) without those this process may
    /// not remove ([`Self::may_remove`]) and those they reference, which stay
    /// (a reference never dangles): each goes to `refused`, saying why.
    pub(crate) fn removable(
        &self,
        order: Vec<String>,
        refused: &mut Vec<Refused>,
    ) -> Result<Vec<String>> {
        // The objects kept ones reference, with the path of one of those.
        let mut held: HashMap<String, PathBuf> = HashMap::new();
        let mut out = Vec::with_capacity(order.len());
        for name in order {
            let path = self.path().join(&name);
            let left = match (self.may_remove(&path), held.get(&name)) {
                (Err(e), _) => Refused::new(path.clone(), false, &e),
                (Ok(()), Some(by)) => Refused {
                    reason: format!(
                        "{}: left, as {} (which this collection leaves) references it",
                        fruix_core::escape::path(&path),
                        fruix_core::escape::path(by)
                    ),
                    path: path.clone(),
                    temporary: false,
                    owner: None,
                },
                (Ok(()), None) => {
                    out.push(name);
                    continue;
                }
            };
            for r in self.db().neighbours(&name, false)? {
                held.entry(r).or_insert_with(|| path.clone());
            }
            refused.push(left);
        }
        Ok(out)
    }
}

/// The owner of directory `name` in `parent`, read on its descriptor
/// (opened `O_NOFOLLOW|O_DIRECTORY`); when this user may not open it, read
/// without following a symlink. `None` when it is gone, or no directory.
fn owner_of(parent: &Path, name: &Path) -> Option<u32> {
    let parent = rfs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let st = match rfs::openat(&parent, name, flags, Mode::empty()) {
        Ok(dir) => rfs::fstat(&dir).ok()?,
        Err(Errno::ACCESS) => {
            let st = rfs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
            (rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory).then_some(st)?
        }
        Err(_) => return None,
    };
    Some(st.st_uid)
}

/// Whether `path` is a directory itself (not through a symlink).
fn fs_is_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}
