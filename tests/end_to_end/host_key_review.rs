//! SSH host key problems are the caller's configuration, as an unusable
//! private key is: exit status 2, never a system failure (3, which a matrix
//! retries and counts against the machine). Against a real sshd on
//! 127.0.0.1, with the real `fruix store copy` and `fruix build`.

use std::path::Path;
use std::process::Command;

use crate::sshd::Sshd;
use crate::util::{fruix, run, run_failing};

/// `fruix store copy --from` the guest of `sshd`, its host key checked
/// against `known_hosts`, with `extra` flags, into a store under `dir`, of
/// an object name no store has: the copy connects, checks the host key,
/// and only then would ask for it.
fn copy_from(sshd: &Sshd, known_hosts: &Path, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = fruix();
    cmd.args(["store", "copy", "--from"])
        .arg(format!("ssh://{}", sshd.guest()))
        .arg("--identity")
        .arg(sshd.identity())
        .arg("--known-hosts")
        .arg(known_hosts)
        .arg("--store")
        .arg(dir.join("store"))
        .args(extra)
        .arg(format!(
            "/x/{}-fruix-native-world-15.0-local",
            "a".repeat(40)
        ));
    cmd
}

/// Regression: a `--known-hosts` file that does not exist was read as
/// empty, and the host refused as unknown: a system failure (exit 3).
#[test]
fn a_missing_known_hosts_file_is_not_found_exit_2() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-known-hosts");
    let stderr = run_failing(
        &mut copy_from(&sshd, &missing, dir.path(), &[]),
        2,
        &["not found", "SHA256:", &missing.display().to_string()],
    );
    let line = format!("[127.0.0.1]:{} {}", sshd.port, sshd.host_key());
    assert!(stderr.contains(&line), "the line to add: {stderr}");
    assert!(!missing.exists());
}

/// Regression: `--accept-new-host-key` created the missing directories of
/// the known_hosts path (`/nonexistent/`, mode 0755, as root). It creates
/// the file only, in a directory that exists.
#[test]
fn accept_new_host_key_creates_no_directory() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let known_hosts = missing.join("sub/known_hosts");
    run_failing(
        &mut copy_from(&sshd, &known_hosts, dir.path(), &["--accept-new-host-key"]),
        2,
        &["does not exist", &missing.join("sub").display().to_string()],
    );
    assert!(!missing.exists(), "nothing created");
    // In a directory that exists, the file is created with the key; what
    // the copy does next (the guest has no `fruix` to serve it) is not
    // this test's.
    let known_hosts = dir.path().join("known_hosts");
    run(&mut copy_from(
        &sshd,
        &known_hosts,
        dir.path(),
        &["--accept-new-host-key"],
    ));
    let text = std::fs::read_to_string(&known_hosts).unwrap();
    assert_eq!(
        text,
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_key())
    );
}

/// Regression: an unknown host key was a system failure (exit 3); `--json`
/// says it with the usage status.
#[test]
fn an_unknown_host_key_is_exit_2_in_json_too() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let out = run(&mut copy_from(
        &sshd,
        &sshd.known_hosts(),
        dir.path(),
        &["--json"],
    ));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "usage", "{error:#}");
    assert_eq!(error["error"]["exit_status"], 2, "{error:#}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not known") && message.contains("SHA256:"),
        "{message}"
    );
    assert!(!dir.path().join("store").exists());
}

/// Regression: a changed host key was a system failure (exit 3).
#[test]
fn a_changed_host_key_is_exit_2() {
    let mut sshd = Sshd::trusted();
    sshd.restart_with_new_host_key();
    let dir = tempfile::tempdir().unwrap();
    for extra in [&[][..], &["--accept-new-host-key"][..]] {
        run_failing(
            &mut copy_from(&sshd, &sshd.known_hosts(), dir.path(), extra),
            2,
            &["HAS CHANGED", "man in the middle", "line 1 of"],
        );
    }
}

/// Regression: a known_hosts path that is a directory, or a malformed
/// line naming the host, was a system failure (exit 3).
#[test]
fn a_known_hosts_directory_or_malformed_line_is_exit_2() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    run_failing(
        &mut copy_from(&sshd, dir.path(), dir.path(), &[]),
        2,
        &["is a directory, not a regular file"],
    );
    std::fs::write(
        sshd.known_hosts(),
        format!(
            "# builders\n[127.0.0.1]:{} ssh-ed25519 notakey\n",
            sshd.port
        ),
    )
    .unwrap();
    run_failing(
        &mut copy_from(&sshd, &sshd.known_hosts(), dir.path(), &[]),
        2,
        &["line 2 of", &sshd.known_hosts().display().to_string()],
    );
}

/// Regression: a machine's pinned `host-key` that is no key was a system
/// failure of the build (exit 3); it is the machines file's to fix.
#[test]
fn a_pinned_host_key_that_is_no_key_fails_a_build_with_exit_2() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let machines = sshd.machines_file(dir.path(), "");
    let text = std::fs::read_to_string(&machines).unwrap();
    std::fs::write(
        &machines,
        text.replace(&sshd.host_key(), "ssh-ed25519 notakey"),
    )
    .unwrap();
    let mut build = fruix();
    build
        .args(["build", "--executor", "host-initiated"])
        .args(["--guest-source", "/nonexistent/fruix-test-source"])
        .args(crate::util::store_and_state(dir.path()))
        .args(["--freebsd-version", "15.0-STABLE", "--machines"])
        .arg(&machines)
        .args(["--machine", "builder-1"]);
    run_failing(
        &mut build,
        2,
        &["pinned host-key \"ssh-ed25519 notakey\" is not a public key"],
    );
}

/// Regression: in a matrix, a machine whose pinned host key no longer
/// matches failed each attempt as a system failure: the cell was retried,
/// and the machine set aside. It is the machines file's to fix: one
/// attempt, no machine set aside.
#[test]
fn a_changed_pinned_key_is_not_retried_nor_sets_the_machine_aside() {
    let mut sshd = Sshd::start();
    let m = crate::matrix::Matrix::new(
        "  (machines-file \"machines.scm\")\n  (axes (executor \"host-initiated\"))\n  (retries 1)",
    );
    sshd.machines_file(m.dir.path(), "");
    sshd.restart_with_new_host_key();
    let out = m.run(&[]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        crate::matrix::describe(&out)
    );
    let report = m.report();
    let cell = &report["cells"][0];
    assert_eq!(
        cell["attempts"].as_array().unwrap().len(),
        1,
        "not retried: {report:#}"
    );
    assert_ne!(cell["status"], "system-failure", "{report:#}");
    assert!(
        cell["error"].as_str().unwrap().contains("HAS CHANGED"),
        "{report:#}"
    );
    assert_eq!(
        report["machines_set_aside"],
        serde_json::json!([]),
        "{report:#}"
    );
}
