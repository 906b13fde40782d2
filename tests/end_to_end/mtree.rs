//! Debian's stock `mtree` (mtree-netbsd) checks fruix's manifests.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use fruix_core::manifest::write_manifest;
use fruix_core::testing::write_sample_result_root;

use crate::util::{key_values, promote_command, require_tool, run, run_ok};

fn mtree_check(manifest: &Path, tree: &Path) -> (bool, String) {
    require_tool("mtree", "mtree-netbsd");
    let out = run(Command::new("mtree")
        .arg("-f")
        .arg(manifest)
        .arg("-p")
        .arg(tree));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.trim().is_empty(), text)
}

fn file(root: &Path, rel: &[u8], content: &[u8], mode: u32) {
    let p = root.join(OsStr::from_bytes(rel));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree whose modes are already canonical, with awkward names.
fn awkward_tree(root: &Path) {
    file(root, b"bin/sh", b"shell", 0o555);
    file(root, b"usr/bin/su", b"su", 0o4555);
    file(root, b"etc/with space", b"space", 0o444);
    file(root, b"etc/new\nline", b"newline", 0o444);
    file(root, b"etc/glob*?[x]#hash", b"glob", 0o444);
    file(root, b"etc/latin1-\xe9", b"latin1", 0o444);
    symlink("/usr/share/zoneinfo/UTC", root.join("etc/localtime")).unwrap();
    symlink("target with space", root.join("etc/link")).unwrap();
    for d in ["", "bin", "usr", "usr/bin", "etc"] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o555)).unwrap();
    }
}

#[test]
fn mtree_verifies_a_fruix_manifest_and_fails_after_a_byte_changes() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    awkward_tree(&tree);
    let manifest = dir.path().join("manifest.mtree");
    let mut out = Vec::new();
    write_manifest(&tree, &mut out).unwrap();
    fs::write(&manifest, &out).unwrap();
    let (ok, text) = mtree_check(&manifest, &tree);
    assert!(
        ok,
        "mtree refused fruix's manifest:\n{text}\nmanifest:\n{}",
        String::from_utf8_lossy(&out)
    );

    let target = tree.join(OsStr::from_bytes(b"etc/latin1-\xe9"));
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&target, b"latin2").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o444)).unwrap();
    let (ok, text) = mtree_check(&manifest, &tree);
    assert!(!ok, "mtree accepted a changed byte");
    assert!(text.contains("sha256"), "{text}");
}

#[test]
fn mtree_verifies_a_store_object_with_its_own_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write_sample_result_root(&root, "local", "20260405T213444Z", true).unwrap();
    let kv = key_values(&run_ok(&mut promote_command(
        &dir.path().join("store"),
        &root,
        &["--quiet"],
    )));
    for artifact in ["world", "kernel", "headers", "bootloader"] {
        let object = Path::new(&kv[&format!("{artifact}_store")]);
        let (ok, text) = mtree_check(&object.join(".fruix-manifest.mtree"), object);
        assert!(ok, "{artifact}: mtree refused the object:\n{text}");
    }
    let world = Path::new(&kv["world_store"]);
    let motd = world.join("etc/motd");
    fs::set_permissions(&motd, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&motd, b"FreeBSD 15.0-STABLx\n").unwrap();
    fs::set_permissions(&motd, fs::Permissions::from_mode(0o444)).unwrap();
    let (ok, text) = mtree_check(&world.join(".fruix-manifest.mtree"), world);
    assert!(!ok && text.contains("etc/motd"), "{text}");
}
