//! Regressions from a review of the guest executors against a hostile
//! guest: a build step's make, or a guest helper, that leaves a process
//! running does not hold the build, and a line cap too small for fruix's
//! own lines is refused.

use std::time::Duration;

use fruix_core::testing::conformance::processes_mentioning;

use crate::ssh_import::{answering_helper, build_exiting_within};
use crate::sshd::{guest_build, Sshd};
use crate::util::{require_tool, run_with_deadline, wait_until};

/// Regression: a `host-initiated` build whose guest make left a process
/// running (one that ignores SIGTERM, holding the step's output) sat in
/// its step until that process ended, forever here. The build contract
/// says that when a step's make exits, whatever it left running is
/// killed: the build ends as make did, within its time limit, and the
/// leftover is gone.
#[test]
fn a_host_initiated_step_does_not_wait_for_what_make_left_running() {
    let bmake = require_tool("bmake", "bmake");
    let sshd = Sshd::trusted_with_bin();
    let marker = sshd.dir.path().join("left-by-make");
    sshd.guest_program(
        "bmake",
        &format!(
            r#"#!/bin/sh
case " $* " in
  *" buildworld "*)
    (trap '' TERM HUP; export FRUIX_TEST_LEFTOVER={marker}; exec sleep 1001) & ;;
esac
exec {bmake} "$@"
"#,
            marker = marker.display(),
            bmake = bmake.display()
        ),
    );
    let host = tempfile::tempdir().unwrap();
    let mut build = guest_build(&sshd, "host-initiated", host.path(), "r1");
    build.args(["--timeout", "60s"]);
    let out = run_with_deadline(&mut build, Duration::from_secs(180));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    wait_until("what make left running is gone", || {
        processes_mentioning(&marker).is_empty()
    });
}

/// Regression: a `guest-self-hosted` helper that exited without saying how
/// its build ended, leaving a process that ignores SIGTERM and holds its
/// output, kept the host waiting for that process. Once the helper's exit
/// status has come, its output is waited for a grace period only; then
/// what it left is stopped, and its exit status judged.
#[test]
fn a_helper_s_leftover_does_not_hold_the_build_past_its_exit() {
    let sshd = Sshd::trusted();
    let marker = sshd.dir.path().join("left-by-helper");
    let helper = answering_helper(
        &sshd,
        "leaving",
        &format!(
            "(trap '' TERM HUP; export FRUIX_TEST_LEFTOVER={}; exec sleep 1001) &\nexit 3",
            marker.display()
        ),
    );
    build_exiting_within(&sshd, &helper, 3, Duration::from_secs(120));
    wait_until("what the helper left running is gone", || {
        processes_mentioning(&marker).is_empty()
    });
}

/// Regression: `output_max_line_bytes` below the length of the
/// `fruix-session PID` line was taken, and every remote command then
/// waited for that line until `command_timeout_secs` (600 s). It is
/// refused at once, naming the minimum.
#[test]
fn a_line_cap_too_small_for_the_session_line_is_refused() {
    let sshd = Sshd::trusted();
    let host = tempfile::tempdir().unwrap();
    let mut build = guest_build(&sshd, "host-initiated", host.path(), "r1");
    build.args(["--config", "output_max_line_bytes=10"]);
    let out = run_with_deadline(&mut build, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`output_max_line_bytes` must be at least 24"),
        "{stderr}"
    );
}
