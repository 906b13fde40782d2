//! Regression: Ctrl-C during a guest-self-hosted import took 1 to 5 s to
//! take effect, however little was left to do: the kill loop that stops
//! the guest's `tar` looked whether it was gone only a second after each
//! round of signals. A cancelled import now ends within a second of the
//! signal, and still leaves nothing behind: no process of it in the guest,
//! no staging directory on the host.

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

/// The import held mid-way (data staged on the host, the guest's `tar`
/// waiting): Ctrl-C ends it within [`PROMPTLY`] (it took a second or more).
#[test]
fn ctrl_c_during_a_guest_import_ends_within_a_second_leaving_nothing() {
    let sshd = Sshd::trusted_with_bin();
    let marker = sshd.dir.path().join("import-holding");
    holding_tar(&sshd, &marker, "");
    let host = tempfile::tempdir().unwrap();
    let build = spawn_reading_stderr(&mut guest_build(
        &sshd,
        "guest-self-hosted",
        host.path(),
        "r1",
    ));
    build.wait_for_line("==> import");
    let staging = || entries_starting_with(host.path(), ".r1.import-");
    wait_until(
        "the host stages the import and the guest's tar holds",
        || !staging().is_empty() && processes_mentioning(&marker).len() >= 2,
    );
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
    let dropped = sshd.dir.path().join("import-dropped");
    let first = format!(
        "if mkdir '{}' 2>/dev/null; then kill -9 \"$PPID\"; exit 1; fi",
        dropped.display()
    );
    holding_tar(&sshd, &marker, &first);
    let host = tempfile::tempdir().unwrap();
    let build = spawn_reading_stderr(&mut guest_build(
        &sshd,
        "guest-self-hosted",
        host.path(),
        "r1",
    ));
    build.wait_for_line("import attempt 1 of 3 failed");
    interrupted_promptly(build, &marker, host.path());
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
