//! Tree manifests in mtree(5) format and the tree-content signature.
//!
//! A tree is walked without ever following a symlink. Its entries are
//! directories, regular files (size, SHA-256, mode) and symlinks (target kept
//! verbatim, absolute and dangling targets included). Device nodes, FIFOs and
//! sockets are refused with the path named. Hard links are recorded as files.
//! Names are bytes: non-UTF-8 names, spaces and newlines are encoded the way
//! mtree(8) encodes them (`\ooo` octal escapes).
//!
//! Entries come in *path order*: component by component, bytewise (a directory's
//! children, sorted by name, follow it directly). Parents therefore precede their
//! children, so the stock `mtree -f MANIFEST -p TREE` (FreeBSD's, or Debian's
//! mtree-netbsd) checks a tree against a fruix manifest.
//!
//! Modes are canonical: files are `0444`, or `0555` when any execute bit is set;
//! directories are `0555`; setuid, setgid and sticky bits are kept on top.
//! The signature (`sha256:` + the SHA-256 of the canonical manifest text)
//! therefore depends on content, names, types, symlink targets and mode bits,
//! never on timestamps, owners, inode numbers or directory read order.
//!
//! Hashing runs on every core (rayon) over bounded batches of entries, so memory
//! stays flat however large the tree.

use std::cmp::Ordering;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

mod walk;
pub use walk::{
    changed, hash_file, open_beneath, open_dir, open_file_beneath, stat, walk, walk_fd,
    with_buffer, FileDigest, OpenFile, Progress, ReadFile, WalkOptions, Walked, MAX_DEPTH,
    MAX_PATH_BYTES, READ_BUFFER,
};

/// The first line of every fruix manifest.
pub const MANIFEST_HEADER: &str = "#mtree v2.0\n";

/// Setuid, setgid and sticky bits: kept in signatures, stripped in the store.
pub const SPECIAL_BITS: u32 = 0o7000;

/// A tree-content signature: `sha256:` followed by 64 lowercase hex digits.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct TreeSignature(String);

impl TreeSignature {
    /// The signature of manifest text hashed into `hasher`.
    pub fn from_hasher(hasher: Sha256) -> Self {
        TreeSignature(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    /// The textual form, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TreeSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TreeSignature {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| {
            format!("{s:?} is not a tree signature; expected sha256:<64 lowercase hex digits>")
        })?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "{s:?} is not a tree signature; expected sha256:<64 lowercase hex digits>"
            ));
        }
        Ok(TreeSignature(s.to_string()))
    }
}

impl TryFrom<String> for TreeSignature {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<TreeSignature> for String {
    fn from(s: TreeSignature) -> String {
        s.0
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File { size: u64, sha256: [u8; 32] },
    Symlink { target: Vec<u8> },
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the tree root, as bytes; empty for the root itself.
    pub path: Vec<u8>,
    /// Canonical mode (see the module docs); 0 for symlinks.
    pub mode: u32,
    pub kind: EntryKind,
}

/// Which modes a rendered manifest states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modes {
    /// Canonical modes with setuid/setgid/sticky bits: the signed form.
    Canonical,
    /// Modes as they are in the store, special bits stripped: the form `mtree` checks.
    Store,
}

impl Entry {
    /// The path in manifest form: `.` for the root, `./a/b` otherwise, mtree-encoded.
    pub fn manifest_path(&self) -> String {
        let mut out = String::from(".");
        if !self.path.is_empty() {
            out.push('/');
            encode_into(&self.path, &mut out);
        }
        out
    }

    /// Appends the entry's manifest line (with newline) to `out`.
    pub fn render(&self, modes: Modes, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str(&self.manifest_path());
        let mode = match modes {
            Modes::Canonical => self.mode,
            Modes::Store => self.mode & !SPECIAL_BITS,
        };
        match &self.kind {
            EntryKind::Directory => {
                let _ = write!(out, " type=dir mode={mode:04o}");
            }
            EntryKind::File { size, sha256 } => {
                let _ = write!(
                    out,
                    " type=file mode={mode:04o} size={size} sha256digest={}",
                    hex::encode(sha256)
                );
            }
            EntryKind::Symlink { target } => {
                out.push_str(" type=link link=");
                encode_into(target, out);
            }
        }
        out.push('\n');
    }

    /// The entry's kind as a word (`dir`, `file`, `link`).
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            EntryKind::Directory => "dir",
            EntryKind::File { .. } => "file",
            EntryKind::Symlink { .. } => "link",
        }
    }

    /// The file size, 0 for directories and symlinks.
    pub fn size(&self) -> u64 {
        match self.kind {
            EntryKind::File { size, .. } => size,
            _ => 0,
        }
    }
}

/// Canonical mode of a directory or file with `st_mode` `raw`.
pub fn canonical_mode(is_dir: bool, raw: u32) -> u32 {
    let special = raw & SPECIAL_BITS;
    if is_dir || raw & 0o111 != 0 {
        0o555 | special
    } else {
        0o444 | special
    }
}

fn is_plain(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !b"\\#*?[]".contains(&b)
}

/// Encodes bytes as mtree(8) does (`strsvis` with `VIS_OCTAL`): anything that is
/// not a plain printable character becomes a `\ooo` octal escape.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if is_plain(b) {
            out.push(b as char);
        } else {
            out.push('\\');
            out.push(char::from(b'0' + (b >> 6)));
            out.push(char::from(b'0' + ((b >> 3) & 7)));
            out.push(char::from(b'0' + (b & 7)));
        }
    }
}

/// Decodes an mtree-encoded word (octal and C-style escapes).
pub fn decode(word: &str) -> std::result::Result<Vec<u8>, String> {
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let rest = &bytes[i + 1..];
        match rest.first() {
            Some(d) if (b'0'..=b'7').contains(d) => {
                let digits: Vec<u8> = rest
                    .iter()
                    .take(3)
                    .take_while(|c| (b'0'..=b'7').contains(c))
                    .copied()
                    .collect();
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).map_err(|_| format!("bad octal escape in {word:?}"))?);
                i += 1 + digits.len();
            }
            Some(b'n') => {
                out.push(b'\n');
                i += 2;
            }
            Some(b't') => {
                out.push(b'\t');
                i += 2;
            }
            Some(b's') => {
                out.push(b' ');
                i += 2;
            }
            Some(&c) => {
                out.push(c);
                i += 2;
            }
            None => return Err(format!("dangling backslash in {word:?}")),
        }
    }
    Ok(out)
}

/// Orders two relative paths the way manifests are sorted: component by
/// component, bytewise (so `a/b` comes before `a-b`).
pub fn path_order(a: &[u8], b: &[u8]) -> Ordering {
    let key = |c: &u8| if *c == b'/' { 0 } else { *c };
    a.iter().map(key).cmp(b.iter().map(key))
}

/// Accumulates manifest lines: hashes the canonical form into the signature
/// and optionally writes one of the forms to an output.
pub struct ManifestBuilder {
    hasher: Sha256,
    line: String,
    stored: Option<(Modes, String)>,
}

impl ManifestBuilder {
    /// A builder that only computes the signature.
    pub fn new() -> Self {
        let mut hasher = Sha256::new();
        hasher.update(MANIFEST_HEADER.as_bytes());
        ManifestBuilder {
            hasher,
            line: String::new(),
            stored: None,
        }
    }

    /// A builder that also keeps the manifest text in `modes` form.
    pub fn keeping(modes: Modes) -> Self {
        let mut builder = Self::new();
        builder.stored = Some((modes, MANIFEST_HEADER.to_string()));
        builder
    }

    /// Adds one entry (entries must come in path order).
    pub fn add(&mut self, entry: &Entry) {
        self.line.clear();
        entry.render(Modes::Canonical, &mut self.line);
        self.hasher.update(self.line.as_bytes());
        if let Some((modes, text)) = &mut self.stored {
            entry.render(*modes, text);
        }
    }

    /// The signature, and the kept text if any.
    pub fn finish(self) -> (TreeSignature, Option<String>) {
        (
            TreeSignature::from_hasher(self.hasher),
            self.stored.map(|(_, t)| t),
        )
    }
}

impl Default for ManifestBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The signature of the tree at `root`.
pub fn tree_signature(root: &Path) -> Result<TreeSignature> {
    let mut builder = ManifestBuilder::new();
    walk(root, &WalkOptions::default(), |w| {
        builder.add(&w.entry);
        Ok(())
    })?;
    Ok(builder.finish().0)
}

/// Writes the canonical manifest of `root` to `out` and returns its signature.
pub fn write_manifest(root: &Path, out: &mut impl Write) -> Result<TreeSignature> {
    let mut builder = ManifestBuilder::new();
    let mut line = String::new();
    out.write_all(MANIFEST_HEADER.as_bytes())
        .with_path("write manifest of", root)?;
    walk(root, &WalkOptions::default(), |w| {
        builder.add(&w.entry);
        line.clear();
        w.entry.render(Modes::Canonical, &mut line);
        out.write_all(line.as_bytes())
            .with_path("write manifest of", root)
    })?;
    Ok(builder.finish().0)
}

/// Parses one manifest line (as written by [`Entry::render`]).
pub fn parse_line(line: &str) -> std::result::Result<Entry, String> {
    let mut words = line.split_ascii_whitespace();
    let name = words.next().ok_or("empty line")?;
    let path = if name == "." {
        Vec::new()
    } else {
        let rest = name
            .strip_prefix("./")
            .ok_or_else(|| format!("path {name:?} does not start with ./"))?;
        decode(rest)?
    };
    let (mut kind, mut mode, mut size, mut digest, mut link) = (None, 0u32, None, None, None);
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not key=value"))?;
        match key {
            "type" => kind = Some(value.to_string()),
            "mode" => {
                mode = u32::from_str_radix(value, 8).map_err(|_| format!("bad mode {value:?}"))?
            }
            "size" => {
                size = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("bad size {value:?}"))?,
                )
            }
            "sha256digest" | "sha256" => {
                let mut d = [0u8; 32];
                hex::decode_to_slice(value, &mut d)
                    .map_err(|_| format!("bad sha256digest {value:?}"))?;
                digest = Some(d);
            }
            "link" => link = Some(decode(value)?),
            other => return Err(format!("unknown keyword {other:?}")),
        }
    }
    let kind = match kind.as_deref() {
        Some("dir") => EntryKind::Directory,
        Some("file") => EntryKind::File {
            size: size.ok_or("file without size")?,
            sha256: digest.ok_or("file without sha256digest")?,
        },
        Some("link") => EntryKind::Symlink {
            target: link.ok_or("link without link=")?,
        },
        other => return Err(format!("unsupported type {other:?}")),
    };
    Ok(Entry { path, mode, kind })
}

/// How one path differs between an expected and an actual manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Difference {
    /// Present in both, with different attributes (`what`: type, size, sha256, mode, link).
    Modified { path: String, what: Vec<String> },
    /// Expected but absent.
    Missing { path: String },
    /// Present but not expected.
    Extra { path: String },
}

impl Difference {
    /// The manifest path the difference is about.
    pub fn path(&self) -> &str {
        match self {
            Difference::Modified { path, .. }
            | Difference::Missing { path }
            | Difference::Extra { path } => path,
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Modified { path, what } => {
                write!(f, "modified: {path} ({})", what.join(", "))
            }
            Difference::Missing { path } => write!(f, "missing: {path}"),
            Difference::Extra { path } => write!(f, "extra: {path}"),
        }
    }
}

/// What differs between two entries for the same path, as words.
pub fn entry_changes(expected: &Entry, actual: &Entry, modes: Modes) -> Vec<String> {
    let mut what = Vec::new();
    let mask = if modes == Modes::Store {
        !SPECIAL_BITS
    } else {
        !0
    };
    match (&expected.kind, &actual.kind) {
        (
            EntryKind::File {
                size: s1,
                sha256: d1,
            },
            EntryKind::File {
                size: s2,
                sha256: d2,
            },
        ) => {
            if s1 != s2 {
                what.push(format!("size {s1} -> {s2}"));
            }
            if d1 != d2 {
                what.push("sha256".to_string());
            }
        }
        (EntryKind::Symlink { target: t1 }, EntryKind::Symlink { target: t2 }) => {
            if t1 != t2 {
                what.push("link".to_string());
            }
        }
        (EntryKind::Directory, EntryKind::Directory) => {}
        _ => what.push(format!(
            "type {} -> {}",
            expected.type_name(),
            actual.type_name()
        )),
    }
    if expected.mode & mask != actual.mode & mask {
        what.push(format!(
            "mode {:04o} -> {:04o}",
            expected.mode & mask,
            actual.mode & mask
        ));
    }
    what
}

/// Merges two path-ordered entry sequences and lists their differences.
pub fn diff_entries<'a>(
    expected: impl IntoIterator<Item = &'a Entry>,
    actual: impl IntoIterator<Item = &'a Entry>,
    modes: Modes,
) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut e = expected.into_iter().peekable();
    let mut a = actual.into_iter().peekable();
    loop {
        let order = match (e.peek(), a.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => path_order(&x.path, &y.path),
        };
        match order {
            Ordering::Less => {
                let x = e.next().expect("peeked");
                out.push(Difference::Missing {
                    path: x.manifest_path(),
                });
            }
            Ordering::Greater => {
                let y = a.next().expect("peeked");
                out.push(Difference::Extra {
                    path: y.manifest_path(),
                });
            }
            Ordering::Equal => {
                let (x, y) = (e.next().expect("peeked"), a.next().expect("peeked"));
                let what = entry_changes(x, y, modes);
                if !what.is_empty() {
                    out.push(Difference::Modified {
                        path: x.manifest_path(),
                        what,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
        for (path, content, mode) in files {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
        fs::create_dir_all(root.join("a")).unwrap();
        let odd = root.join(OsStr::from_bytes(b"a/\xff\xfe-latin1"));
        fs::write(odd, b"bytes").unwrap();
        symlink("/usr/share/zoneinfo/UTC", root.join("etc/localtime")).unwrap();
        symlink("../../bin/sh", root.join("usr/bin/sh-link")).unwrap();
    }

    fn signature(root: &Path) -> TreeSignature {
        tree_signature(root).unwrap()
    }

    fn set_mtime_everywhere(root: &Path, secs: i64) {
        for e in walkdir::WalkDir::new(root) {
            let e = e.unwrap();
            let path = std::ffi::CString::new(e.path().as_os_str().as_bytes()).unwrap();
            let times = [libc::timespec {
                tv_sec: secs,
                tv_nsec: 0,
            }; 2];
            // SAFETY: valid NUL-terminated path and a two-element times array.
            let rc = unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            assert_eq!(rc, 0);
        }
    }

    #[test]
    fn signature_ignores_creation_order_and_timestamps() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        make_tree(a.path(), false);
        make_tree(b.path(), true);
        set_mtime_everywhere(b.path(), 1_000_000);
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
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
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
}
