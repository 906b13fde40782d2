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
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;

use sha2::{Digest, Sha256};

use fruix_core::manifest::{
    entry_changes, hash_file, open_dir, path_order, stat, walk_fd, Difference, Entry, EntryKind,
    FileDigest, ManifestBuilder, Modes, OpenFile, Progress, WalkOptions, Walked,
};

use crate::error::{Error, Result};
use crate::object::ObjectIdentity;
use crate::stage::{read_small_at, ManifestLines};
use crate::store::{MANIFEST_FILE, OBJECT_METADATA_FILE, RESERVED_NAMES, STORE_MTIME};

/// Differences kept per object; more are only counted.
pub const MAX_DIFFERENCES: usize = 1000;

/// Largest metadata file of an object that is read.
pub const MAX_OBJECT_METADATA: u64 = 1 << 20;

/// What checking one object found.
#[derive(Debug, Clone)]
pub struct ObjectCheck {
    pub identity: ObjectIdentity,
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
    let bytes = read_small_at(dir.as_fd(), name, &path, MAX_OBJECT_METADATA)?;
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

/// Digests of pool entries already verified, by inode (device, inode number):
/// an object file that is a hard link to one of them need not be read again.
pub type VerifiedInodes = HashMap<(u64, u64), [u8; 32]>;

/// How deeply [`check_object`] checks.
#[derive(Debug, Clone, Copy)]
pub enum Depth<'a> {
    /// Types, sizes, modes, symlink targets and file timestamps (a write to a
    /// file changes its timestamp).
    Structure,
    /// Every file's content too: hashed, unless it is a hard link to a pool
    /// entry in `verified`, whose digest is then used.
    Content {
        verified: Option<&'a VerifiedInodes>,
    },
}

/// Checks `object` against its metadata and manifest, to `depth`.
/// Inconsistent metadata is an error; differences are returned.
pub fn check_object(
    object: &Path,
    depth: Depth<'_>,
    progress: Option<&Progress>,
) -> Result<ObjectCheck> {
    let full = matches!(depth, Depth::Content { .. });
    let identity = read_identity(object)?;
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
    let mut merge = Merge {
        expected: ManifestLines::open(&object.join(MANIFEST_FILE))?,
        stripped: identity.stripped_modes.iter().cloned().collect(),
        signature: ManifestBuilder::new(),
        metadata_lines: Vec::new(),
        pending: None,
        full,
        differences: Vec::new(),
        more: 0,
    };
    merge.pending = merge.next_expected()?;
    let dir = open_dir(object)?;
    let metadata_dir = dir
        .try_clone()
        .map_err(|e| fruix_core::Error::io("open", object, e))?;
    let verified = match depth {
        Depth::Content { verified } => verified,
        Depth::Structure => None,
    };
    let read = |file: &mut OpenFile<'_>| -> fruix_core::Result<FileDigest> {
        let known = verified.and_then(|v| {
            let st = rustix::fs::fstat(&file.file).ok()?;
            v.get(&(stat::dev(&st), stat::ino(&st))).copied()
        });
        match known {
            Some(sha256) => Ok(FileDigest {
                size: file.size,
                sha256,
            }),
            None => hash_file(file),
        }
    };
    walk_fd(
        dir,
        object,
        &WalkOptions {
            skip_top_level: &RESERVED_NAMES,
            progress,
            skip_digests: !full,
            read_file: Some(&read),
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
    if signature != identity.tree_signature {
        return Err(inconsistent(
            "its manifest does not match its tree signature".into(),
        ));
    }
    for entry in std::mem::take(&mut merge.metadata_lines) {
        let name = String::from_utf8_lossy(&entry.path).into_owned();
        let bytes = read_small_at(
            metadata_dir.as_fd(),
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
        let what = entry_changes(&entry, &actual, Modes::Store);
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

/// The merge of an object's walked tree with its stored manifest.
struct Merge {
    expected: ManifestLines,
    stripped: HashMap<String, u32>,
    signature: ManifestBuilder,
    /// Manifest lines of `.references` and the identity file, checked after the walk.
    metadata_lines: Vec<Entry>,
    pending: Option<Entry>,
    full: bool,
    differences: Vec<Difference>,
    more: u64,
}

impl Merge {
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
            if RESERVED_NAMES.iter().any(|n| entry.path == n.as_bytes()) {
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
                    if !self.full {
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
    let mut lines = ManifestLines::open(&object.join(MANIFEST_FILE))?;
    let mut entries = Vec::new();
    while let Some((entry, _)) = lines.next_entry()? {
        if !RESERVED_NAMES.iter().any(|n| entry.path == n.as_bytes()) {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// The total size of the files in `object`'s stored manifest (its metadata
/// files left out), read line by line.
pub fn manifest_size(object: &Path) -> Result<u64> {
    let mut lines = ManifestLines::open(&object.join(MANIFEST_FILE))?;
    let mut size = 0;
    while let Some((entry, _)) = lines.next_entry()? {
        if !RESERVED_NAMES.iter().any(|n| entry.path == n.as_bytes()) {
            size += entry.size();
        }
    }
    Ok(size)
}
