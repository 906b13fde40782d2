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

mod diff;
mod encoding;
mod fd;
mod walk;

pub use diff::{diff_entries, entry_changes, Difference};
pub use encoding::{decode, encode_into};
pub use fd::{changed, open_beneath, open_dir, open_file_beneath, stat, FilesBeneath};
pub use walk::{
    hash_file, walk, walk_fd, with_buffer, Cancelled, CheckDir, Exclude, FileDigest, OpenFile,
    Progress, ReadFile, WalkOptions, Walked, MAX_DEPTH, MAX_PATH_BYTES, READ_BUFFER,
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
    /// A directory (`type=dir`).
    Directory,
    /// A regular file (`type=file`).
    File {
        /// Its length in bytes: what was read and hashed, or its `stat`
        /// size in a walk with [`WalkOptions::skip_digests`].
        size: u64,
        /// The SHA-256 of its contents; all zeros from a walk with
        /// [`WalkOptions::skip_digests`].
        sha256: [u8; 32],
    },
    /// A symlink (`type=link`), never followed.
    Symlink {
        /// The target as stored in the link, raw bytes: possibly absolute,
        /// possibly dangling.
        target: Vec<u8>,
    },
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the tree root, as bytes; empty for the root itself.
    pub path: Vec<u8>,
    /// Canonical mode (see the module docs); 0 for symlinks.
    pub mode: u32,
    /// What the entry is, with a file's size and digest or a link's target.
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
    tree_signature_with(root, &WalkOptions::default())
}

/// [`tree_signature`], walking as `options` say (leaving entries out).
pub fn tree_signature_with(root: &Path, options: &WalkOptions<'_>) -> Result<TreeSignature> {
    let mut builder = ManifestBuilder::new();
    walk(root, options, |w| {
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

#[cfg(test)]
mod tests;
