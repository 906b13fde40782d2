//! Host key checking and authentication of the SSH executors against a
//! real sshd. A source path the guest does not have stops each run right
//! after the connection is made, so these tests build nothing.

use std::process::Command;

use crate::sshd::{guest_build, keygen, Sshd};
use crate::util::run;

const MISSING_SOURCE: &str = "/nonexistent/fruix-test-source";

/// A build, with its host state in a new directory, whose source is missing
/// in the guest: it connects, then stops. `identity` replaces the accepted
/// user key.
fn probe_as(
    sshd: &Sshd,
    identity: Option<&std::path::Path>,
    extra: &[&str],
) -> (Option<i32>, String) {
    let host = tempfile::tempdir().unwrap();
    let cmd: Command = guest_build(sshd, "host-initiated", host.path(), "r");
    let mut fixed = Command::new(cmd.get_program());
    let mut replace: Option<String> = None;
    for a in cmd.get_args().map(|a| a.to_string_lossy().into_owned()) {
        // A checkout in the guest, which it does not have.
        let a = if a == "--source" {
            "--guest-source".to_string()
        } else {
            a
        };
        fixed.arg(replace.take().unwrap_or_else(|| a.clone()));
        replace = match a.as_str() {
            "--guest-source" => Some(MISSING_SOURCE.to_string()),
            "--identity" => identity.map(|p| p.display().to_string()),
            _ => None,
        };
    }
    fixed.args(["--freebsd-version", "15.0-STABLE"]).args(extra);
    let out = run(&mut fixed);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn probe(sshd: &Sshd, extra: &[&str]) -> (Option<i32>, String) {
    probe_as(sshd, None, extra)
}

/// [`probe_as`], which must be refused with exit status `status`: 2 for a
/// host key (the caller's known_hosts or pinned key), 3 for a system
/// failure; its stderr.
fn refused(sshd: &Sshd, identity: Option<&std::path::Path>, extra: &[&str], status: i32) -> String {
    let (code, stderr) = probe_as(sshd, identity, extra);
    assert_eq!(code, Some(status), "{stderr}");
    stderr
}

#[test]
fn missing_source_in_the_guest_is_named() {
    let sshd = Sshd::trusted();
    let (code, stderr) = probe(&sshd, &[]);
    // The caller's input (exit 2): it exited 4, and named --source.
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(MISSING_SOURCE)
            && stderr.contains("does not exist in the guest")
            && stderr.contains("with --guest-source"),
        "{stderr}"
    );
}

#[test]
fn unknown_host_key_is_refused_then_accepted_with_accept_new_host_key() {
    let sshd = Sshd::start();
    let stderr = refused(&sshd, None, &[], 2);
    assert!(
        stderr.contains("not known") && stderr.contains("SHA256:"),
        "{stderr}"
    );
    let line = format!("[127.0.0.1]:{} {}", sshd.port, sshd.host_key());
    assert!(
        stderr.contains(&line),
        "the line to add is printed: {stderr}"
    );
    assert!(std::fs::read_to_string(sshd.known_hosts())
        .unwrap()
        .is_empty());

    let (_, stderr) = probe(&sshd, &["--accept-new-host-key"]);
    assert!(
        stderr.contains("does not exist in the guest"),
        "it connected: {stderr}"
    );
    let known = std::fs::read_to_string(sshd.known_hosts()).unwrap();
    assert!(known.contains(&line), "{known}");
    let (_, stderr) = probe(&sshd, &[]);
    assert!(
        stderr.contains("does not exist in the guest"),
        "now known: {stderr}"
    );
}

#[test]
fn hashed_known_hosts_entries_are_honoured() {
    let sshd = Sshd::trusted();
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-H", "-f"])
        .arg(sshd.known_hosts()));
    assert!(out.status.success());
    assert!(std::fs::read_to_string(sshd.known_hosts())
        .unwrap()
        .starts_with("|1|"));
    let (_, stderr) = probe(&sshd, &[]);
    assert!(stderr.contains("does not exist in the guest"), "{stderr}");
}

#[test]
fn changed_host_key_is_refused_even_with_accept_new_host_key() {
    let mut sshd = Sshd::trusted();
    sshd.restart_with_new_host_key();
    for extra in [&[][..], &["--accept-new-host-key"][..]] {
        let stderr = refused(&sshd, None, extra, 2);
        assert!(
            stderr.contains("HAS CHANGED") && stderr.contains("man in the middle"),
            "{stderr}"
        );
        assert!(stderr.contains("line 1 of"), "{stderr}");
    }
}

#[test]
fn wrong_user_key_is_refused_with_a_clear_message() {
    let sshd = Sshd::trusted();
    let other = sshd.dir.path().join("other_key");
    keygen(&other);
    let stderr = refused(&sshd, Some(&other), &[], 3);
    assert!(
        stderr.contains("refused authentication as user")
            && stderr.contains(&other.display().to_string())
            && stderr.contains("authorized_keys"),
        "{stderr}"
    );
}

#[test]
fn machines_file_with_a_pinned_host_key_replaces_known_hosts() {
    let sshd = Sshd::start();
    let host = tempfile::tempdir().unwrap();
    let machines = sshd.machines_file(host.path(), "");
    let out = run(build_on(&machines, "builder-1")
        .arg("--result-root")
        .arg(host.path().join("r")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not exist in the guest"),
        "it connected: {stderr}"
    );
    let out = run(&mut build_on(&machines, "builder-9"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("builder-1"));
}

/// A host-initiated build on `machine` of the machines file `machines`,
/// from a source the guest does not have, with a store and state directory
/// beside the machines file.
fn build_on(machines: &std::path::Path, machine: &str) -> Command {
    let mut cmd = crate::util::fruix();
    let dir = machines.parent().expect("the machines file's directory");
    cmd.args(["build", "--executor", "host-initiated", "--guest-source"])
        .arg(MISSING_SOURCE)
        .args(crate::util::store_and_state(dir))
        .args(["--freebsd-version", "15.0-STABLE", "--machines"])
        .arg(machines)
        .args(["--machine", machine]);
    cmd
}
