//! The process table as a step needs it: which processes are left in a
//! step's process group and session, and which hold its output pipes.
//!
//! Linux answers from `/proc`; elsewhere (FreeBSD, whose `/proc` is not
//! mounted by default) `pgrep` lists the members, and pipe holders cannot be
//! found.
//!
//! A pipe holder is killed through a pidfd opened before it is checked
//! again (its start time, and the pipe still among its open files): a
//! process id found in `/proc` may name another process by the time it is
//! signalled, a pidfd names one process for good. Where there are no pidfds
//! (a kernel before 5.3, a seccomp filter refusing the call) the holder,
//! checked again, is signalled by its process id.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustix::process::{Pid, Signal};

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
            .filter(|(_, dir)| is_live_member(dir, pgid))
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

/// Whether the process whose `/proc` directory is `dir` is live (not a
/// zombie) and of group `pgid` or of the session of that id.
#[cfg(target_os = "linux")]
fn is_live_member(dir: &Path, pgid: libc::pid_t) -> bool {
    let stat = stat_after_name(dir);
    let mut fields = stat.split_whitespace();
    let state = fields.next();
    let mut id = || fields.next().and_then(|p| p.parse::<libc::pid_t>().ok());
    let (_ppid, pgrp, session) = (id(), id(), id());
    (pgrp == Some(pgid) || session == Some(pgid)) && !matches!(state, Some("Z" | "X" | "x"))
}

/// What `/proc/PID/stat` in `dir` says after the command name: "state ppid
/// pgrp session ...". The name ("(comm)") may contain anything, so this is
/// what follows the last `)`. Empty once the process is gone.
fn stat_after_name(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
    text.rsplit_once(')')
        .map_or_else(String::new, |(_, rest)| rest.to_string())
}

/// The start time of the process whose `/proc` directory is `dir`, in
/// clock ticks since boot (`stat`'s 22nd field): with its id, it names one
/// process; `None` once it is gone.
fn start_time(dir: &Path) -> Option<u64> {
    stat_after_name(dir)
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// A process found holding one of a step's output pipes.
#[derive(Debug, Clone)]
pub(super) struct Holder {
    pub(super) pid: libc::pid_t,
    /// Its command line, words joined by spaces.
    pub(super) command: Vec<u8>,
    /// Its start time ([`start_time`]): which process `pid` named when
    /// it was found.
    started: u64,
}

/// What [`Holder::kill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Killed {
    /// Sent `SIGKILL` through a pidfd of the process found.
    ThroughPidfd,
    /// Sent `SIGKILL` by process id, checked just before (no pidfds here).
    ById,
    /// Sent nothing: the process found is gone, its id names another
    /// process, or it no longer holds the pipes.
    Gone,
}

/// A [`Holder`] made sure of: a pidfd opened on its process id, then the
/// process of that id checked to be the one found, still holding a pipe.
#[derive(Debug)]
struct Pinned {
    pid: Pid,
    /// `None` where there are no pidfds.
    pidfd: Option<OwnedFd>,
}

impl Holder {
    /// Kills the process found holding one of `pipes` if it still does
    /// ([`Holder::pin`], [`Pinned::kill`]).
    pub(super) fn kill(&self, pipes: &[BorrowedFd<'_>]) -> Killed {
        self.pin(pipes).map_or(Killed::Gone, |pinned| pinned.kill())
    }

    /// Opens a pidfd on the holder's process id, then checks that the id
    /// still names the process found (same start time), holding one of
    /// `pipes`: the pidfd then names that process, whatever the id comes to
    /// name. `None` when it is not so.
    fn pin(&self, pipes: &[BorrowedFd<'_>]) -> Option<Pinned> {
        let pid = Pid::from_raw(self.pid)?;
        let pidfd = open_pidfd(pid).ok()?;
        let dir = PathBuf::from(format!("/proc/{}", self.pid));
        let same = start_time(&dir) == Some(self.started) && holds(&dir, &pipe_links(pipes));
        same.then_some(Pinned { pid, pidfd })
    }
}

impl Pinned {
    /// Sends `SIGKILL`: through the pidfd (which fails, `ESRCH`, once its
    /// process has exited, whatever process has its id since), or by
    /// process id where there are no pidfds.
    fn kill(&self) -> Killed {
        #[cfg(target_os = "linux")]
        if let Some(pidfd) = &self.pidfd {
            let sent = rustix::process::pidfd_send_signal(pidfd, Signal::KILL);
            return sent.map_or(Killed::Gone, |()| Killed::ThroughPidfd);
        }
        let sent = rustix::process::kill_process(self.pid, Signal::KILL);
        sent.map_or(Killed::Gone, |()| Killed::ById)
    }
}

/// A pidfd of process `pid`: `Ok(None)` where there are none (a kernel
/// before 5.3, a seccomp filter refusing the call); `Err` when no process
/// has that id.
#[cfg(target_os = "linux")]
fn open_pidfd(pid: Pid) -> rustix::io::Result<Option<OwnedFd>> {
    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(pidfd) => Ok(Some(pidfd)),
        Err(rustix::io::Errno::SRCH) => Err(rustix::io::Errno::SRCH),
        Err(_) => Ok(None),
    }
}

/// No pidfds but Linux's.
#[cfg(not(target_os = "linux"))]
fn open_pidfd(_pid: Pid) -> rustix::io::Result<Option<OwnedFd>> {
    Ok(None)
}

/// What `/proc/self/fd` shows for each of `pipes` (`pipe:[INODE]`).
fn pipe_links(pipes: &[BorrowedFd<'_>]) -> Vec<PathBuf> {
    let fd_link =
        |fd: &BorrowedFd<'_>| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    pipes.iter().filter_map(|fd| fd_link(fd).ok()).collect()
}

/// Whether the process whose `/proc` directory is `dir` has one of the
/// files `links` ([`pipe_links`]) open.
fn holds(dir: &Path, links: &[PathBuf]) -> bool {
    let mut fds = std::fs::read_dir(dir.join("fd"))
        .into_iter()
        .flatten()
        .flatten();
    fds.any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| links.contains(&l)))
}

/// The processes other than this one that have one of `pipes` open: found
/// in `/proc` (Linux), for this user's processes; none where `/proc` does
/// not show open files.
pub(super) fn pipe_holders(pipes: &[BorrowedFd<'_>]) -> Vec<Holder> {
    let links = pipe_links(pipes);
    if links.is_empty() {
        return Vec::new();
    }
    let me = rustix::process::getpid().as_raw_pid();
    processes()
        .filter(|(pid, dir)| *pid != me && holds(dir, &links))
        .filter_map(|(pid, dir)| {
            let started = start_time(&dir)?;
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let words: Vec<&[u8]> = cmdline
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .collect();
            Some(Holder {
                pid,
                command: words.join(&b' '),
                started,
            })
        })
        .collect()
}

#[cfg(all(test, target_os = "linux"))]
#[path = "process_table_tests.rs"]
mod tests;
