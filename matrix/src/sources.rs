//! A source directory made a source object: the FreeBSD version and branch
//! from its `sys/conf/newvers.sh` (or as given), its git commit and
//! dirtiness, and its ignored build output left out. `fruix build`, `fruix
//! source add` and every matrix use this, so that one tree is one source
//! object wherever it was checked out.

use std::path::Path;

use fruix_core::manifest::Progress;
use fruix_freebsd::checkout;
use fruix_freebsd::source::{branch_of, read_newvers};
use fruix_promote::source::{add_source, SourceFacts, SourceReport};
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
) -> fruix_promote::Result<SourceReport> {
    let version = match version {
        Some(v) => v.to_string(),
        None => read_newvers(dir)?.version,
    };
    let git = checkout::inspect(dir)?;
    let facts = SourceFacts {
        name: name.to_string(),
        branch: branch_of(&version),
        version,
        commit: git.commit.clone(),
        dirty: git.dirty,
    };
    add_source(store, dir, &facts, &|path| git.excludes(path), progress)
}
