//! Tests of manifests, signatures, mtree encoding and diffs.
use super::*;
use crate::Error;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};

fn make_tree(root: &Path, reversed: bool) {
    let mut files: Vec<(&str, &[u8], u32)> = vec![
        ("bin/sh", b"#!shell\n", 0o755),
        ("bin/cat", b"cat", 0o700),
        ("etc/motd", b"welcome\n", 0o644),
        ("usr/bin/su", b"su", 0o4755),
        ("a b/new\nline", b"spaces", 0o600),
        ("a-b", b"dash", 0o644),
    ];
    if reversed {
        files.reverse();
    }
    crate::testing::write_files(root, &files).unwrap();
    fs::create_dir_all(root.join("a")).unwrap();
    let odd = root.join(OsStr::from_bytes(b"a/\xff\xfe-latin1"));
    fs::write(odd, b"bytes").unwrap();
    symlink("/usr/share/zoneinfo/UTC", root.join("etc/localtime")).unwrap();
    symlink("../../bin/sh", root.join("usr/bin/sh-link")).unwrap();
}

fn signature(root: &Path) -> TreeSignature {
    tree_signature(root).unwrap()
}

#[test]
fn signature_ignores_creation_order_and_timestamps() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_tree(a.path(), false);
    make_tree(b.path(), true);
    crate::testing::set_times(b.path(), 1_000_000).unwrap();
    assert_eq!(signature(a.path()), signature(b.path()));
}

#[test]
fn signature_changes_with_content_name_link_and_exec_bit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_tree(root, false);
    let base = signature(root);

    fs::write(root.join("etc/motd"), b"welcomE\n").unwrap();
    let byte = signature(root);
    assert_ne!(byte, base, "a changed byte must change the signature");
    fs::write(root.join("etc/motd"), b"welcome\n").unwrap();
    assert_eq!(signature(root), base);

    fs::rename(root.join("etc/motd"), root.join("etc/motD")).unwrap();
    assert_ne!(
        signature(root),
        base,
        "a renamed file must change the signature"
    );
    fs::rename(root.join("etc/motD"), root.join("etc/motd")).unwrap();

    fs::remove_file(root.join("etc/localtime")).unwrap();
    symlink("/usr/share/zoneinfo/CET", root.join("etc/localtime")).unwrap();
    assert_ne!(
        signature(root),
        base,
        "a new symlink target must change the signature"
    );
    fs::remove_file(root.join("etc/localtime")).unwrap();
    symlink("/usr/share/zoneinfo/UTC", root.join("etc/localtime")).unwrap();
    assert_eq!(signature(root), base);

    fs::set_permissions(root.join("etc/motd"), fs::Permissions::from_mode(0o744)).unwrap();
    assert_ne!(
        signature(root),
        base,
        "an exec bit must change the signature"
    );
    fs::set_permissions(root.join("etc/motd"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        signature(root),
        base,
        "read/write bits beyond canonical modes do not count"
    );

    fs::set_permissions(root.join("usr/bin/su"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_ne!(
        signature(root),
        base,
        "a setuid bit must change the signature"
    );
}

#[test]
fn fifo_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("dev")).unwrap();
    let fifo = dir.path().join("dev/pipe");
    crate::testing::mkfifo(&fifo).unwrap();
    match tree_signature(dir.path()) {
        Err(Error::UnsupportedFileType { path, kind }) => {
            assert_eq!(path, fifo);
            assert_eq!(kind, "a FIFO");
        }
        other => panic!("expected UnsupportedFileType, got {other:?}"),
    }
}

#[test]
fn symlinked_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    symlink("/etc", dir.path().join("root")).unwrap();
    assert!(matches!(
        tree_signature(&dir.path().join("root")),
        Err(Error::UnsafePath { .. })
    ));
}

#[test]
fn manifest_lines_parse_back_and_are_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), false);
    let mut text = Vec::new();
    let sig = write_manifest(dir.path(), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    assert_eq!(
        TreeSignature::from_hasher(hasher),
        sig,
        "signature is the SHA-256 of the manifest text"
    );
    let entries: Vec<Entry> = text
        .lines()
        .skip(1)
        .map(|l| parse_line(l).unwrap())
        .collect();
    assert!(entries
        .windows(2)
        .all(|w| path_order(&w[0].path, &w[1].path) == Ordering::Less));
    let names: Vec<String> = entries.iter().map(Entry::manifest_path).collect();
    assert!(
        names.contains(&"./a/\\377\\376-latin1".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"./a\\040b/new\\012line".to_string()),
        "{names:?}"
    );
    let su = entries.iter().find(|e| e.path == b"usr/bin/su").unwrap();
    assert_eq!(su.mode, 0o4555);
    // "a/..." sorts before "a-b" although '-' < '/' bytewise.
    let a = names.iter().position(|n| n == "./a").unwrap();
    let ab = names.iter().position(|n| n == "./a-b").unwrap();
    assert!(a < ab);
}

#[test]
fn encode_and_decode_are_inverse() {
    let raw: Vec<u8> = (0u8..=255).collect();
    let mut s = String::new();
    encode_into(&raw, &mut s);
    assert!(!s.contains([' ', '\n', '#', '*', '?', '[']));
    assert_eq!(decode(&s).unwrap(), raw);
}

#[test]
fn diff_lists_modified_missing_and_extra() {
    let file = |p: &str, byte: u8| Entry {
        path: p.as_bytes().to_vec(),
        mode: 0o444,
        kind: EntryKind::File {
            size: 1,
            sha256: [byte; 32],
        },
    };
    let expected = [file("a", 1), file("b", 2), file("c", 3)];
    let actual = [file("a", 1), file("b", 9), file("d", 4)];
    let diff = diff_entries(&expected, &actual, Modes::Canonical);
    assert_eq!(
        diff,
        vec![
            Difference::Modified {
                path: "./b".into(),
                what: vec!["sha256".into()]
            },
            Difference::Missing { path: "./c".into() },
            Difference::Extra { path: "./d".into() },
        ]
    );
}

#[test]
fn progress_counts_every_file_and_byte_read() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), false);
    // A file larger than one read buffer is counted piece by piece.
    fs::write(dir.path().join("large"), vec![7u8; READ_BUFFER * 3 + 5]).unwrap();
    let progress = Progress::default();
    let mut expected = (0, 0);
    let options = WalkOptions {
        progress: Some(&progress),
        ..WalkOptions::default()
    };
    walk(dir.path(), &options, |w| {
        if let EntryKind::File { size, .. } = w.entry.kind {
            expected = (expected.0 + 1, expected.1 + size);
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(expected.0, 8, "the tree's regular files");
    assert_eq!(
        (
            progress.files.load(std::sync::atomic::Ordering::Relaxed),
            progress.bytes.load(std::sync::atomic::Ordering::Relaxed)
        ),
        expected
    );
}

/// A tree `DIR/tree` holding one 64 KiB file `f`; returns the tree and
/// the file.
fn one_file_tree(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = dir.join("tree");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("f"), vec![b'a'; 64 << 10]).unwrap();
    let path = root.join("f");
    (root, path)
}

/// Reads `file` on to its end, `size` bytes in, as a [`ReadFile`] does:
/// what it read (its hash left zero).
fn read_rest(file: &mut OpenFile<'_>, mut size: u64) -> Result<FileDigest> {
    let mut buf = vec![0; 128 << 10];
    loop {
        let n = file.read_piece(&mut buf, size)?;
        if n == 0 {
            break;
        }
        size += n as u64;
    }
    Ok(FileDigest {
        size,
        sha256: [0; 32],
    })
}

/// What a walk of `root` that reads its files with `read` fails with.
fn refused_walk(root: &Path, read: &ReadFile<'_>) -> String {
    let options = WalkOptions {
        read_file: Some(read),
        ..WalkOptions::default()
    };
    walk(root, &options, |_| Ok(())).unwrap_err().to_string()
}

/// Regression: a file truncated, or rewritten in place, while the walk
/// read it was taken whole (only growth was caught): its entry held a mix
/// of old and new bytes. Either is refused as the tree changing, as tar's
/// "file changed as we read it".
#[test]
fn a_file_written_while_it_is_read_is_refused() {
    for (what, write) in [
        ("truncated", &b"short"[..]),
        ("rewritten in place", &[b'x'; 64 << 10][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (root, path) = one_file_tree(dir.path());
        // Written between two reads: after the first piece, before the end.
        let read = |file: &mut OpenFile<'_>| {
            let mut buf = vec![0; 4096];
            let size = file.read_piece(&mut buf, 0)? as u64;
            // Some time passes between the reads: the new mtime differs.
            let old = fs::metadata(&path).unwrap().modified().unwrap();
            loop {
                fs::write(&path, write).unwrap();
                if fs::metadata(&path).unwrap().modified().unwrap() != old {
                    break;
                }
            }
            read_rest(file, size)
        };
        let e = refused_walk(&root, &read);
        assert!(
            e.contains("was written while it was being read"),
            "{what}: {e}"
        );
    }
}

/// A file that grows once all the bytes it had at open are read, before
/// its end would be read, is refused: no read is made to find the end (the
/// size at open says where it is), and the `fstat` after reading sees the
/// new size. One that grows while it is read fails as it is read.
#[test]
fn a_file_that_grows_while_it_is_read_is_refused() {
    for (what, first_piece, says) in [
        (
            "after its last byte",
            64 << 10,
            "was written while it was being read",
        ),
        ("before its last byte", 4096, "grew while it was being read"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (root, path) = one_file_tree(dir.path());
        let read = |file: &mut OpenFile<'_>| {
            let mut buf = vec![0; first_piece];
            let mut size = 0u64;
            while size < first_piece as u64 {
                size += file.read_piece(&mut buf[size as usize..], size)? as u64;
            }
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            std::io::Write::write_all(&mut f, b"more").unwrap();
            read_rest(file, size)
        };
        let e = refused_walk(&root, &read);
        assert!(e.contains(says), "{what}: {e}");
    }
}
