//! fruix's tree signature and `nix-hash` both see a change of content, of a
//! name, of a symlink target and of the owner's exec bit, and both ignore
//! timestamps, creation order and write bits. They differ on the other mode
//! bits: fruix counts a file with ANY exec bit as executable (`0744`,
//! `0654` and `0610` all become `0555`), where a NAR looks only at the
//! owner's, and fruix keeps the setuid, setgid and sticky bits, which a NAR
//! has no place for ([`exec_bits_beyond_the_owners_count_only_to_fruix`]).

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

/// The mode of `t/etc/motd` set to `mode`.
fn motd_mode(t: &Path, mode: u32) {
    fs::set_permissions(t.join("etc/motd"), fs::Permissions::from_mode(mode)).unwrap();
}

/// Where the two disagree: a group-only or other-only exec bit makes a file
/// executable to fruix and not to `nix-hash` (which reads the owner's bit
/// alone), and a setuid bit counts to fruix only.
#[test]
fn exec_bits_beyond_the_owners_count_only_to_fruix() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t");
    tree(&t, false);
    let mode = |mode: u32| {
        motd_mode(&t, mode);
        both(&t)
    };
    let (nix_0644, fruix_0644) = mode(0o644);
    // A group-only (0654) or other-only (0645) exec bit: executable to
    // fruix, not to nix-hash.
    for only in [0o654, 0o645] {
        let (nix, fruix) = mode(only);
        assert_eq!(nix, nix_0644, "nix-hash ignores {only:04o}'s exec bit");
        assert_ne!(fruix, fruix_0644, "fruix counts {only:04o}'s exec bit");
    }
    // The owner's exec bit, added to a group one: nix-hash sees it, fruix
    // does not (the file was executable to it already).
    let (nix_0654, fruix_0654) = mode(0o654);
    let (nix_0754, fruix_0754) = mode(0o754);
    assert_ne!(nix_0754, nix_0654, "nix-hash sees the owner's exec bit");
    assert_eq!(fruix_0754, fruix_0654, "fruix: executable either way");
    // The setuid bit: kept by fruix, no part of a NAR.
    let (nix_4755, fruix_4755) = mode(0o4755);
    let (nix_0755, fruix_0755) = mode(0o755);
    assert_eq!(nix_4755, nix_0755, "a NAR has no setuid bit");
    assert_ne!(fruix_4755, fruix_0755, "fruix keeps the setuid bit");
}
