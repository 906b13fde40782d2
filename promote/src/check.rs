//! Checking a store object against its own metadata and manifest.
//!
//! The object's tree is walked (through directory descriptors, never
//! following a symlink) and merged, entry by entry in path order, with its
//! stored manifest read line by line, so memory does not grow with the size
//! of the object. Meanwhile the manifest is signed again (with the special
//! bits the store stripped put back) and compared with the tree signature the
//! object's name commits to, and the object's own metadata files are checked
//! against their manifest lines.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use fruix_core::manifest::{
    entry_changes, open_dir, path_order, walk_fd, with_buffer, Difference, Entry, EntryKind,
    FilesBeneath, ManifestBuilder, Modes, Progress, WalkOptions, Walked, SPECIAL_BITS,
};

use crate::error::{Error, Result};
use crate::object::ObjectIdentity;
use crate::pool::{key, Pool};
use crate::source_identity::{SourceIdentity, SOURCE_METADATA_FILE};
use crate::stage::{read_small_at, ManifestLines};
use crate::store::{
    is_source_name, reserved_names, MANIFEST_FILE, OBJECT_METADATA_FILE, STORE_MTIME,
};

mod found;

pub use found::{check_existing, check_reusable};

/// Differences kept per object; more are only counted.
pub const MAX_DIFFERENCES: usize = 1000;

/// Largest metadata file of an object that is read.
pub const MAX_OBJECT_METADATA: u64 = 1 << 20;

/// What checking one object found.
#[derive(Debug, Clone)]
pub struct ObjectCheck {
    /// The object's metadata, which hashes to its name.
    pub identity: Identity,
    /// Up to [`MAX_DIFFERENCES`] modified, missing and extra paths, in path order.
    pub differences: Vec<Difference>,
    /// Differences found beyond those listed.
    pub more_differences: u64,
}

impl ObjectCheck {
    /// Whether the object matches its manifest.
    pub fn is_intact(&self) -> bool {
        self.differences.is_empty() && self.more_differences == 0
    }
}

/// Reads metadata file `name` of store object `object`: a regular file,
/// never followed, at most [`MAX_OBJECT_METADATA`] bytes, UTF-8.
pub fn read_object_file(object: &Path, name: &str) -> Result<String> {
    let dir = open_dir(object)?;
    let path = object.join(name);
    let bytes = read_small_at(dir.as_fd(), name, &path, MAX_OBJECT_METADATA)
        .map_err(|e| missing_file(e, object, name))?;
    String::from_utf8(bytes).map_err(|_| {
        fruix_core::Error::InvalidMetadata {
            path,
            field: name.into(),
            line: None,
            message: "is not UTF-8".into(),
        }
        .into()
    })
}

/// Reads an object's identity metadata.
pub fn read_identity(object: &Path) -> Result<ObjectIdentity> {
    let text = read_object_file(object, OBJECT_METADATA_FILE)?;
    ObjectIdentity::from_text(&object.join(OBJECT_METADATA_FILE), &text)
}

/// What an object's metadata file says, by the object's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An artifact object's `.fruix-native-build-object.scm`.
    Artifact(Box<ObjectIdentity>),
    /// A source object's `.fruix-source.scm`.
    Source(SourceIdentity),
}

impl Identity {
    /// Reads `object`'s metadata file: `.fruix-source.scm` for a source
    /// object (by its name), the artifact metadata otherwise.
    pub fn read(object: &Path) -> Result<Identity> {
        let name = object.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !is_source_name(name) {
            return read_identity(object).map(|i| Identity::Artifact(Box::new(i)));
        }
        let text = read_object_file(object, SOURCE_METADATA_FILE)?;
        SourceIdentity::from_text(&object.join(SOURCE_METADATA_FILE), &text).map(Identity::Source)
    }

    /// The name its metadata gives the object.
    pub fn store_name(&self) -> String {
        match self {
            Identity::Artifact(i) => i.store_name(),
            Identity::Source(i) => i.store_name(),
        }
    }

    /// The tree signature the metadata commits to: that of the tree with
    /// its special bits (see [`Identity::stripped_modes`]).
    pub fn tree_signature(&self) -> &fruix_core::TreeSignature {
        match self {
            Identity::Artifact(i) => &i.tree_signature,
            Identity::Source(i) => &i.tree_signature,
        }
    }

    /// Special bits the store stripped (sources keep none: see
    /// [`crate::source`]).
    pub fn stripped_modes(&self) -> &[(String, u32)] {
        match self {
            Identity::Artifact(i) => &i.stripped_modes,
            Identity::Source(_) => &[],
        }
    }
}

/// The pool as verified just before: object files that are hard links to
/// its sound entries need not be read again.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedPool<'a> {
    /// The store's pool, its entries verified.
    pub pool: &'a Pool,
    /// Names of the entries found corrupt.
    pub corrupt: &'a HashSet<String>,
}

/// How deeply [`check_object`] checks.
#[derive(Debug, Clone, Copy)]
pub enum Depth<'a> {
    /// Types, sizes, modes, symlink targets and file timestamps (a write to a
    /// file changes its timestamp).
    Structure,
    /// Every file's content too. With a verified pool, a file that is the
    /// very inode of the sound pool entry its manifest line names has that
    /// content and is not read; any other file is hashed.
    Content {
        /// The pool as just verified, or `None` to hash every file.
        pool: Option<VerifiedPool<'a>>,
    },
}

/// `e`, or [`Error::Inconsistent`] when `e` is the failure to open
/// `object`'s own file `name` because it is not there: an object that lacks
/// one of its files (what a removal killed half-way left, say) is
/// inconsistent, which is no failure of the system.
fn missing_file(e: Error, object: &Path, name: &str) -> Error {
    match e {
        Error::Core(fruix_core::Error::Io {
            ref path,
            ref source,
            ..
        }) if source.kind() == std::io::ErrorKind::NotFound && *path == object.join(name) => {
            Error::Inconsistent {
                object: object.to_path_buf(),
                message: format!("{name} is missing"),
            }
        }
        e => e,
    }
}

/// Opens `object`'s stored manifest; a missing one is
/// [`Error::Inconsistent`] (see [`missing_file`]).
fn open_manifest(object: &Path) -> Result<ManifestLines> {
    ManifestLines::open(&object.join(MANIFEST_FILE))
        .map_err(|e| missing_file(e, object, MANIFEST_FILE))
}

/// Checks `object` against its metadata and manifest, to `depth`.
/// Inconsistent metadata is an error; differences are returned.
pub fn check_object(
    object: &Path,
    depth: Depth<'_>,
    progress: Option<&Progress>,
) -> Result<ObjectCheck> {
    let identity = Identity::read(object)?;
    let reserved = reserved_names(object);
    let name = object
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let inconsistent = |message: String| Error::Inconsistent {
        object: object.to_path_buf(),
        message,
    };
    if identity.store_name() != name {
        return Err(inconsistent(format!(
            "its metadata hashes to {}, not to its name",
            identity.store_name()
        )));
    }
    let dir = open_dir(object)?;
    let object_dir = dir
        .try_clone()
        .map_err(|e| fruix_core::Error::io("open", object, e))?;
    let (hash_while_walking, pool) = match depth {
        Depth::Structure => (false, None),
        Depth::Content { pool: None } => (true, None),
        Depth::Content { pool: Some(p) } => (false, Some(p)),
    };
    let mut merge = Merge {
        expected: open_manifest(object)?,
        stripped: identity.stripped_modes().iter().cloned().collect(),
        reserved,
        signature: ManifestBuilder::new(),
        metadata_lines: Vec::new(),
        pending: None,
        compare_content: hash_while_walking || pool.is_some(),
        pool,
        object,
        files: FilesBeneath::new(&object_dir, object),
        progress,
        differences: Vec::new(),
        more: 0,
    };
    merge.pending = merge.next_expected()?;
    walk_fd(
        dir,
        object,
        &WalkOptions {
            skip_top_level: &reserved,
            progress: progress.filter(|_| hash_while_walking),
            skip_digests: !hash_while_walking,
            ..WalkOptions::default()
        },
        |w| merge.actual(w),
    )?;
    while let Some(e) = merge.pending.take() {
        merge.push(Difference::Missing {
            path: e.manifest_path(),
        });
        merge.pending = merge.next_expected()?;
    }
    let signature = std::mem::take(&mut merge.signature).finish().0;
    if signature != *identity.tree_signature() {
        return Err(inconsistent(
            "its manifest does not match its tree signature".into(),
        ));
    }
    for entry in std::mem::take(&mut merge.metadata_lines) {
        let name = String::from_utf8_lossy(&entry.path).into_owned();
        let bytes = read_small_at(
            object_dir.as_fd(),
            &name,
            &object.join(&name),
            MAX_OBJECT_METADATA,
        )?;
        let actual = Entry {
            kind: EntryKind::File {
                size: bytes.len() as u64,
                sha256: Sha256::digest(&bytes).into(),
            },
            ..entry.clone()
        };
        let mut what = entry_changes(&entry, &actual, Modes::Store);
        // The references are what the metadata implies, as promotion
        // wrote them (the manifest line could be rewritten with them).
        if name == crate::store::REFERENCES_FILE
            && bytes != implied_references(&identity).as_bytes()
        {
            what.push("references not those its metadata implies".into());
        }
        if !what.is_empty() {
            merge.push(Difference::Modified {
                path: entry.manifest_path(),
                what,
            });
        }
    }
    Ok(ObjectCheck {
        identity,
        differences: merge.differences,
        more_differences: merge.more,
    })
}

/// The `.references` text promotion writes for an object of `identity`:
/// an artifact's source when that is a store path, a source's nothing.
fn implied_references(identity: &Identity) -> String {
    match identity {
        Identity::Artifact(a) => {
            crate::object::references_text(crate::bundle::store_references(&[&a.source_store.path]))
        }
        Identity::Source(_) => String::new(),
    }
}

/// The merge of an object's walked tree with its stored manifest.
struct Merge<'a> {
    expected: ManifestLines,
    stripped: HashMap<String, u32>,
    /// The object's metadata names (by its kind).
    reserved: [&'static str; 3],
    signature: ManifestBuilder,
    /// Manifest lines of `.references` and the identity file, checked after the walk.
    metadata_lines: Vec<Entry>,
    pending: Option<Entry>,
    /// Whether file digests are compared (else only structure).
    compare_content: bool,
    /// When set, the walk is structural and contents are settled here.
    pool: Option<VerifiedPool<'a>>,
    object: &'a Path,
    /// The object's files, opened beneath its directory.
    files: FilesBeneath<'a>,
    progress: Option<&'a Progress>,
    differences: Vec<Difference>,
    more: u64,
}

impl Merge<'_> {
    fn push(&mut self, d: Difference) {
        if self.differences.len() < crate::check::MAX_DIFFERENCES {
            self.differences.push(d);
        } else {
            self.more += 1;
        }
    }

    /// The next tree entry of the manifest, signed as it goes by.
    fn next_expected(&mut self) -> Result<Option<Entry>> {
        while let Some((entry, _)) = self.expected.next_entry()? {
            if self.reserved.iter().any(|n| entry.path == n.as_bytes()) {
                self.metadata_lines.push(entry);
                continue;
            }
            match self.stripped.get(&entry.manifest_path()) {
                Some(mode) => self.signature.add(&Entry {
                    mode: *mode,
                    ..entry.clone()
                }),
                None => self.signature.add(&entry),
            }
            return Ok(Some(entry));
        }
        Ok(None)
    }

    /// With a verified pool, the digest of walked file `w` whose manifest
    /// line is `expected`: the expected one when `w` is the sound pool
    /// entry's own inode, else the hash of its content (read through
    /// directory descriptors).
    fn settle_content(&mut self, expected: &Entry, w: &Walked) -> Result<Option<Entry>> {
        let (Some(p), EntryKind::File { sha256: want, .. }, EntryKind::File { size, .. }) =
            (self.pool, &expected.kind, &w.entry.kind)
        else {
            return Ok(None);
        };
        let key = key(want, expected.mode & !SPECIAL_BITS);
        let linked = !p.corrupt.contains(&key) && p.pool.inode_of(&key) == Some(w.inode);
        // A sound pool entry's file was counted when the pool was verified;
        // only what is read here is counted again.
        let sha256 = if linked {
            *want
        } else {
            let mut file = self.files.open(&w.entry.path)?;
            let sha256 = hash_reader(
                &mut file,
                &self.object.join(OsStr::from_bytes(&w.entry.path)),
            )?;
            if let Some(progress) = self.progress {
                progress.add(*size);
            }
            sha256
        };
        Ok(Some(Entry {
            kind: EntryKind::File {
                size: *size,
                sha256,
            },
            ..w.entry.clone()
        }))
    }

    fn actual(&mut self, w: &Walked) -> fruix_core::Result<()> {
        self.actual_entry(w).map_err(|e| match e {
            Error::Core(c) => c,
            other => fruix_core::Error::system(other.to_string()),
        })
    }

    fn actual_entry(&mut self, w: &Walked) -> Result<()> {
        let actual = &w.entry;
        loop {
            let Some(expected) = self.pending.take() else {
                self.push(Difference::Extra {
                    path: actual.manifest_path(),
                });
                return Ok(());
            };
            match path_order(&expected.path, &actual.path) {
                Ordering::Less => {
                    self.push(Difference::Missing {
                        path: expected.manifest_path(),
                    });
                    self.pending = self.next_expected()?;
                }
                Ordering::Equal => {
                    let mut expected = expected;
                    let settled;
                    let actual = match self.settle_content(&expected, w)? {
                        Some(entry) => {
                            settled = entry;
                            &settled
                        }
                        None => actual,
                    };
                    if !self.compare_content {
                        if let EntryKind::File { sha256, .. } = &mut expected.kind {
                            *sha256 = [0; 32];
                        }
                    }
                    let mut what = entry_changes(&expected, actual, Modes::Store);
                    if matches!(actual.kind, EntryKind::File { .. }) && w.mtime != STORE_MTIME {
                        what.push(format!("mtime {} (content may have been changed)", w.mtime));
                    }
                    if !what.is_empty() {
                        self.push(Difference::Modified {
                            path: actual.manifest_path(),
                            what,
                        });
                    }
                    self.pending = self.next_expected()?;
                    return Ok(());
                }
                Ordering::Greater => {
                    self.pending = Some(expected);
                    self.push(Difference::Extra {
                        path: actual.manifest_path(),
                    });
                    return Ok(());
                }
            }
        }
    }
}

/// Every tree entry of `object`'s stored manifest (its metadata files left
/// out), in path order.
pub fn read_store_manifest(object: &Path) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for_each_store_entry(object, |entry| {
        entries.push(entry);
        Ok(())
    })?;
    Ok(entries)
}

/// Calls `f` with each tree entry of `object`'s stored manifest (its
/// metadata files left out), in path order, read line by line: memory does
/// not grow with the manifest. Stops at the first error, `f`'s or the
/// manifest's.
pub fn for_each_store_entry(object: &Path, mut f: impl FnMut(Entry) -> Result<()>) -> Result<()> {
    let mut lines = open_manifest(object)?;
    let reserved = reserved_names(object);
    while let Some((entry, _)) = lines.next_entry()? {
        if !reserved.iter().any(|n| entry.path == n.as_bytes()) {
            f(entry)?;
        }
    }
    Ok(())
}

/// The total size of the files in `object`'s stored manifest (its metadata
/// files left out), read line by line.
pub fn manifest_size(object: &Path) -> Result<u64> {
    let mut lines = open_manifest(object)?;
    let reserved = reserved_names(object);
    let mut size = 0;
    while let Some((entry, _)) = lines.next_entry()? {
        if !reserved.iter().any(|n| entry.path == n.as_bytes()) {
            size += entry.size();
        }
    }
    Ok(size)
}

/// The SHA-256 of everything `file` holds (`display` names it in messages).
fn hash_reader(file: &mut File, display: &Path) -> Result<[u8; 32]> {
    with_buffer(|buf| {
        let mut hasher = Sha256::new();
        loop {
            match file.read(buf) {
                Ok(0) => return Ok(hasher.finalize().into()),
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fruix_core::Error::io("read", display, e).into()),
            }
        }
    })
}
