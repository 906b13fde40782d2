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
//! The directories on the way are opened one at a time beneath the tree,
//! never through a symlink, and each answer is kept, so a directory is
//! looked at once however many files it holds.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

use fruix_core::dir::{dir_flags, is_symlink_refusal};
use fruix_core::manifest::stat;
use fruix_core::manifest::OpenFile;
use rustix::fs::{self as rfs, Mode};

/// Read permission, in the "other" position of a mode.
const READ: u32 = 0o4;
/// Search permission (of a directory), in the "other" position of a mode.
const SEARCH: u32 = 0o1;

/// A user for whom a tree is read: their id and groups, and what is known
/// of the tree's directories.
pub(crate) struct Reader {
    uid: u32,
    /// The user's groups (their primary group included), from the user
    /// database; none when the user has no entry there.
    groups: Vec<u32>,
    /// The top directory of the tree, as the walk reads it.
    tree: OwnedFd,
    /// Whether the user can reach each directory looked at (path relative
    /// to the tree), or why not.
    dirs: Mutex<HashMap<Vec<u8>, Result<(), String>>>,
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
    Reader::for_user(owner_of(tree)?, tree)
}

impl Reader {
    /// Reads the tree open at `tree` for user `uid`, if any.
    pub(crate) fn for_user(uid: Option<u32>, tree: &OwnedFd) -> fruix_core::Result<Option<Reader>> {
        let Some(uid) = uid else {
            return Ok(None);
        };
        let tree = tree
            .try_clone()
            .map_err(|e| fruix_core::Error::system(format!("cannot open a tree again: {e}")))?;
        Ok(Some(Reader {
            uid,
            groups: groups_of(uid),
            tree,
            dirs: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether this user may do `what` ([`READ`], [`SEARCH`]) to an entry
    /// of user `uid` and group `gid` with permission bits `mode`: the first
    /// class the user is in decides, as the kernel does. Their own entries
    /// are theirs.
    fn may(&self, uid: u32, gid: u32, mode: u32, what: u32) -> bool {
        match () {
            _ if uid == self.uid => true,
            _ if self.groups.contains(&gid) => mode & (what << 3) != 0,
            _ => mode & what != 0,
        }
    }

    /// Refuses `file` (of the tree at `display`) unless this user could
    /// read it: see the module's description.
    pub(crate) fn check(&self, file: &OpenFile<'_>, display: &Path) -> fruix_core::Result<()> {
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
        let parent = match file.path.iter().rposition(|&b| b == b'/') {
            Some(end) => &file.path[..end],
            None => return Ok(()),
        };
        self.reach(parent, display).map_err(refuse)
    }

    /// Whether this user can reach directory `dir` (relative to the tree,
    /// not empty): every directory on the way lets them through.
    fn reach(&self, dir: &[u8], display: &Path) -> Result<(), String> {
        let mut known = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(answer) = known.get(dir) {
            return answer.clone();
        }
        let mut current: Option<OwnedFd> = None;
        let mut answer = Ok(());
        let mut end = 0;
        for component in dir.split(|&b| b == b'/') {
            end += component.len();
            let path = &dir[..end];
            end += 1;
            let name = OsStr::from_bytes(component);
            let parent = current.as_ref().map_or(self.tree.as_fd(), |d| d.as_fd());
            let opened = rfs::openat(parent, name, dir_flags(), Mode::empty());
            let shown =
                || fruix_core::escape::path(&display.join(OsStr::from_bytes(path))).to_string();
            let fd = match opened {
                Ok(fd) => fd,
                Err(e) if is_symlink_refusal(e) => {
                    answer = Err(format!("is below {}, now a symlink", shown()));
                    break;
                }
                Err(e) => {
                    answer = Err(format!("is below {}, which cannot be opened: {e}", shown()));
                    break;
                }
            };
            if let Some(earlier) = known.get(path) {
                answer = earlier.clone();
                if answer.is_err() {
                    break;
                }
            } else {
                let st = rfs::fstat(&fd).map_err(|e| format!("cannot inspect {}: {e}", shown()))?;
                let (uid, gid, mode) = (stat::uid(&st), stat::gid(&st), stat::mode(&st));
                let through = match self.may(uid, gid, mode, SEARCH) {
                    true => Ok(()),
                    false => Err(format!(
                        "is below {}, a directory of user {uid} and group {gid}, mode {mode:04o}, which user {} cannot enter: fruix, as root, adds only what the tree's owner could read; remove it, or let the owner in",
                        shown(),
                        self.uid
                    )),
                };
                known.insert(path.to_vec(), through.clone());
                if through.is_err() {
                    answer = through;
                    break;
                }
            }
            current = Some(fd);
        }
        known.insert(dir.to_vec(), answer.clone());
        answer
    }
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
