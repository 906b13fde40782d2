//! The build slots of each machine, shared by the fruix processes of this
//! host: lock files under the state directory.
//!
//! A run's [`Pool`](crate::schedule::Pool) counts its own cells only. Two
//! `matrix run` (or `run-cell`) processes on one host with one state
//! directory would each let a machine run `parallel-builds` cells, so
//! together more. So each attempt on a machine also holds one of the
//! machine's slot files, `STATE_DIR/matrix/slots/MACHINE.N` for `N` below
//! its `parallel-builds`, locked with `flock` ([`File::try_lock`]) from
//! before its build starts until it ends. When every one is held, by
//! another process, the attempt waits ([`take`]), looking again every
//! [`POLL`], until one is free or the run is cancelled. `fruix build
//! --machine NAME` takes one the same way for its build, so a build run
//! beside a matrix does not overload the machine either.
//!
//! The lock is the file's: a process that dies lets go of its slots, and
//! a slot file left behind is free. The files are opened with
//! `O_CLOEXEC`, so a build's processes never inherit (and keep) one.
//!
//! Machine names are any non-empty string: a file name is made of one
//! safely ([`slot_file_name`]). The directory is opened beneath the state
//! directory one component at a time, never through a symlink, and each
//! slot file relative to its descriptor, refusing a symlink or anything
//! but a regular file.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::Duration;

use fruix_core::dir::{is_symlink_refusal, OpenDir, TreeKind};
use fruix_core::{Error, Result};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Where the slot files are, beneath the state directory.
pub const SLOTS_DIR: &str = "matrix/slots";

/// How often a waiting attempt looks again for a free slot (`flock` tells
/// no one when a lock is let go).
pub const POLL: Duration = Duration::from_millis(200);

/// The longest machine name, as written in a slot file name, beyond which
/// its digest names it instead.
const MAX_WRITTEN_NAME: usize = 200;

const TREE: TreeKind = TreeKind::named("the machine slots of a state directory");

/// One slot of a machine, held until dropped.
#[derive(Debug)]
pub struct HostSlot {
    /// The slot file, locked.
    _file: File,
}

/// The file name of slot `n` of machine `machine`: `NAME.N`, where NAME is
/// the machine's name with every byte but ASCII letters, digits, `.`, `_`
/// and `-` written `%XX`. A name that would take more than
/// `MAX_WRITTEN_NAME` (200) bytes so is `~sha256-HEX` instead (`~` is never
/// written otherwise). Two machines never share a file name, and none is
/// `.`, `..` or holds a `/`.
pub fn slot_file_name(machine: &str, n: u32) -> String {
    let mut written = String::with_capacity(machine.len());
    for b in machine.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            written.push(char::from(b));
        } else {
            written.push_str(&format!("%{b:02X}"));
        }
    }
    if written.len() > MAX_WRITTEN_NAME {
        written = format!(
            "~sha256-{}",
            hex::encode(Sha256::digest(machine.as_bytes()))
        );
    }
    format!("{written}.{n}")
}

/// Opens (creating it) `STATE_DIR/matrix/slots`, never through a symlink
/// below the state directory.
pub fn open_slots_dir(state_dir: &Path) -> Result<OpenDir> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| Error::io("create state directory", state_dir, e))?;
    OpenDir::open(state_dir, TREE)?.create_beneath(SLOTS_DIR)
}

/// Opens (creating it) slot file `name` of `dir`, refusing a symlink or
/// anything but a regular file (a FIFO is not waited on).
fn open_slot_file(dir: &OpenDir, name: &str) -> Result<File> {
    let path = dir.child(name.as_ref());
    let flags =
        OFlags::RDONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let unsafe_path = |message: &str| Error::UnsafePath {
        path: path.clone(),
        message: message.into(),
    };
    let fd = rfs::openat(dir, name, flags, Mode::from_raw_mode(0o644)).map_err(|e| {
        if is_symlink_refusal(e) {
            unsafe_path("is a symlink; fruix never follows symlinks among machine slots")
        } else {
            Error::io("open", &path, e.into())
        }
    })?;
    let st = rfs::fstat(&fd).map_err(|e| Error::io("inspect", &path, e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(unsafe_path(
            "is not a regular file; remove it (fruix makes machine slots as empty files)",
        ));
    }
    Ok(File::from(fd))
}

/// Takes the first free one of the `slots` slots of `machine` in `dir`;
/// `None` when every one is held.
pub fn try_take(dir: &OpenDir, machine: &str, slots: u32) -> Result<Option<HostSlot>> {
    for n in 0..slots {
        let name = slot_file_name(machine, n);
        let file = open_slot_file(dir, &name)?;
        match file.try_lock() {
            Ok(()) => return Ok(Some(HostSlot { _file: file })),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(Error::io("lock", dir.child(name.as_ref()), e))
            }
        }
    }
    Ok(None)
}

/// Takes a slot of `machine` (of its `slots`) in `STATE_DIR/matrix/slots`,
/// waiting while every one is held; `waiting` is called once, when it
/// first has to wait. `None` when `cancel` is cancelled first.
pub async fn take(
    state_dir: &Path,
    machine: &str,
    slots: u32,
    cancel: &CancellationToken,
    waiting: impl FnOnce(),
) -> Result<Option<HostSlot>> {
    let dir = open_slots_dir(state_dir)?;
    let mut waiting = Some(waiting);
    loop {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        if let Some(slot) = try_take(&dir, machine, slots)? {
            return Ok(Some(slot));
        }
        if let Some(said) = waiting.take() {
            said();
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(None),
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn every_machine_name_makes_a_file_name_of_its_own() {
        assert_eq!(slot_file_name("builder-1", 0), "builder-1.0");
        assert_eq!(slot_file_name("b.example_2", 3), "b.example_2.3");
        let long = "x".repeat(MAX_WRITTEN_NAME + 1);
        let names = [
            "a/b",
            "../up",
            "..",
            ".",
            "%2F",
            "a%2Fb",
            "~x",
            "line\nbreak",
            "é",
            &long,
            &"x".repeat(MAX_WRITTEN_NAME),
            &"/".repeat(100),
        ];
        let mut files: Vec<String> = names.iter().map(|n| slot_file_name(n, 0)).collect();
        for f in &files {
            assert!(!f.contains('/') && f.is_ascii() && f.len() <= 255, "{f}");
            assert!(f != "." && f != "..", "{f}");
        }
        assert_eq!(slot_file_name("a/b", 1), "a%2Fb.1");
        assert_eq!(slot_file_name("..", 0), "...0");
        assert!(slot_file_name(&long, 2).starts_with("~sha256-"));
        files.sort();
        files.dedup();
        assert_eq!(files.len(), names.len(), "no two names share a file");
    }

    #[test]
    fn a_machine_s_slots_are_taken_one_each_and_freed_when_dropped() {
        let state = tempfile::tempdir().unwrap();
        let dir = open_slots_dir(state.path()).unwrap();
        let first = try_take(&dir, "m/1", 2).unwrap().expect("a free slot");
        let second = try_take(&dir, "m/1", 2).unwrap().expect("the other one");
        assert!(try_take(&dir, "m/1", 2).unwrap().is_none(), "both held");
        assert!(
            try_take(&dir, "m/2", 1).unwrap().is_some(),
            "another machine's slots are its own"
        );
        drop(first);
        let again = try_take(&dir, "m/1", 2).unwrap();
        assert!(again.is_some(), "a dropped slot is free");
        drop(second);
        let files = std::fs::read_dir(state.path().join(SLOTS_DIR)).unwrap();
        let mut names: Vec<String> = files
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["m%2F1.0", "m%2F1.1", "m%2F2.0"]);
    }

    #[test]
    fn symlinks_and_fifos_among_the_slots_are_refused() {
        let state = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir(state.path().join("matrix")).unwrap();
        symlink(elsewhere.path(), state.path().join(SLOTS_DIR)).unwrap();
        let e = open_slots_dir(state.path()).unwrap_err();
        assert!(
            matches!(&e, Error::UnsafePath { message, .. } if message.contains("is a symlink")),
            "{e:?}"
        );
        std::fs::remove_file(state.path().join(SLOTS_DIR)).unwrap();

        let dir = open_slots_dir(state.path()).unwrap();
        let target = elsewhere.path().join("target");
        symlink(&target, dir.child("m.0".as_ref())).unwrap();
        let e = try_take(&dir, "m", 1).unwrap_err();
        assert!(
            matches!(&e, Error::UnsafePath { message, .. } if message.contains("is a symlink")),
            "{e:?}"
        );
        assert!(!target.exists(), "nothing made through the symlink");
        let fifo = dir.child("f.0".as_ref());
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = try_take(&dir, "f", 1).unwrap_err();
        assert!(
            matches!(&e, Error::UnsafePath { message, .. } if message.contains("not a regular file")),
            "{e:?}"
        );
    }

    /// Starts [`take`] of machine `m`'s one slot in `state`: the task, and
    /// what it sends when it says it waits.
    fn waiter(
        state: &Path,
        cancel: CancellationToken,
    ) -> (
        tokio::task::JoinHandle<Option<HostSlot>>,
        tokio::sync::oneshot::Receiver<()>,
    ) {
        let (said_tx, said_rx) = tokio::sync::oneshot::channel();
        let state = state.to_path_buf();
        let task = tokio::spawn(async move {
            let said = move || said_tx.send(()).unwrap();
            take(&state, "m", 1, &cancel, said).await.unwrap()
        });
        (task, said_rx)
    }

    /// `take` takes a free slot at once; a held one it says it waits for,
    /// then takes it once freed, or ends with `None` when cancelled first.
    #[tokio::test]
    async fn take_waits_for_a_held_slot_until_freed_or_cancelled() {
        let state = tempfile::tempdir().unwrap();
        let never = CancellationToken::new();
        let free = take(state.path(), "m", 1, &never, || panic!("it is free"));
        let held = free.await.unwrap().expect("a free slot is taken at once");

        let cancel = CancellationToken::new();
        let (task, said) = waiter(state.path(), cancel.clone());
        said.await.expect("it says it waits");
        cancel.cancel();
        assert!(task.await.unwrap().is_none(), "cancelled while it waited");

        let (task, said) = waiter(state.path(), CancellationToken::new());
        said.await.expect("it says it waits");
        assert!(!task.is_finished(), "the slot is held");
        drop(held);
        let taken = task.await.unwrap();
        assert!(taken.is_some(), "taken once freed");
        let dir = open_slots_dir(state.path()).unwrap();
        assert!(
            try_take(&dir, "m", 1).unwrap().is_none(),
            "the waiter holds it"
        );
    }
}
