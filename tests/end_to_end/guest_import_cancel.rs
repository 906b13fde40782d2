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
//!
//! Every other remote command (a host-initiated build's make steps, here)
//! had the gaps the import's gate closed: a cancel before its session id
//! was known waited up to 10 s, and a host gone before its lifeline was
//! started left it running. It waits at the same gate now.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fruix_core::testing::conformance::processes_mentioning;
use fruix_core::testing::entries_starting_with;

use crate::ssh_build::{connect, runtime};
use crate::sshd::{guest_build, Sshd};
use crate::util::{require_tool, spawn_reading_stderr, wait_until, Leftovers, Reading};

/// How soon after the signal a cancelled build must have ended.
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

/// A guest of [`Sshd::trusted_with_bin`], a marker for [`holding_tar`] in
/// its directory, and what kills the processes carrying the marker when
/// the test ends.
fn guest_with_marker() -> (Sshd, PathBuf, Leftovers) {
    let sshd = Sshd::trusted_with_bin();
    let marker = sshd.dir.path().join("import-holding");
    let leftovers = Leftovers(marker.clone());
    (sshd, marker, leftovers)
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

/// A guest-self-hosted build ([`self_hosted_build`]) whose import holds
/// mid-way ([`holding_tar`] with `marker`, [`import_holds`]): the host
/// state and the build.
fn held_import(sshd: &Sshd, marker: &Path) -> (tempfile::TempDir, Reading) {
    holding_tar(sshd, marker, "");
    let (host, build) = self_hosted_build(sshd);
    import_holds(&build, host.path(), marker);
    (host, build)
}

/// The import held mid-way (data staged on the host, the guest's `tar`
/// waiting): Ctrl-C ends it within [`PROMPTLY`] (it took a second or more).
#[test]
fn ctrl_c_during_a_guest_import_ends_within_a_second_leaving_nothing() {
    let (sshd, marker, _leftovers) = guest_with_marker();
    let (host, build) = held_import(&sshd, &marker);
    interrupted_promptly(build, &marker, host.path());
}

/// Regression: Ctrl-C mid-import of a guest-self-hosted build left the
/// guest's result root, complete, in the guest, though a cancelled run's
/// root is never imported. Its cleanup removes it now, as the helper
/// removes its own when the build is cancelled before it ends.
#[test]
fn ctrl_c_during_a_guest_import_removes_the_guest_result_root() {
    let (sshd, marker, _leftovers) = guest_with_marker();
    let (host, build) = held_import(&sshd, &marker);
    let roots = sshd.state_dir().join("native-builds");
    let listed = || {
        let mut names: Vec<_> = std::fs::read_dir(&roots)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listed();
    assert_eq!(
        before.len(),
        1,
        "the guest result root imported: {before:?}"
    );
    interrupted_promptly(build, &marker, host.path());
    assert_eq!(
        listed(),
        Vec::<std::ffi::OsString>::new(),
        "left in the guest"
    );
}

/// Regression: a guest whose login shell prints a banner on stderr as it
/// starts (an rc file's `echo ... >&2`) ran every command without a
/// lifeline: only the first stderr line could say the session id, and the
/// banner's came first. Ctrl-C then had nothing to stop the import's `tar`
/// by, and it was left running in the guest. The banner is shown, and the
/// session line after it is still taken.
#[test]
fn a_login_shell_s_banner_does_not_cost_a_command_its_lifeline() {
    let sshd =
        Sshd::trusted_with("PATH={dir}/bin:/usr/local/bin:/usr/bin:/bin BASH_ENV={dir}/bash-env");
    let dir = sshd.dir.path();
    std::fs::write(
        dir.join("bash-env"),
        "echo 'Welcome to the build guest' >&2\n",
    )
    .unwrap();
    let marker = dir.join("import-holding");
    let _leftovers = Leftovers(marker.clone());
    let (host, build) = held_import(&sshd, &marker);
    interrupted_promptly(build, &marker, host.path());
}

/// Regression: the wait before an import whose connection dropped is tried
/// again (1 s, then 2 s) did not look at Ctrl-C: the cancel took effect
/// once it ended, a new connection was made and the new import stopped.
/// It ends the wait at once now.
#[test]
fn ctrl_c_while_a_dropped_import_waits_to_be_tried_again_ends_it_at_once() {
    let (sshd, marker, _leftovers) = guest_with_marker();
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
    let (sshd, marker, _leftovers) = guest_with_marker();
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
    let (sshd, marker, _leftovers) = guest_with_marker();
    let (_host, mut build) = held_import(&sshd, &marker);
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
    let (sshd, marker, _leftovers) = guest_with_marker();
    // The first import's `tar` holds (with a mark of its own) once it has
    // dropped its connection.
    let dropped = sshd.dir.path().join("dropped-holding");
    let _dropped_leftovers = Leftovers(dropped.clone());
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
    let _leftovers = Leftovers(marker.clone());
    let ran = dir.join("tar-ran");
    holding_tar(&sshd, &marker, &format!(": > '{}'", ran.display()));
    let hidden = hide_session_line(&sshd, "tar -cf - .");
    let (host, build) = self_hosted_build(&sshd);
    let pid = hidden.said();
    interrupted_promptly(build, &marker, host.path());
    wait_until("the import's shell has exited", || gone(pid));
    assert!(!ran.exists(), "the guest's tar ran, the import cancelled");
}

/// Where the guest shell of a command sends its output instead of the
/// host ([`hide_session_line`]), and where it writes its pid.
struct HiddenSession {
    pid_file: PathBuf,
    output: PathBuf,
}

/// Makes the guest shell of each command of `sshd` whose command line
/// holds `matching` write its pid to a file and send its stdout and stderr
/// to another, through `BASH_ENV` (`sshd` started with
/// `BASH_ENV={dir}/bash-env`), read by the login shell, bash, before it
/// runs the command: the command's session line never reaches the host,
/// and the command, writing to no pipe, outlives the host (as a silent one
/// would: no SIGPIPE ends it).
fn hide_session_line(sshd: &Sshd, matching: &str) -> HiddenSession {
    let dir = sshd.dir.path();
    let hidden = HiddenSession {
        pid_file: dir.join("hidden-shell.pid"),
        output: dir.join("hidden-output"),
    };
    std::fs::write(
        dir.join("bash-env"),
        format!(
            "case \"$BASH_EXECUTION_STRING\" in *'{matching}'*) echo $$ > '{}'; exec >> '{}' 2>&1 ;; esac\n",
            hidden.pid_file.display(),
            hidden.output.display()
        ),
    )
    .unwrap();
    hidden
}

impl HiddenSession {
    /// The shell's pid, once it has said its session (to its file).
    fn said(&self) -> i32 {
        wait_until(
            "the command's shell has said its session, to a file",
            || std::fs::read_to_string(&self.output).is_ok_and(|s| s.contains("fruix-session ")),
        );
        std::fs::read_to_string(&self.pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// A host-initiated build of the miniature tree in the guest of `sshd`,
/// into run `r1` of a new host state, its stderr read as it comes: one
/// job, its world build holding once it runs, making `mark`, whose path
/// every make step's command line holds (`HOLD_BUILD=yes`).
pub(crate) fn holding_host_initiated_build(
    sshd: &Sshd,
    mark: &Path,
) -> (tempfile::TempDir, Reading) {
    holding_host_initiated_build_with(sshd, mark, &[])
}

/// [`holding_host_initiated_build`] with `extra` arguments.
fn holding_host_initiated_build_with(
    sshd: &Sshd,
    mark: &Path,
    extra: &[&str],
) -> (tempfile::TempDir, Reading) {
    let host = tempfile::tempdir().unwrap();
    let mut cmd = guest_build(sshd, "host-initiated", host.path(), "r1");
    cmd.args(["--jobs", "1", "--make-flag=HOLD_BUILD=yes"])
        .arg(format!("--make-flag=HOLD_MARK={}", mark.display()))
        .args(extra);
    (host, spawn_reading_stderr(&mut cmd))
}

/// A host-initiated build whose first make step's shell has said its
/// session, to a file ([`hide_session_line`]): the host, never told it,
/// holds it at its gate. Returns the guest state, the build, the step's
/// shell, and the world build's mark.
fn build_step_held_at_its_gate() -> (Sshd, tempfile::TempDir, Reading, i32, PathBuf) {
    let sshd = Sshd::trusted_with("BASH_ENV={dir}/bash-env");
    let mark = sshd.dir.path().join("world-build-ran");
    let hidden = hide_session_line(&sshd, &mark.display().to_string());
    let (host, build) = holding_host_initiated_build(&sshd, &mark);
    let pid = hidden.said();
    (sshd, host, build, pid, mark)
}

/// Waits until the shell `pid` of a held make step has exited and nothing
/// mentioning `mark` is left running: the step never ran.
fn the_step_never_ran(pid: i32, mark: &Path) {
    wait_until("the step's shell has exited at its gate", || gone(pid));
    wait_until("nothing of the step is left running in the guest", || {
        processes_mentioning(mark).is_empty()
    });
    assert!(!mark.exists(), "the world build ran, its step held");
}

/// Regression: Ctrl-C before a remote command had said its session id
/// waited up to 10 s for it, while the command ran (and went on running
/// once the wait gave up: the host had nothing to stop it by); only the
/// import's `tar` waited at a gate. Every remote command does now: Ctrl-C
/// before the gate opened ends the build at once, and the guest's shell
/// exits at its gate without running its make step.
#[test]
fn ctrl_c_before_a_build_step_said_its_session_ends_it_at_once_running_nothing() {
    let (_sshd, _host, build, pid, mark) = build_step_held_at_its_gate();
    let _leftovers = Leftovers(mark.clone());
    ends_promptly(build);
    the_step_never_ran(pid, &mark);
}

/// Regression: a host gone between a remote command's start and its
/// lifeline's (here: before the command's session line, which never comes,
/// reached it) left the command running in the guest, nothing there to
/// stop it. Now the command runs only once its lifeline does: the host
/// killed, sshd ends the held shell's stdin, and it exits at its gate
/// without running its make step.
#[test]
fn a_host_killed_before_a_build_step_said_its_session_leaves_nothing_running() {
    let (_sshd, _host, mut build, pid, mark) = build_step_held_at_its_gate();
    let _leftovers = Leftovers(mark.clone());
    build.signal(libc::SIGKILL);
    let out = build.finish(Duration::from_secs(60), "the killed build");
    assert_eq!(out.status.code(), None, "killed");
    the_step_never_ran(pid, &mark);
}

/// A remote command cancelled at its gate (its session line hidden, so
/// the host never opens it) has exited there once the cancel returns:
/// promptly, without waiting for the session id, and leaving nothing
/// running in the guest, not even its shell.
#[test]
fn a_remote_command_cancelled_at_its_gate_has_exited_there_when_the_cancel_returns() {
    use fruix_core::executor::EventSink;
    let sshd = Sshd::trusted_with("BASH_ENV={dir}/bash-env");
    let marker = sshd.dir.path().join("held-at-its-gate");
    let _leftovers = Leftovers(marker.clone());
    let hidden = hide_session_line(&sshd, &marker.display().to_string());
    runtime().block_on(async {
        let session = connect(&sshd.ssh_options()).await;
        let (cancel, events) = (
            tokio_util::sync::CancellationToken::new(),
            EventSink::discard(),
        );
        // The shell's command line names the marker; it waits for its sleep.
        let script = format!("exec sh -c 'sleep 600 & wait' {}", marker.display());
        let run = session.stream(&script, None, &cancel, &events, |_, _| {});
        tokio::pin!(run);
        let pid = tokio::select! {
            r = &mut run => panic!("ended by itself: {r:?}"),
            pid = tokio::task::spawn_blocking(move || hidden.said()) => pid.unwrap(),
        };
        let cancelled = Instant::now();
        cancel.cancel();
        assert_eq!(run.await.unwrap(), None);
        let took = cancelled.elapsed();
        assert!(
            took < PROMPTLY,
            "the cancel returned {took:?} after it came"
        );
        assert!(gone(pid), "the command's shell is still running");
        let left = processes_mentioning(&marker);
        assert!(left.is_empty(), "still running in the guest: {left:?}");
    });
}

/// A remote command cancelled while its channel is being opened on a
/// connection nobody answers any more (the guest's sshd stopped) ends at
/// once, without waiting for the keepalives to give the connection up (a
/// minute): it waited for the channel before.
#[test]
fn a_remote_command_cancelled_while_its_channel_opens_ends_at_once() {
    use fruix_core::executor::EventSink;
    use std::future::Future;
    let sshd = Sshd::trusted();
    runtime().block_on(async {
        let session = connect(&sshd.ssh_options()).await;
        sshd.signal_connections(libc::SIGSTOP);
        let (cancel, events) = (
            tokio_util::sync::CancellationToken::new(),
            EventSink::discard(),
        );
        let run = session.stream("true", None, &cancel, &events, |_, _| {});
        tokio::pin!(run);
        // Polled once, it has asked for its channel: nobody will answer.
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(run.as_mut().poll(cx)));
        assert!(first.await.is_pending(), "started without sshd");
        let cancelled = Instant::now();
        cancel.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(30), run).await;
        let took = cancelled.elapsed();
        sshd.signal_connections(libc::SIGCONT);
        assert_eq!(ended.expect("the cancel was held").unwrap(), None);
        assert!(
            took < PROMPTLY,
            "the cancel returned {took:?} after it came"
        );
    });
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
fn interrupted_promptly(build: Reading, marker: &Path, host: &Path) {
    ends_promptly(build);
    let left = processes_mentioning(marker);
    assert!(left.is_empty(), "still running in the guest: {left:?}");
    let staging = entries_starting_with(host, ".r1.import-");
    assert_eq!(staging, Vec::<std::path::PathBuf>::new());
}

/// Sends SIGINT to `build`: it must exit 130 within [`PROMPTLY`].
fn ends_promptly(mut build: Reading) {
    let signalled = Instant::now();
    build.signal(libc::SIGINT);
    let out = build.finish(Duration::from_secs(60), "the interrupted build");
    let took = signalled.elapsed();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        took < PROMPTLY,
        "the cancelled build ended {took:?} after the signal"
    );
}

/// Regression: Ctrl-C during a host-initiated build whose guest stopped
/// answering (its sshd and build stopped: a paused machine) ended the
/// build 75 s later: the kill loop waited 14 s for its channel, then the
/// cleanup a minute for the keepalives. The kill loop's channel now has
/// [`ANSWER_WAIT`] to open; then the build ends, warning that the guest's
/// work directory (and the cancelled build's guest result root) is left, and the build's lifeline, left armed, stops it
/// once the guest answers again.
#[test]
fn ctrl_c_while_the_guest_stopped_answering_ends_the_build_and_its_lifeline_stops_it_later() {
    use fruix_executors::ssh::kill::ANSWER_WAIT;
    let sshd = Sshd::trusted();
    let mark = sshd.dir.path().join("world-build-ran");
    let _leftovers = Leftovers(mark.clone());
    let (_host, mut build) = holding_host_initiated_build_with(&sshd, &mark, &["--json"]);
    wait_until("the world build runs", || mark.exists());
    sshd.signal_connections(libc::SIGSTOP);
    let signalled = Instant::now();
    build.signal(libc::SIGINT);
    let warning = build.wait_for_line("stopped answering, so its work directory");
    let out = build.finish(Duration::from_secs(120), "the interrupted build");
    let took = signalled.elapsed();
    assert!(!processes_mentioning(&mark).is_empty(), "no build was held");
    sshd.signal_connections(libc::SIGCONT);
    assert_eq!(out.status.code(), Some(130));
    // The guest result root of the cancelled build is left too, and named.
    assert!(
        warning.contains("and its result root ") && warning.contains("of the cancelled build"),
        "{warning}"
    );
    assert!(
        warning.contains("are left; remove them once the guest answers"),
        "{warning}"
    );
    // Under --json the warning is in the error object too (it was on
    // stderr only).
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = said["error"]["warnings"].as_array().expect("warnings");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("stopped answering, so its work directory"))),
        "{said}"
    );
    assert!(
        took < ANSWER_WAIT + Duration::from_secs(5),
        "the cancelled build ended {took:?} after the signal"
    );
    wait_until("the lifeline stopped the build in the guest", || {
        processes_mentioning(&mark).is_empty()
    });
}
