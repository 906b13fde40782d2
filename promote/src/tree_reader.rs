//! For whom root reads another user's tree: only what that user could read
//! enters the store, which anyone may read.
//!
//! When root adds a user's source tree or promotes a user's result root, a
//! file the user could not read (another user's, reached through a hard
//! link, or below another user's private directory) would otherwise be
//! published to everyone. So each file of someone else's must be readable
//! by the tree's owner, as the kernel decides it: by the owner's bits when
//! the owner is the file's, by the group's when the file's group is one of
//! the owner's groups (a group-shared checkout), by everyone's otherwise;
//! and every directory of someone else's on the way from the tree's top
//! must let the owner through (its search bit, by the same rule). What the
//! owner owns is theirs to read (they may change its mode).
//!
//! Directories are checked as the walk reads them, on the very descriptor
//! it lists them through ([`Reader::check_dir`]): a directory swapped for
//! another between a check and the read cannot pass one for the other. A
//! directory of someone else's the owner cannot list and enter ends the
//! walk, whatever it holds. An entry of someone else's carrying an access
//! ACL (Linux's `system.posix_acl_access`) is refused too: fruix does not
//! evaluate ACLs, which may grant or deny what the mode bits say.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use fruix_core::manifest::stat;
use fruix_core::manifest::OpenFile;
use rustix::fs as rfs;

/// Read permission, in the "other" position of a mode.
const READ: u32 = 0o4;
/// Permission to list and enter a directory, in the "other" position of a
/// mode.
const LIST_AND_ENTER: u32 = 0o5;

/// A user for whom a tree is read: their id and groups.
pub(crate) struct Reader {
    uid: u32,
    /// The user's groups (their primary group included), from the user
    /// database; none when the user has no entry there.
    groups: Vec<u32>,
}

/// The owner of the directory open at `dir`, when this process is root and
/// it is someone else: the user a tree is read for.
pub(crate) fn owner_of(dir: &OwnedFd) -> fruix_core::Result<Option<u32>> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let owner = rfs::fstat(dir)
        .map_err(|e| fruix_core::Error::system(format!("cannot inspect a tree's directory: {e}")))?
        .st_uid;
    Ok((owner != 0).then_some(owner))
}

/// The [`Reader`] of the tree open at `tree`, for its owner ([`owner_of`]).
pub(crate) fn reader_of(tree: &OwnedFd) -> fruix_core::Result<Option<Reader>> {
    Ok(Reader::for_user(owner_of(tree)?))
}

impl Reader {
    /// Reads a tree for user `uid`, if any.
    pub(crate) fn for_user(uid: Option<u32>) -> Option<Reader> {
        uid.map(|uid| Reader {
            uid,
            groups: groups_of(uid),
        })
    }

    /// Whether this user may do all of `what` ([`READ`],
    /// [`LIST_AND_ENTER`]) to an entry of user `uid` and group `gid` with permission bits `mode`: the first
    /// class the user is in decides, as the kernel does. Their own entries
    /// are theirs.
    fn may(&self, uid: u32, gid: u32, mode: u32, what: u32) -> bool {
        let class = match () {
            _ if uid == self.uid => return true,
            _ if self.groups.contains(&gid) => mode >> 3,
            _ => mode,
        };
        class & what == what
    }

    /// Refuses `file` unless this user could read it: see the module's
    /// description.
    pub(crate) fn check(&self, file: &OpenFile<'_>) -> fruix_core::Result<()> {
        let (uid, mode) = file.owner;
        let refuse = |message: String| fruix_core::Error::UnsafePath {
            path: file.full_path(),
            message,
        };
        if !self.may(uid, file.group, mode, READ) {
            return Err(refuse(format!(
                "belongs to user {uid} and group {}, mode {mode:04o}, which user {} cannot read (a hard link to another user's file?): fruix, as root, adds only what the tree's owner could read; remove it, or make it readable",
                file.group, self.uid
            )));
        }
        self.refuse_acl(file.file.as_fd(), uid).map_err(refuse)
    }

    /// Refuses directory `path` (relative to the tree at `display`), open
    /// at `dir` with status `st`, unless this user could list and enter it:
    /// see the module's description. Called by the walk
    /// ([`fruix_core::manifest::CheckDir`]) before it reads the directory.
    pub(crate) fn check_dir(
        &self,
        dir: BorrowedFd<'_>,
        st: &rfs::Stat,
        path: &[u8],
        display: &Path,
    ) -> fruix_core::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let (uid, gid, mode) = (stat::uid(st), stat::gid(st), stat::mode(st));
        let refuse = |message: String| fruix_core::Error::UnsafePath {
            path: display.join(std::ffi::OsStr::from_bytes(path)),
            message,
        };
        if !self.may(uid, gid, mode, LIST_AND_ENTER) {
            return Err(refuse(format!(
                "is a directory of user {uid} and group {gid}, mode {mode:04o}, which user {} cannot list and enter: fruix, as root, adds only what the tree's owner could read; remove it, or let the owner in",
                self.uid
            )));
        }
        self.refuse_acl(dir, uid).map_err(refuse)
    }

    /// Why an entry of user `uid` open at `fd` is refused for the access
    /// ACL it carries, if it does and is not this user's: fruix does not
    /// evaluate ACLs (Linux; elsewhere the mode bits alone are read).
    fn refuse_acl(&self, fd: BorrowedFd<'_>, uid: u32) -> Result<(), String> {
        if uid == self.uid || !has_access_acl(fd) {
            return Ok(());
        }
        Err(format!(
            "belongs to user {uid} and carries an access ACL, which fruix does not evaluate (it may grant or deny user {} what the mode says): fruix, as root, adds only what the tree's owner could read; remove the ACL (setfacl -b), or make the owner its owner",
            self.uid
        ))
    }
}

/// Whether the entry open at `fd` carries an access ACL beyond its mode
/// bits (Linux: the `system.posix_acl_access` attribute, which the kernel
/// keeps only for an ACL the mode cannot say).
#[cfg(target_os = "linux")]
fn has_access_acl(fd: BorrowedFd<'_>) -> bool {
    let mut value = [0u8; 0];
    match rfs::fgetxattr(fd, "system.posix_acl_access", &mut value) {
        Ok(_) | Err(rustix::io::Errno::RANGE) => true,
        // No such attribute, or a file system without ACLs.
        Err(_) => false,
    }
}

/// Whether the entry open at `fd` carries an access ACL: not read here.
#[cfg(not(target_os = "linux"))]
fn has_access_acl(_fd: BorrowedFd<'_>) -> bool {
    false
}

/// The groups of user `uid` (their primary group first), from the user
/// database; none when it has no entry for them, or cannot be read.
fn groups_of(uid: u32) -> Vec<u32> {
    use nix::unistd::{getgrouplist, Uid, User};
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name.as_bytes()) else {
        return vec![user.gid.as_raw()];
    };
    match getgrouplist(&name, user.gid) {
        Ok(groups) => groups.into_iter().map(|g| g.as_raw()).collect(),
        Err(_) => vec![user.gid.as_raw()],
    }
}
