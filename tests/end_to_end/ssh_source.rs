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
}
