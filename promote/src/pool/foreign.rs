//! Why a hard link from the pool failed: an entry another user owns is
//! named as such (`EPERM`: Linux's `fs.protected_hardlinks` forbids linking
//! another user's file), anything else as the system said it.

use rustix::fs::{self as rfs, AtFlags};
use rustix::io::Errno;

use super::{Destination, Pool};
use crate::error::Error;

impl Pool {
    /// The error of linking entry `key` to `to`, which failed with `e`:
    /// [`Error::ForeignPoolEntry`] when it is `EPERM` and the entry (looked
    /// at beneath the pool's descriptor, never following a symlink) is
    /// another user's, else the system's error naming `to`.
    pub(super) fn link_failed(&self, key: &str, to: Destination<'_>, e: Errno) -> Error {
        let user = rustix::process::geteuid().as_raw();
        let st = (e == Errno::PERM)
            .then(|| rfs::statat(&self.dir, key, AtFlags::SYMLINK_NOFOLLOW).ok())
            .flatten();
        match st {
            Some(st) if st.st_uid != user => Error::ForeignPoolEntry {
                entry: self.path.join(key),
                destination: to.display.to_path_buf(),
                owner: st.st_uid,
                user,
            },
            _ => fruix_core::Error::io("link from the store pool", to.display, e.into()).into(),
        }
    }
}
