//! Tests of how the processes holding a step's output pipes are killed:
//! through a pidfd opened before they are checked again, never by a
//! process id that may have come to name another process.

use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};

use super::*;

/// A `sleep` holding the writing end of a new pipe; the reading end.
fn holding_a_pipe() -> (Child, std::io::PipeReader) {
    let (reader, writer) = std::io::pipe().unwrap();
    let child = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .stdout(writer)
        .spawn()
        .unwrap();
    (child, reader)
}

/// The holder of `reader`'s pipe that is `child` (another test's child,
/// forked while the pipe was open, may hold it a moment too).
fn holder_of(child: &Child, reader: &std::io::PipeReader) -> Holder {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let holders = pipe_holders(&[reader.as_fd()]);
    let found = holders.iter().map(|h| h.pid).collect::<Vec<_>>();
    holders
        .into_iter()
        .find(|h| h.pid == pid)
        .unwrap_or_else(|| panic!("{pid} not among the holders {found:?}"))
}

/// Whether `child` still runs (it is not reaped).
fn still_runs(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

#[test]
fn a_pipe_holder_is_found_with_its_command_and_killed_through_a_pidfd() {
    let (mut child, reader) = holding_a_pipe();
    let holder = holder_of(&child, &reader);
    assert_eq!(holder.command, b"sleep 600");
    assert_eq!(holder.kill(&[reader.as_fd()]), Killed::ThroughPidfd);
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
}

/// A holder that exits after its pidfd was opened (its process id free to
/// be given to another process) is signalled through the pidfd, which
/// names it alone: `ESRCH`, and nothing else is signalled.
#[test]
fn a_holder_gone_once_its_pidfd_is_open_is_not_signalled() {
    let (mut child, reader) = holding_a_pipe();
    let pinned = holder_of(&child, &reader)
        .pin(&[reader.as_fd()])
        .expect("it still holds the pipe");
    assert!(pinned.pidfd.is_some(), "this Linux has pidfds");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(pinned.kill(), Killed::Gone);
}

/// Regression: the holders found were killed by process id, which may
/// have come to name another process since the scan. A process id that
/// names a process other than the one found (another start time) is not
/// signalled, even when that process holds the pipe too.
#[test]
fn a_process_id_that_names_another_process_since_the_scan_is_not_signalled() {
    let (mut child, reader) = holding_a_pipe();
    let found = holder_of(&child, &reader);
    // The process found had that id, and started at another time.
    let another = Holder {
        started: found.started + 1,
        ..found
    };
    assert_eq!(another.kill(&[reader.as_fd()]), Killed::Gone);
    assert!(still_runs(&mut child), "another process was killed");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A holder that let go of the pipe since the scan is left alone.
#[test]
fn a_process_that_no_longer_holds_the_pipe_is_not_signalled() {
    let (mut child, reader) = holding_a_pipe();
    let found = holder_of(&child, &reader);
    let (other, _writer) = std::io::pipe().unwrap();
    assert_eq!(found.kill(&[other.as_fd()]), Killed::Gone);
    assert!(
        still_runs(&mut child),
        "a process not holding it was killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
