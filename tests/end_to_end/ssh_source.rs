//! Source objects reaching a guest over SSH: sent once, checked on
//! arrival and before every build with the guest's `mtree`, and a copy that
//! does not match its manifest refused.

use std::path::{Path, PathBuf};

use crate::sshd::{guest_build, Sshd};
use crate::util::{require_tool, run};

/// The line the source stage logged (`source DEST: ...`), from a
/// `--verbose` build's stderr.
fn source_line(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("source ") && l.contains(": "))
        .unwrap_or_else(|| panic!("no source line in: {stderr}"))
        .to_string()
}

/// The source object in the guest's store.
fn guest_object(sshd: &Sshd) -> PathBuf {
    let objects: Vec<PathBuf> = std::fs::read_dir(sshd.guest_store())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
    objects[0].clone()
}

fn build(sshd: &Sshd, host: &Path, name: &str) -> std::process::Output {
    run(guest_build(sshd, "host-initiated", host, name).arg("--verbose"))
}

#[test]
fn a_guest_receives_a_source_once_and_refuses_a_corrupted_copy() {
    require_tool("mtree", "mtree-netbsd");
    let sshd = Sshd::trusted();
    let host = tempfile::tempdir().unwrap();
    let first = build(&sshd, host.path(), "r1");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    let line = source_line(&stderr);
    let sent: u64 = line
        .rsplit_once("sent ")
        .and_then(|(_, n)| n.strip_suffix(" bytes"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the first build sends the source: {line}"));
    assert!(sent > 10_000, "{line}");
    let object = guest_object(&sshd);
    assert!(object.join(".fruix-source.scm").is_file());
    // The second build finds it there, sound, and sends nothing.
    let second = build(&sshd, host.path(), "r2");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        source_line(&stderr).ends_with(": already in the guest"),
        "{stderr}"
    );
    // A copy changed in the guest is refused, not used and not replaced.
    let makefile = object.join("Makefile");
    let mode = std::fs::metadata(&object).unwrap().permissions();
    std::fs::set_permissions(&object, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        &makefile,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(&makefile, b"buildworld:\n\techo tampered\n").unwrap();
    std::fs::set_permissions(&object, mode).unwrap();
    let third = build(&sshd, host.path(), "r3");
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert_eq!(third.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("does not match its manifest"), "{stderr}");
    assert!(
        !stderr.contains("tampered"),
        "nothing built from it: {stderr}"
    );
    assert!(!host.path().join("r3/promotion.scm").exists());
    // Regression: a file added to the copy (an `extra:` line, which mtree
    // prints and exits 0 on) was accepted, and built from.
    std::fs::set_permissions(&object, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&object).unwrap();
    let fourth = build(&sshd, host.path(), "r4");
    assert!(
        fourth.status.success(),
        "{}",
        String::from_utf8_lossy(&fourth.stderr)
    );
    std::fs::write(object.join("bin/Makefile.inc.extra"), b"CFLAGS+=-DEVIL\n").unwrap();
    let fifth = build(&sshd, host.path(), "r5");
    let stderr = String::from_utf8_lossy(&fifth.stderr);
    assert_eq!(fifth.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("does not match its manifest"), "{stderr}");
    assert!(!host.path().join("r5/promotion.scm").exists());
}

#[test]
fn a_guest_checkout_builds_and_its_signature_is_recorded() {
    let sshd = Sshd::trusted();
    let host = tempfile::tempdir().unwrap();
    // The guest is this machine: its checkout is the fixture tree.
    let checkout = crate::util::fixture_source();
    let mut cmd = crate::util::fruix();
    cmd.args([
        "build",
        "--executor",
        "guest-self-hosted",
        "--json",
        "--guest-source",
    ])
    .arg(&checkout)
    .args(["--freebsd-version", "15.0-STABLE"])
    .args(crate::util::store_and_state(host.path()))
    .arg("--out-link")
    .arg(host.path().join("result"))
    .args(["--source-date-epoch", "1775420084", "--make-flag=-DNO_ROOT"])
    .args(sshd.guest_options())
    .arg("--identity")
    .arg(sshd.identity())
    .arg("--guest-helper")
    .arg(env!("CARGO_BIN_EXE_fruix"));
    let report: serde_json::Value = serde_json::from_str(&crate::util::run_ok(&mut cmd)).unwrap();
    let bundle = Path::new(report["result_store"].as_str().unwrap());
    let metadata = std::fs::read_to_string(bundle.join(".fruix-native-build-result.scm")).unwrap();
    // The signature the guest recorded is the tree's: what `source add`
    // computes for the same tree.
    let added: serde_json::Value = serde_json::from_str(&crate::util::run_ok(
        crate::util::fruix()
            .args(["source", "add", "--json", "--store"])
            .arg(host.path().join("store"))
            .arg(&checkout),
    ))
    .unwrap();
    let signature = added["tree_signature"].as_str().unwrap();
    assert!(
        metadata.contains(&format!("(tree-signature \"{signature}\")")),
        "{metadata}"
    );
    assert!(
        metadata.contains(&format!("(path \"{}\")", checkout.display())),
        "{metadata}"
    );
    // No source object was sent: the guest store stays empty.
    assert!(
        !sshd.guest_store().exists()
            || std::fs::read_dir(sshd.guest_store())
                .unwrap()
                .next()
                .is_none()
    );
}

/// Regression: without `--freebsd-version`, a `--guest-source` path that
/// is also a tree on this host took this host's version from its
/// `newvers.sh` into the artifacts' identity. It is refused (exit 2) before
/// anything connects.
#[test]
fn a_guest_source_needs_its_version_given() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(crate::util::fruix()
        .args([
            "build",
            "--executor",
            "host-initiated",
            "--guest",
            "builder@127.0.0.1:9",
        ])
        .arg("--guest-source")
        .arg(crate::util::fixture_source())
        .args(crate::util::store_and_state(dir.path())));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("give --freebsd-version"), "{stderr}");
    assert!(!dir.path().join("store").exists(), "nothing was made");
}
