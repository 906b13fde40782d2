//! Unit tests of the extraction: crafted tar streams, hostile ones included.

use super::*;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};

use fruix_core::testing::{raw_archive, RawEntry};

/// A GNU header of `kind`, `mode` and `size`, for the builder's
/// `append_data` and `append_link` (which write long names as GNU long
/// name and long link entries).
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h
}

use tar::EntryType as T;

/// A directory entry of a [`raw_archive`].
fn directory(path: &str, mode: u32) -> RawEntry<'_> {
    (path, T::Directory, mode, b"", None)
}

/// A regular file entry holding `data`.
fn file<'a>(path: &'a str, mode: u32, data: &'a [u8]) -> RawEntry<'a> {
    (path, T::Regular, mode, data, None)
}

/// A symbolic link entry (mode 0777) to `target`.
fn symlink<'a>(path: &'a str, target: &'a str) -> RawEntry<'a> {
    (path, T::Symlink, 0o777, b"", Some(target))
}

/// A hard link entry naming `target`.
fn hard_link<'a>(path: &'a str, mode: u32, target: &'a str) -> RawEntry<'a> {
    (path, T::Link, mode, b"", Some(target))
}

fn run(entries: &[RawEntry<'_>]) -> (tempfile::TempDir, Result<BTreeMap<PathBuf, u32>>) {
    run_bytes(&raw_archive(entries)[..], &ImportLimits::default())
}

/// Extracts `tar` into `staging` in a new directory, within `limits`.
fn run_bytes(
    tar: impl Read,
    limits: &ImportLimits,
) -> (tempfile::TempDir, Result<BTreeMap<PathBuf, u32>>) {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    fs::DirBuilder::new().mode(0o700).create(&staging).unwrap();
    let result = extract(tar, &staging, limits);
    (dir, result)
}

/// Extracts `entries`, which must succeed: the new directory (removed when
/// dropped), its staging directory, and the special mode bits recorded.
fn extracted(entries: &[RawEntry<'_>]) -> (tempfile::TempDir, PathBuf, BTreeMap<PathBuf, u32>) {
    let (dir, result) = run(entries);
    let special = result.unwrap();
    let staging = dir.path().join("staging");
    (dir, staging, special)
}

fn mode_of(path: &Path) -> u32 {
    path.symlink_metadata().unwrap().mode() & 0o7777
}

#[test]
fn a_normal_tree_is_extracted_with_modes_links_and_symlinks() {
    let (_dir, staging, special) = extracted(&[
        directory("./", 0o755),
        directory("./artifacts/world/bin/", 0o555),
        file("./artifacts/world/bin/sh", 0o555, b"#!"),
        symlink("./artifacts/world/bin/[", "test"),
        symlink("./artifacts/world/etc/localtime", "/usr/share/zoneinfo/UTC"),
        hard_link(
            "./artifacts/world/bin/rsh",
            0o555,
            "./artifacts/world/bin/sh",
        ),
    ]);
    assert!(special.is_empty());
    let root = staging.join("artifacts/world");
    assert_eq!(fs::read(root.join("bin/sh")).unwrap(), b"#!");
    assert_eq!(mode_of(&root.join("bin/sh")), 0o555);
    assert_eq!(
        fs::read_link(root.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
    assert_eq!(
        root.join("bin/rsh").metadata().unwrap().ino(),
        root.join("bin/sh").metadata().unwrap().ino()
    );
}

#[test]
fn setuid_bits_are_neutralised_and_recorded() {
    let (_dir, staging, special) =
        extracted(&[file("usr/bin/su", 0o4555, b"x"), directory("tmp/", 0o1777)]);
    assert_eq!(special.get(Path::new("usr/bin/su")), Some(&0o4000));
    assert_eq!(special.get(Path::new("tmp")), Some(&0o1000));
    assert_eq!(mode_of(&staging.join("usr/bin/su")), 0o555);
    assert_eq!(mode_of(&staging.join("tmp")), 0o755);
}

#[test]
fn a_hard_link_to_a_setuid_file_has_its_bits() {
    // FreeBSD installs chpass, chfn, chsh... as hard links of one setuid
    // file; the guest records every name with the file's mode.
    let (_dir, staging, special) = extracted(&[
        file("usr/bin/chpass", 0o4555, b"x"),
        hard_link("usr/bin/chfn", 0o4555, "usr/bin/chpass"),
        file("usr/bin/plain", 0o555, b"y"),
        hard_link("usr/bin/also-plain", 0o555, "usr/bin/plain"),
    ]);
    assert_eq!(special.get(Path::new("usr/bin/chpass")), Some(&0o4000));
    assert_eq!(special.get(Path::new("usr/bin/chfn")), Some(&0o4000));
    assert_eq!(special.len(), 2, "{special:?}");
    assert_eq!(mode_of(&staging.join("usr/bin/chfn")), 0o555);
}

#[test]
fn too_many_entries_with_special_bits_are_refused() {
    let names: Vec<String> = (0..=MAX_SPECIAL_ENTRIES)
        .map(|i| format!("bin/s{i}"))
        .collect();
    let entries: Vec<RawEntry<'_>> = names.iter().map(|n| file(n, 0o4555, b"")).collect();
    let (dir, result) = run(&entries);
    let e = result.unwrap_err();
    assert!(matches!(&e, Error::UnsafePath { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("more than {MAX_SPECIAL_ENTRIES} entries")),
        "{e}"
    );
    nothing_outside_staging(&dir);
    // Exactly the cap is fine.
    let (_dir, result) = run(&entries[..MAX_SPECIAL_ENTRIES]);
    assert_eq!(result.unwrap().len(), MAX_SPECIAL_ENTRIES);
}

#[test]
fn guest_modes_never_give_group_or_world_write_on_the_host() {
    // Each entry (a directory when it ends in `/`, else a file holding `x`)
    // with the mode the guest gives it and the mode it gets on the host.
    let modes = [
        ("open/", 0o777, 0o755),
        ("open/all", 0o777, 0o755),
        ("open/rw", 0o666, 0o644),
        ("open/group", 0o664, 0o644),
        ("open/private", 0o640, 0o640),
        ("open/setuid", 0o4777, 0o755),
        ("closed/", 0o555, 0o755),
        ("closed/mail/", 0o775, 0o755),
        ("implicit/below/file", 0o644, 0o644),
    ];
    let mut entries = vec![directory("./", 0o777)];
    entries.extend(modes.iter().map(|&(path, mode, _)| {
        if path.ends_with('/') {
            directory(path, mode)
        } else {
            file(path, mode, b"x")
        }
    }));
    let (_dir, staging, special) = extracted(&entries);
    assert_eq!(mode_of(&staging), 0o700, "the staging root keeps its mode");
    // The directories made for an entry below them, which no entry declares.
    let implicit = [("implicit", 0o755), ("implicit/below", 0o755)];
    let host_modes = modes.iter().map(|&(path, _, host)| (path, host));
    for (path, mode) in host_modes.chain(implicit) {
        let path = path.trim_end_matches('/');
        assert_eq!(mode_of(&staging.join(path)), mode, "{path}");
    }
    assert_eq!(special.get(Path::new("open/setuid")), Some(&0o4000));
}

#[test]
fn host_modes_strip_group_and_world_write() {
    assert_eq!(host_mode(false, 0o666), 0o644);
    assert_eq!(host_mode(false, 0o777), 0o755);
    assert_eq!(host_mode(false, 0o4777), 0o755);
    assert_eq!(host_mode(false, 0o444), 0o444);
    assert_eq!(host_mode(true, 0o777), 0o755);
    assert_eq!(host_mode(true, 0o1777), 0o755);
    assert_eq!(host_mode(true, 0o500), 0o700);
}

fn refused(entries: &[RawEntry<'_>], expected: &str) {
    let (dir, result) = run(entries);
    let e = result.unwrap_err().to_string();
    assert!(e.contains(expected), "{e}");
    nothing_outside_staging(&dir);
}

fn nothing_outside_staging(dir: &tempfile::TempDir) {
    let outside: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outside, ["staging"], "nothing is written next to staging");
}

#[test]
fn hostile_entries_are_refused_and_nothing_escapes() {
    refused(&[file("../escaped", 0o644, b"x")], "`..`");
    refused(&[file("a/../../escaped", 0o644, b"x")], "`..`");
    refused(&[file("/tmp/escaped-fruix-test", 0o644, b"x")], "absolute");
    refused(&[("fifo", T::Fifo, 0o644, b"", None)], "FIFO");
    refused(&[("null", T::Char, 0o644, b"", None)], "device");
    refused(
        &[symlink("a/etc", ".."), file("a/etc/escaped", 0o644, b"x")],
        "a/etc is a symlink in the archive but is used as a directory",
    );
    // One name twice, as files or as a file and a directory.
    let twice: [[RawEntry<'_>; 2]; 3] = [
        [file("f", 0o644, b"x"), file("f", 0o644, b"y")],
        [directory("d/", 0o755), file("d", 0o644, b"y")],
        [file("f", 0o644, b"x"), directory("f/", 0o755)],
    ];
    for entries in twice {
        refused(&entries, "twice");
    }
    refused(&[hard_link("l", 0o644, "../escaped")], "`..`");
    refused(
        &[hard_link("l", 0o644, "missing")],
        "not a regular file extracted before",
    );
    refused(
        &[symlink("a/s", "/etc"), hard_link("l", 0o644, "a/s/passwd")],
        "not a regular file extracted before",
    );
}

/// Regression: a `logs` that was a symlink (to `/etc`, say), or a file,
/// and a `.fruix-signatures` symlink, were extracted and placed in the
/// result root, though the host reads and writes those names. Nothing at
/// the top of a result root may be a symlink, and `logs` is a directory.
#[test]
fn a_symlink_at_the_top_or_a_logs_that_is_no_directory_is_refused() {
    for entries in [
        vec![symlink("logs", "/etc")],
        vec![
            symlink("./logs", "/etc"),
            file("promotion.scm", 0o644, b"x"),
        ],
        vec![symlink(".fruix-signatures", "/etc/passwd")],
        vec![symlink("promotion.scm", "/etc/passwd")],
        vec![symlink("artifacts", "/")],
    ] {
        refused(&entries, "a symlink at the top of a result root");
    }
    refused(
        &[file("logs", 0o644, b"x")],
        "`logs` that is not a directory",
    );
    refused(
        &[file("f", 0o644, b"x"), hard_link("logs", 0o644, "f")],
        "`logs` that is not a directory",
    );
    // Below the top, symlinks are data; a `logs` directory is a result
    // root's own.
    extracted(&[
        directory("logs/", 0o755),
        file("logs/buildworld.log", 0o644, b"x"),
        symlink("logs/latest", "buildworld.log"),
        file(".fruix-signatures", 0o644, b"x"),
    ]);
    extracted(&[file("logs/implied-parent.log", 0o644, b"x")]);
}

#[test]
fn symlink_to_etc_passwd_used_as_a_directory_never_touches_it() {
    let before = fs::read("/etc/passwd").unwrap();
    refused(
        &[symlink("a/p", "/etc/passwd"), file("a/p/x", 0o644, b"x")],
        "used as a directory",
    );
    assert_eq!(fs::read("/etc/passwd").unwrap(), before);
}

/// Asserts that `result` went over `cap` of `limits`, typed.
fn over(result: Result<BTreeMap<PathBuf, u32>>, cap: Cap, limits: &ImportLimits) -> String {
    let e = result.unwrap_err();
    match &e {
        Error::LimitExceeded { key, limit, .. } => {
            assert_eq!((*key, *limit), (cap.key(), limits.get(cap)), "{e}");
        }
        other => panic!("expected the {} cap, got {other:?}", cap.key()),
    }
    let text = e.to_string();
    assert!(
        text.contains(&format!("over the cap {} = {}", cap.key(), limits.get(cap))),
        "{text}"
    );
    text
}

/// A path of `len` bytes in components of 200 bytes.
fn long_path(len: usize) -> String {
    let mut path = String::new();
    while path.len() < len {
        let left = len - path.len();
        if left > 201 {
            path.push_str(&"d".repeat(200));
            path.push('/');
        } else {
            path.push_str(&"f".repeat(left));
        }
    }
    path
}

/// An archive of one regular file (content `x`) at `path`, or a symlink to
/// `link`, after pax records `pax`; the builder writes long names and link
/// targets as GNU long name and long link entries.
fn one_entry(pax: &[(&str, &[u8])], path: &str, link: Option<&str>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions(pax.iter().copied()).unwrap();
    match link {
        None => b.append_data(&mut header(T::Regular, 0o644, 1), path, &b"x"[..]),
        Some(target) => b.append_link(&mut header(T::Symlink, 0o777, 0), path, target),
    }
    .unwrap();
    b.into_inner().unwrap()
}

#[test]
fn an_over_long_name_is_refused_by_the_path_cap() {
    let limits = ImportLimits::default();
    let path = long_path(4096);
    let (dir, result) = run_bytes(&one_entry(&[], &path, None)[..], &limits);
    let text = over(result, Cap::PathBytes, &limits);
    assert!(text.contains("has a path of 4096 bytes"), "{text}");
    assert!(text.len() < 600, "the name is not printed whole: {text}");
    nothing_outside_staging(&dir);

    // A long path under the cap is fine.
    let path = long_path(4000);
    let (dir, result) = run_bytes(&one_entry(&[], &path, None)[..], &limits);
    result.unwrap();
    let extracted = dir.path().join("staging").join(&path);
    assert_eq!(fs::read(extracted).unwrap(), b"x");
}

/// Regression: entries were made at the staging directory's path joined
/// with theirs, so an entry within the path cap failed "File name too
/// long" (a system failure, which a matrix retries elsewhere) once the
/// two passed `PATH_MAX`. Each is made relative to the staging
/// directory's descriptor: a file, a symlink and a hard link at paths of
/// the cap's length are extracted beneath a staging directory whose own
/// path is long.
#[test]
fn an_entry_as_long_as_the_path_cap_is_extracted_beneath_a_long_staging_path() {
    let limits = ImportLimits::default();
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("s".repeat(200)).join("t".repeat(200));
    fs::create_dir_all(&staging).unwrap();
    let max = limits.max_path_bytes as usize;
    let (file, link, symlink) = (long_path(max), long_path(max - 1), long_path(max - 2));
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut header(T::Regular, 0o644, 1), &file, &b"x"[..])
        .unwrap();
    b.append_link(&mut header(T::Link, 0o644, 0), &link, &file)
        .unwrap();
    b.append_link(&mut header(T::Symlink, 0o777, 0), &symlink, "target")
        .unwrap();
    let archive = b.into_inner().unwrap();
    extract(&archive[..], &staging, &limits).unwrap();
    let at = rustix::fs::open(&staging, rustix::fs::OFlags::DIRECTORY, 0.into()).unwrap();
    let stat =
        |path: &str| rustix::fs::statat(&at, path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
    let (f, l, s) = (stat(&file), stat(&link), stat(&symlink));
    assert_eq!((f.st_size, f.st_nlink), (1, 2));
    assert_eq!((l.st_ino, l.st_dev), (f.st_ino, f.st_dev));
    assert_eq!(
        rustix::fs::FileType::from_raw_mode(s.st_mode),
        rustix::fs::FileType::Symlink
    );
}

#[test]
fn a_pax_path_counts_against_the_same_caps() {
    let limits = ImportLimits::default();
    let path = long_path(4500);
    let archive = one_entry(&[("path", path.as_bytes())], "short", None);
    let (_dir, result) = run_bytes(&archive[..], &limits);
    over(result, Cap::PathBytes, &limits);

    let archive = one_entry(&[("path", b"from/pax")], "short", None);
    let (dir, result) = run_bytes(&archive[..], &limits);
    result.unwrap();
    assert!(dir.path().join("staging/from/pax").is_file());
    assert!(!dir.path().join("staging/short").exists());
}

/// Regression: pax records were split at newlines (the tar crate's
/// `PaxExtensions`), so a `path` or `linkpath` holding one was refused as a
/// "malformed pax extension". Records are read by their length: such a
/// name is extracted like any other.
#[test]
fn a_pax_path_or_link_with_a_newline_is_extracted() {
    let limits = ImportLimits::default();
    let archive = one_entry(&[("path", b"dir/a\nb")], "short", None);
    let (dir, result) = run_bytes(&archive[..], &limits);
    result.unwrap();
    assert_eq!(fs::read(dir.path().join("staging/dir/a\nb")).unwrap(), b"x");
    assert!(!dir.path().join("staging/short").exists());

    let archive = one_entry(&[("linkpath", b"to\nthere")], "dir/l", Some("t"));
    let (dir, result) = run_bytes(&archive[..], &limits);
    result.unwrap();
    let link = fs::read_link(dir.path().join("staging/dir/l")).unwrap();
    assert_eq!(link, Path::new("to\nthere"));
}

#[test]
fn an_over_long_component_is_refused_by_the_name_cap() {
    let limits = ImportLimits::default();
    let path = format!("dir/{}", "n".repeat(256));
    let (_dir, result) = run_bytes(&one_entry(&[], &path, None)[..], &limits);
    let text = over(result, Cap::NameBytes, &limits);
    assert!(text.contains("name component of 256 bytes"), "{text}");
}

#[test]
fn an_over_long_link_target_is_refused_by_the_link_cap() {
    let limits = ImportLimits::default();
    let target = long_path(4096);
    // Below the top of the root: one at the top is refused whatever its target.
    let (dir, result) = run_bytes(&one_entry(&[], "a/l", Some(&target))[..], &limits);
    let text = over(result, Cap::LinkBytes, &limits);
    assert!(text.contains("link target of 4096 bytes"), "{text}");
    assert!(!dir.path().join("staging/a/l").exists());

    let target = long_path(4095);
    let (dir, result) = run_bytes(&one_entry(&[], "a/l", Some(&target))[..], &limits);
    result.unwrap();
    let link = fs::read_link(dir.path().join("staging/a/l")).unwrap();
    assert_eq!(link, Path::new(&target));
}

#[test]
fn an_extended_header_over_its_cap_is_refused_before_it_is_read() {
    let limits = ImportLimits {
        max_header_bytes: 4096,
        ..ImportLimits::default()
    };
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(T::GNULongName, 0o644, 1 << 20);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_cksum();
    b.append(&h, io::repeat(b'a').take(1 << 20)).unwrap();
    let (_dir, result) = run_bytes(&b.into_inner().unwrap()[..], &limits);
    let text = over(result, Cap::HeaderBytes, &limits);
    assert!(text.contains("a GNU long name of 1048576 bytes"), "{text}");
}

#[test]
fn malformed_extended_headers_are_refused() {
    let limits = ImportLimits::default();
    for (pax, expected) in [
        (
            ("size", b"2".as_slice()),
            "pax size \"2\" differs from its header's size 1",
        ),
        (("path", b"a\0b".as_slice()), "a NUL byte in a path"),
    ] {
        let (_dir, result) = run_bytes(&one_entry(&[pax], "f", None)[..], &limits);
        let e = result.unwrap_err().to_string();
        assert!(e.contains(expected), "{e}");
    }

    // A pax record whose length runs past its header: refused as the
    // archive's fault, before any entry is made.
    let mut b = tar::Builder::new(Vec::new());
    let record = b"99 path=a\n";
    let mut h = header(T::XHeader, 0o644, record.len() as u64);
    h.set_cksum();
    b.append(&h, &record[..]).unwrap();
    b.append_data(&mut header(T::Regular, 0o644, 1), "f", &b"x"[..])
        .unwrap();
    let (dir, result) = run_bytes(&b.into_inner().unwrap()[..], &limits);
    let e = result.unwrap_err();
    assert!(matches!(e, Error::System { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("(malformed pax extension: the record at byte 0 says it is longer than the 10 bytes left in the header)"), "{e}");
    assert!(!dir.path().join("staging/f").exists());

    // An extended header with nothing after it.
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", b"a".as_slice())])
        .unwrap();
    let (_dir, result) = run_bytes(&b.into_inner().unwrap()[..], &limits);
    let e = result.unwrap_err().to_string();
    assert!(e.contains("describes no entry"), "{e}");
}

#[test]
fn too_many_entries_are_refused_by_the_entry_cap() {
    let limits = ImportLimits {
        max_entries: 10,
        ..ImportLimits::default()
    };
    let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let entries: Vec<RawEntry<'_>> = names
        .iter()
        .map(|n| (n.as_str(), T::Regular, 0o644, &b"x"[..], None))
        .collect();
    let (_dir, result) = run_bytes(&raw_archive(&entries)[..], &limits);
    result.unwrap();
    let mut eleven = entries.clone();
    eleven.push(file("one-more", 0o644, b"x"));
    let (_dir, result) = run_bytes(&raw_archive(&eleven)[..], &limits);
    let text = over(result, Cap::Entries, &limits);
    assert!(text.contains("more than 10 entries"), "{text}");

    // Directories created for an entry the archive did not declare count too.
    let (dir, result) = run_bytes(
        &raw_archive(&[file("a/b/c/d/e/f/g/h/i/j/k", 0o644, b"x")])[..],
        &limits,
    );
    over(result, Cap::Entries, &limits);
    assert!(!dir.path().join("staging/a/b/c/d/e/f/g/h/i/j").exists());
}

#[test]
fn too_many_bytes_are_refused_by_the_byte_cap_and_no_more_is_written() {
    let limits = ImportLimits {
        max_bytes: 64 << 10,
        ..ImportLimits::default()
    };
    let big = vec![b'x'; 1 << 20];
    let (dir, result) = run_bytes(
        &raw_archive(&[("big", T::Regular, 0o644, &big, None)])[..],
        &limits,
    );
    let text = over(result, Cap::Bytes, &limits);
    assert!(text.contains("longer than 65536 bytes"), "{text}");
    let written = dir.path().join("staging/big").metadata().unwrap().len();
    assert!(written <= 64 << 10, "{written} bytes written");

    // An archive of exactly the cap passes.
    let tar = raw_archive(&[file("small", 0o644, b"x")]);
    let limits = ImportLimits {
        max_bytes: tar.len() as u64,
        ..ImportLimits::default()
    };
    let (_dir, result) = run_bytes(&tar[..], &limits);
    result.unwrap();
}

/// A tar stream of `count` copies of one header block, then the end of
/// the archive, generated as it is read.
struct Repeated {
    block: [u8; 512],
    count: usize,
    pos: usize,
}

impl Read for Repeated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (index, offset) = (self.pos / 512, self.pos % 512);
        let block = match index {
            i if i < self.count => &self.block,
            i if i < self.count + 2 => &[0; 512],
            _ => return Ok(0),
        };
        let n = buf.len().min(512 - offset);
        buf[..n].copy_from_slice(&block[offset..offset + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Each re-declaration is one map probe per component (it used to be a
/// scan of every directory extracted so far); the last one's mode wins.
#[test]
fn a_directory_declared_200000_times_is_extracted_once() {
    let mut entries = Vec::new();
    let names: Vec<String> = (0..100).map(|i| format!("d{i}/")).collect();
    for name in &names {
        entries.push((name.as_str(), T::Directory, 0o500, &b""[..], None));
    }
    let mut tar = raw_archive(&entries);
    // Without its end-of-archive blocks, so that the re-declarations follow.
    tar.truncate(tar.len() - 1024);
    let mut h = header(T::Directory, 0o777, 0);
    h.set_path("d99/").unwrap();
    h.set_cksum();
    let mut block = [0u8; 512];
    block.copy_from_slice(h.as_bytes());
    let stream = (&tar[..]).chain(Repeated {
        block,
        count: 200_000,
        pos: 0,
    });
    let (dir, result) = run_bytes(stream, &ImportLimits::default());
    result.unwrap();
    assert_eq!(mode_of(&dir.path().join("staging/d98")), 0o700);
    assert_eq!(mode_of(&dir.path().join("staging/d99")), 0o755);
    assert_eq!(
        fs::read_dir(dir.path().join("staging")).unwrap().count(),
        100
    );
}

/// A reader that fails once it is read past its data: an extractor that
/// stopped at the end-of-archive blocks never sees the failure.
struct ThenBroken<'a>(&'a [u8]);

impl Read for ThenBroken<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::Error::other("read past the stream's end"));
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn the_stream_is_read_to_its_end_after_the_archive_and_holds_only_zeros() {
    // tar pads its last record with zeros; the host reads it all, so that
    // the stream's end (and the guest's exit status) is reached, rather
    // than the guest's last bytes finding no reader (a "lost connection").
    let mut tar = raw_archive(&[file("a", 0o644, b"x")]);
    tar.extend(std::iter::repeat_n(0u8, 10240));
    let (_dir, result) = run_bytes(ThenBroken(&tar), &ImportLimits::default());
    let e = result.unwrap_err().to_string();
    assert!(e.contains("read past the stream's end"), "drained: {e}");
    let (_dir, result) = run_bytes(&tar[..], &ImportLimits::default());
    result.unwrap();
    // Anything but zeros after the archive is refused.
    tar.extend(b"appended by the guest");
    let (dir, result) = run_bytes(&tar[..], &ImportLimits::default());
    let e = result.unwrap_err().to_string();
    assert!(e.contains("after the end of the archive"), "{e}");
    nothing_outside_staging(&dir);
}
