//! fruix's tree signature tells trees apart exactly when `nix-hash` does, for
//! every change both consider (content, names, symlink targets, exec bits),
//! and ignores what both ignore (timestamps, creation order, write bits).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use fruix_core::manifest::tree_signature;
use fruix_core::testing::{set_times, write_files};

use crate::util::{require_tool, run_ok};

fn nix_hash(tree: &Path) -> String {
    require_tool("nix-hash", "nix-bin");
    run_ok(
        Command::new("nix-hash")
            .args(["--type", "sha256"])
            .arg(tree),
    )
    .trim()
    .to_string()
}

fn both(tree: &Path) -> (String, String) {
    (nix_hash(tree), tree_signature(tree).unwrap().to_string())
}

fn tree(root: &Path, reversed: bool) {
    let mut files: Vec<(&str, &[u8], u32)> = vec![
        ("bin/sh", b"shell", 0o755),
        ("etc/motd", b"hello", 0o644),
        ("usr/lib/libc.so.7", b"libc", 0o444),
    ];
    if reversed {
        files.reverse();
    }
    write_files(root, &files).unwrap();
    symlink("libc.so.7", root.join("usr/lib/libc.so")).unwrap();
}

#[test]
fn signature_and_nix_hash_agree_on_what_changes_a_tree() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    tree(&a, false);
    let base = both(&a);

    // Same tree, other creation order, other timestamps and write bits: both unchanged.
    let b = dir.path().join("b");
    tree(&b, true);
    set_times(&b, 1_000_000).unwrap();
    fs::set_permissions(b.join("etc/motd"), fs::Permissions::from_mode(0o600)).unwrap();
    let same = both(&b);
    assert_eq!(
        same, base,
        "nix-hash and fruix both ignore order, timestamps and write bits"
    );

    type Change = (&'static str, fn(&Path), fn(&Path));
    let changes: [Change; 4] = [
        (
            "a byte",
            |t| fs::write(t.join("etc/motd"), "hellO").unwrap(),
            |t| fs::write(t.join("etc/motd"), "hello").unwrap(),
        ),
        (
            "a name",
            |t| fs::rename(t.join("etc/motd"), t.join("etc/motD")).unwrap(),
            |t| fs::rename(t.join("etc/motD"), t.join("etc/motd")).unwrap(),
        ),
        (
            "a symlink target",
            |t| {
                fs::remove_file(t.join("usr/lib/libc.so")).unwrap();
                symlink("libc.so.8", t.join("usr/lib/libc.so")).unwrap();
            },
            |t| {
                fs::remove_file(t.join("usr/lib/libc.so")).unwrap();
                symlink("libc.so.7", t.join("usr/lib/libc.so")).unwrap();
            },
        ),
        (
            "an exec bit",
            |t| fs::set_permissions(t.join("etc/motd"), fs::Permissions::from_mode(0o755)).unwrap(),
            |t| fs::set_permissions(t.join("etc/motd"), fs::Permissions::from_mode(0o644)).unwrap(),
        ),
    ];
    for (what, change, undo) in changes {
        change(&a);
        let (nix, fruix) = both(&a);
        assert_ne!(nix, base.0, "nix-hash must see {what}");
        assert_ne!(fruix, base.1, "fruix must see {what}");
        undo(&a);
        assert_eq!(both(&a), base, "undoing {what} restores both hashes");
    }
}
