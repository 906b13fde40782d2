//! Regressions from a review of the guest executors: what a guest says
//! reaches the host's terminal and logs escaped, a guest cannot pass for
//! the host's own Ctrl-C, a failed self-hosted build leaves its log on the
//! host, the import is stopped in the guest like any remote command, and
//! protocol lines with keys of no message are refused.

use std::path::Path;
use std::time::Duration;

use fruix_core::testing::conformance::processes_mentioning;

use crate::ssh_import::{answering_helper, build_exiting, build_exiting_within};
use crate::sshd::{guest_build, Sshd};
use crate::util::{require_tool, run, spawn_reading_stderr, wait_until};

/// Guest stderr that would recolour the terminal and forge an error line.
const FORGING: &str = r"printf 'mkdir: \033[31mRED\nfruix: error: forged line\n' >&2";

/// The forged stderr as the host must show it: on one line, escaped.
const FORGED_ESCAPED: &str = r"mkdir: \033[31mRED\nfruix: error: forged line";

/// Checks that `stderr` shows the guest's forging text escaped, on one
/// line, and never as a line of its own or with its escape byte.
fn shows_forged_text_escaped(what: &str, stderr: &str) {
    assert!(stderr.contains(FORGED_ESCAPED), "{what}: {stderr}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("fruix: error: forged")),
        "{what}: a forged line: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{what}: raw escape: {stderr}");
}

/// Regression: a guest program's stderr was put raw into the host's SSH
/// errors (creating the guest result root, sending the source, importing),
/// so a guest could forge lines on the host's stderr.
#[test]
fn guest_stderr_in_ssh_errors_is_escaped_on_one_line() {
    let tar = require_tool("tar", "tar");
    let mtree = require_tool("mtree", "mtree-netbsd");
    // Each guest program forges when it does what the case is about, and is
    // the real one otherwise.
    let cases = [
        (
            "creating the guest result root",
            "mkdir",
            r#"case "$*" in *native-builds*) FORGE;; esac; exec /bin/mkdir "$@""#.to_string(),
        ),
        (
            "sending the source",
            "mtree",
            format!(
                r#"case "$PWD" in *.tmp-fruix-source.*) FORGE;; esac; exec {} "$@""#,
                mtree.display()
            ),
        ),
        (
            "importing",
            "tar",
            format!(
                r#"if [ "$*" = "-cf - ." ]; then FORGE; fi; exec {} "$@""#,
                tar.display()
            ),
        ),
    ];
    for (what, program, body) in cases {
        let sshd = Sshd::trusted_with_bin();
        let body = body.replace("FORGE", &format!("{{ {FORGING}; exit 1; }}"));
        sshd.guest_program(program, &format!("#!/bin/sh\n{body}\n"));
        let host = tempfile::tempdir().unwrap();
        let out = run(&mut guest_build(&sshd, "host-initiated", host.path(), "r1"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{what}: {stderr}");
        shows_forged_text_escaped(what, &stderr);
    }
}

/// Regression: the host wrote a host-initiated step's log lines raw, so
/// `cat logs/buildworld.log` ran the guest's terminal escapes (OSC, BEL,
/// colours). Each line is now written as the terminal display shows it.
#[test]
fn a_host_initiated_step_log_holds_no_raw_terminal_escapes() {
    let bmake = require_tool("bmake", "bmake");
    let sshd = Sshd::trusted_with_bin();
    sshd.guest_program(
        "bmake",
        &format!(
            "#!/bin/sh\nprintf '\\033]0;owned\\007\\033[31mred\\n'\nexec {} \"$@\"\n",
            bmake.display()
        ),
    );
    let host = tempfile::tempdir().unwrap();
    let out = run(&mut guest_build(&sshd, "host-initiated", host.path(), "r1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read(host.path().join("r1/logs/buildworld.log")).unwrap();
    let log = String::from_utf8(log).unwrap();
    assert!(
        log.lines().any(|l| l == r"\033]0;owned\007\033[31mred"),
        "{log}"
    );
    assert!(!log.contains(['\u{1b}', '\u{7}']), "raw bytes: {log:?}");
}

/// Regression: a guest helper that said its build was cancelled (in its
/// outcome, or by exiting 130) made the host exit 130, as for its own
/// Ctrl-C. Nobody cancelled it here: it is a system failure (exit 3),
/// retried like one, saying what the guest did.
#[test]
fn a_guest_that_says_cancelled_is_a_system_failure_when_nobody_cancelled() {
    let sshd = Sshd::trusted();
    let cases = [
        (
            "outcome",
            r#"echo '{"v":1,"outcome":{"result":"failed","failure":"cancelled","tail":[],"message":"x"}}'; exit 130"#,
        ),
        ("exit status", "exit 130"),
    ];
    for (what, body) in cases {
        let helper = answering_helper(
            &sshd,
            &format!("cancelling-{}", what.replace(' ', "-")),
            body,
        );
        let stderr = build_exiting(&sshd, &helper, 3, what);
        assert!(
            stderr.contains("the guest cancelled the build, but nobody cancelled it here"),
            "{what}: {stderr}"
        );
    }
}

/// Regression: a guest's failure status was escaped by the protocol and
/// again by the error's display (`\\033`): it is escaped once.
#[test]
fn a_guest_failure_status_is_escaped_once() {
    let sshd = Sshd::trusted();
    let helper = answering_helper(
        &sshd,
        "coloured-status",
        r#"echo '{"v":1,"outcome":{"result":"failed","failure":"build","step":"buildworld","status":"exit \u001b[31m2","tail":[],"message":"x"}}'; exit 1"#,
    );
    let stderr = build_exiting(&sshd, &helper, 1, "the coloured status");
    assert!(
        stderr.contains(r"build step `buildworld` failed (in the guest: exit \033[31m2)"),
        "{stderr}"
    );
}

/// Regression: a line with an outcome and another key (an event) was
/// taken as the outcome. A line that is not exactly one message of
/// protocol 1 is refused, as every protocol violation is (exit 3).
#[test]
fn a_protocol_line_with_extra_keys_is_refused() {
    let sshd = Sshd::trusted();
    let cases = [
        (
            "outcome and event",
            r#"{"v":1,"outcome":{"result":"succeeded","result_root":"/x"},"event":{"event":"warning","message":"w"}}"#,
        ),
        (
            "an unknown key",
            r#"{"v":1,"outcome":{"result":"succeeded","result_root":"/x"},"extra":1}"#,
        ),
        (
            "an unknown key in the outcome",
            r#"{"v":1,"outcome":{"result":"succeeded","result_root":"/x","extra":1}}"#,
        ),
        ("no body", r#"{"v":1}"#),
    ];
    for (what, line) in cases {
        let helper = answering_helper(
            &sshd,
            &format!("extra-{}", what.replace(' ', "-")),
            &format!("echo '{line}'"),
        );
        let stderr = build_exiting(&sshd, &helper, 3, what);
        assert!(stderr.contains("broke its protocol"), "{what}: {stderr}");
    }
}

/// The `; full log: PATH` note of `stderr`, whose file must exist.
fn full_log(what: &str, stderr: &str, expected: &Path) -> String {
    let note = format!("full log: {}", expected.display());
    assert!(stderr.contains(&note), "{what}: no {note:?} in {stderr}");
    std::fs::read_to_string(expected).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Regression: a failed or timed-out guest-self-hosted build left no log on
/// the host and named none (local and host-initiated builds say `full log:
/// PATH`). The guest's lines go to `logs/guest-build.log`, escaped.
#[test]
fn a_failed_self_hosted_build_names_its_log_on_the_host() {
    let sshd = Sshd::trusted();
    let host = tempfile::tempdir().unwrap();
    // (name, flags, exit status, a line the log must hold)
    let cases = [
        (
            "failed",
            &["--make-flag=FAIL_STEP=buildworld"][..],
            1,
            "stopping the world build on purpose",
        ),
        (
            "timed-out",
            &["--make-flag=HOLD_BUILD=yes", "--timeout", "30s"],
            3,
            "HOLD_BUILD=yes: waiting to be interrupted",
        ),
    ];
    for (name, flags, status, says) in cases {
        let mut cmd = guest_build(&sshd, "guest-self-hosted", host.path(), name);
        let out = run(cmd.args(["--jobs", "1"]).args(flags));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{name}: {stderr}");
        let expected = host.path().join(name).join("logs/guest-build.log");
        let log = full_log(name, &stderr, &expected);
        assert!(log.contains(says), "{name}: {log}");
    }
}

/// Regression: Ctrl-C during the import closed its channel only, and the
/// guest's `tar` went on running. The import's remote session is stopped
/// like every remote command's: nothing of it is left in the guest.
#[test]
fn ctrl_c_during_the_import_leaves_nothing_running_in_the_guest() {
    let sshd = Sshd::trusted_with_bin();
    let marker = sshd.dir.path().join("import-holding");
    // For the import, the first 100000 bytes of a real archive, then a
    // wait: the host is mid-import. Every process of the wait has the
    // marker in its environment.
    crate::guest_import_cancel::holding_tar(&sshd, &marker, "");
    let host = tempfile::tempdir().unwrap();
    let mut build = spawn_reading_stderr(&mut guest_build(
        &sshd,
        "guest-self-hosted",
        host.path(),
        "r1",
    ));
    build.wait_for_line("==> import");
    wait_until("the guest's tar holds", || {
        processes_mentioning(&marker).len() >= 2
    });
    build.signal(libc::SIGINT);
    let out = build.finish(Duration::from_secs(60), "the interrupted import");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let left = processes_mentioning(&marker);
    assert!(left.is_empty(), "still running in the guest: {left:?}");
}

/// Regression: a guest helper that said how its build ended but did not
/// exit kept the host waiting until `--timeout`, or forever without one.
/// It has a grace period to exit; then it is stopped, nothing of it is
/// left in the guest, the user is told, and its outcome stands.
#[test]
fn a_helper_that_does_not_exit_after_its_outcome_is_stopped() {
    let sshd = Sshd::trusted();
    let marker = sshd.dir.path().join("after-outcome");
    let helper = answering_helper(
        &sshd,
        "lingering",
        &format!(
            r#"echo '{{"v":1,"outcome":{{"result":"failed","failure":"build","step":"buildworld","status":"exit 2","tail":[],"message":"x"}}}}'
export FRUIX_TEST_HOLD={}
exec sh -c 'sleep 600 & wait'"#,
            marker.display()
        ),
    );
    let stderr = build_exiting_within(&sshd, &helper, 1, Duration::from_secs(60));
    assert!(
        stderr.contains("the guest helper did not exit within 10s of saying how its build ended; it was stopped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("build step `buildworld` failed"),
        "{stderr}"
    );
    let left = processes_mentioning(&marker);
    assert!(left.is_empty(), "still running in the guest: {left:?}");
}
