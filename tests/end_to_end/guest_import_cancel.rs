//! Regressions of a cancelled, dropped or orphaned guest import. Ctrl-C
//! during a guest-self-hosted import took 1 to 5 s to take effect, however
//! little was left to do: the kill loop that stops the guest's `tar`
//! looked whether it was gone only a second after each round of signals.
//! Its remote `tar` had no lifeline, a cancel before `tar` said its session
//! id waited up to 10 s for it, and the reconnection before a retried
//! import did not look at Ctrl-C. A cancelled import now ends within a
//! second of the signal, whenever it comes, and leaves nothing behind: no
//! process of it in the guest, no staging directory on the host; nor does
//! a host killed, or a connection dropped, mid-import.

use std::path::Path;
use std::time::{Duration, Instant};

use fruix_core::testing::conformance::processes_mentioning;
use fruix_core::testing::entries_starting_with;

use crate::sshd::{guest_build, Sshd};
use crate::util::{require_tool, spawn_reading_stderr, wait_until, Reading};

/// How soon after the signal a cancelled import must have ended.
const PROMPTLY: Duration = Duration::from_secs(1);

/// Makes the guest's `tar` of `sshd` run `first` (sh) for the import
/// first, then send the first 100000 bytes of a real archive and hold (a
/// shell waiting on a `sleep`), every process of the hold carrying
/// `marker` in its environment; any other `tar` is the real one.
pub(crate) fn holding_tar(sshd: &Sshd, marker: &Path, first: &str) {
    let tar = require_tool("tar", "tar");
    sshd.guest_program(
        "tar",
        &format!(
            r#"#!/bin/sh
if [ "$*" = "-cf - ." ]; then
  {first}
  t=$(mktemp -d)
  head -c 300000 /dev/zero > "$t/big"
  {tar} -cf - -C "$t" big | head -c 100000
  rm -rf "$t"
  export FRUIX_TEST_HOLD={marker}
  exec sh -c 'sleep 300 & wait'
fi
exec {tar} "$@"
"#,
            tar = tar.display(),
            marker = marker.display()
        ),
    );
}

/// A guest-self-hosted build of the miniature tree in the guest of `sshd`,
/// into run `r1` of a new host state, its stderr read as it comes.
fn self_hosted_build(sshd: &Sshd) -> (tempfile::TempDir, Reading) {
    let host = tempfile::tempdir().unwrap();
    let build = spawn_reading_stderr(&mut guest_build(
        sshd,
        "guest-self-hosted",
        host.path(),
        "r1",
    ));
    (host, build)
}

/// Waits until the import into `host` is staged and the guest's `tar`
/// holds ([`holding_tar`] with `marker`).
fn import_holds(build: &Reading, host: &Path, marker: &Path) {
    build.wait_for_line("==> import");
    wait_until(
        "the host stages the import and the guest's tar holds",
        || {
            !entries_starting_with(host, ".r1.import-").is_empty()
                && processes_mentioning(marker).len() >= 2
        },
    );
}

/// The import held mid-way (data staged on the host, the guest's `tar`
/// waiting): Ctrl-C ends it within [`PROMPTLY`] (it took a second or more).
#[test]
fn ctrl_c_during_a_guest_import_ends_within_a_second_leaving_nothing() {
    let sshd = Sshd::trusted_with_bin();
    let marker = sshd.dir.path().join("import-holding");
    holding_tar(&sshd, &marker, "");
    let (host, build) = self_hosted_build(&sshd);
    import_holds(&build, host.path(), &marker);
    interrupted_promptly(build, &marker, host.path());
}

/// Regression: the wait before an import whose connection dropped is tried
/// again (1 s, then 2 s) did not look at Ctrl-C: the cancel took effect
/// once it ended, a new connection was made and the new import stopped.
/// It ends the wait at once now.
#[test]
fn ctrl_c_while_a_dropped_import_waits_to_be_tried_again_ends_it_at_once() {
    let sshd = Sshd::trusted_with_bin();
    let marker = sshd.dir.path().join("import-holding");
    // The first import's connection drops: its sshd process is killed.
    let first = dropping_first(&sshd, "");
    holding_tar(&sshd, &marker, &first);
    let (host, build) = self_hosted_build(&sshd);
    build.wait_for_line("import attempt 1 of 3 failed");
    interrupted_promptly(build, &marker, host.path());
}

/// A `first` for [`holding_tar`]: the first import runs `then` (sh), then
/// drops its connection (its sshd process is killed) and exits 1.
fn dropping_first(sshd: &Sshd, then: &str) -> String {
    let dropped = sshd.dir.path().join("import-dropped");
    format!(
        "if mkdir '{}' 2>/dev/null; then {then}\nkill -9 \"$PPID\"; exit 1; fi",
        dropped.display()
    )
}

/// Regression: the reconnection before an import whose connection dropped
/// is tried again did not look at Ctrl-C: with the guest's sshd not
/// answering (here: stopped, its new connection left unaccepted), the
/// cancel took effect only once the connect timeout, or the cancel's grace
/// period, had passed. It ends the reconnection at once now.
#[test]
fn ctrl_c_while_a_dropped_import_reconnects_ends_it_at_once() {
    let sshd = Sshd::trusted_with_bin();
    let marker = sshd.dir.path().join("import-holding");
    // The first import stops the guest's sshd (it accepts no connection
    // any more), then drops its own connection.
    let listener = sshd.dir.path().join("sshd.pid");
    let stop = format!("kill -STOP \"$(cat '{}')\"", listener.display());
    holding_tar(&sshd, &marker, &dropping_first(&sshd, &stop));
    let (host, build) = self_hosted_build(&sshd);
    build.wait_for_line("import attempt 1 of 3 failed");
    wait_until("the host's reconnection waits to be accepted", || {
        waiting_to_be_accepted(sshd.port) > 0
    });
    interrupted_promptly(build, &marker, host.path());
}

/// How many connections wait to be accepted on 127.0.0.1:`port` (the
/// queue of its listening socket, in `/proc/net/tcp`).
fn waiting_to_be_accepted(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        // Listening (0A): the receive queue is the accept queue.
        .filter(|fields| fields.len() > 4 && fields[1] == local && fields[3] == "0A")
        .filter_map(|fields| fields[4].split_once(':').map(|(_, rx)| rx.to_string()))
        .map(|rx| usize::from_str_radix(&rx, 16).unwrap())
        .sum()
}

/// Regression: the import's remote `tar` had no lifeline, unlike every
/// other remote command: a host killed mid-import (SIGKILL, so no kill
/// loop), left it running in the guest. Now its lifeline stops it.
#[test]
fn a_guest_import_whose_host_is_killed_leaves_nothing_running_in_the_guest() {
    let sshd = Sshd::trusted_with_bin();
    let marker = sshd.dir.path().join("import-holding");
    holding_tar(&sshd, &marker, "");
    let (host, mut build) = self_hosted_build(&sshd);
    import_holds(&build, host.path(), &marker);
    build.signal(libc::SIGKILL);
    let out = build.finish(Duration::from_secs(60), "the killed import");
    assert_eq!(out.status.code(), None, "killed");
    wait_until("nothing of the import is left running in the guest", || {
        processes_mentioning(&marker).is_empty()
    });
}

/// Regression: an import whose connection dropped (its sshd process
/// killed) left its remote `tar` running in the guest, with no lifeline to
/// stop it, while the host tried again on a new connection. Now its
/// lifeline stops it.
#[test]
fn a_dropped_import_leaves_nothing_of_its_tar_running_in_the_guest() {
    let sshd = Sshd::trusted_with_bin();
    let marker = sshd.dir.path().join("import-holding");
    // The first import's `tar` holds (with a mark of its own) once it has
    // dropped its connection.
    let dropped = sshd.dir.path().join("dropped-holding");
    let first = format!(
        "if mkdir '{}' 2>/dev/null; then export FRUIX_TEST_HOLD='{}'; kill -9 \"$PPID\"; exec sh -c 'sleep 300 & wait'; fi",
        sshd.dir.path().join("import-dropped").display(),
        dropped.display()
    );
    holding_tar(&sshd, &marker, &first);
    let (host, build) = self_hosted_build(&sshd);
    build.wait_for_line("import attempt 1 of 3 failed");
    wait_until("nothing of the dropped import is left in the guest", || {
        processes_mentioning(&dropped).is_empty()
    });
    interrupted_promptly(build, &marker, host.path());
}

/// Regression: Ctrl-C before the import's `tar` had said its session id
/// waited up to 10 s for it (so as to stop its session once known). Now
/// the `tar` waits at a gate until its lifeline is armed: a cancel before
/// ends the import at once, and the guest's shell exits at its gate
/// without running `tar`. Here the session line never reaches the host:
/// the shell's stderr goes to a file (through `BASH_ENV`, read by the
/// login shell, bash, before it runs the command).
#[test]
fn ctrl_c_before_the_import_said_its_session_ends_it_at_once_running_nothing() {
    let sshd =
        Sshd::trusted_with("PATH={dir}/bin:/usr/local/bin:/usr/bin:/bin BASH_ENV={dir}/bash-env");
    let dir = sshd.dir.path();
    let marker = dir.join("import-holding");
    let ran = dir.join("tar-ran");
    holding_tar(&sshd, &marker, &format!(": > '{}'", ran.display()));
    let (pid_file, said) = (dir.join("import-shell.pid"), dir.join("import-stderr"));
    std::fs::write(
        dir.join("bash-env"),
        format!(
            "case \"$BASH_EXECUTION_STRING\" in *'tar -cf - .'*) echo $$ > '{}'; exec 2>> '{}' ;; esac\n",
            pid_file.display(),
            said.display()
        ),
    )
    .unwrap();
    let (host, build) = self_hosted_build(&sshd);
    wait_until("the import's shell has said its session, to a file", || {
        std::fs::read_to_string(&said).is_ok_and(|s| s.contains("fruix-session "))
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    interrupted_promptly(build, &marker, host.path());
    wait_until("the import's shell has exited", || gone(pid));
    assert!(!ran.exists(), "the guest's tar ran, the import cancelled");
}

/// Whether process `pid` has exited (gone, or a zombie).
fn gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// Sends SIGINT to `build`, mid-import into `host`: it must exit 130
/// within [`PROMPTLY`], leaving no process carrying `marker` in the guest
/// and no staging directory on the host.
fn interrupted_promptly(mut build: Reading, marker: &Path, host: &Path) {
    let signalled = Instant::now();
    build.signal(libc::SIGINT);
    let out = build.finish(Duration::from_secs(60), "the interrupted import");
    let took = signalled.elapsed();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        took < PROMPTLY,
        "the cancelled import ended {took:?} after the signal"
    );
    let left = processes_mentioning(marker);
    assert!(left.is_empty(), "still running in the guest: {left:?}");
    let staging = entries_starting_with(host, ".r1.import-");
    assert_eq!(staging, Vec::<std::path::PathBuf>::new());
}
