//! A source directory made a source object: the FreeBSD version and branch
//! from its `sys/conf/newvers.sh` (or as given), its git commit and
//! dirtiness, and its ignored build output left out. `fruix build`, `fruix
//! source add` and every matrix use this, so that one tree is one source
//! object wherever it was checked out.

use std::path::Path;

use fruix_core::manifest::Progress;
use fruix_core::promotion::SourceStore;
use fruix_freebsd::checkout;
use fruix_freebsd::source::{branch_of, read_newvers};
use fruix_promote::check::Identity;
use fruix_promote::query::resolve_valid;
use fruix_promote::source::{add_source, SourceFacts, SourceReport};
use fruix_promote::store::{is_source_name, MANIFEST_FILE};
use fruix_promote::temp_roots::TempRoots;
use fruix_promote::verify::is_object_name;
use fruix_promote::Store;

/// The name a source object gets unless told otherwise, as in the reference.
pub const DEFAULT_SOURCE_NAME: &str = "default";

/// Adds the source tree at `dir` (canonical) to `store` as source object
/// `name`; `version` overrides what `newvers.sh` says.
pub fn add_source_dir(
    store: &Store,
    dir: &Path,
    name: &str,
    version: Option<&str>,
    progress: Option<&Progress>,
    temp_roots: Option<&TempRoots>,
) -> fruix_promote::Result<SourceReport> {
    // A store object's metadata files are no part of any source: the user
    // meant the tree it was added from, or the store that holds it.
    let object_named = dir
        .file_name()
        .is_some_and(|n| is_object_name(n.as_encoded_bytes()));
    if object_named && dir.join(MANIFEST_FILE).symlink_metadata().is_ok() {
        return Err(fruix_promote::Error::StoreObjectAsSource {
            path: dir.to_path_buf(),
            store: store.path().to_path_buf(),
        });
    }
    let version = match version {
        Some(v) => v.to_string(),
        None => read_newvers(dir)?.version,
    };
    let branch = branch_of(&version);
    if branch.is_empty() {
        return Err(fruix_promote::Error::InvalidFreebsdVersion {
            message: format!(
                "FreeBSD version {} names no branch: give REVISION-BRANCH (15.0-STABLE, 14.2-RELEASE)",
                fruix_core::escape::quoted(&version)
            ),
            version,
        });
    }
    let git = checkout::inspect(dir)?;
    let facts = SourceFacts {
        name: name.to_string(),
        branch,
        version,
        commit: git.commit.clone(),
        dirty: git.dirty,
    };
    add_source(
        store,
        dir,
        &facts,
        &|path| git.excludes(path),
        progress,
        temp_roots,
    )
}

/// The source object a local build of `source` (canonical, checked) uses,
/// kept by `temp_roots` while the build runs:
/// `source` itself when it is a valid source object of `store` (`None`
/// report), else the object `source` is added as (with its report). The
/// commit is the object's.
pub fn source_object(
    store: &Store,
    source: &Path,
    version: Option<&str>,
    progress: Option<&Progress>,
    temp_roots: &TempRoots,
) -> fruix_promote::Result<(SourceStore, Option<SourceReport>)> {
    let in_store = source.parent() == Some(store.path())
        && source
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_source_name);
    if in_store {
        // The GC lock, shared, while the object is checked and kept.
        let _gc = store.gc_lock(false)?;
        let name = resolve_valid(store, source)?;
        temp_roots.add(&name)?;
        let commit = match Identity::read(source)? {
            Identity::Source(s) => s.facts.commit,
            Identity::Artifact(_) => None,
        };
        let used = SourceStore {
            tree_signature: None,
            path: source.to_string_lossy().into_owned(),
            commit,
        };
        return Ok((used, None));
    }
    let report = add_source_dir(
        store,
        source,
        DEFAULT_SOURCE_NAME,
        version,
        progress,
        Some(temp_roots),
    )?;
    let used = SourceStore {
        tree_signature: None,
        path: report.store_path.to_string_lossy().into_owned(),
        commit: report.identity.facts.commit.clone(),
    };
    Ok((used, Some(report)))
}
