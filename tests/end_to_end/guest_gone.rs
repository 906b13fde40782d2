//! Regressions: a guest build whose host went away (killed, its terminal
//! closed, its connection lost, a fast double Ctrl-C) went on running in the
//! guest to its end. The guest helper notices that nobody reads its output
//! and cancels its build, as on SIGTERM, removing its result root; and
//! every remote command's lifeline stops its session in the guest.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fruix_core::testing::conformance::processes_mentioning;

use crate::ssh_import::build_with_helper;
use crate::sshd::{guest_build, script, Sshd};
use crate::util::{
    fixture_source, fruix, require_tool, spawn_reading_stderr, wait_with_deadline, Leftovers,
};
use fruix_core::testing::wait_until;

/// Waits until no process mentions `mark`: nothing of the build is left.
fn nothing_left(mark: &Path) {
    wait_until("nothing of the build is left running", || {
        processes_mentioning(mark).is_empty()
    });
}

/// The guest result roots in `state` (its `native-builds/`), and the
/// build's work directories beside them.
fn guest_roots(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("native-builds"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A build request for the guest helper: the miniature tree, one job, and
/// a world build that holds (`HOLD_BUILD=yes`), making `mark` once it does.
fn holding_request(mark: &Path) -> String {
    let mut request = fruix_core::testing::sample_request(
        "guest-self-hosted",
        ["world", "kernel", "headers", "bootloader"]
            .map(String::from)
            .to_vec(),
    );
    request.source.path = fixture_source().display().to_string();
    request.policy.jobs = 1;
    request.policy.make_flags = vec![
        "-DNO_ROOT".into(),
        "HOLD_BUILD=yes".into(),
        format!("HOLD_MARK={}", mark.display()),
    ];
    serde_json::to_string(&request).unwrap()
}

/// Regression: the helper ignored a closed stdout, so a build whose host
/// was gone (the SSH session that ran it closed its end) ran to its end in
/// the guest. While make is silent, with nothing written, the helper notices
/// that its reader is gone, cancels the build (exit 130), stops every
/// process of it, and removes its result root, which nobody will import.
#[test]
fn a_helper_whose_reader_is_gone_cancels_its_silent_build() {
    let bmake = require_tool("bmake", "bmake");
    require_tool("cc", "gcc");
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("hold-mark");
    let _leftovers = Leftovers(mark.clone());
    let request = dir.path().join("request.json");
    std::fs::write(&request, holding_request(&mark)).unwrap();
    let state = dir.path().join("state");
    let mut helper = fruix()
        .args(["native-build", "self-hosted", "--request"])
        .arg(&request)
        .arg("--state-dir")
        .arg(&state)
        .arg("--make")
        .arg(&bmake)
        // The helper and everything it starts carry the mark.
        .env("FRUIX_TEST_HOLD", &mark)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // What the helper says before the world build holds fits in the pipe:
    // it is not read, and the reader goes away once make is silent.
    let stdout = helper.stdout.take().unwrap();
    wait_until("the world build holds", || mark.exists());
    assert!(!guest_roots(&state).is_empty(), "the build's result root");
    let running = processes_mentioning(&mark);
    assert!(
        running.len() >= 3,
        "the helper, make, its sleep: {running:?}"
    );
    drop(stdout);
    let out = wait_with_deadline(helper, Duration::from_secs(60), "the helper");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    nothing_left(&mark);
    assert_eq!(guest_roots(&state), Vec::<PathBuf>::new(), "{stderr}");
}

/// Regression: SIGKILL of the host (as a lost connection, a closed
/// terminal, or a second Ctrl-C before the first had reached the guest)
/// left the guest's make running to its end: host-initiated's make steps,
/// and guest-self-hosted's helper with its make. Now nothing of the build
/// is left in the guest, and the helper's cancelled result root is gone.
#[test]
fn a_guest_build_whose_host_is_killed_stops_in_the_guest() {
    for executor in ["host-initiated", "guest-self-hosted"] {
        let sshd = Sshd::trusted();
        let host = tempfile::tempdir().unwrap();
        let mark = sshd.dir.path().join(format!("hold-{executor}"));
        let _leftovers = Leftovers(mark.clone());
        let mut cmd = match executor {
            "host-initiated" => guest_build(&sshd, executor, host.path(), "r1"),
            _ => {
                // The helper, and everything it starts, carry the mark.
                let helper = sshd.dir.path().join("marked-fruix");
                script(
                    &helper,
                    &format!(
                        "#!/bin/sh\nexport FRUIX_TEST_HOLD={}\nexec {} \"$@\"\n",
                        mark.display(),
                        env!("CARGO_BIN_EXE_fruix")
                    ),
                );
                build_with_helper(&sshd, host.path(), &helper)
            }
        };
        cmd.args(["--jobs", "1", "--make-flag=HOLD_BUILD=yes"])
            .arg(format!("--make-flag=HOLD_MARK={}", mark.display()));
        let mut build = spawn_reading_stderr(&mut cmd);
        wait_until("the guest's world build holds", || mark.exists());
        let running = processes_mentioning(&mark);
        assert!(
            running.len() >= 2,
            "{executor}: make and its sleep: {running:?}"
        );
        build.signal(libc::SIGKILL);
        let out = build.finish(Duration::from_secs(60), executor);
        assert_eq!(out.status.code(), None, "{executor}: killed");
        nothing_left(&mark);
        if executor == "guest-self-hosted" {
            let state = sshd.state_dir().join(host.path().file_name().unwrap());
            assert_eq!(guest_roots(&state), Vec::<PathBuf>::new(), "{executor}");
        }
    }
}
