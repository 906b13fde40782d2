//! The process table as a step needs it: which processes are left in a
//! step's process group and session, and which hold its output pipes.
//!
//! Linux answers from `/proc`; elsewhere (FreeBSD, whose `/proc` is not
//! mounted by default) `pgrep` lists the members, and pipe holders cannot be
//! found.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustix::process::Pid;

/// Whether no live process is left in group `pgid` or in the session of
/// that id.
///
/// On Linux the process table is read: exited processes stay group members
/// until reaped, and an init that does not reap orphans (as in some
/// containers) would keep `kill(-pgid, 0)` succeeding for ever. Elsewhere
/// (FreeBSD's init reaps promptly) `kill(-pgid, 0)` answers for the group,
/// and `pgrep` for the session.
pub fn group_is_gone(pgid: libc::pid_t) -> bool {
    #[cfg(target_os = "linux")]
    if std::path::Path::new("/proc/self/stat").exists() {
        return live_members(pgid).is_empty();
    }
    // Signal 0 only checks for existence and permission.
    Pid::from_raw(pgid).is_none_or(|pgid| {
        rustix::process::test_kill_process_group(pgid) == Err(rustix::io::Errno::SRCH)
    }) && listed_members(pgid).is_empty()
}

/// The live (not zombie) processes of group `pgid` or of the session of
/// that id: from the process table on Linux, from `pgrep` elsewhere.
pub(super) fn live_members(pgid: libc::pid_t) -> Vec<libc::pid_t> {
    #[cfg(target_os = "linux")]
    if std::path::Path::new("/proc/self/stat").exists() {
        return processes()
            .filter(|(_, dir)| is_live_member(&dir.join("stat"), pgid))
            .map(|(pid, _)| pid)
            .collect();
    }
    listed_members(pgid)
}

/// The processes listed in `/proc`, with their directories there (none
/// without a `/proc`).
fn processes() -> impl Iterator<Item = (libc::pid_t, PathBuf)> {
    let procs = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    procs.filter_map(|p| Some((p.file_name().to_str()?.parse().ok()?, p.path())))
}

/// The processes `pgrep` lists in session `pgid` or in group `pgid` (both
/// FreeBSD's and Linux's pgrep know `-s` and `-g`), sorted; none when
/// `pgrep` cannot run.
pub(super) fn listed_members(pgid: libc::pid_t) -> Vec<libc::pid_t> {
    let mut members = Vec::new();
    for flag in ["-s", "-g"] {
        let Ok(out) = std::process::Command::new("pgrep")
            .args([flag, &pgid.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        let listed = String::from_utf8_lossy(&out.stdout);
        members.extend(
            listed
                .lines()
                .filter_map(|l| l.trim().parse::<libc::pid_t>().ok()),
        );
    }
    members.sort_unstable();
    members.dedup();
    members
}

/// Whether `/proc/PID/stat` describes a live (not zombie) process of group
/// `pgid` or of the session of that id.
#[cfg(target_os = "linux")]
fn is_live_member(stat: &Path, pgid: libc::pid_t) -> bool {
    let Ok(text) = std::fs::read_to_string(stat) else {
        return false;
    };
    // "pid (comm) state ppid pgrp session ...": comm may contain anything,
    // so parse from the last ')'.
    let mut fields = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace();
    let state = fields.next();
    let mut id = || fields.next().and_then(|p| p.parse::<libc::pid_t>().ok());
    let (_ppid, pgrp, session) = (id(), id(), id());
    (pgrp == Some(pgid) || session == Some(pgid)) && !matches!(state, Some("Z" | "X" | "x"))
}

/// The processes other than this one that have one of `pipes` open, with
/// their command lines (words joined by spaces): found in `/proc` (Linux),
/// for this user's processes; none where `/proc` does not show open files.
pub(super) fn pipe_holders(pipes: &[BorrowedFd<'_>]) -> Vec<(libc::pid_t, Vec<u8>)> {
    let fd_link =
        |fd: &BorrowedFd<'_>| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let links: Vec<PathBuf> = pipes.iter().filter_map(|fd| fd_link(fd).ok()).collect();
    if links.is_empty() {
        return Vec::new();
    }
    let holds = |dir: &Path| {
        let mut fds = std::fs::read_dir(dir.join("fd"))
            .into_iter()
            .flatten()
            .flatten();
        fds.any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| links.contains(&l)))
    };
    let me = rustix::process::getpid().as_raw_pid();
    processes()
        .filter(|(pid, dir)| *pid != me && holds(dir))
        .map(|(pid, dir)| {
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let words: Vec<&[u8]> = cmdline
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .collect();
            (pid, words.join(&b' '))
        })
        .collect()
}
