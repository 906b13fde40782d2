//! The import of guest result roots is safe against what a guest may send:
//! a dropped connection, a tree changed after it was signed, and hostile
//! archives. The guest helper here is the real fruix wrapped by a script
//! that tampers with the result root it built, and the guest's `tar` can be
//! swapped for one that sends a crafted archive.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fruix_core::testing::raw_archive;
use tempfile::TempDir;

use crate::sshd::{guest_build, script, tampering_helper, Sshd};
use crate::util::{run, run_with_deadline, snapshot};

/// A guest-self-hosted [`guest_build`] into result root `r1` under `host`,
/// with `helper` as the guest's fruix. Its guest state directory is one of
/// its own, named after `host`, so that each build's guest result root is
/// alone there (builds sharing one take numbered roots: see `ssh_run_ids`).
pub fn build_with_helper(sshd: &Sshd, host: &Path, helper: &Path) -> Command {
    let cmd = guest_build(sshd, "guest-self-hosted", host, "r1");
    let state = sshd.state_dir().join(host.file_name().unwrap());
    let mut fixed = Command::new(cmd.get_program());
    let mut replace = None;
    for a in cmd.get_args() {
        fixed.arg(replace.take().unwrap_or(a));
        replace = match a.to_str() {
            Some("--guest-helper") => Some(helper.as_os_str()),
            Some("--guest-state-dir") => Some(state.as_os_str()),
            _ => None,
        };
    }
    fixed
}

/// A build's exit status and stderr.
pub type Outcome = (Option<i32>, String);

/// A guest build with `helper` as the guest's fruix.
pub fn build_with(sshd: &Sshd, host: &Path, helper: &Path) -> Outcome {
    build_with_config(sshd, host, helper, &[])
}

/// [`build_with`], with executor configuration `KEY=VALUE` pairs.
pub fn build_with_config(sshd: &Sshd, host: &Path, helper: &Path, config: &[&str]) -> Outcome {
    let mut cmd = build_with_helper(sshd, host, helper);
    for pair in config {
        cmd.args(["--config", pair]);
    }
    let out = run(&mut cmd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A guest helper `name` (for [`build_with`]) that answers `--version` as
/// fruix does, reads the request, then runs `body` (sh).
pub fn answering_helper(sshd: &Sshd, name: &str, body: &str) -> PathBuf {
    let fruix = env!("CARGO_BIN_EXE_fruix");
    let path = sshd.dir.path().join(name);
    script(
        &path,
        &format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then exec {fruix} --version; fi\ncat >/dev/null\n{body}\n"
        ),
    );
    path
}

/// [`build_with`] `helper` into a new host state directory: the build
/// (`what`) must exit `status`. Returns its stderr.
pub fn build_exiting(sshd: &Sshd, helper: &Path, status: i32, what: &str) -> String {
    let host = tempfile::tempdir().unwrap();
    let (code, stderr) = build_with(sshd, host.path(), helper);
    assert_eq!(code, Some(status), "{what}: {stderr}");
    stderr
}

/// [`build_exiting`], killed unless it ends within `deadline`: for a helper
/// that may leave the build waiting.
pub fn build_exiting_within(sshd: &Sshd, helper: &Path, status: i32, deadline: Duration) -> String {
    let host = tempfile::tempdir().unwrap();
    let out = run_with_deadline(&mut build_with_helper(sshd, host.path(), helper), deadline);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(status), "{stderr}");
    stderr
}

/// A guest-self-hosted build into `host` by a guest helper that runs
/// `after` on the result root it built ([`tampering_helper`]), with
/// executor configuration `config`.
pub fn tampered_build(sshd: &Sshd, host: &Path, after: &str, config: &[&str]) -> Outcome {
    let helper = tampering_helper(sshd.dir.path(), after);
    build_with_config(sshd, host, &helper, config)
}

/// [`tampered_build`] into a fresh host directory, returned with the outcome.
pub fn tampered_build_fresh(sshd: &Sshd, after: &str, config: &[&str]) -> (TempDir, Outcome) {
    let host = tempfile::tempdir().unwrap();
    let outcome = tampered_build(sshd, host.path(), after, config);
    (host, outcome)
}

/// [`tampered_build_fresh`], which must be refused as invalid input (exit
/// status 4) leaving [`nothing_partial`]; the host directory and stderr.
pub fn import_refused(sshd: &Sshd, after: &str, config: &[&str]) -> (TempDir, String) {
    let (host, (code, stderr)) = tampered_build_fresh(sshd, after, config);
    assert_eq!(code, Some(4), "{stderr}");
    nothing_partial(host.path());
    (host, stderr)
}

/// No staging directory is left next to the result root, and the result
/// root (if any) cannot be promoted.
pub fn nothing_partial(host: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(host)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".import-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    let root = host.join("r1");
    assert!(
        !root.exists() || root.join(".fruix-incomplete").exists(),
        "a failed import leaves the result root marked unfinished"
    );
    assert!(!root.join("artifacts").exists(), "nothing was moved in");
}

#[test]
fn tree_changed_in_the_guest_after_signing_is_refused() {
    let sshd = Sshd::trusted();
    let (host, stderr) = import_refused(&sshd, "chmod u+w \"$ROOT/artifacts/world/bin/sh\"; echo tampered >> \"$ROOT/artifacts/world/bin/sh\"", &[]);
    assert!(stderr.contains("tree signature mismatch"), "{stderr}");
    assert!(stderr.contains("artifacts/world"), "{stderr}");
    assert!(crate::util::nothing_promoted(&host.path().join("store")));
}

#[test]
fn setuid_bits_are_never_created_and_a_setuid_file_added_to_a_signed_tree_is_refused() {
    let sshd = Sshd::trusted();
    let (host, (code, stderr)) = tampered_build_fresh(
        &sshd,
        "cp /bin/true \"$ROOT/logs/evil\"; chmod 4755 \"$ROOT/logs/evil\"",
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let evil = host.path().join("r1/logs/evil").metadata().unwrap();
    assert_eq!(
        evil.permissions().mode() & 0o7777,
        0o755,
        "setuid bit stripped"
    );
    let su = host
        .path()
        .join("r1/artifacts/world/usr/bin/su")
        .metadata()
        .unwrap();
    assert_eq!(
        su.permissions().mode() & 0o7000,
        0,
        "no setuid file is created on the host, even in a signed tree"
    );
    let recorded = std::fs::read_to_string(host.path().join("r1/.fruix-special-modes")).unwrap();
    assert!(
        recorded.contains("(\"artifacts/world/usr/bin/su\" \"4000\")"),
        "the signed tree's setuid bit is recorded: {recorded}"
    );
    assert!(!recorded.contains("logs/evil"), "{recorded}");

    let (_, stderr) = import_refused(&sshd, "cp /bin/true \"$ROOT/artifacts/world/bin/evil\"; chmod 4755 \"$ROOT/artifacts/world/bin/evil\"", &[]);
    assert!(stderr.contains("tree signature mismatch"), "{stderr}");
}

#[test]
fn hostile_archives_are_refused_and_nothing_outside_staging_is_touched() {
    use tar::EntryType as T;
    let sshd = Sshd::trusted_with_bin();
    // The guest's tar sends .hostile.tar instead of the tree when there is one.
    sshd.guest_program(
        "tar",
        "#!/bin/sh\nif [ -f ./.hostile.tar ]; then exec cat ./.hostile.tar; fi\nexec /usr/bin/tar \"$@\"\n",
    );
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let canary = format!("fruix-escaped-canary-{}", std::process::id());
    let dotdot = format!("../../{canary}");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "symlink to /etc/passwd used as a directory",
            raw_archive(&[
                ("./artifacts/", T::Directory, 0o755, b"", None),
                ("./artifacts/p", T::Symlink, 0o777, b"", Some("/etc/passwd")),
                ("./artifacts/p/x", T::Regular, 0o644, b"owned", None),
            ]),
            "used as a directory",
        ),
        (
            "`..` entry",
            raw_archive(&[(dotdot.as_str(), T::Regular, 0o644, b"escaped", None)]),
            "`..`",
        ),
        (
            "FIFO",
            raw_archive(&[("./artifacts/fifo", T::Fifo, 0o644, b"", None)]),
            "FIFO",
        ),
        (
            "setuid file in an unsigned tree",
            raw_archive(&[
                (
                    "./promotion.scm",
                    T::Regular,
                    0o644,
                    b"(fruix-native-build-promotion)",
                    None,
                ),
                (
                    "./artifacts/world/bin/evil",
                    T::Regular,
                    0o4755,
                    b"#!/bin/sh\n",
                    None,
                ),
            ]),
            "promotion.scm",
        ),
        (
            "a corrupt header with more data after it",
            corrupt_then_more(),
            "archive header checksum mismatch",
        ),
    ];
    for (what, archive, expected) in cases {
        let host = tempfile::tempdir().unwrap();
        let archive_path = sshd.dir.path().join("hostile.tar");
        std::fs::write(&archive_path, archive).unwrap();
        let (code, stderr) = tampered_build(
            &sshd,
            host.path(),
            &format!("cp {} \"$ROOT/.hostile.tar\"", archive_path.display()),
            &[],
        );
        assert!(code != Some(0), "{what}: accepted: {stderr}");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert!(
            !stderr.contains("import attempt"),
            "{what}: a refused archive is not retried as a dropped connection: {stderr}"
        );
        nothing_partial(host.path());
        assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd, "{what}");
        for dir in [host.path(), host.path().parent().unwrap(), Path::new("/")] {
            assert!(
                !dir.join(&canary).exists(),
                "{what}: {canary} escaped into {}",
                dir.display()
            );
        }
        let setuid: Vec<_> = walk_setuid(host.path());
        assert!(
            setuid.is_empty(),
            "{what}: setuid files created: {setuid:?}"
        );
    }
}

/// A valid entry, a header block with a bad checksum, then 8 MB more: the
/// extraction stops at the bad header while the guest is still sending.
fn corrupt_then_more() -> Vec<u8> {
    let mut archive = raw_archive(&[("./ok", tar::EntryType::Regular, 0o644, b"x", None)]);
    archive.truncate(archive.len() - 1024);
    let mut bad = [b'x'; 512];
    bad[148..156].copy_from_slice(b"0000000\0");
    archive.extend_from_slice(&bad);
    archive.resize(archive.len() + (8 << 20), 0);
    archive
}

fn walk_setuid(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.permissions().mode() & 0o6000 != 0 {
                found.push(e.path());
            }
        }
    }
    found
}

#[test]
fn sshd_killed_during_import_is_a_system_failure_leaving_nothing() {
    let mut sshd = Sshd::trusted();
    let host = tempfile::tempdir().unwrap();
    // A large result root, so that the import is still running when sshd dies.
    let helper = tampering_helper(
        sshd.dir.path(),
        "dd if=/dev/zero of=\"$ROOT/logs/big\" bs=1048576 count=600 2>/dev/null",
    );
    let mut child = build_with_helper(&sshd, host.path(), &helper)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("==> import") {
            break;
        }
    }
    // Once data has arrived (the staging directory holds something), kill
    // sshd and every connection it serves.
    let staging_has_data = || {
        std::fs::read_dir(host.path()).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(".r1.import-")
                && std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some())
        })
    };
    crate::util::wait_until("the import has received data", staging_has_data);
    let store_before = snapshot(&host.path().join("store"));
    sshd.kill();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let stderr = format!("{}\n{}", seen.join("\n"), rest.join("\n"));
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("connection lost") || stderr.contains("cannot connect"),
        "{stderr}"
    );
    nothing_partial(host.path());
    assert_eq!(
        snapshot(&host.path().join("store")),
        store_before,
        "store unchanged"
    );
}
