//! Source objects: a source tree copied into the store with the same
//! one-pass rules as promotion (every file hashed as it is written into the
//! pool, the object built from the manifest of what was written), named by
//! its [`SourceIdentity`]. Adding an unchanged tree again finds its object,
//! checks it, and creates nothing.
//!
//! The caller supplies what the tree is (name, FreeBSD version and branch,
//! git commit and dirtiness) and which paths to leave out (ignored build
//! output): this crate knows nothing of FreeBSD or git.

use std::path::{Path, PathBuf};

use fruix_core::manifest::{open_dir, Exclude, Progress};

use crate::check::{check_object, check_reusable, Depth};
use crate::db::Registration;
use crate::error::Result;
use crate::pipeline::{check_cancelled, ingest_tree, Tree};
pub use crate::source_identity::SourceFacts;
use crate::source_identity::{SourceIdentity, SOURCE_METADATA_FILE};
use crate::stage::build_object;
use crate::store::{Store, SOURCE_RESERVED_NAMES};
use crate::temp_roots::TempRoots;

/// What adding a source found or made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceReport {
    /// The source object's absolute path in the store.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub store_path: PathBuf,
    /// Whether this call created the object.
    pub new: bool,
    /// The identity that names the object: the caller's facts and the
    /// tree signature of what was read.
    #[serde(flatten)]
    pub identity: SourceIdentity,
    /// The bytes of its files.
    pub size: u64,
}

/// Adds the tree at `dir` (leaving out the paths `exclude` names) to
/// `store` as a source object described by `facts`. Facts the object
/// must not record ([`SourceFacts::check`]) are refused before anything
/// is written.
pub fn add_source(
    store: &Store,
    dir: &Path,
    facts: &SourceFacts,
    exclude: &Exclude<'_>,
    progress: Option<&Progress>,
    temp_roots: Option<&TempRoots>,
) -> Result<SourceReport> {
    facts.check()?;
    let promotion = store.begin()?;
    let tree = Tree {
        display: dir,
        manifest: promotion.work_dir().join("source.mtree"),
        extra_modes: None,
        reserved: SOURCE_RESERVED_NAMES,
        probe: None,
        exclude: Some(exclude),
    };
    let ingested = ingest_tree(&promotion, open_dir(dir)?, tree, progress)?;
    if let Some((path, _)) = ingested.stripped.first() {
        return Err(fruix_core::Error::UnsafePath {
            path: dir.join(path.trim_start_matches("./")),
            message: "is setuid, setgid or sticky; a source tree carries no such bits".into(),
        }
        .into());
    }
    let identity = SourceIdentity {
        facts: facts.clone(),
        tree_signature: ingested.signature,
    };
    let name = identity.store_name();
    let store_path = store.path().join(&name);
    let _lock = store.lock_object(&name)?;
    // Cancelled once read, nothing is published (see
    // [`crate::promote_validated`]).
    check_cancelled(progress)?;
    let new = store_path.symlink_metadata().is_err();
    let mut published = Vec::new();
    if new {
        let temp = build_object(
            store,
            &name,
            &ingested.manifest,
            (SOURCE_METADATA_FILE, &identity.to_scheme()),
            "",
        )?;
        check_cancelled(progress)?;
        published = store.publish(vec![(temp, name.clone())])?;
    } else {
        check_reusable(&store_path)?;
    }
    let registered = store.db().register(&[Registration {
        record: crate::register::source(&name, &identity, ingested.size),
        references: Vec::new(),
    }]);
    if let Err(e) = registered {
        // Never valid: taken back (see `Store::unpublish`).
        store.unpublish(&published);
        return Err(e);
    }
    // Still under the GC lock: a build about to read the object keeps it.
    if let Some(roots) = temp_roots {
        roots.add(
            &store_path
                .file_name()
                .expect("an object name")
                .to_string_lossy(),
        )?;
    }
    promotion.succeed(!new);
    Ok(SourceReport {
        store_path,
        new,
        identity,
        size: ingested.size,
    })
}

/// Checks that a build left the source object `object` it built from as
/// it was: [`Error::SourceWritten`] when a file was written (its mtime is
/// no longer the store's), added, removed or changed type or mode. The
/// check walks the object's structure, reading no file: about as long as
/// `find` over the tree.
///
/// [`Error::SourceWritten`]: crate::Error::SourceWritten
pub fn check_source_untouched(object: &Path) -> Result<()> {
    let check = check_object(object, Depth::Structure, None)?;
    if check.is_intact() {
        return Ok(());
    }
    Err(crate::Error::SourceWritten {
        object: object.to_path_buf(),
        differences: check.differences,
        more_differences: check.more_differences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::testing::{write_files, TestDir};
    use fruix_core::ExitStatus;

    /// Everything under `dir`, but the registry (`.fruix`, whose SQLite
    /// files come and go).
    fn contents(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
            .into_iter()
            .map(|e| e.unwrap().into_path())
            .filter(|p| !p.starts_with(dir.join(".fruix")))
            .collect();
        out.sort();
        out
    }

    /// Regression: a version with a control character was written into
    /// the object's metadata, whose reader refuses it (`store verify` then
    /// called the object corrupt); an unbounded one was written too.
    #[test]
    fn a_version_its_metadata_cannot_hold_is_refused_before_anything_is_written() {
        let dir = TestDir::new();
        let store = Store::open(&dir.store()).unwrap();
        let tree = dir.join("src");
        write_files(&tree, &[("Makefile", b"all:\n".as_slice(), 0o644)]).unwrap();
        let before = contents(store.path());
        let long = "1".repeat(65);
        for version in ["15.0\n(x)", "15.0-STABLE\u{1b}[31m", "15.0\u{202e}", &long] {
            let facts = SourceFacts::without_checkout("default", version, "stable/15");
            let e = add_source(&store, &tree, &facts, &|_| false, None, None).unwrap_err();
            assert_eq!(e.exit_status(), ExitStatus::Usage, "{version:?}: {e}");
            assert_eq!(contents(store.path()), before, "{version:?}");
        }
    }
}
