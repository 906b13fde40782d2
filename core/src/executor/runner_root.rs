//! The result root of a run: made private and marked unfinished before
//! its executor starts ([`prepare_result_root`]), its marker removed once
//! it is validated ([`remove_marker`]), and marked unfinished again after a
//! run that failed, whatever the executor did to the marker
//! ([`keep_unfinished`]).

use std::path::Path;

use super::RunContext;
use crate::error::{Error, IoContext, Problem, Result};
use crate::escape;
use crate::result_root::{self, INCOMPLETE_MARKER};

/// Creates the result root `root` (mode `0700`) and its unfinished marker;
/// whether it made the directory (not one already there, empty).
///
/// An empty directory already at `root` is taken: run id allocation
/// ([`crate::run_id::allocate_run_dir`]) makes one for each run. Anything
/// else there is refused before anything is written: a non-empty
/// directory or a file ([`Error::AlreadyExists`]), a symlink
/// ([`Error::UnsafePath`]), whatever it points to, and a directory that
/// another user owns ([`Error::UnsafePath`]), empty or not. The root is
/// opened without following a symlink; its owner is checked, and its mode
/// and the marker are set, through that descriptor, so a symlink planted
/// meanwhile is never written through either.
pub(in crate::executor) fn prepare_result_root(root: &Path) -> Result<bool> {
    use rustix::fs::{self as rfs, Mode, OFlags};
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent).with_path("create parent of result root", parent)?;
    }
    let already = |root: &Path| Error::AlreadyExists {
        path: root.to_path_buf(),
        hint: "a result root is never overwritten; choose another --result-root or remove it"
            .into(),
    };
    let created = match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(Error::io("create result root", root, e)),
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = match rfs::open(root, flags, Mode::empty()) {
        Ok(dir) => dir,
        // What is there decides (Linux says ELOOP for a symlink, FreeBSD
        // EMLINK, and both ENOTDIR for a file).
        Err(e) => {
            return Err(match std::fs::symlink_metadata(root) {
                Ok(meta) if meta.file_type().is_symlink() => Error::UnsafePath {
                    path: root.to_path_buf(),
                    message: "is a symlink; a result root is never reached through one: choose another --result-root or remove it".into(),
                },
                Ok(meta) if !meta.is_dir() => already(root),
                _ => Error::io("open result root", root, e.into()),
            })
        }
    };
    // Someone else's directory is never taken, even empty: its owner could
    // change the root after fruix made it private (as root, fruix may open
    // anyone's). What was opened decides, not the path.
    let st = rfs::fstat(&dir).map_err(|e| Error::io("inspect result root", root, e.into()))?;
    let (owner, me) = (st.st_uid, rustix::process::geteuid().as_raw());
    if owner != me {
        return Err(Error::UnsafePath {
            path: root.to_path_buf(),
            message: format!(
                "is owned by uid {owner}, not by this user (uid {me}); a result root is never another user's directory: choose another --result-root or remove it"
            ),
        });
    }
    if !created {
        let mut entries =
            rfs::Dir::read_from(&dir).map_err(|e| Error::io("read result root", root, e.into()))?;
        let mut empty = true;
        while let Some(entry) = entries.read() {
            let entry = entry.map_err(|e| Error::io("read result root", root, e.into()))?;
            if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
                empty = false;
                break;
            }
        }
        if !empty {
            return Err(already(root));
        }
    }
    // Only this user may change the root before it is promoted, whatever the umask.
    rfs::fchmod(&dir, Mode::from(0o700)).map_err(|e| Error::io("set mode of", root, e.into()))?;
    let marker = root.join(INCOMPLETE_MARKER);
    write_marker(&dir).with_path("write unfinished marker", &marker)?;
    Ok(created)
}

/// Removes the result root `root` this run made, when the run was refused
/// before it wrote anything there (it holds its unfinished marker alone):
/// a refused command leaves nothing behind. Whether it did.
pub(super) fn remove_untouched(root: &Path) -> bool {
    let only_marker = std::fs::read_dir(root).is_ok_and(|entries| {
        let names: Vec<_> = entries.flatten().map(|e| e.file_name()).take(2).collect();
        names == [INCOMPLETE_MARKER]
    });
    only_marker
        && std::fs::remove_file(root.join(INCOMPLETE_MARKER)).is_ok()
        && std::fs::remove_dir(root).is_ok()
}

/// Removes the unfinished marker of the validated result root `root`, as
/// executor `name` had to leave it: a marker it removed, or replaced with
/// anything but a file, broke the contract (the root is invalid; no
/// failure of this host).
pub(super) fn remove_marker(root: &Path, name: &str) -> Result<()> {
    let marker = root.join(INCOMPLETE_MARKER);
    let broken = |what: String| {
        result_root::invalid(
            root,
            vec![Problem {
                path: marker.clone(),
                field: None,
                line: None,
                message: format!(
                    "executor {name} {what}, which only fruix removes once the root is validated"
                ),
            }],
        )
    };
    match std::fs::symlink_metadata(&marker) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(broken("removed the unfinished marker".into()))
        }
        Err(e) => Err(Error::io("inspect unfinished marker", &marker, e)),
        Ok(meta) if !meta.is_file() => Err(broken(format!(
            "replaced the unfinished marker with a {}",
            crate::fsutil::file_type_name(meta.file_type())
        ))),
        Ok(_) => std::fs::remove_file(&marker).with_path("remove unfinished marker", &marker),
    }
}

/// After the run of executor `name` in `ctx` failed with `e`: marks its
/// result root unfinished again, whatever the executor did to the marker
/// (a stage that synced a staging tree into the root with `--delete`), so
/// that it is never promoted. When that cannot be done, a warning says
/// why, unless `e` already names the marker.
pub(super) fn keep_unfinished(e: &Error, ctx: &RunContext, name: &str) {
    let marker = ctx.result_root.join(INCOMPLETE_MARKER);
    let said = matches!(e, Error::InvalidResultRoot { problems, .. }
        if problems.iter().any(|p| p.path == marker));
    match mark_unfinished(&ctx.result_root) {
        Ok(()) => {}
        Err(_) if said => {}
        Err(Unmarked::Occupied(kind)) => ctx.events.warn(format!(
            "executor {name} left a {kind} at {}, where fruix keeps the result root's unfinished marker: fruix leaves it there, and the root cannot be promoted while anything is there",
            escape::path(&marker)
        )),
        Err(Unmarked::NoDirectory) => ctx.events.warn(format!(
            "the result root {} is no directory any more (the run replaced it): fruix never writes through what is there, and put no unfinished marker back",
            escape::path(&ctx.result_root)
        )),
        Err(Unmarked::Failed(e)) => ctx.events.warn(format!(
            "{e}; the result root {} is not marked unfinished: do not promote it",
            escape::path(&ctx.result_root)
        )),
    }
}

/// Why a failed run's result root could not be marked unfinished again.
enum Unmarked {
    /// Something else is at the marker's name, a `FIFO`, a `directory`...
    Occupied(&'static str),
    /// The result root is a symlink or a file now.
    NoDirectory,
    /// Writing the marker failed.
    Failed(Error),
}

/// Marks the result root `root` unfinished: puts the marker back when it
/// is gone. A root that is gone is left so (nothing there can be promoted).
/// The root is opened without following a symlink, and the marker made
/// through it (`O_EXCL`, `O_NOFOLLOW`); a root whose mode was changed so
/// that its owner may not write is made private again (`0700`), as
/// [`prepare_result_root`] made it.
fn mark_unfinished(root: &Path) -> std::result::Result<(), Unmarked> {
    use rustix::fs::{self as rfs, Mode, OFlags};
    use rustix::io::Errno;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = match rfs::open(root, flags, Mode::empty()) {
        Ok(dir) => dir,
        Err(Errno::NOENT) => return Ok(()),
        // Linux says ELOOP for a symlink, FreeBSD EMLINK, both ENOTDIR for a file.
        Err(Errno::LOOP | Errno::MLINK | Errno::NOTDIR) => return Err(Unmarked::NoDirectory),
        Err(e) => {
            return Err(Unmarked::Failed(Error::io(
                "open result root",
                root,
                e.into(),
            )))
        }
    };
    let marker = root.join(INCOMPLETE_MARKER);
    match std::fs::symlink_metadata(&marker) {
        Ok(meta) if meta.is_file() => return Ok(()),
        Ok(meta) => {
            let kind = crate::fsutil::file_type_name(meta.file_type());
            return Err(Unmarked::Occupied(kind));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            let e = Error::io("inspect unfinished marker", &marker, e);
            return Err(Unmarked::Failed(e));
        }
    }
    let written = match write_marker(&dir) {
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && rfs::fchmod(&dir, Mode::from(0o700)).is_ok() =>
        {
            write_marker(&dir)
        }
        written => written,
    };
    written.map_err(|e| Unmarked::Failed(Error::io("write unfinished marker", &marker, e)))
}

/// Writes the unfinished marker in the result root `dir`, as a new file
/// (`O_EXCL`, `O_NOFOLLOW`).
fn write_marker(dir: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    use rustix::fs::{self as rfs, Mode, OFlags};
    use std::io::Write;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, INCOMPLETE_MARKER, flags, Mode::from(0o644))?;
    std::fs::File::from(fd)
        .write_all(b"this run has not finished; this result root cannot be promoted\n")
}
