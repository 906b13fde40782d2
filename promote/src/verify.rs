//! `fruix store verify` and `fruix store list`: checking, repairing and
//! listing the store.
//!
//! Verifying re-hashes every file of every object (or of the objects named)
//! and every entry of the `.links` pool. Repairing removes what verification
//! found corrupt: objects and pool entries, and with them every object that
//! refers to a removed or missing object (the artifacts and result bundles
//! built from a removed source, the result bundles that name a removed
//! artifact object), so that a valid object's references stay valid, as in
//! Nix. Promoting the same result roots again then
//! recreates correct objects, because a pool entry only ever receives bytes
//! hashed as they were written (see [`crate::pool`]). The references an
//! intact object's `.references` names are checked against those the
//! registry records ([`check_references`]): repairing records those it
//! lacks between valid objects, and removes nothing for a reference to an
//! object the registry lacks (see [`ReferenceFault`]). Each intact
//! object's registry record is checked against the object
//! ([`check_records`]): repairing rewrites a record that disagrees from
//! the object, which its name vouches for.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use fruix_core::error::IoContext;
use fruix_core::escape;
use fruix_core::manifest::{decode, Difference, Progress};

use crate::bundle::check_bundle_tree;
use crate::check::{check_object, Depth, VerifiedPool};
use crate::db::Kind;
use crate::error::{Error, Result};
use crate::pipeline::{check_cancelled, set_phase};
use crate::pool::PoolProblem;
use crate::store::{is_source_name, Store, RESULT_METADATA_FILE};

mod keys;
mod records;
mod references;
mod repair;

pub use keys::{pool_keys, PoolKeys};
pub use records::{check_records, rewrite_records, RecordField, RecordMismatch};
pub use references::{check_references, ReferenceFault, ReferenceProblem};
pub use repair::{repair, Repair};

/// The outcome of verifying one object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectVerification {
    /// The object's path in the store.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub path: PathBuf,
    /// `artifact`, `bundle` or `source`, as the registry names kinds.
    pub kind: Kind,
    /// Whether the object is intact: no differences and no `error`.
    /// [`repair`] removes every object that is not.
    pub ok: bool,
    /// Modified, missing and extra files (at most [`crate::check::MAX_DIFFERENCES`]).
    /// Their paths are in the manifest's mtree encoding, which the text
    /// output shows; JSON shows the paths themselves.
    #[serde(serialize_with = "serialize_differences")]
    pub differences: Vec<Difference>,
    /// Differences found beyond those listed.
    pub more_differences: u64,
    /// Metadata problems (name, signature or links inconsistent).
    pub error: Option<String>,
}

/// Serialises `differences` as [`Difference`] does, but each path as the
/// path itself (`./a/b`, its manifest encoding undone), shown as JSON shows
/// paths ([`escape::path_text`]): `"./evil\u001b[2J\nname"`, not the
/// mtree-encoded `"./evil\\033\\1332J\\012name"`.
fn serialize_differences<S: serde::Serializer>(
    differences: &[Difference],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    let shown = differences
        .iter()
        .map(|d| {
            let mut value = serde_json::to_value(d).map_err(S::Error::custom)?;
            value["path"] = real_path(d.path()).into();
            Ok(value)
        })
        .collect::<std::result::Result<Vec<_>, S::Error>>()?;
    serializer.collect_seq(shown)
}

/// The path a manifest path (mtree-encoded) names, as JSON shows paths; the
/// manifest path itself if it cannot be decoded.
fn real_path(manifest_path: &str) -> String {
    match decode(manifest_path) {
        Ok(bytes) => escape::path_text(Path::new(OsStr::from_bytes(&bytes))).into_owned(),
        Err(_) => manifest_path.to_string(),
    }
}

/// Every entry of the store named as an object ([`is_object_name`]),
/// sorted: the objects, and what killed processes left of them.
pub fn object_paths(store: &Store) -> Result<Vec<PathBuf>> {
    object_paths_in(store.path())
}

/// [`object_paths`] of the store directory `store`.
pub fn object_paths_in(store: &Path) -> Result<Vec<PathBuf>> {
    entries_in(store, is_object_name)
}

/// The entries of the store that are not fruix's, sorted: neither hidden
/// (the store's own `.links`, `.fruix`...) nor named as an object (a file
/// or a link someone put there, a name that is not UTF-8). Nothing fruix
/// does makes one, so no repair or collection removes one.
pub fn foreign_paths(store: &Store) -> Result<Vec<PathBuf>> {
    entries_in(store.path(), |name| {
        !name.starts_with(b".") && !is_object_name(name)
    })
}

/// The entries of `store` whose names `keep` takes, sorted.
fn entries_in(store: &Path, keep: impl Fn(&[u8]) -> bool) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = fs::read_dir(store)
        .with_path("read", store)?
        .map(|e| e.with_path("read", store))
        .filter(|e| e.as_ref().map_or(true, |e| keep(e.file_name().as_bytes())))
        .map(|e| e.map(|e| e.path()))
        .collect::<fruix_core::Result<_>>()?;
    out.sort();
    Ok(out)
}

/// Whether `name` has the shape of a store object name: 40 lowercase hex
/// digits, a dash, then `fruix-` (artifacts, bundles) or `freebsd-source-`
/// (sources), and more; at most 255 bytes, all of `A-Z a-z 0-9 . _ + -`.
/// Such a name is one plain path component: joined to the store's path, it
/// never leads out of it.
pub fn is_object_name(name: &[u8]) -> bool {
    (48..=255).contains(&name.len())
        && name[..40]
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && (name[40..].starts_with(b"-fruix-")
            || name[40..].starts_with(crate::source_identity::SOURCE_INFIX.as_bytes()))
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._+".contains(b))
}

/// Where `path` (as a user gave it) stands if it is where an object of the
/// store at `store` (a resolved path, as [`Store::path`] is) would be: its
/// parent, resolved, is the store, and its name is an object's
/// ([`is_object_name`]). `None` for anything else. Nothing beneath the
/// store is looked at, so this never waits for the store.
pub fn object_place(store: &Path, path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = fs::canonicalize(parent).ok()?;
    (parent == store && is_object_name(name.as_bytes())).then(|| parent.join(name))
}

/// [`Error::Inconsistent`] when `path` is where an object of the store at
/// `store` would be ([`object_place`]), is missing, and the store registers
/// it: its directory is gone. The store is opened (for reading) only then,
/// so a path that is no object's never waits on the store's lock.
pub fn gone_object(store: &Path, path: &Path) -> Option<Error> {
    let object = object_place(&fs::canonicalize(store).ok()?, path)?;
    if !fs::symlink_metadata(&object).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return None;
    }
    let store = Store::open_for_reading(store).ok()?;
    match resolve_object(&store, path) {
        Err(e @ Error::Inconsistent { .. }) => Some(e),
        _ => None,
    }
}

/// Resolves `path` (as a user gave it) to a store object of `store`: a real
/// directory directly in the store with an object's name. Anything else
/// (`/etc`, a subdirectory of an object, a misspelt name) is
/// [`Error::NotAStoreObject`]; an object's name that is not there is
/// [`Error::NotInStore`], or [`Error::Inconsistent`] when the registry
/// names it (its directory is gone).
pub fn resolve_object(store: &Store, path: &Path) -> Result<PathBuf> {
    let not_object = || Error::NotAStoreObject {
        path: path.to_path_buf(),
        store: store.path().to_path_buf(),
    };
    let object = object_place(store.path(), path).ok_or_else(not_object)?;
    let name = path.file_name().ok_or_else(not_object)?;
    match fs::symlink_metadata(&object) {
        Ok(m) if m.is_dir() => Ok(object),
        // Registered, but its directory is gone: the store is damaged, as
        // `store verify` reports it, whichever command names it.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && store.is_valid(&name.to_string_lossy())? =>
        {
            Err(Error::Inconsistent {
                object,
                message: "registered, but its directory is gone; run `fruix store verify --repair`"
                    .into(),
            })
        }
        // Named as an object of this store is, but not there (deleted,
        // collected): say so, rather than what an object's name is.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotInStore {
            path: object,
            store: store.path().to_path_buf(),
            remote: false,
        }),
        _ => Err(not_object()),
    }
}

/// What kind of object `object` is, by what it holds (it need not be
/// registered): a bundle holds a bundle's metadata file; a source is named so.
fn kind_of(object: &Path) -> Kind {
    let name = object.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if object.join(RESULT_METADATA_FILE).symlink_metadata().is_ok() {
        Kind::Bundle
    } else if is_source_name(name) {
        Kind::Source
    } else {
        Kind::Artifact
    }
}

/// Verifies `object` fully: every file's content compared with the manifest,
/// the manifest with the tree signature, the metadata with the object's name.
/// With a verified `pool`, files that are its sound entries are not read again.
pub fn verify_object(
    object: &Path,
    pool: Option<VerifiedPool<'_>>,
    progress: Option<&Progress>,
) -> ObjectVerification {
    let kind = kind_of(object);
    let outcome = match kind {
        Kind::Bundle => check_bundle_tree(object).map(|c| (c.differences, c.more_differences)),
        Kind::Artifact | Kind::Source => check_object(object, Depth::Content { pool }, progress)
            .map(|c| (c.differences, c.more_differences)),
    };
    let (differences, more_differences, error) = match outcome {
        Ok((d, more)) => (d, more, None),
        Err(e) => (Vec::new(), 0, Some(e.to_string())),
    };
    ObjectVerification {
        path: object.to_path_buf(),
        kind,
        ok: differences.is_empty() && more_differences == 0 && error.is_none(),
        differences,
        more_differences,
        error,
    }
}

/// Verifies several objects concurrently (see [`verify_object`]), in order.
/// Cancelled through `progress` ([`Progress::cancel`]), it fails with
/// [`fruix_core::Error::Cancelled`]: no object is reported corrupt for a
/// check it did not finish.
pub fn verify_objects(
    objects: &[PathBuf],
    pool: Option<VerifiedPool<'_>>,
    progress: Option<&Progress>,
) -> Result<Vec<ObjectVerification>> {
    set_phase(progress, "checking the objects");
    let verified = objects
        .par_iter()
        .map(|o| {
            check_cancelled(progress)?;
            Ok(verify_object(o, pool, progress))
        })
        .collect::<Result<Vec<_>>>()?;
    // A walk cancelled under way made its object look corrupt.
    check_cancelled(progress)?;
    Ok(verified)
}

/// What verifying the pool found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PoolVerification {
    /// Entries checked.
    pub checked: usize,
    /// Corrupt entries (and stray files), each with what is wrong.
    pub corrupt: Vec<PoolProblem>,
    /// The names of the corrupt entries.
    #[serde(skip)]
    pub corrupt_names: HashSet<String>,
}

impl PoolVerification {
    /// The pool as verified, for [`verify_object`].
    pub fn verified<'a>(&'a self, store: &'a Store) -> VerifiedPool<'a> {
        VerifiedPool {
            pool: store.pool(),
            corrupt: &self.corrupt_names,
        }
    }

    fn add(&mut self, name: &OsStr, outcome: std::result::Result<u64, PoolProblem>) {
        self.checked += 1;
        if let Err(problem) = outcome {
            // A name that is not UTF-8 is no entry's: no object links it.
            self.corrupt_names
                .insert(name.to_string_lossy().into_owned());
            self.corrupt.push(problem);
        }
    }
}

/// Entries re-hashed together; the pool is listed a chunk at a time, so
/// memory does not grow with it.
const POOL_CHUNK: usize = 4096;

/// Re-hashes pool entries concurrently: `names` (read back a chunk at a
/// time, sorted, each once), or every entry when `None`.
/// A named entry that is missing is not a problem here (its objects report it).
/// Each sound entry is counted on `progress` as soon as it is hashed.
/// Cancelled through `progress` ([`Progress::cancel`]), it fails with
/// [`fruix_core::Error::Cancelled`] before its next entry.
pub fn verify_pool(
    store: &Store,
    names: Option<PoolKeys>,
    progress: Option<&Progress>,
) -> Result<PoolVerification> {
    set_phase(progress, "checking the pool");
    let pool = store.pool();
    let mut verification = PoolVerification::default();
    let check = |chunk: &[OsString], all: bool, v: &mut PoolVerification| -> Result<()> {
        let outcomes: Vec<_> = chunk
            .par_iter()
            .map(|name| {
                check_cancelled(progress)?;
                let outcome = pool.check_entry(name);
                if let (Ok(size), Some(p)) = (&outcome, progress) {
                    p.add(*size);
                }
                Ok(outcome)
            })
            .collect::<Result<_>>()?;
        for (name, outcome) in chunk.iter().zip(outcomes) {
            if !all && outcome.is_err() && pool.inode_of(name).is_none() {
                continue;
            }
            v.add(name, outcome);
        }
        Ok(())
    };
    match names {
        Some(names) => names.for_each_chunk(POOL_CHUNK, |c| check(c, false, &mut verification))?,
        None => {
            // The listing goes on to its end; a cancelled one checks no more.
            let mut checked = Ok(());
            pool.for_each_chunk(POOL_CHUNK, |c| {
                if checked.is_ok() {
                    checked = check(c, true, &mut verification);
                }
            })?;
            checked?
        }
    }
    Ok(verification)
}

/// Where the registry and the store's directories disagree.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RegistryCheck {
    /// Registered objects whose directory is gone (an error).
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub missing: Vec<PathBuf>,
    /// Directories that are not registered: not valid (a promotion killed
    /// before registering, or a leftover); `store gc` removes them.
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub unregistered: Vec<PathBuf>,
    /// Entries that are not fruix's ([`foreign_paths`]): left alone.
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub foreign: Vec<PathBuf>,
    /// References of intact registered objects that the registry lacks, as
    /// [`check_references`] finds them once the objects are verified
    /// ([`check_registry`] leaves it empty).
    pub references: Vec<ReferenceProblem>,
}

/// Compares the registry with the store's object directories.
pub fn check_registry(store: &Store) -> Result<RegistryCheck> {
    let registered: HashSet<String> = store.db().names()?.into_iter().collect();
    // Object names are ASCII.
    let present: HashSet<String> = object_paths(store)?
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect();
    let mut check = RegistryCheck {
        missing: registered
            .difference(&present)
            .map(|n| store.path().join(n))
            .collect(),
        unregistered: present
            .difference(&registered)
            .map(|n| store.path().join(n))
            .collect(),
        references: Vec::new(),
        foreign: foreign_paths(store)?,
    };
    check.missing.sort();
    check.unregistered.sort();
    Ok(check)
}

/// The name of the object at `path`.
fn name_of(path: &Path) -> Option<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned())
}
